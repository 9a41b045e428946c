import { describe, it, expect, beforeEach, afterEach } from '@jest/globals';
import { X509Certificate } from 'node:crypto';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command } from 'commander';
import { certificateInfo, createCA } from '../tunnel/pki.js';
import { registerPkiCommands } from './pki.js';
import { runCli } from './testing.js';

let dir: string;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'underpass-cli-pki-'));
});

afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const run = (...args: string[]) => runCli(args);

const mode = async (path: string) => (await stat(path)).mode & 0o777;

describe('underpass pki init', () => {
  it('writes the CA and a worker certificate with safe modes', async () => {
    const { code, stdout, stderr } = await run('pki', 'init', '--dir', dir, '--connection', 'team-a/dc1');
    expect([code, stderr]).toEqual([0, '']);
    expect((await readdir(dir)).sort()).toEqual(['ca.crt', 'ca.key', 'worker.crt', 'worker.key']);
    expect(await mode(join(dir, 'ca.key'))).toBe(0o600);
    expect(await mode(join(dir, 'worker.key'))).toBe(0o600);
    expect(await mode(join(dir, 'ca.crt'))).toBe(0o644);
    expect(await mode(join(dir, 'worker.crt'))).toBe(0o644);

    const ca = new X509Certificate(await readFile(join(dir, 'ca.crt')));
    const worker = new X509Certificate(await readFile(join(dir, 'worker.crt')));
    expect(ca.subjectAltName).toBe('URI:underpass://team-a/dc1');
    expect(worker.checkIssued(ca) && worker.verify(ca.publicKey)).toBe(true);
    expect(worker.subjectAltName).toBe('DNS:localhost, IP Address:127.0.0.1, URI:underpass://team-a/dc1/worker');
    const days = (Date.parse(worker.validTo) - Date.parse(worker.validFrom)) / 86_400_000;
    expect(Math.round(days)).toBe(30);

    for (const name of ['ca.crt', 'ca.key', 'worker.crt', 'worker.key']) expect(stdout).toContain(join(dir, name));
    expect(stdout).not.toContain('PRIVATE KEY');
    expect(stdout).not.toContain((await readFile(join(dir, 'ca.key'), 'utf8')).split('\n')[1]);
  });

  it('uses the given worker SANs and validity', async () => {
    const { code } = await run('pki', 'init', '--dir', dir, '--connection', 'team-a/dc1',
      '--worker-san', 'dc1.tunnel.example.com', '--worker-san', '203.0.113.7', '--days', '7', '--ca-days', '365');
    expect(code).toBe(0);
    const worker = certificateInfo(await readFile(join(dir, 'worker.crt'), 'utf8'));
    expect([worker.dnsNames, worker.ips]).toEqual([['dc1.tunnel.example.com'], ['203.0.113.7']]);
    expect(Math.round((worker.notAfter.getTime() - Date.now()) / 86_400_000)).toBe(7);
    const ca = certificateInfo(await readFile(join(dir, 'ca.crt'), 'utf8'));
    expect(Math.round((ca.notAfter.getTime() - Date.now()) / 86_400_000)).toBe(365);
  });

  it('replaces everything with --force', async () => {
    expect((await run('pki', 'init', '--dir', dir, '--connection', 'team-a/dc1')).code).toBe(0);
    const before = await readFile(join(dir, 'ca.crt'), 'utf8');
    expect((await run('pki', 'init', '--dir', dir, '--connection', 'team-a/dc1', '--force')).code).toBe(0);
    expect(await readFile(join(dir, 'ca.crt'), 'utf8')).not.toBe(before);
    expect(await mode(join(dir, 'ca.key'))).toBe(0o600);
  });

  it.each([
    ['a connection id without a namespace', ['--connection', 'dc1'], 'field "--connection": connection id "dc1" must have the form <namespace>/<name>'],
    ['an upper-case namespace', ['--connection', 'Team/dc1'], 'field "--connection": namespace "Team" in "Team/dc1" must be a DNS-1123 label'],
    ['a bad worker SAN', ['--connection', 'a/b', '--worker-san', 'db_1'], 'field "--worker-san": worker SAN "db_1" is neither'],
    ['days that are not a number', ['--connection', 'a/b', '--days', 'ten'], 'field "--days": must be a whole number of days'],
    ['a worker certificate outliving its CA', ['--connection', 'a/b', '--days', '40', '--ca-days', '30'], 'field "--days": the certificate would expire'],
  ])('exits 2 on %s and writes nothing', async (_what, args, message) => {
    const { code, stderr } = await run('pki', 'init', '--dir', dir, ...args);
    expect(code).toBe(2);
    expect(stderr).toContain(`underpass: invalid configuration: ${message}`);
    expect(await readdir(dir)).toEqual([]);
  });

  it('exits 2 without --force when a file exists, naming it, and leaves it alone', async () => {
    await writeFile(join(dir, 'worker.key'), 'keep me\n');
    const { code, stderr } = await run('pki', 'init', '--dir', dir, '--connection', 'team-a/dc1');
    expect(code).toBe(2);
    expect(stderr).toContain(`${join(dir, 'worker.key')}: already exists; pass --force to overwrite it`);
    expect(await readdir(dir)).toEqual(['worker.key']);
    expect(await readFile(join(dir, 'worker.key'), 'utf8')).toBe('keep me\n');
  });

  it('exits 2 when --connection is missing', async () => {
    const { code, stderr } = await run('pki', 'init', '--dir', dir);
    expect(code).toBe(2);
    expect(stderr).toContain("required option '--connection <namespace/name>' not specified");
  });

  it('explains every option with an example in --help', async () => {
    const { code, stdout } = await run('pki', 'init', '--help');
    expect(code).toBe(0);
    for (const flag of ['--dir', '--connection', '--worker-san', '--days', '--ca-days', '--force', 'Example:']) expect(stdout).toContain(flag);
  });
});

describe('underpass pki connector', () => {
  beforeEach(async () => {
    expect((await run('pki', 'init', '--dir', dir, '--connection', 'team-a/dc1')).code).toBe(0);
  });

  it('issues a connector certificate for the CA\'s connection', async () => {
    const { code, stdout } = await run('pki', 'connector', '--dir', dir, '--name', 'site-a', '--days', '14');
    expect(code).toBe(0);
    const crt = join(dir, 'connector-site-a.crt');
    const key = join(dir, 'connector-site-a.key');
    expect([await mode(crt), await mode(key)]).toEqual([0o644, 0o600]);
    const cert = new X509Certificate(await readFile(crt));
    const ca = new X509Certificate(await readFile(join(dir, 'ca.crt')));
    expect(cert.checkIssued(ca) && cert.verify(ca.publicKey)).toBe(true);
    expect(cert.subject).toBe('CN=site-a');
    expect(cert.subjectAltName).toBe('URI:underpass://team-a/dc1/connector/site-a');
    expect(Math.round((Date.parse(cert.validTo) - Date.now()) / 86_400_000)).toBe(14);
    expect(stdout).toContain(crt);
    expect(stdout).toContain('team-a/dc1');
    expect(stdout).not.toContain('PRIVATE KEY');
  });

  it('refuses to reissue without --force, and reissues with it', async () => {
    expect((await run('pki', 'connector', '--dir', dir, '--name', 'site-a')).code).toBe(0);
    const again = await run('pki', 'connector', '--dir', dir, '--name', 'site-a');
    expect(again.code).toBe(2);
    expect(again.stderr).toContain(`${join(dir, 'connector-site-a.crt')}: already exists; pass --force`);
    expect((await run('pki', 'connector', '--dir', dir, '--name', 'site-a', '--force')).code).toBe(0);
  });

  it.each([
    ['an invalid name', ['--name', 'Site_A'], 'field "--name": connector name "Site_A" must be a DNS-1123 label'],
    ['a name that is a path', ['--name', '../x'], 'field "--name": connector name "../x"'],
    ['zero days', ['--name', 'a', '--days', '0'], 'field "--days": must be a whole number of days'],
  ])('exits 2 on %s', async (_what, args, message) => {
    const { code, stderr } = await run('pki', 'connector', '--dir', dir, ...args);
    expect(code).toBe(2);
    expect(stderr).toContain(message);
  });

  it.each([
    ['ca.key is missing', 'ca.key', null, 'ca.key: not found; create the CA first with "underpass pki init'],
    ['ca.crt is missing', 'ca.crt', null, 'ca.crt: not found'],
    ['ca.crt is not a certificate', 'ca.crt', 'garbage', 'ca.crt: not a PEM X.509 certificate'],
    ['ca.key is not a key', 'ca.key', 'garbage', 'ca.key: not a PEM private key'],
    ['ca.crt is a leaf', 'ca.crt', 'worker.crt', 'ca.crt: certificate CN=underpass-worker team-a/dc1 is not a CA certificate'],
    ['ca.key is another key', 'ca.key', 'worker.key', 'ca.key: the CA key does not belong to the CA certificate'],
  ])('exits 2 when %s, naming the file', async (_what, file, replacement, message) => {
    const path = join(dir, file);
    await rm(path);
    if (replacement === 'garbage') await writeFile(path, 'garbage\n');
    else if (replacement) await writeFile(path, await readFile(join(dir, replacement)));
    const { code, stderr } = await run('pki', 'connector', '--dir', dir, '--name', 'site-a');
    expect(code).toBe(2);
    expect(stderr).toContain(`underpass: invalid configuration: ${join(dir, message.split(':')[0] as string)}:${message.split(':').slice(1).join(':')}`);
  });

  it('exits 2 when the directory has no CA at all', async () => {
    const empty = join(dir, 'empty');
    await mkdir(empty);
    const { code, stderr } = await run('pki', 'connector', '--dir', empty, '--name', 'site-a');
    expect(code).toBe(2);
    expect(stderr).toContain(`${join(empty, 'ca.crt')}: not found`);
  });

  it('works with a CA created by the library for another connection', async () => {
    const other = join(dir, 'other');
    await mkdir(other);
    const pems = await createCA({ connection: { namespace: 'ops', name: 'edge' } });
    await writeFile(join(other, 'ca.crt'), pems.certPem);
    await writeFile(join(other, 'ca.key'), pems.keyPem, { mode: 0o600 });
    expect((await run('pki', 'connector', '--dir', other, '--name', 'n1')).code).toBe(0);
    expect(certificateInfo(await readFile(join(other, 'connector-n1.crt'), 'utf8')).uris).toEqual(['underpass://ops/edge/connector/n1']);
  });
});

describe('registerPkiCommands', () => {
  it('sends progress lines to the injected writer, without key material', async () => {
    const lines: string[] = [];
    const program = new Command('underpass').exitOverride();
    registerPkiCommands(program, { out: (line) => lines.push(line) });
    await program.parseAsync(['node', 'underpass', 'pki', 'init', '--dir', dir, '--connection', 'a/b']);
    expect(lines).toHaveLength(4);
    expect(lines.join('\n')).toMatch(/wrote .*ca\.key +CA private key \(mode 0600\)/);
    expect(lines.join('\n')).not.toMatch(/BEGIN/);
  });
});
