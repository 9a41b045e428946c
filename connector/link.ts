/**
 * The connector's link to one worker URL: a connection loop around one
 * connection attempt (chisel's connectionLoop/connectionOnce). Each attempt
 * re-reads the TLS files, so a renewed connector certificate is used at the
 * next connection without a restart. The backoff resets after a healthy
 * session; a worker's GoAway starts a new connection at once while the old
 * session drains.
 */
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
import { readTlsFiles, type TlsFiles, type TlsMaterial } from '../tunnel/transport/tls-files.js';
import { connectWebSocket, type WebSocketStream } from '../tunnel/transport/websocket.js';
import { VERSION } from '../tunnel/version.js';
import { workerIdentityCheck } from './worker-identity.js';

const HANDSHAKE_TIMEOUT_MS = 10_000;
/** A session that lived this long counts as healthy: the next failure retries fast. */
const HEALTHY_AFTER_MS = 5_000;

export interface LinkOptions {
  name: string;
  tls: TlsFiles;
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
}

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

  /** Runs until `signal` aborts. */
  async run(signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      const started = Date.now();
      let handshook = false;
      try {
        handshook = await this.#connectOnce(signal);
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

  /** One connection: resolves when its session ends or the worker says GoAway. Returns whether the handshake completed. */
  async #connectOnce(signal: AbortSignal): Promise<boolean> {
    const tls = await readTlsFiles(this.#opts.tls);
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
    this.lastError = undefined;
    this.#log.info({ worker: welcome.worker.instance, session: welcome.session, workerVersion: welcome.worker.version },
      `connected to worker ${welcome.worker.instance} of connection ${welcome.connection} at ${this.url.href}`);
    this.emit('up', welcome);
    if (early) this.emit('config', early);
    const ended = await new Promise<Error | undefined>((resolve) => {
      session.once('close', resolve);
      session.once('goaway', () => resolve(new UnderpassError('ERR_WORKER_GOAWAY', 'the worker is going away')));
      signal.addEventListener('abort', () => resolve(undefined), { once: true });
    });
    session.closed.then(() => this.#forget(session), () => this.#forget(session));
    if (this.#current?.session === session) this.#current = undefined;
    if (ended) {
      this.lastError = ended.message;
      this.#log.warn({ err: ended.message }, `session with worker ${welcome.worker.instance} ended: ${ended.message}`);
    }
    this.emit('down', ended);
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
