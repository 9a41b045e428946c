/**
 * TEST SUPPORT: a containerd of the test's own — root, state, sockets, runc state and FIFOs under
 * one temporary directory, nothing in /var/lib/containerd, /etc or another containerd's namespace
 * (containerd 1.6 still puts its shims' sockets in /run/containerd/s) — and `ctr` against it.
 * Stopped by its PID. Needs root (overlay mounts, runc).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

export interface CtrResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export interface PrivateContainerd {
  address: string;
  /** overlayfs, or native where the directory is itself on overlayfs. */
  snapshotter: string;
  /** `ctr -a ADDRESS -n NAMESPACE ...args`. */
  ctr(args: string[], timeoutMs?: number): Promise<CtrResult>;
  /** `ctr run --rm` with this containerd's runc root and FIFO dir; ARGS replace the image's entrypoint and command. */
  run(image: string, opts: { readOnly: boolean; args?: string[] }, timeoutMs?: number): Promise<CtrResult>;
  /** The last lines of containerd's log (for failure messages). */
  logTail(): string;
  stop(): Promise<void>;
}

export const NAMESPACE = 'k8s.io';

/** Why this machine cannot run the test's containerd, or undefined if it can. */
export function containerdUnavailable(deps: string): string | undefined {
  if (process.getuid?.() !== 0) return 'not root (containerd needs root for overlay mounts and runc)';
  const r = spawnSync('bash', [deps, 'containerd', 'ctr', 'runc'], { encoding: 'utf8' });
  if (r.status !== 0) return `containerd/runc missing and not installable: ${(r.stderr || r.error?.message || '').trim()}`;
  return undefined;
}

function collect(child: ChildProcess, timeoutMs: number, what: string): Promise<CtrResult> {
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      if (code === null) reject(new Error(`${what}: killed after ${timeoutMs} ms\n${stdout}${stderr}`));
      else resolve({ code, stdout, stderr });
    });
  });
}

export async function startContainerd(dir: string): Promise<PrivateContainerd> {
  for (const d of ['root', 'state', 'opt', 'runc', 'fifo']) mkdirSync(path.join(dir, d), { recursive: true });
  const address = path.join(dir, 'containerd.sock');
  // overlayfs cannot stack on overlayfs (a test machine that is itself a container): copy instead.
  const fsType = spawnSync('stat', ['-f', '-c', '%T', dir], { encoding: 'utf8' }).stdout.trim();
  const snapshotter = fsType === 'overlayfs' ? 'native' : 'overlayfs';
  writeFileSync(path.join(dir, 'config.toml'), `# written by test/image/containerd.ts
version = 2
root = "${dir}/root"
state = "${dir}/state"
# Only what ctr import/run need: no CRI (that is the cluster's containerd), no other snapshotters.
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "${address}"
[ttrpc]
  address = "${address}.ttrpc"
[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "${dir}/opt"
`);
  const logFile = path.join(dir, 'containerd.log');
  const log = openSync(logFile, 'a');
  const daemon = spawn('containerd', ['--config', path.join(dir, 'config.toml')], { stdio: ['ignore', log, log] });
  const exited = once(daemon, 'exit');
  const logTail = (): string => {
    try { return readFileSync(logFile, 'utf8').split('\n').slice(-30).join('\n'); } catch { return ''; }
  };
  const ctr = (args: string[], timeoutMs = 60_000): Promise<CtrResult> =>
    collect(spawn('ctr', ['-a', address, '-n', NAMESPACE, ...args], { stdio: ['ignore', 'pipe', 'pipe'] }), timeoutMs, `ctr ${args.join(' ')}`);

  const stop = async (): Promise<void> => {
    if (daemon.exitCode !== null || daemon.signalCode !== null) return;
    daemon.kill('SIGTERM');
    const killer = setTimeout(() => daemon.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(killer);
  };

  // Ready when its API answers (the socket file appears before the services are registered).
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (daemon.exitCode !== null) throw new Error(`containerd exited with ${daemon.exitCode}\n${logTail()}`);
    if ((await ctr(['version'], 5_000).catch(() => ({ code: 1 }))).code === 0) break;
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`containerd did not answer within 30 s\n${logTail()}`);
    }
    await sleep(100);
  }

  let seq = 0;
  const run = (image: string, opts: { readOnly: boolean; args?: string[] }, timeoutMs = 60_000): Promise<CtrResult> => {
    const id = `underpass-image-test-${process.pid}-${++seq}`;
    return ctr([
      'run', '--rm', '--snapshotter', snapshotter, '--runc-root', path.join(dir, 'runc'), '--fifo-dir', path.join(dir, 'fifo'),
      ...(opts.readOnly ? ['--read-only'] : []), image, id, ...(opts.args ?? []),
    ], timeoutMs);
  };

  return {
    address,
    snapshotter,
    ctr: (args, timeoutMs) => ctr(args, timeoutMs),
    run,
    logTail,
    stop,
  };
}
