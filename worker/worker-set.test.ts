import { describe, expect, it } from '@jest/globals';
import { CONTROL_LIMITS } from '../tunnel/control.js';
import { WorkerSet } from './worker-set.js';

describe('the worker set a worker announces', () => {
  it.each<[string, string[] | undefined, boolean, string[]]>([
    ['before any answer: itself', undefined, false, ['w2']],
    ['the operator\'s set, sorted', ['w3', 'w1', 'w2'], false, ['w1', 'w2', 'w3']],
    ['itself too when the operator has not heard of it yet', ['w1', 'w3'], false, ['w1', 'w2', 'w3']],
    ['without itself once draining', ['w1', 'w2', 'w3'], true, ['w1', 'w3']],
    ['names once', ['w1', 'w1', 'w2'], false, ['w1', 'w2']],
  ])('%s', (_name, announced, draining, expected) => {
    const set = new WorkerSet('w2');
    if (announced) set.apply(announced);
    if (draining) set.drain();
    expect(set.list).toEqual(expected);
  });

  it('says whether an answer changed it, so connectors hear only of changes', () => {
    const set = new WorkerSet('w1');
    expect(set.apply(['w1', 'w2'])).toBe(true);
    expect(set.apply(['w2', 'w1'])).toBe(false);
    expect(set.apply(['w1'])).toBe(true);
  });

  it('keeps itself in a set cut to the control limit', () => {
    const set = new WorkerSet('zz-self');
    set.apply(Array.from({ length: 100 }, (_, i) => `w${String(i).padStart(3, '0')}`));
    expect(set.list).toHaveLength(CONTROL_LIMITS.workers);
    expect(set.list).toContain('zz-self');
  });
});
