import { describe, expect, it } from '@jest/globals';
import { describeArrivals, QUIET_MS, waitForQuiet, type ArrivalSource } from './drain-listeners.js';

/**
 * A fake clock and a listener set whose clients arrive at given times (ms after draining began,
 * which is t = 1000): waitForQuiet's waits advance the clock and deliver the arrivals on the way.
 */
function scenario(arrivals: number[]): { source: ArrivalSource; now: () => number; wait: (ms: number) => Promise<void> } {
  let t = 1_000;
  const pending = arrivals.map((a) => 1_000 + a).sort((a, b) => a - b);
  const source = { accepted: 0, lastAcceptAt: undefined as number | undefined };
  const advance = (to: number): void => {
    while (pending.length && pending[0]! <= to) {
      source.accepted++;
      source.lastAcceptAt = pending.shift()!;
    }
    t = to;
  };
  return { source, now: () => t, wait: async (ms) => advance(t + Math.max(0, ms)) };
}

const every = (from: number, to: number, step: number): number[] => {
  const out: number[] = [];
  for (let x = from; x <= to; x += step) out.push(x);
  return out;
};

describe('waitForQuiet: listeners close after drainDelay once clients stop arriving, at most a second drainDelay later', () => {
  it.each([
    // name, drainDelay, arrival times (ms after draining began), close at (ms after), late, bound reached
    ['no client while draining: closes at drainDelay', 5_000, [], 5_000, 0, false],
    ['clients stop within drainDelay (the balancer caught up in time): closes at drainDelay', 5_000, every(0, 2_000, 50), 5_000, 0, false],
    ['the last client came 0.5 s before drainDelay ended: closes QUIET_MS after it', 5_000, every(0, 4_500, 50), 4_500 + QUIET_MS, 0, false],
    ['clients arrive until 7 s (a slow balancer): closes QUIET_MS after the last', 5_000, every(0, 7_000, 50), 7_000 + QUIET_MS, 40, false],
    ['clients never stop: closes at twice drainDelay, and says the bound was reached', 5_000, every(0, 20_000, 50), 10_000, 100, true],
    ['drainDelay 0: closes at once whatever arrives', 0, every(0, 3_000, 50), 0, 0, false],
  ])('%s', async (_name, delayMs, arrivals, closeAt, late, boundReached) => {
    const s = scenario(arrivals);
    const a = await waitForQuiet(s.source, { startedAt: 1_000, acceptedAtStart: 0, delayMs, now: s.now, wait: s.wait });
    expect(s.now() - 1_000).toBe(closeAt);
    expect(a.late).toBe(late);
    expect(a.boundReached).toBe(boundReached);
    expect(a.extendedMs).toBe(Math.max(0, closeAt - delayMs));
  });

  it('an aborted signal (a second SIGTERM) ends the wait at once', async () => {
    const s = scenario(every(0, 20_000, 50));
    const ac = new AbortController();
    ac.abort();
    await waitForQuiet(s.source, { startedAt: 1_000, acceptedAtStart: 0, delayMs: 5_000, now: s.now, wait: s.wait, signal: ac.signal });
    expect(s.now()).toBe(6_000); // the fake wait still advances; the loop after it does not run
  });

  it('says what arrived and why the listeners stayed open longer', async () => {
    const s = scenario(every(0, 7_000, 50));
    const a = await waitForQuiet(s.source, { startedAt: 1_000, acceptedAtStart: 0, delayMs: 5_000, now: s.now, wait: s.wait });
    expect(describeArrivals(a, 5_000)).toBe('listeners close: 141 client connection(s) arrived while draining, the last 7000 ms after draining began; ' +
      'kept open 3000 ms beyond drainDelay (5000 ms) until no client came for 1000 ms: load balancers took longer than drainDelay to stop sending clients');
    const quiet = scenario([]);
    expect(describeArrivals(await waitForQuiet(quiet.source, { startedAt: 1_000, acceptedAtStart: 0, delayMs: 5_000, now: quiet.now, wait: quiet.wait }), 5_000))
      .toBe('listeners close: no client arrived while draining');
  });
});
