/**
 * spec.connectors is enforced on the cluster path (issue 15, finding 1): the
 * operator (real kube-apiserver) hands the list to its workers in every answer
 * on the operator channel; a worker process running from what the operator
 * wrote refuses an unlisted connector at the upgrade, cuts the session of a
 * connector taken off the list within 5 s of the API write (measured), and
 * lets it back in when it is listed again.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import WebSocket from 'ws';
import YAML from 'yaml';
import { Kube, loadKubeConfig } from '../../operator/kube.js';
import type { Operator } from '../../operator/operator.js';
import { issueConnectorCert, loadCA } from '../../tunnel/pki.js';
import { BIN, echoServer, exchange, freePort, getJson, metricValue, Proc, removeDir, tempDir, waitFor, waitHttp, type App } from '../e2e/harness.js';
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
const ports = { tunnel: 0, admin: 0, connectorAdmin: 0, report: 0, app1: 0 };

interface WorkerStatus {
  connectors: Array<{ name: string; session: string }>;
}

const attached = async (name: string): Promise<boolean> =>
  (await getJson<WorkerStatus>(`http://127.0.0.1:${ports.admin}/status`)).connectors.some((c) => c.name === name);

const patchConnectors = (list: string[]): Promise<string> =>
  env.kubectlOk(['patch', 'tc', 'dc1', '-n', NS, '--type=merge', '-p', JSON.stringify({ spec: { connectors: list } })]);

beforeAll(async () => {
  env = await startTestEnv();
  await installCrds(env);
  await env.kubectlOk(['create', 'namespace', NS]);
  dir = await tempDir('underpass-admission-');
  for (const k of Object.keys(ports) as Array<keyof typeof ports>) ports[k] = await freePort();
  app = await echoServer();
  operator = await startTestOperator(await operatorKubeconfig(env), 'op-admission', { reportPort: ports.report, reportGraceMs: 1_000 });
  await env.kubectlOk(['apply', '-f', '-'], {
    input: `${tunnelConnection('dc1', NS, { endpoint: { service: { type: 'ClusterIP' }, hosts: ['localhost'] }, connectors: ['site-a'] })}---\n`
      + applicationMapping('app1', NS, { connection: 'dc1', target: { side: 'Connector', host: '127.0.0.1', port: app.port }, listen: { port: ports.app1 } }),
  });
  await waitFor('worker ConfigMap and Secret', async () => (await env.kubectl(['get', 'configmap/dc1-worker', 'secret/dc1-worker-tls', '-n', NS])).code === 0, 20_000);
  pod = await PodFiles.start(path.join(dir, 'pod'), new Kube(loadKubeConfig(env.kubeconfig)), NS, 'dc1-worker', 'dc1-worker-tls');
  worker = new Proc(['worker', '--config', pod.configFile, '--listen', `127.0.0.1:${ports.tunnel}`, '--admin', `127.0.0.1:${ports.admin}`, '--instance', 'dc1-worker-0']);
  await waitHttp(`http://127.0.0.1:${ports.admin}/healthz`, worker);
  const bundle = await run(process.execPath, [BIN, 'connector', 'bundle', '--kubeconfig', env.kubeconfig, '--connection', `${NS}/dc1`, '--name', 'site-a', '--out', path.join(dir, 'bundle'), '--worker-url', `wss://localhost:${ports.tunnel}`]);
  if (bundle.code !== 0) throw new Error(`bundle failed: ${bundle.stderr}`);
  const cfgFile = path.join(dir, 'bundle', 'connector.yaml');
  const cfg = YAML.parse(await readFile(cfgFile, 'utf8'));
  await writeFile(cfgFile, YAML.stringify({ ...cfg, admin: `127.0.0.1:${ports.connectorAdmin}`, reconnect: { initialDelay: '100ms', maxDelay: '1s' } }));
  connector = new Proc(['connector', '--config', cfgFile]);
  await waitHttp(`http://127.0.0.1:${ports.connectorAdmin}/readyz`, connector, 20_000);
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

describe('spec.connectors on the cluster path', () => {
  it('writes the list into the worker config and lets the listed connector carry traffic', async () => {
    const config = YAML.parse(await readFile(pod.configFile, 'utf8'));
    expect(config.connectors).toEqual(['site-a']);
    await waitFor('site-a attached', () => attached('site-a'), 10_000);
    await waitFor('traffic through app1', async () => (await exchange(ports.app1, 'listed')).received.toString() === 'listed', 10_000);
  });

  it('refuses a connector that is not listed, even with a valid certificate of the connection', async () => {
    // A certificate made straight from the connection CA (connector bundle would refuse the name).
    const uid = await env.kubectlOk(['get', 'tc', 'dc1', '-n', NS, '-o', 'jsonpath={.metadata.uid}']);
    const secret = JSON.parse(await env.kubectlOk(['get', 'secret', `ca.${NS}.dc1.${uid}`, '-n', 'underpass-system', '-o', 'json']));
    const pem = (k: string): string => Buffer.from(secret.data[k], 'base64').toString();
    const b = await issueConnectorCert(await loadCA(pem('ca.crt'), pem('ca.key')), { connector: 'site-b' });
    const ws = new WebSocket(`wss://localhost:${ports.tunnel}/v1/tunnel`, { cert: b.certPem, key: b.keyPem, ca: pem('ca.crt') });
    const refused = await new Promise<[number, string]>((resolve, reject) => {
      ws.on('unexpected-response', (_req, res) => resolve([res.statusCode ?? 0, String(res.headers['x-underpass-reason'])]));
      ws.on('open', () => reject(new Error('site-b was let in')));
      ws.on('error', () => undefined);
    });
    expect(refused).toEqual([403, 'CONNECTOR_NOT_ALLOWED']);
    await waitFor('the session-denied audit line', () => worker.audit.find((a) => a.event === 'session-denied' && a.reason === 'CONNECTOR_NOT_ALLOWED'), 2_000);
    expect(await metricValue(ports.admin, 'underpass_handshake_failures_total', { reason: 'CONNECTOR_NOT_ALLOWED' })).toBeGreaterThanOrEqual(1);
  });

  it('closes the session of a connector taken off the list within 5 s of the API write, and lets it back in when listed again', async () => {
    const writeStarted = Date.now();
    await patchConnectors([]);
    const written = Date.now();
    await waitFor('site-a cut', async () => !(await attached('site-a')), 5_000);
    const closedAfterMs = Date.now() - writeStarted;
    process.stderr.write(`[admission] session closed ${closedAfterMs} ms after the API write started (kubectl took ${written - writeStarted} ms)\n`);
    expect(closedAfterMs).toBeLessThan(5_000);
    const closed = await waitFor('the session-closed audit line', () => worker.audit.find((a) => a.event === 'session-closed' && a.connector === 'site-a'), 2_000);
    expect(closed.reason).toBe('CONNECTOR_NOT_ALLOWED');
    expect((await exchange(ports.app1, 'cut', '127.0.0.1', 2_000)).received.toString()).not.toBe('cut');
    await waitFor('the connector to be refused on reconnect', async () => (await getJson<{ workers: Array<{ lastError?: string }> }>(`http://127.0.0.1:${ports.connectorAdmin}/status`))
      .workers.some((w) => w.lastError?.includes('CONNECTOR_NOT_ALLOWED')), 5_000);

    await patchConnectors(['site-a']);
    await waitFor('site-a back', () => attached('site-a'), 10_000);
    await waitFor('traffic again', async () => (await exchange(ports.app1, 'back')).received.toString() === 'back', 10_000);
  }, 40_000);
});
