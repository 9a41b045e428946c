/**
 * CA rotation with overlap (issue 18, item 3), on the cluster path: the
 * operator (real kube-apiserver, chart RBAC), two worker processes running
 * from what it wrote, a connector enrolled under the old CA, and clients
 * opening new connections through the tunnel all the time. Annotating the
 * TunnelConnection starts the rotation; it completes by itself once every
 * worker and connector has moved, and not one new connection fails.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { X509Certificate } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import YAML from 'yaml';
import { Kube, loadKubeConfig } from '../../operator/kube.js';
import type { Operator } from '../../operator/operator.js';
import { caId, issueConnectorCert, loadCA, pemCertificates, writePemFiles } from '../../tunnel/pki.js';
import { echoServer, exchange, freePort, Proc, removeDir, tempDir, waitFor, waitHttp, type App } from '../e2e/harness.js';
import { applicationMapping, installCrds, OPERATOR_NAMESPACE, operatorKubeconfig, startTestOperator, tunnelConnection } from './operator-fixtures.js';
import { PodFiles } from './pod-files.js';
import { startTestEnv, type TestEnv } from './testenv.js';

const NS = 'team-a';
let env: TestEnv;
let operator: Operator;
let dir: string;
let pod: PodFiles;
const workers: Proc[] = [];
let connector: Proc;
let app: App;
const ports = { tunnel0: 0, tunnel1: 0, admin0: 0, admin1: 0, connectorAdmin: 0, report: 0, app1: 0 };
let cdir: string;

const caSecret = async (): Promise<Record<string, string>> => {
  const uid = await env.kubectlOk(['get', 'tc', 'dc1', '-n', NS, '-o', 'jsonpath={.metadata.uid}']);
  const s = JSON.parse(await env.kubectlOk(['get', 'secret', `ca.${NS}.dc1.${uid}`, '-n', OPERATOR_NAMESPACE, '-o', 'json']));
  return Object.fromEntries(Object.entries(s.data as Record<string, string>).map(([k, v]) => [k, Buffer.from(v, 'base64').toString()]));
};

async function startConnectorProc(): Promise<Proc> {
  const p = new Proc(['connector', '--config', path.join(cdir, 'connector.yaml')]);
  await waitHttp(`http://127.0.0.1:${ports.connectorAdmin}/readyz`, p, 20_000);
  return p;
}

beforeAll(async () => {
  env = await startTestEnv();
  await installCrds(env);
  await env.kubectlOk(['create', 'namespace', NS]);
  dir = await tempDir('underpass-rotation-');
  for (const k of Object.keys(ports) as Array<keyof typeof ports>) ports[k] = await freePort();
  app = await echoServer();
  operator = await startTestOperator(await operatorKubeconfig(env), 'op-rotation', { reportPort: ports.report, reportGraceMs: 1_000 });
  await env.kubectlOk(['apply', '-f', '-'], {
    input: `${tunnelConnection('dc1', NS, { replicas: 2, endpoint: { service: { type: 'ClusterIP' }, hosts: ['localhost'] } })}---\n`
      + applicationMapping('app1', NS, { connection: 'dc1', target: { side: 'Connector', host: '127.0.0.1', port: app.port }, listen: { port: ports.app1 } }),
  });
  await waitFor('worker ConfigMap and Secret', async () => (await env.kubectl(['get', 'configmap/dc1-worker', 'secret/dc1-worker-tls', '-n', NS])).code === 0, 20_000);
  pod = await PodFiles.start(path.join(dir, 'pod'), new Kube(loadKubeConfig(env.kubeconfig)), NS, 'dc1-worker', 'dc1-worker-tls');
  // Two workers of the connection (two pods of the Deployment), on their own ports; the second serves app1 on the next port.
  for (const i of [0, 1] as const) {
    const w = new Proc(['worker', '--config', pod.configFile, '--listen', `127.0.0.1:${ports[`tunnel${i}`]}`, '--admin', `127.0.0.1:${ports[`admin${i}`]}`, '--instance', `dc1-worker-${i}`]);
    workers.push(w);
    await waitHttp(`http://127.0.0.1:${ports[`admin${i}`]}/healthz`, w);
    if (i === 0) await new Promise((r) => setTimeout(r, 300)); // the second one finds app1's port taken and serves the rest
  }
  const ca = await caSecret();
  const c = await issueConnectorCert(await loadCA(ca['ca.crt']!, ca['ca.key']!), { connector: 'site-a' });
  cdir = path.join(dir, 'connector');
  await writePemFiles(cdir, { 'ca.crt': ca['ca.crt']!, 'tls.crt': c.certPem, 'tls.key': c.keyPem });
  await writeFile(path.join(cdir, 'connector.yaml'), YAML.stringify({
    name: 'site-a', worker: [`wss://localhost:${ports.tunnel0}`, `wss://localhost:${ports.tunnel1}`], tls: { cert: 'tls.crt', key: 'tls.key', ca: 'ca.crt' },
    admin: `127.0.0.1:${ports.connectorAdmin}`, allow: [`127.0.0.1:${app.port}`], reconnect: { initialDelay: '100ms', maxDelay: '1s' },
  }));
  connector = await startConnectorProc();
  await waitFor('two sessions', async () => (await fetch(`http://127.0.0.1:${ports.connectorAdmin}/status`).then((r) => r.json()) as { workers: Array<{ connected: boolean }> }).workers.every((w) => w.connected), 20_000);
}, 240_000);

afterAll(async () => {
  const t0 = Date.now();
  const lap = (what: string): void => void process.stderr.write(`[rotation] ${what} stopped after ${Date.now() - t0} ms\n`);
  pod?.stop();
  await connector?.stop();
  lap('connector');
  await Promise.all(workers.map((w) => w.stop()));
  lap('workers');
  await operator?.stop();
  lap('operator');
  await app?.close();
  await env?.stop();
  if (dir) await removeDir(dir);
}, 90_000);

describe('CA rotation with overlap', () => {
  it('rotates on the annotation under load: 0 failed new connections, every worker and the connector moved, the old CA gone', async () => {
    const before = await caSecret();
    const oldId = caId(before['ca.crt']!);
    let ok = 0;
    const failures: string[] = [];
    let running = true;
    const started0 = Date.now();
    const load = (async () => {
      for (let i = 0; running; i++) {
        const r = await exchange(ports.app1, `n${i}`, '127.0.0.1', 5_000);
        if (r.received.toString() === `n${i}`) ok++;
        else failures.push(`${i}: ${r.error?.message ?? `got ${JSON.stringify(r.received.toString())}`} (client port ${r.localPort ?? 'none'}, started ${Date.now() - started0}ms)`);
        await new Promise((res) => setTimeout(res, 20));
      }
    })();
    await waitFor('load running', () => ok > 20, 10_000);

    const started = Date.now();
    const okAtStart = ok;
    await env.kubectlOk(['annotate', 'tc', 'dc1', '-n', NS, 'underpass.dev/rotate-ca=2026-12-06']);
    const after = await waitFor('the rotation to complete', async () => {
      const s = await caSecret();
      return s['ca.crt'] !== before['ca.crt'] && !s['next.crt'] && !s['retiring.crt'] ? s : undefined;
    }, 120_000);
    process.stderr.write(`[rotation] completed ${Date.now() - started} ms after the annotation; ${ok} connections so far\n`);
    const okAtEnd = ok;
    await waitFor('more load after the rotation', () => ok > okAtEnd + 20, 10_000);
    running = false;
    await load;
    if (failures.length > 0) {
      // Whether each process answers at all now, and what it holds (a blocked event loop, a stream stuck open).
      for (const [name, port] of [['worker 0', ports.admin0], ['worker 1', ports.admin1], ['connector', ports.connectorAdmin]] as const) {
        const t0 = Date.now();
        const status = await fetch(`http://127.0.0.1:${port}/status`, { signal: AbortSignal.timeout(3_000) }).then((r) => r.text(), (e: Error) => `no answer: ${e.message}`);
        process.stderr.write(`[rotation] ${name} /status after ${Date.now() - t0} ms: ${status.slice(0, 4_000)}\n`);
      }
      // The worker audits a stream when it ends: an open that got no answer ends at the 15 s open timeout.
      await new Promise((r) => setTimeout(r, 11_000));
      // What each process said about the failed connections (their client port) and around them.
      const clientPorts = failures.map((f) => /client port (\d+)/.exec(f)?.[1]).filter(Boolean);
      const about = (p: Proc, name: string): string => `--- ${name}: audit of the failed connections\n${p.audit.filter((a) => clientPorts.some((port) => String(a.client ?? '').endsWith(`:${port}`))).map((a) => JSON.stringify(a)).join('\n')}\n--- ${name}: log\n${p.logs.slice(-20_000)}`;
      process.stderr.write(`[rotation] failures (load started at 0 ms, annotation at ${started - started0} ms): ${failures.join('; ')}\n${[...workers.map((w, i) => about(w, `worker ${i}`)), about(connector, 'connector')].join('\n')}\n`);
    }
    expect(failures).toEqual([]);
    // New connections went on through the whole rotation (how many depends on the machine's load).
    expect(okAtEnd - okAtStart).toBeGreaterThan(20);
    // One renewal for one switch of signer: a worker that picks up the switch later than another
    // (its bundle still names the old CA first) does not make the connector renew again, and replace
    // every session again (it did: four renewals in 1.2 s).
    expect(connector.logs.match(/renewed this connector's certificate/g)?.length).toBe(1);

    const newId = caId(after['ca.crt']!);
    expect(newId).not.toBe(oldId);
    // What the workers mount: a certificate of the new CA, and only the new CA.
    const tls = JSON.parse(await env.kubectlOk(['get', 'secret', 'dc1-worker-tls', '-n', NS, '-o', 'json']));
    const workerCa = Buffer.from(tls.data['ca.crt'], 'base64').toString();
    expect(pemCertificates(workerCa).map(caId)).toEqual([newId]);
    expect(new X509Certificate(Buffer.from(tls.data['tls.crt'], 'base64')).checkIssued(new X509Certificate(after['ca.crt']!))).toBe(true);
    // The connector renewed under the new CA and trusts it (files on disk, for its next start).
    await waitFor('the connector trusts the new CA only', async () => pemCertificates(await readFile(path.join(cdir, 'ca.crt'), 'utf8')).map(caId).join() === newId, 15_000);
    expect(new X509Certificate(await readFile(path.join(cdir, 'tls.crt'))).checkIssued(new X509Certificate(after['ca.crt']!))).toBe(true);
    const events = JSON.parse(await env.kubectlOk(['get', 'events', '-n', NS, '-o', 'json'])).items as Array<{ reason: string }>;
    expect(['CARotationStarted', 'CARotationSwitched', 'CARotationCompleted'].every((r) => events.some((e) => e.reason === r))).toBe(true);

    // A fresh start from what is on disk works against the rotated workers.
    await connector.stop();
    connector = await startConnectorProc();
    const r = await exchange(ports.app1, 'after restart');
    expect(r.received.toString()).toBe('after restart');
  }, 200_000);
});
