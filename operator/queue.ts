/**
 * A per-key work queue: a key is queued at most once, never processed twice
 * at the same time, retried with per-key exponential backoff after a failure,
 * and can be re-queued after a delay (certificate renewal, periodic resync).
 */
import { Backoff } from '../tunnel/backoff.js';

export type ProcessResult = void | { requeueAfterMs: number };

export class WorkQueue {
  readonly #pending = new Set<string>();
  readonly #active = new Set<string>();
  readonly #dirty = new Set<string>();
  readonly #timers = new Map<string, NodeJS.Timeout>();
  readonly #failures = new Map<string, Backoff>();
  readonly #process: (key: string) => Promise<ProcessResult>;
  readonly #onError: (key: string, err: unknown, retryInMs: number) => void;
  readonly #concurrency: number;
  #running = false;
  #idleWaiters: Array<() => void> = [];

  constructor(opts: {
    process: (key: string) => Promise<ProcessResult>;
    onError: (key: string, err: unknown, retryInMs: number) => void;
    concurrency?: number;
  }) {
    this.#process = opts.process;
    this.#onError = opts.onError;
    this.#concurrency = opts.concurrency ?? 2;
  }

  get depth(): number {
    return this.#pending.size;
  }

  add(key: string): void {
    if (this.#active.has(key)) {
      this.#dirty.add(key); // run again once the current pass ends
      return;
    }
    this.#pending.add(key);
    this.#pump();
  }

  addAfter(key: string, delayMs: number): void {
    const existing = this.#timers.get(key);
    if (existing) clearTimeout(existing);
    const t = setTimeout(() => {
      this.#timers.delete(key);
      this.add(key);
    }, Math.min(delayMs, 2 ** 31 - 1));
    t.unref();
    this.#timers.set(key, t);
  }

  start(): void {
    this.#running = true;
    this.#pump();
  }

  /** Stops taking keys; resolves when nothing is being processed. */
  async stop(): Promise<void> {
    this.#running = false;
    for (const t of this.#timers.values()) clearTimeout(t);
    this.#timers.clear();
    if (this.#active.size > 0) await new Promise<void>((r) => this.#idleWaiters.push(r));
  }

  /** Resolves when the queue is empty and idle (tests). */
  idle(): Promise<void> {
    if (this.#active.size === 0 && this.#pending.size === 0) return Promise.resolve();
    return new Promise((r) => this.#idleWaiters.push(r));
  }

  #pump(): void {
    if (!this.#running) return;
    while (this.#active.size < this.#concurrency) {
      const key = [...this.#pending].find((k) => !this.#active.has(k));
      if (key === undefined) break;
      this.#pending.delete(key);
      this.#active.add(key);
      void this.#run(key);
    }
  }

  async #run(key: string): Promise<void> {
    try {
      const result = await this.#process(key);
      this.#failures.delete(key);
      if (result && result.requeueAfterMs >= 0) this.addAfter(key, result.requeueAfterMs);
    } catch (err) {
      let backoff = this.#failures.get(key);
      if (!backoff) this.#failures.set(key, (backoff = new Backoff({ initialMs: 500, maxMs: 60_000 })));
      const delay = backoff.next();
      this.#onError(key, err, delay);
      this.addAfter(key, delay);
    } finally {
      this.#active.delete(key);
      if (this.#dirty.delete(key)) this.#pending.add(key);
      // Stopped: keys still pending will not run, so the last active one ends the wait (stop() hung otherwise).
      if (this.#active.size === 0 && (this.#pending.size === 0 || !this.#running)) for (const w of this.#idleWaiters.splice(0)) w();
      this.#pump();
    }
  }
}
