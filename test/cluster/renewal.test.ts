/**
 * Certificate renewal over the session (issue 18, item 3), on the cluster
 * path: the operator (real kube-apiserver, chart RBAC) signs, a worker process
 * runs from what the operator wrote, and a connector process whose certificate
 * lives one minute renews it by itself before two thirds of that minute, while
 * a transfer runs: no stream is dropped and every byte arrives (sha256). The
 * private key is made by the connector: the operator and the worker only ever
 * see a certificate signing request.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { createHash, randomBytes, X509Certificate } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import YAML from 'yaml';
import { Kube, loadKubeConfig } from '../../operator/kube.js';
import type { Operator } from '../../operator/operator.js';
import { signConnectorCsr, createKeyAndCsr } from '../../tunnel/pki-csr.js';
import { loadCA, writePemFiles } from '../../tunnel/pki.js';
import { echoServer, freePort, getJson, metricValue, Proc, removeDir, tempDir, waitFor, waitHttp, type App } from '../e2e/harness.js';
import { applicationMapping, installCrds, OPERATOR_NAMESPACE, operatorKubeconfig, startTestOperator, tunnelConnection } from './operator-fixtures.js';
import { PodFiles } from './pod-files.js';
import { startTestEnv, type TestEnv } from './testenv.js';

const NS = 'team-a';
let env: TestEnv;
let operator: Operator;
let dir: string;
let pod: PodFiles;
let worker: Proc;
let connector: Proc;
let app: App;
const ports = { tunnel: 0, admin: 0, connectorAdmin: 0, report: 0, app1: 0 };

/**
 * Sends 16 KiB every 20 ms through the tunnel to an echo server until `until`
 * settles, then half-closes and reads the rest: the sha256 of what was sent
 * and of what came back.
 */
function pacedEcho(port: number, until: Promise<unknown>): Promise<{ sent: string; received: string; bytes: number; error?: Error }> {
  return new Promise((resolve) => {
    const socket = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    const sent = createHash('sha256');
    const received = createHash('sha256');
    let bytes = 0;
    let error: Error | undefined;
    const timer = setInterval(() => {
      const chunk = randomBytes(16 * 1024);
      sent.update(chunk);
      socket.write(chunk);
    }, 20);
    void until.finally(() => {
      clearInterval(timer);
      socket.end();
    });
    socket.on('data', (d: Buffer) => {
      bytes += d.length;
      received.update(d);
    });
    socket.on('error', (err) => (error ??= err));
    socket.on('close', () => {
      clearInterval(timer);
      resolve({ sent: sent.digest('hex'), received: received.digest('hex'), bytes, ...(error ? { error } : {}) });
    });
  });
}

const renewals = (): Promise<number> => metricValue(ports.connectorAdmin, 'underpass_certificate_renewals_total', { result: 'renewed' }).catch(() => 0);

beforeAll(async () => {
  env = await startTestEnv();
  await installCrds(env);
  await env.kubectlOk(['create', 'namespace', NS]);
  dir = await tempDir('underpass-renewal-');
  for (const k of Object.keys(ports) as Array<keyof typeof ports>) ports[k] = await freePort();
  app = await echoServer();
  operator = await startTestOperator(await operatorKubeconfig(env), 'op-renewal', { reportPort: ports.report, reportGraceMs: 1_000 });
  await env.kubectlOk(['apply', '-f', '-'], {
    input: `${tunnelConnection('dc1', NS, { endpoint: { service: { type: 'ClusterIP' }, hosts: ['localhost'] }, certificates: { duration: '1m', renewBefore: '20s' } })}---\n`
      + applicationMapping('app1', NS, { connection: 'dc1', target: { side: 'Connector', host: '127.0.0.1', port: app.port }, listen: { port: ports.app1 } }),
  });
  await waitFor('worker ConfigMap and Secret', async () => (await env.kubectl(['get', 'configmap/dc1-worker', 'secret/dc1-worker-tls', '-n', NS])).code === 0, 20_000);
  pod = await PodFiles.start(path.join(dir, 'pod'), new Kube(loadKubeConfig(env.kubeconfig)), NS, 'dc1-worker', 'dc1-worker-tls');
  worker = new Proc(['worker', '--config', pod.configFile, '--listen', `127.0.0.1:${ports.tunnel}`, '--admin', `127.0.0.1:${ports.admin}`, '--instance', 'dc1-worker-0']);
  await waitHttp(`http://127.0.0.1:${ports.admin}/healthz`, worker);

  // The first certificate, one minute long, as an admin would make it (the key is made here, as a connector would).
  const uid = await env.kubectlOk(['get', 'tc', 'dc1', '-n', NS, '-o', 'jsonpath={.metadata.uid}']);
  const secret = JSON.parse(await env.kubectlOk(['get', 'secret', `ca.${NS}.dc1.${uid}`, '-n', OPERATOR_NAMESPACE, '-o', 'json']));
  const pem = (k: string): string => Buffer.from(secret.data[k], 'base64').toString();
  const { keyPem, csrPem } = await createKeyAndCsr('site-a');
  const certPem = await signConnectorCsr(await loadCA(pem('ca.crt'), pem('ca.key')), { connector: 'site-a', csrPem, validityMs: 60_000 });
  const cdir = path.join(dir, 'connector');
  await writePemFiles(cdir, { 'ca.crt': pem('ca.crt'), 'tls.crt': certPem, 'tls.key': keyPem });
  await writeFile(path.join(cdir, 'connector.yaml'), YAML.stringify({
    name: 'site-a', worker: `wss://localhost:${ports.tunnel}`, tls: { cert: 'tls.crt', key: 'tls.key', ca: 'ca.crt' },
    admin: `127.0.0.1:${ports.connectorAdmin}`, allow: [`127.0.0.1:${app.port}`], reconnect: { initialDelay: '100ms', maxDelay: '1s' },
  }));
  connector = new Proc(['connector', '--config', path.join(cdir, 'connector.yaml')]);
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

describe('connector certificate renewal over the session', () => {
  it('renews a one-minute certificate by itself while a transfer runs: no stream dropped, sha256 intact, new sessions use the new certificate', async () => {
    const certFile = path.join(dir, 'connector', 'tls.crt');
    const first = new X509Certificate(await readFile(certFile));
    const keyBefore = await readFile(path.join(dir, 'connector', 'tls.key'), 'utf8');
    // A transfer that starts before the renewal and goes on for 3 s after it.
    const renewed = waitFor('the first renewal', async () => (await renewals()) >= 1, 70_000);
    const transfer = pacedEcho(ports.app1, renewed.then(() => new Promise((r) => setTimeout(r, 3_000))));
    await renewed;
    const renewedAfterMs = Date.now() - Date.parse(first.validFrom);
    const lifetime = Date.parse(first.validTo) - Date.parse(first.validFrom);
    process.stderr.write(`[renewal] renewed ${renewedAfterMs} ms after notBefore of a ${lifetime} ms certificate\n`);
    expect(renewedAfterMs).toBeLessThan(lifetime); // before it expired …
    expect(renewedAfterMs).toBeGreaterThanOrEqual(Math.floor(lifetime * 2 / 3) - 1_000); // … and not before two thirds of it

    const result = await transfer;
    expect(result.error).toBeUndefined();
    expect(result.bytes).toBeGreaterThan(1_000_000);
    expect(result.received).toBe(result.sent);

    // The new pair is on disk: another serial, another key (made by the connector), signed by the connection CA.
    const second = new X509Certificate(await readFile(certFile));
    expect(second.serialNumber).not.toBe(first.serialNumber);
    expect(await readFile(path.join(dir, 'connector', 'tls.key'), 'utf8')).not.toBe(keyBefore);
    expect(second.subjectAltName).toBe('URI:underpass://team-a/dc1/connector/site-a');
    // The worker forwarded exactly one request and audited it; no stream of the transfer failed.
    await waitFor('renewal audit', () => worker.audit.find((a) => a.event === 'certificate-renewal' && a.outcome === 'renewed' && a.connector === 'site-a'), 5_000);
    await waitFor('stream audit', () => worker.streams({ mapping: 'app1' }).length >= 1, 5_000);
    expect(worker.streams({ mapping: 'app1' }).map((s) => s.outcome)).toEqual(worker.streams({ mapping: 'app1' }).map(() => 'closed'));

    // A new stream after the renewal: carried by the session made with the new certificate.
    const again = await pacedEcho(ports.app1, new Promise((r) => setTimeout(r, 500)));
    expect(again.received).toBe(again.sent);
    const status = await getJson<{ connectors: Array<{ name: string; session: string }> }>(`http://127.0.0.1:${ports.admin}/status`);
    expect(status.connectors.filter((c) => c.name === 'site-a').length).toBeGreaterThanOrEqual(1);

    // And the certificate the operator issued renews in turn (spec.certificates.duration: 1m).
    await waitFor('the second renewal', async () => (await renewals()) >= 2, 70_000);
    const third = new X509Certificate(await readFile(certFile));
    expect(third.serialNumber).not.toBe(second.serialNumber);
    expect(await metricValue(ports.connectorAdmin, 'underpass_certificate_renewals_total', { result: 'failed' }).catch(() => 0)).toBe(0);
  }, 200_000);
});
