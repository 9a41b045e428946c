/**
 * Which mappings a connection serves, and what the workers and the
 * NetworkPolicy get of each (the operator's side of issue 15 finding 9).
 */
import { describe, expect, it } from '@jest/globals';
import { DEFAULT_CLUSTER_TARGET_POLICY } from './cluster-targets.js';
import { resolveMappings, servedMappings, type ResolutionPolicy } from './mapping-resolution.js';
import type { ApplicationMapping, ApplicationMappingSpec } from './types.js';

let created = 0;
function am(name: string, spec: Partial<ApplicationMappingSpec>): ApplicationMapping {
  created++;
  return {
    apiVersion: 'underpass.dev/v1alpha1', kind: 'ApplicationMapping',
    metadata: { name, namespace: 'team-a', creationTimestamp: new Date(Date.UTC(2026, 0, 1, 0, 0, created)) },
    spec: { connection: 'dc1', target: { side: 'Connector', host: 'db.internal', port: 5432 }, listen: { port: 15432 }, ...spec },
  };
}

const policy: ResolutionPolicy = { clusterTargets: DEFAULT_CLUSTER_TARGET_POLICY, apiServer: ['10.96.0.1'] };

describe('Connector-side sources: what the worker checks and what the NetworkPolicy admits', () => {
  it.each([
    ['neither list: the worker checks nothing, the policy admits the own namespace', {}, [], { cidrs: [] }],
    ['allowedSources only: both layers check the blocks', { allowedSources: ['10.0.0.0/8'] }, ['10.0.0.0/8'], { cidrs: ['10.0.0.0/8'] }],
    ['allowedNamespaces only: the policy alone decides', { allowedNamespaces: { names: ['team-b'] } }, [], { cidrs: [], namespaces: { names: ['team-b'] } }],
    ['both: the policy admits either, and the worker (blind to namespaces) must not narrow it', { allowedSources: ['10.0.0.0/8'], allowedNamespaces: { selector: {} } }, [], { cidrs: ['10.0.0.0/8'], namespaces: { selector: {} } }],
  ] as Array<[string, Partial<ApplicationMappingSpec>, string[], unknown]>)('%s', (_name, spec, workerSources, sources) => {
    const [v] = resolveMappings([am('db', spec)], policy);
    expect(v!.mapping!.allowedSources).toEqual(workerSources);
    expect(v!.sources).toEqual(sources);
  });
});

describe('Cluster-side targets', () => {
  it.each([
    ['a Service of the mapping\'s namespace is served and placed there', 'payroll', { ok: true, target: { kind: 'namespace', namespace: 'team-a', service: 'payroll' } }],
    ['another namespace is TargetNotAllowed', 'payroll.team-b.svc', { ok: false, reason: /namespace team-b/ }],
    ['the API server\'s ClusterIP is TargetNotAllowed', '10.96.0.1', { ok: false, reason: /Kubernetes API server/ }],
    ['the metadata address is TargetNotAllowed', '169.254.169.254', { ok: false, reason: /link-local/ }],
  ] as Array<[string, string, { ok: boolean; target?: unknown; reason?: RegExp }]>)('%s', (_name, host, want) => {
    const [v] = resolveMappings([am('api', { target: { side: 'Cluster', host, port: 8080 }, listen: { port: 18080 } })], policy);
    if (want.ok) {
      expect(v!.problem).toBeUndefined();
      expect(v!.clusterTarget).toEqual(want.target);
    } else {
      expect(v!.mapping).toBeUndefined();
      expect(v!.problem?.reason).toBe('TargetNotAllowed');
      expect(v!.problem?.message).toMatch(want.reason!);
    }
  });

  it('a refused target does not hold its listener: a newer mapping on the same port is served', () => {
    const verdicts = resolveMappings([
      am('old', { target: { side: 'Cluster', host: 'x.team-b.svc', port: 80 }, listen: { port: 18080 } }),
      am('new', { target: { side: 'Cluster', host: 'x', port: 80 }, listen: { port: 18080 } }),
    ], policy);
    expect(verdicts.map((v) => [v.am.metadata.name, v.problem?.reason ?? 'served'])).toEqual([['old', 'TargetNotAllowed'], ['new', 'served']]);
    expect(servedMappings(verdicts).map((s) => s.mapping.name)).toEqual(['new']);
  });
});
