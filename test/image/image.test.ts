/**
 * The Underpass image as `make image` builds it (image/build.sh; cached by the hash of its
 * inputs, so a warm run only reads the archive): its layout, user, entry point and contents read
 * from the OCI archive itself, then the image run under a real containerd + runc of the test's
 * own (read-only root file system, the image's user). The containerd part is skipped, saying
 * why, only when containerd/runc cannot be installed or the test does not run as root.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { spawn, spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { nodeFlagsOf } from '../../tunnel/node-flags.js';
import { containerdUnavailable, startContainerd, type PrivateContainerd } from './containerd.js';
import { readOciArchive, type OciImage } from './oci-archive.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const BIN = path.join(ROOT, 'bin/underpass');
const PKG = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string };
const REF = `ghcr.io/underpass/underpass:${PKG.version}`;
const NODE_VERSION = spawnSync('bash', [path.join(ROOT, 'image/node.sh'), '--version'], { encoding: 'utf8' }).stdout.trim();
const ENTRYPOINT = ['node', ...nodeFlagsOf(BIN), '/opt/underpass/bin/underpass'];
const KEEP = new Set(['etc/passwd', 'etc/group', 'opt/underpass/package.json']);

function buildImage(): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn('bash', [path.join(ROOT, 'image/build.sh')], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => {
      if (code === 0) resolve(stdout.trim().split('\n').pop()!);
      else reject(new Error(`image/build.sh exited ${code}\n${stderr.slice(-4000)}`));
    });
  });
}

/** The final stage's USER, WORKDIR, ENTRYPOINT and ENV of the Dockerfile (kept in step by hand). */
function dockerfileFinalStage(): { user?: string; workdir?: string; entrypoint?: string[]; env?: string } {
  const text = readFileSync(path.join(ROOT, 'Dockerfile'), 'utf8');
  const final = text.slice(text.lastIndexOf('\nFROM '));
  const line = (word: string): string | undefined => new RegExp(`^${word}\\s+(.+)$`, 'm').exec(final)?.[1]?.trim();
  const entry = line('ENTRYPOINT');
  return { user: line('USER'), workdir: line('WORKDIR'), entrypoint: entry ? (JSON.parse(entry) as string[]) : undefined, env: line('ENV') };
}

let archive: string;
let image: OciImage;

beforeAll(async () => {
  archive = await buildImage();
  image = readOciArchive(archive, (p) => KEEP.has(p));
}, 20 * 60_000);

const file = (p: string): string => image.files.get(p)?.content?.toString('utf8') ?? '';

describe('the image archive (make image)', () => {
  it('names the image for containerd and carries its tag for OCI tools', () => {
    expect(image.index.manifests[0]!.annotations).toEqual({
      'io.containerd.image.name': REF,
      'org.opencontainers.image.ref.name': PKG.version,
    });
    expect(image.config.config.Labels?.['org.opencontainers.image.version']).toBe(PKG.version);
  });

  it("starts node with bin/underpass's flags as user 65532:65532 in /opt/underpass, with the Dockerfile's USER, WORKDIR, ENTRYPOINT and ENV", () => {
    const { config } = image.config;
    expect({ user: config.User, workdir: config.WorkingDir, entrypoint: config.Entrypoint, cmd: config.Cmd }).toEqual({
      user: '65532:65532', workdir: '/opt/underpass', entrypoint: ENTRYPOINT, cmd: undefined,
    });
    expect(config.Env).toEqual(['PATH=/usr/local/bin:/usr/bin:/bin']);
    expect(dockerfileFinalStage()).toEqual({ user: config.User, workdir: config.WorkingDir, entrypoint: config.Entrypoint, env: config.Env![0] });
  });

  it.each([
    ['opt/underpass/package.json', 'file'],
    ['opt/underpass/bin/underpass', 'file'],
    ['opt/underpass/dist/cli/main.js', 'file'],
    ['opt/underpass/dist/worker/worker.js', 'file'],
    ['opt/underpass/node_modules/ws/package.json', 'file'],
    ['opt/underpass/node_modules/bufferutil/prebuilds/linux-x64/bufferutil.node', 'file'],
    ['usr/local/bin/node', 'file'],
    ['lib64/ld-linux-x86-64.so.2', 'symlink'],
    ['lib/x86_64-linux-gnu/libc.so.6', 'file'],
    ['usr/lib/x86_64-linux-gnu/libstdc++.so.6', 'symlink'],
    ['usr/share/doc/libc6/copyright', 'file'],
  ])('has /%s (%s)', (p, type) => {
    expect(image.files.get(p)?.type).toBe(type);
  });

  it('ships the package.json of this checkout', () => {
    expect(JSON.parse(file('opt/underpass/package.json'))).toEqual(PKG);
  });

  it.each([
    ['shell', /^(usr\/)?(s?bin)\/(sh|bash|dash|ash|zsh|busybox)$/],
    ['package manager', /(^|\/)(apt|apt-get|dpkg|dpkg-deb|npm|npx|corepack|yarn)$|(^|\/)node_modules\/(npm|corepack)\//],
    ['test helper of tunnel/testing/', /^opt\/underpass\/dist\/tunnel\/testing\//],
    ['cli/testing.ts (a test helper)', /^opt\/underpass\/dist\/cli\/testing\.js$/],
    ['benchmark', /^opt\/underpass\/dist\/bench\//],
    ['compiled test', /^opt\/underpass\/dist\/.*\.test\.js$/],
    ['development dependency', /^opt\/underpass\/node_modules\/(jest|typescript|@swc|@jest|@chainsafe|@libp2p)\//],
  ])('contains no %s', (_what, pattern) => {
    // Files and links only: /var/lib/dpkg/status.d holds the libraries' package records for scanners.
    const found = [...image.files.values()].filter((e) => e.type !== 'dir' && pattern.test(e.path)).map((e) => e.path);
    expect(found).toEqual([]);
  });

  it('is owned by root, writable by no one else, and has no setuid or setgid file', () => {
    const bad = [...image.files.values()]
      .filter((e) => e.uid !== 0 || e.gid !== 0 || (e.type !== 'symlink' && (e.mode & 0o6022) !== 0))
      .map((e) => `${e.path} ${e.uid}:${e.gid} ${e.mode.toString(8)}`);
    expect(bad).toEqual([]);
  });

  it('defines user and group 65532 (nonroot) without a home or login shell', () => {
    expect(file('etc/passwd')).toContain('nonroot:x:65532:65532:nonroot:/nonexistent:/sbin/nologin\n');
    expect(file('etc/group')).toContain('nonroot:x:65532:\n');
  });

  it('has two complete gzip layers, runtime then application (GNU tar and scanners reject a tar without its end blocks)', () => {
    expect(image.layers.map((l) => [l.descriptor.mediaType, l.complete])).toEqual([
      ['application/vnd.oci.image.layer.v1.tar+gzip', true],
      ['application/vnd.oci.image.layer.v1.tar+gzip', true],
    ]);
    expect(image.layers[0]!.entries.some((e) => e.path === 'usr/local/bin/node')).toBe(true);
    expect(image.layers[1]!.entries.every((e) => e.path === 'opt' || e.path.startsWith('opt/underpass'))).toBe(true);
  });
});

const unavailable = containerdUnavailable(path.join(ROOT, 'image/deps.sh'));
if (unavailable) console.log(`image under containerd skipped: ${unavailable}`);
const underContainerd = unavailable ? describe.skip : describe;

underContainerd(`the image under containerd + runc${unavailable ? ` (skipped: ${unavailable})` : ''}`, () => {
  let dir: string;
  let containerd: PrivateContainerd;
  let imported: SpawnSyncReturns<string>;

  beforeAll(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'underpass-image-ctd-'));
    containerd = await startContainerd(dir);
    imported = spawnSync('bash', [path.join(ROOT, 'image/import.sh'), '--address', containerd.address, '--snapshotter', containerd.snapshotter, archive], { encoding: 'utf8' });
    if (imported.status !== 0) throw new Error(`image/import.sh failed: ${imported.stderr}\n${containerd.logTail()}`);
  }, 5 * 60_000);

  afterAll(async () => {
    await containerd?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  }, 60_000);

  it(`imports (image/import.sh) as ${REF}`, async () => {
    expect(imported.stdout).toBe(`${REF}\n`);
    const { stdout } = await containerd.ctr(['images', 'ls', '-q']);
    expect(stdout.split('\n')).toContain(REF);
  });

  it('runs its entry point: underpass without a command prints its usage and exits 2', async () => {
    const r = await containerd.run(REF, { readOnly: true });
    expect({ code: r.code, usage: r.stderr.includes('Usage: underpass [options] [command]') }).toEqual({ code: 2, usage: true });
  }, 60_000);

  // ctr 1.6's arguments replace the entry point, so they repeat it (as a pod's `command` would).
  it('answers underpass --version with the package version on a read-only root', async () => {
    const r = await containerd.run(REF, { readOnly: true, args: [...ENTRYPOINT, '--version'] });
    expect({ code: r.code, stdout: r.stdout, stderr: r.stderr }).toEqual({ code: 0, stdout: `${PKG.version}\n`, stderr: '' });
  }, 60_000);

  it('answers underpass worker --help on a read-only root', async () => {
    const r = await containerd.run(REF, { readOnly: true, args: [...ENTRYPOINT, 'worker', '--help'] });
    expect({ code: r.code, usage: r.stdout.startsWith('Usage: underpass worker [options]') }).toEqual({ code: 0, usage: true });
  }, 60_000);

  const probe = `
    const fs = require('node:fs');
    const out = { uid: process.getuid(), gid: process.getgid(), node: process.version, writes: {} };
    for (const p of ['/probe', '/opt/underpass/probe', '/opt/underpass/dist/probe']) {
      try { fs.writeFileSync(p, 'x'); out.writes[p] = 'written'; } catch (e) { out.writes[p] = e.code; }
    }
    out.shells = ['/bin/sh', '/usr/bin/sh', '/bin/bash'].filter((p) => fs.existsSync(p));
    try { require('node:child_process').execSync('true'); out.execSync = 'ran'; } catch (e) { out.execSync = e.code; }
    try { require('/opt/underpass/node_modules/node-gyp-build')('/opt/underpass/node_modules/bufferutil'); out.bufferutil = 'native'; }
    catch (e) { out.bufferutil = e.message; }
    console.log(JSON.stringify(out));`;

  it.each([
    ['a read-only root', true, 'EROFS'],
    ['a writable root', false, 'EACCES'],
  ])('runs as 65532:65532 on the pinned Node with no shell and the native bufferutil, and cannot write its files (%s)', async (_what, readOnly, code) => {
    const r = await containerd.run(REF, { readOnly, args: ['node', '-e', probe] });
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({
      uid: 65532, gid: 65532, node: `v${NODE_VERSION}`,
      writes: { '/probe': code, '/opt/underpass/probe': code, '/opt/underpass/dist/probe': code },
      shells: [], execSync: 'ENOENT', bufferutil: 'native',
    });
  }, 60_000);
});
