/**
 * The local single-node Kubernetes cluster (test/env/cluster-start.sh, `make cluster`) for
 * tests that need pods to really run: images, Helm installs, Services, NodePorts.
 *
 *   const why = await clusterUnavailable();          // at module level: a reason to skip, or undefined
 *   const suite = why ? describe.skip : describe;
 *   let cluster: LocalCluster;
 *   beforeAll(async () => { cluster = await useCluster(); }, CLUSTER_START_TIMEOUT_MS);
 *   afterAll(() => cluster?.release());
 *   ...
 *   await cluster.importImage('/path/to/image.tar');   // then imagePullPolicy: IfNotPresent
 *   await cluster.kubectlOk(['apply', '-f', '-'], { input: manifest });
 *
 * One cluster per machine. useCluster() reuses the one that runs (also one started by
 * `make cluster` or from another worktree) and otherwise starts it in <repo>/.cluster. The
 * cluster stops when the last test process that uses it releases it, and only if a test
 * started it: a cluster from `make cluster` keeps running. UNDERPASS_CLUSTER_KEEP=1 keeps a
 * test-started cluster running too (stop it with `make cluster-stop`).
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { type CommandResult, type KubectlOptions, REPO_ROOT, run } from '../cluster/testenv.js';

const ENV_SCRIPTS = path.join(REPO_ROOT, 'test', 'env');
const DEFAULT_DIR = path.join(REPO_ROOT, '.cluster');

/** A cold machine builds every binary first (~13 min on 2 cores); a warm start takes ~30 s. */
export const CLUSTER_START_TIMEOUT_MS = 30 * 60_000;

export interface LocalCluster {
  /** State directory (kubeconfig, env, logs, containerd, kubelet). */
  dir: string;
  /** Admin kubeconfig (group system:masters). */
  kubeconfig: string;
  /** Directory holding kubectl, helm, ... */
  bin: string;
  /** The node's address: on the pod bridge, reachable from the host; NodePorts answer here. */
  nodeIp: string;
  nodeName: string;
  /** containerd's socket (`ctr --address`); images live in its namespace k8s.io. */
  containerdAddress: string;
  /** Image of a small static server and client (test/env/images/testbox); never pulled. */
  testboxImage: string;
  /** The testbox program on the host (for DNS/HTTP probes from outside the cluster). */
  testboxBin: string;
  /** Every variable of DIR/env. */
  vars: Record<string, string>;
  kubectl(args: string[], opts?: KubectlOptions): Promise<CommandResult>;
  /** Like kubectl() but throws (with stderr) unless the exit code is 0; returns stdout. */
  kubectlOk(args: string[], opts?: KubectlOptions): Promise<string>;
  /** Imports an OCI or Docker image archive into the cluster's containerd; returns the image names. */
  importImage(archive: string): Promise<string[]>;
  /**
   * Resolves once the Service accepts a TCP connection from the host on its ClusterIP (and on
   * the node IP at its NodePort, if it has one) for its first port: a ready endpoint exists and
   * kube-proxy has programmed it. A pod being Ready is not enough: the EndpointSlice and
   * kube-proxy's rules follow it asynchronously.
   */
  waitForService(namespace: string, name: string, timeoutMs?: number): Promise<void>;
  /**
   * True when this process started the cluster and no other process uses it: only then may a
   * test stop and restart it.
   */
  ownedExclusively(): boolean;
  /** Stops using the cluster; the last user stops it if a test started it. Idempotent. */
  release(): Promise<void>;
}

function tail(text: string, lines = 40): string {
  return text.trimEnd().split('\n').slice(-lines).join('\n');
}

/** Parses DIR/env (bash `export K=V` lines, values %q-quoted) by letting bash read it. */
function readEnvFile(file: string): Record<string, string> {
  const r = spawnSync('env', ['-i', 'bash', '--noprofile', '--norc', '-c', 'source "$1" && env -0', '_', file], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`cannot read ${file}: ${r.stderr}`);
  const vars: Record<string, string> = {};
  for (const entry of r.stdout.split('\0')) {
    const i = entry.indexOf('=');
    if (i > 0) vars[entry.slice(0, i)] = entry.slice(i + 1);
  }
  for (const k of ['PWD', 'SHLVL', '_', 'OLDPWD']) delete vars[k];
  return vars;
}

/** The directory of the cluster running on this machine, if any (cluster-status.sh knows). */
function runningClusterDir(): string | undefined {
  const r = spawnSync('bash', ['-c', 'source "$1/cluster-lib.sh" && cluster_running_dir', '_', ENV_SCRIPTS], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() || undefined : undefined;
}

/**
 * Why the local cluster cannot run here (a sentence for the skip message), or undefined when it
 * can. Builds missing binaries first (minutes on a cold machine); a failed build is a reason.
 */
export async function clusterUnavailable(): Promise<string | undefined> {
  if (process.platform !== 'linux') return 'the local cluster needs Linux';
  if (process.getuid?.() !== 0) return 'the local cluster needs root (bridges, mounts, cgroups); run the tests as root';
  if (runningClusterDir()) return undefined;
  const check = await run('bash', [path.join(ENV_SCRIPTS, 'build.sh'), '--check', 'all'], { timeoutMs: 30_000 });
  if (check.code === 0) return undefined;
  if (spawnSync('go', ['version']).status !== 0) return 'the cluster binaries are not built and there is no Go toolchain to build them (test/env/build.sh)';
  process.stderr.write('[cluster] binaries missing: running test/env/build.sh all (minutes, once per machine)\n');
  const built = await run('bash', [path.join(ENV_SCRIPTS, 'build.sh'), 'all'], { timeoutMs: CLUSTER_START_TIMEOUT_MS });
  if (built.code !== 0) return `the cluster binaries cannot be built (test/env/build.sh exited ${built.code}):\n${tail(built.stderr, 15)}`;
  return undefined;
}

/** One TCP connection attempt; resolves with undefined on success, else the error message. */
function tryConnect(host: string, port: number, timeoutMs: number): Promise<string | undefined> {
  return new Promise((resolve) => {
    const sock = net.connect({ host, port });
    const done = (err?: string): void => {
      sock.destroy();
      resolve(err);
    };
    sock.setTimeout(timeoutMs, () => done(`no answer within ${timeoutMs} ms`));
    sock.once('connect', () => done());
    sock.once('error', (err) => done(err.message));
  });
}

/**
 * Users of a cluster: one file per useCluster() handle in DIR/users, named PID-RANDOM (a jest
 * run that is in band holds several in one process: its global setup's and each test file's);
 * the marker says a test started it.
 */
function usersDir(dir: string): string {
  return path.join(dir, 'users');
}

function liveUsers(dir: string): number[] {
  let names: string[] = [];
  try {
    names = fs.readdirSync(usersDir(dir));
  } catch {
    return [];
  }
  const live: number[] = [];
  for (const name of names) {
    const pid = Number(name.split('-')[0]);
    if (!Number.isInteger(pid) || pid <= 0) continue;
    try {
      process.kill(pid, 0);
      live.push(pid);
    } catch {
      fs.rmSync(path.join(usersDir(dir), name), { force: true });
    }
  }
  return live;
}

/** Starts the local cluster, or joins the one that runs. */
export async function useCluster(opts: { readyTimeoutSec?: number } = {}): Promise<LocalCluster> {
  let dir = runningClusterDir();
  if (!dir) {
    dir = DEFAULT_DIR;
    const args = [path.join(ENV_SCRIPTS, 'cluster-start.sh'), '--timeout', String(opts.readyTimeoutSec ?? 180), dir];
    const started = await run('bash', args, { timeoutMs: CLUSTER_START_TIMEOUT_MS });
    if (started.code !== 0) throw new Error(`test/env/cluster-start.sh failed (exit ${started.code}); logs are in ${dir}:\n${tail(started.stderr)}`);
    // "already running" (another test process won the race) is a start too: the marker says a
    // test started it, whichever.
    if (!/already running/.test(started.stderr)) fs.writeFileSync(path.join(dir, 'started-by-test'), `${process.pid}\n`);
    process.stderr.write(`${tail(started.stderr, 5)}\n`);
  }
  fs.mkdirSync(usersDir(dir), { recursive: true });
  const userFile = path.join(usersDir(dir), `${process.pid}-${randomBytes(4).toString('hex')}`);
  fs.writeFileSync(userFile, '');

  const vars = readEnvFile(path.join(dir, 'env'));
  const need = (k: string): string => {
    const v = vars[k];
    if (!v) throw new Error(`${dir}/env does not set ${k}`);
    return v;
  };
  const kubeconfig = need('KUBECONFIG');
  const nodeIp = need('UNDERPASS_CLUSTER_NODE_IP');
  const bin = need('UNDERPASS_TESTENV_BIN');
  const cacheDir = path.join(dir, `kubectl-cache-${path.basename(userFile)}`);
  const clusterDir = dir;

  const kubectl = (args: string[], kopts: KubectlOptions = {}): Promise<CommandResult> => {
    const own = args.some((a) => a === '--kubeconfig' || a.startsWith('--kubeconfig='));
    const full = [...(own ? [] : ['--kubeconfig', kubeconfig]), '--cache-dir', cacheDir, ...args];
    const runOpts: { input?: string; timeoutMs?: number } = { timeoutMs: kopts.timeoutMs ?? 60_000 };
    if (kopts.input !== undefined) runOpts.input = kopts.input;
    return run(path.join(bin, 'kubectl'), full, runOpts);
  };
  const kubectlOk = async (args: string[], kopts?: KubectlOptions): Promise<string> => {
    const r = await kubectl(args, kopts);
    if (r.code !== 0) throw new Error(`kubectl ${args.join(' ')} exited ${r.code}:\n${r.stderr}${r.stdout}`);
    return r.stdout;
  };
  const importImage = async (archive: string): Promise<string[]> => {
    const r = await run('bash', [path.join(ENV_SCRIPTS, 'cluster-import.sh'), '--dir', clusterDir, archive], { timeoutMs: 300_000 });
    if (r.code !== 0) throw new Error(`cluster-import.sh ${archive} failed:\n${tail(r.stderr)}`);
    return r.stdout.split('\n').filter(Boolean);
  };

  const ownedExclusively = (): boolean => {
    let starter = '';
    try {
      starter = fs.readFileSync(path.join(clusterDir, 'started-by-test'), 'utf8').trim();
    } catch {
      return false;
    }
    return starter === String(process.pid) && liveUsers(clusterDir).every((pid) => pid === process.pid);
  };

  const waitForService = async (namespace: string, name: string, timeoutMs = 60_000): Promise<void> => {
    const svc = JSON.parse(await kubectlOk(['get', 'service', name, '-n', namespace, '-o', 'json'])) as {
      spec: { clusterIP?: string; ports?: { port: number; nodePort?: number }[] };
    };
    const port = svc.spec.ports?.[0];
    if (!svc.spec.clusterIP || svc.spec.clusterIP === 'None' || !port) throw new Error(`service ${namespace}/${name} has no ClusterIP or port`);
    const targets: [string, number][] = [[svc.spec.clusterIP, port.port]];
    if (port.nodePort) targets.push([nodeIp, port.nodePort]);
    const deadline = Date.now() + timeoutMs;
    for (const [host, p] of targets) {
      for (;;) {
        const err = await tryConnect(host, p, 1_000);
        if (err === undefined) break;
        if (Date.now() > deadline) throw new Error(`service ${namespace}/${name}: ${host}:${p} does not answer after ${timeoutMs} ms: ${err}`);
        await new Promise((r) => setTimeout(r, 200));
      }
    }
  };

  // The last user of a test-started cluster stops it, also when the process ends without
  // release() (a crash, a forgotten afterAll).
  let released = false;
  const stopArgsIfLast = (): string[] | undefined => {
    fs.rmSync(userFile, { force: true });
    fs.rmSync(cacheDir, { recursive: true, force: true });
    const marker = path.join(clusterDir, 'started-by-test');
    if (process.env['UNDERPASS_CLUSTER_KEEP'] === '1' || !fs.existsSync(marker) || liveUsers(clusterDir).length > 0) return undefined;
    fs.rmSync(marker, { force: true });
    return [path.join(ENV_SCRIPTS, 'cluster-stop.sh'), clusterDir];
  };
  const onExit = (): void => {
    if (released) return;
    released = true;
    const args = stopArgsIfLast();
    if (args) spawnSync('bash', args, { stdio: 'ignore' });
  };
  process.once('exit', onExit);
  const release = async (): Promise<void> => {
    if (released) return;
    released = true;
    process.removeListener('exit', onExit);
    const args = stopArgsIfLast();
    if (!args) return;
    const r = await run('bash', args, { timeoutMs: 180_000 });
    if (r.code !== 0) throw new Error(`test/env/cluster-stop.sh failed:\n${tail(r.stderr)}`);
  };

  return {
    dir,
    kubeconfig,
    bin,
    nodeIp,
    nodeName: need('UNDERPASS_CLUSTER_NODE_NAME'),
    containerdAddress: need('CONTAINERD_ADDRESS'),
    testboxImage: need('UNDERPASS_CLUSTER_TESTBOX_IMAGE'),
    testboxBin: need('UNDERPASS_CLUSTER_TESTBOX_BIN'),
    vars,
    kubectl,
    kubectlOk,
    importImage,
    waitForService,
    ownedExclusively,
    release,
  };
}
