/**
 * The operator against a real kube-apiserver (+ controller-manager), running
 * with a non-admin identity bound to its own ClusterRole.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import type * as k8s from '@kubernetes/client-node';
import YAML from 'yaml';
import { Operator } from '../../operator/operator.js';
import { parseWorkerConfig } from '../../worker/config.js';
import { freePort, waitFor, sleep } from '../e2e/harness.js';
import { applicationMapping, installCrds, OPERATOR_NAMESPACE, operatorKubeconfig, startTestOperator, tunnelConnection } from './operator-fixtures.js';
import { startTestEnv, type TestEnv } from './testenv.js';

const NS = 'team-a';
let env: TestEnv;
let opKubeconfig: string;
let operator: Operator;

let reportPort = 0;

/** A stable report URL across restarts, as a Service gives in a cluster (it is part of the worker config). */
async function startOperator(identity = 'op-1'): Promise<Operator> {
  reportPort ||= await freePort();
  return startTestOperator(opKubeconfig, identity, { reportPort, reportGraceMs: 2_000, pkiDriftCheckMs: 2_000 });
}

/** Writes other than the leader renewing its Lease. */
const writes = async (op: Operator): Promise<Record<string, number>> => Object.fromEntries((await op.metrics.apiWrites.get()).values
  .filter((v) => v.labels.resource !== 'leases').map((v) => [`${v.labels.verb} ${v.labels.resource}`, v.value]));

async function getJson<T>(args: string[]): Promise<T> {
  return JSON.parse(await env.kubectlOk([...args, '-o', 'json'])) as T;
}

async function ownedResourceVersions(): Promise<Record<string, string>> {
  const list = await getJson<{ items: k8s.KubernetesObject[] }>(['get', 'deployments,services,configmaps,secrets,serviceaccounts,networkpolicies', '-n', NS, '-l', 'app.kubernetes.io/managed-by=underpass-operator']);
  return Object.fromEntries(list.items.map((o) => [`${o.kind}/${o.metadata!.name}`, o.metadata!.resourceVersion!]));
}

beforeAll(async () => {
  env = await startTestEnv();
  await installCrds(env);
  await env.kubectlOk(['create', 'namespace', NS]);
  opKubeconfig = await operatorKubeconfig(env);
  operator = await startOperator();
}, 180_000);

afterAll(async () => {
  await operator?.stop();
  await env?.stop();
});

describe('operator reconciles a TunnelConnection (real kube-apiserver, non-admin identity)', () => {
  it('creates the CA and worker Secrets, ConfigMap, ServiceAccount, Deployment, Services and NetworkPolicy, all owned by it', async () => {
    await env.kubectlOk(['apply', '-f', '-'], { input: `${tunnelConnection('dc1', NS, { replicas: 2, endpoint: { service: { type: 'LoadBalancer' }, hosts: ['dc1.tunnel.example.com'] } })}---\n${applicationMapping('payroll-db', NS, { connection: 'dc1', target: { side: 'Connector', host: 'db.internal', port: 5432 }, listen: { port: 15432 }, allowedSources: ['10.0.0.0/8'] })}` });
    const tc = await waitFor('finalizer and status', async () => {
      const t = await getJson<any>(['get', 'tc', 'dc1', '-n', NS]);
      return t.metadata.finalizers?.includes('underpass.dev/cleanup') && t.status?.conditions ? t : undefined;
    }, 20_000);
    const names = ['secret/dc1-worker-tls', 'configmap/dc1-worker', 'serviceaccount/dc1-worker', 'deployment/dc1-worker', 'service/dc1-tunnel', 'service/dc1-apps', 'networkpolicy/dc1-worker'];
    for (const n of names) {
      const obj = await waitFor(n, async () => {
        const r = await env.kubectl(['get', n, '-n', NS, '-o', 'json']);
        return r.code === 0 ? JSON.parse(r.stdout) : undefined;
      }, 15_000);
      expect(obj.metadata.ownerReferences).toEqual([expect.objectContaining({ kind: 'TunnelConnection', name: 'dc1', uid: tc.metadata.uid, controller: true })]);
    }
    const dep = await getJson<any>(['get', 'deployment', 'dc1-worker', '-n', NS]);
    expect(dep.spec.replicas).toBe(2);
    expect(dep.spec.strategy.rollingUpdate).toEqual({ maxUnavailable: 0, maxSurge: 1 });
    const pod = dep.spec.template.spec;
    expect(pod.securityContext).toMatchObject({ runAsNonRoot: true, seccompProfile: { type: 'RuntimeDefault' } });
    expect(pod.automountServiceAccountToken).toBe(false);
    expect(pod.containers[0].securityContext).toMatchObject({ readOnlyRootFilesystem: true, allowPrivilegeEscalation: false, capabilities: { drop: ['ALL'] } });
    expect(pod.containers[0].readinessProbe.httpGet.path).toBe('/readyz');
    expect(pod.containers[0].livenessProbe.httpGet.path).toBe('/healthz');
    const svc = await getJson<any>(['get', 'service', 'dc1-tunnel', '-n', NS]);
    expect(svc.spec).toMatchObject({ type: 'LoadBalancer', publishNotReadyAddresses: true });
    const apps = await getJson<any>(['get', 'service', 'dc1-apps', '-n', NS]);
    expect(apps.spec.ports.map((p: any) => p.port)).toEqual([15432]);
    const np = await getJson<any>(['get', 'networkpolicy', 'dc1-worker', '-n', NS]);
    expect(np.spec.ingress.find((r: any) => r.ports[0].port === 15432).from).toEqual([{ ipBlock: { cidr: '10.0.0.0/8' } }]);
    // The ConfigMap is a valid worker config (the same parser the worker uses).
    const cm = await getJson<any>(['get', 'configmap', 'dc1-worker', '-n', NS]);
    const config = parseWorkerConfig(YAML.parse(cm.data['worker.yaml']), '/etc/underpass/config/worker.yaml');
    expect(config.connection).toEqual({ namespace: NS, name: 'dc1' });
    expect(config.mappings.map((m) => m.name)).toEqual(['payroll-db']);
    // The worker certificate names the Service and the external host.
    const tls = await getJson<any>(['get', 'secret', 'dc1-worker-tls', '-n', NS]);
    const { X509Certificate } = await import('node:crypto');
    const cert = new X509Certificate(Buffer.from(tls.data['tls.crt'], 'base64'));
    expect(cert.subjectAltName).toMatch(/dc1-tunnel\.team-a\.svc/);
    expect(cert.subjectAltName).toMatch(/dc1\.tunnel\.example\.com/);
    expect(tc.status.conditions.find((c: any) => c.type === 'CertificatesReady').status).toBe('True');
  }, 60_000);

  it('keeps the connection CA key in its own namespace: the tenant namespace holds only what workers need (finding 10)', async () => {
    const tc = await getJson<any>(['get', 'tc', 'dc1', '-n', NS]);
    const caSecret = await waitFor('the CA Secret in underpass-system', async () => {
      const r = await env.kubectl(['get', 'secret', `ca.${NS}.dc1.${tc.metadata.uid}`, '-n', OPERATOR_NAMESPACE, '-o', 'json']);
      return r.code === 0 ? JSON.parse(r.stdout) : undefined;
    }, 10_000);
    expect(Object.keys(caSecret.data).sort()).toEqual(['ca.crt', 'ca.key', 'worker-ca.crt', 'worker.crt']);
    expect(caSecret.metadata.labels).toMatchObject({ 'underpass.dev/connection-namespace': NS, 'underpass.dev/connection': 'dc1', 'underpass.dev/connection-uid': tc.metadata.uid });
    // Everything a tenant who can read Secrets in team-a sees: no private key but the worker's.
    const secrets = await getJson<{ items: k8s.V1Secret[] }>(['get', 'secrets', '-n', NS]);
    const keys = secrets.items.flatMap((s) => Object.entries(s.data ?? {}).filter(([, v]) => Buffer.from(v, 'base64').toString().includes('PRIVATE KEY')).map(([k]) => `${s.metadata!.name}/${k}`));
    expect(keys).toEqual(['dc1-worker-tls/tls.key']);
    const tls = await getJson<any>(['get', 'secret', 'dc1-worker-tls', '-n', NS]);
    expect(Object.keys(tls.data).sort()).toEqual(['ca.crt', 'tls.crt', 'tls.key']);
    expect(tls.data['ca.crt']).toBe(caSecret.data['ca.crt']);
  });

  it('adopts the CA an older operator kept in the tenant namespace, deletes it there and records an event', async () => {
    const { createCA } = await import('../../tunnel/pki.js');
    const legacy = await createCA({ connection: { namespace: NS, name: 'old1' } });
    const b64 = (x: string): string => Buffer.from(x).toString('base64');
    // What an older operator left: <tc>-ca in the tenant namespace, holding the CA key.
    await env.kubectlOk(['apply', '-f', '-'], { input: JSON.stringify({ apiVersion: 'v1', kind: 'Secret', metadata: { name: 'old1-ca', namespace: NS, labels: { 'app.kubernetes.io/managed-by': 'underpass-operator' } }, data: { 'ca.crt': b64(legacy.certPem), 'ca.key': b64(legacy.keyPem) } }) });
    await env.kubectlOk(['apply', '-f', '-'], { input: tunnelConnection('old1', NS) });
    await waitFor('the old CA Secret deleted', async () => (await env.kubectl(['get', 'secret', 'old1-ca', '-n', NS])).code !== 0, 15_000);
    const tc = await getJson<any>(['get', 'tc', 'old1', '-n', NS]);
    const moved = await getJson<any>(['get', 'secret', `ca.${NS}.old1.${tc.metadata.uid}`, '-n', OPERATOR_NAMESPACE]);
    expect(Buffer.from(moved.data['ca.crt'], 'base64').toString()).toBe(legacy.certPem);
    expect(Buffer.from(moved.data['ca.key'], 'base64').toString()).toBe(legacy.keyPem);
    const tls = await waitFor('worker Secret', async () => {
      const r = await env.kubectl(['get', 'secret', 'old1-worker-tls', '-n', NS, '-o', 'json']);
      return r.code === 0 ? JSON.parse(r.stdout) : undefined;
    }, 10_000);
    // Connectors enrolled under the old CA keep working: the workers still trust it.
    expect(Buffer.from(tls.data['ca.crt'], 'base64').toString()).toBe(legacy.certPem);
    const events = await getJson<{ items: Array<{ reason: string; message: string; involvedObject: { name: string } }> }>(['get', 'events', '-n', NS]);
    expect(events.items.find((e) => e.involvedObject.name === 'old1' && e.reason === 'CAMigrated')?.message).toContain('old1-ca');
    await env.kubectlOk(['delete', 'tc', 'old1', '-n', NS]);
    await waitFor('its CA Secret removed with it', async () => (await env.kubectl(['get', 'secret', `ca.${NS}.old1.${tc.metadata.uid}`, '-n', OPERATOR_NAMESPACE])).code !== 0, 15_000);
  }, 40_000);

  it('repairs a worker Secret someone deleted, without listing tenant Secrets', async () => {
    await env.kubectlOk(['delete', 'secret', 'dc1-worker-tls', '-n', NS]);
    await waitFor('dc1-worker-tls written again', async () => (await env.kubectl(['get', 'secret', 'dc1-worker-tls', '-n', NS])).code === 0, 20_000);
  }, 30_000);

  it('follows changes to replicas and mappings', async () => {
    await env.kubectlOk(['patch', 'tc', 'dc1', '-n', NS, '--type=merge', '-p', '{"spec":{"replicas":3}}']);
    await env.kubectlOk(['apply', '-f', '-'], { input: applicationMapping('reports', NS, { connection: 'dc1', target: { side: 'Connector', host: 'reports.internal', port: 443 }, listen: { port: 16443 } }) });
    await waitFor('replicas 3', async () => (await getJson<any>(['get', 'deployment', 'dc1-worker', '-n', NS])).spec.replicas === 3, 10_000);
    await waitFor('both mappings in the ConfigMap', async () => {
      const cm = await getJson<any>(['get', 'configmap', 'dc1-worker', '-n', NS]);
      return cm.data['worker.yaml'].includes('reports') && cm.data['worker.yaml'].includes('payroll-db');
    }, 10_000);
    await waitFor('apps Service port 16443', async () => (await getJson<any>(['get', 'service', 'dc1-apps', '-n', NS])).spec.ports.length === 2, 10_000);
    await env.kubectlOk(['delete', 'am', 'reports', '-n', NS]);
    await waitFor('mapping removed', async () => !(await getJson<any>(['get', 'configmap', 'dc1-worker', '-n', NS])).data['worker.yaml'].includes('reports'), 10_000);
  }, 40_000);

  it('reports mapping problems in ApplicationMapping status: port conflict, missing connection', async () => {
    await env.kubectlOk(['apply', '-f', '-'], { input: `${applicationMapping('late-db', NS, { connection: 'dc1', target: { side: 'Connector', host: 'other.internal', port: 5432 }, listen: { port: 15432 } })}---\n${applicationMapping('orphan', NS, { connection: 'nope', target: { side: 'Cluster', host: 'x.default.svc', port: 80 }, listen: { port: 18080 } })}` });
    const late = await waitFor('late-db status', async () => (await getJson<any>(['get', 'am', 'late-db', '-n', NS])).status?.conditions?.[0], 15_000);
    expect(late).toMatchObject({ type: 'Ready', status: 'False', reason: 'PortConflict' });
    expect(late.message).toMatch(/payroll-db/);
    const orphan = await waitFor('orphan status', async () => (await getJson<any>(['get', 'am', 'orphan', '-n', NS])).status?.conditions?.[0], 15_000);
    expect(orphan).toMatchObject({ status: 'False', reason: 'ConnectionNotFound' });
    const ok = (await getJson<any>(['get', 'am', 'payroll-db', '-n', NS])).status;
    expect(ok.endpoint).toBe('dc1-apps.team-a.svc:15432');
    const table = await env.kubectlOk(['get', 'am', '-n', NS]);
    expect(table).toMatch(/late-db\s+dc1\s+Connector/);
    await env.kubectlOk(['delete', 'am', 'late-db', 'orphan', '-n', NS]);
  }, 40_000);

  it('writes nothing when a resync finds everything unchanged', async () => {
    await sleep(2_500); // past the report grace period, so status is final
    await operator.idle();
    const rvBefore = await ownedResourceVersions();
    const before = await writes(operator);
    // Every key again, twice (what a periodic resync does).
    for (let i = 0; i < 2; i++) {
      await sleep(11_000 / 2);
      await operator.idle();
    }
    expect(await writes(operator)).toEqual(before);
    expect(await ownedResourceVersions()).toEqual(rvBefore);
  }, 40_000);

  it('restarts without churn: a new operator instance writes no owned object and keeps condition times', async () => {
    const tcBefore = await getJson<any>(['get', 'tc', 'dc1', '-n', NS]);
    const rvBefore = await ownedResourceVersions();
    await operator.stop();
    operator = await startOperator('op-2');
    await sleep(3_000);
    await operator.idle();
    expect(await ownedResourceVersions()).toEqual(rvBefore);
    const tcAfter = await getJson<any>(['get', 'tc', 'dc1', '-n', NS]);
    expect(tcAfter.status.conditions.map((c: any) => c.lastTransitionTime)).toEqual(tcBefore.status.conditions.map((c: any) => c.lastTransitionTime));
  }, 60_000);

  it('on delete removes everything it created and releases the finalizer', async () => {
    await env.kubectlOk(['delete', 'tc', 'dc1', '-n', NS, '--wait=true', '--timeout=30s']);
    await waitFor('owned objects gone', async () => Object.keys(await ownedResourceVersions()).length === 0, 20_000);
    const am = await waitFor('payroll-db → ConnectionNotFound', async () => {
      const c = (await getJson<any>(['get', 'am', 'payroll-db', '-n', NS])).status?.conditions?.[0];
      return c?.reason === 'ConnectionNotFound' ? c : undefined;
    }, 15_000);
    expect(am.status).toBe('False');
  }, 60_000);
});
