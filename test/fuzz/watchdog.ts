/**
 * Stops a fuzz run that hangs. A parser stuck in a loop blocks the event loop,
 * so no timer of the test (nor Jest's timeout) can fire; a worker thread can.
 * The harness counts each input into shared memory; when the count stops
 * moving for FUZZ_HANG_MS, the watchdog writes the property, the input number
 * and the seed straight to stderr (the main thread cannot forward output) and
 * kills the process, so `make fuzz` fails with what is needed to replay it.
 */
import { Worker } from 'node:worker_threads';

export interface Watchdog {
  /** Input `n` of the current property starts. */
  beat(n: number): void;
  property(id: string): void;
  stop(): void;
}

const ID_BYTES = 256;

// Plain JavaScript: worker threads load no TypeScript. workerData: the shared memory and the limits.
const WATCHDOG_SOURCE = `
const { workerData } = require('node:worker_threads');
const fs = require('node:fs');
const counters = new Int32Array(workerData.counters);
const id = new Uint8Array(workerData.id);
let last = -1;
let since = Date.now();
setInterval(() => {
  if (Atomics.load(counters, 2) === 0) return;
  const beats = Atomics.load(counters, 0);
  if (beats !== last) { last = beats; since = Date.now(); return; }
  if (Date.now() - since < workerData.hangMs) return;
  const end = id.indexOf(0);
  const property = Buffer.from(id.subarray(0, end < 0 ? id.length : end)).toString('utf8');
  const input = Atomics.load(counters, 1);
  fs.writeSync(2, '\\nfuzz: HANG in ' + property + ': input ' + input + ' made no progress for ' + workerData.hangMs + ' ms (seed ' + workerData.seed + ').\\n' +
    'fuzz: replay with FUZZ_SEED=' + workerData.seed + ' FUZZ_ONLY="' + property + '" make fuzz (the same inputs come in the same order).\\n');
  process.kill(process.pid, 'SIGKILL');
}, 250);
`;

export function startWatchdog(target: string, settings: { seed: number; hangMs: number }): Watchdog {
  const counters = new SharedArrayBuffer(3 * 4);
  const idBuffer = new SharedArrayBuffer(ID_BYTES);
  const view = new Int32Array(counters);
  const id = new Uint8Array(idBuffer);
  const worker = new Worker(WATCHDOG_SOURCE, { eval: true, workerData: { counters, id: idBuffer, hangMs: settings.hangMs, seed: settings.seed } });
  worker.unref();
  let beats = 0;
  const setId = (text: string): void => {
    id.fill(0);
    id.set(Buffer.from(text).subarray(0, ID_BYTES - 1));
  };
  setId(target);
  Atomics.store(view, 2, 1);
  return {
    beat(n: number): void {
      Atomics.store(view, 0, ++beats);
      Atomics.store(view, 1, n);
    },
    property(propertyId: string): void {
      setId(propertyId);
      Atomics.store(view, 0, ++beats);
    },
    stop(): void {
      Atomics.store(view, 2, 0);
      void worker.terminate();
    },
  };
}
