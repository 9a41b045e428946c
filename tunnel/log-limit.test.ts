import { afterEach, describe, expect, it } from '@jest/globals';
import { flushLineLimiters, LineLimiter } from './log-limit.js';

describe('LineLimiter', () => {
  let now = 0;
  const summaries: Array<[string, number]> = [];
  const limiters: LineLimiter[] = [];
  const make = (burst = 3, maxKeys = 2): LineLimiter => {
    const l = new LineLimiter({ burst, intervalMs: 1_000, maxKeys, overflowKey: '(other)', now: () => now, onSummary: (k, n) => summaries.push([k, n]) });
    limiters.push(l);
    return l;
  };
  afterEach(() => {
    for (const l of limiters.splice(0)) l.flush();
    summaries.length = 0;
    now = 0;
  });

  it('writes the first `burst` lines of an interval and counts the rest into one summary when it ends', () => {
    const l = make();
    const allowed = Array.from({ length: 10 }, () => l.allow('a'));
    expect(allowed).toEqual([true, true, true, false, false, false, false, false, false, false]);
    expect(summaries).toEqual([]);
    now = 1_000;
    expect(l.allow('a')).toBe(true); // a new interval
    expect(summaries).toEqual([['a', 7]]);
  });

  it('keeps intervals per key', () => {
    const l = make(1);
    expect([l.allow('a'), l.allow('b'), l.allow('a'), l.allow('b')]).toEqual([true, true, false, false]);
    now = 5_000;
    l.allow('c');
    expect(summaries.sort()).toEqual([['a', 1], ['b', 1]]);
  });

  it('puts keys beyond maxKeys under the overflow key, so a peer with many addresses cannot grow the table', () => {
    const l = make(1, 2);
    expect([l.allow('a'), l.allow('b'), l.allow('c'), l.allow('d'), l.allow('e')]).toEqual([true, true, true, false, false]);
    l.flush();
    expect(summaries).toEqual([['(other)', 2]]);
  });

  it('writes a pending summary on its own once the interval is over (timer)', async () => {
    const l = new LineLimiter({ burst: 1, intervalMs: 30, maxKeys: 4, overflowKey: '(other)', onSummary: (k, n) => summaries.push([k, n]) });
    limiters.push(l);
    l.allow('a');
    l.allow('a');
    l.allow('a');
    await new Promise((r) => setTimeout(r, 100));
    expect(summaries).toEqual([['a', 2]]);
  });

  it('flushLineLimiters writes what every limiter still holds, once, and nothing for limiters already summed up', async () => {
    const a = make(1);
    const b = make(1);
    const quiet = make(1);
    a.allow('x');
    a.allow('x');
    b.allow('y');
    b.allow('y');
    b.allow('y');
    quiet.allow('z'); // written, nothing suppressed
    flushLineLimiters();
    expect(summaries.sort()).toEqual([['x', 1], ['y', 2]]);
    flushLineLimiters();
    expect(summaries).toHaveLength(2);
    // A limiter whose timer already wrote its summary is not pending any more.
    const timed = new LineLimiter({ burst: 1, intervalMs: 20, maxKeys: 4, overflowKey: '(other)', onSummary: (k, n) => summaries.push([k, n]) });
    timed.allow('t');
    timed.allow('t');
    await new Promise((r) => setTimeout(r, 80));
    expect(summaries.filter(([k]) => k === 't')).toEqual([['t', 1]]);
    flushLineLimiters();
    expect(summaries.filter(([k]) => k === 't')).toEqual([['t', 1]]);
  });
});
