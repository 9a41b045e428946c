/** Small helpers the workloads share: writing with backpressure, counting received bytes, memory. */
import type { BenchStream } from './contender.js';

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** One 64 KiB buffer reused for every write (never mutated, so sharing it is safe). */
export const WRITE_CHUNK = Buffer.alloc(64 * 1024, 'underpass-bench-');

/** Writes `total` bytes in 64 KiB chunks, waiting whenever the stream says it is full. */
export async function sendBytes(s: BenchStream, total: number, chunk: Buffer = WRITE_CHUNK): Promise<void> {
  let left = total;
  while (left > 0) {
    const n = Math.min(left, chunk.length);
    left -= n;
    if (!s.write(n === chunk.length ? chunk : chunk.subarray(0, n))) await s.drained();
  }
}

export interface Counter {
  readonly bytes: number;
  /** Resolves once `target` bytes in total have arrived. */
  until(target: number): Promise<void>;
}

/** Counts what a stream delivers (and so keeps it flowing). */
export function counter(s: BenchStream): Counter {
  let bytes = 0;
  let waiter: { target: number; resolve: () => void } | undefined;
  s.onData((chunk) => {
    bytes += chunk.byteLength;
    if (waiter && bytes >= waiter.target) {
      const w = waiter;
      waiter = undefined;
      w.resolve();
    }
  });
  return {
    get bytes() {
      return bytes;
    },
    until(target: number): Promise<void> {
      if (bytes >= target) return Promise.resolve();
      return new Promise((resolve) => (waiter = { target, resolve }));
    },
  };
}

/** Resolves when the peer half-closes; rejects if the stream fails first. */
export function ended(s: BenchStream): Promise<void> {
  return new Promise((resolve, reject) => {
    s.onEnd(resolve);
    s.onError(reject);
  });
}

/** Echoes everything back, pausing the reader while the writer is full; ends when the peer ends. */
export function echo(s: BenchStream): void {
  s.onData((chunk) => {
    if (!s.write(chunk)) {
      s.pause();
      s.drained().then(
        () => s.resume(),
        () => undefined,
      );
    }
  });
  s.onEnd(() => s.end());
  s.onError(() => undefined);
}

/** Reads everything; when the peer ends, answers one byte and ends (the sender's "all arrived"). */
export function sinkAndAck(s: BenchStream): void {
  s.onData(() => undefined);
  s.onEnd(() => {
    try {
      s.write(Buffer.from('k'));
      s.end();
    } catch {
      // the stream failed instead of ending; the writer sees that on its side
    }
  });
  s.onError(() => undefined);
}

export function elapsedNs(start: bigint): number {
  return Number(process.hrtime.bigint() - start);
}

export function gbits(bytes: number, ns: number): number {
  return (bytes * 8) / ns;
}

declare const gc: (() => void) | undefined;

/** Memory after full collections (needs --expose-gc; without it, as is). */
export async function settledMemory(): Promise<NodeJS.MemoryUsage> {
  for (let i = 0; i < 3; i++) {
    if (typeof gc === 'function') gc();
    await sleep(20);
  }
  return process.memoryUsage();
}

/** Memory after one synchronous full collection: safe to call in a data callback (nothing arrives meanwhile). */
export function memoryNow(): NodeJS.MemoryUsage {
  if (typeof gc === 'function') gc();
  return process.memoryUsage();
}

export function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no result within ${ms} ms`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}
