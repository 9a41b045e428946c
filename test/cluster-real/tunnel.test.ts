/**
 * Underpass as it ships, in the local cluster (issue 16's Tests): the image built by image/build.sh,
 * the operator and a connector installed by their Helm charts, pods in namespaces that enforce the
 * `restricted` Pod Security Standard, NetworkPolicies enforced (kube-network-policies).
 *
 *   underpass-system   the operator (2 replicas, one leads; reports reach the leader through
 *                      the selector-less Service whose EndpointSlice the leader writes)
 *   team-a             TunnelConnection dc1 (2 workers, NodePort), an echo server, a client pod
 *   peer               stands for the peer cluster: connector site-a (Helm, certificate from
 *                      `underpass connector bundle --secret`), echo servers, a client pod
 *   the host           connector host-a, outside the cluster, dialling the NodePort
 *
 * The steps run in order and share the state above; each failing step prints the pods, events
 * and logs of the three namespaces. Timings (mapping changes, leader failover) are printed.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import YAML from 'yaml';
import { REPO_ROOT, run } from '../cluster/testenv.js';
import { clusterUnavailable, type LocalCluster, useCluster } from './cluster.js';
import {
  deleteNamespaces, execTestboxOk, helm, helmOk, isReady, list, podSnapshot, pods, restrictedNamespace, service, sleep, step,
  testboxPod, underpassImage, underpassOk, waitFor, waitForReadyPods,
} from './kube.js';

const why = await clusterUnavailable();
if (why) console.log(`Underpass in the local cluster: skipped: ${why}`);
const suite = why ? describe.skip : describe;

const OPERATOR_NS = 'underpass-system';
const OPERATOR_RELEASE = 'underpass-operator';
const TEAM = 'team-a';
const PEER = 'peer';
const TC = 'dc1';
const CONNECTOR = 'site-a';
const CONNECTOR_FULLNAME = `underpass-connector-${CONNECTOR}`;
const NAMESPACES = [OPERATOR_NS, TEAM, PEER];
const WORKER_SELECTOR = `app.kubernetes.io/name=underpass-worker,app.kubernetes.io/instance=${TC}`;
const OPERATOR_SELECTOR = `app.kubernetes.io/name=underpass-operator,app.kubernetes.io/instance=${OPERATOR_RELEASE}`;
/** Listen ports of the mappings (worker side for Connector-side targets, connector side otherwise). */
const PEER_ECHO_PORT = 19001;
const TEAM_ECHO_PORT = 19002;
const PEER_WEB_PORT = 19003;
/** Issue 16: adding, changing and deleting a mapping takes effect within this. */
const MAPPING_DEADLINE_MS = 5_000;
const MIB = 1024 * 1024;

function mapping(name: string, side: 'Connector' | 'Cluster', host: string, port: number, listen: { port: number; address?: string }): object {
  return {
    apiVersion: 'underpass.dev/v1alpha1',
    kind: 'ApplicationMapping',
    metadata: { name, namespace: TEAM },
    spec: { connection: TC, target: { side, host, port }, listen },
  };
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

/**
 * One HTTP GET from the host on a new connection (no keep-alive: a reused connection would
 * keep its stream through the tunnel to the old target); the body, or undefined when it fails
 * (refused, reset, timeout, not 200).
 */
function httpBody(url: string, timeoutMs = 1_000): Promise<string | undefined> {
  return new Promise((resolve) => {
    const req = http.get(url, { agent: false, timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d: string) => { body += d; });
      res.on('end', () => resolve(res.statusCode === 200 ? body : undefined));
      res.on('error', () => resolve(undefined));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', () => resolve(undefined));
  });
}

/** Whether a TCP connection to host:port is refused (nothing listens), within 1 s. */
function refused(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = net.connect({ host, port });
    const done = (v: boolean): void => {
      sock.destroy();
      resolve(v);
    };
    sock.setTimeout(1_000, () => done(false));
    sock.once('connect', () => done(false));
    sock.once('error', (err: NodeJS.ErrnoException) => done(err.code === 'ECONNREFUSED'));
  });
}

/** Milliseconds from `since` until `check` holds (polled every 100 ms, up to `limitMs` * 4 so a slow change is measured, not cut off). */
async function timeUntil(what: string, since: number, limitMs: number, check: () => Promise<boolean>): Promise<number> {
  await waitFor(what, async () => (await check()) || undefined, limitMs * 4, 100);
  return Date.now() - since;
}

interface Metrics { [series: string]: number }
async function metricsOf(ip: string, port: number): Promise<Metrics> {
  const text = await httpBody(`http://${ip}:${port}/metrics`, 3_000);
  if (text === undefined) throw new Error(`no /metrics at ${ip}:${port}`);
  const m: Metrics = {};
  for (const line of text.split('\n')) {
    const match = /^([a-z_:]+(?:\{[^}]*\})?) ([0-9.e+-]+)$/.exec(line);
    if (match) m[match[1]!] = Number(match[2]);
  }
  return m;
}
const ACCEPTED_REPORTS = 'underpass_operator_worker_reports_total{result="accepted"}';

suite('Underpass in the local cluster: Helm charts, restricted pods, both directions, mappings without restarts', () => {
  let cluster: LocalCluster;
  let image = '';
  let work = '';
  let nodePort = 0;
  let appsIp = '';
  let hostConnector: ChildProcess | undefined;
  let hostConnectorLog = '';
  const timings: string[] = [];
  const inStep = <T>(fn: () => Promise<T>): Promise<T> => step(cluster, NAMESPACES, fn, [`${OPERATOR_NS}/`]);

  const tcJson = async (): Promise<any> => JSON.parse(await cluster.kubectlOk(['get', 'tunnelconnection', TC, '-n', TEAM, '-o', 'json']));
  const condition = (obj: any, type: string): { status: string; reason: string; message: string } | undefined =>
    (obj.status?.conditions ?? []).find((c: { type: string }) => c.type === type);
  const leaderOf = async (): Promise<string> =>
    (await cluster.kubectlOk(['get', 'lease', OPERATOR_RELEASE, '-n', OPERATOR_NS, '-o', 'jsonpath={.spec.holderIdentity}'])).trim();
  const leaderSliceIps = async (): Promise<string[]> => {
    const slice = JSON.parse(await cluster.kubectlOk(['get', 'endpointslice', `${OPERATOR_RELEASE}-leader`, '-n', OPERATOR_NS, '-o', 'json'])) as {
      endpoints?: { addresses: string[] }[];
    };
    return (slice.endpoints ?? []).flatMap((e) => e.addresses);
  };
  const podIp = async (ns: string, name: string): Promise<string> =>
    (await cluster.kubectlOk(['get', 'pod', name, '-n', ns, '-o', 'jsonpath={.status.podIP}'])).trim();

  beforeAll(async () => {
    cluster = await useCluster();
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'underpass-cluster-real-'));
    // Leftovers of an interrupted run would make every step below fail on "already exists".
    await helm(cluster, ['uninstall', CONNECTOR, '-n', PEER, '--wait']);
    await helm(cluster, ['uninstall', OPERATOR_RELEASE, '-n', OPERATOR_NS, '--wait']);
    await deleteNamespaces(cluster, NAMESPACES);
    image = await underpassImage(cluster);
    for (const ns of NAMESPACES) await restrictedNamespace(cluster, ns);
    await cluster.kubectlOk(['apply', '-f', '-'], {
      input: list([
        testboxPod(cluster, TEAM, 'echo', ['serve', '-http', ':8080', '-echo', ':9000', '-name', 'team-a']),
        service(TEAM, 'echo', 'echo', [{ name: 'http', port: 8080 }, { name: 'echo', port: 9000 }]),
        testboxPod(cluster, TEAM, 'client', ['sleep']),
        testboxPod(cluster, PEER, 'echo', ['serve', '-http', ':8080', '-echo', ':9000', '-name', 'alpha']),
        service(PEER, 'echo', 'echo', [{ name: 'http', port: 8080 }, { name: 'echo', port: 9000 }]),
        testboxPod(cluster, PEER, 'echo2', ['serve', '-http', ':8080', '-name', 'beta']),
        service(PEER, 'echo2', 'echo2', [{ name: 'http', port: 8080 }]),
        testboxPod(cluster, PEER, 'client', ['sleep']),
      ]),
    });
  }, 20 * 60_000);

  afterAll(async () => {
    hostConnector?.kill('SIGKILL');
    if (!cluster) return;
    if (process.env['UNDERPASS_CLUSTER_KEEP_STATE'] !== '1') {
      await helm(cluster, ['uninstall', CONNECTOR, '-n', PEER, '--wait']);
      await cluster.kubectl(['delete', 'tunnelconnection', '--all', '-n', TEAM, '--wait', '--timeout=60s'], { timeoutMs: 90_000 });
      await helm(cluster, ['uninstall', OPERATOR_RELEASE, '-n', OPERATOR_NS, '--wait']);
      await deleteNamespaces(cluster, NAMESPACES);
    }
    if (timings.length) console.log(`timings:\n  ${timings.join('\n  ')}`);
    fs.rmSync(work, { recursive: true, force: true });
    await cluster.release();
  }, 300_000);

  it('installs the operator with Helm into a restricted namespace: both replicas Ready, the leader publishes its EndpointSlice', () => inStep(async () => {
    const t0 = Date.now();
    await helmOk(cluster, ['install', OPERATOR_RELEASE, path.join(REPO_ROOT, 'charts', 'underpass-operator'), '-n', OPERATOR_NS, '--wait', '--timeout', '3m']);
    timings.push(`helm install of the operator until both replicas Ready: ${Date.now() - t0} ms`);
    const ops = await waitForReadyPods(cluster, OPERATOR_NS, OPERATOR_SELECTOR, 2);
    expect(ops.map((p) => `${p.spec.containers[0]!.name} ${p.spec.containers[0]!.image}`)).toEqual([`operator ${image}`, `operator ${image}`]);
    const ns = JSON.parse(await cluster.kubectlOk(['get', 'namespace', OPERATOR_NS, '-o', 'json'])) as { metadata: { labels: Record<string, string> } };
    expect(ns.metadata.labels['pod-security.kubernetes.io/enforce']).toBe('restricted');
    const leader = await waitFor('a leader in the Lease', async () => (await leaderOf()) || undefined, 60_000);
    expect(ops.map((p) => p.metadata.name)).toContain(leader);
    const leaderIp = await podIp(OPERATOR_NS, leader);
    await waitFor('the leader EndpointSlice to name the leader', async () => (await leaderSliceIps()).join() === leaderIp, 30_000);
  }), 300_000);

  it('runs a TunnelConnection with two workers in a restricted namespace', () => inStep(async () => {
    await cluster.kubectlOk(['apply', '-f', '-'], {
      input: list([
        {
          apiVersion: 'underpass.dev/v1alpha1',
          kind: 'TunnelConnection',
          metadata: { name: TC, namespace: TEAM },
          spec: {
            replicas: 2,
            // NodePort for the connector on the host; its certificate must name the node IP it dials.
            endpoint: { service: { type: 'NodePort', port: 443 }, hosts: [cluster.nodeIp] },
            worker: { drainTimeout: '5s' },
          },
        },
        mapping('peer-echo', 'Connector', `echo.${PEER}.svc.cluster.local`, 9000, { port: PEER_ECHO_PORT }),
        mapping('team-echo', 'Cluster', `echo.${TEAM}.svc.cluster.local`, 9000, { port: TEAM_ECHO_PORT }),
      ]),
    });
    // Workers are Ready only with a connector; Running with every container started is the bar here.
    const workers = await waitFor('2 running workers', async () => {
      const ps = (await pods(cluster, TEAM, WORKER_SELECTOR)).filter((p) => !p.metadata.deletionTimestamp);
      return ps.length === 2 && ps.every((p) => p.status.phase === 'Running' && (p.status.containerStatuses ?? []).every((c) => c.state?.['running'])) ? ps : undefined;
    }, 180_000, 500);
    expect(workers.map((p) => `${p.spec.containers[0]!.name} ${p.spec.containers[0]!.image}`)).toEqual([`worker ${image}`, `worker ${image}`]);
    const tc = await waitFor('CertificatesReady', async () => {
      const t = await tcJson();
      return condition(t, 'CertificatesReady')?.status === 'True' ? t : undefined;
    }, 60_000);
    expect(tc.status.endpoint).toBe(`wss://${cluster.nodeIp}:443`);
    nodePort = Number(await cluster.kubectlOk(['get', 'service', `${TC}-tunnel`, '-n', TEAM, '-o', 'jsonpath={.spec.ports[0].nodePort}']));
    expect(nodePort).toBeGreaterThan(0);
  }), 300_000);

  it('connects a connector installed with Helm in the peer namespace, from a `connector bundle --secret`: workers and connectors Ready', () => inStep(async () => {
    const bundle = await underpassOk(cluster, [
      'connector', 'bundle', '--connection', `${TEAM}/${TC}`, '--name', CONNECTOR, '--secret', '--secret-namespace', PEER,
      '--worker-url', `wss://${TC}-tunnel.${TEAM}.svc.cluster.local:443`,
    ]);
    expect(bundle.stderr).not.toMatch(/PRIVATE KEY/);
    const secret = YAML.parse(bundle.stdout) as { metadata: { name: string }; data: Record<string, string> };
    expect(secret.metadata.name).toBe(CONNECTOR_FULLNAME);
    // What a reviewer of the bundle does: the lists it wrote cover today's mappings; this
    // connector may also dial the peer's web servers, for the mappings added later.
    const config = YAML.parse(Buffer.from(secret.data['connector.yaml']!, 'base64').toString()) as { allow: string[]; bind: string[] };
    expect(config.allow).toEqual([`echo.${PEER}.svc.cluster.local:9000`]);
    expect(config.bind).toEqual([`0.0.0.0:${TEAM_ECHO_PORT}`]);
    config.allow.push(`*.${PEER}.svc.cluster.local:8080`);
    secret.data['connector.yaml'] = Buffer.from(YAML.stringify(config)).toString('base64');
    await cluster.kubectlOk(['apply', '-f', '-'], { input: JSON.stringify(secret) });

    const values = {
      listeners: [{ name: 'team-echo', port: TEAM_ECHO_PORT }],
      networkPolicy: {
        workers: [{ namespace: TEAM, podLabels: { 'app.kubernetes.io/name': 'underpass-worker', 'app.kubernetes.io/instance': TC }, ports: [8443] }],
        targets: [
          { namespace: PEER, podLabels: { app: 'echo' }, ports: [9000, 8080] },
          { namespace: PEER, podLabels: { app: 'echo2' }, ports: [8080] },
        ],
      },
    };
    fs.writeFileSync(path.join(work, 'connector-values.yaml'), YAML.stringify(values));
    const t0 = Date.now();
    await helmOk(cluster, ['install', CONNECTOR, path.join(REPO_ROOT, 'charts', 'underpass-connector'), '-n', PEER,
      '-f', path.join(work, 'connector-values.yaml'), '--wait', '--timeout', '3m']);
    timings.push(`helm install of the connector until both replicas Ready (connected): ${Date.now() - t0} ms`);
    await waitForReadyPods(cluster, PEER, `app.kubernetes.io/instance=${CONNECTOR}`, 2);
    // A worker is Ready while a connector holds a session to it. Each connector replica dials the
    // tunnel Service once and lands on one worker (spreading every connector over every worker is
    // issue 17), so one or both workers are Ready: exactly those status.connectors names (one
    // entry per connector and worker).
    let withSession = new Set<string>();
    let seen = '';
    const tc = await waitFor('TunnelConnection Ready, its Ready workers those with a session of site-a', async () => {
      const t = await tcJson();
      withSession = new Set((t.status.connectors ?? []).filter((c: { name: string }) => c.name === CONNECTOR).map((c: { worker: string }) => c.worker));
      const ps = (await pods(cluster, TEAM, WORKER_SELECTOR)).filter((p) => !p.metadata.deletionTimestamp);
      seen = `Ready ${condition(t, 'Ready')?.status}, status.workers ${JSON.stringify(t.status.workers)}, sessions on ${[...withSession].join(' ')}, ` +
        `pods ${ps.map((p) => `${p.metadata.name} ${p.status.phase} ready=${isReady(p)}`).join(', ')}`;
      return condition(t, 'Ready')?.status === 'True' && withSession.size > 0 && t.status.workers?.ready === withSession.size &&
        ps.length === 2 && ps.every((p) => p.status.phase === 'Running' && isReady(p) === withSession.has(p.metadata.name)) ? t : undefined;
    }, 60_000, 500).catch((err: Error) => { throw new Error(`${err.message}; last seen: ${seen}`); });
    expect(tc.status.readyConnectors).toBe(1);
    timings.push(`workers Ready: ${withSession.size} of 2 (those holding a connector session)`);
    // Every pod of ours was admitted where the restricted standard is enforced: no ReplicaSet
    // reports a refused pod.
    for (const ns of NAMESPACES) {
      const events = await cluster.kubectlOk(['get', 'events', '-n', ns, '--field-selector', 'reason=FailedCreate', '-o', 'name']);
      expect(`${ns}: ${events.trim()}`).toBe(`${ns}: `);
    }
    for (const name of ['peer-echo', 'team-echo']) {
      await waitFor(`mapping ${name} Ready`, async () => {
        const am = JSON.parse(await cluster.kubectlOk(['get', 'applicationmapping', name, '-n', TEAM, '-o', 'json']));
        return condition(am, 'Ready')?.status === 'True';
      }, 30_000);
    }
  }), 300_000);

  it('carries a client pod to a target pod in peer through the apps Service by its DNS name (Connector-side), bytes intact', () => inStep(async () => {
    const out = await execTestboxOk(cluster, TEAM, 'client', ['echo-check', '-bytes', String(4 * MIB), '-timeout', '30s', `${TC}-apps.${TEAM}.svc.cluster.local:${PEER_ECHO_PORT}`]);
    expect(out).toMatch(new RegExp(`^ok ${4 * MIB} bytes sha256=[0-9a-f]{64}\\n$`));
  }), 120_000);

  it('carries a pod in peer to a cluster Service through the connector (Cluster-side), bytes intact', () => inStep(async () => {
    const out = await execTestboxOk(cluster, PEER, 'client', ['echo-check', '-bytes', String(4 * MIB), '-timeout', '30s', `${CONNECTOR_FULLNAME}.${PEER}.svc.cluster.local:${TEAM_ECHO_PORT}`]);
    expect(out).toMatch(new RegExp(`^ok ${4 * MIB} bytes sha256=[0-9a-f]{64}\\n$`));
  }), 120_000);

  it('sends worker reports to the leader through kube-proxy, and to the new leader after the leader pod is deleted', () => inStep(async () => {
    const leader = await leaderOf();
    const ops = await waitForReadyPods(cluster, OPERATOR_NS, OPERATOR_SELECTOR, 2);
    const standby = ops.find((p) => p.metadata.name !== leader)!;
    const leaderIp = ops.find((p) => p.metadata.name === leader)!.status.podIP!;
    expect(await leaderSliceIps()).toEqual([leaderIp]);
    // Two workers report every 2 s: the leader's count grows, the standby's stays at nothing.
    const before = (await metricsOf(leaderIp, 8080))[ACCEPTED_REPORTS] ?? 0;
    await waitFor('reports accepted by the leader', async () => ((await metricsOf(leaderIp, 8080))[ACCEPTED_REPORTS] ?? 0) >= before + 2, 15_000, 500);
    expect((await metricsOf(standby.status.podIP!, 8080))[ACCEPTED_REPORTS] ?? 0).toBe(0);

    const t0 = Date.now();
    await cluster.kubectlOk(['delete', 'pod', leader, '-n', OPERATOR_NS, '--wait=false']);
    const next = await waitFor('a new leader', async () => {
      const l = await leaderOf();
      return l && l !== leader ? l : undefined;
    }, 60_000, 200);
    const tLeader = Date.now() - t0;
    const nextIp = await podIp(OPERATOR_NS, next);
    await waitFor('the EndpointSlice to name the new leader', async () => (await leaderSliceIps()).join() === nextIp, 30_000, 200);
    const tSlice = Date.now() - t0;
    await waitFor('reports accepted by the new leader', async () => ((await metricsOf(nextIp, 8080))[ACCEPTED_REPORTS] ?? 0) >= 2, 30_000, 200);
    const tReports = Date.now() - t0;
    timings.push(`leader pod deleted -> new leader ${tLeader} ms, its EndpointSlice ${tSlice} ms, reports reach it ${tReports} ms`);
    // The standby, or the replacement the Deployment starts at once: both are candidates for the
    // released Lease, and which one asks first is a race (CI saw the replacement win).
    const live = (await pods(cluster, OPERATOR_NS, OPERATOR_SELECTOR)).filter((p) => !p.metadata.deletionTimestamp).map((p) => p.metadata.name);
    expect(live).toContain(next);
    expect(next).not.toBe(leader);
    timings.push(`the new leader is ${next === standby.metadata.name ? 'the standby' : 'the replacement pod'}`);
    // The Deployment replaces the deleted pod: both replicas Ready again.
    await waitForReadyPods(cluster, OPERATOR_NS, OPERATOR_SELECTOR, 2);
  }), 180_000);

  it(`adds, changes and deletes an ApplicationMapping within ${MAPPING_DEADLINE_MS / 1000} s, restarting no pod`, () => inStep(async () => {
    appsIp = (await cluster.kubectlOk(['get', 'service', `${TC}-apps`, '-n', TEAM, '-o', 'jsonpath={.spec.clusterIP}'])).trim();
    const before = await podSnapshot(cluster, NAMESPACES);
    const generation = (await cluster.kubectlOk(['get', 'deployment', `${TC}-worker`, '-n', TEAM, '-o', 'jsonpath={.metadata.generation}'])).trim();
    const workerIps = (await pods(cluster, TEAM, WORKER_SELECTOR)).map((p) => p.status.podIP!);
    const url = `http://${appsIp}:${PEER_WEB_PORT}/`;

    let t0 = Date.now();
    await cluster.kubectlOk(['apply', '-f', '-'], { input: JSON.stringify(mapping('peer-web', 'Connector', `echo.${PEER}.svc.cluster.local`, 8080, { port: PEER_WEB_PORT })) });
    const added = await timeUntil('the new mapping to answer', t0, MAPPING_DEADLINE_MS, async () => (await httpBody(url))?.startsWith('alpha ') ?? false);

    t0 = Date.now();
    await cluster.kubectlOk(['patch', 'applicationmapping', 'peer-web', '-n', TEAM, '--type=merge', '-p', JSON.stringify({ spec: { target: { host: `echo2.${PEER}.svc.cluster.local` } } })]);
    const changed = await timeUntil('the changed target to answer', t0, MAPPING_DEADLINE_MS, async () => (await httpBody(url))?.startsWith('beta ') ?? false);

    t0 = Date.now();
    await cluster.kubectlOk(['delete', 'applicationmapping', 'peer-web', '-n', TEAM, '--wait=false']);
    const deleted = await timeUntil('every worker to close the listener', t0, MAPPING_DEADLINE_MS, async () =>
      (await Promise.all(workerIps.map((ip) => refused(ip, PEER_WEB_PORT)))).every(Boolean));
    timings.push(`mapping added -> answers ${added} ms; target changed -> new target answers ${changed} ms; deleted -> every worker refuses ${deleted} ms`);
    expect(added).toBeLessThanOrEqual(MAPPING_DEADLINE_MS);
    expect(changed).toBeLessThanOrEqual(MAPPING_DEADLINE_MS);
    expect(deleted).toBeLessThanOrEqual(MAPPING_DEADLINE_MS);
    // The other mappings still work, from a pod, by name.
    expect(await execTestboxOk(cluster, TEAM, 'client', ['echo-check', '-bytes', String(MIB), `${TC}-apps.${TEAM}.svc.cluster.local:${PEER_ECHO_PORT}`])).toMatch(/^ok /);
    expect(await podSnapshot(cluster, NAMESPACES)).toEqual(before);
    expect((await cluster.kubectlOk(['get', 'deployment', `${TC}-worker`, '-n', TEAM, '-o', 'jsonpath={.metadata.generation}'])).trim()).toBe(generation);
  }), 180_000);

  it("connects a connector on the host through the tunnel Service's NodePort, bytes intact", () => inStep(async () => {
    const dir = path.join(work, 'host-a');
    await underpassOk(cluster, ['connector', 'bundle', '--connection', `${TEAM}/${TC}`, '--name', 'host-a', '--out', dir,
      '--worker-url', `wss://${cluster.nodeIp}:${nodePort}`]);
    // A Cluster-side mapping for this host only (its listener on loopback); this connector dials
    // nothing (allow: []), so the worker sends it no Connector-side stream.
    const listenPort = await freePort();
    const adminPort = await freePort();
    const configFile = path.join(dir, 'connector.yaml');
    const config = YAML.parse(fs.readFileSync(configFile, 'utf8')) as Record<string, unknown>;
    Object.assign(config, { allow: [], bind: [`127.0.0.1:${listenPort}`], admin: `127.0.0.1:${adminPort}` });
    fs.writeFileSync(configFile, YAML.stringify(config));
    await cluster.kubectlOk(['apply', '-f', '-'], {
      input: JSON.stringify(mapping('host-echo', 'Cluster', `echo.${TEAM}.svc.cluster.local`, 9000, { port: listenPort, address: '127.0.0.1' })),
    });
    hostConnector = spawn(path.join(REPO_ROOT, 'bin', 'underpass'), ['connector', '--config', configFile], { stdio: ['ignore', 'pipe', 'pipe'] });
    hostConnector.stdout!.on('data', (d: Buffer) => { hostConnectorLog += d.toString(); });
    hostConnector.stderr!.on('data', (d: Buffer) => { hostConnectorLog += d.toString(); });
    try {
      await waitFor('the host connector /readyz', async () => (await httpBody(`http://127.0.0.1:${adminPort}/readyz`)) !== undefined, 60_000, 250);
      await waitFor('host-a in the TunnelConnection status', async () =>
        ((await tcJson()).status.connectors ?? []).some((c: { name: string }) => c.name === 'host-a'), 30_000, 500);
      // Its listener opens once the mapping reaches it (through a report answer).
      const testbox = await waitFor('the host listener to carry the echo', async () => {
        const r = await run(cluster.testboxBin, ['echo-check', '-bytes', String(4 * MIB), '-timeout', '20s', `127.0.0.1:${listenPort}`], { timeoutMs: 30_000 });
        return r.code === 0 ? r.stdout : undefined;
      }, 30_000, 500);
      expect(testbox).toMatch(new RegExp(`^ok ${4 * MIB} bytes sha256=[0-9a-f]{64}\\n$`));
    } catch (err) {
      (err as Error).message += `\n----- host connector log -----\n${hostConnectorLog.slice(-6000)}`;
      throw err;
    } finally {
      const exited = new Promise((r) => hostConnector!.once('exit', r));
      hostConnector.kill('SIGTERM');
      await Promise.race([exited, sleep(40_000)]);
      hostConnector.kill('SIGKILL');
      hostConnector = undefined;
      await cluster.kubectl(['delete', 'applicationmapping', 'host-echo', '-n', TEAM]);
    }
  }), 180_000);

  /** Every object in `ns` except events and those `keep` accepts, as "kind/name" (resource types from discovery). */
  const objectsIn = async (ns: string, keep: (kindName: string) => boolean): Promise<string[]> => {
    const types = (await cluster.kubectlOk(['api-resources', '--verbs=list', '--namespaced', '-o', 'name']))
      .split('\n').map((s) => s.trim()).filter((s) => s && !/^events(\.events\.k8s\.io)?$/.test(s));
    const items = (JSON.parse(await cluster.kubectlOk(['get', types.join(','), '-n', ns, '-o', 'json', '--ignore-not-found'], { timeoutMs: 60_000 })) as {
      items: { kind: string; metadata: { name: string } }[];
    }).items;
    return items.map((i) => `${i.kind}/${i.metadata.name}`).filter((k) => !keep(k)).sort();
  };
  const mine = (ns: string) => (k: string): boolean =>
    ['ServiceAccount/default', 'ConfigMap/kube-root-ca.crt'].includes(k) ||
    /^(Pod|Service|Endpoints)\/(echo|echo2|client)$/.test(k) || /^EndpointSlice\/(echo|echo2)-[a-z0-9]+$/.test(k) ||
    (ns === TEAM && k.startsWith('ApplicationMapping/')) ||
    // The bundle's Secret: applied by hand (kubectl apply), not by Helm.
    (ns === PEER && k === `Secret/${CONNECTOR_FULLNAME}`);

  it('removes every pod and object of the TunnelConnection when it is deleted', () => inStep(async () => {
    const t0 = Date.now();
    await cluster.kubectlOk(['delete', 'tunnelconnection', TC, '-n', TEAM, '--wait', '--timeout=90s'], { timeoutMs: 120_000 });
    await waitFor('the worker pods to be gone', async () => (await pods(cluster, TEAM, WORKER_SELECTOR)).length === 0, 90_000, 500);
    timings.push(`TunnelConnection deleted -> workers gone ${Date.now() - t0} ms`);
    expect(await objectsIn(TEAM, mine(TEAM))).toEqual([]);
    const am = JSON.parse(await cluster.kubectlOk(['get', 'applicationmapping', 'peer-echo', '-n', TEAM, '-o', 'json']));
    await waitFor('mapping ConnectionNotFound', async () => {
      const a = JSON.parse(await cluster.kubectlOk(['get', 'applicationmapping', 'peer-echo', '-n', TEAM, '-o', 'json']));
      return condition(a, 'Ready')?.reason === 'ConnectionNotFound';
    }, 30_000).catch((err) => { throw new Error(`${(err as Error).message}\n${JSON.stringify(am.status)}`); });
    await cluster.kubectlOk(['delete', 'applicationmapping', '--all', '-n', TEAM]);
  }), 180_000);

  it('leaves nothing behind after helm uninstall of both charts (the CRDs stay, as Helm keeps crds/ by design)', () => inStep(async () => {
    await helmOk(cluster, ['uninstall', CONNECTOR, '-n', PEER, '--wait', '--timeout', '2m']);
    await waitFor('the connector pods to be gone', async () => (await pods(cluster, PEER, `app.kubernetes.io/instance=${CONNECTOR}`)).length === 0, 90_000, 500);
    expect(await objectsIn(PEER, mine(PEER))).toEqual([]);

    await helmOk(cluster, ['uninstall', OPERATOR_RELEASE, '-n', OPERATOR_NS, '--wait', '--timeout', '2m']);
    await waitFor('the operator pods to be gone', async () => (await pods(cluster, OPERATOR_NS)).length === 0, 90_000, 500);
    // Garbage collection (owner references) is asynchronous: give it a moment to settle.
    const left = await waitFor('the operator namespace to be empty', async () => {
      const l = await objectsIn(OPERATOR_NS, (k) => ['ServiceAccount/default', 'ConfigMap/kube-root-ca.crt'].includes(k));
      return l.length === 0 ? l : undefined;
    }, 20_000, 1_000).catch(async () => objectsIn(OPERATOR_NS, (k) => ['ServiceAccount/default', 'ConfigMap/kube-root-ca.crt'].includes(k)));
    expect(left).toEqual([]);
    const clusterScoped = (await cluster.kubectlOk(['get', 'clusterroles,clusterrolebindings,validatingwebhookconfigurations,mutatingwebhookconfigurations,validatingadmissionpolicies,validatingadmissionpolicybindings,priorityclasses,customresourcedefinitions',
      '-o', 'jsonpath={range .items[*]}{.kind}/{.metadata.name} {.metadata.annotations.meta\\.helm\\.sh/release-name}{"\\n"}{end}'])).split('\n')
      // Ours: the charts' releases, their names, our API group (the cluster's own "underpass:..." roles are not).
      .filter((l) => /underpass-operator|underpass-connector|underpass\.dev| (underpass-operator|site-a)$/.test(l));
    // Helm installs the chart's crds/ but never deletes them (it would delete every
    // TunnelConnection with them): only the three CRDs may remain.
    expect(clusterScoped.map((l) => l.trim()).sort()).toEqual([
      'CustomResourceDefinition/applicationmappings.underpass.dev',
      'CustomResourceDefinition/tunnelconnections.underpass.dev',
      'CustomResourceDefinition/tunnelconnectors.underpass.dev',
    ]);
  }), 300_000);
});
