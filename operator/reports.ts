/**
 * The operator end of the worker channel (docs/operator-channel.md). Workers
 * have no Kubernetes API access; each one POSTs its status here over mutual
 * TLS with its own worker certificate, and the answer carries the mapping set
 * it must serve. TLS asks for a client certificate but accepts any, so every
 * refusal is an HTTP answer with a reason, given by one function (`#refuse`).
 *
 *   POST /v1/connections/{namespace}/{name}/report   JSON WorkerReport
 *   200 {"mappings": [...]}                           the desired set, applied at once
 *   401 no client certificate            403 wrong CA, identity or validity
 *   404 unknown connection or path       405 not POST
 *   400 invalid JSON or report (names the field)     413 body over 1 MiB
 *   503 the connection's mapping set is not known yet (the worker keeps its own)
 */
import { X509Certificate } from 'node:crypto';
import { EventEmitter } from 'node:events';
import https from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { PeerCertificate, TLSSocket } from 'node:tls';
import type { Logger } from 'pino';
import { z } from 'zod';
import type { HostPort } from '../tunnel/address.js';
import { zodToConfigError } from '../tunnel/config-load.js';
import { errorMessage, UnderpassError } from '../tunnel/errors.js';
import {
  connectionOf, dns1123LabelProblem, formatIdentityUri, identityFromPeerCertificate, sameConnection, type ConnectionId,
} from '../tunnel/identity.js';
import type { Mapping } from '../tunnel/mapping.js';
import { closeNow, listenOn } from '../tunnel/listen.js';
import { CLIENT_AUTH, leafProblem } from '../tunnel/pki-generic.js';

export interface ReportedConnector {
  name: string;
  session: string;
  since: string;
  version: string;
  address: string;
  unavailableMappings: Array<{ name: string; state: string; reason?: string; message?: string }>;
}

export interface WorkerReport {
  instance: string;
  version: string;
  ready: boolean;
  draining: boolean;
  connectors: ReportedConnector[];
  listenerFailures: Array<{ mapping: string; message: string }>;
}

export interface DesiredWorkerConfig {
  mappings: Mapping[];
}

export const MAX_REPORT_BYTES = 1 << 20;
/** Longest free-text field (messages); workers truncate to stay below it. */
export const MAX_MESSAGE_CHARS = 1024;
const MAX_ITEMS = 1000;

const text = (max: number) => z.string().max(max, `must be at most ${max} characters`);
const list = <T extends z.ZodType>(item: T) => z.array(item).max(MAX_ITEMS, `must have at most ${MAX_ITEMS} entries`);

// Unknown fields are dropped, not refused: a newer worker may report more than this operator knows.
export const workerReportSchema = z.object({
  instance: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$/, 'must be 1 to 253 letters, digits, ".", "_" or "-"'),
  version: text(64),
  ready: z.boolean(),
  draining: z.boolean(),
  connectors: list(z.object({
    name: text(63),
    session: text(64),
    since: text(64),
    version: text(64),
    address: text(300),
    unavailableMappings: list(z.object({
      name: text(63),
      state: text(32),
      reason: text(128).optional(),
      message: text(MAX_MESSAGE_CHARS).optional(),
    })),
  })),
  listenerFailures: list(z.object({ mapping: text(63), message: text(MAX_MESSAGE_CHARS) })),
}) satisfies z.ZodType<WorkerReport>;

interface StoredReport {
  report: WorkerReport;
  receivedAt: number;
  digest: string;
}

export interface ReportStore {
  on(event: 'report', listener: (connection: string) => void): this;
}

/**
 * The latest report of every worker, per connection key "ns/name". 'report'
 * fires only when a report is news: a new worker, different content, or a
 * worker reporting again after `live()` last saw it as stale.
 */
export class ReportStore extends EventEmitter {
  readonly #now: () => number;
  readonly #connections = new Map<string, Map<string, StoredReport>>();
  /** The maxAge `live()` last used per connection: a longer silence makes the next report news. */
  readonly #maxAge = new Map<string, number>();

  constructor(now: () => number = Date.now) {
    super();
    this.#now = now;
  }

  /** Stores `report`; returns true (and emits 'report') when it changed what we know. */
  record(connection: string, report: WorkerReport): boolean {
    const now = this.#now();
    let workers = this.#connections.get(connection);
    if (!workers) this.#connections.set(connection, (workers = new Map()));
    const before = workers.get(report.instance);
    const digest = JSON.stringify(report);
    workers.set(report.instance, { report, receivedAt: now, digest });
    const news = !before || before.digest !== digest || now - before.receivedAt > (this.#maxAge.get(connection) ?? Infinity);
    if (news) this.emit('report', connection);
    return news;
  }

  /** Reports received within `maxAgeMs`, by instance name. Older ones are dropped: that worker is gone. */
  live(connection: string, maxAgeMs: number): Array<WorkerReport & { receivedAt: number }> {
    this.#maxAge.set(connection, maxAgeMs);
    const workers = this.#connections.get(connection);
    if (!workers) return [];
    const now = this.#now();
    const out: Array<WorkerReport & { receivedAt: number }> = [];
    for (const [instance, entry] of workers) {
      if (now - entry.receivedAt > maxAgeMs) workers.delete(instance);
      else out.push({ ...entry.report, receivedAt: entry.receivedAt });
    }
    return out.sort((a, b) => (a.instance < b.instance ? -1 : a.instance > b.instance ? 1 : 0));
  }

  hasReported(connection: string): boolean {
    return this.#connections.has(connection);
  }

  forget(connection: string): void {
    this.#connections.delete(connection);
    this.#maxAge.delete(connection);
  }
}

export interface ReportServerOptions {
  /** PEM: the operator's serving certificate and key. */
  tls: { cert: string; key: string };
  logger: Logger;
  store: ReportStore;
  /** PEM of that connection's CA; undefined = unknown connection (404). */
  caFor(connection: ConnectionId): string | undefined;
  /** The mapping set the connection's workers must serve; undefined = not known yet (503). */
  desiredFor(connection: ConnectionId): DesiredWorkerConfig | undefined;
}

const REPORT_PATH = /^\/v1\/connections\/([^/]+)\/([^/]+)\/report$/;
/** A refused client that keeps trying is logged again after this long. */
const REFUSAL_LOG_INTERVAL_MS = 60_000;

/** A request answered with an error status; `code` is the reason the client sees. */
class Refusal extends UnderpassError {
  readonly status: number;
  readonly extra: Record<string, string>;

  constructor(status: number, reason: string, message: string, extra: Record<string, string> = {}) {
    super(reason, message);
    this.status = status;
    this.extra = extra;
  }
}

export class ReportServer {
  readonly #server: https.Server;
  readonly #opts: ReportServerOptions;
  readonly #log: Logger;
  readonly #lastRefusalLog = new Map<string, number>();

  constructor(opts: ReportServerOptions) {
    this.#opts = opts;
    this.#log = opts.logger.child({ component: 'report-server' });
    this.#server = https.createServer({
      cert: opts.tls.cert,
      key: opts.tls.key,
      requestCert: true,
      rejectUnauthorized: false,
      minVersion: 'TLSv1.2',
      // Node's default (120 s) lets a peer that sends half a TLS record hold a socket for minutes.
      handshakeTimeout: 10_000,
    }, (req, res) => void this.#onRequest(req, res));
    this.#server.headersTimeout = 10_000;
    this.#server.requestTimeout = 15_000;
    // Longer than any sensible report interval, so a worker's keep-alive connection is reused.
    this.#server.keepAliveTimeout = 65_000;
    this.#server.on('tlsClientError', (err: Error, socket: TLSSocket) =>
      this.#log.debug({ peer: socket.remoteAddress, err: err.message }, `TLS handshake with ${socket.remoteAddress ?? 'unknown'} failed: ${err.message}`));
  }

  listen(at: HostPort): Promise<AddressInfo> {
    return listenOn(this.#server, at);
  }

  /** A renewed serving certificate applies to new connections. */
  reloadTls(tls: { cert: string; key: string }): void {
    this.#server.setSecureContext({ cert: tls.cert, key: tls.key });
  }

  close(): Promise<void> {
    return closeNow(this.#server);
  }

  async #onRequest(req: IncomingMessage, res: ServerResponse): Promise<void> {
    try {
      const desired = await this.#handle(req);
      send(res, 200, desired);
    } catch (err) {
      if (err instanceof Refusal) return this.#refuse(req, res, err);
      this.#log.error({ err: errorMessage(err), url: req.url }, `report handling failed: ${errorMessage(err)}`);
      send(res, 500, { error: 'internal error', reason: 'INTERNAL' });
    }
  }

  async #handle(req: IncomingMessage): Promise<DesiredWorkerConfig> {
    const match = REPORT_PATH.exec((req.url ?? '/').split('?')[0] as string);
    if (!match) throw new Refusal(404, 'NOT_FOUND', 'no such endpoint; workers POST to /v1/connections/<namespace>/<name>/report');
    const connection = { namespace: match[1]!, name: match[2]! };
    const bad = dns1123LabelProblem(connection.namespace) ?? dns1123LabelProblem(connection.name);
    if (bad) throw new Refusal(404, 'UNKNOWN_CONNECTION', `"${connection.namespace}/${connection.name}" is not a connection id: ${bad}`);
    if (req.method !== 'POST') throw new Refusal(405, 'METHOD_NOT_ALLOWED', 'reports are POSTed', { allow: 'POST' });
    const peer = (req.socket as TLSSocket).getPeerCertificate();
    if (!peer?.raw) throw new Refusal(401, 'NO_CLIENT_CERT', 'a client certificate is required: the worker certificate of this connection');
    const caPem = this.#opts.caFor(connection);
    if (caPem === undefined) throw new Refusal(404, 'UNKNOWN_CONNECTION', `no connection ${connection.namespace}/${connection.name}`);
    authenticate(peer, caPem, connection);
    const report = parseReport(await readBody(req));
    const key = `${connection.namespace}/${connection.name}`;
    const news = this.#opts.store.record(key, report);
    this.#log[news ? 'info' : 'debug']({ connection: key, instance: report.instance, connectors: report.connectors.length, ready: report.ready, draining: report.draining },
      `report from worker ${report.instance} of ${key}: ${report.connectors.length} connector(s), ${report.ready ? 'ready' : 'not ready'}${report.draining ? ', draining' : ''}`);
    const desired = this.#opts.desiredFor(connection);
    if (!desired) throw new Refusal(503, 'DESIRED_UNKNOWN', `the mapping set of ${key} is not known yet; keep serving the current one`);
    return { mappings: desired.mappings };
  }

  #refuse(req: IncomingMessage, res: ServerResponse, r: Refusal): void {
    const peer = req.socket.remoteAddress ?? 'unknown';
    const logKey = `${peer} ${req.url} ${r.code}`;
    const now = Date.now();
    if (now - (this.#lastRefusalLog.get(logKey) ?? -Infinity) >= REFUSAL_LOG_INTERVAL_MS) {
      if (this.#lastRefusalLog.size > 1000) this.#lastRefusalLog.clear();
      this.#lastRefusalLog.set(logKey, now);
      this.#log.warn({ peer, url: req.url, status: r.status, reason: r.code }, `refused report from ${peer} (${r.status} ${r.code}): ${r.message}`);
    }
    const { allow, ...extra } = r.extra;
    send(res, r.status, { error: r.message, reason: r.code, ...extra }, allow ? { allow } : {});
  }
}

/** Lock 1: issued by this connection's CA, valid now, for clientAuth. Lock 2: names exactly its worker identity. */
function authenticate(peer: PeerCertificate, caPem: string, connection: ConnectionId): void {
  const problem = leafProblem(new X509Certificate(peer.raw), new X509Certificate(caPem), new Date(), CLIENT_AUTH);
  if (problem) {
    const why = problem.code === 'CERT_UNTRUSTED' ? `${problem.message}, the CA of connection ${connection.namespace}/${connection.name}` : problem.message;
    throw new Refusal(403, problem.code, why);
  }
  let identity;
  try {
    identity = identityFromPeerCertificate(peer);
  } catch (err) {
    throw new Refusal(403, 'BAD_IDENTITY', errorMessage(err));
  }
  const uri = formatIdentityUri(identity);
  if (!sameConnection(connectionOf(identity), connection)) {
    throw new Refusal(403, 'WRONG_CONNECTION', `the certificate names ${uri}, not a worker of ${connection.namespace}/${connection.name}`);
  }
  if (identity.role !== 'worker') throw new Refusal(403, 'WRONG_ROLE', `the certificate names ${uri}; only the connection's workers report`);
}

function parseReport(body: Buffer): WorkerReport {
  let raw: unknown;
  try {
    raw = JSON.parse(body.toString('utf8'));
  } catch (err) {
    throw new Refusal(400, 'INVALID_JSON', `the body is not JSON: ${errorMessage(err)}`);
  }
  const result = workerReportSchema.safeParse(raw, { reportInput: true });
  if (result.success) return result.data;
  const issue = zodToConfigError('report', result.error);
  const field = issue.field ?? '(body)';
  throw new Refusal(400, 'INVALID_REPORT', `field "${field}": ${issue.problem}`, { field });
}

function readBody(req: IncomingMessage): Promise<Buffer> {
  const tooLarge = () => new Refusal(413, 'TOO_LARGE', `a report may be at most ${MAX_REPORT_BYTES} bytes`);
  if (Number(req.headers['content-length'] ?? 0) > MAX_REPORT_BYTES) return Promise.reject(tooLarge());
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer): void => {
      size += chunk.length;
      if (size <= MAX_REPORT_BYTES) return void chunks.push(chunk);
      req.off('data', onData);
      req.pause();
      reject(tooLarge());
    };
    req.on('data', onData);
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

function send(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = `${JSON.stringify(body)}\n`;
  const reason = (body as { reason?: string }).reason;
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
    'cache-control': 'no-store',
    ...(reason ? { 'x-underpass-reason': reason } : {}),
    // An unread body (413, early refusals) cannot be skipped safely: close the connection.
    ...(status === 200 ? {} : { connection: 'close' }),
    ...headers,
  });
  res.end(text);
}
