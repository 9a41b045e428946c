/**
 * Smoke test of the local cluster (test/env/cluster-start.sh): pods really run and talk.
 *
 * - a pod with the `restricted` securityContext runs in a namespace that enforces the
 *   `restricted` Pod Security Standard (and a pod without it is refused there);
 * - it answers over the pod network, from the host and from another pod;
 * - a ClusterIP Service and its DNS names resolve and answer from another pod; the
 *   `kubernetes` Service answers from a pod; names outside cluster.local do not resolve;
 * - a NodePort answers from the host on the node IP;
 * - when this run started the cluster: `cluster-stop` leaves nothing behind and a second start
 *   works.
 *
 * Needs root and the cluster binaries (test/env/build.sh); skipped with the reason otherwise.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { REPO_ROOT, run } from '../cluster/testenv.js';
import { CLUSTER_START_TIMEOUT_MS, clusterUnavailable, type LocalCluster, useCluster } from './cluster.js';

const why = await clusterUnavailable();
if (why) console.log(`local cluster smoke test skipped: ${why}`);
const suite = why ? describe.skip : describe;

const ENV_SCRIPTS = path.join(REPO_ROOT, 'test', 'env');

/** The securityContext the `restricted` Pod Security Standard asks of every container. */
const RESTRICTED_CONTAINER = {
  allowPrivilegeEscalation: false,
  readOnlyRootFilesystem: true,
  runAsNonRoot: true,
  capabilities: { drop: ['ALL'] },
  seccompProfile: { type: 'RuntimeDefault' },
};

function pod(ns: string, name: string, image: string, args: string[], labels: Record<string, string> = {}): object {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: ns, labels: { app: name, ...labels } },
    spec: {
      automountServiceAccountToken: true,
      terminationGracePeriodSeconds: 2,
      securityContext: { runAsNonRoot: true, seccompProfile: { type: 'RuntimeDefault' } },
      containers: [{
        name: 'main',
        image,
        imagePullPolicy: 'Never',
        args,
        ports: [{ containerPort: 8080, name: 'http' }],
        readinessProbe: args[0] === 'serve' ? { httpGet: { path: '/healthz', port: 8080 }, periodSeconds: 1 } : undefined,
        securityContext: RESTRICTED_CONTAINER,
      }],
    },
  };
}

async function httpGet(url: string): Promise<string> {
  const res = await fetch(url, { signal: AbortSignal.timeout(5_000) });
  expect(res.status).toBe(200);
  return res.text();
}

suite('local cluster (make cluster)', () => {
  let cluster: LocalCluster;
  const ns = `smoke-${randomBytes(3).toString('hex')}`;
  let serverIp = '';
  let serviceIp = '';
  let nodePort = 0;

  /** Runs testbox in the client pod (kubectl exec); resolves with its stdout. */
  const inClient = (args: string[]): Promise<string> =>
    cluster.kubectlOk(['exec', '-n', ns, 'client', '--', '/testbox', ...args], { timeoutMs: 30_000 });

  beforeAll(async () => {
    cluster = await useCluster();
    await cluster.kubectlOk(['create', 'namespace', ns]);
    await cluster.kubectlOk(['label', 'namespace', ns, 'pod-security.kubernetes.io/enforce=restricted', 'pod-security.kubernetes.io/enforce-version=latest']);
    // Pods need the namespace's default ServiceAccount (the token controller makes it).
    for (let i = 0; (await cluster.kubectl(['get', 'serviceaccount', 'default', '-n', ns])).code !== 0; i++) {
      if (i > 100) throw new Error(`no default ServiceAccount in ${ns}`);
      await new Promise((r) => setTimeout(r, 200));
    }
    const manifests = [
      pod(ns, 'server', cluster.testboxImage, ['serve', '-http', ':8080', '-name', 'server']),
      pod(ns, 'client', cluster.testboxImage, ['sleep']),
      { apiVersion: 'v1', kind: 'Service', metadata: { name: 'web', namespace: ns }, spec: { selector: { app: 'server' }, ports: [{ port: 80, targetPort: 'http' }] } },
      { apiVersion: 'v1', kind: 'Service', metadata: { name: 'web-np', namespace: ns }, spec: { type: 'NodePort', selector: { app: 'server' }, ports: [{ port: 80, targetPort: 'http' }] } },
    ];
    await cluster.kubectlOk(['apply', '-f', '-'], { input: JSON.stringify({ apiVersion: 'v1', kind: 'List', items: manifests }) });
    await cluster.kubectlOk(['wait', '-n', ns, '--for=condition=Ready', 'pod/server', 'pod/client', '--timeout=120s'], { timeoutMs: 130_000 });
    await cluster.waitForService(ns, 'web');
    await cluster.waitForService(ns, 'web-np');
    serverIp = (await cluster.kubectlOk(['get', 'pod', 'server', '-n', ns, '-o', 'jsonpath={.status.podIP}'])).trim();
    serviceIp = (await cluster.kubectlOk(['get', 'service', 'web', '-n', ns, '-o', 'jsonpath={.spec.clusterIP}'])).trim();
    nodePort = Number(await cluster.kubectlOk(['get', 'service', 'web-np', '-n', ns, '-o', 'jsonpath={.spec.ports[0].nodePort}']));
  }, CLUSTER_START_TIMEOUT_MS);

  afterAll(async () => {
    if (!cluster) return;
    await cluster.kubectl(['delete', 'namespace', ns, '--wait=false']);
    await cluster.release();
  }, 180_000);

  it('runs a restricted pod in a namespace that enforces the restricted standard', async () => {
    const phase = await cluster.kubectlOk(['get', 'pod', 'server', '-n', ns, '-o', 'jsonpath={.status.phase}']);
    expect(phase).toBe('Running');
    const plain = { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'plain', namespace: ns }, spec: { containers: [{ name: 'main', image: cluster.testboxImage, args: ['sleep'] }] } };
    const refused = await cluster.kubectl(['apply', '-f', '-'], { input: JSON.stringify(plain) });
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toMatch(/violates PodSecurity "restricted:latest"/);
  });

  it('answers over the pod network from the host and from another pod', async () => {
    expect(serverIp).toMatch(new RegExp(`^${cluster.vars['UNDERPASS_CLUSTER_POD_CIDR']?.split('.').slice(0, 3).join('\\.')}\\.`));
    expect(await httpGet(`http://${serverIp}:8080/`)).toMatch(/^server host=server /);
    expect(await inClient(['get', `http://${serverIp}:8080/`])).toMatch(/^server host=server /);
  });

  it('resolves a ClusterIP Service by its DNS names and answers through it from another pod', async () => {
    expect((await inClient(['resolve', `web.${ns}.svc.cluster.local`])).trim()).toBe(serviceIp);
    expect(await inClient(['get', `http://web.${ns}.svc.cluster.local/`])).toMatch(/^server host=server /);
    expect(await inClient(['get', 'http://web/'])).toMatch(/^server host=server /); // the pod's search path
  });

  it('reaches the kubernetes Service from a pod and resolves nothing outside cluster.local', async () => {
    const version = await inClient(['get', '-cacert', '/var/run/secrets/kubernetes.io/serviceaccount/ca.crt', 'https://kubernetes.default.svc/version']);
    expect(JSON.parse(version)).toMatchObject({ gitVersion: cluster.vars['K8S_VERSION'] });
    const outside = await cluster.kubectl(['exec', '-n', ns, 'client', '--', '/testbox', 'resolve', 'example.com']);
    expect(outside.code).not.toBe(0);
    expect(outside.stderr).toMatch(/no such host/);
  });

  it('answers on a NodePort from the host', async () => {
    expect(nodePort).toBeGreaterThan(0);
    expect(await httpGet(`http://${cluster.nodeIp}:${nodePort}/`)).toMatch(/^server host=server /);
  });

  it('keeps the pods\' gateway MAC while pods come and go (a bridge with no MAC of its own takes its lowest port\'s)', async () => {
    const bridge = cluster.vars['UNDERPASS_CLUSTER_BRIDGE']!;
    const sys = (f: string): string => fs.readFileSync(`/sys/class/net/${bridge}/${f}`, 'utf8').trim();
    expect(sys('addr_assign_type')).toBe('3'); // NET_ADDR_SET: Linux never recomputes it from the ports
    const mac = sys('address');
    const ports = (): number => fs.readdirSync(`/sys/class/net/${bridge}/brif`).length;
    const portsBefore = ports();
    const extras = ['a', 'b', 'c', 'd', 'e', 'f'].map((n) => `extra-${n}`);
    await cluster.kubectlOk(['apply', '-f', '-'], { input: JSON.stringify({ apiVersion: 'v1', kind: 'List', items: extras.map((n) => pod(ns, n, cluster.testboxImage, ['sleep'])) }) });
    await cluster.kubectlOk(['wait', '-n', ns, '--for=condition=Ready', ...extras.map((n) => `pod/${n}`), '--timeout=120s'], { timeoutMs: 130_000 });
    expect(sys('address')).toBe(mac);
    await cluster.kubectlOk(['delete', 'pod', '-n', ns, ...extras, '--grace-period=0', '--force', '--wait'], { timeoutMs: 60_000 });
    // The API object goes first; the sandbox and its veth follow when kubelet gets to them.
    for (const deadline = Date.now() + 60_000; ports() > portsBefore; await new Promise((r) => setTimeout(r, 200))) {
      if (Date.now() > deadline) throw new Error(`the extra pods' veths are still on ${bridge} after 60 s`);
    }
    expect(sys('address')).toBe(mac);
    // What a changed MAC broke: the other pods' traffic to the node (and to every Service) for 10-30 s.
    expect(await inClient(['get', '-timeout', '3s', `http://${cluster.nodeIp}:${nodePort}/`])).toMatch(/^server host=server /);
  }, 180_000);

  it('stops without leftovers and starts again (when this run started the cluster)', async () => {
    // test/cluster-real/run.sh (make test-cluster) says when it started the cluster for this run.
    if (!cluster.ownedExclusively() && process.env['UNDERPASS_CLUSTER_SUITE_STARTED'] !== '1') {
      console.log('restart check skipped: this test run did not start the cluster, or another process uses it too');
      return;
    }
    const stopped = await run('bash', [path.join(ENV_SCRIPTS, 'cluster-stop.sh'), cluster.dir], { timeoutMs: 180_000 });
    expect(stopped.stderr).toMatch(/nothing left behind/);
    expect(stopped.code).toBe(0);
    const leftovers = await run('bash', [path.join(ENV_SCRIPTS, 'cluster-leftovers.sh'), cluster.dir]);
    expect(leftovers.stdout).toMatch(/^no leftovers/);
    const started = await run('bash', [path.join(ENV_SCRIPTS, 'cluster-start.sh'), cluster.dir], { timeoutMs: 600_000 });
    expect(started.code).toBe(0);
    // The namespace and its pods come back from etcd: kubelet starts them again.
    await cluster.kubectlOk(['wait', '-n', ns, '--for=condition=Ready', 'pod/server', '--timeout=120s'], { timeoutMs: 130_000 });
    await cluster.waitForService(ns, 'web-np');
    nodePort = Number(await cluster.kubectlOk(['get', 'service', 'web-np', '-n', ns, '-o', 'jsonpath={.spec.ports[0].nodePort}']));
    expect(await httpGet(`http://${cluster.nodeIp}:${nodePort}/`)).toMatch(/^server host=server /);
  }, 600_000);
});
