/**
 * `underpass connector bundle` flag handling and the two spellings of
 * `underpass connector`, without a cluster (the kubeconfig points at a port
 * nobody listens on). Against a real apiserver: test/cluster/bundle.test.ts.
 */
import { describe, it, expect, beforeAll, afterAll } from '@jest/globals';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCli } from './testing.js';

let dir: string;
let kubeconfig: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'underpass-cli-bundle-'));
  kubeconfig = join(dir, 'kubeconfig');
  // Port 1 on loopback: every request is refused at once.
  await writeFile(kubeconfig, `apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1", insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`);
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const run = (...args: string[]) => runCli(args);

const bundle = (...args: string[]) => run('connector', 'bundle', '--kubeconfig', kubeconfig, ...args);

describe('underpass connector', () => {
  it.each([
    ['connector', '--config'],
    ['connector', 'run', '--config'],
  ])('"%s %s F" runs a connector from F', async (...words) => {
    const missing = join(dir, 'absent.yaml');
    const r = await run(...words, missing);
    expect(r).toEqual({ code: 2, stdout: '', stderr: `underpass: invalid configuration: ${missing}: cannot read the config file: no such file\n` });
  });

  it('without --config it says so (exit 2)', async () => {
    const r = await run('connector');
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('field "--config": either --config, or --worker with --token (enroll) or an enrolled --state-dir');
  });
});

describe('underpass connector bundle flags', () => {
  it.each<[string, string[], string]>([
    ['a connection id without a namespace', ['--connection', 'dc1', '--name', 'x', '--out', 'd'], 'field "--connection": connection id "dc1" must have the form <namespace>/<name>'],
    ['a bad namespace', ['--connection', 'Team/dc1', '--name', 'x', '--out', 'd'], 'field "--connection": namespace "Team" in "Team/dc1" must be a DNS-1123 label'],
    ['a bad connector name', ['--connection', 'team-a/dc1', '--name', 'Site_A', '--out', 'd'], 'field "--name": connector name "Site_A" must be a DNS-1123 label'],
    ['zero days', ['--connection', 'team-a/dc1', '--name', 'x', '--out', 'd', '--days', '0'], 'field "--days": must be a whole number of days from 1 to 999999, got "0"'],
    ['neither --out nor --secret', ['--connection', 'team-a/dc1', '--name', 'x'], 'field "--out": say where the bundle goes: --out DIR writes files, --secret prints a Secret manifest'],
    ['a bad --secret-namespace', ['--connection', 'team-a/dc1', '--name', 'x', '--secret', '--secret-namespace', 'Bad'], 'field "--secret-namespace": namespace "Bad" must be a DNS-1123 label'],
    ['--secret-namespace without --secret', ['--connection', 'team-a/dc1', '--name', 'x', '--out', 'd', '--secret-namespace', 'ns'], 'field "--secret-namespace": only applies with --secret'],
    ['a plain ws:// worker URL', ['--connection', 'team-a/dc1', '--name', 'x', '--out', 'd', '--worker-url', 'ws://h:1'], 'field "--worker-url": "ws://h:1": plain ws is not allowed; the tunnel requires TLS (use wss://)'],
  ])('%s: exit 2 naming the flag, before the cluster is asked', async (_name, args, message) => {
    const r = await bundle(...args);
    const line = `underpass: invalid configuration: ${message}`;
    expect(r.stderr.slice(0, line.length)).toBe(line);
    expect(r.stderr.trimEnd()).not.toContain('\n');
    expect([r.code, r.stdout]).toEqual([2, '']);
  });

  it('--out and --secret together: exit 2', async () => {
    const r = await bundle('--connection', 'team-a/dc1', '--name', 'x', '--out', 'd', '--secret');
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("option '--secret' cannot be used with option '--out <dir>'");
  });

  it('an unreadable --kubeconfig: exit 2 naming the flag', async () => {
    const r = await run('connector', 'bundle', '--kubeconfig', join(dir, 'nope'), '--connection', 'team-a/dc1', '--name', 'x', '--secret');
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('underpass: invalid configuration: field "--kubeconfig": cannot load kubeconfig');
  });

  it('existing bundle files: exit 2 before the cluster is asked, nothing changed', async () => {
    const out = join(dir, 'existing');
    await run('pki', 'init', '--dir', out, '--connection', 'team-a/dc1');
    const before = (await readdir(out)).sort();
    const r = await bundle('--connection', 'team-a/dc1', '--name', 'x', '--out', out);
    expect(r).toEqual({ code: 2, stdout: '', stderr: `underpass: invalid configuration: ${out}/ca.crt: already exists; pass --force to overwrite the bundle\n` });
    expect((await readdir(out)).sort()).toEqual(before);
  });

  it('an unreachable API server: exit 1 saying what it was reading and from where', async () => {
    const r = await bundle('--connection', 'team-a/dc1', '--name', 'x', '--out', join(dir, 'never'));
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^underpass: cannot get TunnelConnection team-a\/dc1 from https:\/\/127\.0\.0\.1:1: .*ECONNREFUSED/);
  });
});
