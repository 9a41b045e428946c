/**
 * Keeps what a peer can make us write bounded. Per key (a session's refusal reason, a source
 * address), the first `burst` lines of an interval are written as they come; the rest are only
 * counted, and one summary per key and interval says how many there were. Keys are bounded too:
 * past `maxKeys` at once, new keys share one overflow key.
 *
 * A peer that opens and resets streams, or fails handshakes, as fast as it can costs at most
 * `burst + 1` lines per key and interval, whatever it sends.
 *
 * Summaries still pending when the process stops are written by flushLineLimiters (the worker and
 * connector commands call it after they drained, before the audit log closes): a peer that
 * provokes lines just before a restart is still accounted for.
 */
export interface LineLimiterOptions {
  burst: number;
  intervalMs: number;
  maxKeys: number;
  /** The key that stands for every key past maxKeys. */
  overflowKey: string;
  /** One summary: `count` lines of `key` were not written in the interval that ended. */
  onSummary: (key: string, count: number, intervalMs: number) => void;
  now?: () => number;
}

/** Limiters with suppressed lines whose summary is not written yet (their timer is armed). */
const pending = new Set<LineLimiter>();

/** Writes the summaries every limiter still holds (at shutdown). */
export function flushLineLimiters(): void {
  for (const limiter of [...pending]) limiter.flush();
}

interface Window {
  start: number;
  written: number;
  suppressed: number;
}

export class LineLimiter {
  readonly #o: LineLimiterOptions;
  readonly #now: () => number;
  readonly #windows = new Map<string, Window>();
  #timer: NodeJS.Timeout | undefined;

  constructor(options: LineLimiterOptions) {
    this.#o = options;
    this.#now = options.now ?? Date.now;
  }

  /** True: write this line. False: it was counted, and the interval's summary will include it. */
  allow(key: string): boolean {
    const now = this.#now();
    let w = this.#windows.get(key);
    if (!w && this.#windows.size >= this.#o.maxKeys) {
      this.#expire(now);
      if (this.#windows.size >= this.#o.maxKeys) {
        key = this.#o.overflowKey;
        w = this.#windows.get(key);
      }
    }
    if (w && now - w.start >= this.#o.intervalMs) {
      this.#summarise(key, w);
      w = undefined;
    }
    if (!w) {
      w = { start: now, written: 0, suppressed: 0 };
      this.#windows.set(key, w);
    }
    if (w.written < this.#o.burst) {
      w.written++;
      return true;
    }
    w.suppressed++;
    if (!this.#timer) {
      this.#timer = setTimeout(LineLimiter.#tick, this.#o.intervalMs, this).unref();
      pending.add(this);
    }
    return false;
  }

  /** Writes the summaries still pending (at shutdown). */
  flush(): void {
    for (const [key, w] of this.#windows) this.#summarise(key, w);
    this.#windows.clear();
    clearTimeout(this.#timer);
    this.#timer = undefined;
    pending.delete(this);
  }

  static #tick(l: LineLimiter): void {
    l.#timer = undefined;
    const now = l.#now();
    l.#expire(now);
    let next = Infinity;
    for (const w of l.#windows.values()) if (w.suppressed > 0) next = Math.min(next, w.start + l.#o.intervalMs);
    if (next !== Infinity) l.#timer = setTimeout(LineLimiter.#tick, Math.max(1, next - now), l).unref();
    else pending.delete(l);
  }

  /** Ends every interval that is over: its summary, and its key forgotten. */
  #expire(now: number): void {
    for (const [key, w] of this.#windows) {
      if (now - w.start < this.#o.intervalMs) continue;
      this.#summarise(key, w);
      this.#windows.delete(key);
    }
  }

  #summarise(key: string, w: Window): void {
    if (w.suppressed === 0) return;
    const count = w.suppressed;
    w.suppressed = 0;
    this.#o.onSummary(key, count, this.#o.intervalMs);
  }
}
