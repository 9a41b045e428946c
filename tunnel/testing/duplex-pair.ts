/**
 * An in-memory connected pair of Duplex streams for tests (like ws's test
 * pair). Backpressure is real: a write completes only when the other side has
 * room. Options let a test split every chunk into tiny pieces or stall a side.
 */
import { Duplex } from 'node:stream';

export interface PairOptions {
  /** Deliver every written chunk in pieces of at most this many bytes (1 = byte by byte). */
  splitEvery?: number;
  highWaterMark?: number;
}

class PairEnd extends Duplex {
  peer!: PairEnd;
  readonly #split: number;
  #waiting: (() => void) | undefined;
  /** Bytes that went out through this end. */
  written = 0;

  constructor(options: PairOptions) {
    super({ allowHalfOpen: true, highWaterMark: options.highWaterMark ?? 64 * 1024 });
    this.#split = options.splitEvery ?? 0;
  }

  override _read(): void {
    const resume = this.peer.#waiting;
    this.peer.#waiting = undefined;
    resume?.();
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.written += chunk.length;
    let more = true;
    if (this.#split > 0) {
      for (let i = 0; i < chunk.length; i += this.#split) more = this.peer.push(Buffer.from(chunk.subarray(i, i + this.#split)));
    } else {
      more = this.peer.push(Buffer.from(chunk));
    }
    if (more) cb();
    else this.#waiting = () => cb();
  }

  override _final(cb: (err?: Error | null) => void): void {
    this.peer.push(null);
    cb();
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    if (!this.peer.destroyed) this.peer.destroy();
    cb(err);
  }
}

export function duplexPair(a: PairOptions = {}, b: PairOptions = a): [PairEnd, PairEnd] {
  const left = new PairEnd(a);
  const right = new PairEnd(b);
  left.peer = right;
  right.peer = left;
  return [left, right];
}
