/**
 * The full mesh in the local cluster (issue 17, first real-cluster round): a TunnelConnection with
 * three worker pods and a connector installed by its chart with two replicas. Every connector
 * process holds a session with every worker (the TunnelConnection's status.mesh says so), every
 * worker is Ready, and a worker pod deleted the way a rollout deletes it (graceful, drained) under
 * steady request/response load from a client pod fails no new connection and breaks no stream;
 * its replacement joins the mesh. The load is `underpass loadtest run` from the image, in a pod.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import path from 'node:path';
import YAML from 'yaml';
import { REPO_ROOT } from '../cluster/testenv.js';
import { clusterUnavailable, type LocalCluster, useCluster } from './cluster.js';
import {
  helmOk, list, pods, removeScenario, RESTRICTED_CONTAINER, restrictedNamespace, service, sleep, step, testboxPod, underpassImage,
  underpassOk, waitFor, waitForReadyPods,
} from './kube.js';

const why = await clusterUnavailable();
if (why) console.log(`full mesh in the local cluster: skipped: ${why}`);
const suite = why ? describe.skip : describe;

const OPERATOR_NS = 'underpass-system';
const TEAM = 'ha-team';
const PEER = 'ha-peer';
const NAMESPACES = [OPERATOR_NS, TEAM, PEER];
const CONNECTOR = 'site-h';
const WORKERS = 3;
const WORKER_SELECTOR = 'app.kubernetes.io/name=underpass-worker,app.kubernetes.io/instance=dc1';
const CONNECTOR_SELECTOR = `app.kubernetes.io/instance=${CONNECTOR}`;
const PORT = 19200;
const SCENARIO = { connectors: [{ release: CONNECTOR, namespace: PEER }], tunnelNamespace: TEAM, namespaces: NAMESPACES };

interface Mesh { workers: string[]; connectors: Array<{ name: string; host?: string; workers: string[]; missing: string[] }> }
interface Summary { total: { connections: number; completed: number; requests: number; failedNew: number; broken: number }; failures: unknown[] }

suite('full mesh in the local cluster: 2 connector replicas x 3 worker pods', () => {
  let cluster: LocalCluster;
  let image = '';
  const timings: string[] = [];
  const inStep = <T>(fn: () => Promise<T>): Promise<T> => step(cluster, NAMESPACES, fn);
  const mesh = async (): Promise<Mesh | undefined> =>
    (JSON.parse(await cluster.kubectlOk(['get', 'tunnelconnection', 'dc1', '-n', TEAM, '-o', 'json'])) as { status?: { mesh?: Mesh } }).status?.mesh;
  /** The mesh once both connector processes hold a session with every one of `names` (and miss none). */
  const complete = (names: string[]) => async (): Promise<Mesh | undefined> => {
    const m = await mesh();
    const want = [...names].sort().join();
    return m && [...m.workers].sort().join() === want && m.connectors.length === 2 &&
      m.connectors.every((c) => c.name === CONNECTOR && [...c.workers].sort().join() === want && c.missing.length === 0) ? m : undefined;
  };
  const workerNames = async (): Promise<string[]> =>
    (await pods(cluster, TEAM, WORKER_SELECTOR)).filter((p) => !p.metadata.deletionTimestamp).map((p) => p.metadata.name).sort();

  beforeAll(async () => {
    cluster = await useCluster();
    await removeScenario(cluster, SCENARIO);
    image = await underpassImage(cluster);
    for (const ns of NAMESPACES) await restrictedNamespace(cluster, ns);
    await cluster.kubectlOk(['apply', '-f', '-'], {
      input: list([
        testboxPod(cluster, PEER, 'echo', ['serve', '-http', ':8080', '-echo', ':9000', '-name', 'peer']),
        service(PEER, 'echo', 'echo', [{ name: 'echo', port: 9000 }]),
      ]),
    });
    await helmOk(cluster, ['install', 'underpass-operator', path.join(REPO_ROOT, 'charts', 'underpass-operator'), '-n', OPERATOR_NS, '--wait', '--timeout', '3m']);
  }, 20 * 60_000);

  afterAll(async () => {
    if (!cluster) return;
    if (timings.length) console.log(`timings:\n  ${timings.join('\n  ')}`);
    await removeScenario(cluster, SCENARIO);
    await cluster.release();
  }, 300_000);

  it('every connector process holds a session with every worker, status.mesh shows it, and every worker is Ready', () => inStep(async () => {
    await cluster.kubectlOk(['apply', '-f', '-'], {
      input: list([
        { apiVersion: 'underpass.dev/v1alpha1', kind: 'TunnelConnection', metadata: { name: 'dc1', namespace: TEAM }, spec: { replicas: WORKERS } },
        {
          apiVersion: 'underpass.dev/v1alpha1', kind: 'ApplicationMapping', metadata: { name: 'peer-echo', namespace: TEAM },
          spec: { connection: 'dc1', target: { side: 'Connector', host: `echo.${PEER}.svc.cluster.local`, port: 9000 }, listen: { port: PORT } },
        },
      ]),
    });
    await cluster.kubectlOk(['wait', '-n', TEAM, '--for=condition=CertificatesReady', 'tunnelconnection/dc1', '--timeout=120s'], { timeoutMs: 130_000 });
    const bundle = await underpassOk(cluster, ['connector', 'bundle', '--connection', `${TEAM}/dc1`, '--name', CONNECTOR, '--secret', '--secret-namespace', PEER,
      '--worker-url', `wss://dc1-tunnel.${TEAM}.svc.cluster.local:443`]);
    expect((YAML.parse(bundle.stdout) as { metadata: { name: string } }).metadata.name).toBe(`underpass-connector-${CONNECTOR}`);
    await cluster.kubectlOk(['apply', '-f', '-'], { input: bundle.stdout });
    const values = {
      replicaCount: 2,
      networkPolicy: {
        workers: [{ namespace: TEAM, podLabels: { 'app.kubernetes.io/name': 'underpass-worker', 'app.kubernetes.io/instance': 'dc1' }, ports: [8443] }],
        targets: [{ namespace: PEER, podLabels: { app: 'echo' }, ports: [9000] }],
      },
    };
    const t0 = Date.now();
    await helmOk(cluster, ['install', CONNECTOR, path.join(REPO_ROOT, 'charts', 'underpass-connector'), '-n', PEER, '--set-json', `replicaCount=${values.replicaCount}`,
      '--set-json', `networkPolicy=${JSON.stringify(values.networkPolicy)}`, '--wait', '--timeout', '3m']);
    const names = await waitFor(`${WORKERS} worker pods`, async () => ((await workerNames()).length === WORKERS ? workerNames() : undefined), 120_000, 500);
    const m = await waitFor('the full mesh in status.mesh', complete(names), 120_000, 1_000)
      .catch(async (err: Error) => { throw new Error(`${err.message}; status.mesh: ${JSON.stringify(await mesh())}`); });
    timings.push(`connector chart installed -> full mesh (2 processes x ${WORKERS} workers) in status: ${Date.now() - t0} ms`);
    expect(new Set(m.connectors.map((c) => c.host)).size).toBe(2); // two processes, one name
    await waitForReadyPods(cluster, TEAM, WORKER_SELECTOR, WORKERS, 60_000);
    await waitForReadyPods(cluster, PEER, CONNECTOR_SELECTOR, 2, 60_000);
    const tc = JSON.parse(await cluster.kubectlOk(['get', 'tunnelconnection', 'dc1', '-n', TEAM, '-o', 'json'])) as { status: { conditions: Array<{ type: string; status: string }> } };
    expect(tc.status.conditions.find((c) => c.type === 'Degraded')?.status).not.toBe('True');
  }), 10 * 60_000);

  /**
   * Runs `underpass loadtest run` in a pod (20 clients, 10 round trips of 64 B per connection, new
   * connections all the time) for `seconds`; after 8 s of steady load runs `event`; returns the
   * summary and records a row of the table docs/ha.md shows.
   */
  let loads = 0;
  const duringLoad = async (name: string, seconds: number, event: () => Promise<void>): Promise<Summary> => {
    const pod = `load-${++loads}`;
    await cluster.kubectlOk(['apply', '-f', '-'], {
      input: JSON.stringify({
        apiVersion: 'v1', kind: 'Pod', metadata: { name: pod, namespace: TEAM },
        spec: {
          restartPolicy: 'Never',
          automountServiceAccountToken: false,
          securityContext: { runAsNonRoot: true, runAsUser: 65532, seccompProfile: { type: 'RuntimeDefault' } },
          containers: [{
            name: 'load', image, imagePullPolicy: 'IfNotPresent',
            args: ['loadtest', 'run', '--target', `peer=dc1-apps.${TEAM}.svc.cluster.local:${PORT},20`, '--duration', `${seconds}s`, '--requests', '10', '--interval', '50ms'],
            resources: { requests: { cpu: '50m', memory: '64Mi' }, limits: { memory: '256Mi' } },
            securityContext: RESTRICTED_CONTAINER,
          }],
        },
      }),
    });
    await cluster.kubectlOk(['wait', '-n', TEAM, '--for=jsonpath={.status.phase}=Running', `pod/${pod}`, '--timeout=60s'], { timeoutMs: 70_000 });
    await sleep(8_000); // steady load first
    const t0 = Date.now();
    await event();
    const eventMs = Date.now() - t0;
    await cluster.kubectlOk(['wait', '-n', TEAM, '--for=jsonpath={.status.phase}=Succeeded', `pod/${pod}`, `--timeout=${seconds + 60}s`], { timeoutMs: (seconds + 70) * 1000 });
    const out = await cluster.kubectlOk(['logs', '-n', TEAM, pod]);
    const summary = JSON.parse(out.slice(out.indexOf('{\n'))) as Summary;
    table.push(`| ${name} | ${(eventMs / 1000).toFixed(1)} s | ${summary.total.connections} | ${summary.total.requests} | ${summary.total.failedNew} | ${summary.total.broken} |`);
    return summary;
  };
  const table: string[] = [];
  const expectNoFailures = (summary: Summary): void => {
    expect(summary.total.connections).toBeGreaterThan(100);
    expect({ failedNew: summary.total.failedNew, broken: summary.total.broken, failures: summary.failures.slice(0, 5) })
      .toEqual({ failedNew: 0, broken: 0, failures: [] });
  };
  /** Waits until the mesh is complete over the current worker pods (`count` of them). */
  const meshOf = async (count: number, what: string): Promise<void> => {
    const names = await waitFor(`${count} worker pods (${what})`, async () => {
      const now = await workerNames();
      return now.length === count ? now : undefined;
    }, 180_000, 500);
    await waitFor(`the full mesh over ${count} workers (${what})`, async () => {
      const current = await workerNames();
      return current.join() === names.join() ? complete(names)() : undefined;
    }, 120_000, 1_000).catch(async (err: Error) => { throw new Error(`${err.message}; status.mesh: ${JSON.stringify(await mesh())}`); });
  };

  it('a worker pod deleted as a rollout deletes it, under steady load: 0 failed new connections, 0 broken streams; its replacement joins the mesh', () => inStep(async () => {
    const victim = (await workerNames())[0]!;
    expectNoFailures(await duringLoad('worker pod deleted (graceful, drained), replacement in the full mesh', 40, async () => {
      await cluster.kubectlOk(['delete', 'pod', '-n', TEAM, victim, '--wait=false']);
      await waitFor('the victim out of the worker set', async () => !(await workerNames()).includes(victim), 60_000, 500);
      await meshOf(WORKERS, 'after the deletion');
    }));
  }), 10 * 60_000);

  it('scaling the TunnelConnection 3 -> 5 -> 3 under steady load fails nothing; the mesh follows', () => inStep(async () => {
    expectNoFailures(await duringLoad('replicas 3 -> 5 -> 3, the full mesh at each', 70, async () => {
      await cluster.kubectlOk(['patch', 'tunnelconnection', 'dc1', '-n', TEAM, '--type=merge', '-p', '{"spec":{"replicas":5}}']);
      await meshOf(5, 'scaled up');
      await cluster.kubectlOk(['patch', 'tunnelconnection', 'dc1', '-n', TEAM, '--type=merge', '-p', `{"spec":{"replicas":${WORKERS}}}`]);
      await meshOf(WORKERS, 'scaled down');
    }));
  }), 10 * 60_000);

  it('a rollout of the connector Deployment under steady load fails nothing; the new replicas join every worker', () => inStep(async () => {
    expectNoFailures(await duringLoad('connector Deployment rollout (2 replicas), the full mesh after', 70, async () => {
      await cluster.kubectlOk(['rollout', 'restart', `deployment/underpass-connector-${CONNECTOR}`, '-n', PEER]);
      await cluster.kubectlOk(['rollout', 'status', `deployment/underpass-connector-${CONNECTOR}`, '-n', PEER, '--timeout=180s'], { timeoutMs: 190_000 });
      await meshOf(WORKERS, 'after the connector rollout');
    }));
  }), 10 * 60_000);

  it('a rollout of the operator under steady load does not touch the data plane', () => inStep(async () => {
    expectNoFailures(await duringLoad('operator rollout (2 replicas, the leader moves)', 40, async () => {
      await cluster.kubectlOk(['rollout', 'restart', 'deployment/underpass-operator', '-n', OPERATOR_NS]);
      await cluster.kubectlOk(['rollout', 'status', 'deployment/underpass-operator', '-n', OPERATOR_NS, '--timeout=180s'], { timeoutMs: 190_000 });
    }));
    console.log(`| event | event took | connections | round trips | failed new | broken |\n|---|---|---|---|---|---|\n${table.join('\n')}`);
  }), 10 * 60_000);
});
