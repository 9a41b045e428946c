/**
 * The connector chart enrolling with a one-time token in the local cluster (issue 18, item 1,
 * chart part): the operator chart, a TunnelConnection whose worker runs as a pod, a token from
 * `underpass connector token`, and the connector chart given only that token and the workers'
 * address. The connector pod makes its own key, enrolls through the tunnel Service, keeps key,
 * certificate and CA in its own Secret (`<fullname>-state`), connects, and a restarted pod uses
 * that Secret instead of enrolling again (the token is single-use: a second enrollment would be
 * refused). Namespaces enforce the restricted Pod Security Standard.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import path from 'node:path';
import { REPO_ROOT } from '../cluster/testenv.js';
import { clusterUnavailable, type LocalCluster, useCluster } from './cluster.js';
import { helmOk, list, pods, removeScenario, restrictedNamespace, step, underpassImage, underpassOk, waitFor, waitForReadyPods } from './kube.js';

const why = await clusterUnavailable();
if (why) console.log(`connector chart enrollment test skipped: ${why}`);
const suite = why ? describe.skip : describe;

const OPERATOR_NS = 'underpass-system';
const TEAM = 'enroll-team';
const EDGE = 'enroll-edge';
const NAMESPACES = [OPERATOR_NS, TEAM, EDGE];
const CONNECTOR = 'site-e';
const SELECTOR = `app.kubernetes.io/instance=${CONNECTOR}`;
const SCENARIO = { connectors: [{ release: CONNECTOR, namespace: EDGE }], tunnelNamespace: TEAM, namespaces: NAMESPACES };

interface Condition { type: string; status: string }
const connected = (t: { status?: { conditions?: Condition[] } }): boolean =>
  (t.status?.conditions ?? []).some((c) => c.type === 'Connected' && c.status === 'True');

suite('connector chart enrolling with a token (local cluster)', () => {
  let cluster: LocalCluster;
  const inStep = <T>(fn: () => Promise<T>): Promise<T> => step(cluster, NAMESPACES, fn);

  beforeAll(async () => {
    cluster = await useCluster();
    await removeScenario(cluster, SCENARIO);
    await underpassImage(cluster);
    for (const ns of NAMESPACES) await restrictedNamespace(cluster, ns);
    await helmOk(cluster, ['install', 'underpass-operator', path.join(REPO_ROOT, 'charts', 'underpass-operator'), '-n', OPERATOR_NS, '--wait', '--timeout', '3m']);
  }, 20 * 60_000);

  afterAll(async () => {
    if (!cluster) return;
    await removeScenario(cluster, SCENARIO);
    await cluster.release();
  }, 300_000);

  it('enrolls with the token alone, keeps its state in its own Secret, and a restarted pod does not enroll again', () => inStep(async () => {
    await cluster.kubectlOk(['apply', '-f', '-'], {
      input: list([{ apiVersion: 'underpass.dev/v1alpha1', kind: 'TunnelConnection', metadata: { name: 'dc1', namespace: TEAM }, spec: { replicas: 1 } }]),
    });
    await cluster.kubectlOk(['wait', '-n', TEAM, '--for=condition=CertificatesReady', 'tunnelconnection/dc1', '--timeout=120s'], { timeoutMs: 130_000 });
    const token = (await underpassOk(cluster, ['connector', 'token', '--connection', `${TEAM}/dc1`, '--name', CONNECTOR, '--ttl', '10m'])).stdout.trim();
    expect(token).toMatch(/^[\w-]+\.[\w-]+\.[\w-]+$/);
    await helmOk(cluster, ['install', CONNECTOR, path.join(REPO_ROOT, 'charts', 'underpass-connector'), '-n', EDGE,
      '--set', `enrollment.token=${token}`, '--set', `config.workers[0]=wss://dc1-tunnel.${TEAM}.svc.cluster.local:443`,
      '--set', 'replicaCount=1',
      '--set', `networkPolicy.workers[0].namespace=${TEAM}`, '--set', 'networkPolicy.workers[0].podLabels.app\\.kubernetes\\.io/instance=dc1',
      '--set', 'networkPolicy.workers[0].ports[0]=8443']);
    const record = await waitFor(`TunnelConnector dc1.${CONNECTOR} Connected`, async () => {
      const r = await cluster.kubectl(['get', 'tunnelconnector', `dc1.${CONNECTOR}`, '-n', TEAM, '-o', 'json']);
      if (r.code !== 0) return undefined;
      const t = JSON.parse(r.stdout) as { status?: { conditions?: Condition[]; enrollment?: { usedAt?: string } } };
      return connected(t) ? t : undefined;
    }, 240_000, 1_000);
    const usedAt = record.status?.enrollment?.usedAt;
    expect(usedAt).toBeDefined();
    const state = JSON.parse(await cluster.kubectlOk(['get', 'secret', `underpass-connector-${CONNECTOR}-state`, '-n', EDGE, '-o', 'json'])) as { data: Record<string, string> };
    expect(Object.keys(state.data).sort()).toEqual(['ca.crt', 'tls.crt', 'tls.key']);
    const [first] = await waitForReadyPods(cluster, EDGE, SELECTOR, 1);

    await cluster.kubectlOk(['delete', 'pod', '-n', EDGE, first!.metadata.name, '--wait=true'], { timeoutMs: 90_000 });
    const [second] = await waitFor('a new connector pod Ready', async () => {
      const ps = (await pods(cluster, EDGE, SELECTOR)).filter((p) => p.metadata.name !== first!.metadata.name && !p.metadata.deletionTimestamp);
      return ps.length === 1 && ps[0]!.status.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ? ps : undefined;
    }, 180_000, 1_000);
    const logs = await cluster.kubectlOk(['logs', '-n', EDGE, second!.metadata.name]);
    expect(logs).toMatch(/restored this connector's certificate from/);
    expect(logs).not.toMatch(/enrolled as connector|TOKEN_USED/);
    const after = JSON.parse(await cluster.kubectlOk(['get', 'tunnelconnector', `dc1.${CONNECTOR}`, '-n', TEAM, '-o', 'json'])) as { status?: { conditions?: Condition[]; enrollment?: { usedAt?: string } } };
    expect(after.status?.enrollment?.usedAt).toBe(usedAt);
    await waitFor('the restarted connector Connected again', async () => {
      const t = JSON.parse(await cluster.kubectlOk(['get', 'tunnelconnector', `dc1.${CONNECTOR}`, '-n', TEAM, '-o', 'json']));
      return connected(t);
    }, 60_000, 1_000);
  }), 10 * 60_000);
});
