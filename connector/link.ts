/**
 * The connector's link to one worker URL: a connection loop around one
 * connection attempt (chisel's connectionLoop/connectionOnce). Each attempt
 * re-reads the TLS files, so a renewed connector certificate is used at the
 * next connection without a restart. The backoff resets after a healthy
 * session; a worker's GoAway starts a new connection at once while the old
 * session drains.
 */
import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import os from 'node:os';
import type { Logger } from 'pino';
import { Backoff, sleep } from '../tunnel/backoff.js';
import { ControlChannel, fitMappingStatus, PROTOCOL_VERSION, type ConfigMessage, type MappingStatusEntry, type Welcome } from '../tunnel/control.js';
import { errorCode, errorMessage, UnderpassError } from '../tunnel/errors.js';
import { LIMIT_OF_ERROR_CODE } from '../tunnel/limits.js';
import type { TunnelMetrics } from '../tunnel/metrics.js';
import type { MuxConfig } from '../tunnel/mux/config.js';
import { Session } from '../tunnel/mux/session.js';
import type { Channel } from '../tunnel/mux/channel.js';
import type { TlsMaterial } from '../tunnel/transport/tls-files.js';
import { connectWebSocket, type WebSocketStream } from '../tunnel/transport/websocket.js';
import { VERSION } from '../tunnel/version.js';
import { workerIdentityCheck } from './worker-identity.js';

const HANDSHAKE_TIMEOUT_MS = 10_000;
/** A session that lived this long counts as healthy: the next failure retries fast. */
const HEALTHY_AFTER_MS = 5_000;

export interface LinkOptions {
  name: string;
  /** The certificate, key and CAs for the next connection (connector/credentials.ts). */
  credentials: () => Promise<TlsMaterial>;
  mux: Partial<MuxConfig>;
  reconnect: { initialDelayMs: number; maxDelayMs: number };
  logger: Logger;
  metrics: TunnelMetrics;
  onTls?: (m: TlsMaterial) => void;
}

export interface LinkEvents {
  up: [welcome: Welcome];
  down: [err: Error | undefined];
  config: [config: ConfigMessage];
  stream: [channel: Channel];
  /** The worker pushed the CA certificates to trust. */
  trust: [caPem: string];
}

/** How long the worker has to answer 'retire' before the old session gets GoAway anyway. */
const RETIRE_ANSWER_MS = 2_000;

/** Why a session's wait ended: the session's own end, or a renewal asking for a new one. */
const CYCLE = Symbol('cycle');

export class WorkerLink extends EventEmitter<LinkEvents> {
  readonly url: URL;
  readonly #opts: LinkOptions;
  readonly #log: Logger;
  readonly #backoff: Backoff;
  /** The session new streams go to (not going away). */
  #current: { session: Session; control: ControlChannel; welcome: Welcome } | undefined;
  /** Every session still open, including ones draining after a GoAway. */
  readonly #sessions = new Set<Session>();
  readonly #controls = new WeakMap<Session, ControlChannel>();
  /** Renewals waiting for the worker's answer, by id. */
  readonly #renewals = new Map<string, { resolve: (a: { certificate: string; ca: string }) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }>();
  #cycle: (() => void) | undefined;
  #cycleDrainMs = 30_000;
  /** A session a renewal replaced, waiting for its successor before it drains. */
  #retiring: { session: Session; control: ControlChannel; worker: string } | undefined;
  lastError: string | undefined;

  constructor(url: URL, opts: LinkOptions) {
    super();
    this.url = url;
    this.#opts = opts;
    this.#log = opts.logger.child({ worker_url: url.href });
    this.#backoff = new Backoff({ initialMs: opts.reconnect.initialDelayMs, maxMs: opts.reconnect.maxDelayMs });
  }

  get session(): Session | undefined {
    const c = this.#current;
    return c && !c.session.isClosed && !c.session.remoteGoneAway ? c.session : undefined;
  }

  get welcome(): Welcome | undefined {
    return this.#current?.welcome;
  }

  get sessions(): ReadonlySet<Session> {
    return this.#sessions;
  }

  sendMappingStatus(revision: number, mappings: MappingStatusEntry[]): void {
    this.#current?.control.send({ type: 'mapping-status', revision, mappings: fitMappingStatus(mappings) });
  }

  /**
   * Sends a certificate signing request over the current session and waits
   * for the worker's answer (the operator signs). Rejects with the coded
   * reason of a `renew-failed`, or after `timeoutMs`.
   */
  renew(csrPem: string, timeoutMs: number): Promise<{ certificate: string; ca: string }> {
    const current = this.#current;
    if (!current || current.session.isClosed) return Promise.reject(new UnderpassError('ERR_NOT_CONNECTED', `no session with ${this.url.href}`));
    const id = randomUUID();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#renewals.delete(id);
        reject(new UnderpassError('ERR_RENEWAL_TIMEOUT', `no answer to the renewal within ${timeoutMs} ms`));
      }, timeoutMs);
      timer.unref();
      this.#renewals.set(id, { resolve, reject, timer });
      current.control.send({ type: 'renew', id, csr: csrPem });
    });
  }

  /**
   * Moves to a new session (with the credentials in force now) without
   * dropping streams: a new connection is made at once, and the current
   * session gets GoAway, so no new stream starts on it, and drains.
   */
  cycle(drainMs: number): void {
    this.#cycleDrainMs = drainMs;
    this.#cycle?.();
  }

  /**
   * The session a renewal replaced, once its successor is up: GoAway (no new
   * streams on it), then it drains. Its open streams finish, or end when its
   * certificate expires (the drain time given to cycle()).
   */
  #retire(): void {
    const old = this.#retiring;
    if (!old) return;
    this.#retiring = undefined;
    const drainMs = this.#cycleDrainMs;
    this.#log.info({ worker: old.worker, drainMs }, `renewed certificate in use: the previous session with worker ${old.worker} drains (up to ${drainMs} ms)`);
    // First the worker stops opening streams here ('retire', answered 'retired'), then GoAway:
    // a stream the worker opened while our GoAway was on its way would be refused.
    let sent = false;
    const goAway = (): void => {
      if (sent) return;
      sent = true;
      clearTimeout(timer);
      old.session.goAway();
      old.control.close();
      void old.session.drain(drainMs);
    };
    const timer = setTimeout(goAway, RETIRE_ANSWER_MS); // an older worker does not answer
    timer.unref();
    old.control.on('message', (msg) => {
      if (msg.type === 'retired') goAway();
    });
    old.control.send({ type: 'retire' });
    this.emit('down', new UnderpassError('CERTIFICATE_RENEWED', 'replaced by a session with the renewed certificate; draining'));
  }

  #settleRenewal(id: string, result: { certificate: string; ca: string } | Error): void {
    const pending = this.#renewals.get(id);
    if (!pending) return;
    this.#renewals.delete(id);
    clearTimeout(pending.timer);
    if (result instanceof Error) pending.reject(result);
    else pending.resolve(result);
  }

  /** Runs until `signal` aborts. */
  async run(signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      const started = Date.now();
      let handshook: boolean | typeof CYCLE = false;
      try {
        handshook = await this.#connectOnce(signal);
        if (handshook === CYCLE) continue; // a renewal: connect again at once, the old session drains
      } catch (err) {
        this.lastError = errorMessage(err);
        this.#log.warn({ err: this.lastError, code: (err as { code?: string }).code }, `cannot connect to ${this.url.href}: ${this.lastError}`);
      }
      if (signal.aborted) break;
      if (handshook && Date.now() - started >= HEALTHY_AFTER_MS) this.#backoff.reset();
      const delay = this.#backoff.next();
      this.#opts.metrics.reconnects.inc({ worker: this.url.href });
      this.#log.info({ delayMs: delay, attempt: this.#backoff.attempt }, `reconnecting to ${this.url.href} in ${delay} ms`);
      await sleep(delay, signal);
    }
  }

  /** Drains every session: GoAway, open streams finish up to the deadline. */
  async drain(deadlineMs: number): Promise<void> {
    await Promise.all([...this.#sessions].map((s) => {
      s.goAway();
      this.#controls.get(s)?.close();
      return s.drain(deadlineMs);
    }));
  }

  #forget(session: Session): void {
    this.#sessions.delete(session);
  }

  /**
   * One connection: resolves when its session ends or the worker says GoAway
   * (whether the handshake completed), or CYCLE when a renewal asked for a
   * new session.
   */
  async #connectOnce(signal: AbortSignal): Promise<boolean | typeof CYCLE> {
    const tls = await this.#opts.credentials();
    this.#opts.onTls?.(tls);
    const ws = await this.#dial(tls, signal);
    const session = new Session(ws, { client: true, config: this.#opts.mux });
    this.#sessions.add(session);
    session.on('channel', (channel) => this.emit('stream', channel));
    session.on('rtt', (ms) => this.#opts.metrics.keepaliveRtt.set({ peer: this.url.href }, ms / 1000));
    session.on('limit', (limit) => this.#opts.metrics.limitHit(limit));
    const control = new ControlChannel(session.open());
    control.on('error', (err) => {
      const limit = LIMIT_OF_ERROR_CODE[errorCode(err) ?? ''];
      if (limit) this.#opts.metrics.limitHit(limit);
      if (!session.isClosed) this.#log.warn({ err: err.message }, `control channel: ${err.message}`);
    });
    // Listen before saying hello: the worker's config may arrive in the same read as its welcome.
    let early: ConfigMessage | undefined;
    control.on('message', (msg) => {
      if (msg.type === 'error') this.#log.error({ code: msg.code }, `worker reported: ${msg.message}`);
      if (msg.type === 'renewed') return this.#settleRenewal(msg.id, { certificate: msg.certificate, ca: msg.ca });
      if (msg.type === 'renew-failed') return this.#settleRenewal(msg.id, new UnderpassError(msg.code, msg.message));
      if (msg.type === 'trust') return void this.emit('trust', msg.ca);
      if (msg.type !== 'config') return;
      if (this.#current?.control === control) this.emit('config', msg);
      else early = msg;
    });
    let welcome: Welcome;
    try {
      control.send({ type: 'hello', protocol: PROTOCOL_VERSION, connector: this.#opts.name, version: VERSION, capabilities: ['tcp'], hostname: os.hostname() });
      welcome = await control.expect('welcome', HANDSHAKE_TIMEOUT_MS);
    } catch (err) {
      session.close();
      this.#sessions.delete(session);
      throw err;
    }
    this.#current = { session, control, welcome };
    this.#controls.set(session, control);
    this.#retire();
    this.lastError = undefined;
    this.#log.info({ worker: welcome.worker.instance, session: welcome.session, workerVersion: welcome.worker.version },
      `connected to worker ${welcome.worker.instance} of connection ${welcome.connection} at ${this.url.href}`);
    this.emit('up', welcome);
    if (early) this.emit('config', early);
    const ended = await new Promise<Error | undefined | typeof CYCLE>((resolve) => {
      session.once('close', resolve);
      session.once('goaway', () => resolve(new UnderpassError('ERR_WORKER_GOAWAY', 'the worker is going away')));
      signal.addEventListener('abort', () => resolve(undefined), { once: true });
      this.#cycle = () => resolve(CYCLE);
    });
    this.#cycle = undefined;
    session.closed.then(() => this.#forget(session), () => this.#forget(session));
    if (ended === CYCLE && !session.isClosed) {
      // It stays the current session until the next one is up (#retire), so no new stream finds none.
      this.#retiring = { session, control, worker: welcome.worker.instance };
      return CYCLE;
    }
    if (this.#current?.session === session) this.#current = undefined;
    if (ended && ended !== CYCLE) {
      this.lastError = ended.message;
      this.#log.warn({ err: ended.message }, `session with worker ${welcome.worker.instance} ended: ${ended.message}`);
    }
    this.emit('down', ended === CYCLE ? undefined : ended);
    return true;
  }

  async #dial(tls: TlsMaterial, signal: AbortSignal): Promise<WebSocketStream> {
    // Read at every attempt, like the TLS files: a renewed certificate is checked again.
    const checkServerIdentity = workerIdentityCheck(tls.cert, this.#opts.name);
    try {
      return await connectWebSocket(new URL('/v1/tunnel', this.url), {
        checkServerIdentity,
        cert: tls.cert,
        key: tls.key,
        ca: tls.ca,
        timeoutMs: HANDSHAKE_TIMEOUT_MS,
        signal,
        headers: { 'User-Agent': `underpass-connector/${VERSION}` },
      });
    } catch (err) {
      if (err instanceof UnderpassError) throw err;
      throw new UnderpassError(tlsCode(err as Error), describeDialError(err as Error), { cause: err });
    }
  }
}

function tlsCode(err: Error): string {
  const code = (err as { code?: string }).code ?? '';
  // OpenSSL's verification codes (UNABLE_TO_VERIFY_LEAF_SIGNATURE, CERT_HAS_EXPIRED, …) and Node's host-name check.
  const certificate = code.startsWith('ERR_TLS') || code.includes('CERT') || code.includes('SELF_SIGNED') || code.startsWith('UNABLE_TO_');
  return certificate ? 'ERR_WORKER_CERT' : 'ERR_DIAL';
}

function describeDialError(err: Error): string {
  const code = (err as { code?: string }).code;
  switch (code) {
    case 'ERR_TLS_CERT_ALTNAME_INVALID':
      return `the worker's certificate does not name this host: ${err.message}`;
    case 'UNABLE_TO_VERIFY_LEAF_SIGNATURE':
    case 'SELF_SIGNED_CERT_IN_CHAIN':
    case 'DEPTH_ZERO_SELF_SIGNED_CERT':
      return `the worker's certificate is not issued by the connection CA in tls.ca (${code})`;
    case 'CERT_HAS_EXPIRED':
      return "the worker's certificate has expired";
    default:
      return err.message;
  }
}
