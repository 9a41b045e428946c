import { describe, expect, it } from '@jest/globals';
import type { WorkerReport } from '../tunnel/operator-channel.js';
import { connectorRecordStatus } from './connector-status.js';
import type { TunnelConnector } from './types.js';

const NOW = new Date('2026-12-06T12:00:00Z');
const tcn = (status?: TunnelConnector['status']): TunnelConnector => ({
  apiVersion: 'underpass.dev/v1alpha1', kind: 'TunnelConnector', metadata: { name: 'dc1.site-a', namespace: 'team-a', generation: 1 },
  spec: { connection: 'dc1', connector: 'site-a' }, ...(status ? { status } : {}),
});
const report = (instance: string, names: string[]): WorkerReport => ({
  instance, version: '0.1.0', ready: true, draining: false, listenerFailures: [],
  connectors: names.map((name, i) => ({ name, session: `s${i}`, since: '2026-12-06T11:00:00.000Z', version: '0.1.0', address: '10.0.0.7:5000', unavailableMappings: [], hostname: 'host-1', serial: 'AB' })),
});
const cond = (s: TunnelConnector['status'], type: string): string | undefined => s?.conditions?.find((c) => c.type === type)?.status;

describe('TunnelConnector status from worker reports', () => {
  it.each([
    ['sessions on two workers: Connected, one entry per worker', [report('w1', ['site-a']), report('w0', ['site-a', 'other'])], 'True', 2, ['w0', 'w1']],
    ['only other connectors: not Connected', [report('w0', ['other'])], 'False', 0, []],
    ['no report at all: not Connected', [], 'False', 0, []],
  ])('%s', (_name, reports, connected, count, workers) => {
    const s = connectorRecordStatus(tcn(), reports, NOW);
    expect(cond(s, 'Connected')).toBe(connected);
    expect(s.sessionCount).toBe(count);
    expect(s.sessions?.map((x) => x.worker)).toEqual(workers);
    if (count > 0) expect([s.version, s.host]).toEqual(['0.1.0', 'host-1']);
  });

  it.each([
    ['no certificate recorded: Unknown', undefined, 'Unknown'],
    ['a certificate valid until tomorrow: True', { serial: 'AB', notAfter: '2026-12-07T12:00:00.000Z' }, 'True'],
    ['a certificate that expired: False', { serial: 'AB', notAfter: '2026-12-06T11:59:59.000Z' }, 'False'],
  ])('CertificateValid with %s', (_name, certificate, expected) => {
    expect(cond(connectorRecordStatus(tcn(certificate ? { certificate } : undefined), [], NOW), 'CertificateValid')).toBe(expected);
  });

  it('sets lastSeen when the last session goes, and is unchanged (no write) while nothing changes', () => {
    const up = connectorRecordStatus(tcn(), [report('w0', ['site-a'])], NOW);
    expect(up.lastSeen).toBeUndefined();
    expect(connectorRecordStatus(tcn(up), [report('w0', ['site-a'])], new Date(NOW.getTime() + 60_000))).toEqual(up);
    const later = new Date(NOW.getTime() + 120_000);
    const down = connectorRecordStatus(tcn(up), [], later);
    expect(down.lastSeen).toBe(later.toISOString());
    expect(connectorRecordStatus(tcn(down), [], new Date(later.getTime() + 60_000))).toEqual(down);
  });
});
