/**
 * The mesh's decisions (docs/ha.md): which workers a connector still looks
 * for, how long it waits between attempts, and when missed attempts stop
 * being bad luck. The attempts table of docs/ha.md is pinned here.
 */
import { describe, expect, it } from '@jest/globals';
import { heldOf, missingOf, pinnedAfter, searchDelayMs, SEARCH_DELAY_MS, wantedOf, type LinkView } from './mesh-plan.js';

const link = (instance: string, announced: string[], state: 'serving' | 'draining' | 'closed' = 'serving'): LinkView =>
  ({ instance, announced, serving: state === 'serving', open: state !== 'closed' });

describe('wanted, held and missing workers', () => {
  it.each<[string, LinkView[], Array<[string, number]>, string[], string[]]>([
    ['a fresh connector knows of no worker', [], [], [], []],
    ['one session with a worker that announces three', [link('w1', ['w1', 'w2', 'w3'])], [], ['w1', 'w2', 'w3'], ['w2', 'w3']],
    ['an older worker announces nothing: what is held is all that is wanted', [link('old', [])], [], ['old'], []],
    ['the union of what every open link announced', [link('w1', ['w1', 'w2']), link('w2', ['w2', 'w3'])], [], ['w1', 'w2', 'w3'], ['w3']],
    ['a worker that said draining is not looked for', [link('w1', ['w1', 'w2', 'w3'])], [['w3', 2_000]], ['w1', 'w2'], ['w2']],
    ['until its leaving mark expires', [link('w1', ['w1', 'w2', 'w3'])], [['w3', 500]], ['w1', 'w2', 'w3'], ['w2', 'w3']],
    ['a draining link still contributes the set it announced, not itself as held', [link('w1', ['w1', 'w2']), link('w2', ['w1', 'w2'], 'draining')], [['w2', 2_000]], ['w1'], []],
    ['a closed link contributes nothing', [link('w1', ['w1']), link('w9', ['w9', 'w8'], 'closed')], [], ['w1'], []],
  ])('%s', (_name, links, leaving, wanted, missing) => {
    const w = wantedOf(links, new Map(leaving), 1_000);
    expect([...w].sort()).toEqual(wanted);
    expect(missingOf(w, heldOf(links))).toEqual(missing);
  });
});

describe('when refusals stop being chance (random balancing)', () => {
  it.each([
    // workers, held, refusals in a row before "pinned" (docs/ha.md, last column of the attempts table)
    [2, 1, 10],
    [3, 2, 18],
    [4, 3, 25],
    [5, 4, 31],
    [10, 9, 66],
    [3, 1, 7],
  ])('with %d workers and %d held: after %d refusals in a row', (workers, held, limit) => {
    expect(pinnedAfter(workers, held)).toBe(limit);
    // By construction: a random balancer misses that often with probability under 1e-3, one fewer time above it.
    expect((held / workers) ** limit).toBeLessThan(1e-3);
    expect((held / workers) ** (limit - 1)).toBeGreaterThanOrEqual(1e-3 * 0.999);
  });

  it('never, when nothing is missing', () => {
    expect(pinnedAfter(3, 3)).toBe(Infinity);
  });
});

describe('the wait between attempts', () => {
  it.each([
    ['the first refusal', 1, 18, 0.5, SEARCH_DELAY_MS],
    ['refusals up to the limit', 18, 18, 0.5, SEARCH_DELAY_MS],
    ['the least jitter', 1, 18, 0, SEARCH_DELAY_MS / 2],
    ['the most jitter', 1, 18, 1, SEARCH_DELAY_MS * 1.5],
    ['one past the limit: doubled', 19, 18, 0.5, SEARCH_DELAY_MS * 2],
    ['five past the limit', 23, 18, 0.5, SEARCH_DELAY_MS * 32],
    ['far past the limit: capped by reconnect.maxDelay', 80, 18, 1, 30_000],
  ])('%s', (_name, refusals, limit, random, delay) => {
    expect(searchDelayMs(refusals, limit, 30_000, () => random)).toBe(delay);
  });
});
