/**
 * The mesh in TunnelConnection status (docs/ha.md): which workers each
 * connector process holds, which it misses and since when, and Degraded.
 */
import { describe, expect, it } from '@jest/globals';
import type { ReportedConnector } from '../tunnel/operator-channel.js';
import { degradedCondition, meshOf, MESH_GRACE_MS, type TimedReport } from './mesh-status.js';
import type { MeshStatus } from './types.js';

const NOW = new Date('2026-12-10T12:00:00.000Z');
const T = NOW.getTime();
const MAX_AGE = 6_000;

const session = (name: string, hostname?: string): ReportedConnector =>
  ({ name, session: `s-${name}-${hostname}`, since: '2026-12-10T11:00:00.000Z', version: '0.1.0', address: '10.0.0.7:1', unavailableMappings: [], ...(hostname ? { hostname } : {}) });
const report = (instance: string, connectors: ReportedConnector[], o: { ageMs?: number; draining?: boolean } = {}): TimedReport =>
  ({ instance, version: '0.1.0', ready: true, draining: o.draining ?? false, connectors, listenerFailures: [], receivedAt: T - (o.ageMs ?? 0) });

describe('meshOf', () => {
  it('lists, per connector process, the workers it holds and those it misses', () => {
    const mesh = meshOf([
      report('w1', [session('site-a', 'a-1'), session('site-a', 'a-2')]),
      report('w2', [session('site-a', 'a-1')]),
      report('w3', [session('site-a', 'a-1')]),
    ], undefined, NOW, MAX_AGE);
    expect(mesh).toEqual({
      workers: ['w1', 'w2', 'w3'],
      connectors: [
        { name: 'site-a', host: 'a-1', workers: ['w1', 'w2', 'w3'], missing: [] },
        { name: 'site-a', host: 'a-2', workers: ['w1'], missing: ['w2', 'w3'], missingSince: NOW.toISOString() },
      ],
    });
  });

  it.each<[string, TimedReport[], string[]]>([
    ['a draining worker is not in the set, and nobody misses it', [report('w1', [session('c')]), report('w2', [], { draining: true })], ['w1']],
    ['a worker silent for longer than the set\'s age is not in it', [report('w1', [session('c')]), report('w2', [], { ageMs: MAX_AGE + 1 })], ['w1']],
  ])('%s', (_name, reports, workers) => {
    const mesh = meshOf(reports, undefined, NOW, MAX_AGE);
    expect(mesh.workers).toEqual(workers);
    expect(mesh.connectors).toEqual([{ name: 'c', workers, missing: [] }]);
  });

  it('keeps missingSince while the connector still misses a worker, and drops it once complete', () => {
    const before: MeshStatus = { workers: ['w1', 'w2'], connectors: [{ name: 'c', workers: ['w1'], missing: ['w2'], missingSince: '2026-12-10T11:59:00.000Z' }] };
    const still = meshOf([report('w1', [session('c')]), report('w2', [])], before, NOW, MAX_AGE);
    expect(still.connectors[0]!.missingSince).toBe('2026-12-10T11:59:00.000Z');
    const complete = meshOf([report('w1', [session('c')]), report('w2', [session('c')])], still, NOW, MAX_AGE);
    expect(complete.connectors[0]).toEqual({ name: 'c', workers: ['w1', 'w2'], missing: [] });
  });
});

describe('the Degraded condition', () => {
  const mesh = (missingSince?: string): MeshStatus => ({
    workers: ['w1', 'w2'],
    connectors: [
      { name: 'site-a', host: 'a-1', workers: ['w1', 'w2'], missing: [] },
      missingSince ? { name: 'site-a', host: 'a-2', workers: ['w1'], missing: ['w2'], missingSince } : { name: 'site-a', host: 'a-2', workers: ['w1', 'w2'], missing: [] },
    ],
  });
  it.each<[string, MeshStatus, string, string, RegExp]>([
    ['every connector holds every worker', mesh(), 'False', 'FullMesh', /each of 2 connector\(s\) has a session with each of 2 worker/],
    ['a connector is joining (within the grace period)', mesh(new Date(T - 2_000).toISOString()), 'False', 'Joining', /connector site-a \(a-2\) is joining w2/],
    ['a connector has missed a worker for longer than the grace period', mesh(new Date(T - MESH_GRACE_MS - 1).toISOString()), 'True', 'ConnectorsMissWorkers',
      /connector site-a \(a-2\) has no session with w2 \(since /],
    ['no worker has reported', { workers: [], connectors: [] }, 'False', 'NoWorkers', /no worker/],
    ['no connector is connected', { workers: ['w1'], connectors: [] }, 'False', 'NoConnectors', /no connector/],
  ])('%s', (_name, m, status, reason, message) => {
    const { condition } = degradedCondition(m, NOW);
    expect(condition).toMatchObject({ type: 'Degraded', status, reason });
    expect(condition.message).toMatch(message);
  });

  it('asks to be computed again when a joining connector reaches the grace period', () => {
    const { recheckMs } = degradedCondition(mesh(new Date(T - 2_000).toISOString()), NOW);
    expect(recheckMs).toBe(MESH_GRACE_MS - 2_000 + 1);
  });
});
