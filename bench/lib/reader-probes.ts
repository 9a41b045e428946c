/**
 * A reader that stops keeping up while the writer offers far more than a
 * window. A tunnel meets this whenever the application behind one side is
 * slower than the network: the multiplexer must stop the remote writer
 * (withhold credit) so that memory per stream stays bounded, and the stream
 * must still complete once the reader catches up. Three ways to stop reading:
 *
 * - paused:   reads `pausedAfter` bytes, then calls the stream's pause() for `pausedHoldMs`;
 * - unread:   never attaches a reader for `pausedHoldMs` after accepting the stream;
 * - slowread: `for await` over the stream, consuming `slowReadRate` bytes/s during the hold.
 *
 * Measured at the reader during the hold: bytes that arrived on the socket,
 * bytes the application consumed, their difference (what the process holds),
 * and memory at the end of the hold over the reader's memory before the
 * stream opened (both after gc, so garbage awaiting collection does not
 * count). After the hold, a transfer that makes no progress for `stallMs` is
 * reported as stalled and reset. The writer side is pausedClient in probes.ts.
 */
import type { Socket } from 'node:net';
import type { BenchStream, Chunk } from './contender.js';
import { memoryNow, sleep } from './io.js';
import type { Ctx, Result, Sizes } from './workloads.js';

export type ReaderMode = 'paused' | 'unread' | 'slowread';

interface Watch {
  /** Resolves with the measurements at the end of the hold. */
  done: Promise<Result>;
  /** True while the hold lasts. */
  readonly holding: boolean;
}

/**
 * Samples socket bytes and consumed bytes over the hold, and memory at its end
 * against `base` (taken before the stream opened); calls `release` at the end.
 */
function watch(socket: Socket, consumed: () => number, s: BenchStream, sizes: Sizes, base: NodeJS.MemoryUsage, release: () => void): Watch {
  let holding = true;
  const run = async (): Promise<Result> => {
    const read0 = socket.bytesRead;
    const used0 = consumed();
    await sleep(sizes.pausedHoldMs / 2);
    const readMid = socket.bytesRead;
    await sleep(sizes.pausedHoldMs / 2);
    const read1 = socket.bytesRead;
    const mem1 = memoryNow();
    const result = {
      arrivedWhileHeld: read1 - read0,
      arrivedSecondHalf: read1 - readMid,
      consumedWhileHeld: consumed() - used0,
      keptByReader: read1 - read0 - (consumed() - used0),
      bufferedInStream: s.buffered,
      rssOverBase: mem1.rss - base.rss,
      buffersOverBase: mem1.arrayBuffers - base.arrayBuffers,
    };
    holding = false;
    release();
    return result;
  };
  return {
    done: run(),
    get holding() {
      return holding;
    },
  };
}

/** After the hold: resets the stream if neither the socket nor the application moved for `stallMs`. */
function watchForStall(socket: Socket, consumed: () => number, s: BenchStream, sizes: Sizes, done: () => boolean, onStall: (msg: string) => void): void {
  let last = [socket.bytesRead, consumed()];
  let still = 0;
  const tick = setInterval(() => {
    if (done()) return clearInterval(tick);
    const now = [socket.bytesRead, consumed()];
    still = now[0] === last[0] && now[1] === last[1] ? still + 250 : 0;
    last = now;
    if (still >= sizes.stallMs) {
      clearInterval(tick);
      onStall(`stalled: no progress for ${sizes.stallMs} ms with ${consumed()} of ${sizes.pausedOffer} bytes consumed, ${s.buffered} buffered`);
      s.abort('stalled');
    }
  }, 250);
}

/** Consumes a chunk at `rate` bytes/s, counting as it goes (so consumption is measured smoothly). */
async function consumeSlowly(chunk: Chunk, rate: number, add: (n: number) => void): Promise<void> {
  const step = 64 * 1024;
  for (let left = chunk.byteLength; left > 0; left -= step) {
    const n = Math.min(step, left);
    await sleep((n / rate) * 1000);
    add(n);
  }
}

export function readerProbe(mode: ReaderMode): (ctx: Ctx) => Promise<Result> {
  return ({ mux, socket, sizes }) =>
    new Promise((resolve) => {
      const base = memoryNow();
      mux.onStream((s) => {
        let bytes = 0;
        let error = '';
        let held: Watch | undefined;
        let finished = false;
        const finish = async (): Promise<void> => {
          if (finished) return;
          finished = true;
          const measured = held ? await held.done : {};
          resolve({ ...measured, received: bytes, complete: bytes === sizes.pausedOffer, error });
        };
        const ack = (): void => {
          try {
            s.write(Buffer.from('k'));
            s.end();
          } catch (err) {
            // An abort can dispatch 'end' just before its error (libp2p): let that error land first.
            setImmediate(() => (error ||= `${(err as Error).name}: ${(err as Error).message}`));
          }
          setImmediate(() => setImmediate(() => void finish()));
        };
        s.onError((err) => {
          error ||= `${err.name}: ${err.message}`;
          void finish();
        });
        const count = (chunk: Chunk): void => {
          bytes += chunk.byteLength;
        };
        const release = (): void => {
          watchForStall(socket, () => bytes, s, sizes, () => finished, (msg) => {
            error ||= msg;
            void finish();
          });
        };
        if (mode === 'paused') {
          s.onData((chunk) => {
            count(chunk);
            if (!held && bytes >= sizes.pausedAfter) {
              s.pause();
              held = watch(socket, () => bytes, s, sizes, base, () => {
                if (error) return;
                s.resume();
                release();
              });
            }
          });
          s.onEnd(ack);
        } else if (mode === 'unread') {
          held = watch(socket, () => bytes, s, sizes, base, () => {
            if (error) return;
            s.onData(count);
            s.onEnd(ack);
            release();
          });
        } else {
          void (async () => {
            try {
              for await (const chunk of s.iterate()) {
                if (held?.holding) await consumeSlowly(chunk, sizes.slowReadRate, (n) => (bytes += n));
                else count(chunk);
                if (!held && bytes >= sizes.pausedAfter) held = watch(socket, () => bytes, s, sizes, base, release);
              }
              ack();
            } catch (err) {
              error ||= `${(err as Error).name}: ${(err as Error).message}`;
              void finish();
            }
          })();
        }
      });
    });
}
