import { describe, expect, it } from '@jest/globals';
import { Backoff } from './backoff.js';

describe('Backoff', () => {
  it.each([
    [0, [250, 500, 1000, 2000, 4000, 8000, 15000, 15000]],
    [1, [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000]],
  ])('with random()=%d grows exponentially and caps at 30 s', (r, expected) => {
    const b = new Backoff({ initialMs: 500, maxMs: 30_000, random: () => r });
    expect(expected.map(() => b.next())).toEqual(expected);
  });

  it('starts over after reset', () => {
    const b = new Backoff({ initialMs: 500, maxMs: 30_000, random: () => 1 });
    b.next();
    b.next();
    b.reset();
    expect(b.next()).toBe(500);
  });

  it('always stays within [ceiling/2, ceiling]', () => {
    const b = new Backoff({ initialMs: 100, maxMs: 1_000 });
    for (let i = 0; i < 50; i++) {
      const ceiling = Math.min(1_000, 100 * 2 ** i);
      const d = b.next();
      expect(d).toBeGreaterThanOrEqual(ceiling / 2);
      expect(d).toBeLessThanOrEqual(ceiling);
    }
  });
});
