/**
 * The cluster path end to end: the operator (real kube-apiserver) writes a
 * worker ConfigMap and Secret; a worker process runs from exactly those files
 * (PodFiles does what the kubelet would); a connector runs from
 * `underpass connector bundle`; traffic flows; status and live changes follow.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { X509Certificate } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import tls from 'node:tls';
import YAML from 'yaml';
import { Kube, loadKubeConfig } from '../../operator/kube.js';
import type { Operator } from '../../operator/operator.js';
import { BIN, echoServer, exchange, freePort, getJson, Proc, removeDir, tempDir, waitFor, waitHttp, type App } from '../e2e/harness.js';
import { applicationMapping, installCrds, operatorKubeconfig, startTestOperator, tunnelConnection } from './operator-fixtures.js';
import { PodFiles } from './pod-files.js';
import { run, startTestEnv, type TestEnv } from './testenv.js';

const NS = 'team-a';
let env: TestEnv;
let operator: Operator;
let dir: string;
let pod: PodFiles;
let worker: Proc;
let connector: Proc | undefined;
let app: App;
const ports = { tunnel: 0, admin: 0, connectorAdmin: 0, report: 0, app1: 0, app2: 0 };

async function tc(): Promise<any> {
  return JSON.parse(await env.kubectlOk(['get', 'tc', 'dc1', '-n', NS, '-o', 'json']));
}

async function startConnector(): Promise<Proc> {
  const p = new Proc(['connector', '--config', path.join(dir, 'bundle', 'connector.yaml')]);
  await waitHttp(`http://127.0.0.1:${ports.connectorAdmin}/readyz`, p, 20_000);
  return p;
}

beforeAll(async () => {
  env = await startTestEnv();
  await installCrds(env);
  await env.kubectlOk(['create', 'namespace', NS]);
  dir = await tempDir('underpass-cluster-');
  for (const k of Object.keys(ports) as Array<keyof typeof ports>) ports[k] = await freePort();
  app = await echoServer();
  operator = await startTestOperator(await operatorKubeconfig(env), 'op-e2e', { reportPort: ports.report, reportGraceMs: 1_000 });
  await env.kubectlOk(['apply', '-f', '-'], { input: `${tunnelConnection('dc1', NS, { endpoint: { service: { type: 'ClusterIP' }, hosts: ['localhost'] } })}---\n${applicationMapping('app1', NS, { connection: 'dc1', target: { side: 'Connector', host: '127.0.0.1', port: app.port }, listen: { port: ports.app1 } })}` });
  const kube = new Kube(loadKubeConfig(env.kubeconfig));
  await waitFor('worker ConfigMap and Secret', async () => {
    const r = await env.kubectl(['get', 'configmap/dc1-worker', 'secret/dc1-worker-tls', '-n', NS]);
    return r.code === 0;
  }, 20_000);
  pod = await PodFiles.start(path.join(dir, 'pod'), kube, NS, 'dc1-worker', 'dc1-worker-tls');
  worker = new Proc(['worker', '--config', pod.configFile, '--listen', `127.0.0.1:${ports.tunnel}`, '--admin', `127.0.0.1:${ports.admin}`, '--instance', 'dc1-worker-0']);
  await waitHttp(`http://127.0.0.1:${ports.admin}/healthz`, worker);
  const bundle = await run(process.execPath, [BIN, 'connector', 'bundle', '--kubeconfig', env.kubeconfig, '--connection', `${NS}/dc1`, '--name', 'site-a', '--out', path.join(dir, 'bundle'), '--worker-url', `wss://localhost:${ports.tunnel}`]);
  if (bundle.code !== 0) throw new Error(`bundle failed: ${bundle.stderr}`);
  const cfgFile = path.join(dir, 'bundle', 'connector.yaml');
  const cfg = YAML.parse(await readFile(cfgFile, 'utf8'));
  await writeFile(cfgFile, YAML.stringify({ ...cfg, admin: `127.0.0.1:${ports.connectorAdmin}`, reconnect: { initialDelay: '100ms', maxDelay: '1s' } }));
  connector = await startConnector();
}, 240_000);

afterAll(async () => {
  pod?.stop();
  await connector?.stop();
  await worker?.stop();
  await operator?.stop();
  await app?.close();
  await env?.stop();
  if (dir) await removeDir(dir);
});

describe('cluster path: operator → worker from its ConfigMap/Secret → bundled connector', () => {
  it('carries traffic through an ApplicationMapping', async () => {
    await waitFor('mapping usable', async () => (await exchange(ports.app1, 'through the cluster path')).received.toString() === 'through the cluster path', 10_000);
  });

  it('shows the connector in TunnelConnection status with Connected=True and Ready=True', async () => {
    const t = await waitFor('Connected', async () => {
      const x = await tc();
      return x.status?.conditions?.find((c: any) => c.type === 'Connected' && c.status === 'True') ? x : undefined;
    }, 15_000);
    expect(t.status.connectors).toEqual([expect.objectContaining({ name: 'site-a', worker: 'dc1-worker-0', version: expect.any(String), address: expect.stringMatching(/^127\.0\.0\.1:\d+$/) })]);
    expect(t.status.readyConnectors).toBe(1);
    expect(t.status.workers.ready).toBe(1);
    expect(t.status.conditions.find((c: any) => c.type === 'Ready').status).toBe('True');
    const table = await env.kubectlOk(['get', 'tc', '-n', NS]);
    expect(table).toMatch(/dc1\s+True\s+1\s+1/);
    const events = await env.kubectlOk(['get', 'events', '-n', NS, '--field-selector', 'involvedObject.name=dc1', '-o', 'jsonpath={.items[*].reason}']);
    expect(events).toMatch(/ConnectorConnected/);
  });

  it('serves a second mapping within 5 s without restarting the worker, and closes it when deleted', async () => {
    const pid = worker.child.pid;
    const started = Date.now();
    await env.kubectlOk(['apply', '-f', '-'], { input: applicationMapping('app2', NS, { connection: 'dc1', target: { side: 'Connector', host: '127.0.0.1', port: app.port }, listen: { port: ports.app2 } }) });
    await waitFor('app2 usable', async () => (await exchange(ports.app2, 'second', '127.0.0.1', 1_000)).received.toString() === 'second', 5_000);
    expect(Date.now() - started).toBeLessThan(5_000);
    expect(worker.child.pid).toBe(pid);
    expect(worker.alive).toBe(true);
    const am = await waitFor('app2 Ready', async () => {
      const s = JSON.parse(await env.kubectlOk(['get', 'am', 'app2', '-n', NS, '-o', 'json'])).status;
      return s?.conditions?.[0]?.status === 'True' ? s : undefined;
    }, 10_000);
    expect(am.endpoint).toBe(`dc1-apps.${NS}.svc:${ports.app2}`);
    await env.kubectlOk(['delete', 'am', 'app2', '-n', NS]);
    await waitFor('app2 listener closed', async () => (await exchange(ports.app2, 'x', '127.0.0.1', 1_000)).error !== undefined, 5_000);
    expect((await exchange(ports.app1, 'app1 still')).received.toString()).toBe('app1 still');
  }, 30_000);

  it('renews the worker certificate and the worker serves it without dropping the connector session', async () => {
    const sessionBefore = (await getJson<any>(`http://127.0.0.1:${ports.admin}/status`)).connectors[0].session;
    const serialBefore = await servedSerial();
    // Renewal due 10 s after issuance: the operator renews, the pod files change, the worker reloads.
    await env.kubectlOk(['patch', 'tc', 'dc1', '-n', NS, '--type=merge', '-p', '{"spec":{"certificates":{"duration":"1h","renewBefore":"59m50s"}}}']);
    // First a reissue (the lifetime changed), then a renewal purely because it fell due.
    const reissued = await waitFor('a reissued serving certificate', async () => {
      const s = await servedSerial();
      return s !== serialBefore ? s : undefined;
    }, 45_000);
    const serialAfter = await waitFor('a renewed serving certificate', async () => {
      const s = await servedSerial();
      return s !== reissued ? s : undefined;
    }, 45_000);
    const reasons = await env.kubectlOk(['get', 'events', '-n', NS, '--field-selector', 'involvedObject.name=dc1,reason=CertificateRenewed', '-o', 'jsonpath={.items[*].message}']);
    expect(reasons).toMatch(/reissued \(expires /);
    const secret = JSON.parse(await env.kubectlOk(['get', 'secret', 'dc1-worker-tls', '-n', NS, '-o', 'json']));
    const inSecret = new X509Certificate(Buffer.from(secret.data['tls.crt'], 'base64')).serialNumber;
    expect([inSecret, serialAfter].every((s) => s !== serialBefore)).toBe(true);
    const status = await getJson<any>(`http://127.0.0.1:${ports.admin}/status`);
    expect(status.connectors.map((c: any) => c.session)).toContain(sessionBefore);
    expect((await exchange(ports.app1, 'after renewal')).received.toString()).toBe('after renewal');
    // Back to a normal lifetime so renewals stop.
    await env.kubectlOk(['patch', 'tc', 'dc1', '-n', NS, '--type=merge', '-p', '{"spec":{"certificates":{"duration":"720h","renewBefore":"240h"}}}']);
  }, 100_000);

  it('shows the connector gone within 30 s after it is killed', async () => {
    connector!.child.kill('SIGKILL');
    await connector!.exited;
    const started = Date.now();
    const t = await waitFor('no connectors', async () => {
      const x = await tc();
      return (x.status?.connectors ?? []).length === 0 ? x : undefined;
    }, 30_000);
    expect(Date.now() - started).toBeLessThan(30_000);
    expect(t.status.conditions.find((c: any) => c.type === 'Connected')).toMatchObject({ status: 'False', reason: 'NoConnectors' });
    connector = undefined;
  }, 40_000);
});

/** Serial number of the certificate the worker presents in a fresh TLS handshake. */
function servedSerial(): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host: '127.0.0.1', port: ports.tunnel, servername: 'localhost', rejectUnauthorized: false }, () => {
      const serial = s.getPeerCertificate().serialNumber;
      s.destroy();
      resolve(serial);
    });
    s.on('error', reject);
  });
}
