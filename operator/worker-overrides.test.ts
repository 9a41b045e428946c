/**
 * Which spec.worker settings the operator honours, what the Deployment is
 * built from, and the condition that names what was ignored.
 */
import { describe, expect, it } from '@jest/globals';
import * as desired from './desired.js';
import { tunnelConnectionStatus } from './status.js';
import type { TunnelConnection, TunnelConnectionSpec } from './types.js';
import { DEFAULT_OVERRIDE_POLICY, effectiveWorker, withEffectiveWorker, type OverridePolicy } from './worker-overrides.js';

function tc(worker: Partial<TunnelConnectionSpec['worker']>): TunnelConnection {
  return {
    apiVersion: 'underpass.dev/v1alpha1', kind: 'TunnelConnection',
    metadata: { name: 'dc1', namespace: 'team-a', uid: 'u', generation: 1 },
    spec: { replicas: 1, endpoint: { service: { type: 'ClusterIP', port: 443 } }, certificates: { duration: '720h', renewBefore: '240h' }, worker: { drainTimeout: '30s', ...worker } },
  };
}

const image = 'registry.example.test/underpass:evil';
const tolerations = [{ key: 'node-role.kubernetes.io/control-plane', operator: 'Exists', effect: 'NoSchedule' }];
const nodeSelector = { 'node-role.kubernetes.io/control-plane': '' };
const resources = { limits: { memory: '256Mi' } };
const all = { image, tolerations, nodeSelector, resources };

describe('effectiveWorker', () => {
  it.each<[string, OverridePolicy, string[], Partial<TunnelConnectionSpec['worker']>]>([
    ['by default only resources are honoured', DEFAULT_OVERRIDE_POLICY,
      ['spec.worker.image (no image override is allowed)', 'spec.worker.nodeSelector', 'spec.worker.tolerations'], { resources }],
    ['nothing at all with fields [] and no image prefix', { fields: [], imagePrefixes: [] },
      ['spec.worker.image (no image override is allowed)', 'spec.worker.resources', 'spec.worker.nodeSelector', 'spec.worker.tolerations'], {}],
    ['an image under an allowed prefix', { fields: ['resources'], imagePrefixes: ['registry.example.test/'] },
      ['spec.worker.nodeSelector', 'spec.worker.tolerations'], { image, resources }],
    ['an image under another prefix', { fields: ['resources'], imagePrefixes: ['ghcr.io/underpass/'] },
      ['spec.worker.image (allowed images start with ghcr.io/underpass/)', 'spec.worker.nodeSelector', 'spec.worker.tolerations'], { resources }],
    ['everything when the admin allows everything', { fields: ['resources', 'nodeSelector', 'tolerations'], imagePrefixes: ['*'] }, [], all],
  ])('%s', (_name, policy, ignored, kept) => {
    const e = effectiveWorker(tc(all), policy);
    expect(e.ignored).toEqual(ignored);
    expect(e.worker).toEqual({ drainTimeout: '30s', ...kept });
  });

  it('the Deployment is built without what is ignored: the operator\'s image, no tolerations, no nodeSelector', () => {
    const t = tc(all);
    const pod = desired.deployment(withEffectiveWorker(t, effectiveWorker(t, DEFAULT_OVERRIDE_POLICY)), [], { workerImage: 'ghcr.io/underpass/underpass:0.1.0' }).spec!.template.spec!;
    expect(pod.containers[0]!.image).toBe('ghcr.io/underpass/underpass:0.1.0');
    expect(pod.tolerations).toBeUndefined();
    expect(pod.nodeSelector).toBeUndefined();
    expect(pod.containers[0]!.resources).toEqual(resources);
  });

  it('a connection without overrides is passed on unchanged (no copy, no rollout)', () => {
    const t = tc({});
    expect(withEffectiveWorker(t, effectiveWorker(t, DEFAULT_OVERRIDE_POLICY))).toBe(t);
  });
});

describe('the OverridesAccepted condition', () => {
  const status = (ignoredOverrides: string[]) => tunnelConnectionStatus({
    tc: tc({}), verdicts: [], deployment: undefined, tunnelService: undefined, reports: [], reportsKnown: true,
    pki: { ok: true, notAfter: new Date(0), renewalTime: new Date(0) }, ignoredOverrides, now: new Date(0),
  }).conditions!.find((c) => c.type === 'OverridesAccepted');

  it.each([
    ['True when nothing is ignored', [], { status: 'True', reason: 'Accepted' }],
    ['False naming every ignored setting', ['spec.worker.image (no image override is allowed)', 'spec.worker.tolerations'], {
      status: 'False', reason: 'OverrideNotAllowed',
      message: 'ignored, not allowed by the cluster admin: spec.worker.image (no image override is allowed), spec.worker.tolerations; the workers run with the operator\'s defaults for them',
    }],
  ])('%s', (_name, ignored, want) => {
    expect(status(ignored)).toMatchObject(want);
  });
});
