import { describe, it, expect } from '@jest/globals';
import type { WorkerReport } from '../tunnel/operator-channel.js';
import { instanceLimit, ReportStore, type EvictionReason, type ReportStoreOptions } from './report-store.js';

function report(overrides: Partial<WorkerReport> = {}): WorkerReport {
  return { instance: 'dc1-worker-0', version: '0.1.0', ready: false, draining: false, connectors: [], listenerFailures: [], ...overrides };
}

function clocked(opts: Omit<ReportStoreOptions, 'now'> = {}): {
  store: ReportStore; advance: (ms: number) => void; events: string[]; evicted: Array<[string, EvictionReason]>;
} {
  let now = 1_000_000;
  const s = new ReportStore({ ...opts, now: () => now });
  const events: string[] = [];
  const evicted: Array<[string, EvictionReason]> = [];
  s.on('report', (c) => events.push(c));
  s.on('evicted', (c, reason) => evicted.push([c, reason]));
  return { store: s, advance: (ms) => (now += ms), events, evicted };
}

describe('ReportStore', () => {
  it('keeps only reports newer than maxAge in live()', () => {
    const { store: s, advance } = clocked();
    s.record('ns/c', report({ instance: 'a' }), 100);
    advance(1500);
    s.record('ns/c', report({ instance: 'b' }), 100);
    advance(1000);
    expect(s.live('ns/c', 2000).map((r) => r.instance)).toEqual(['b']);
    expect(s.live('ns/c', 2000)[0]!.receivedAt).toBe(1_001_500);
    expect(s.bytes).toBe(100);
    advance(5000);
    expect(s.live('ns/c', 2000)).toEqual([]);
    expect(s.hasReported('ns/c')).toBe(true);
    expect({ bytes: s.bytes, size: s.size }).toEqual({ bytes: 0, size: 0 });
  });

  it('fires for a new worker, changed content and a worker reappearing, not for repeats', () => {
    const { store: s, advance, events } = clocked();
    s.record('ns/c', report({ instance: 'a' }), 1);
    s.record('ns/c', report({ instance: 'a' }), 1);
    s.record('ns/c', report({ instance: 'b' }), 1);
    s.record('ns/c', report({ instance: 'a', ready: true }), 1);
    expect(events).toHaveLength(3);
    s.live('ns/c', 2000);
    advance(1000);
    s.record('ns/c', report({ instance: 'a', ready: true }), 1);
    expect(events).toHaveLength(3);
    advance(3000);
    s.record('ns/c', report({ instance: 'a', ready: true }), 1);
    expect(events).toHaveLength(4);
  });

  it('forgets a connection and the bytes it held', () => {
    const { store: s } = clocked();
    s.record('ns/c', report(), 500);
    s.forget('ns/c');
    expect(s.hasReported('ns/c')).toBe(false);
    expect(s.live('ns/c', 1000)).toEqual([]);
    expect(s.bytes).toBe(0);
  });

  it('keeps at most maxInstances reports per connection, pushing out the one heard from longest ago', () => {
    const { store: s, advance, evicted } = clocked({ maxInstances: (c) => (c === 'ns/small' ? 3 : 10) });
    for (const name of ['w0', 'w1', 'w2', 'w3', 'w4']) {
      s.record('ns/small', report({ instance: name }), 10);
      advance(10);
    }
    s.record('ns/other', report({ instance: 'x' }), 10);
    expect(s.live('ns/small', 60_000).map((r) => r.instance)).toEqual(['w2', 'w3', 'w4']);
    expect(s.live('ns/other', 60_000).map((r) => r.instance)).toEqual(['x']);
    expect(evicted).toEqual([['ns/small', 'instances'], ['ns/small', 'instances']]);
    // A known instance reporting again takes no one's place.
    s.record('ns/small', report({ instance: 'w2', ready: true }), 10);
    expect(s.live('ns/small', 60_000)).toHaveLength(3);
    expect(s.bytes).toBe(40);
  });

  it('over maxBytes, takes the oldest report of the connection holding the most, never the one just recorded', () => {
    const { store: s, advance, evicted } = clocked({ maxBytes: 1000 });
    s.record('ns/quiet', report({ instance: 'q' }), 200);
    for (let i = 0; i < 6; i++) {
      advance(10);
      s.record('ns/loud', report({ instance: `l${i}` }), 200);
    }
    expect(s.bytes).toBeLessThanOrEqual(1000);
    expect(s.live('ns/quiet', 60_000).map((r) => r.instance)).toEqual(['q']);
    expect(s.live('ns/loud', 60_000).map((r) => r.instance)).toEqual(['l2', 'l3', 'l4', 'l5']);
    expect(evicted.every(([c, reason]) => c === 'ns/loud' && reason === 'memory')).toBe(true);
    // A report larger than the rest evicts others but is itself kept.
    s.record('ns/quiet', report({ instance: 'q' }), 900);
    expect(s.live('ns/quiet', 60_000).map((r) => r.instance)).toEqual(['q']);
    expect(s.bytes).toBeLessThanOrEqual(1000);
  });

  it.each([
    [1, 3],
    [2, 5],
    [10, 21],
  ])('admits %i replicas plus a surge pod and a draining pod per replica: %i instances', (replicas, expected) => {
    expect(instanceLimit(replicas)).toBe(expected);
  });
});
