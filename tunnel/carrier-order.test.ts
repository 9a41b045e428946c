import { describe, expect, it } from '@jest/globals';
import { CarrierOrder, type CarrierSource } from './carrier-order.js';
import type { Session } from './mux/session.js';

interface Item {
  name: string;
  up: boolean;
  draining: boolean;
}

const source: CarrierSource<Item, string> = {
  preferred: (i) => i.up && !i.draining,
  fallback: (i) => i.up && i.draining,
  carrier: (i, key) => ({ session: {} as Session, connector: key, worker: i.name }),
};

const items = (spec: string): Item[] =>
  spec.split(' ').map((s) => ({ name: s.replace(/[*!]/g, ''), up: !s.includes('!'), draining: s.includes('*') }));

const order = (list: Item[], start: number): string[] => [...new CarrierOrder(source, list, start, 'c')].map((c) => c.worker);

describe('CarrierOrder', () => {
  it.each([
    ['a b c', 0, ['a', 'b', 'c']],
    ['a b c', 1, ['b', 'c', 'a']],
    ['a b c', 2, ['c', 'a', 'b']],
    // draining (*) after every serving one, in the same round-robin order; down (!) never
    ['a* b c', 0, ['b', 'c', 'a']],
    ['a* b c*', 2, ['b', 'c', 'a']],
    ['a b! c', 1, ['c', 'a']],
    ['a*! b* c', 0, ['c', 'b']],
    ['a!', 0, []],
  ])('%s from %d → %j', (spec, start, expected) => {
    expect(order(items(spec), start)).toEqual(expected);
  });

  it('yields nothing for no sessions', () => {
    expect(order([], 0)).toEqual([]);
  });

  it('checks each item when it is reached, not when the order is made', () => {
    const list = items('a b c');
    const it = new CarrierOrder(source, list, 0, 'conn');
    expect(it.next().value).toEqual({ session: {}, connector: 'conn', worker: 'a' });
    list[1]!.up = false; // b went away while a was tried
    list[2]!.draining = true;
    expect(it.next().value?.worker).toBe('c'); // c, now draining, in the second pass
    expect(it.next()).toEqual({ done: true, value: undefined });
  });
});
