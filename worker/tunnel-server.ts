/**
 * The worker's WSS endpoint. TLS asks for a client certificate but lets the
 * handshake finish without one, so that every refusal can be answered at the
 * HTTP layer with a reason the connector can log — and so that every refusal
 * goes through one function (`rejectUpgrade`, like ws's abortHandshake).
 * Only `GET /v1/tunnel` with an upgrade and a certificate from this
 * connection's CA naming a connector of this connection gets a WebSocket.
 *
 * Limits (tunnel/limits.ts): connections whose TLS handshake and upgrade have
 * not finished are capped in total and per source address — one over either is
 * closed before any TLS work — and sessions are capped per connector name and
 * in total (429 TOO_MANY_SESSIONS). Text the peer chose (the request path)
 * reaches logs and audit lines capped (capText).
 *
 * The mesh (docs/ha.md): a connector names the workers it already holds in
 * X-Underpass-Have-Workers; a worker that finds itself there answers 409
 * ALREADY_CONNECTED with its instance and the worker set, after
 * authentication and before any session work, so a connector searching
 * through one load-balanced address pays one handshake per miss.
 */
import { constants as cryptoConstants } from 'node:crypto';
import https from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import type { Logger } from 'pino';
import { formatPeer, type HostPort } from '../tunnel/address.js';
import { errorMessage, ignoreError } from '../tunnel/errors.js';
import { identityFromPeerCertificate, type ConnectionId } from '../tunnel/identity.js';
import { capText, DEFAULT_LIMITS, type LimitName, type Limits } from '../tunnel/limits.js';
import { listenOn } from '../tunnel/listen.js';
import { issuerIdIn, pemCertificates } from '../tunnel/pki.js';
import { ownerSlot } from '../tunnel/owner.js';
import type { TlsMaterial } from '../tunnel/transport/tls-files.js';
import { acceptWebSocket, WebSocketStream } from '../tunnel/transport/websocket.js';
import { HANDSHAKE_TIMEOUT_MS } from './connector-session.js';

export const TUNNEL_PATH = '/v1/tunnel';
/** Request header: the workers a connector holds sessions with (comma-separated instances). */
export const HAVE_WORKERS_HEADER = 'x-underpass-have-workers';
/** Response headers of 409 ALREADY_CONNECTED and 503 DRAINING: this worker's instance, and the set it knows. */
export const WORKER_HEADER = 'X-Underpass-Worker';
export const WORKERS_HEADER = 'X-Underpass-Workers';
/** Names read from a have-list; more are ignored (the announced set is at most CONTROL_LIMITS.workers). */
const MAX_HAVE_NAMES = 64;
export interface AcceptedConnector {
  stream: WebSocketStream;
  connector: string;
  peer: string;
  certificateSerial: string;
  /** The id of the CA in tls.ca that issued the connector's certificate. */
  certificateIssuer: string | undefined;
  /** When the connector's certificate expires: the session ends then (worker/session-expiry.ts). */
  certificateNotAfter: Date;
}

export interface Denial {
  peer: string;
  status: number;
  reason: string;
  message: string;
  /** The limit that refused the connection, if one did. */
  limit?: LimitName;
}

export type TunnelServerLimits = Pick<Limits, 'sessionsPerConnector' | 'sessions' | 'unauthenticatedConnections' | 'unauthenticatedPerSource'>;

export interface TunnelServerOptions {
  connection: ConnectionId;
  tls: TlsMaterial;
  logger: Logger;
  onConnector: (c: AcceptedConnector) => void;
  onDenied: (d: Denial) => void;
  /** False while draining: new connectors are told to go elsewhere. */
  accepting: () => boolean;
  /** Why an authenticated connector may not attach now (403 with that code), e.g. CONNECTOR_NOT_ALLOWED. */
  admit?: (c: { connector: string; certificateSerial: string }) => { code: string; message: string } | undefined;
  /** Plain HTTPS requests (not upgrades) it serves itself, e.g. the enrollment endpoint; true = handled. */
  onRequest?: (req: IncomingMessage, res: ServerResponse) => boolean;
  /** The session and unauthenticated-connection caps; DEFAULT_LIMITS where absent. */
  limits?: Partial<TunnelServerLimits>;
  /** This worker's instance and the worker set, for the mesh answers (docs/ha.md). */
  mesh?: { instance: string; workers: () => readonly string[]; onAlreadyConnected?: (connector: string) => void };
}

const servers = ownerSlot<TunnelServer>('underpass.tunnel-server');
/** TCP sockets closed at once for a limit: their TLS layer's "socket hang up" is not a handshake failure. */
const refusedSockets = new WeakSet<Socket>();

export class TunnelServer {
  readonly #server: https.Server;
  /** Accepted WebSockets, with their connector's name. */
  readonly #streams = new Map<WebSocketStream, string>();
  readonly #sessionsOf = new Map<string, number>();
  /** Unauthenticated connections (TLS or upgrade not finished), per source address and in total. */
  readonly #unauthenticated = new Map<string, number>();
  #unauthenticatedTotal = 0;
  /** The source address an unauthenticated TCP socket is counted under. */
  readonly #pendingSource = new WeakMap<Socket, string>();
  readonly #opts: TunnelServerOptions;
  readonly #limits: TunnelServerLimits;
  /** The CA certificates in tls.ca (several while the connection's CA rotates). */
  #cas: string[];

  constructor(opts: TunnelServerOptions) {
    this.#opts = opts;
    this.#limits = { ...DEFAULT_LIMITS, ...opts.limits };
    this.#cas = pemCertificates(opts.tls.ca.toString());
    this.#server = https.createServer({
      ...secureOptions(opts.tls),
      requestCert: true,
      rejectUnauthorized: false,
      minVersion: 'TLSv1.2',
      // No session tickets, so no resumption: every connector session shows its certificate and is
      // checked against the current CA (a renewed or replaced CA applies to the next reconnect).
      // Tickets also cost about 9 KiB of native memory per idle session (docs/benchmarks.md).
      secureOptions: cryptoConstants.SSL_OP_NO_TICKET,
      // A peer gets as long for its TLS handshake, and then for its upgrade request, as a connector
      // gets for its hello: Node's defaults (120 s and 60 s) let a peer that sends half a TLS record
      // or half a request hold a socket for minutes. Both are audited (TLS_HANDSHAKE, UPGRADE_TIMEOUT).
      handshakeTimeout: HANDSHAKE_TIMEOUT_MS,
      headersTimeout: HANDSHAKE_TIMEOUT_MS,
      requestTimeout: HANDSHAKE_TIMEOUT_MS,
      connectionsCheckingInterval: 1_000,
    });
    // Before the TLS layer sees the socket: one over a cap costs no handshake.
    servers.set(this.#server, this);
    this.#server.prependListener('connection', TunnelServer.#onConnection);
    this.#server.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => this.#onUpgrade(req, socket, head));
    this.#server.on('request', (req, res) => {
      if (opts.onRequest?.(req, res)) return;
      const upgradeNeeded = req.url?.split('?')[0] === TUNNEL_PATH;
      res.writeHead(upgradeNeeded ? 426 : 404, { 'content-type': 'text/plain', connection: 'close' });
      res.end(upgradeNeeded ? 'this endpoint takes WebSocket upgrades from Underpass connectors\n' : 'not found\n');
    });
    this.#server.on('tlsClientError', (err: Error, socket: TLSSocket) => {
      if (refusedSockets.has(rawSocketOf(socket))) return; // refused for a limit, and audited as such
      const peer = formatPeer(socket);
      opts.onDenied({ peer, status: 0, reason: 'TLS_HANDSHAKE', message: errorMessage(err) });
    });
    this.#server.on('clientError', (err: Error & { code?: string }, socket: Socket) => {
      const peer = formatPeer(socket);
      socket.destroy();
      if (err.code === 'ERR_HTTP_REQUEST_TIMEOUT') {
        return opts.onDenied({ peer, status: 408, reason: 'UPGRADE_TIMEOUT', message: `no complete upgrade request within ${HANDSHAKE_TIMEOUT_MS} ms` });
      }
      opts.logger.debug({ peer, err: err.message }, 'malformed HTTP on the tunnel port');
    });
  }

  listen(at: HostPort): Promise<AddressInfo> {
    return listenOn(this.#server, at);
  }

  /** Renewed certificates apply to new handshakes; established sessions are untouched. */
  reloadTls(tls: TlsMaterial): void {
    this.#server.setSecureContext(secureOptions(tls));
    this.#cas = pemCertificates(tls.ca.toString());
  }

  /** Stops accepting new connections (established WebSockets stay up). */
  stopAccepting(): Promise<void> {
    return new Promise((resolve) => this.#server.close(() => resolve()));
  }

  closeAll(): void {
    for (const s of this.#streams.keys()) s.destroy();
    this.#server.closeAllConnections();
  }

  /** Unauthenticated connections now (tests and status). */
  get unauthenticatedCount(): number {
    return this.#unauthenticatedTotal;
  }

  static #onConnection(this: https.Server, socket: Socket): void {
    servers.of(this).#admit(socket);
  }

  static #onRawClose(this: Socket): void {
    servers.of(this).#authenticated(this);
  }

  /** A new TCP connection: counted as unauthenticated until its upgrade, or closed at once over a cap. */
  #admit(socket: Socket): void {
    const source = socket.remoteAddress ?? 'unknown';
    const fromSource = this.#unauthenticated.get(source) ?? 0;
    const limit: LimitName | undefined = this.#unauthenticatedTotal >= this.#limits.unauthenticatedConnections ? 'unauthenticated_connections'
      : fromSource >= this.#limits.unauthenticatedPerSource ? 'unauthenticated_per_source' : undefined;
    if (limit) {
      refusedSockets.add(socket);
      socket.on('error', ignoreError);
      socket.destroy();
      const message = limit === 'unauthenticated_connections'
        ? `${this.#unauthenticatedTotal} connections are still in their TLS handshake or upgrade (limit ${this.#limits.unauthenticatedConnections}); closed before TLS`
        : `${fromSource} connections from ${source} are still in their TLS handshake or upgrade (limit ${this.#limits.unauthenticatedPerSource} per source); closed before TLS`;
      this.#opts.onDenied({ peer: formatPeer(socket), status: 0, reason: 'TOO_MANY_UNAUTHENTICATED', message, limit });
      return;
    }
    this.#unauthenticated.set(source, fromSource + 1);
    this.#unauthenticatedTotal++;
    this.#pendingSource.set(socket, source);
    servers.set(socket, this);
    socket.once('close', TunnelServer.#onRawClose);
  }

  /** `socket` (the TCP socket) is no longer unauthenticated: upgraded, or closed. */
  #authenticated(socket: Socket): void {
    const source = this.#pendingSource.get(socket);
    if (source === undefined) return;
    this.#pendingSource.delete(socket);
    this.#unauthenticatedTotal--;
    const n = (this.#unauthenticated.get(source) ?? 1) - 1;
    if (n === 0) this.#unauthenticated.delete(source);
    else this.#unauthenticated.set(source, n);
  }

  static #forgetStream(this: WebSocketStream): void {
    const server = servers.of(this);
    const name = server.#streams.get(this);
    if (name === undefined) return;
    server.#streams.delete(this);
    const n = (server.#sessionsOf.get(name) ?? 1) - 1;
    if (n === 0) server.#sessionsOf.delete(name);
    else server.#sessionsOf.set(name, n);
  }

  #onUpgrade(req: IncomingMessage, socket: Socket, head: Buffer): void {
    const tlsSocket = socket as TLSSocket;
    const peer = formatPeer(socket);
    socket.on('error', ignoreError);
    if (req.url?.split('?')[0] !== TUNNEL_PATH) {
      return this.#reject(socket, peer, 404, 'BAD_PATH', `no tunnel at ${capText(req.url ?? '')}; connectors use ${TUNNEL_PATH}`);
    }
    const cert = tlsSocket.getPeerCertificate();
    if (!cert || Object.keys(cert).length === 0) {
      return this.#reject(socket, peer, 401, 'NO_CLIENT_CERT', 'a client certificate is required');
    }
    if (!tlsSocket.authorized) {
      const code = String(tlsSocket.authorizationError ?? 'UNKNOWN');
      const why = code === 'CERT_HAS_EXPIRED' ? 'the client certificate has expired'
        : code === 'CERT_NOT_YET_VALID' ? 'the client certificate is not valid yet'
          : `the client certificate was not issued by the CA of connection ${this.#connectionName()} (${code})`;
      return this.#reject(socket, peer, 403, code === 'CERT_HAS_EXPIRED' ? 'CERT_EXPIRED' : 'CERT_UNTRUSTED', why);
    }
    let connector: string;
    try {
      const identity = identityFromPeerCertificate(cert);
      const c = this.#opts.connection;
      if (identity.namespace !== c.namespace || identity.connection !== c.name) {
        return this.#reject(socket, peer, 403, 'WRONG_CONNECTION',
          `the client certificate is for connection ${identity.namespace}/${identity.connection}, not ${this.#connectionName()}`);
      }
      if (identity.role !== 'connector') {
        return this.#reject(socket, peer, 403, 'WRONG_ROLE', `the client certificate identifies a ${identity.role}, not a connector`);
      }
      connector = identity.name;
    } catch (err) {
      return this.#reject(socket, peer, 403, 'BAD_IDENTITY', capText(errorMessage(err), 512));
    }
    const refused = this.#opts.admit?.({ connector, certificateSerial: cert.serialNumber });
    if (refused) return this.#reject(socket, peer, 403, refused.code, refused.message);
    // Authenticated from here on: the mesh answers may name this worker and its siblings.
    const mesh = this.#opts.mesh;
    if (!this.#opts.accepting()) {
      return this.#reject(socket, peer, 503, 'DRAINING', 'this worker is shutting down; reconnect to another', undefined, this.#meshHeaders(false));
    }
    if (mesh && haveWorkers(req.headers[HAVE_WORKERS_HEADER]).has(mesh.instance)) {
      // The connector's normal search, not a failure: counted, not audited.
      mesh.onAlreadyConnected?.(connector);
      return this.#reply(socket, 409, 'ALREADY_CONNECTED', `connector "${connector}" already holds a session with worker ${mesh.instance}`, this.#meshHeaders(true));
    }
    if (this.#streams.size >= this.#limits.sessions) {
      return this.#reject(socket, peer, 429, 'TOO_MANY_SESSIONS',
        `this worker holds ${this.#streams.size} sessions, its limit (limits.sessions); try another worker or later`, 'sessions');
    }
    const ofName = this.#sessionsOf.get(connector) ?? 0;
    if (ofName >= this.#limits.sessionsPerConnector) {
      return this.#reject(socket, peer, 429, 'TOO_MANY_SESSIONS',
        `connector "${connector}" already has ${ofName} sessions on this worker, its limit (limits.sessionsPerConnector)`, 'sessions_per_connector');
    }
    const accepted = acceptWebSocket(req, socket, head);
    if (!(accepted instanceof WebSocketStream)) return this.#reject(socket, peer, accepted.status, 'BAD_UPGRADE', accepted.message);
    this.#authenticated(rawSocketOf(tlsSocket));
    this.#streams.set(accepted, connector);
    this.#sessionsOf.set(connector, ofName + 1);
    servers.set(accepted, this);
    accepted.once('close', TunnelServer.#forgetStream);
    let issuer: string | undefined;
    try {
      issuer = issuerIdIn(cert.raw, this.#cas);
    } catch {
      issuer = undefined;
    }
    this.#opts.onConnector({ stream: accepted, connector, peer, certificateSerial: cert.serialNumber, certificateIssuer: issuer, certificateNotAfter: new Date(cert.valid_to) });
  }

  #reject(socket: Socket, peer: string, status: number, reason: string, message: string, limit?: LimitName, headers: Record<string, string> = {}): void {
    this.#opts.onDenied({ peer, status, reason, message, ...(limit ? { limit } : {}) });
    this.#reply(socket, status, reason, message, headers);
  }

  /** Every refusal's answer: status, reason header, text body, then the connection closes. */
  #reply(socket: Socket, status: number, reason: string, message: string, headers: Record<string, string> = {}): void {
    if (socket.writable) {
      const body = `${message}\n`;
      const extra = Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join('');
      socket.end(
        `HTTP/1.1 ${status} ${STATUS_TEXT[status] ?? 'Error'}\r\nConnection: close\r\nContent-Type: text/plain\r\n` +
          `X-Underpass-Reason: ${reason}\r\n${extra}Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
      );
    }
    socket.destroySoon?.();
  }

  #meshHeaders(withSet: boolean): Record<string, string> {
    const mesh = this.#opts.mesh;
    if (!mesh) return {};
    return { [WORKER_HEADER]: mesh.instance, ...(withSet ? { [WORKERS_HEADER]: mesh.workers().join(',') } : {}) };
  }

  #connectionName(): string {
    return `${this.#opts.connection.namespace}/${this.#opts.connection.name}`;
  }
}

const STATUS_TEXT: Record<number, string> = {
  400: 'Bad Request', 401: 'Unauthorized', 403: 'Forbidden', 404: 'Not Found', 405: 'Method Not Allowed', 409: 'Conflict', 426: 'Upgrade Required',
  429: 'Too Many Requests', 503: 'Service Unavailable',
};

/** The instance names of an X-Underpass-Have-Workers header (at most MAX_HAVE_NAMES; anything odd is just not a match). */
export function haveWorkers(header: string | string[] | undefined): Set<string> {
  const text = Array.isArray(header) ? header.join(',') : header ?? '';
  return new Set(text.split(',', MAX_HAVE_NAMES).map((n) => n.trim()).filter((n) => n.length > 0));
}

/** The TCP socket under a server-side TLS socket (Node links them as `_parent`); the socket itself otherwise. */
function rawSocketOf(socket: Socket): Socket {
  return (socket as Socket & { _parent?: Socket })._parent ?? socket;
}

function secureOptions(tls: TlsMaterial): { cert: Buffer; key: Buffer; ca: Buffer } {
  return { cert: tls.cert, key: tls.key, ca: tls.ca };
}
