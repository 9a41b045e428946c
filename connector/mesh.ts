/**
 * The connector's full mesh (docs/ha.md): a session with every live worker of
 * the connection, found through the configured URL(s) — usually one
 * load-balanced address. Workers announce the set; while one is missing, a
 * URL's loop dials again, naming the workers already held so a worker reached
 * twice refuses cheaply (409), after a short jittered delay. Other failures
 * back off as reconnects always did (chisel's connectionLoop: reset after a
 * healthy session). After a certificate renewal (cycle) every worker is
 * searched again: a new session per worker, then the old one is retired and
 * drains. The decisions are pure functions in mesh-plan.ts.
 */
import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import { Counter, Gauge, type Registry } from 'prom-client';
import { Backoff, sleep } from '../tunnel/backoff.js';
import type { ConfigMessage } from '../tunnel/control.js';
import { errorCode, errorMessage } from '../tunnel/errors.js';
import type { Channel } from '../tunnel/mux/channel.js';
import { DialRefused, openLink, type LinkOptions, type WorkerLink } from './link.js';
import {
  DEGRADED_AFTER_MS, heldOf, jittered, LEAVING_TTL_MS, missingOf, pinnedAfter, PROBE_INTERVAL_MS, searchDelayMs, wantedOf, type LinkView,
} from './mesh-plan.js';

/** A session that lived this long counts as healthy: the next failure retries fast. */
const HEALTHY_AFTER_MS = 5_000;

export interface MeshOptions extends LinkOptions {
  urls: readonly URL[];
  reconnect: { initialDelayMs: number; maxDelayMs: number };
  random?: () => number;
  now?: () => number;
}

export interface MeshEvents {
  up: [link: WorkerLink];
  down: [link: WorkerLink, err: Error | undefined];
  config: [link: WorkerLink, config: ConfigMessage];
  stream: [link: WorkerLink, channel: Channel];
  trust: [link: WorkerLink, caPem: string];
}

/** One configured URL: its dial loop's state. */
interface Endpoint {
  url: URL;
  /** Workers this URL led to (a session, or a refusal naming them). */
  reached: Set<string>;
  backoff: Backoff;
  /** A failure (or a short session) since the last success: wait backoff.next() before dialling. */
  penalty: boolean;
  /** Consecutive mesh refusals while something was missing. */
  refusals: number;
  /** The missing set those refusals were counted against. */
  searchingFor: string;
  probeAt: number;
  lastError: string | undefined;
  degraded: string | undefined;
}

export class Mesh extends EventEmitter<MeshEvents> {
  readonly #o: MeshOptions;
  readonly #log: Logger;
  readonly #random: () => number;
  readonly #now: () => number;
  readonly #endpoints: Endpoint[];
  /** Every open link, in the order they joined (new streams go round-robin over it). */
  #links: WorkerLink[] = [];
  /** Instance → until when (ms) it is not looked for: it said it is draining. */
  readonly #leaving = new Map<string, number>();
  /** Instance → since when (ms) it has been missing. */
  readonly #missingSince = new Map<string, number>();
  #wake: (() => void) | undefined;
  #stopping = false;
  /** Bumped by cycle(): links of older generations are replaced, one worker at a time. */
  #generation = 0;
  readonly #generationOf = new WeakMap<WorkerLink, number>();
  /** How long a replaced session may drain (the old certificate's remaining life). */
  #cycleDrainMs = 30_000;
  readonly #dials: Counter<'result'>;
  readonly #workersGauge: Gauge<'state'>;

  constructor(o: MeshOptions, registry: Registry) {
    super();
    this.#o = o;
    this.#log = o.logger;
    this.#random = o.random ?? Math.random;
    this.#now = o.now ?? Date.now;
    this.#endpoints = o.urls.map((url) => ({
      url, reached: new Set(), backoff: new Backoff({ initialMs: o.reconnect.initialDelayMs, maxMs: o.reconnect.maxDelayMs, random: this.#random }),
      penalty: false, refusals: 0, searchingFor: '', probeAt: 0, lastError: undefined, degraded: undefined,
    }));
    this.#dials = metric(registry, 'underpass_connector_mesh_dials_total', () => new Counter({
      name: 'underpass_connector_mesh_dials_total', labelNames: ['result'], registers: [registry],
      help: 'Connections to worker URLs by result: joined (a new session), duplicate (409: a worker already held), draining (503: a leaving worker), failed.',
    }));
    this.#workersGauge = metric(registry, 'underpass_connector_mesh_workers', () => new Gauge({
      name: 'underpass_connector_mesh_workers', labelNames: ['state'], registers: [registry],
      help: 'Workers of the connection by state: connected (a session that takes new streams) or missing (announced, no session).',
    }));
  }

  /** Every open link (serving ones and those draining). */
  get links(): readonly WorkerLink[] {
    return this.#links;
  }

  /** Runs the dial loops until `signal` aborts. */
  async run(signal: AbortSignal): Promise<void> {
    signal.addEventListener('abort', () => this.#kick(), { once: true });
    await Promise.all(this.#endpoints.map((e) => this.#loop(e, signal)));
  }

  /** Workers announced (or held) and not leaving. */
  wanted(): Set<string> {
    return wantedOf(this.#views(), this.#leaving, this.#now());
  }

  held(): Set<string> {
    return heldOf(this.#views());
  }

  missing(): string[] {
    return missingOf(this.wanted(), this.held());
  }

  /** Why the mesh is incomplete beyond chance, if it is (docs/ha.md): the first degraded endpoint's reason. */
  get degraded(): string | undefined {
    if (this.missing().length === 0) return undefined;
    return this.#endpoints.find((e) => e.degraded)?.degraded;
  }

  get lastError(): string | undefined {
    return this.#endpoints.find((e) => e.lastError)?.lastError;
  }

  /** Each configured URL and the last failure through it (cleared by a new session). */
  endpoints(): Array<{ url: URL; lastError: string | undefined }> {
    return this.#endpoints.map((e) => ({ url: e.url, lastError: e.lastError }));
  }

  /**
   * SIGTERM: no more dials; every mesh worker is told `draining` (it prefers
   * other connectors from now on, and still uses this one when it has none).
   */
  tellDraining(): void {
    this.#stopping = true;
    this.#kick();
    for (const l of this.#links) l.tellDraining();
  }

  /**
   * The end of the drain delay: every session is retired (workers stop
   * opening streams through this connector and say so), so the GoAway that
   * follows crosses no stream. Resolves when every worker answered, or after
   * RETIRE_ANSWER_MS.
   */
  async retireAll(): Promise<void> {
    this.#stopping = true;
    this.#kick();
    await Promise.all(this.#links.map((l) => l.retire()));
  }

  /**
   * New credentials are in force (a renewal): every worker gets a new session
   * with them, found like a missing worker; each old session is then retired
   * and drains for up to `drainMs` (the old certificate's remaining life).
   */
  cycle(drainMs: number): void {
    this.#generation++;
    this.#cycleDrainMs = drainMs;
    this.#kick();
  }

  /** GoAway on every link; open streams finish up to the deadline. */
  async drain(deadlineMs: number): Promise<void> {
    this.#stopping = true;
    await Promise.all(this.#links.map((l) => l.drain(deadlineMs)));
  }

  status(): Record<string, unknown> {
    const wanted = [...this.wanted()].sort();
    const missing = this.missing();
    return {
      wanted,
      missing,
      ...(this.degraded ? { degraded: this.degraded } : {}),
      endpoints: this.#endpoints.map((e) => ({ url: e.url.href, reached: [...e.reached].sort(), ...(e.lastError ? { lastError: e.lastError } : {}) })),
    };
  }

  #views(): LinkView[] {
    return this.#links.map((l) => ({
      instance: l.instance, serving: l.serving, open: !l.closed, announced: l.announced, current: this.#generationOf.get(l) === this.#generation,
    }));
  }

  #kick(): void {
    this.#updateGauges();
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }

  #updateGauges(): void {
    const missing = this.missing();
    const now = this.#now();
    for (const n of [...this.#missingSince.keys()]) if (!missing.includes(n)) this.#missingSince.delete(n);
    for (const n of missing) if (!this.#missingSince.has(n)) this.#missingSince.set(n, now);
    this.#workersGauge.set({ state: 'connected' }, this.held().size);
    this.#workersGauge.set({ state: 'missing' }, missing.length);
  }

  /** Why `e` should dial now, or undefined. */
  #dialReason(e: Endpoint): 'missing' | 'unreached' | 'probe' | undefined {
    if (this.#stopping) return undefined;
    const held = this.held();
    if (missingOf(this.wanted(), held).length > 0) return 'missing';
    if (![...e.reached].some((n) => held.has(n))) return 'unreached';
    if (this.#now() >= e.probeAt) return 'probe';
    return undefined;
  }

  async #loop(e: Endpoint, signal: AbortSignal): Promise<void> {
    e.probeAt = this.#now() + jittered(PROBE_INTERVAL_MS, this.#random);
    while (!signal.aborted) {
      const reason = this.#dialReason(e);
      if (!reason) {
        await this.#idle(e, signal);
        continue;
      }
      if (e.penalty) {
        const delay = e.backoff.next();
        this.#o.metrics.reconnects.inc({ worker: e.url.href });
        this.#log.info({ delayMs: delay, attempt: e.backoff.attempt }, `reconnecting to ${e.url.href} in ${delay} ms`);
        e.penalty = false;
        await sleep(delay, signal);
        continue;
      }
      const delay = await this.#attempt(e, reason, signal);
      if (delay > 0) await sleep(delay, signal);
    }
  }

  /** Waits for a change (a link came or went, a set was announced) or the next probe. */
  #idle(e: Endpoint, signal: AbortSignal): Promise<void> {
    if (signal.aborted) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(done, Math.max(0, e.probeAt - this.#now()));
      const previous = this.#wake;
      this.#wake = () => {
        previous?.();
        done();
      };
      function done(): void {
        clearTimeout(timer);
        resolve();
      }
    });
  }

  /** One dial; returns how long to wait before the next decision. */
  async #attempt(e: Endpoint, reason: 'missing' | 'unreached' | 'probe', signal: AbortSignal): Promise<number> {
    const held = this.held();
    const missing = missingOf(this.wanted(), held);
    const searchingFor = missing.join(',');
    if (searchingFor !== e.searchingFor) {
      e.searchingFor = searchingFor;
      e.refusals = 0;
      this.#clearDegraded(e);
    }
    if (reason === 'probe') e.probeAt = this.#now() + jittered(PROBE_INTERVAL_MS, this.#random);
    let link: WorkerLink;
    try {
      link = await openLink(e.url, [...held].sort(), this.#o, signal);
    } catch (err) {
      if (signal.aborted) return 0;
      if (err instanceof DialRefused) return this.#refused(e, err, missing, held.size);
      this.#dials.inc({ result: 'failed' });
      e.lastError = errorMessage(err);
      e.penalty = true;
      this.#log.warn({ err: e.lastError, code: errorCode(err) }, `cannot connect to ${e.url.href}: ${e.lastError}`);
      return 0;
    }
    e.lastError = undefined;
    e.reached.add(link.instance);
    if (this.#stopping || this.held().has(link.instance)) {
      // Two loops raced to the same worker, or an older worker ignored the have-list: keep the first.
      this.#dials.inc({ result: 'duplicate' });
      link.close();
      return this.#stopping ? 0 : searchDelayMs(++e.refusals, Infinity, this.#o.reconnect.maxDelayMs, this.#random);
    }
    this.#dials.inc({ result: 'joined' });
    this.#join(e, link);
    return 0;
  }

  #refused(e: Endpoint, err: DialRefused, missing: string[], heldCount: number): number {
    this.#dials.inc({ result: err.kind });
    if (err.instance) e.reached.add(err.instance);
    if (err.kind === 'draining' && err.instance) this.#leaving.set(err.instance, this.#now() + LEAVING_TTL_MS);
    if (missing.length === 0) return 0; // a probe or a first reach: nothing to search for
    e.refusals++;
    const limit = pinnedAfter(heldCount + missing.length, heldCount);
    const delay = searchDelayMs(e.refusals, limit, this.#o.reconnect.maxDelayMs, this.#random);
    const longest = Math.min(...missing.map((n) => this.#missingSince.get(n) ?? this.#now()));
    if (e.refusals > limit && this.#now() - longest >= DEGRADED_AFTER_MS && !e.degraded) {
      e.degraded = `reached only ${heldCount} of ${heldCount + missing.length} workers through ${e.url.href} after ${e.refusals} attempts `
        + `(missing: ${missing.join(', ')}); the load balancer seems to pin connections from this address to one worker `
        + '(source-IP affinity): configure it to balance each connection (docs/ha.md)';
      this.#log.warn({ missing, attempts: e.refusals, url: e.url.href }, `mesh degraded: ${e.degraded}`);
    }
    this.#log.debug({ kind: err.kind, worker: err.instance, refusals: e.refusals, delayMs: delay }, `searching for ${missing.join(', ')}: ${err.message}`);
    return delay;
  }

  #clearDegraded(e: Endpoint): void {
    if (!e.degraded) return;
    e.degraded = undefined;
    this.#log.info({ url: e.url.href }, `mesh no longer degraded through ${e.url.href}`);
  }

  #join(e: Endpoint, link: WorkerLink): void {
    if (link.closed) {
      // Closed between its welcome and now: count it like a short session.
      e.penalty = true;
      e.lastError = link.closedError?.message ?? 'the session closed right after its handshake';
      return;
    }
    this.#links = [...this.#links, link];
    this.#generationOf.set(link, this.#generation);
    this.#leaving.delete(link.instance); // back (a worker restarted under the same name)
    link.on('config', (msg) => this.emit('config', link, msg));
    link.on('stream', (channel) => this.emit('stream', link, channel));
    link.on('trust', (ca) => this.emit('trust', link, ca));
    link.on('workers', () => this.#kick());
    link.on('draining', () => {
      this.#leaving.set(link.instance, this.#now() + LEAVING_TTL_MS);
      this.#log.info({ worker: link.instance }, `worker ${link.instance} is draining: new streams go to the other workers; open ones finish`);
      this.#kick();
    });
    link.once('closed', (err) => {
      this.#links = this.#links.filter((l) => l !== link);
      if (this.#now() - link.since.getTime() >= HEALTHY_AFTER_MS) e.backoff.reset();
      else e.penalty = true;
      if (err) e.lastError = errorMessage(err);
      this.#log[err && !this.#stopping ? 'warn' : 'info']({ worker: link.instance, err: err?.message },
        `session with worker ${link.instance} ended${err ? `: ${err.message}` : ''}`);
      this.emit('down', link, err);
      this.#kick();
    });
    this.#log.info({ worker: link.instance, session: link.welcome.session, workerVersion: link.welcome.worker.version, workers: link.announced },
      `connected to worker ${link.instance} of connection ${link.welcome.connection} at ${e.url.href}`);
    this.emit('up', link);
    link.activate();
    for (const old of this.#links) {
      if (old !== link && old.instance === link.instance && !old.retired && (this.#generationOf.get(old) ?? 0) < this.#generation) void this.#replace(old);
    }
    this.#kick();
  }

  /** A session a renewal replaced, once its successor is up: retired, then GoAway; its streams finish (or end with its certificate). */
  async #replace(old: WorkerLink): Promise<void> {
    const drainMs = this.#cycleDrainMs;
    this.#log.info({ worker: old.instance, drainMs }, `renewed certificate in use with worker ${old.instance}: the previous session drains (up to ${drainMs} ms)`);
    await old.retire();
    await old.drain(drainMs);
  }
}

function metric<T>(registry: Registry, name: string, make: () => T): T {
  return (registry.getSingleMetric(name) as T | undefined) ?? make();
}
