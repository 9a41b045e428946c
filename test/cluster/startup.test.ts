/**
 * What keeps the operator from working is visible at once: missing CRDs, a missing Lease
 * namespace and RBAC that forbids what it needs are each logged once at error level with the
 * fix, /readyz answers 503 naming them, and fixing the cause makes the operator Ready without a
 * restart. Against a real kube-apiserver; the RBAC case runs as a non-admin user.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from '@jest/globals';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import YAML from 'yaml';
import { loadKubeConfig } from '../../operator/kube.js';
import { Operator } from '../../operator/operator.js';
import { waitFor } from '../e2e/harness.js';
import { installCrds, OPERATOR_NAMESPACE } from './operator-fixtures.js';
import { REPO_ROOT, run, startTestEnv, TESTENV_START_TIMEOUT_MS, type TestEnv } from './testenv.js';

let env: TestEnv;
let operator: Operator | undefined;
let logs: Array<{ level: string; msg: string }> = [];

beforeAll(async () => {
  env = await startTestEnv();
}, TESTENV_START_TIMEOUT_MS);

afterEach(async () => {
  await operator?.stop();
  operator = undefined;
});

afterAll(async () => {
  await env?.stop();
}, 60_000);

/** An in-process operator with fast retries, its log lines collected. */
async function start(kubeconfig: string, leaseNamespace: string): Promise<{ op: Operator; readyz: () => Promise<{ status: number; body: string }> }> {
  logs = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const line of chunk.toString().split('\n').filter(Boolean)) logs.push(JSON.parse(line) as { level: string; msg: string });
      cb();
    },
  });
  const op = new Operator({
    kc: loadKubeConfig(kubeconfig),
    logger: pino({ level: 'info', formatters: { level: (label) => ({ level: label }) } }, sink),
    identity: 'op-startup',
    lease: { namespace: leaseNamespace, name: 'underpass-operator', durationMs: 4_000, renewDeadlineMs: 3_000, renewIntervalMs: 1_000, retryIntervalMs: 300 },
    workerImage: 'example.test/underpass:test',
    admin: { host: '127.0.0.1', port: 0 },
    retry: { initialMs: 200, maxMs: 1_000 },
  });
  operator = op;
  const { admin } = await op.start();
  const readyz = async (): Promise<{ status: number; body: string }> => {
    const res = await fetch(`http://127.0.0.1:${admin.port}/readyz`);
    return { status: res.status, body: await res.text() };
  };
  return { op, readyz };
}

const errorsAbout = (text: string): number => logs.filter((l) => l.level === 'error' && l.msg.includes(text)).length;

async function untilNotReadyWith(readyz: () => Promise<{ status: number; body: string }>, text: string): Promise<string> {
  const r = await waitFor(`/readyz to name "${text}"`, async () => {
    const x = await readyz();
    return x.status === 503 && x.body.includes(text) ? x : undefined;
  }, 20_000);
  return r.body;
}

/** A second look a few retries later: the reason stays, and it was logged once. */
async function staysLoggedOnce(readyz: () => Promise<{ status: number; body: string }>, text: string): Promise<void> {
  await new Promise((r) => setTimeout(r, 2_500));
  expect((await readyz()).status).toBe(503);
  expect(errorsAbout(text)).toBe(1);
}

describe('operator start-up problems (real kube-apiserver)', () => {
  it('CRDs not installed: named with "kubectl apply -f crds/", then Ready once they are', async () => {
    await env.kubectlOk(['create', 'namespace', OPERATOR_NAMESPACE]);
    const { readyz } = await start(env.kubeconfig, OPERATOR_NAMESPACE);
    const body = await untilNotReadyWith(readyz, 'CRD tunnelconnections.underpass.dev is not installed: kubectl apply -f crds/');
    expect(body).toContain('CRD applicationmappings.underpass.dev is not installed: kubectl apply -f crds/ (or install the underpass-operator chart)');
    await staysLoggedOnce(readyz, 'CRD tunnelconnections.underpass.dev is not installed');
    await installCrds(env);
    await waitFor('Ready after the CRDs were installed', async () => (await readyz()).status === 200, 40_000);
    // The last word on the source is "resolved" (the API server may answer 429 for a moment while it sets the new CRD up).
    expect(logs.filter((l) => l.msg.includes('tunnelconnections.underpass.dev')).pop()).toMatchObject({ level: 'info', msg: expect.stringMatching(/^resolved: /) });
    expect(errorsAbout('CRD tunnelconnections.underpass.dev is not installed')).toBe(1);
  }, 90_000);

  it('Lease namespace missing: named with the fix, then Ready (and leading) once it exists', async () => {
    const { op, readyz } = await start(env.kubeconfig, 'underpass-elsewhere');
    const fix = 'namespace underpass-elsewhere does not exist: create it (kubectl create namespace underpass-elsewhere) or set --pod-namespace (POD_NAMESPACE) to the namespace the operator runs in';
    await untilNotReadyWith(readyz, fix);
    await staysLoggedOnce(readyz, fix);
    expect(op.isLeader).toBe(false);
    await env.kubectlOk(['create', 'namespace', 'underpass-elsewhere']);
    await waitFor('Ready after the namespace was created', async () => (await readyz()).status === 200, 20_000);
    await waitFor('leadership', () => op.isLeader, 10_000);
  }, 60_000);

  it('RBAC without "create deployments": named with the fix, then Ready once the ClusterRole grants it', async () => {
    const user = 'underpass-operator-partial';
    // The chart's RBAC, with create taken out of the deployments rule, bound to a certificate user.
    const rbac = YAML.parseAllDocuments(await readFile(path.join(REPO_ROOT, 'operator/rbac/rbac.yaml'), 'utf8')).map((d) => d.toJS() as Record<string, any>);
    const clusterRole = rbac.find((d) => d.kind === 'ClusterRole')!;
    // Every Role as the chart grants it: the Lease Role and the API server Role in default.
    const roles = rbac.filter((d) => d.kind === 'Role');
    const partial = structuredClone(clusterRole);
    partial.metadata = { name: user };
    const deployments = (partial.rules as Array<{ resources: string[]; verbs: string[] }>).find((r) => r.resources.includes('deployments'))!;
    deployments.verbs = deployments.verbs.filter((v) => v !== 'create');
    const bindings = [
      { apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'ClusterRoleBinding', metadata: { name: user }, roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: user }, subjects: [{ kind: 'User', apiGroup: 'rbac.authorization.k8s.io', name: user }] },
      ...roles.map((role) => ({
        apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'RoleBinding', metadata: { name: user, namespace: role.metadata.namespace },
        roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: role.metadata.name }, subjects: [{ kind: 'User', apiGroup: 'rbac.authorization.k8s.io', name: user }],
      })),
    ];
    await env.kubectlOk(['apply', '-f', '-'], { input: [...roles, partial, ...bindings].map((d) => YAML.stringify(d)).join('---\n') });
    const kubeconfig = path.join(env.dir, `${user}.kubeconfig`);
    const made = await run('bash', [path.join(REPO_ROOT, 'test/env/user-kubeconfig.sh'), '--out', kubeconfig, env.dir, user]);
    expect(made.code).toBe(0);

    const { readyz } = await start(kubeconfig, OPERATOR_NAMESPACE);
    const fix = 'forbidden: create deployments.apps in all namespaces: apply operator/rbac/ or the underpass-operator chart';
    const body = await untilNotReadyWith(readyz, fix);
    expect(body).toBe(`not ready: ${fix}\n`);
    await staysLoggedOnce(readyz, fix);
    deployments.verbs.push('create');
    await env.kubectlOk(['apply', '-f', '-'], { input: YAML.stringify(partial) });
    await waitFor('Ready after the ClusterRole grants create', async () => (await readyz()).status === 200, 20_000);
  }, 60_000);
});
