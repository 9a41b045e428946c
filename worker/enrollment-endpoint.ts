/**
 * The enrollment endpoint on the worker's tunnel port (docs/connector-lifecycle.md):
 * where a connector that holds a one-time token but no certificate yet gets
 * one, through the same public address as the tunnel. No client certificate
 * is needed, so everything here is bounded for strangers:
 *
 *   GET  /v1/enroll/ca   the connection's CA certificates (public; the connector
 *                        pins one of them with the hash in its token before it
 *                        sends the token)
 *   POST /v1/enroll      {token, csr} → forwarded to the operator over the operator
 *                        channel; 200 {certificate, ca, connector} or a coded refusal
 *
 * Limits (tunnel/limits.ts): body ENROLL_BODY_MAX (413), ENROLL_PER_SOURCE_PER_MINUTE
 * requests per source address (429), ENROLL_IN_FLIGHT forwarded at once (503),
 * each counted in underpass_limit_refusals_total. The token never reaches a log
 * or audit line; every request is audited (`enrollment`, outcome and reason).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import type { AuditLog } from '../tunnel/audit.js';
import { errorCode, errorMessage } from '../tunnel/errors.js';
import { capText, ENROLL_BODY_MAX, ENROLL_IN_FLIGHT, ENROLL_PER_SOURCE_PER_MINUTE, type LimitName } from '../tunnel/limits.js';
import type { EnrollAnswer, EnrollRequest } from '../tunnel/operator-channel.js';

export const ENROLL_PATH = '/v1/enroll';
export const ENROLL_CA_PATH = '/v1/enroll/ca';
const WINDOW_MS = 60_000;
/** Source addresses tracked at once; beyond it the oldest window is forgotten. */
const MAX_SOURCES = 4096;

export interface EnrollmentEndpointOptions {
  connection: string;
  instance: string;
  log: Logger;
  audit: AuditLog;
  /** The CA certificates connectors should trust (tls.ca now). */
  trust: () => string | undefined;
  /** Forward to the operator; undefined when this worker has no operator channel. */
  enroll: ((req: EnrollRequest) => Promise<EnrollAnswer>) | undefined;
  limitHit: (limit: LimitName) => void;
  now?: () => number;
}

export class EnrollmentEndpoint {
  readonly #o: EnrollmentEndpointOptions;
  readonly #now: () => number;
  readonly #windows = new Map<string, { start: number; count: number }>();
  #inFlight = 0;

  constructor(o: EnrollmentEndpointOptions) {
    this.#o = o;
    this.#now = o.now ?? Date.now;
  }

  /** Handles the request if it is one of ours; false otherwise. */
  handle(req: IncomingMessage, res: ServerResponse): boolean {
    const path = (req.url ?? '/').split('?')[0];
    if (path === ENROLL_CA_PATH && req.method === 'GET') {
      const trust = this.#o.trust();
      if (!trust) reply(res, 503, { error: 'no CA certificates yet', reason: 'NOT_READY' });
      else {
        res.writeHead(200, { 'content-type': 'application/x-pem-file', 'content-length': Buffer.byteLength(trust), connection: 'close' });
        res.end(trust);
      }
      return true;
    }
    if (path !== ENROLL_PATH) return false;
    void this.#enroll(req, res);
    return true;
  }

  async #enroll(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const peer = `${req.socket.remoteAddress ?? 'unknown'}:${req.socket.remotePort ?? 0}`;
    const source = req.socket.remoteAddress ?? 'unknown';
    const refuse = (status: number, reason: string, message: string, limit?: LimitName): void => {
      if (limit) this.#o.limitHit(limit);
      this.#o.audit.write({ event: 'enrollment', connection: this.#o.connection, worker: this.#o.instance, peer, outcome: 'refused', reason, message: capText(message) });
      this.#o.log.warn({ peer, reason }, `refused an enrollment from ${peer} (${reason}): ${capText(message)}`);
      reply(res, status, { error: message, reason });
    };
    if (req.method !== 'POST') return refuse(405, 'METHOD_NOT_ALLOWED', `${ENROLL_PATH} takes POST {token, csr}`);
    if (!this.#allowSource(source)) {
      return refuse(429, 'TOO_MANY_ENROLLMENTS', `more than ${ENROLL_PER_SOURCE_PER_MINUTE} enrollment requests from ${source} in a minute`, 'enroll_per_source');
    }
    if (this.#inFlight >= ENROLL_IN_FLIGHT) return refuse(503, 'BUSY', `${ENROLL_IN_FLIGHT} enrollments are in progress; retry shortly`, 'enroll_in_flight');
    const enroll = this.#o.enroll;
    if (!enroll) return refuse(404, 'NO_SIGNER', 'this worker has no operator channel and cannot enroll connectors');
    this.#inFlight++;
    try {
      const body = await readBounded(req);
      if (body === undefined) return refuse(413, 'TOO_LARGE', `an enrollment request is at most ${ENROLL_BODY_MAX} bytes`, 'enroll_body_bytes');
      let parsed: { token?: unknown; csr?: unknown };
      try {
        parsed = JSON.parse(body.toString('utf8')) as { token?: unknown; csr?: unknown };
      } catch {
        return refuse(400, 'INVALID_REQUEST', 'the body is not JSON {token, csr}');
      }
      if (typeof parsed?.token !== 'string' || typeof parsed.csr !== 'string') return refuse(400, 'INVALID_REQUEST', 'the body must be JSON {token, csr}');
      let answer: EnrollAnswer;
      try {
        answer = await enroll({ token: parsed.token, csr: parsed.csr, peer: peer.slice(0, 64) });
      } catch (err) {
        const reason = errorCode(err) ?? 'ENROLL_FAILED';
        const status = /^CSR|^INVALID|MALFORMED/.test(reason) ? 400 : /^TOKEN_|^CONNECTOR_NOT_ALLOWED$|^CERTIFICATE_REVOKED$|^CONNECTOR_REVOKED$/.test(reason) ? 403 : 502;
        return refuse(status, /^[A-Z0-9_]{1,64}$/.test(reason) ? reason : 'ENROLL_FAILED', errorMessage(err).replace(/^the operator refused \(HTTP \d+ [A-Z_]+\): /, ''));
      }
      this.#o.audit.write({ event: 'enrollment', connection: this.#o.connection, worker: this.#o.instance, peer, connector: answer.connector, outcome: 'enrolled' });
      this.#o.log.info({ peer, connector: answer.connector }, `enrolled connector "${answer.connector}" from ${peer}`);
      reply(res, 200, answer);
    } finally {
      this.#inFlight--;
    }
  }

  /** A fixed one-minute window per source address. */
  #allowSource(source: string): boolean {
    const now = this.#now();
    let w = this.#windows.get(source);
    if (!w || now - w.start >= WINDOW_MS) {
      if (!w && this.#windows.size >= MAX_SOURCES) this.#windows.delete(this.#windows.keys().next().value as string);
      w = { start: now, count: 0 };
      this.#windows.set(source, w);
    }
    w.count++;
    return w.count <= ENROLL_PER_SOURCE_PER_MINUTE;
  }
}

function reply(res: ServerResponse, status: number, body: object): void {
  if (res.headersSent || res.destroyed) return;
  const text = `${JSON.stringify(body)}\n`;
  const reason = (body as { reason?: string }).reason;
  res.writeHead(status, {
    'content-type': 'application/json', 'content-length': Buffer.byteLength(text), connection: 'close', 'cache-control': 'no-store',
    ...(reason ? { 'x-underpass-reason': reason } : {}),
  });
  res.end(text);
}

/** The body, or undefined past ENROLL_BODY_MAX (stops reading at once). */
function readBounded(req: IncomingMessage): Promise<Buffer | undefined> {
  if (Number(req.headers['content-length'] ?? 0) > ENROLL_BODY_MAX) return Promise.resolve(undefined);
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > ENROLL_BODY_MAX) {
        req.pause();
        resolve(undefined);
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', () => resolve(undefined));
  });
}
