import { describe, it, expect } from '@jest/globals';
import { largestReport } from './testing/largest-report.js';
import {
  answerEnvelopeSchema, answerMappingsSchema, MAX_REPORT_BYTES, REPORT_LIMITS, reportPath, reportText, workerReportSchema,
  type ReportedConnector, type WorkerReport,
} from './operator-channel.js';
import { formatPath } from './config-load.js';

function base(overrides: Partial<WorkerReport> = {}): WorkerReport {
  return { instance: 'dc1-worker-0', version: '0.1.0', ready: true, draining: false, connectors: [], listenerFailures: [], ...overrides };
}

function session(i: number, overrides: Partial<ReportedConnector> = {}): ReportedConnector {
  return { name: `site-${i}`, session: `s-${i}`, since: '2026-12-06T10:00:00.000Z', version: '0.1.0', address: '10.0.0.7:51234', unavailableMappings: [], ...overrides };
}

function firstProblem(r: unknown): string | undefined {
  const result = workerReportSchema.safeParse(r);
  return result.success ? undefined : formatPath(result.error.issues[0]!.path);
}

describe('the operator channel contract', () => {
  it('builds the report path from a connection id', () => {
    expect(reportPath({ namespace: 'team-a', name: 'dc1' })).toBe('/v1/connections/team-a/dc1/report');
  });

  it('accepts the largest report its limits allow, and that report fits MAX_REPORT_BYTES with little to spare', () => {
    const report = largestReport();
    expect(firstProblem(report)).toBeUndefined();
    const bytes = Buffer.byteLength(JSON.stringify(report));
    expect(bytes).toBeLessThanOrEqual(MAX_REPORT_BYTES);
    expect(bytes).toBeGreaterThan(MAX_REPORT_BYTES * 0.9);
  });

  it.each<[string, () => unknown, string]>([
    ['a 65-character worker version', () => base({ version: 'v'.repeat(65) }), 'version'],
    ['a version with a space', () => base({ version: '0.1.0 beta' }), 'version'],
    ['one session too many', () => base({ connectors: Array.from({ length: REPORT_LIMITS.sessions + 1 }, (_, i) => session(i)) }), 'connectors'],
    ['a 65-character connector version', () => base({ connectors: [session(0, { version: 'v'.repeat(65) })] }), 'connectors[0].version'],
    ['a 65-character address', () => base({ connectors: [session(0, { address: '1'.repeat(65) })] }), 'connectors[0].address'],
    ['a connector name that is not a DNS label', () => base({ connectors: [session(0, { name: 'Site A' })] }), 'connectors[0].name'],
    ['an unknown mapping state', () => base({ connectors: [session(0, { unavailableMappings: [{ name: 'db', state: 'Odd' as never }] })] }), 'connectors[0].unavailableMappings[0].state'],
    ['a 257-character message', () => base({ listenerFailures: [{ mapping: 'db', message: 'x'.repeat(257) }] }), 'listenerFailures[0].message'],
    ['a control character in a message', () => base({ listenerFailures: [{ mapping: 'db', message: 'a\u0000b' }] }), 'listenerFailures[0].message'],
    ['a lone surrogate in a message', () => base({ listenerFailures: [{ mapping: 'db', message: 'a\ud800b' }] }), 'listenerFailures[0].message'],
    ['one unavailable entry too many over all sessions', () => {
      const r = largestReport('w');
      r.connectors[0]!.unavailableMappings.push({ name: 'one-more', state: 'Failed' });
      return r;
    }, 'connectors'],
    ['messages over the total budget', () => base({
      listenerFailures: Array.from({ length: REPORT_LIMITS.messageCharsTotal / REPORT_LIMITS.messageChars + 1 }, (_, i) => ({ mapping: `m${i}`, message: 'x'.repeat(REPORT_LIMITS.messageChars) })),
    }), 'connectors'],
  ])('refuses %s, naming the field', (_name, make, field) => {
    expect(firstProblem(make())).toBe(field);
  });

  it('drops unknown report fields so newer workers can report more', () => {
    expect(workerReportSchema.parse({ ...base(), extra: 1 })).toEqual(base());
  });

  it.each([
    ['short text unchanged', 'listen EADDRINUSE', 'listen EADDRINUSE'],
    ['control characters become spaces', 'a\nb\u0007c', 'a b c'],
    ['a lone surrogate becomes a space', 'a\udc00b', 'a b'],
    ['long text is cut with an ellipsis', 'x'.repeat(300), `${'x'.repeat(REPORT_LIMITS.messageChars - 1)}…`],
    ['an emoji across the cut is left out whole', `${'x'.repeat(REPORT_LIMITS.messageChars - 2)}😀xx`, `${'x'.repeat(REPORT_LIMITS.messageChars - 2)}…`],
  ])('reportText: %s', (_name, input, expected) => {
    expect(reportText(input)).toBe(expected);
    expect(reportTextValid(reportText(input))).toBe(true);
  });

  it('reads an answer envelope: unknown fields ignored, admission checked, mappings checked on their own', () => {
    const envelope = answerEnvelopeSchema.parse({ mappings: [{ name: 'db', future: true }], admission: { connectors: ['site-a'] }, report: { accepted: true }, later: 1 });
    expect(envelope).toEqual({ mappings: [{ name: 'db', future: true }], admission: { connectors: ['site-a'] }, report: { accepted: true } });
    expect(answerMappingsSchema.safeParse(envelope.mappings).success).toBe(false);
    expect(answerEnvelopeSchema.safeParse({ mappings: [], admission: { connectors: ['Not A Label'] } }).success).toBe(false);
    expect(answerEnvelopeSchema.parse({ mappings: [] })).toEqual({ mappings: [] });
  });
});

function reportTextValid(text: string): boolean {
  return workerReportSchema.safeParse(base({ listenerFailures: [{ mapping: 'db', message: text }] })).success;
}
