/**
 * Two operator processes against one API server: only the Lease holder
 * writes; kill it (SIGKILL, no release) and the standby takes over once the
 * lease expires.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { freePort, Proc, waitFor, waitHttp } from '../e2e/harness.js';
import { installCrds, OPERATOR_NAMESPACE, operatorKubeconfig, tunnelConnection } from './operator-fixtures.js';
import { startTestEnv, type TestEnv } from './testenv.js';

const NS = 'team-b';
let env: TestEnv;
const ops: Array<{ proc: Proc; admin: number; id: string }> = [];

async function readyz(admin: number): Promise<number> {
  try {
    return (await fetch(`http://127.0.0.1:${admin}/readyz`)).status;
  } catch {
    return 0;
  }
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
  for (const id of ['op-a', 'op-b']) {
    const admin = await freePort();
    const proc = new Proc(['operator', '--kubeconfig', kubeconfig, '--identity', id, '--admin', `127.0.0.1:${admin}`, '--pod-namespace', OPERATOR_NAMESPACE, '--worker-image', 'example.test/underpass:test']);
    await waitHttp(`http://127.0.0.1:${admin}/healthz`, proc);
    ops.push({ proc, admin, id });
  }
}, 180_000);

afterAll(async () => {
  for (const o of ops) await o.proc.stop();
  await env?.stop();
});

describe('two operator replicas (real processes, one Lease)', () => {
  it('only the Lease holder reconciles and writes; the other reports not ready', async () => {
    const leader = await waitFor('one leader', async () => {
      const s = await Promise.all(ops.map((o) => readyz(o.admin)));
      return s.filter((x) => x === 200).length === 1 ? ops[s.indexOf(200)] : undefined;
    }, 30_000);
    const standby = ops.find((o) => o !== leader)!;
    expect(await readyz(standby.admin)).toBe(503);
    await env.kubectlOk(['apply', '-f', '-'], { input: tunnelConnection('dc2', NS) });
    await waitFor('Deployment created', async () => (await env.kubectl(['get', 'deployment', 'dc2-worker', '-n', NS])).code === 0, 20_000);
    const lease = JSON.parse(await env.kubectlOk(['get', 'lease', 'underpass-operator', '-n', OPERATOR_NAMESPACE, '-o', 'json']));
    expect(lease.spec.holderIdentity).toBe(leader.id);
    expect(await objectWrites(leader.admin)).toBeGreaterThan(0);
    expect(await objectWrites(standby.admin)).toBe(0);
  }, 60_000);

  it('the standby takes over when the leader is killed, and reconciles from then on', async () => {
    const statuses = await Promise.all(ops.map((o) => readyz(o.admin)));
    const leader = ops[statuses.indexOf(200)]!;
    const standby = ops.find((o) => o !== leader)!;
    leader.proc.child.kill('SIGKILL');
    await leader.proc.exited;
    await waitFor('standby becomes leader', async () => (await readyz(standby.admin)) === 200, 40_000);
    await env.kubectlOk(['patch', 'tc', 'dc2', '-n', NS, '--type=merge', '-p', '{"spec":{"replicas":3}}']);
    await waitFor('replicas followed by the new leader', async () => JSON.parse(await env.kubectlOk(['get', 'deployment', 'dc2-worker', '-n', NS, '-o', 'json'])).spec.replicas === 3, 20_000);
    expect(await objectWrites(standby.admin)).toBeGreaterThan(0);
    const lease = JSON.parse(await env.kubectlOk(['get', 'lease', 'underpass-operator', '-n', OPERATOR_NAMESPACE, '-o', 'json']));
    expect(lease.spec.holderIdentity).toBe(standby.id);
  }, 90_000);
});
