/**
 * The worker's WSS endpoint. TLS asks for a client certificate but lets the
 * handshake finish without one, so that every refusal can be answered at the
 * HTTP layer with a reason the connector can log — and so that every refusal
 * goes through one function (`rejectUpgrade`, like ws's abortHandshake).
 * Only `GET /v1/tunnel` with an upgrade and a certificate from this
 * connection's CA naming a connector of this connection gets a WebSocket.
 */
import { constants as cryptoConstants } from 'node:crypto';
import https from 'node:https';
import type { IncomingMessage } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import type { Logger } from 'pino';
import { formatPeer, type HostPort } from '../tunnel/address.js';
import { errorMessage, ignoreError } from '../tunnel/errors.js';
import { identityFromPeerCertificate, type ConnectionId } from '../tunnel/identity.js';
import { listenOn } from '../tunnel/listen.js';
import type { TlsMaterial } from '../tunnel/transport/tls-files.js';
import { acceptWebSocket, WebSocketStream } from '../tunnel/transport/websocket.js';
import { HANDSHAKE_TIMEOUT_MS } from './connector-session.js';

export const TUNNEL_PATH = '/v1/tunnel';
export interface AcceptedConnector {
  stream: WebSocketStream;
  connector: string;
  peer: string;
  certificateSerial: string;
}

export interface Denial {
  peer: string;
  status: number;
  reason: string;
  message: string;
}

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
}

export class TunnelServer {
  readonly #server: https.Server;
  readonly #streams = new Set<WebSocketStream>();
  readonly #opts: TunnelServerOptions;
  /** One listener for every session's close (`this` is the stream), not a closure per session. */
  readonly #forgetStream: (this: WebSocketStream) => void;

  constructor(opts: TunnelServerOptions) {
    this.#opts = opts;
    const streams = this.#streams;
    this.#forgetStream = function (this: WebSocketStream) {
      streams.delete(this);
    };
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
    this.#server.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => this.#onUpgrade(req, socket, head));
    this.#server.on('request', (req, res) => {
      const upgradeNeeded = req.url?.split('?')[0] === TUNNEL_PATH;
      res.writeHead(upgradeNeeded ? 426 : 404, { 'content-type': 'text/plain', connection: 'close' });
      res.end(upgradeNeeded ? 'this endpoint takes WebSocket upgrades from Underpass connectors\n' : 'not found\n');
    });
    this.#server.on('tlsClientError', (err: Error, socket: TLSSocket) => {
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
  }

  /** Stops accepting new connections (established WebSockets stay up). */
  stopAccepting(): Promise<void> {
    return new Promise((resolve) => this.#server.close(() => resolve()));
  }

  closeAll(): void {
    for (const s of this.#streams) s.destroy();
    this.#server.closeAllConnections();
  }

  #onUpgrade(req: IncomingMessage, socket: Socket, head: Buffer): void {
    const tlsSocket = socket as TLSSocket;
    const peer = formatPeer(socket);
    socket.on('error', ignoreError);
    if (req.url?.split('?')[0] !== TUNNEL_PATH) return this.#reject(socket, peer, 404, 'BAD_PATH', `no tunnel at ${req.url}; connectors use ${TUNNEL_PATH}`);
    if (!this.#opts.accepting()) return this.#reject(socket, peer, 503, 'DRAINING', 'this worker is shutting down; reconnect to another');
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
      return this.#reject(socket, peer, 403, 'BAD_IDENTITY', errorMessage(err));
    }
    const refused = this.#opts.admit?.({ connector, certificateSerial: cert.serialNumber });
    if (refused) return this.#reject(socket, peer, 403, refused.code, refused.message);
    const accepted = acceptWebSocket(req, socket, head);
    if (!(accepted instanceof WebSocketStream)) return this.#reject(socket, peer, accepted.status, 'BAD_UPGRADE', accepted.message);
    this.#streams.add(accepted);
    accepted.once('close', this.#forgetStream);
    this.#opts.onConnector({ stream: accepted, connector, peer, certificateSerial: cert.serialNumber });
  }

  #reject(socket: Socket, peer: string, status: number, reason: string, message: string): void {
    this.#opts.onDenied({ peer, status, reason, message });
    if (socket.writable) {
      const body = `${message}\n`;
      socket.end(
        `HTTP/1.1 ${status} ${STATUS_TEXT[status] ?? 'Error'}\r\nConnection: close\r\nContent-Type: text/plain\r\n` +
          `X-Underpass-Reason: ${reason}\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
      );
    }
    socket.destroySoon?.();
  }

  #connectionName(): string {
    return `${this.#opts.connection.namespace}/${this.#opts.connection.name}`;
  }
}

const STATUS_TEXT: Record<number, string> = { 400: 'Bad Request', 401: 'Unauthorized', 403: 'Forbidden', 404: 'Not Found', 405: 'Method Not Allowed', 426: 'Upgrade Required', 503: 'Service Unavailable' };

function secureOptions(tls: TlsMaterial): { cert: Buffer; key: Buffer; ca: Buffer } {
  return { cert: tls.cert, key: tls.key, ca: tls.ca };
}
