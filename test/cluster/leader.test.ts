/**
 * Two operator processes against one API server: only the Lease holder
 * writes, and points the report Service's EndpointSlice at itself; both are
 * Ready (leader and standby). Kill the leader (SIGKILL, no release) and the
 * standby takes over once the lease expires, and the slice follows it.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { freePort, Proc, waitFor, waitHttp } from '../e2e/harness.js';
import { installCrds, OPERATOR_NAMESPACE, operatorKubeconfig, tunnelConnection } from './operator-fixtures.js';
import { startTestEnv, type TestEnv } from './testenv.js';

const NS = 'team-b';
const REPORT_SERVICE = 'underpass-operator';
let env: TestEnv;
const ops: Array<{ proc: Proc; admin: number; id: string; ip: string }> = [];

async function readyz(admin: number): Promise<{ status: number; body: string }> {
  try {
    const res = await fetch(`http://127.0.0.1:${admin}/readyz`);
    return { status: res.status, body: await res.text() };
  } catch {
    return { status: 0, body: '' };
  }
}

const isLeader = async (o: { admin: number }): Promise<boolean> => (await readyz(o.admin)).body === 'ready (leader)\n';

/** The address the report Service's EndpointSlice names. */
async function sliceAddress(): Promise<string | undefined> {
  const r = await env.kubectl(['get', 'endpointslice', `${REPORT_SERVICE}-leader`, '-n', OPERATOR_NAMESPACE, '-o', 'jsonpath={.endpoints[0].addresses[0]}']);
  return r.code === 0 ? r.stdout : undefined;
}

/** Writes other than Lease renewals, from the operator's own counter. */
async function objectWrites(admin: number): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${admin}/metrics`)).text();
  return text.split('\n').filter((l) => l.startsWith('underpass_operator_api_writes_total{') && !l.includes('resource="leases"'))
    .reduce((sum, l) => sum + Number(l.split(' ').pop()), 0);
}

beforeAll(async () => {
  env = await startTestEnv();
  await installCrds(env);
  await env.kubectlOk(['create', 'namespace', NS]);
  const kubeconfig = await operatorKubeconfig(env);
  // The chart's report Service: no selector, the leader writes its EndpointSlice.
  await env.kubectlOk(['apply', '-f', '-'], { input: JSON.stringify({ apiVersion: 'v1', kind: 'Service', metadata: { name: REPORT_SERVICE, namespace: OPERATOR_NAMESPACE }, spec: { ports: [{ name: 'report', port: 8443 }] } }) });
  const reportPort = await freePort();
  for (const [id, ip] of [['op-a', '10.1.0.1'], ['op-b', '10.1.0.2']] as const) {
    const admin = await freePort();
    // Both would listen on the same report port in their own pods; here each gets its own (only the leader opens it).
    const report = id === 'op-a' ? reportPort : await freePort();
    const proc = new Proc(['operator', '--kubeconfig', kubeconfig, '--identity', id, '--admin', `127.0.0.1:${admin}`, '--pod-namespace', OPERATOR_NAMESPACE,
      '--worker-image', 'example.test/underpass:test', '--report-listen', `127.0.0.1:${report}`, '--report-url', `https://${REPORT_SERVICE}.${OPERATOR_NAMESPACE}.svc:8443`,
      '--report-service', REPORT_SERVICE, '--pod-ip', ip, '--pod-name', id]);
    await waitHttp(`http://127.0.0.1:${admin}/healthz`, proc);
    ops.push({ proc, admin, id, ip });
  }
}, 180_000);

afterAll(async () => {
  for (const o of ops) await o.proc.stop();
  await env?.stop();
});

describe('two operator replicas (real processes, one Lease)', () => {
  it('only the Lease holder reconciles and writes, and the report Service points at it; both are Ready', async () => {
    const leader = await waitFor('one leader', async () => {
      const s = await Promise.all(ops.map((o) => isLeader(o)));
      return s.filter(Boolean).length === 1 ? ops[s.indexOf(true)] : undefined;
    }, 30_000);
    const standby = ops.find((o) => o !== leader)!;
    // The standby may still be starting when the other already leads.
    await waitFor('the standby Ready', async () => (await readyz(standby.admin)).status === 200, 20_000);
    expect(await readyz(standby.admin)).toEqual({ status: 200, body: 'ready (standby)\n' });
    expect(await readyz(leader.admin)).toEqual({ status: 200, body: 'ready (leader)\n' });
    await waitFor('the EndpointSlice names the leader', async () => (await sliceAddress()) === leader.ip, 20_000);
    const slice = JSON.parse(await env.kubectlOk(['get', 'endpointslice', `${REPORT_SERVICE}-leader`, '-n', OPERATOR_NAMESPACE, '-o', 'json']));
    expect(slice.metadata.labels['kubernetes.io/service-name']).toBe(REPORT_SERVICE);
    expect(slice.metadata.ownerReferences[0]).toMatchObject({ kind: 'Service', name: REPORT_SERVICE });
    expect(slice.endpoints[0].targetRef).toMatchObject({ kind: 'Pod', name: leader.id });
    await env.kubectlOk(['apply', '-f', '-'], { input: tunnelConnection('dc2', NS) });
    await waitFor('Deployment created', async () => (await env.kubectl(['get', 'deployment', 'dc2-worker', '-n', NS])).code === 0, 20_000);
    const lease = JSON.parse(await env.kubectlOk(['get', 'lease', 'underpass-operator', '-n', OPERATOR_NAMESPACE, '-o', 'json']));
    expect(lease.spec.holderIdentity).toBe(leader.id);
    expect(await objectWrites(leader.admin)).toBeGreaterThan(0);
    expect(await objectWrites(standby.admin)).toBe(0);
  }, 60_000);

  it('the standby takes over when the leader is killed, points the report Service at itself, and reconciles from then on', async () => {
    const statuses = await Promise.all(ops.map((o) => isLeader(o)));
    const leader = ops[statuses.indexOf(true)]!;
    const standby = ops.find((o) => o !== leader)!;
    leader.proc.child.kill('SIGKILL');
    await leader.proc.exited;
    await waitFor('standby becomes leader', () => isLeader(standby), 40_000);
    await waitFor('the EndpointSlice names the new leader', async () => (await sliceAddress()) === standby.ip, 20_000);
    await env.kubectlOk(['patch', 'tc', 'dc2', '-n', NS, '--type=merge', '-p', '{"spec":{"replicas":3}}']);
    await waitFor('replicas followed by the new leader', async () => JSON.parse(await env.kubectlOk(['get', 'deployment', 'dc2-worker', '-n', NS, '-o', 'json'])).spec.replicas === 3, 20_000);
    expect(await objectWrites(standby.admin)).toBeGreaterThan(0);
    const lease = JSON.parse(await env.kubectlOk(['get', 'lease', 'underpass-operator', '-n', OPERATOR_NAMESPACE, '-o', 'json']));
    expect(lease.spec.holderIdentity).toBe(standby.id);
  }, 90_000);
});
