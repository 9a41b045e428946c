/**
 * NetworkPolicy is enforced in the local cluster (kube-network-policies, test/env/README.md):
 * a pod-to-pod connection that works without a policy is blocked by a deny-all policy and
 * opened again by an allow rule, for the pods the rule names only; an egress deny-all blocks the
 * client's own connections. Policies the operator writes are therefore tested for real.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { randomBytes } from 'node:crypto';
import { clusterUnavailable, type LocalCluster, useCluster } from './cluster.js';
import { deleteNamespaces, execTestbox, list, restrictedNamespace, service, step, testboxPod, waitFor, waitForReadyPods } from './kube.js';

const why = await clusterUnavailable();
if (why) console.log(`NetworkPolicy test skipped: ${why}`);
const suite = why ? describe.skip : describe;

suite('NetworkPolicy in the local cluster (kube-network-policies)', () => {
  let cluster: LocalCluster;
  const ns = `netpol-${randomBytes(3).toString('hex')}`;
  let serverIp = '';

  /** Whether `from` gets an answer from the server, by pod IP and by Service name (both must agree). */
  const reaches = async (from: string): Promise<boolean> => {
    const byIp = await execTestbox(cluster, ns, from, ['get', '-timeout', '1500ms', `http://${serverIp}:8080/`], 20_000);
    const byName = await execTestbox(cluster, ns, from, ['get', '-timeout', '1500ms', `http://web.${ns}.svc.cluster.local/`], 20_000);
    if ((byIp.code === 0) !== (byName.code === 0)) throw new Error(`pod IP and Service disagree: ${byIp.stderr} / ${byName.stderr}`);
    return byIp.code === 0;
  };
  const policy = (name: string, spec: object): string =>
    JSON.stringify({ apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { name, namespace: ns }, spec });
  const expectReach = (from: string, want: boolean, what: string): Promise<boolean> =>
    step(cluster, [ns], () => waitFor(`${from} ${want ? 'to reach' : 'not to reach'} the server (${what})`, async () => (await reaches(from)) === want, 15_000, 200));

  beforeAll(async () => {
    cluster = await useCluster();
    await restrictedNamespace(cluster, ns);
    await cluster.kubectlOk(['apply', '-f', '-'], {
      input: list([
        testboxPod(cluster, ns, 'server', ['serve', '-http', ':8080', '-name', 'server']),
        testboxPod(cluster, ns, 'client', ['sleep']),
        testboxPod(cluster, ns, 'other', ['sleep']),
        service(ns, 'web', 'server', [{ name: 'http', port: 80, targetPort: 8080 }]),
      ]),
    });
    await step(cluster, [ns], async () => {
      await waitForReadyPods(cluster, ns, 'app in (server,client,other)', 3, 120_000);
      await cluster.waitForService(ns, 'web');
    });
    serverIp = (await cluster.kubectlOk(['get', 'pod', 'server', '-n', ns, '-o', 'jsonpath={.status.podIP}'])).trim();
  }, 180_000);

  afterAll(async () => {
    if (!cluster) return;
    await deleteNamespaces(cluster, [ns]);
    await cluster.release();
  }, 180_000);

  it('lets every pod connect while no policy selects the server', async () => {
    expect(await reaches('client')).toBe(true);
    expect(await reaches('other')).toBe(true);
  });

  it('blocks a connection a deny-all ingress policy covers', async () => {
    await cluster.kubectlOk(['apply', '-f', '-'], { input: policy('deny-all', { podSelector: {}, policyTypes: ['Ingress'] }) });
    await expectReach('client', false, 'deny-all');
    expect(await reaches('other')).toBe(false);
  });

  it('opens it again for the pods an allow rule names, and only for them', async () => {
    await cluster.kubectlOk(['apply', '-f', '-'], {
      input: policy('allow-client', {
        podSelector: { matchLabels: { app: 'server' } },
        policyTypes: ['Ingress'],
        ingress: [{ from: [{ podSelector: { matchLabels: { app: 'client' } } }], ports: [{ port: 8080, protocol: 'TCP' }] }],
      }),
    });
    await expectReach('client', true, 'allow-client');
    expect(await reaches('other')).toBe(false);
  });

  it('blocks the client on its own side with an egress deny-all, and lifts everything when the policies go', async () => {
    await cluster.kubectlOk(['apply', '-f', '-'], { input: policy('client-no-egress', { podSelector: { matchLabels: { app: 'client' } }, policyTypes: ['Egress'] }) });
    await expectReach('client', false, 'client-no-egress');
    // Cluster DNS is a process on the node (not a pod): pod-to-node traffic is never judged.
    const dns = await execTestbox(cluster, ns, 'client', ['resolve', `web.${ns}.svc.cluster.local`]);
    expect(dns.code).toBe(0);
    await cluster.kubectlOk(['delete', 'networkpolicy', '-n', ns, '--all']);
    await expectReach('client', true, 'no policy');
    await expectReach('other', true, 'no policy');
  });
});
