/**
 * Revocation in seconds (issue 18, item 4), on the cluster path: the operator
 * (real kube-apiserver, chart RBAC), two worker processes from what it wrote,
 * connectors enrolled with tokens. `underpass connector revoke`, or deleting
 * a TunnelConnector, cuts the connector's sessions on every worker within 5 s
 * of the API call (measured), and its certificate is refused by serial
 * afterwards, also when the name enrolls again and a copy of the old key
 * comes back. A worker that starts while the operator is down refuses revoked
 * certificates from its first connection: the ConfigMap carries them.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { X509Certificate } from 'node:crypto';
import { cp, readFile } from 'node:fs/promises';
import path from 'node:path';
import { Kube, loadKubeConfig } from '../../operator/kube.js';
import { normalizeSerial } from '../../tunnel/admission.js';
import type { Operator } from '../../operator/operator.js';
import { BIN, freePort, getJson, Proc, removeDir, tempDir, waitFor, waitHttp } from '../e2e/harness.js';
import { installCrds, operatorKubeconfig, startTestOperator, tunnelConnection } from './operator-fixtures.js';
import { PodFiles } from './pod-files.js';
import { run, startTestEnv, type TestEnv } from './testenv.js';

const NS = 'team-a';
let env: TestEnv;
let operator: Operator;
let operatorStopped = false;
let dir: string;
let pod: PodFiles;
const workers: Array<{ proc: Proc; admin: number; tunnel: number }> = [];
const procs: Proc[] = [];
let reportPort = 0;

async function token(name: string): Promise<string> {
  const r = await run(process.execPath, [BIN, 'connector', 'token', '--kubeconfig', env.kubeconfig, '--connection', `${NS}/dc1`, '--name', name]);
  if (r.code !== 0) throw new Error(`connector token failed: ${r.stderr}`);
  return r.stdout.trim();
}

async function connector(stateDir: string, tok?: string, to: ReadonlyArray<{ tunnel: number }> = workers): Promise<{ proc: Proc; admin: number }> {
  const admin = await freePort();
  const proc = new Proc(['connector', ...to.flatMap((w) => ['--worker', `wss://localhost:${w.tunnel}`]), '--state-dir', stateDir, '--admin', `127.0.0.1:${admin}`, ...(tok ? ['--token', tok] : [])]);
  procs.push(proc);
  return { proc, admin };
}

const attachedTo = async (w: { admin: number }, name: string): Promise<number> =>
  (await getJson<{ connectors: Array<{ name: string }> }>(`http://127.0.0.1:${w.admin}/status`)).connectors.filter((c) => c.name === name).length;

async function onEveryWorker(name: string): Promise<boolean> {
  for (const w of workers) if ((await attachedTo(w, name)) === 0) return false;
  return true;
}

async function onNoWorker(name: string): Promise<boolean> {
  for (const w of workers) if ((await attachedTo(w, name)) > 0) return false;
  return true;
}

beforeAll(async () => {
  env = await startTestEnv();
  await installCrds(env);
  await env.kubectlOk(['create', 'namespace', NS]);
  dir = await tempDir('underpass-revoke-');
  reportPort = await freePort();
  operator = await startTestOperator(await operatorKubeconfig(env), 'op-revoke', { reportPort, reportGraceMs: 1_000 });
  await env.kubectlOk(['apply', '-f', '-'], { input: tunnelConnection('dc1', NS, { replicas: 2, endpoint: { service: { type: 'ClusterIP' }, hosts: ['localhost'] } }) });
  await waitFor('worker ConfigMap and Secret', async () => (await env.kubectl(['get', 'configmap/dc1-worker', 'secret/dc1-worker-tls', '-n', NS])).code === 0, 20_000);
  pod = await PodFiles.start(path.join(dir, 'pod'), new Kube(loadKubeConfig(env.kubeconfig)), NS, 'dc1-worker', 'dc1-worker-tls');
  for (const i of [0, 1]) {
    const tunnel = await freePort();
    const admin = await freePort();
    const proc = new Proc(['worker', '--config', pod.configFile, '--listen', `127.0.0.1:${tunnel}`, '--admin', `127.0.0.1:${admin}`, '--instance', `dc1-worker-${i}`]);
    workers.push({ proc, admin, tunnel });
    await waitHttp(`http://127.0.0.1:${admin}/healthz`, proc);
    await waitFor(`worker ${i} reporting`, () => proc.logs.includes('reported to the operator'), 15_000);
  }
}, 240_000);

afterAll(async () => {
  pod?.stop();
  await Promise.all(procs.map((p) => p.stop()));
  await Promise.all(workers.map((w) => w.proc.stop()));
  if (!operatorStopped) await operator?.stop();
  await env?.stop();
  if (dir) await removeDir(dir);
}, 90_000);

describe('revocation', () => {
  it('underpass connector revoke cuts the connector on every worker within 5 s, and its reconnect is refused by serial', async () => {
    const a = await connector(path.join(dir, 'a'), await token('site-a'));
    await waitHttp(`http://127.0.0.1:${a.admin}/readyz`, a.proc, 30_000);
    await waitFor('site-a on both workers', () => onEveryWorker('site-a'), 15_000);

    // The 5 s run from when the revocation is in the API (the CLI has returned): the CLI's own
    // start-up (Node, the client library) is not part of how fast revocation reaches workers,
    // and on a loaded machine it alone took 8 s once. Both times are printed.
    const cliStarted = Date.now();
    const r = await run(process.execPath, [BIN, 'connector', 'revoke', '--kubeconfig', env.kubeconfig, '--connection', `${NS}/dc1`, '--name', 'site-a']);
    expect([r.code, r.stderr]).toEqual([0, expect.stringContaining('revoked connector site-a of team-a/dc1')]);
    const started = Date.now();
    await waitFor('site-a cut everywhere', () => onNoWorker('site-a'), 5_000);
    const ms = Date.now() - started;
    process.stderr.write(`[revocation] revoke: the CLI took ${started - cliStarted} ms; last session closed ${ms} ms after it returned, on 2 workers\n`);
    expect(ms).toBeLessThan(5_000);
    for (const w of workers) {
      const closed = await waitFor('session-closed audit', () => w.proc.audit.find((x) => x.event === 'session-closed' && x.connector === 'site-a'), 5_000);
      expect(closed.reason).toBe('CERTIFICATE_REVOKED');
    }
    await waitFor('the reconnect refused', async () => (await getJson<{ workers: Array<{ lastError?: string }> }>(`http://127.0.0.1:${a.admin}/status`))
      .workers.every((w) => /CERTIFICATE_REVOKED|CONNECTOR_REVOKED/.test(w.lastError ?? '')), 10_000);
    const tcn = JSON.parse(await env.kubectlOk(['get', 'tcn', 'dc1.site-a', '-n', NS, '-o', 'json']));
    expect(tcn.status.revokedAt).toBeDefined();
    // A revoked connector gets no new token.
    const again = await run(process.execPath, [BIN, 'connector', 'token', '--kubeconfig', env.kubeconfig, '--connection', `${NS}/dc1`, '--name', 'site-a', '--wait', '5s']);
    expect([again.code, again.stderr]).toEqual([1, expect.stringContaining('the connector is revoked')]);
  }, 90_000);

  it('deleting a TunnelConnector cuts it within 5 s; a copy of its old key stays refused after the name enrolls again', async () => {
    const oldState = path.join(dir, 'b');
    const b = await connector(oldState, await token('site-b'));
    await waitHttp(`http://127.0.0.1:${b.admin}/readyz`, b.proc, 30_000);
    await waitFor('site-b on both workers', () => onEveryWorker('site-b'), 15_000);
    await cp(oldState, path.join(dir, 'b-copy'), { recursive: true }); // what an attacker copied

    const started = Date.now();
    await env.kubectlOk(['delete', 'tunnelconnector', 'dc1.site-b', '-n', NS, '--wait=false']);
    await waitFor('site-b cut everywhere', () => onNoWorker('site-b'), 5_000);
    const ms = Date.now() - started;
    process.stderr.write(`[revocation] delete: last session closed ${ms} ms after the API call started, on 2 workers\n`);
    expect(ms).toBeLessThan(5_000);
    await b.proc.stop();
    await waitFor('the TunnelConnector gone', async () => (await env.kubectl(['get', 'tcn', 'dc1.site-b', '-n', NS])).code !== 0, 10_000);

    // The name enrolls again (a new token, a new key)…
    const fresh = await connector(path.join(dir, 'b2'), await token('site-b'));
    await waitHttp(`http://127.0.0.1:${fresh.admin}/readyz`, fresh.proc, 30_000);
    // … but the copied key and certificate are refused by serial.
    const copy = await connector(path.join(dir, 'b-copy'));
    await waitFor('the copy refused', async () => {
      if (!copy.proc.alive) throw new Error(`the copy exited: ${copy.proc.logs}`);
      return (await getJson<{ workers: Array<{ lastError?: string }> }>(`http://127.0.0.1:${copy.admin}/status`).catch(() => ({ workers: [{ lastError: '' }] })))
        .workers.every((w) => (w.lastError ?? '').includes('CERTIFICATE_REVOKED'));
    }, 15_000);
    expect(await onEveryWorker('site-b')).toBe(true); // the fresh one is still attached
  }, 90_000);

  it('a worker that starts while the operator is down refuses a revoked certificate from its first connection (its ConfigMap carries the serial)', async () => {
    // The serial of the copied certificate, revoked when its TunnelConnector was deleted (previous test).
    const serial = normalizeSerial(new X509Certificate(await readFile(path.join(dir, 'b-copy', 'tls.crt'))).serialNumber);
    await waitFor('the revoked serial in the worker ConfigMap', async () => (await readFile(pod.configFile, 'utf8')).includes(serial), 15_000);
    operatorStopped = true;
    await operator.stop();

    const tunnel = await freePort();
    const admin = await freePort();
    const proc = new Proc(['worker', '--config', pod.configFile, '--listen', `127.0.0.1:${tunnel}`, '--admin', `127.0.0.1:${admin}`, '--instance', 'dc1-worker-late']);
    const late = { proc, admin, tunnel };
    procs.push(proc);
    await waitHttp(`http://127.0.0.1:${admin}/healthz`, proc);

    // The copy of the revoked key is refused by the new worker, which never heard from the operator…
    const copy = await connector(path.join(dir, 'b-copy'), undefined, [late]);
    await waitFor('the copy refused by the late worker', async () => {
      if (!copy.proc.alive) throw new Error(`the copy exited: ${copy.proc.logs}`);
      return (await getJson<{ workers: Array<{ lastError?: string }> }>(`http://127.0.0.1:${copy.admin}/status`).catch(() => ({ workers: [{ lastError: '' }] })))
        .workers.every((w) => (w.lastError ?? '').includes('CERTIFICATE_REVOKED'));
    }, 15_000);
    const denied = await waitFor('the session-denied audit line', () => proc.audit.find((x) => x.event === 'session-denied' && x.reason === 'CERTIFICATE_REVOKED'), 5_000);
    expect(denied.message).toContain(serial);
    // … while the connector enrolled again with a new key attaches to it.
    await cp(path.join(dir, 'b2'), path.join(dir, 'b2-copy'), { recursive: true });
    const fresh = await connector(path.join(dir, 'b2-copy'), undefined, [late]);
    await waitFor('the fresh site-b on the late worker', async () => (await attachedTo(late, 'site-b')) === 1, 15_000);
    expect(proc.logs).not.toContain('reported to the operator');
    await fresh.proc.stop();
    await copy.proc.stop();
  }, 90_000);
});
