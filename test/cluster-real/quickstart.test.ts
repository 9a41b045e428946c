/**
 * README.md's "Quick start on Kubernetes", run as written against the local cluster with the
 * locally built image: the commands come from the README's own fenced block (so the README
 * cannot drift from what is tested), once as written (Helm), once with the plain manifests the
 * block names in its "without Helm" comment, and once with `oc` instead of kubectl when oc builds
 * (test/env/build.sh oc; skipped with the reason otherwise).
 *
 * Each command runs with bash in a scratch directory that links the repository's charts/,
 * crds/, operator/ and docs/, with kubectl, helm and underpass on PATH and KUBECONFIG set. The
 * last command, the connector, runs on the host with the DNS records a user has for the README's
 * example names, in a private /etc/hosts (a mount namespace of the connector's own):
 * tunnel.dc1.example.com is the tunnel Service, db.internal a pod standing for the private
 * database (an echo server on 5432). It passes when the connection is Ready with connector site-a
 * and the mapping is Ready (the connector accepted it: allowed, and its target resolves).
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { type CommandResult, REPO_ROOT, run } from '../cluster/testenv.js';
import { testenvBin } from '../charts/render.js';
import { clusterUnavailable, type LocalCluster, useCluster } from './cluster.js';
import { deleteNamespaces, helm, list, restrictedNamespace, sleep, step, testboxPod, underpassImage, waitFor, waitForReadyPods } from './kube.js';

const why = await clusterUnavailable();
if (why) console.log(`README quick start test skipped: ${why}`);
const suite = why ? describe.skip : describe;

/** The commands of README.md's Kubernetes quick start, and the "without Helm" alternative of its first one. */
function quickStart(readme: string): { commands: string[]; withoutHelm: string } {
  const section = readme.split(/^## /m).find((s) => s.startsWith('Quick start on Kubernetes'));
  if (!section) throw new Error('README.md has no "## Quick start on Kubernetes" section');
  const block = /```sh\n([\s\S]*?)```/.exec(section)?.[1];
  if (!block) throw new Error('the Kubernetes quick start has no ```sh block');
  // A command continued with a trailing backslash is one command.
  const lines = block.replace(/\\\n\s*/g, ' ').split('\n');
  const commands = lines.filter((l) => l.trim() && !l.trim().startsWith('#')).map((l) => l.replace(/\s+#.*$/, '').trim());
  const alt = lines.map((l) => /^#\s+or, without Helm:\s+(.+?)(?:\s{2,}\(.*\))?$/.exec(l)?.[1]).find(Boolean);
  if (!alt) throw new Error('the quick start block has no "#   or, without Helm: <command>" line');
  return { commands, withoutHelm: alt.trim() };
}

const readme = fs.readFileSync(path.join(REPO_ROOT, 'README.md'), 'utf8');
const { commands, withoutHelm } = quickStart(readme);

/** Why oc cannot be used here, or undefined when test/env/build.sh built it. */
function ocUnavailable(bin: string): string | undefined {
  if (fs.existsSync(path.join(bin, 'oc'))) return undefined;
  const reason = path.join(bin, '.unavailable-oc');
  return fs.existsSync(reason) ? fs.readFileSync(reason, 'utf8').trim() : 'test/env/build.sh oc has not been run (make cluster-bins tries it)';
}
const ocWhy = why ? undefined : ocUnavailable(testenvBin());
if (ocWhy) console.log(`README quick start with oc skipped: ${ocWhy}`);

suite('README quick start on Kubernetes, as written', () => {
  let cluster: LocalCluster;
  let connector: ChildProcess | undefined;
  let connectorLog = '';
  /** The pod that stands for db.internal, the README mapping's target in the private network. */
  const DB_NS = 'quickstart-db';
  let dbIp = '';

  beforeAll(async () => {
    cluster = await useCluster();
    await underpassImage(cluster);
    await deleteNamespaces(cluster, [DB_NS]);
    await restrictedNamespace(cluster, DB_NS);
    await cluster.kubectlOk(['apply', '-f', '-'], { input: list([testboxPod(cluster, DB_NS, 'db', ['serve', '-http', ':8080', '-echo', ':5432', '-name', 'db'])]) });
    dbIp = (await waitForReadyPods(cluster, DB_NS, 'app=db', 1, 120_000))[0]!.status.podIP!;
  }, 20 * 60_000);

  afterAll(async () => {
    connector?.kill('SIGKILL');
    if (cluster) await deleteNamespaces(cluster, [DB_NS]);
    await cluster?.release();
  }, 120_000);

  it('has the commands this test expects to run', () => {
    expect(commands[0]).toMatch(/^helm install underpass-operator /);
    expect(withoutHelm).toMatch(/^kubectl apply -f crds\//);
    expect(commands).toContainEqual(expect.stringMatching(/^underpass connector token --connection team-a\/dc1 --name site-a /));
    expect(commands).toContainEqual(expect.stringMatching(/^underpass connector --token-file site-a\.token --worker wss:\/\/tunnel\.dc1\.example\.com:443 /));
    expect(commands.at(-1)).toMatch(/^kubectl get tcn /);
  });

  /** A scratch directory like a checkout (charts, crds, operator, docs linked), PATH with the tools. */
  const scratch = (tool: 'kubectl' | 'oc'): { dir: string; env: NodeJS.ProcessEnv } => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'underpass-quickstart-'));
    for (const d of ['charts', 'crds', 'operator', 'docs']) fs.symlinkSync(path.join(REPO_ROOT, d), path.join(dir, d));
    const tools = path.join(dir, '.bin');
    fs.mkdirSync(tools);
    fs.symlinkSync(path.join(cluster.bin, tool), path.join(tools, tool));
    fs.symlinkSync(path.join(cluster.bin, 'helm'), path.join(tools, 'helm'));
    fs.symlinkSync(path.join(REPO_ROOT, 'bin', 'underpass'), path.join(tools, 'underpass'));
    const env: NodeJS.ProcessEnv = {
      PATH: `${tools}:${process.env['PATH']}`,
      HOME: dir, // kubectl's and helm's caches and configs
      KUBECONFIG: cluster.kubeconfig,
    };
    return { dir, env };
  };
  const sh = (cmd: string, dir: string, env: NodeJS.ProcessEnv): Promise<CommandResult> =>
    run('bash', ['-c', `cd "$1" && ${cmd}`, '_', dir], { env, timeoutMs: 240_000 });

  const tcJson = async (): Promise<any> => JSON.parse(await cluster.kubectlOk(['get', 'tunnelconnection', 'dc1', '-n', 'team-a', '-o', 'json']));
  const ready = (obj: any): string | undefined => (obj.status?.conditions ?? []).find((c: { type: string }) => c.type === 'Ready')?.status;

  /** Removes what a variant installed (also after a failure), so the next one starts clean. */
  const cleanUp = async (): Promise<void> => {
    connector?.kill('SIGTERM');
    connector = undefined;
    if ((await cluster.kubectl(['get', 'crd', 'tunnelconnections.underpass.dev'])).code === 0) {
      // The finalizer needs the operator: delete the connections while it runs.
      await cluster.kubectl(['delete', 'tunnelconnections', '--all', '-A', '--wait', '--timeout=60s'], { timeoutMs: 90_000 });
    }
    await helm(cluster, ['uninstall', 'underpass-operator', '-n', 'underpass-system', '--wait']);
    for (const d of ['operator/deploy', 'operator/rbac', 'crds']) {
      await cluster.kubectl(['delete', '--ignore-not-found', '--wait=false', '-f', path.join(REPO_ROOT, d)]);
    }
    await deleteNamespaces(cluster, ['team-a', 'underpass-system']);
  };

  const variants: [string, 'kubectl' | 'oc', string | undefined][] = [
    ['as written (helm install)', 'kubectl', undefined],
    [`without Helm (${withoutHelm})`, 'kubectl', withoutHelm],
    ['with oc instead of kubectl', 'oc', withoutHelm.replace(/^kubectl /, 'oc ')],
  ];
  for (const [name, tool, first] of variants) {
    const test = tool === 'oc' && ocWhy ? it.skip : it;
    test(`runs ${name}: the connection and the mapping become Ready with connector site-a`, () => step(cluster, ['underpass-system', 'team-a'], async () => {
      await cleanUp();
      const { dir, env } = scratch(tool);
      try {
        const cmds = [first ?? commands[0]!, ...commands.slice(1)].map((c) => (tool === 'oc' ? c.replace(/^kubectl /, 'oc ') : c));
        const t0 = Date.now();
        // Cluster side up to the connector; the connector on "a host in the private network"; then the rest.
        const at = cmds.findIndex((c) => /^underpass connector --token-file /.test(c));
        expect(at).toBeGreaterThan(0);
        const shOk = async (cmd: string): Promise<string> => {
          const r = await sh(cmd, dir, env);
          if (r.code !== 0) throw new Error(`README command failed (exit ${r.code}): ${cmd}\n${r.stderr}${r.stdout}`);
          return r.stdout;
        };
        for (const cmd of cmds.slice(0, at)) {
          const out = await shOk(cmd);
          if (/ get tc,am /.test(cmd)) expect(out).toMatch(/tunnelconnection\.underpass\.dev\/dc1[\s\S]*applicationmapping\.underpass\.dev\/payroll-db/);
          if (/\{\.status\.endpoint\}/.test(cmd)) expect(out.trim()).toBe('wss://tunnel.dc1.example.com:443');
        }
        expect(fs.readFileSync(path.join(dir, 'site-a.token'), 'utf8')).toMatch(/^[\w-]+\.[\w-]+\.[\w-]+\s*$/);
        // The host's view, in a mount namespace of the connector's own: DNS records for the README's
        // example names (the tunnel Service, the database pod) in /etc/hosts, and /var/lib (where
        // --state-dir points) a scratch directory, so the host's own is never written.
        const ip = (await cluster.kubectlOk(['get', 'service', 'dc1-tunnel', '-n', 'team-a', '-o', 'jsonpath={.spec.clusterIP}'])).trim();
        const hosts = path.join(dir, 'hosts');
        fs.writeFileSync(hosts, `127.0.0.1 localhost\n${ip} tunnel.dc1.example.com\n${dbIp} db.internal\n`);
        const varLib = path.join(dir, 'var-lib');
        fs.mkdirSync(varLib);
        connector = spawn('unshare', ['--mount', '--propagation', 'private', '--', 'bash', '-c',
          'mount --bind "$1" /etc/hosts && mount --bind "$2" /var/lib && cd "$3" && exec bash -c "$4"', '_', hosts, varLib, dir, cmds[at]!], { env, stdio: ['ignore', 'pipe', 'pipe'] });
        connectorLog = '';
        connector.stdout!.on('data', (d: Buffer) => { connectorLog += d.toString(); });
        connector.stderr!.on('data', (d: Buffer) => { connectorLog += d.toString(); });
        const exited = new Promise<number | null>((r) => connector!.once('exit', (code) => r(code)));
        await Promise.race([
          waitFor('dc1 Ready with connector site-a, payroll-db Ready', async () => {
            const tc = await tcJson();
            const am = JSON.parse(await cluster.kubectlOk(['get', 'applicationmapping', 'payroll-db', '-n', 'team-a', '-o', 'json']));
            return ready(tc) === 'True' && (tc.status.connectors ?? []).some((c: { name: string }) => c.name === 'site-a') && ready(am) === 'True';
          }, 180_000, 1_000),
          exited.then((code) => { throw new Error(`the connector exited (${code})`); }),
        ]).catch((err: Error) => { throw new Error(`${err.message}\n----- connector output -----\n${connectorLog.slice(-6000)}`); });
        expect(fs.existsSync(path.join(varLib, 'underpass', 'tls.crt'))).toBe(true); // its state, on the host
        for (const cmd of cmds.slice(at + 1)) {
          const out = await shOk(cmd);
          if (/ get tcn /.test(cmd)) expect(out).toMatch(/dc1\.site-a/);
        }
        console.log(`README quick start ${name}: Ready ${Date.now() - t0} ms after its first command`);
      } finally {
        connector?.kill('SIGTERM');
        await sleep(500);
        await cleanUp();
        fs.rmSync(dir, { recursive: true, force: true });
      }
    }), 600_000);
  }
});
