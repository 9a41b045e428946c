/** Shared set-up for operator tests: CRDs, namespaces, the operator's RBAC bound to a non-admin user. */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import YAML from 'yaml';
import { loadKubeConfig } from '../../operator/kube.js';
import { Operator, type OperatorOptions } from '../../operator/operator.js';
import { silentLogger } from '../../tunnel/log.js';
import { waitFor } from '../e2e/harness.js';
import { REPO_ROOT, run, type TestEnv } from './testenv.js';

export const OPERATOR_USER = 'underpass-operator-test';
export const OPERATOR_NAMESPACE = 'underpass-system';

export async function installCrds(env: TestEnv): Promise<void> {
  await env.kubectlOk(['apply', '-f', path.join(REPO_ROOT, 'crds')]);
  await env.waitForCrds(['tunnelconnections.underpass.dev', 'applicationmappings.underpass.dev', 'tunnelconnectors.underpass.dev']);
}

/**
 * Applies operator/rbac/rbac.yaml unchanged and binds its ClusterRole and Role
 * to a certificate user too, then returns a kubeconfig for that user: the
 * operator runs with exactly the permissions the chart grants, so a missing
 * rule fails the tests.
 */
export async function operatorKubeconfig(env: TestEnv): Promise<string> {
  await env.kubectlOk(['create', 'namespace', OPERATOR_NAMESPACE]).catch(() => undefined);
  await env.kubectlOk(['apply', '-f', path.join(REPO_ROOT, 'operator/rbac/rbac.yaml')]);
  const docs = YAML.parseAllDocuments(await readFile(path.join(REPO_ROOT, 'operator/rbac/rbac.yaml'), 'utf8')).map((d) => d.toJS() as Record<string, any>);
  const bindings = docs.filter((d) => d.kind === 'ClusterRoleBinding' || d.kind === 'RoleBinding').map((b) => ({
    ...b,
    metadata: { ...b.metadata, name: `${b.metadata.name}-test-user` },
    subjects: [{ kind: 'User', apiGroup: 'rbac.authorization.k8s.io', name: OPERATOR_USER }],
  }));
  await env.kubectlOk(['apply', '-f', '-'], { input: bindings.map((b) => YAML.stringify(b)).join('---\n') });
  const out = path.join(env.dir, `${OPERATOR_USER}.kubeconfig`);
  const r = await run('bash', [path.join(REPO_ROOT, 'test/env/user-kubeconfig.sh'), '--out', out, env.dir, OPERATOR_USER]);
  if (r.code !== 0) throw new Error(`user-kubeconfig.sh failed: ${r.stderr}`);
  return out;
}

export function tunnelConnection(name: string, namespace: string, spec: Record<string, unknown> = {}): string {
  return YAML.stringify({ apiVersion: 'underpass.dev/v1alpha1', kind: 'TunnelConnection', metadata: { name, namespace }, spec: { replicas: 1, endpoint: { service: { type: 'ClusterIP' } }, ...spec } });
}

export function applicationMapping(name: string, namespace: string, spec: Record<string, unknown>): string {
  return YAML.stringify({ apiVersion: 'underpass.dev/v1alpha1', kind: 'ApplicationMapping', metadata: { name, namespace }, spec });
}

/**
 * An in-process operator with the test lease timings (4 s lease) that waits
 * until it leads. `report` opens the worker report channel on that port.
 */
export async function startTestOperator(kubeconfig: string, identity: string, opts: { reportPort?: number; reportGraceMs?: number; pkiDriftCheckMs?: number; extra?: Partial<OperatorOptions> } = {}): Promise<Operator> {
  const options: OperatorOptions = {
    kc: loadKubeConfig(kubeconfig),
    logger: silentLogger(),
    identity,
    lease: { namespace: OPERATOR_NAMESPACE, name: 'underpass-operator', durationMs: 4_000, renewDeadlineMs: 3_000, renewIntervalMs: 1_000, retryIntervalMs: 500 },
    workerImage: 'example.test/underpass:test',
    admin: { host: '127.0.0.1', port: 0 },
    ...(opts.reportPort ? { report: { listen: { host: '127.0.0.1', port: opts.reportPort }, url: `https://127.0.0.1:${opts.reportPort}`, secretNamespace: OPERATOR_NAMESPACE, secretName: 'underpass-operator-report-tls', sans: [] } } : {}),
    ...(opts.reportGraceMs !== undefined ? { reportGraceMs: opts.reportGraceMs } : {}),
    ...(opts.pkiDriftCheckMs !== undefined ? { pkiDriftCheckMs: opts.pkiDriftCheckMs } : {}),
    ...opts.extra,
  };
  const op = new Operator(options);
  await op.start();
  await waitFor('leadership', () => op.isLeader, 15_000);
  return op;
}
