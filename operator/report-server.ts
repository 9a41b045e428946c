/**
 * The operator end of the worker channel (docs/operator-channel.md; the
 * contract is tunnel/operator-channel.ts). Workers have no Kubernetes API
 * access; each one POSTs its status here over mutual TLS with its own worker
 * certificate, and the answer carries what it must enforce: the mapping set
 * and the admission list. TLS asks for a client certificate but accepts any,
 * so every refusal is an HTTP answer with a reason, given by one function
 * (`#refuse`).
 *
 *   POST /v1/connections/{namespace}/{name}/report   JSON WorkerReport
 *   200 {"mappings": [...], "admission": {...}, "report": {"accepted": ...}}
 *       also when the report itself is invalid: an authenticated worker always
 *       gets what it must enforce, so no report can freeze its mapping set
 *   401 no client certificate            403 wrong CA, identity or validity
 *   404 unknown connection or path       405 not POST
 *   413 body over MAX_REPORT_BYTES       429/503 too many reports at once
 *   503 the connection's mapping set is not known yet (the worker keeps its own)
 */
import { X509Certificate } from 'node:crypto';
import https from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { PeerCertificate, TLSSocket } from 'node:tls';
import type { Logger } from 'pino';
import type { HostPort } from '../tunnel/address.js';
import type { Admission } from '../tunnel/admission.js';
import { formatPath } from '../tunnel/config-load.js';
import { errorCode, errorMessage, UnderpassError } from '../tunnel/errors.js';
import {
  connectionOf, dns1123LabelProblem, formatIdentityUri, identityFromPeerCertificate, sameConnection, type ConnectionId,
} from '../tunnel/identity.js';
import type { Mapping } from '../tunnel/mapping.js';
import { closeNow, listenOn } from '../tunnel/listen.js';
import {
  ENROLL_PATH_PATTERN, enrollRequestSchema, MAX_REPORT_BYTES, MAX_SIGN_BYTES, REPORT_PATH_PATTERN, SIGN_PATH_PATTERN, signRequestSchema, workerReportSchema,
  type EnrollAnswer, type EnrollRequest, type OperatorAnswer, type ReportVerdict, type SignAnswer, type SignRequest, type WorkerReport,
} from '../tunnel/operator-channel.js';
import { capText } from '../tunnel/limits.js';
import { CLIENT_AUTH, leafProblem } from '../tunnel/pki-generic.js';
import { pemCertificates } from '../tunnel/pki.js';
import type { ReportStore } from './report-store.js';

/** What the workers of one connection must enforce. */
export interface DesiredWorkerState {
  mappings: Mapping[];
  admission: Admission;
}

/** Counters the server keeps (operator/metrics.ts). */
export interface ReportServerMetrics {
  /** result: accepted, invalid (answered, not stored) or refused. */
  reports: { inc(labels: { result: 'accepted' | 'invalid' | 'refused' }): void };
  /** reason: the refusal's code (a fixed set). */
  refusals: { inc(labels: { reason: string }): void };
}

/** Reports read at once over all connections; more are refused with 503 BUSY (about 15 MiB of bodies). */
export const MAX_REPORTS_IN_FLIGHT = 32;

export interface ReportServerOptions {
  /** PEM: the operator's serving certificate and key. */
  tls: { cert: string; key: string };
  logger: Logger;
  store: ReportStore;
  /** PEM of that connection's CA; undefined = unknown connection (404). */
  caFor(connection: ConnectionId): string | undefined;
  /** What the connection's workers must enforce; undefined = not known yet (503). */
  desiredFor(connection: ConnectionId): DesiredWorkerState | undefined;
  /**
   * Signs a connector certificate a worker asks for on behalf of a connector
   * its session authenticated (tunnel/operator-channel.ts, sign). A thrown
   * UnderpassError's code is the refusal's reason (ERR_CSR_* → 400, others
   * 403). Unset: 404.
   */
  signFor?(connection: ConnectionId, req: SignRequest): Promise<SignAnswer>;
  /**
   * Enrolls a connector with a one-time token, forwarded by a worker of the
   * connection (tunnel/operator-channel.ts, enroll). Codes as for signFor;
   * TOKEN_MALFORMED → 400. Unset: 404.
   */
  enrollFor?(connection: ConnectionId, req: EnrollRequest): Promise<EnrollAnswer & { serial?: string }>;
  /** Requests of one connection read at once (its workers report one at a time each); default 21. */
  maxInFlight?: (connection: string) => number;
  metrics?: ReportServerMetrics;
}

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
  readonly #inFlight = new Map<string, number>();
  #inFlightTotal = 0;

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
      if (SIGN_PATH_PATTERN.test((req.url ?? '/').split('?')[0] as string)) {
        send(res, 200, await this.#sign(req));
        return;
      }
      if (ENROLL_PATH_PATTERN.test((req.url ?? '/').split('?')[0] as string)) {
        send(res, 200, await this.#enroll(req));
        return;
      }
      const answer = await this.#handle(req);
      this.#opts.metrics?.reports.inc({ result: answer.report?.accepted === false ? 'invalid' : 'accepted' });
      send(res, 200, answer);
    } catch (err) {
      if (err instanceof Refusal) return this.#refuse(req, res, err);
      this.#log.error({ err: errorMessage(err), url: req.url }, `report handling failed: ${errorMessage(err)}`);
      send(res, 500, { error: 'internal error', reason: 'INTERNAL' });
    }
  }

  /** Path, method and the worker's certificate, in that order: the connection the certificate proves. */
  #authenticated(req: IncomingMessage, pattern: RegExp): ConnectionId {
    const match = pattern.exec((req.url ?? '/').split('?')[0] as string);
    if (!match) throw new Refusal(404, 'NOT_FOUND', 'no such endpoint; workers POST to /v1/connections/<namespace>/<name>/report');
    const path = { namespace: match[1]!, name: match[2]! };
    const bad = dns1123LabelProblem(path.namespace) ?? dns1123LabelProblem(path.name);
    if (bad) throw new Refusal(404, 'UNKNOWN_CONNECTION', `"${path.namespace}/${path.name}" is not a connection id: ${bad}`);
    if (req.method !== 'POST') throw new Refusal(405, 'METHOD_NOT_ALLOWED', 'reports are POSTed', { allow: 'POST' });
    const peer = (req.socket as TLSSocket).getPeerCertificate();
    if (!peer?.raw) throw new Refusal(401, 'NO_CLIENT_CERT', 'a client certificate is required: the worker certificate of this connection');
    const caPem = this.#opts.caFor(path);
    if (caPem === undefined) throw new Refusal(404, 'UNKNOWN_CONNECTION', `no connection ${path.namespace}/${path.name}`);
    // From here on, the connection is the one the certificate proves (and the path names).
    return authenticate(peer, caPem, path);
  }

  /** A connector's certificate request, forwarded by an authenticated worker of its connection. */
  async #sign(req: IncomingMessage): Promise<SignAnswer> {
    const signFor = this.#opts.signFor;
    if (!signFor) throw new Refusal(404, 'NOT_FOUND', 'this operator does not sign certificates');
    const connection = this.#authenticated(req, SIGN_PATH_PATTERN);
    const key = `${connection.namespace}/${connection.name}`;
    const body = await this.#readBounded(req, key, MAX_SIGN_BYTES);
    let request: SignRequest;
    try {
      request = signRequestSchema.parse(JSON.parse(body.toString('utf8')));
    } catch (err) {
      throw new Refusal(400, 'INVALID_REQUEST', `not a sign request: ${capText(errorMessage(err), 256)}`);
    }
    try {
      return await signFor(connection, request);
    } catch (err) {
      const code = errorCode(err) ?? 'INTERNAL';
      if (code === 'INTERNAL' || !(err instanceof UnderpassError)) throw err;
      throw new Refusal(code.startsWith('ERR_CSR') ? 400 : 403, code.replace(/^ERR_/, ''), errorMessage(err));
    }
  }

  /** A connector's enrollment (token + CSR), forwarded by an authenticated worker of the token's connection. */
  async #enroll(req: IncomingMessage): Promise<EnrollAnswer> {
    const enrollFor = this.#opts.enrollFor;
    if (!enrollFor) throw new Refusal(404, 'NOT_FOUND', 'this operator does not enroll connectors');
    const connection = this.#authenticated(req, ENROLL_PATH_PATTERN);
    const body = await this.#readBounded(req, `${connection.namespace}/${connection.name}`, MAX_SIGN_BYTES);
    let request: EnrollRequest;
    try {
      request = enrollRequestSchema.parse(JSON.parse(body.toString('utf8')));
    } catch (err) {
      throw new Refusal(400, 'INVALID_REQUEST', `not an enrollment request: ${capText(errorMessage(err), 256)}`);
    }
    try {
      const answer = await enrollFor(connection, request);
      this.#log.info({ connection: `${connection.namespace}/${connection.name}`, connector: answer.connector, serial: answer.serial, peer: request.peer },
        `enrolled connector ${answer.connector} of ${connection.namespace}/${connection.name} (from ${request.peer ?? 'unknown'})`);
      return { certificate: answer.certificate, ca: answer.ca, connector: answer.connector };
    } catch (err) {
      const code = errorCode(err);
      if (!code || !(err instanceof UnderpassError)) throw err;
      const reason = code.replace(/^ERR_/, '');
      this.#log.warn({ connection: `${connection.namespace}/${connection.name}`, reason, peer: request.peer },
        `refused an enrollment for ${connection.namespace}/${connection.name} from ${request.peer ?? 'unknown'} (${reason}): ${errorMessage(err)}`);
      throw new Refusal(reason === 'TOKEN_MALFORMED' || reason.startsWith('CSR') ? 400 : 403, reason, errorMessage(err));
    }
  }

  async #handle(req: IncomingMessage): Promise<OperatorAnswer> {
    const connection = this.#authenticated(req, REPORT_PATH_PATTERN);
    const key = `${connection.namespace}/${connection.name}`;
    const body = await this.#readBounded(req, key);
    const parsed = parseReport(body);
    let verdict: ReportVerdict = { accepted: true };
    if (parsed.ok) {
      const report = parsed.report;
      const news = this.#opts.store.record(key, report, body.length);
      this.#log[news ? 'info' : 'debug']({ connection: key, instance: report.instance, connectors: report.connectors.length, ready: report.ready, draining: report.draining },
        `report from worker ${report.instance} of ${key}: ${report.connectors.length} connector(s), ${report.ready ? 'ready' : 'not ready'}${report.draining ? ', draining' : ''}`);
    } else {
      verdict = { accepted: false, reason: parsed.reason, message: parsed.message, ...(parsed.field ? { field: parsed.field } : {}) };
      this.#logLimited(`${req.socket.remoteAddress} ${key} ${parsed.reason} ${parsed.field}`, () => this.#log.warn({ connection: key, reason: parsed.reason, field: parsed.field },
        `report from a worker of ${key} not recorded (${parsed.reason}): ${parsed.message}; answering with the mapping set anyway`));
    }
    const desired = this.#opts.desiredFor(connection);
    if (!desired) throw new Refusal(503, 'DESIRED_UNKNOWN', `the mapping set of ${key} is not known yet; keep serving the current one`);
    return { mappings: desired.mappings, admission: desired.admission, report: verdict };
  }

  /**
   * The body, once this connection and the server have room for it: memory
   * for bodies is bounded by MAX_REPORTS_IN_FLIGHT × MAX_REPORT_BYTES, and
   * one connection's workers cannot take all of it.
   */
  async #readBounded(req: IncomingMessage, key: string, limit = MAX_REPORT_BYTES): Promise<Buffer> {
    const mine = this.#inFlight.get(key) ?? 0;
    if (mine >= (this.#opts.maxInFlight?.(key) ?? 21)) {
      throw new Refusal(429, 'TOO_MANY_REQUESTS', `too many reports from workers of ${key} at once; each worker sends one at a time`);
    }
    if (this.#inFlightTotal >= MAX_REPORTS_IN_FLIGHT) throw new Refusal(503, 'BUSY', 'the operator is reading too many reports at once; retry at the next interval');
    this.#inFlight.set(key, mine + 1);
    this.#inFlightTotal++;
    try {
      return await readBody(req, limit);
    } finally {
      this.#inFlightTotal--;
      const n = (this.#inFlight.get(key) ?? 1) - 1;
      if (n > 0) this.#inFlight.set(key, n);
      else this.#inFlight.delete(key);
    }
  }

  #refuse(req: IncomingMessage, res: ServerResponse, r: Refusal): void {
    this.#opts.metrics?.reports.inc({ result: 'refused' });
    this.#opts.metrics?.refusals.inc({ reason: r.code });
    const peer = req.socket.remoteAddress ?? 'unknown';
    this.#logLimited(`${peer} ${req.url} ${r.code}`, () =>
      this.#log.warn({ peer, url: req.url, status: r.status, reason: r.code }, `refused report from ${peer} (${r.status} ${r.code}): ${r.message}`));
    const { allow, ...extra } = r.extra;
    send(res, r.status, { error: r.message, reason: r.code, ...extra }, allow ? { allow } : {});
  }

  /** Logs at most once a minute per key (peer, path or connection, reason). */
  #logLimited(key: string, log: () => void): void {
    const now = Date.now();
    if (now - (this.#lastRefusalLog.get(key) ?? -Infinity) < REFUSAL_LOG_INTERVAL_MS) return;
    if (this.#lastRefusalLog.size > 1000) this.#lastRefusalLog.clear();
    this.#lastRefusalLog.set(key, now);
    log();
  }
}

/**
 * Lock 1: issued by this connection's CA, valid now, for clientAuth. Lock 2:
 * names exactly the worker identity of the connection in the path (namespace
 * and name: two connections may share a CA by mistake). Returns the proven
 * connection.
 */
function authenticate(peer: PeerCertificate, caPem: string, connection: ConnectionId): ConnectionId {
  // While the connection's CA rotates it trusts two; either may have issued the worker's certificate.
  const leaf = new X509Certificate(peer.raw);
  const problems = pemCertificates(caPem).map((pem) => leafProblem(leaf, new X509Certificate(pem), new Date(), CLIENT_AUTH));
  const problem = problems.includes(undefined) ? undefined : problems.find((p) => p?.code !== 'CERT_UNTRUSTED') ?? problems[0];
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
  const proven = connectionOf(identity);
  if (!sameConnection(proven, connection)) {
    throw new Refusal(403, 'WRONG_CONNECTION', `the certificate names ${uri}, not a worker of ${connection.namespace}/${connection.name}`);
  }
  if (identity.role !== 'worker') throw new Refusal(403, 'WRONG_ROLE', `the certificate names ${uri}; only the connection's workers report`);
  return proven;
}

type ParsedReport =
  | { ok: true; report: WorkerReport }
  | { ok: false; reason: 'INVALID_JSON' | 'INVALID_REPORT'; message: string; field?: string };

function parseReport(body: Buffer): ParsedReport {
  let raw: unknown;
  try {
    raw = JSON.parse(body.toString('utf8'));
  } catch (err) {
    return { ok: false, reason: 'INVALID_JSON', message: `the body is not JSON: ${errorMessage(err)}` };
  }
  const result = workerReportSchema.safeParse(raw);
  if (result.success) return { ok: true, report: result.data };
  const issue = result.error.issues[0];
  const field = formatPath(issue?.path ?? []) || '(body)';
  return { ok: false, reason: 'INVALID_REPORT', field, message: `field "${field}": ${issue?.message ?? 'invalid'}`.slice(0, 1024) };
}

function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  const tooLarge = () => new Refusal(413, 'TOO_LARGE', `a request body may be at most ${limit} bytes here`);
  if (Number(req.headers['content-length'] ?? 0) > limit) return Promise.reject(tooLarge());
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer): void => {
      size += chunk.length;
      if (size <= limit) return void chunks.push(chunk);
      req.off('data', onData);
      req.pause();
      chunks.length = 0;
      reject(tooLarge());
    };
    req.on('data', onData);
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
    // A peer that stops sending mid-body is cut off by the server's requestTimeout; free the slot then.
    req.on('close', () => reject(new Refusal(400, 'INCOMPLETE', 'the request ended before its body')));
  });
}

function send(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  if (res.headersSent || res.destroyed) return;
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
