/**
 * Enrollment with a one-time token (issue 18, item 1), on the host path: a real
 * kube-apiserver, the operator with the chart's RBAC, a worker process from
 * what the operator wrote, and connector processes that enroll through the
 * worker's tunnel port. Every bad token is refused with a coded reason and an
 * audit line; a used token stays used across an operator restart.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { readFile, stat, writeFile } from 'node:fs/promises';
import https from 'node:https';
import net from 'node:net';
import path from 'node:path';
import { Kube, loadKubeConfig } from '../../operator/kube.js';
import type { Operator } from '../../operator/operator.js';
import { readToken, signToken } from '../../tunnel/enrollment-token.js';
import { createKeyAndCsr } from '../../tunnel/pki-csr.js';
import { echoServer, exchange, freePort, Proc, removeDir, tempDir, waitFor, waitHttp, type App } from '../e2e/harness.js';
import { applicationMapping, installCrds, OPERATOR_NAMESPACE, operatorKubeconfig, startTestOperator, tunnelConnection } from './operator-fixtures.js';
import { PodFiles } from './pod-files.js';
import { run, startTestEnv, type TestEnv } from './testenv.js';
import { BIN } from '../e2e/harness.js';

const NS = 'team-a';
let env: TestEnv;
let opKubeconfig: string;
let operator: Operator;
let dir: string;
let pod: PodFiles;
let worker: Proc;
let app: App;
const procs: Proc[] = [];
const ports = { tunnel: 0, admin: 0, connectorAdmin: 0, report: 0, app1: 0 };

async function token(name: string, connection = 'dc1', ttl?: string): Promise<string> {
  const r = await run(process.execPath, [BIN, 'connector', 'token', '--kubeconfig', env.kubeconfig, '--connection', `${NS}/${connection}`, '--name', name, ...(ttl ? ['--ttl', ttl] : [])]);
  if (r.code !== 0) throw new Error(`connector token failed (${r.code}): ${r.stderr}`);
  return r.stdout.trim();
}

/**
 * POST /v1/enroll straight to the worker, as any stranger could; each from its own loopback
 * address (the endpoint allows 10 requests per source and minute).
 */
let source = 10;
function postEnroll(body: string, from = `127.0.0.${source++}`): Promise<{ status: number; reason: string; json: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const req = https.request({ host: '127.0.0.1', port: ports.tunnel, path: '/v1/enroll', method: 'POST', localAddress: from, rejectUnauthorized: false, headers: { 'content-type': 'application/json' } }, (res) => {
      let text = '';
      res.setEncoding('utf8').on('data', (d: string) => (text += d)).on('end', () => {
        let json: Record<string, unknown> = {};
        try {
          json = JSON.parse(text) as Record<string, unknown>;
        } catch { /* not JSON */ }
        resolve({ status: res.statusCode ?? 0, reason: String(res.headers['x-underpass-reason'] ?? ''), json });
      });
    });
    req.on('error', reject);
    req.end(body);
  });
}

async function enrollDirect(tok: string): Promise<{ status: number; reason: string; json: Record<string, unknown> }> {
  const { csrPem } = await createKeyAndCsr('x');
  return postEnroll(JSON.stringify({ token: tok, csr: csrPem }));
}

function connectorArgs(stateDir: string, extra: string[] = []): string[] {
  return ['connector', '--worker', `wss://localhost:${ports.tunnel}`, '--state-dir', stateDir, '--allow', `127.0.0.1:${app.port}`, '--admin', `127.0.0.1:${ports.connectorAdmin}`, ...extra];
}

async function tokenKey(): Promise<ReturnType<typeof createPrivateKey>> {
  const uid = await env.kubectlOk(['get', 'tc', 'dc1', '-n', NS, '-o', 'jsonpath={.metadata.uid}']);
  const s = JSON.parse(await env.kubectlOk(['get', 'secret', `ca.${NS}.dc1.${uid}`, '-n', OPERATOR_NAMESPACE, '-o', 'json']));
  return createPrivateKey(Buffer.from(s.data['token.key'], 'base64').toString());
}

beforeAll(async () => {
  env = await startTestEnv();
  await installCrds(env);
  await env.kubectlOk(['create', 'namespace', NS]);
  dir = await tempDir('underpass-enroll-');
  for (const k of Object.keys(ports) as Array<keyof typeof ports>) ports[k] = await freePort();
  app = await echoServer();
  opKubeconfig = await operatorKubeconfig(env);
  operator = await startTestOperator(opKubeconfig, 'op-enroll-1', { reportPort: ports.report, reportGraceMs: 1_000 });
  await env.kubectlOk(['apply', '-f', '-'], {
    input: `${tunnelConnection('dc1', NS, { endpoint: { service: { type: 'ClusterIP' }, hosts: ['localhost'] }, connectors: ['site-a', 'site-b', 'site-c', 'site-d', 'site-e'] })}---\n`
      + `${tunnelConnection('dc2', NS, { endpoint: { service: { type: 'ClusterIP' }, hosts: ['localhost'] } })}---\n`
      + applicationMapping('app1', NS, { connection: 'dc1', target: { side: 'Connector', host: '127.0.0.1', port: app.port }, listen: { port: ports.app1 } }),
  });
  await waitFor('worker ConfigMap and Secret', async () => (await env.kubectl(['get', 'configmap/dc1-worker', 'secret/dc1-worker-tls', '-n', NS])).code === 0, 20_000);
  pod = await PodFiles.start(path.join(dir, 'pod'), new Kube(loadKubeConfig(env.kubeconfig)), NS, 'dc1-worker', 'dc1-worker-tls');
  worker = new Proc(['worker', '--config', pod.configFile, '--listen', `127.0.0.1:${ports.tunnel}`, '--admin', `127.0.0.1:${ports.admin}`, '--instance', 'dc1-worker-0']);
  await waitHttp(`http://127.0.0.1:${ports.admin}/healthz`, worker);
  await waitFor('worker reporting', () => worker.logs.includes('reported to the operator'), 15_000);
}, 240_000);

afterAll(async () => {
  pod?.stop();
  await Promise.all(procs.map((p) => p.stop()));
  await worker?.stop();
  await operator?.stop();
  await app?.close();
  await env?.stop();
  if (dir) await removeDir(dir);
}, 90_000);

describe('enrollment with a one-time token (host)', () => {
  let siteA: string;
  const stateA = (): string => path.join(dir, 'state-a');

  it('issues a token through a TunnelConnector the operator answers, owned by its TunnelConnection', async () => {
    siteA = await token('site-a');
    const claims = readToken(siteA);
    expect([claims.connection, claims.connector]).toEqual([{ namespace: NS, name: 'dc1' }, 'site-a']);
    const tcn = JSON.parse(await env.kubectlOk(['get', 'tunnelconnector', 'dc1.site-a', '-n', NS, '-o', 'json']));
    const tc = JSON.parse(await env.kubectlOk(['get', 'tc', 'dc1', '-n', NS, '-o', 'json']));
    expect(tcn.metadata.ownerReferences).toEqual([expect.objectContaining({ kind: 'TunnelConnection', name: 'dc1', uid: tc.metadata.uid })]);
    expect(tcn.status.enrollment).toMatchObject({ tokenId: claims.jti, tokenSecret: 'dc1.site-a-token' });
    expect(tcn.status.enrollment.usedTokenId).toBeUndefined();
    // The short name and the columns of kubectl get.
    expect(await env.kubectlOk(['get', 'tcn', '-n', NS])).toMatch(/dc1\.site-a\s+dc1\s+site-a/);
  });

  it('enrolls a connector process from the token: its own key, its certificate recorded, traffic flows; a restart does not enroll again', async () => {
    const p = new Proc(connectorArgs(stateA(), ['--token', siteA]));
    procs.push(p);
    await waitHttp(`http://127.0.0.1:${ports.connectorAdmin}/readyz`, p, 30_000);
    const r = await exchange(ports.app1, 'enrolled');
    expect(r.received.toString()).toBe('enrolled');
    expect((await stat(path.join(stateA(), 'tls.key'))).mode & 0o777).toBe(0o600);
    const cert = new X509Certificate(await readFile(path.join(stateA(), 'tls.crt')));
    expect(cert.subjectAltName).toBe('URI:underpass://team-a/dc1/connector/site-a');
    expect(cert.checkPrivateKey(createPrivateKey(await readFile(path.join(stateA(), 'tls.key'))))).toBe(true);
    const tcn = JSON.parse(await env.kubectlOk(['get', 'tunnelconnector', 'dc1.site-a', '-n', NS, '-o', 'json']));
    expect(tcn.status.certificate.serial.toUpperCase()).toBe(cert.serialNumber.toUpperCase());
    expect(tcn.status.enrollment.usedTokenId).toBe(readToken(siteA).jti);
    expect(worker.audit.filter((a) => a.event === 'enrollment')).toEqual([expect.objectContaining({ outcome: 'enrolled', connector: 'site-a' })]);
    // No log or audit line carries the token.
    expect(worker.logs + JSON.stringify(worker.audit) + p.logs).not.toContain(siteA.split('.')[2]);

    await p.stop();
    const again = new Proc(connectorArgs(stateA()));
    procs.push(again);
    await waitHttp(`http://127.0.0.1:${ports.connectorAdmin}/readyz`, again, 30_000);
    expect(worker.audit.filter((a) => a.event === 'enrollment')).toHaveLength(1);
    await again.stop();
  }, 60_000);

  it('keeps the TunnelConnector following connect and disconnect: sessions per worker, version, host, Connected, CertificateValid, lastSeen', async () => {
    const tcnJson = async (): Promise<any> => JSON.parse(await env.kubectlOk(['get', 'tunnelconnector', 'dc1.site-a', '-n', NS, '-o', 'json']));
    const cond = (t: any, type: string): string | undefined => t.status?.conditions?.find((c: any) => c.type === type)?.status;
    const p = new Proc(connectorArgs(stateA()));
    procs.push(p);
    await waitHttp(`http://127.0.0.1:${ports.connectorAdmin}/readyz`, p, 30_000);
    const up = await waitFor('Connected True', async () => { const t = await tcnJson(); return cond(t, 'Connected') === 'True' ? t : undefined; }, 15_000);
    expect(up.status).toMatchObject({ sessionCount: 1, sessions: [expect.objectContaining({ worker: 'dc1-worker-0' })], host: expect.any(String), version: expect.any(String) });
    expect(cond(up, 'CertificateValid')).toBe('True');
    const table = await env.kubectlOk(['get', 'tcn', 'dc1.site-a', '-n', NS]);
    expect(table).toMatch(/dc1\.site-a\s+dc1\s+site-a\s+True\s+1\s/);
    const stopped = Date.now();
    await p.stop();
    const down = await waitFor('Connected False', async () => { const t = await tcnJson(); return cond(t, 'Connected') === 'False' ? t : undefined; }, 30_000);
    process.stderr.write(`[enrollment] TunnelConnector Connected=False ${Date.now() - stopped} ms after the connector stopped\n`);
    expect(down.status.sessionCount).toBe(0);
    expect(Date.parse(down.status.lastSeen)).toBeGreaterThanOrEqual(stopped - 1_000);
    const events = JSON.parse(await env.kubectlOk(['get', 'events', '-n', NS, '-o', 'json'])).items as Array<{ reason: string; involvedObject: { name: string } }>;
    expect(events.filter((e) => e.involvedObject.name === 'dc1.site-a').map((e) => e.reason)).toEqual(expect.arrayContaining(['TokenIssued', 'Enrolled', 'Connected', 'Disconnected']));
  }, 60_000);

  it.each([
    ['a used token', async () => siteA, 403, 'TOKEN_USED'],
    ['a tampered token', async () => {
      const t = await token('site-b');
      const [h, p, s] = t.split('.');
      return `${h}.${p}.${s!.startsWith('A') ? `B${s!.slice(1)}` : `A${s!.slice(1)}`}`;
    }, 403, 'TOKEN_INVALID'],
    ['a token for another connection', async () => token('site-x', 'dc2'), 403, 'TOKEN_WRONG_CONNECTION'],
    ['an expired token', async () => {
      const current = readToken(await token('site-c'));
      return signToken(await tokenKey(), { ...current, ttlMs: 1_000, now: new Date(Date.now() - 60_000) });
    }, 403, 'TOKEN_EXPIRED'],
    ['a token replaced by a newer one', async () => {
      const old = await token('site-d');
      await token('site-d');
      return old;
    }, 403, 'TOKEN_UNKNOWN'],
    ['something that is not a token', async () => 'not-a-jwt', 400, 'TOKEN_MALFORMED'],
  ])('refuses %s with a coded reason and an audit line', async (_name, make, status, reason) => {
    const before = worker.audit.filter((a) => a.event === 'enrollment' && a.reason === reason).length;
    const r = await enrollDirect(await make());
    expect([r.status, r.reason]).toEqual([status, reason]);
    expect(String(r.json.error)).not.toBe('');
    await waitFor(`the ${reason} audit line`, () => worker.audit.filter((a) => a.event === 'enrollment' && a.outcome === 'refused' && a.reason === reason).length > before, 5_000);
  }, 30_000);

  it('a connector refuses to send its token to a worker whose CA the token does not pin (another connection), and says so', async () => {
    const other = await token('site-y', 'dc2');
    const r = await run(process.execPath, [BIN, ...connectorArgs(path.join(dir, 'state-y'), ['--token', other])], { timeoutMs: 30_000 });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('do not match the token (sha256 pins)');
  });

  it('a connector with an expired token says so before dialling; a name off spec.connectors cannot get a token', async () => {
    const expired = await signToken(await tokenKey(), { ...readToken(await token('site-c')), ttlMs: 1_000, now: new Date(Date.now() - 60_000) });
    const r = await run(process.execPath, [BIN, ...connectorArgs(path.join(dir, 'state-e'), ['--token', expired])], { timeoutMs: 30_000 });
    expect([r.code, r.stderr]).toEqual([1, expect.stringContaining('the token expired at')]);
    const refused = await run(process.execPath, [BIN, 'connector', 'token', '--kubeconfig', env.kubeconfig, '--connection', `${NS}/dc1`, '--name', 'intruder']);
    expect([refused.code, refused.stderr]).toEqual([2, expect.stringContaining('connector "intruder" is not in spec.connectors')]);
  }, 60_000);

  it('keeps a used token used after the operator restarts (the id is recorded in the TunnelConnector)', async () => {
    await operator.stop();
    operator = await startTestOperator(opKubeconfig, 'op-enroll-2', { reportPort: ports.report, reportGraceMs: 1_000 });
    await waitFor('the worker reporting to the new operator', async () => (await enrollDirect('not-a-jwt')).reason === 'TOKEN_MALFORMED', 20_000);
    const r = await enrollDirect(siteA);
    expect([r.status, r.reason]).toEqual([403, 'TOKEN_USED']);
  }, 60_000);

  it('keeps the certificate in a Secret of its own, which it may only get and update (the connector chart\'s way): a restart with an empty state directory does not enroll again', async () => {
    // What the chart creates: the empty state Secret, and a Role for the pod on that one Secret.
    await env.kubectlOk(['create', 'secret', 'generic', 'site-s-state', '-n', NS]);
    await env.kubectlOk(['create', 'role', 'site-s-state', '-n', NS, '--verb=get,update', '--resource=secrets', '--resource-name=site-s-state']);
    await env.kubectlOk(['create', 'rolebinding', 'site-s-state', '-n', NS, '--role=site-s-state', '--user=connector-site-s']);
    const kubeconfig = path.join(dir, 'site-s.kubeconfig');
    const made = await run('bash', [path.join(path.dirname(BIN), '..', 'test/env/user-kubeconfig.sh'), '--out', kubeconfig, env.dir, 'connector-site-s']);
    expect(made.code).toBe(0);
    await writeFile(path.join(dir, 'site-s.token'), await token('site-c'));
    const config = (stateDir: string): string => JSON.stringify({
      name: 'site-c', worker: `wss://localhost:${ports.tunnel}`, state: stateDir, admin: `127.0.0.1:${ports.connectorAdmin}`,
      stateSecret: { name: 'site-s-state', namespace: NS, kubeconfig }, enroll: { tokenFile: path.join(dir, 'site-s.token') }, allow: [`127.0.0.1:${app.port}`],
    });
    await writeFile(path.join(dir, 'site-s-1.yaml'), config(path.join(dir, 'site-s-1')));
    const enrollsBefore = worker.audit.filter((a) => a.event === 'enrollment' && a.outcome === 'enrolled').length;
    const first = new Proc(['connector', '--config', path.join(dir, 'site-s-1.yaml')]);
    procs.push(first);
    await waitHttp(`http://127.0.0.1:${ports.connectorAdmin}/readyz`, first, 30_000);
    const stored = JSON.parse(await env.kubectlOk(['get', 'secret', 'site-s-state', '-n', NS, '-o', 'json']));
    expect(Object.keys(stored.data ?? {}).sort()).toEqual(['ca.crt', 'tls.crt', 'tls.key']);
    await first.stop();
    // A new pod: an empty state directory, the same Secret, a token that was used already.
    await writeFile(path.join(dir, 'site-s-2.yaml'), config(path.join(dir, 'site-s-2')));
    const second = new Proc(['connector', '--config', path.join(dir, 'site-s-2.yaml')]);
    procs.push(second);
    await waitHttp(`http://127.0.0.1:${ports.connectorAdmin}/readyz`, second, 30_000);
    expect(second.logs).toContain("restored this connector's certificate from Secret team-a/site-s-state");
    expect(worker.audit.filter((a) => a.event === 'enrollment' && a.outcome === 'enrolled').length).toBe(enrollsBefore + 1);
    await second.stop();
  }, 60_000);

  it('bounds the unauthenticated endpoint: body size and requests per source', async () => {
    const big = await postEnroll(JSON.stringify({ token: 'x'.repeat(20_000), csr: 'y' }));
    expect([big.status, big.reason]).toEqual([413, 'TOO_LARGE']);
    const answers: string[] = [];
    for (let i = 0; i < 12; i++) answers.push((await postEnroll('{}', '127.0.0.250')).reason);
    expect(answers.slice(0, 10)).toEqual(Array(10).fill('INVALID_REQUEST'));
    expect(answers).toContain('TOO_MANY_ENROLLMENTS');
    await writeFile(path.join(dir, 'done'), '');
  }, 30_000);

  it('a connector started before any worker answers keeps trying (backoff) and enrolls once one does', async () => {
    // The workers' address refuses connections at first (pods still starting): a forwarder to the
    // worker starts listening there only after the connector has failed and said it tries again.
    const early = await freePort();
    const admin = await freePort();
    const p = new Proc(['connector', '--worker', `wss://localhost:${early}`, '--state-dir', path.join(dir, 'state-early'), '--allow', `127.0.0.1:${app.port}`,
      '--admin', `127.0.0.1:${admin}`, '--token', await token('site-e')]);
    procs.push(p);
    await waitFor('a refused enrollment and a retry announced', () => /ECONNREFUSED[\s\S]*trying again in/.test(p.logs), 20_000);
    expect(p.alive).toBe(true);
    const forwarder = net.createServer((c) => {
      const up = net.connect(ports.tunnel, '127.0.0.1');
      c.pipe(up).pipe(c);
      c.on('error', () => up.destroy());
      up.on('error', () => c.destroy());
    });
    await new Promise<void>((resolve) => forwarder.listen(early, '127.0.0.1', resolve));
    try {
      await waitHttp(`http://127.0.0.1:${admin}/readyz`, p, 60_000);
      expect(p.logs).toContain('enrolled as connector \\"site-e\\" of team-a/dc1'); // JSON-escaped quotes
    } finally {
      await p.stop();
      forwarder.close();
    }
  }, 90_000);

  // Last: it deletes the connection. The garbage collector deletes its TunnelConnectors after it,
  // at once or later; what matters is that none still holds the revoke finalizer by then, which
  // would wait for an operator that an uninstall removes next (a namespace stuck in Terminating).
  it('deleting the TunnelConnection releases its TunnelConnectors\' revoke finalizers before its own', async () => {
    const held = async (): Promise<string[]> => {
      const list = JSON.parse(await env.kubectlOk(['get', 'tunnelconnectors', '-n', NS, '-o', 'json'])) as { items: Array<{ metadata: { name: string; finalizers?: string[] }; spec: { connection: string } }> };
      return list.items.filter((t) => t.spec.connection === 'dc1' && t.metadata.finalizers?.includes('underpass.dev/revoke')).map((t) => t.metadata.name);
    };
    expect((await held()).length).toBeGreaterThanOrEqual(2); // site-a, site-e, ...
    await env.kubectlOk(['delete', 'tunnelconnection', 'dc1', '-n', NS, '--wait', '--timeout=30s'], { timeoutMs: 40_000 });
    expect(await held()).toEqual([]);
    // Nor does the operator put it back on a TunnelConnector whose connection is gone (if the
    // garbage collector has not deleted it yet).
    const touched = await env.kubectl(['annotate', 'tunnelconnector', 'dc1.site-a', '-n', NS, 'touched=1']);
    if (touched.code !== 0) expect(touched.stderr).toMatch(/NotFound/);
    await new Promise((r) => setTimeout(r, 1_500));
    expect(await held()).toEqual([]);
  }, 60_000);
});
