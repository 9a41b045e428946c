/**
 * One session of the connector with one worker instance (docs/ha.md). `openLink`
 * dials a worker URL with the credentials in force now (connector/credentials.ts:
 * a renewed certificate is used at the next connection), names the workers
 * already held so a worker reached twice refuses cheaply (409 ALREADY_CONNECTED
 * → DialRefused), and does the hello/welcome handshake. The mesh
 * (connector/mesh.ts) decides when to dial and keeps the links. Over a link the
 * connector renews its certificate (renew → renewed | renew-failed), hears the
 * CAs to trust, and retires the session when it replaces it or stops.
 */
import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import os from 'node:os';
import type { Logger } from 'pino';
import {
  ControlChannel, fitMappingStatus, MESH_CAPABILITY, PROTOCOL_VERSION, type ConfigMessage, type ControlMessage, type MappingStatusEntry, type Welcome,
} from '../tunnel/control.js';
import { errorCode, errorMessage, UnderpassError } from '../tunnel/errors.js';
import { LIMIT_OF_ERROR_CODE } from '../tunnel/limits.js';
import type { TunnelMetrics } from '../tunnel/metrics.js';
import type { MuxConfig } from '../tunnel/mux/config.js';
import { Session } from '../tunnel/mux/session.js';
import type { Channel } from '../tunnel/mux/channel.js';
import type { TlsMaterial } from '../tunnel/transport/tls-files.js';
import { connectWebSocket, WebSocketRefused, type WebSocketStream } from '../tunnel/transport/websocket.js';
import { VERSION } from '../tunnel/version.js';
import { workerIdentityCheck } from './worker-identity.js';

const HANDSHAKE_TIMEOUT_MS = 10_000;
/** How long streams a worker opened wait for its first config before they are served anyway (it sends it with its welcome). */
const CONFIG_WAIT_MS = 5_000;
/** How long the worker has to answer 'retire' before the session gets GoAway anyway (an older worker does not answer). */
export const RETIRE_ANSWER_MS = 2_000;
/** Request and response headers of the mesh (worker/tunnel-server.ts has the same names). */
export const HAVE_WORKERS_HEADER = 'X-Underpass-Have-Workers';
const WORKER_HEADER = 'x-underpass-worker';
const WORKERS_HEADER = 'x-underpass-workers';

export interface LinkOptions {
  name: string;
  /** The certificate, key and CAs for the next connection (connector/credentials.ts). */
  credentials: () => Promise<TlsMaterial>;
  mux: Partial<MuxConfig>;
  logger: Logger;
  metrics: TunnelMetrics;
  onTls?: (m: TlsMaterial) => void;
}

/** A worker answered the upgrade with a mesh refusal: it is one we hold, or it is leaving. */
export class DialRefused extends UnderpassError {
  readonly kind: 'duplicate' | 'draining';
  /** The worker's instance, when it said (X-Underpass-Worker). */
  readonly instance: string | undefined;
  /** The set it knows (X-Underpass-Workers). */
  readonly workers: string[];
  constructor(kind: 'duplicate' | 'draining', instance: string | undefined, workers: string[], cause: Error) {
    super(kind === 'duplicate' ? 'ALREADY_CONNECTED' : 'DRAINING',
      kind === 'duplicate' ? `reached worker ${instance ?? '?'} again (already connected)` : `worker ${instance ?? '?'} is draining`, { cause });
    this.kind = kind;
    this.instance = instance;
    this.workers = workers;
  }
}

export interface LinkEvents {
  config: [config: ConfigMessage];
  stream: [channel: Channel];
  /** The worker announced a new worker set. */
  workers: [workers: readonly string[]];
  /** The worker said `draining` or GoAway: no new streams to it; open ones finish. */
  draining: [];
  /** The worker pushed the CA certificates to trust. */
  trust: [caPem: string];
  closed: [err: Error | undefined];
}

/**
 * Dials `url` once and does the handshake. Throws DialRefused for the mesh's
 * cheap refusals, an UnderpassError with the reason otherwise.
 */
export async function openLink(url: URL, have: readonly string[], opts: LinkOptions, signal: AbortSignal): Promise<WorkerLink> {
  const tls = await opts.credentials();
  opts.onTls?.(tls);
  const ws = await dial(url, tls, have, opts, signal);
  const session = new Session(ws, { client: true, config: opts.mux });
  const link = new WorkerLink(url, session, opts);
  try {
    await link.handshake();
  } catch (err) {
    session.close();
    throw err;
  }
  return link;
}

export class WorkerLink extends EventEmitter<LinkEvents> {
  readonly url: URL;
  readonly session: Session;
  readonly since = new Date();
  readonly #opts: LinkOptions;
  readonly #control: ControlChannel;
  #welcome: Welcome | undefined;
  #announced: readonly string[] = [];
  #draining = false;
  /** Told `draining` by us (we stop; connector/mesh.ts): the worker prefers other connectors meanwhile. */
  #toldDraining = false;
  /** We retired it (a renewal replaced it, or we stop): no new stream of ours goes to it. */
  #retiring: Promise<void> | undefined;
  /** Renewals waiting for the worker's answer, by id. */
  readonly #renewals = new Map<string, { resolve: (a: { certificate: string; ca: string }) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }>();
  /** Messages that arrived before the mesh listened (the config may come in the same read as the welcome). */
  #early: ControlMessage[] | undefined = [];
  /**
   * Streams the worker opened before this end can serve them: it counts the session ready once it
   * has sent its welcome and config, so a stream may come in the same read — before the mesh
   * listens (activate) and before the config, which the control channel delivers a turn later
   * than the multiplexer announces a stream (test/e2e/early-stream.test.ts). Held (their bytes
   * wait in the channel, within its window; bounded by the session's stream limit) until both,
   * then served in order.
   */
  #earlyStreams: Channel[] | undefined = [];
  #configured = false;
  /** A worker that sends no config: held streams are served anyway after this long (and refused as unknown mappings). */
  #configWait: NodeJS.Timeout | undefined;
  #closedError: Error | undefined;
  #closed = false;
  rttMs = 0;

  constructor(url: URL, session: Session, opts: LinkOptions) {
    super();
    this.url = url;
    this.session = session;
    this.#opts = opts;
    session.on('channel', (channel) => {
      if (this.#earlyStreams) this.#earlyStreams.push(channel);
      else this.#deliver(channel);
    });
    session.on('rtt', (ms) => {
      this.rttMs = ms;
      opts.metrics.keepaliveRtt.set({ peer: url.href }, ms / 1000);
    });
    session.on('limit', (limit) => opts.metrics.limitHit(limit));
    session.on('goaway', () => this.#markDraining());
    session.once('close', (err) => {
      this.#closed = true;
      this.#closedError = err;
      clearTimeout(this.#configWait); // held streams were reset with the session
      this.emit('closed', err);
    });
    this.#control = new ControlChannel(session.open());
    this.#control.on('error', (err) => {
      const limit = LIMIT_OF_ERROR_CODE[errorCode(err) ?? ''];
      if (limit) opts.metrics.limitHit(limit);
      if (!session.isClosed) this.#log.warn({ err: err.message }, `control channel: ${err.message}`);
    });
    // Listen before saying hello: the worker's config may arrive in the same read as its welcome.
    this.#control.on('message', (msg) => {
      if (msg.type === 'welcome') return;
      if (this.#early) this.#early.push(msg);
      else this.#dispatch(msg);
    });
  }

  get #log(): Logger {
    return this.#opts.logger;
  }

  /** hello → welcome. */
  async handshake(): Promise<void> {
    this.#control.send({
      type: 'hello', protocol: PROTOCOL_VERSION, connector: this.#opts.name, version: VERSION, capabilities: ['tcp', MESH_CAPABILITY], hostname: os.hostname(),
    });
    this.#welcome = await this.#control.expect('welcome', HANDSHAKE_TIMEOUT_MS);
    this.#announced = this.#welcome.workers ?? [];
  }

  /**
   * Starts delivering control messages and streams, those that came early first (the config
   * before any stream, as the worker sent them): call once the listeners are on.
   */
  activate(): void {
    const early = this.#early ?? [];
    this.#early = undefined;
    for (const msg of early) this.#dispatch(msg);
    if (!this.#configured && this.#earlyStreams) {
      this.#configWait = setTimeout(() => this.#releaseStreams(true), CONFIG_WAIT_MS);
      this.#configWait.unref();
    }
    this.#releaseStreams(false);
  }

  /** Serves the held streams once the mesh listens and the worker's mapping set is applied (or `anyway`). */
  #releaseStreams(anyway: boolean): void {
    const streams = this.#earlyStreams;
    // Activated: the early control messages are delivered (#early is then undefined for good).
    if (!streams || this.#early !== undefined || (!this.#configured && !anyway)) return;
    this.#earlyStreams = undefined;
    clearTimeout(this.#configWait);
    for (const channel of streams) this.#deliver(channel);
  }

  /** A stream nobody serves is reset at once (the worker tries another connector), never left unanswered. */
  #deliver(channel: Channel): void {
    if (!this.emit('stream', channel)) channel.reset();
  }

  get welcome(): Welcome {
    return this.#welcome!;
  }

  get instance(): string {
    return this.#welcome!.worker.instance;
  }

  /** The set the worker announced (older workers announce none). */
  get announced(): readonly string[] {
    return this.#announced;
  }

  /** The worker takes part in the mesh (its welcome carried a set): it understands `draining`. */
  get meshWorker(): boolean {
    return this.#welcome?.workers !== undefined;
  }

  /** Open and neither side has said GoAway. */
  get usable(): boolean {
    return !this.#closed && !this.session.isClosed && !this.session.remoteGoneAway && !this.session.localGoneAway;
  }

  /** The worker is leaving (said `draining` or GoAway). */
  get draining(): boolean {
    return this.#draining || this.session.remoteGoneAway;
  }

  /** Usable, neither side draining, not retired: the session new streams go to first. */
  get serving(): boolean {
    return this.usable && !this.draining && !this.#toldDraining && !this.retired;
  }

  /** We retired it (see retire()): it carries no new stream of ours. */
  get retired(): boolean {
    return this.#retiring !== undefined;
  }

  get closed(): boolean {
    return this.#closed;
  }

  get closedError(): Error | undefined {
    return this.#closedError;
  }

  sendMappingStatus(revision: number, mappings: MappingStatusEntry[]): void {
    this.#control.send({ type: 'mapping-status', revision, mappings: fitMappingStatus(mappings) });
  }

  /**
   * Tells a mesh worker this connector is stopping: it keeps opening streams
   * here only while no other connector can carry them (until retire()).
   * Returns whether it was told.
   */
  tellDraining(): boolean {
    this.#toldDraining = true;
    if (!this.meshWorker || !this.usable) return false;
    this.#control.send({ type: 'draining' });
    return true;
  }

  /**
   * Sends a certificate signing request over this session and waits for the
   * worker's answer (the operator signs). Rejects with the coded reason of a
   * `renew-failed`, or after `timeoutMs`.
   */
  renew(csrPem: string, timeoutMs: number): Promise<{ certificate: string; ca: string }> {
    if (this.session.isClosed) return Promise.reject(new UnderpassError('ERR_NOT_CONNECTED', `the session with worker ${this.instance} is closed`));
    const id = randomUUID();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#renewals.delete(id);
        reject(new UnderpassError('ERR_RENEWAL_TIMEOUT', `no answer to the renewal within ${timeoutMs} ms`));
      }, timeoutMs);
      timer.unref();
      this.#renewals.set(id, { resolve, reject, timer });
      this.#control.send({ type: 'renew', id, csr: csrPem });
    });
  }

  /**
   * No new stream of ours goes here from now on, and the worker opens none
   * either: it is told `retire` and answers `retired` (at most RETIRE_ANSWER_MS;
   * an older worker does not answer). Only then GoAway can follow without a
   * stream the worker opened crossing it. Resolves when the worker answered or
   * the time is up.
   */
  retire(): Promise<void> {
    this.#retiring ??= new Promise<void>((resolve) => {
      if (!this.usable) return resolve();
      const timer = setTimeout(done, RETIRE_ANSWER_MS);
      timer.unref();
      const onMessage = (msg: ControlMessage): void => {
        if (msg.type === 'retired') done();
      };
      const control = this.#control;
      control.on('message', onMessage);
      this.session.once('close', done);
      control.send({ type: 'retire' });
      function done(): void {
        clearTimeout(timer);
        control.off('message', onMessage);
        resolve();
      }
    });
    return this.#retiring;
  }

  /** GoAway, close the control channel, let open streams finish up to the deadline. */
  async drain(deadlineMs: number): Promise<void> {
    this.session.goAway();
    this.#control.close();
    await this.session.drain(deadlineMs);
  }

  close(err?: Error): void {
    this.session.close(err);
  }

  #dispatch(msg: ControlMessage): void {
    switch (msg.type) {
      case 'config':
        this.emit('config', msg);
        if (!this.#configured) {
          this.#configured = true;
          this.#releaseStreams(false);
        }
        return;
      case 'workers':
        this.#announced = msg.workers;
        this.emit('workers', msg.workers);
        return;
      case 'draining':
        this.#markDraining();
        return;
      case 'renewed':
        this.#settleRenewal(msg.id, { certificate: msg.certificate, ca: msg.ca });
        return;
      case 'renew-failed':
        this.#settleRenewal(msg.id, new UnderpassError(msg.code, msg.message));
        return;
      case 'trust':
        this.emit('trust', msg.ca);
        return;
      case 'error':
        this.#log.error({ code: msg.code, worker: this.#welcome?.worker.instance }, `worker reported: ${msg.message}`);
        return;
      default:
    }
  }

  #settleRenewal(id: string, result: { certificate: string; ca: string } | Error): void {
    const pending = this.#renewals.get(id);
    if (!pending) return;
    this.#renewals.delete(id);
    clearTimeout(pending.timer);
    if (result instanceof Error) pending.reject(result);
    else pending.resolve(result);
  }

  #markDraining(): void {
    if (this.#draining) return;
    this.#draining = true;
    this.emit('draining');
  }
}

async function dial(url: URL, tls: TlsMaterial, have: readonly string[], opts: LinkOptions, signal: AbortSignal): Promise<WebSocketStream> {
  // Read at every attempt, like the TLS files: a renewed certificate is checked again.
  const checkServerIdentity = workerIdentityCheck(tls.cert, opts.name);
  try {
    return await connectWebSocket(new URL('/v1/tunnel', url), {
      checkServerIdentity,
      cert: tls.cert,
      key: tls.key,
      ca: tls.ca,
      timeoutMs: HANDSHAKE_TIMEOUT_MS,
      signal,
      headers: { 'User-Agent': `underpass-connector/${VERSION}`, ...(have.length > 0 ? { [HAVE_WORKERS_HEADER]: have.join(',') } : {}) },
    });
  } catch (err) {
    if (err instanceof WebSocketRefused && (err.reason === 'ALREADY_CONNECTED' || err.reason === 'DRAINING')) {
      const instance = header(err.headers[WORKER_HEADER]);
      const workers = (header(err.headers[WORKERS_HEADER]) ?? '').split(',').map((n) => n.trim()).filter(Boolean);
      throw new DialRefused(err.reason === 'ALREADY_CONNECTED' ? 'duplicate' : 'draining', instance, workers, err);
    }
    if (err instanceof UnderpassError) throw err;
    throw new UnderpassError(tlsCode(err as Error), describeDialError(err as Error), { cause: err });
  }
}

function header(v: string | string[] | undefined): string | undefined {
  const s = Array.isArray(v) ? v[0] : v;
  return s && s.length <= 253 ? s : undefined;
}

function tlsCode(err: Error): string {
  const code = (err as { code?: string }).code ?? '';
  // OpenSSL's verification codes (UNABLE_TO_VERIFY_LEAF_SIGNATURE, CERT_HAS_EXPIRED, …) and Node's host-name check.
  const certificate = code.startsWith('ERR_TLS') || code.includes('CERT') || code.includes('SELF_SIGNED') || code.startsWith('UNABLE_TO_');
  return certificate ? 'ERR_WORKER_CERT' : 'ERR_DIAL';
}

export function describeDialError(err: Error): string {
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
      return errorMessage(err);
  }
}
