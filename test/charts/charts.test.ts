/**
 * Both Helm charts against a real kube-apiserver (test/env): `helm lint --strict`, every object of
 * `helm template` (default values and a file that sets every value) accepted by
 * `kubectl apply --dry-run=server` in namespaces that enforce the "restricted" Pod Security
 * Standard, with no warning at all; values.schema.json refusing bad values with the field's path;
 * the connector chart reading the Secret `underpass connector bundle --secret` prints.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import fs from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import { parseConnectorConfig } from '../../connector/config.js';
import { POD_ADMIN, renderSecretManifest, SECRET_MOUNT_DIR } from '../../connector/bundle.js';
import { REPO_ROOT, startTestEnv, TESTENV_START_TIMEOUT_MS, type TestEnv } from '../cluster/testenv.js';
import { CONNECTOR_CHART, helm, helmOk, OPERATOR_CHART, splitDocs } from './render.js';
import { SERVICE_MONITOR_CRD, serviceMonitorCrdFile } from './service-monitor-crd.js';

const VALUES = path.join(REPO_ROOT, 'test', 'charts', 'values');
const SERVICE_MONITOR_API = ['--api-versions', 'monitoring.coreos.com/v1/ServiceMonitor'];
const RESTRICTED = ['enforce', 'warn', 'audit'].map((mode) => `pod-security.kubernetes.io/${mode}=restricted`);

interface Case {
  name: string;
  chart: string;
  release: string;
  namespace: string;
  args: string[];
  /** Kinds the rendering must contain (so an `if` that drops an object is noticed). */
  kinds: string[];
}

const CASES: Case[] = [
  {
    name: 'underpass-operator, default values', chart: OPERATOR_CHART, release: 'underpass-operator', namespace: 'underpass-system', args: ['--include-crds'],
    kinds: ['CustomResourceDefinition', 'ServiceAccount', 'ClusterRole', 'ClusterRoleBinding', 'Role', 'RoleBinding', 'Deployment', 'Service', 'PodDisruptionBudget', 'NetworkPolicy', 'Pod',
      'ValidatingAdmissionPolicy', 'ValidatingAdmissionPolicyBinding'],
  },
  {
    name: 'underpass-operator, every value set', chart: OPERATOR_CHART, release: 'ops', namespace: 'underpass-system',
    args: ['-f', path.join(VALUES, 'operator-max.yaml'), ...SERVICE_MONITOR_API],
    kinds: ['ServiceAccount', 'Role', 'RoleBinding', 'Deployment', 'Service', 'PodDisruptionBudget', 'NetworkPolicy', 'ServiceMonitor', 'Pod',
      'ValidatingAdmissionPolicy', 'ValidatingAdmissionPolicyBinding'],
  },
  {
    name: 'underpass-connector, default values', chart: CONNECTOR_CHART, release: 'site-a', namespace: 'underpass-connector', args: [],
    kinds: ['Deployment', 'Service', 'PodDisruptionBudget', 'NetworkPolicy', 'Pod'],
  },
  {
    name: 'underpass-connector, every value set', chart: CONNECTOR_CHART, release: 'site-b', namespace: 'underpass-connector',
    args: ['-f', path.join(VALUES, 'connector-max.yaml')],
    kinds: ['Secret', 'Deployment', 'Service', 'PodDisruptionBudget', 'NetworkPolicy', 'Pod'],
  },
  {
    name: 'underpass-connector, enrolling with a token', chart: CONNECTOR_CHART, release: 'site-c', namespace: 'underpass-connector',
    args: ['-f', path.join(VALUES, 'connector-enroll.yaml')],
    kinds: ['Secret', 'ServiceAccount', 'Role', 'RoleBinding', 'Deployment', 'PodDisruptionBudget', 'NetworkPolicy', 'Pod'],
  },
];

let env: TestEnv;

beforeAll(async () => {
  env = await startTestEnv();
  for (const ns of ['underpass-system', 'underpass-connector', 'team-a']) {
    await env.kubectlOk(['create', 'namespace', ns]);
    await env.kubectlOk(['label', 'namespace', ns, ...RESTRICTED]);
  }
  await env.kubectlOk(['apply', '--server-side', '-f', await serviceMonitorCrdFile()]);
  await env.waitForCrds([SERVICE_MONITOR_CRD]);
}, TESTENV_START_TIMEOUT_MS);

afterAll(async () => {
  await env?.stop();
}, 60_000);

const template = (c: Case, extra: string[] = []): Promise<string> =>
  helmOk(['template', c.release, c.chart, '--namespace', c.namespace, ...c.args, ...extra]);

describe('chart metadata', () => {
  it.each([OPERATOR_CHART, CONNECTOR_CHART].map((c) => [path.basename(c), c]))('%s: version and appVersion are package.json\'s version', (_name, chart) => {
    const pkg = JSON.parse(fs.readFileSync(path.join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string };
    const meta = YAML.parse(fs.readFileSync(path.join(chart, 'Chart.yaml'), 'utf8')) as { version: string; appVersion: string };
    expect({ version: meta.version, appVersion: meta.appVersion }).toEqual({ version: pkg.version, appVersion: pkg.version });
  });
});

describe('helm lint --strict', () => {
  it.each([
    ['underpass-operator, default values', OPERATOR_CHART, []],
    // lint has no --api-versions: the ServiceMonitor (checked by the dry-run below) is left out here.
    ['underpass-operator, every value set', OPERATOR_CHART, ['-f', path.join(VALUES, 'operator-max.yaml'), '--set', 'serviceMonitor.enabled=false']],
    ['underpass-connector, default values', CONNECTOR_CHART, []],
    ['underpass-connector, every value set', CONNECTOR_CHART, ['-f', path.join(VALUES, 'connector-max.yaml')]],
    ['underpass-connector, enrolling with a token', CONNECTOR_CHART, ['-f', path.join(VALUES, 'connector-enroll.yaml')]],
  ])('%s is clean', async (_name, chart, args) => {
    const r = await helm(['lint', '--strict', chart, ...args]);
    expect(r.stderr).toBe('');
    expect(r.stdout).toContain('1 chart(s) linted, 0 chart(s) failed');
    expect(r.stdout).not.toMatch(/\[(WARNING|ERROR)\]/);
  });
});

describe('helm template | kubectl apply --dry-run=server (namespaces enforce Pod Security "restricted")', () => {
  it.each(CASES.map((c) => [c.name, c] as const))('%s: every object is accepted, without a warning', async (_name, c) => {
    const rendered = await template(c);
    const kinds = new Set(splitDocs(rendered).map((d) => d.kind));
    expect([...kinds].sort()).toEqual(expect.arrayContaining([...c.kinds].sort()));
    // No -n: every namespaced object names its namespace (the release's, or watchNamespace for its Role).
    const r = await env.kubectl(['apply', '--dry-run=server', '--validate=strict', '-f', '-'], { input: rendered });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/created \(server dry run\)/);
  }, 60_000);

  it('the check sees Pod Security: a pod that is not restricted is refused there, and a Deployment of one warned about', async () => {
    const pod = { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'loose' }, spec: { containers: [{ name: 'c', image: 'example.test/x' }] } };
    const refused = await env.kubectl(['apply', '--dry-run=server', '-n', 'underpass-system', '-f', '-'], { input: JSON.stringify(pod) });
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toMatch(/violates PodSecurity "restricted:latest"/);
    const deployment = {
      apiVersion: 'apps/v1', kind: 'Deployment', metadata: { name: 'loose' },
      spec: { selector: { matchLabels: { app: 'loose' } }, template: { metadata: { labels: { app: 'loose' } }, spec: pod.spec } },
    };
    const warned = await env.kubectl(['apply', '--dry-run=server', '-n', 'underpass-system', '-f', '-'], { input: JSON.stringify(deployment) });
    expect(warned.stderr).toMatch(/Warning: would violate PodSecurity "restricted:latest"/);
  });
});

describe('probes', () => {
  // Without a startup probe, liveness (10 s × 3) killed operator pods that were still starting on a
  // busy node (the real-cluster suite at load 15): every long-running container waits for /healthz first.
  it.each(CASES.map((c) => [c.name, c] as const))('%s: every container with a liveness probe has a startup probe on the same endpoint', async (_name, c) => {
    const docs = splitDocs(await template(c)).filter((d) => d.kind === 'Deployment');
    expect(docs.length).toBeGreaterThan(0);
    for (const d of docs) {
      for (const ctr of d.obj.spec.template.spec.containers) {
        if (!ctr.livenessProbe) continue;
        expect([d.name, ctr.startupProbe?.httpGet]).toEqual([d.name, ctr.livenessProbe.httpGet]);
        expect(ctr.startupProbe.periodSeconds * ctr.startupProbe.failureThreshold).toBeGreaterThanOrEqual(60);
      }
    }
  }, 60_000);
});

describe('helm install, helm test hooks, helm uninstall (real API server; no kubelet, so pods stay Pending)', () => {
  it('installs both charts with NOTES that give the next step, and uninstalling leaves nothing but the CRDs', async () => {
    const kc = ['--kubeconfig', env.kubeconfig];
    const op = await helmOk(['install', 'underpass-operator', OPERATOR_CHART, '-n', 'underpass-system', ...kc]);
    expect(op).toContain('kubectl label namespace underpass-system pod-security.kubernetes.io/enforce=restricted');
    expect(op).toContain('kind: TunnelConnection');
    expect(op).toContain('helm test underpass-operator -n underpass-system');
    const conn = await helmOk(['install', 'site-a', CONNECTOR_CHART, '-n', 'underpass-connector', '--set', 'networkPolicy.workers[0].cidr=203.0.113.10/32', '--set', 'networkPolicy.workers[0].ports[0]=443', ...kc]);
    expect(conn).toContain('underpass connector bundle --connection <namespace>/<connection> --name site-a');
    expect(conn).not.toContain('WARNING');
    const parts = async (): Promise<string[]> => (await env.kubectlOk(['get', 'all,networkpolicies,poddisruptionbudgets,secrets,configmaps,serviceaccounts,roles,rolebindings,clusterroles,clusterrolebindings',
      '-A', '-l', 'app.kubernetes.io/part-of=underpass', '-o', 'name'])).split('\n').filter(Boolean);
    expect((await parts()).length).toBeGreaterThan(10);
    expect((await env.kubectlOk(['get', 'crd', '-o', 'name']))).toContain('tunnelconnections.underpass.dev');
    await helmOk(['uninstall', 'site-a', '-n', 'underpass-connector', '--wait', ...kc]);
    await helmOk(['uninstall', 'underpass-operator', '-n', 'underpass-system', '--wait', ...kc]);
    expect(await parts()).toEqual([]);
    // Helm keeps CRDs (and so every TunnelConnection) on uninstall, on purpose: README says how to remove them.
    expect((await env.kubectlOk(['get', 'crd', '-o', 'name']))).toContain('tunnelconnections.underpass.dev');
  }, 120_000);
});

describe('values.schema.json refuses bad values, naming the field', () => {
  const CHARTS: Record<string, string> = { 'underpass-operator': OPERATOR_CHART, 'underpass-connector': CONNECTOR_CHART };
  it.each([
    ['underpass-operator', 'replicaCount=0', '/replicaCount'],
    ['underpass-operator', 'image.pullPolicy=Sometimes', '/image/pullPolicy'],
    ['underpass-operator', 'ports.report=70000', '/ports/report'],
    ['underpass-operator', 'watchNamespace=Team_A', '/watchNamespace'],
    ['underpass-operator', 'logLevel=verbose', '/logLevel'],
    ['underpass-operator', 'serviceMonitor.interval=soon', '/serviceMonitor/interval'],
    ['underpass-operator', 'replicas=2', 'additional properties \'replicas\' not allowed'],
    ['underpass-operator', 'networkPolicy.from=x', 'additional properties \'from\' not allowed'],
    ['underpass-operator', 'clusterTargets.namespaces[0]=Team_B', '/clusterTargets/namespaces/0'],
    ['underpass-operator', 'clusterTargets.cidrs[0]=ten', '/clusterTargets/cidrs/0'],
    ['underpass-operator', 'workerNetworkPolicy.metricsNamespaceSelector=team in (a)', '/workerNetworkPolicy/metricsNamespaceSelector'],
    ['underpass-operator', 'workerNetworkPolicy.egress.dns.ports[0]=0', '/workerNetworkPolicy/egress/dns/ports/0'],
    ['underpass-operator', 'workerOverrides.image=true', 'additional properties \'image\' not allowed'],
    ['underpass-operator', 'workerOverrides.imagePrefixes[0]=a b', '/workerOverrides/imagePrefixes/0'],
    ['underpass-connector', 'networkPolicy.workers[0].cidr=10.0.0.0/33,networkPolicy.workers[0].ports[0]=443', '/networkPolicy/workers/0/cidr'],
    ['underpass-connector', 'networkPolicy.targets[0].ports[0]=5432', '/networkPolicy/targets/0'],
    ['underpass-connector', 'config.workers[0]=https://tunnel.example.test', '/config/workers/0'],
    ['underpass-connector', 'secret.create=true,secret.ca=not a certificate', '/secret/ca'],
    ['underpass-connector', 'listeners[0].name=admin,listeners[0].port=19000', '/listeners/0/name'],
    ['underpass-connector', 'adminPort=0', '/adminPort'],
  ])('%s: --set %s is refused at %s', async (chart, sets, field) => {
    const r = await helm(['template', 'x', CHARTS[chart]!, '--set', sets]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain(field);
  });

  it.each([
    ['underpass-operator: a ServiceMonitor without the Prometheus Operator API', OPERATOR_CHART, ['serviceMonitor.enabled=true'], 'serviceMonitor.enabled is true, but this cluster has no monitoring.coreos.com/v1 ServiceMonitor API'],
    ['underpass-connector: a Secret to create without worker URLs', CONNECTOR_CHART,
      ['secret.create=true', 'secret.ca=-----BEGIN CERTIFICATE-----', 'secret.cert=-----BEGIN CERTIFICATE-----', 'secret.key=-----BEGIN PRIVATE KEY-----'],
      'secret.create needs config.workers (the wss:// URLs of the workers'],
  ])('%s fails with what to do', async (_name, chart, sets, message) => {
    const r = await helm(['template', 'x', chart, ...sets.flatMap((s) => ['--set', s])]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain(message);
  });
});

describe('the connector chart and `underpass connector bundle --secret`', () => {
  const bundleSecret = (): Record<string, any> => YAML.parseAllDocuments(renderSecretManifest({
    name: 'site-a', connection: { namespace: 'team-a', name: 'dc1' }, workers: ['wss://tunnel.dc1.example.test:443'], allow: [], bind: [],
    notAfter: new Date('2030-01-01T00:00:00Z'), namespace: 'underpass-connector', caPem: 'CA', certPem: 'CERT', keyPem: 'KEY', identity: 'underpass://team-a/dc1/connector/site-a',
  })).map((d) => d.toJS())[0] as Record<string, any>;

  it('mounts the Secret the bundle prints, by its default name, where its connector.yaml expects the files, and probes its admin port', async () => {
    const secret = bundleSecret();
    const docs = splitDocs(await helmOk(['template', 'site-a', CONNECTOR_CHART, '--namespace', 'underpass-connector']));
    const pod = docs.find((d) => d.kind === 'Deployment')!.obj.spec.template.spec;
    const volume = pod.volumes.find((v: any) => v.secret);
    expect(volume.secret.secretName).toBe(secret.metadata.name);
    expect(pod.containers[0].volumeMounts.find((m: any) => m.name === volume.name).mountPath).toBe(SECRET_MOUNT_DIR);
    // --drain-delay: listeners stay open while the Service stops sending clients (docs/ha.md, Drain).
    expect(pod.containers[0].args).toEqual(['connector', '--config', `${SECRET_MOUNT_DIR}/connector.yaml`, '--drain-delay', '5s']);
    const config = YAML.parse(Buffer.from(secret.data['connector.yaml'], 'base64').toString('utf8'));
    expect(config.admin).toBe(POD_ADMIN);
    expect(pod.containers[0].ports.find((p: any) => p.name === 'admin').containerPort).toBe(Number(POD_ADMIN.split(':').pop()));
  });

  it('creates the same keys itself from values, with a connector.yaml the connector accepts', async () => {
    const docs = splitDocs(await helmOk(['template', 'site-b', CONNECTOR_CHART, '--namespace', 'underpass-connector', '-f', path.join(VALUES, 'connector-max.yaml')]));
    const secret = docs.find((d) => d.kind === 'Secret')!.obj;
    expect(Object.keys(secret.data).sort()).toEqual(Object.keys(bundleSecret().data).sort());
    const text = Buffer.from(secret.data['connector.yaml'], 'base64').toString('utf8');
    const config = parseConnectorConfig(YAML.parse(text), `${SECRET_MOUNT_DIR}/connector.yaml`);
    expect(config).toMatchObject({ name: 'site-a', admin: { port: 9191 }, tls: { cert: `${SECRET_MOUNT_DIR}/tls.crt`, key: `${SECRET_MOUNT_DIR}/tls.key`, ca: `${SECRET_MOUNT_DIR}/ca.crt` } });
    expect(config.workers.map((u) => u.href)).toEqual(['wss://tunnel.dc1.example.test/', 'wss://10.20.0.5:30443/']);
    expect(config.allowRules).toEqual(['db.internal:5432', '10.0.0.0/8:443']);
    expect(config.dial.allowAll).toBe(true);
    // Each listener is bound on every interface of the pod, besides config.bind.
    expect(config.bindRules).toEqual(['0.0.0.0:19000', '0.0.0.0:18080', '127.0.0.1:19500']);
  });
});
