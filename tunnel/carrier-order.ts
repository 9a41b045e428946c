/**
 * The order in which one new stream tries the sessions that may carry it: round-robin from a
 * start position, the preferred ones first (serving), then the fallbacks (those of a draining
 * peer, which accept streams until their GoAway). Lazy: each session is checked when it is
 * reached, since one may go away while an earlier one is tried.
 *
 * A plain iterator, not a generator: on Node 24 creating a generator and taking its first
 * value cost about 2 µs against 0.1 µs for this, once per connection on the worker's and the
 * connector's accept path (docs/benchmarks.md, connections).
 */
import type { Carrier } from './stream-flow.js';

/** What CarrierOrder asks of the list it walks; `key` is the caller's context (e.g. the mapping). */
export interface CarrierSource<T, K> {
  /** Tried in the first pass. */
  preferred(item: T, key: K): boolean;
  /** Tried in the second pass, after every preferred one. */
  fallback(item: T, key: K): boolean;
  carrier(item: T, key: K): Carrier;
}

export class CarrierOrder<T, K> implements IterableIterator<Carrier> {
  readonly #source: CarrierSource<T, K>;
  readonly #list: readonly T[];
  readonly #key: K;
  readonly #start: number;
  /** Items looked at in the current pass. */
  #seen = 0;
  /** 0: preferred, 1: fallbacks, 2: done. */
  #pass = 0;

  constructor(source: CarrierSource<T, K>, list: readonly T[], start: number, key: K) {
    this.#source = source;
    this.#list = list;
    this.#start = start;
    this.#key = key;
  }

  next(): IteratorResult<Carrier> {
    const list = this.#list;
    const n = list.length;
    while (this.#pass < 2) {
      while (this.#seen < n) {
        const item = list[(this.#start + this.#seen++) % n]!;
        const ok = this.#pass === 0 ? this.#source.preferred(item, this.#key) : this.#source.fallback(item, this.#key);
        if (ok) return { done: false, value: this.#source.carrier(item, this.#key) };
      }
      this.#pass++;
      this.#seen = 0;
    }
    return { done: true, value: undefined };
  }

  [Symbol.iterator](): this {
    return this;
  }
}
