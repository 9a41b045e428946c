/**
 * `underpass connector bundle` against a real kube-apiserver (test/env): the
 * CA Secret is made here with tunnel/pki.ts (standing in for the operator),
 * and the bundle is proven usable by running a real worker from the same CA
 * and the connector from the bundle directory. Requires `make build`.
 */
import { describe, it, expect, beforeAll, afterAll } from '@jest/globals';
import { readFile, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import YAML from 'yaml';
import { runCli as cli, type CliResult } from '../../cli/testing.js';
import { createCA, issueWorkerCert, loadCA, writePemFiles, type PemKeyPair } from '../../tunnel/pki.js';
import {
  echoServer, exchange, freePort, getJson, Proc, removeDir, ROOT, startWorker, tempDir, waitHttp, type App, type WorkerSetup,
} from '../e2e/harness.js';
import { run, startTestEnv, TESTENV_START_TIMEOUT_MS, type TestEnv } from './testenv.js';

const NS = 'team-a';
let env: TestEnv;
let tmp: string;
let caPems: PemKeyPair;
let echo: App;
const procs: Proc[] = [];
const workers: WorkerSetup[] = [];

async function bundle(...args: string[]): Promise<CliResult> {
  return cli(['connector', 'bundle', '--kubeconfig', env.kubeconfig, ...args]);
}

const apply = (objects: object[]): Promise<string> =>
  env.kubectlOk(['apply', '-f', '-'], { input: objects.map((o) => JSON.stringify(o)).join('\n') });

const OPERATOR_NS = 'underpass-system';

/** Where the operator keeps a connection's CA: its own namespace, named by the connection's uid. */
async function caSecretName(connection: string): Promise<string> {
  const uid = await env.kubectlOk(['get', 'tunnelconnection', connection, '-n', NS, '-o', 'jsonpath={.metadata.uid}']);
  return `ca.${NS}.${connection}.${uid}`;
}

async function caSecret(connection: string, pems: PemKeyPair): Promise<object> {
  const b64 = (s: string) => Buffer.from(s).toString('base64');
  return { apiVersion: 'v1', kind: 'Secret', metadata: { name: await caSecretName(connection), namespace: OPERATOR_NS }, data: { 'ca.crt': b64(pems.certPem), 'ca.key': b64(pems.keyPem) } };
}

function tunnelConnection(name: string, spec: object): object {
  return { apiVersion: 'underpass.dev/v1alpha1', kind: 'TunnelConnection', metadata: { name, namespace: NS }, spec };
}

function mapping(name: string, connection: string, side: string, host: string, port: number, listenPort: number): object {
  return {
    apiVersion: 'underpass.dev/v1alpha1', kind: 'ApplicationMapping', metadata: { name, namespace: NS },
    spec: { connection, target: { side, host, port }, listen: { port: listenPort } },
  };
}

beforeAll(async () => {
  env = await startTestEnv();
  tmp = await tempDir('underpass-bundle-');
  echo = await echoServer();
  await env.kubectlOk(['apply', '-f', path.join(ROOT, 'crds')]);
  await env.waitForCrds(['tunnelconnections.underpass.dev', 'applicationmappings.underpass.dev']);
  await env.kubectlOk(['create', 'namespace', NS]);
  await env.kubectlOk(['create', 'namespace', OPERATOR_NS]);
  caPems = await createCA({ connection: { namespace: NS, name: 'dc1' } });
  await apply([
    tunnelConnection('dc1', { endpoint: { hosts: ['dc1.tunnel.example.com'] }, connectors: ['site-a', 'site-b', 'site-c'] }),
    // dc2: created, but the operator has not made its CA yet.
    tunnelConnection('dc2', { endpoint: { hosts: ['dc2.tunnel.example.com'] } }),
    mapping('db', 'dc1', 'Connector', '127.0.0.1', echo.port, 15432),
    mapping('web', 'dc1', 'Connector', 'web.internal', 8080, 18080),
    mapping('api', 'dc1', 'Cluster', 'api.default.svc', 443, 18443),
    mapping('elsewhere', 'dc2', 'Connector', '10.9.9.9', 22, 10022),
  ]);
  await apply([await caSecret('dc1', caPems)]);
}, TESTENV_START_TIMEOUT_MS);

afterAll(async () => {
  await Promise.all(procs.map((p) => p.stop()));
  await Promise.all(workers.map((w) => w.proc.stop()));
  await echo?.close();
  if (tmp) await removeDir(tmp);
  await env?.stop();
});

describe('underpass connector bundle --out', () => {
  it('writes a bundle that connects to a worker of the same CA and carries a stream', async () => {
    // A worker whose certificate comes from the CA in the Secret, as the operator's would.
    const workerDir = path.join(tmp, 'worker');
    const ca = await loadCA(caPems.certPem, caPems.keyPem);
    const workerCert = await issueWorkerCert(ca, { sans: ['127.0.0.1'] });
    await writePemFiles(workerDir, { 'ca.crt': caPems.certPem, 'worker.crt': workerCert.certPem, 'worker.key': workerCert.keyPem });
    const listenPort = await freePort();
    const worker = await startWorker(workerDir, {
      connection: `${NS}/dc1`,
      mappings: [{ name: 'db', target: { side: 'Connector', host: '127.0.0.1', port: echo.port }, listen: { port: listenPort, address: '127.0.0.1' } }],
    });
    workers.push(worker);

    const out = path.join(tmp, 'site-a');
    const r = await bundle('--connection', `${NS}/dc1`, '--name', 'site-a', '--out', out, '--worker-url', worker.url);
    expect([r.code, r.stdout]).toEqual([0, '']);
    expect(r.stderr).toContain('issued underpass://team-a/dc1/connector/site-a, expires ');
    expect(r.stderr).toContain(`start it with: underpass connector --config ${out}/connector.yaml`);
    const key = await readFile(path.join(out, 'connector-site-a.key'), 'utf8');
    expect(r.stderr).not.toContain('PRIVATE KEY');
    expect(r.stderr).not.toContain(key.split('\n')[1]);
    expect((await stat(path.join(out, 'connector-site-a.key'))).mode & 0o777).toBe(0o600);
    expect(await readFile(path.join(out, 'ca.crt'), 'utf8')).toBe(caPems.certPem);

    const configText = await readFile(path.join(out, 'connector.yaml'), 'utf8');
    // Explicit lists from this connection's mappings: its Connector-side targets (allow) and the
    // listeners of its Cluster-side mappings (bind), each named beside its rule, for the user to review.
    expect(YAML.parse(configText)).toEqual({
      name: 'site-a',
      worker: worker.url,
      tls: { cert: 'connector-site-a.crt', key: 'connector-site-a.key', ca: 'ca.crt' },
      admin: '127.0.0.1:9091',
      allow: [`127.0.0.1:${echo.port}`, 'web.internal:8080'],
      bind: ['0.0.0.0:18443'],
    });
    expect(configText).toContain('# REVIEW before starting');
    expect(configText).toMatch(/- "web\.internal:8080" +# web\n/);
    expect(configText).toMatch(/- "0\.0\.0\.0:18443" +# api\n/);
    expect(configText).not.toMatch(/api\.default\.svc|10\.9\.9\.9/);
    expect(r.stderr).toContain(`allow: 127.0.0.1:${echo.port}, web.internal:8080; bind: 0.0.0.0:18443; review both before starting it`);
    const readme = await readFile(path.join(out, 'README.txt'), 'utf8');
    expect(readme).toContain('\n  underpass connector --config connector.yaml\n');
    expect(readme).toContain('ExecStart=');

    // Only the admin port moves (9091 may be taken on a test machine); everything else is the bundle as written.
    const adminPort = await freePort();
    await writeFile(path.join(out, 'connector.yaml'), configText.replace('admin: "127.0.0.1:9091"', `admin: "127.0.0.1:${adminPort}"`));
    const connector = new Proc(['connector', '--config', path.join(out, 'connector.yaml')]);
    procs.push(connector);
    await waitHttp(`http://127.0.0.1:${worker.adminPort}/readyz`, worker.proc);
    await waitHttp(`http://127.0.0.1:${adminPort}/readyz`, connector);
    const status = await getJson<{ connectors: Array<{ name: string }> }>(`http://127.0.0.1:${worker.adminPort}/status`);
    expect(status.connectors.map((c) => c.name)).toContain('site-a');
    const { received, error } = await exchange(listenPort, 'through the bundle');
    expect(error).toBeUndefined();
    expect(received.toString()).toBe('through the bundle');
  }, 60_000);

  it('refuses to overwrite an existing bundle without --force (exit 2), replaces it with --force', async () => {
    const out = path.join(tmp, 'site-b');
    expect((await bundle('--connection', `${NS}/dc1`, '--name', 'site-b', '--out', out)).code).toBe(0);
    const before = await readFile(path.join(out, 'connector-site-b.crt'), 'utf8');

    const again = await bundle('--connection', `${NS}/dc1`, '--name', 'site-b', '--out', out);
    expect(again.code).toBe(2);
    expect(again.stderr).toBe(`underpass: invalid configuration: ${out}/ca.crt: already exists; pass --force to overwrite the bundle\n`);
    expect(await readFile(path.join(out, 'connector-site-b.crt'), 'utf8')).toBe(before);

    expect((await bundle('--connection', `${NS}/dc1`, '--name', 'site-b', '--out', out, '--force')).code).toBe(0);
    expect(await readFile(path.join(out, 'connector-site-b.crt'), 'utf8')).not.toBe(before);
  });
});

describe('underpass connector bundle --secret', () => {
  it('prints a Secret that applies, with a connector.yaml dialling spec.endpoint.hosts[0]', async () => {
    const r = await bundle('--connection', `${NS}/dc1`, '--name', 'site-c', '--secret', '--days', '7');
    expect(r.code).toBe(0);
    expect(r.stderr).toContain('printed Secret underpass-connector/underpass-connector-site-c');
    expect(r.stderr).not.toContain('PRIVATE KEY');
    const secret = YAML.parse(r.stdout) as { metadata: { name: string; namespace: string }; data: Record<string, string> };
    expect(secret.metadata).toMatchObject({ name: 'underpass-connector-site-c', namespace: 'underpass-connector' });
    expect(Object.keys(secret.data).sort()).toEqual(['ca.crt', 'connector.yaml', 'tls.crt', 'tls.key']);
    const config = YAML.parse(Buffer.from(secret.data['connector.yaml']!, 'base64').toString()) as Record<string, unknown>;
    expect(config).toMatchObject({
      name: 'site-c',
      worker: 'wss://dc1.tunnel.example.com:443',
      tls: { cert: '/etc/underpass/tls.crt', key: '/etc/underpass/tls.key', ca: '/etc/underpass/ca.crt' },
    });

    await env.kubectlOk(['create', 'namespace', 'underpass-connector']);
    await env.kubectlOk(['apply', '-f', '-'], { input: r.stdout });
    const stored = await env.kubectlOk(['get', 'secret', '-n', 'underpass-connector', 'underpass-connector-site-c', '-o', 'jsonpath={.data.tls\\.crt}']);
    expect(stored).toBe(secret.data['tls.crt']);
  });

  it('prefers status.endpoint, once the operator has observed one, over spec.endpoint.hosts', async () => {
    await env.kubectlOk(['patch', 'tunnelconnection', 'dc2', '-n', NS, '--subresource=status', '--type=merge',
      '-p', JSON.stringify({ status: { endpoint: 'wss://203.0.113.9:31443/v1/tunnel' } })]);
    const dc2 = await createCA({ connection: { namespace: NS, name: 'dc2' } });
    await apply([await caSecret('dc2', dc2)]);
    try {
      const r = await bundle('--connection', `${NS}/dc2`, '--name', 'edge', '--secret', '--secret-namespace', 'edge-ns');
      expect(r.code).toBe(0);
      const secret = YAML.parse(r.stdout) as { metadata: { namespace: string }; data: Record<string, string> };
      expect(secret.metadata.namespace).toBe('edge-ns');
      const config = YAML.parse(Buffer.from(secret.data['connector.yaml']!, 'base64').toString()) as { worker: string };
      expect(config.worker).toBe('wss://203.0.113.9:31443/v1/tunnel');
    } finally {
      await env.kubectlOk(['delete', 'secret', '-n', OPERATOR_NS, await caSecretName('dc2')]);
    }
  });
});

describe('underpass connector bundle refusals', () => {
  it('a connection without its CA Secret: exit 1, asking whether the operator runs', async () => {
    const r = await bundle('--connection', `${NS}/dc2`, '--name', 'site-a', '--out', path.join(tmp, 'never'));
    expect(r).toEqual({
      code: 1,
      stdout: '',
      stderr: `underpass: connection team-a/dc2 has no CA Secret underpass-system/${await caSecretName('dc2')}; is the operator running `
        + '(in namespace underpass-system: --operator-namespace) and the TunnelConnection created?\n',
    });
  });

  it('a name outside spec.connectors: exit 2 on --name', async () => {
    const r = await bundle('--connection', `${NS}/dc1`, '--name', 'intruder', '--out', path.join(tmp, 'never'));
    expect(r.code).toBe(2);
    expect(r.stderr).toBe('underpass: invalid configuration: field "--name": connector "intruder" is not in spec.connectors of TunnelConnection '
      + 'team-a/dc1 (site-a, site-b, site-c); add it there first, or use one of those names\n');
  });

  it('a certificate that would outlive the CA: exit 2 on --days', async () => {
    const r = await bundle('--connection', `${NS}/dc1`, '--name', 'site-a', '--secret', '--days', '999999');
    expect([r.code, r.stdout]).toEqual([2, '']);
    expect(r.stderr).toMatch(/^underpass: invalid configuration: field "--days": the certificate would expire .*, after its CA/);
  });

  it('a connection that does not exist: exit 1', async () => {
    const r = await bundle('--connection', `${NS}/dc9`, '--name', 'site-a', '--out', path.join(tmp, 'never'));
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('underpass: no TunnelConnection team-a/dc9 (404 tunnelconnections.underpass.dev "dc9" not found)');
  });

  it('a tenant user who may read every Secret of the connection\'s namespace still cannot bundle: the CA is in the operator\'s namespace', async () => {
    const kubeconfig = path.join(tmp, 'alice.kubeconfig');
    const made = await run('bash', [path.join(ROOT, 'test/env/user-kubeconfig.sh'), '--out', kubeconfig, env.dir, 'alice']);
    expect(made.code).toBe(0);
    // Everything in the tenant namespace, Secrets included: the CA key is not there (issue 15, finding 10).
    const rules = [
      { apiGroups: [''], resources: ['secrets'], verbs: ['get', 'list'] },
      { apiGroups: ['underpass.dev'], resources: ['tunnelconnections'], resourceNames: ['dc1'], verbs: ['get'] },
      { apiGroups: ['underpass.dev'], resources: ['applicationmappings'], verbs: ['list'] },
    ];
    const role = (r: object[]) => ({ apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'Role', metadata: { name: 'dc1-connector-bundler', namespace: NS }, rules: r });
    await apply([role(rules)]);
    await env.kubectlOk(['create', 'rolebinding', 'alice-bundler', '-n', NS, '--role=dc1-connector-bundler', '--user=alice']);
    const args = ['connector', 'bundle', '--kubeconfig', kubeconfig, '--connection', `${NS}/dc1`, '--name', 'site-a', '--secret'];

    const denied = await retryUntil(args, (r) => r.stderr.includes('CA Secret'));
    expect([denied.code, denied.stdout]).toEqual([1, '']);
    const name = await caSecretName('dc1');
    expect(denied.stderr).toContain(`underpass: not allowed to get the CA Secret underpass-system/${name}: 403 secrets "${name}" is forbidden: `
      + 'User "alice" cannot get resource "secrets" in API group "" in the namespace "underpass-system"');
    expect(denied.stderr).toContain('Enroll the connector with a one-time token instead: underpass connector token --connection team-a/dc1 --name <name>');
    const listed = await run(path.join(env.bin, 'kubectl'), ['--kubeconfig', kubeconfig, 'get', 'secrets', '-n', NS, '-o', 'json']);
    expect(listed.code).toBe(0);
    expect(listed.stdout).not.toContain('ca.key');

    // A cluster admin grants it in the operator's namespace: then it works (bundle is the admins' path).
    await apply([{ apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'Role', metadata: { name: 'ca-reader', namespace: OPERATOR_NS },
      rules: [{ apiGroups: [''], resources: ['secrets'], resourceNames: [name], verbs: ['get'] }] }]);
    await env.kubectlOk(['create', 'rolebinding', 'alice-ca-reader', '-n', OPERATOR_NS, '--role=ca-reader', '--user=alice']);
    const allowed = await retryUntil(args, (r) => r.code === 0);
    expect(allowed.code).toBe(0);
    expect(allowed.stderr).toContain('issued underpass://team-a/dc1/connector/site-a');
    expect(allowed.stderr).not.toContain('warning');
  });
});

/** RBAC changes take a moment to reach the authorizer: runs the CLI until `done` (or 10 s), returns the last result. */
async function retryUntil(args: string[], done: (r: CliResult) => boolean, timeoutMs = 10_000): Promise<CliResult> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const r = await cli(args);
    if (done(r) || Date.now() > deadline) return r;
    await new Promise((res) => setTimeout(res, 200));
  }
}
