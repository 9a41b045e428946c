import { describe, it, expect } from '@jest/globals';
import { MAX_REPORT_BYTES, REPORT_LIMITS, workerReportSchema, type ReportedConnector, type WorkerReport } from '../tunnel/operator-channel.js';
import { fitReport } from './status.js';

/** A small seeded generator (mulberry32): the same inputs on every run. */
function random(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const PIECES = ['x', 'é', '€', '😀', '\n', '\u0000', '\ud800', '"', '\\', ' '];

function text(rnd: () => number, maxLength: number): string {
  const n = Math.floor(rnd() * maxLength);
  let out = '';
  while (out.length < n) out += PIECES[Math.floor(rnd() * PIECES.length)];
  return out;
}

function session(i: number, entries: number, rnd: () => number, messageLength: number): ReportedConnector {
  return {
    name: `site-${i}`, session: `5e55-${i}`, since: '2026-12-06T10:00:00.000Z', version: '0.1.0', address: `10.0.${i % 250}.7:51234`,
    unavailableMappings: Array.from({ length: entries }, (_, j) => ({
      name: `m-${j}`, state: 'Refused' as const, reason: 'NotAllowed', message: text(rnd, messageLength),
    })),
  };
}

function raw(connectors: ReportedConnector[], failures = 0, rnd = random(1), messageLength = 0): WorkerReport {
  return {
    instance: 'dc1-worker-0', version: '0.1.0', ready: true, draining: false, connectors,
    listenerFailures: Array.from({ length: failures }, (_, i) => ({ mapping: `f-${i}`, message: text(rnd, messageLength) })),
  };
}

describe('fitReport', () => {
  it('leaves a report within the limits as it is, with nothing dropped', () => {
    const r = raw([session(0, 2, random(1), 0)], 1);
    r.connectors[0]!.unavailableMappings[0]!.message = 'target 10.0.0.5:5432 is outside the allow list';
    r.listenerFailures[0]!.message = 'listen EADDRINUSE: address already in use 0.0.0.0:15432';
    expect(fitReport(r)).toEqual({ report: r, dropped: {} });
  });

  it.each<[string, () => WorkerReport, Record<string, number>]>([
    ['300 sessions keep the first 256', () => raw(Array.from({ length: 300 }, (_, i) => session(i, 0, random(i), 0))), { sessions: 44 }],
    ['4 sessions refusing 1000 mappings each keep 1024 entries in all', () => raw(Array.from({ length: 4 }, (_, i) => session(i, 1000, random(i), 0))), { unavailableMappings: 2976 }],
    ['200 messages of 1024 characters are shortened, then left out past the budget',
      () => ({ ...raw([]), listenerFailures: Array.from({ length: 200 }, (_, i) => ({ mapping: `f-${i}`, message: 'y'.repeat(1024) })) }),
      { messages: 200 }],
  ])('%s and counts what it left out', (_name, make, dropped) => {
    const built = fitReport(make());
    expect(built.problem).toBeUndefined();
    expect(built.dropped).toEqual(dropped);
    expect(built.report.dropped).toEqual(dropped);
    expect(workerReportSchema.safeParse(built.report).success).toBe(true);
  });

  it.each(Array.from({ length: 12 }, (_, seed) => [seed]))('always gives a report the operator accepts, within MAX_REPORT_BYTES (random input %i)', (seed) => {
    const rnd = random(seed + 100);
    const sessions = Math.floor(rnd() * 300);
    const connectors = Array.from({ length: sessions }, (_, i) => session(i, Math.floor(rnd() * 12), rnd, 300));
    const input = raw(connectors, Math.floor(rnd() * 1100), rnd, 300);
    const built = fitReport(input);
    expect(built.problem).toBeUndefined();
    const check = workerReportSchema.safeParse(built.report);
    expect(check.success ? 'valid' : check.error.issues[0]).toBe('valid');
    expect(Buffer.byteLength(JSON.stringify(built.report))).toBeLessThanOrEqual(MAX_REPORT_BYTES);
    const kept = built.report.connectors.reduce((n, c) => n + c.unavailableMappings.length, 0);
    const given = input.connectors.slice(0, REPORT_LIMITS.sessions).reduce((n, c) => n + c.unavailableMappings.length, 0);
    expect(kept + (built.dropped.unavailableMappings ?? 0)).toBe(given);
    expect(built.report.connectors.length + (built.dropped.sessions ?? 0)).toBe(sessions);
  });

  it('falls back to sessions without their detail when the detail cannot be made valid', () => {
    const r = raw([session(0, 1, random(1), 0)]);
    r.connectors[0]!.unavailableMappings[0]!.name = 'Not A Label';
    const built = fitReport(r);
    expect(built.problem).toContain('connectors[0].unavailableMappings[0].name');
    expect(built.report.connectors).toEqual([{ ...r.connectors[0], unavailableMappings: [] }]);
    expect(workerReportSchema.safeParse(built.report).success).toBe(true);
  });

  it('falls back to the worker alone when a session itself is invalid', () => {
    const r = raw([session(0, 0, random(1), 0)]);
    r.connectors[0]!.version = 'has spaces in it';
    const built = fitReport(r);
    expect(built.report.connectors).toEqual([]);
    expect(built.report.dropped).toMatchObject({ sessions: 1 });
    expect(workerReportSchema.safeParse(built.report).success).toBe(true);
  });
});
