import { describe, expect, it } from '@jest/globals';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { InputClock, Meter, fuzzSettings } from './harness.js';
import type { Watchdog } from './watchdog.js';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

/** Spins the main thread for `ms` of its CPU time, allocating next to nothing. */
function busy(ms: number): number {
  const start = process.threadCpuUsage();
  let x = 0;
  for (;;) {
    for (let i = 0; i < 100_000; i++) x = (x * 31 + i) | 0;
    const used = process.threadCpuUsage(start);
    if ((used.user + used.system) / 1000 >= ms) return x;
  }
}

const noWatchdog: Watchdog = { beat: () => undefined, property: () => undefined, stop: () => undefined };

describe('the fuzz harness\'s clock: an input\'s own CPU, not the collector\'s work on the whole heap', () => {
  // A heap like a Jest worker's after many suites: what a full collection costs is set by it.
  const retained: Array<{ n: number; s: string; a: number[] }> = [];
  for (let i = 0; i < 2_000_000; i++) retained.push({ n: i, s: `item ${i}`, a: [i] });

  it('counts the code\'s own main-thread CPU', () => {
    gc(); // the large heap's collection done before, not during, the measurement
    const clock = new InputClock();
    clock.start();
    busy(200);
    expect(clock.stop().ms).toBeGreaterThanOrEqual(185);
  });

  it('leaves out a full collection of a large heap, which the process\'s CPU time counts', () => {
    const clock = new InputClock();
    const before = process.cpuUsage();
    clock.start();
    gc();
    const { ms, gcMs } = clock.stop();
    const used = process.cpuUsage(before);
    const processMs = (used.user + used.system) / 1000;
    expect(retained.length).toBe(2_000_000);
    // The premise: the collection is expensive in process CPU (the old measure) …
    expect(processMs).toBeGreaterThan(100);
    expect(gcMs).toBeGreaterThan(50);
    // … and the input's own code took next to nothing.
    expect(ms).toBeLessThan(30);
  });

  it('fails a slow input and passes one whose time went to the collector (Meter, FUZZ_MAX_MS=60)', () => {
    const meter = new Meter({ ...fuzzSettings(), maxMsPerInput: 60 }, 1 << 30, noWatchdog);
    expect(() => meter.sync(undefined, () => gc())).not.toThrow();
    expect(() => meter.sync(undefined, () => busy(120))).toThrow(/one input took \d+ ms of CPU, the collector's pauses not counted \(limit FUZZ_MAX_MS=60\)/);
    expect(meter.slow).toBe(1);
  });
});
