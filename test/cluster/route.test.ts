/**
 * Where the route.openshift.io API exists, each TunnelConnection gets a
 * passthrough Route. The real API server serves a stand-in Route CRD (same
 * group, version, kind), so the operator's discovery sees the group.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import type { Operator } from '../../operator/operator.js';
import { waitFor } from '../e2e/harness.js';
import { installCrds, operatorKubeconfig, startTestOperator, tunnelConnection } from './operator-fixtures.js';
import { startTestEnv, type TestEnv } from './testenv.js';

const ROUTE_CRD = `apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: routes.route.openshift.io}
spec:
  group: route.openshift.io
  scope: Namespaced
  names: {plural: routes, singular: route, kind: Route, listKind: RouteList}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
`;

let env: TestEnv;
let operator: Operator;

beforeAll(async () => {
  env = await startTestEnv();
  await installCrds(env);
  await env.kubectlOk(['apply', '-f', '-'], { input: ROUTE_CRD });
  await env.waitForCrds(['routes.route.openshift.io']);
  await env.kubectlOk(['create', 'namespace', 'team-r']);
  operator = await startTestOperator(await operatorKubeconfig(env), 'op-route');
}, 180_000);

afterAll(async () => {
  await operator?.stop();
  await env?.stop();
});

describe('OpenShift Route (route.openshift.io served)', () => {
  it('creates a passthrough Route to the tunnel Service, owned by the TunnelConnection, and names its host in the worker certificate', async () => {
    await env.kubectlOk(['apply', '-f', '-'], { input: tunnelConnection('dc7', 'team-r', { endpoint: { service: { type: 'ClusterIP' }, route: { host: 'dc7.apps.example.com' } } }) });
    const route = await waitFor('Route', async () => {
      const r = await env.kubectl(['get', 'routes.route.openshift.io', 'dc7-tunnel', '-n', 'team-r', '-o', 'json']);
      return r.code === 0 ? JSON.parse(r.stdout) : undefined;
    }, 20_000);
    expect(route.spec).toMatchObject({ host: 'dc7.apps.example.com', to: { kind: 'Service', name: 'dc7-tunnel' }, tls: { termination: 'passthrough' } });
    expect(route.metadata.ownerReferences[0]).toMatchObject({ kind: 'TunnelConnection', name: 'dc7' });
    const tc = JSON.parse(await env.kubectlOk(['get', 'tc', 'dc7', '-n', 'team-r', '-o', 'json']));
    expect(tc.status.endpoint).toBe('wss://dc7.apps.example.com:443');
    const secret = JSON.parse(await env.kubectlOk(['get', 'secret', 'dc7-worker-tls', '-n', 'team-r', '-o', 'json']));
    const { X509Certificate } = await import('node:crypto');
    expect(new X509Certificate(Buffer.from(secret.data['tls.crt'], 'base64')).subjectAltName).toMatch(/dc7\.apps\.example\.com/);
  }, 60_000);

  it('writes nothing to the Route (or anything else) when a resync finds it unchanged', async () => {
    const writes = async (): Promise<number> => (await operator.metrics.apiWrites.get()).values.filter((v) => v.labels.resource !== 'leases').reduce((a, v) => a + v.value, 0);
    await new Promise((r) => setTimeout(r, 1_000));
    await operator.idle();
    const before = await writes();
    await new Promise((r) => setTimeout(r, 11_000)); // one periodic resync
    await operator.idle();
    expect(await writes()).toBe(before);
  }, 30_000);

  it('removes the Route with the TunnelConnection', async () => {
    await env.kubectlOk(['delete', 'tc', 'dc7', '-n', 'team-r', '--wait=true', '--timeout=30s']);
    const r = await env.kubectl(['get', 'routes.route.openshift.io', 'dc7-tunnel', '-n', 'team-r']);
    expect(r.code).not.toBe(0);
  }, 40_000);
});
