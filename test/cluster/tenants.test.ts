/**
 * Tenant isolation against a real kube-apiserver (issue 15 finding 9): what
 * the operator (non-admin identity, the chart's RBAC) writes and refuses, the
 * CRD's allowedNamespaces rules, and the chart's ValidatingAdmissionPolicy on
 * spec.worker overrides. No kubelet here: that the NetworkPolicies are
 * enforced is test/cluster-real/netpol.test.ts's job.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import YAML from 'yaml';
import { Operator } from '../../operator/operator.js';
import { parseWorkerConfig } from '../../worker/config.js';
import { waitFor } from '../e2e/harness.js';
import { helmOk, OPERATOR_CHART } from '../charts/render.js';
import { applicationMapping, installCrds, operatorKubeconfig, startTestOperator, tunnelConnection } from './operator-fixtures.js';
import { startTestEnv, TESTENV_START_TIMEOUT_MS, type TestEnv } from './testenv.js';

const NS = 'team-a';
let env: TestEnv;
let operator: Operator;
let apiServerIp = '';

async function getJson<T = any>(args: string[]): Promise<T> {
  return JSON.parse(await env.kubectlOk([...args, '-o', 'json'])) as T;
}

async function readyOf(name: string): Promise<{ status: string; reason: string; message: string }> {
  return waitFor(`${name} status`, async () => (await getJson(['get', 'am', name, '-n', NS])).status?.conditions?.find((c: any) => c.type === 'Ready'), 15_000);
}

beforeAll(async () => {
  env = await startTestEnv();
  await installCrds(env);
  for (const ns of [NS, 'team-b', 'team-c']) await env.kubectlOk(['create', 'namespace', ns]);
  apiServerIp = (await getJson(['get', 'service', 'kubernetes', '-n', 'default'])).spec.clusterIP;
  operator = await startTestOperator(await operatorKubeconfig(env), 'op-1', {
    reportPort: 1, // never listened on (no worker reports here); gives the workers' egress a report rule
    extra: { clusterTargets: { namespaces: ['team-b'], cidrs: ['10.20.0.0/16'], clusterDomain: 'cluster.local' } },
  });
  await env.kubectlOk(['apply', '-f', '-'], { input: tunnelConnection('dc1', NS) });
}, TESTENV_START_TIMEOUT_MS);

afterAll(async () => {
  await operator?.stop();
  await env?.stop();
}, 60_000);

describe('Cluster-side targets: the operator refuses what the cluster admin does not allow', () => {
  it.each([
    ['a Service in the mapping\'s namespace is served', 'own', 'payroll', 'True', 'Ready', /served by TunnelConnection dc1|no connector/],
    ['a namespace the admin allowed (--cluster-target-namespace team-b) is served', 'allowed', 'payroll.team-b.svc', 'True', 'Ready', /./],
    ['another namespace is TargetNotAllowed', 'other-ns', 'payroll.team-c.svc.cluster.local', 'False', 'TargetNotAllowed', /is in namespace team-c; Cluster-side targets may be in this mapping's namespace \(team-a\) and team-b only/],
    ['the API server by name is TargetNotAllowed', 'api-name', 'kubernetes.default.svc', 'False', 'TargetNotAllowed', /is the Kubernetes API server/],
    ['the metadata address is TargetNotAllowed', 'metadata', '169.254.169.254', 'False', 'TargetNotAllowed', /link-local address \(cloud metadata/],
    ['an IP outside the admin\'s blocks is TargetNotAllowed', 'ip', '10.30.0.5', 'False', 'TargetNotAllowed', /outside the blocks the cluster admin allows .*10\.20\.0\.0\/16/],
  ])('%s', async (_name, name, host, status, reason, message) => {
    await env.kubectlOk(['apply', '-f', '-'], { input: applicationMapping(name, NS, { connection: 'dc1', target: { side: 'Cluster', host, port: 8080 }, listen: { port: 18000 + name.length, address: '127.0.0.1' } }) });
    const ready = await waitFor(`${name} verdict`, async () => {
      const c = await readyOf(name);
      return (status === 'False' ? c.reason === reason : c.reason !== 'TargetNotAllowed') ? c : undefined;
    }, 15_000);
    if (status === 'False') expect(ready).toMatchObject({ status, reason });
    expect(ready.message).toMatch(message);
  }, 30_000);

  it('the API server\'s ClusterIP, which the operator read with its own (get-by-name) rights, is TargetNotAllowed', async () => {
    await env.kubectlOk(['apply', '-f', '-'], { input: applicationMapping('api-ip', NS, { connection: 'dc1', target: { side: 'Cluster', host: apiServerIp, port: 443 }, listen: { port: 18100, address: '127.0.0.1' } }) });
    const ready = await waitFor('api-ip refused', async () => {
      const c = await readyOf('api-ip');
      return c.reason === 'TargetNotAllowed' ? c : undefined;
    }, 15_000);
    expect(ready.message).toMatch(new RegExp(`target ${apiServerIp.replace(/\./g, '\\.')}:443 is an address of the Kubernetes API server`));
  }, 30_000);

  it('workers are told the API server\'s addresses and never get a refused mapping', async () => {
    const cm = await waitFor('worker config with the API server', async () => {
      const c = await getJson(['get', 'configmap', 'dc1-worker', '-n', NS]);
      return c.data['worker.yaml'].includes(apiServerIp) ? c : undefined;
    }, 15_000);
    const config = parseWorkerConfig(YAML.parse(cm.data['worker.yaml']), '/etc/underpass/config/worker.yaml');
    expect(config.clusterTargets.loopback).toBe(false);
    expect(config.clusterTargets.refuse).toContain(`${apiServerIp}/32`);
    expect(config.mappings.map((m) => m.name).sort()).toEqual(['allowed', 'own']);
  });

  it('the worker NetworkPolicy lets workers reach DNS, the report port and the served targets\' namespaces only', async () => {
    const np = await waitFor('egress to team-b', async () => {
      const p = await getJson(['get', 'networkpolicy', 'dc1-worker', '-n', NS]);
      return JSON.stringify(p.spec.egress ?? []).includes('team-b') ? p : undefined;
    }, 15_000);
    expect(np.spec.policyTypes).toEqual(['Ingress', 'Egress']);
    const to = (np.spec.egress as any[]).map((r) => r.to);
    expect(to).toEqual([
      [{ namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'kube-system' } }, podSelector: { matchLabels: { 'k8s-app': 'kube-dns' } } }],
      [{ namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'underpass-system' } }, podSelector: { matchLabels: { 'app.kubernetes.io/name': 'underpass-operator' } } }],
      [{ namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': NS } } }],
      [{ namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'team-b' } } }],
    ]);
    // The admin port: the operator's namespace and the metrics scrapers, not the cluster.
    const admin = (np.spec.ingress as any[]).find((r) => r.ports[0].port === 9090);
    expect(admin.from).toEqual([
      { namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'underpass-system' } } },
      { namespaceSelector: { matchLabels: { 'underpass.dev/metrics-scraper': 'true' } } },
    ]);
  });
});

describe('Connector-side listeners: the mapping\'s own namespace unless it says which', () => {
  it.each([
    ['neither list: pods of team-a only', 'own-only', {}, [{ podSelector: {} }]],
    ['allowedNamespaces names', 'for-b', { allowedNamespaces: { names: ['team-b'] } },
      [{ namespaceSelector: { matchExpressions: [{ key: 'kubernetes.io/metadata.name', operator: 'In', values: ['team-b'] }] } }]],
    ['allowedNamespaces selector {} (every namespace, on purpose)', 'for-all', { allowedNamespaces: { selector: {} } }, [{ namespaceSelector: {} }]],
  ])('%s', async (_name, name, extra, from) => {
    const port = 15000 + name.length;
    await env.kubectlOk(['apply', '-f', '-'], { input: applicationMapping(name, NS, { connection: 'dc1', target: { side: 'Connector', host: 'db.internal', port: 5432 }, listen: { port }, ...extra }) });
    const rule = await waitFor(`ingress rule for ${port}`, async () => ((await getJson(['get', 'networkpolicy', 'dc1-worker', '-n', NS])).spec.ingress as any[]).find((r) => r.ports[0].port === port), 15_000);
    expect(rule.from).toEqual(from);
  }, 30_000);

  it.each([
    ['allowedNamespaces on a Cluster-side mapping', { target: { side: 'Cluster', host: 'x', port: 1 }, listen: { port: 19001 }, allowedNamespaces: { names: ['team-b'] } },
      /spec\.allowedNamespaces: Forbidden: is only for a Connector-side target/],
    ['an allowedNamespaces that admits nothing', { allowedNamespaces: {} }, /spec\.allowedNamespaces: Required value: must list names or give a selector/],
    ['a namespace name that is not one', { allowedNamespaces: { names: ['Team_B'] } }, /"Team_B" is not a namespace name/],
    ['In without values', { allowedNamespaces: { selector: { matchExpressions: [{ key: 'team', operator: 'In' }] } } }, /values must be given for In and NotIn, and only for them/],
  ])('the API server refuses %s', async (_name, spec, message) => {
    const r = await env.kubectl(['apply', '-f', '-'], {
      input: applicationMapping('bad', NS, { connection: 'dc1', target: { side: 'Connector', host: 'db.internal', port: 5432 }, listen: { port: 19000 }, ...spec }),
    });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(message);
  });
});

describe('spec.worker overrides', () => {
  it('the operator ignores a worker image it does not allow, runs its own, and says so in OverridesAccepted', async () => {
    await env.kubectlOk(['apply', '-f', '-'], { input: tunnelConnection('img', NS, { worker: { image: 'registry.example.test/evil:1', tolerations: [{ operator: 'Exists' }] } }) });
    const cond = await waitFor('OverridesAccepted', async () => (await getJson(['get', 'tc', 'img', '-n', NS])).status?.conditions?.find((c: any) => c.type === 'OverridesAccepted'), 15_000);
    expect(cond).toMatchObject({ status: 'False', reason: 'OverrideNotAllowed' });
    expect(cond.message).toMatch(/spec\.worker\.image \(no image override is allowed\), spec\.worker\.tolerations/);
    const dep = await waitFor('Deployment img-worker', async () => (await env.kubectl(['get', 'deployment', 'img-worker', '-n', NS, '-o', 'json'])).stdout || undefined, 15_000);
    const pod = JSON.parse(dep).spec.template.spec;
    expect(pod.containers[0].image).toBe('example.test/underpass:test');
    expect(pod.tolerations).toBeUndefined();
    const events = await env.kubectlOk(['get', 'events', '-n', NS, '--field-selector', 'involvedObject.name=img,reason=OverrideIgnored', '-o', 'name']);
    expect(events.trim()).not.toBe('');
  }, 30_000);

  describe('the chart\'s ValidatingAdmissionPolicy', () => {
    const policy = (sets: string[]): Promise<string> => helmOk(['template', 'underpass-operator', OPERATOR_CHART, '--namespace', 'underpass-system',
      '--show-only', 'templates/worker-overrides-policy.yaml', ...sets.flatMap((s) => ['--set', s])]);
    const dryRun = (name: string, worker: Record<string, unknown>) => env.kubectl(['apply', '--dry-run=server', '-f', '-'], { input: tunnelConnection(name, NS, { worker }) });
    /** The API server loads a new policy asynchronously: wait until it refuses what it must. */
    const untilRefused = (name: string, worker: Record<string, unknown>) => waitFor('the policy to be in force', async () => {
      const r = await dryRun(name, worker);
      return r.code !== 0 ? r : undefined;
    }, 20_000);

    beforeAll(async () => {
      // Written before the policy exists: it must still save when its overrides stay as they are.
      await env.kubectlOk(['apply', '-f', '-'], { input: tunnelConnection('legacy', NS, { worker: { nodeSelector: { 'node-role.kubernetes.io/infra': '' } } }) });
      await env.kubectlOk(['apply', '-f', '-'], { input: await policy([]) });
    }, 60_000);

    it('refuses spec.worker.image at kubectl apply, with the reason and the value that would allow it', async () => {
      const r = await untilRefused('evil', { image: 'registry.example.test/evil:1' });
      expect(r.stderr).toMatch(/denied request: spec\.worker\.image "registry\.example\.test\/evil:1" is not allowed: the cluster admin chooses the worker image \(unset it to run the operator's\) \(underpass-operator chart value workerOverrides\.imagePrefixes\)/);
    });

    it.each([
      ['tolerations', { tolerations: [{ operator: 'Exists' }] }, /spec\.worker\.tolerations is not allowed: the cluster admin decides where the workers run/],
      ['nodeSelector', { nodeSelector: { 'node-role.kubernetes.io/control-plane': '' } }, /spec\.worker\.nodeSelector is not allowed/],
    ])('refuses spec.worker.%s', async (_name, worker, message) => {
      const r = await untilRefused(`with-${_name.toLowerCase()}`, worker);
      expect(r.stderr).toMatch(message);
    });

    it('lets through a connection without overrides, and resources (allowed by default)', async () => {
      await untilRefused('probe', { image: 'x' });
      expect((await dryRun('plain', {})).code).toBe(0);
      const r = await dryRun('sized', { resources: { limits: { memory: '256Mi' } } });
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
    });

    it('lets an older object keep its override unchanged, and refuses changing it', async () => {
      await untilRefused('probe', { image: 'x' });
      const same = await env.kubectl(['patch', 'tc', 'legacy', '-n', NS, '--type=merge', '-p', '{"spec":{"replicas":2}}']);
      expect(same.stderr).toBe('');
      expect(same.code).toBe(0);
      const changed = await env.kubectl(['patch', 'tc', 'legacy', '-n', NS, '--type=merge', '-p', '{"spec":{"worker":{"nodeSelector":{"kubernetes.io/os":"linux"}}}}']);
      expect(changed.code).not.toBe(0);
      expect(changed.stderr).toMatch(/spec\.worker\.nodeSelector is not allowed/);
    });

    it('allows an image under a prefix the values allow, and still refuses others', async () => {
      await env.kubectlOk(['apply', '-f', '-'], { input: await policy(['workerOverrides.imagePrefixes[0]=registry.example.test/underpass/']) });
      const allowed = await waitFor('the new policy to be in force', async () => {
        const r = await dryRun('pinned', { image: 'registry.example.test/underpass/underpass:0.1.0' });
        return r.code === 0 ? r : undefined;
      }, 20_000);
      expect(allowed.stderr).toBe('');
      const other = await dryRun('evil', { image: 'registry.example.test/evil:1' });
      expect(other.code).not.toBe(0);
      expect(other.stderr).toMatch(/is not allowed: the cluster admin allows worker images starting with registry\.example\.test\/underpass\/ only/);
    });

    it('is not rendered at all when the values allow everything', async () => {
      const all = await policy(['workerOverrides.imagePrefixes[0]=*', 'workerOverrides.nodeSelector=true', 'workerOverrides.tolerations=true']).catch((err: Error) => err.message);
      expect(all).toMatch(/could not find template|^\s*$/);
    });
  });
});
