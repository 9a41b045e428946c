import { describe, it, expect } from '@jest/globals';
import type { ReportedConnector, WorkerReport } from '../tunnel/operator-channel.js';
import { MAX_CONDITION_MESSAGE, setConditions } from './conditions.js';
import { connectorsOf, MAX_STATUS_CONNECTORS } from './status.js';

const session = (name: string, since: string, overrides: Partial<ReportedConnector> = {}): ReportedConnector =>
  ({ name, session: `s-${name}-${since}`, since, version: '0.1.0', address: '10.0.0.7:1', unavailableMappings: [], ...overrides });
const report = (instance: string, connectors: ReportedConnector[]): WorkerReport =>
  ({ instance, version: '0.1.0', ready: true, draining: false, connectors, listenerFailures: [] });

describe('connectorsOf', () => {
  it('lists one entry per connector and worker, sorted, the newest session when a connector has several on one worker', () => {
    const out = connectorsOf([
      report('w1', [session('site-b', '2026-12-06T10:00:00.000Z'), session('site-a', '2026-12-06T10:00:00.000Z')]),
      report('w0', [session('site-a', '2026-12-06T09:00:00.000Z'), session('site-a', '2026-12-06T11:00:00.000Z', { address: '10.0.0.8:2' })]),
    ]);
    expect(out.map((c) => `${c.name}@${c.worker}`)).toEqual(['site-a@w0', 'site-a@w1', 'site-b@w1']);
    expect(out[0]).toMatchObject({ since: '2026-12-06T11:00:00.000Z', address: '10.0.0.8:2' });
  });

  it('never lists more than the CRD allows, whatever the workers report', () => {
    const many = Array.from({ length: 5 }, (_, w) => report(`w${w}`, Array.from({ length: 256 }, (_, i) => session(`c-${i}`, '2026-12-06T10:00:00.000Z'))));
    expect(connectorsOf(many)).toHaveLength(MAX_STATUS_CONNECTORS);
  });
});

describe('setConditions', () => {
  it('cuts a message over the CRD limit so the status write cannot fail on it', () => {
    const [c] = setConditions(undefined, [{ type: 'Ready', status: 'False', reason: 'RefusedByConnector', message: 'x'.repeat(MAX_CONDITION_MESSAGE + 100) }], 1, new Date(0));
    expect(c!.message).toHaveLength(MAX_CONDITION_MESSAGE);
  });
});
