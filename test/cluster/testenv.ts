/**
 * A real Kubernetes control plane (etcd + kube-apiserver + kube-controller-manager) for
 * cluster tests, started by test/env/start.sh in a fresh temp dir and stopped by
 * test/env/stop.sh. See test/env/README.md for what it is and is not (no kubelet: pods
 * never run).
 *
 *   let env: TestEnv;
 *   beforeAll(async () => { env = await startTestEnv(); }, TESTENV_START_TIMEOUT_MS);
 *   afterAll(() => env?.stop());
 *   ...
 *   const r = await env.kubectl(['get', 'ns', '-o', 'name']);
 *
 * Binaries come from the cache test/env/build.sh fills (~/.cache/underpass-testenv/<ver>/bin).
 * If they are missing, startTestEnv builds them first (about 10 minutes on a cold machine,
 * progress on stderr) unless `build: false` or UNDERPASS_TESTENV_BUILD=0.
 *
 * UNDERPASS_TESTENV_KEEP=1 keeps the directory (logs, etcd data, kubeconfig) after stop()
 * and prints where it is.
 */
import { execFile, spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const REPO_ROOT = path.resolve(HERE, '../..');
const ENV_SCRIPTS = path.join(REPO_ROOT, 'test', 'env');

/** Generous enough for a cold build of the binaries (build.sh takes ~9 min on 2 cores). */
export const TESTENV_START_TIMEOUT_MS = 25 * 60_000;

export interface CommandResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface KubectlOptions {
  /** Written to kubectl's stdin (e.g. a manifest for `apply -f -`). */
  input?: string;
  /** Milliseconds before kubectl is killed (default 60 s). */
  timeoutMs?: number;
}

export interface TestEnv {
  /** State directory: kubeconfig, env, pki/, etcd/, *.log. */
  dir: string;
  /** Admin kubeconfig (group system:masters). */
  kubeconfig: string;
  /** Directory holding kubectl, helm, kube-apiserver, ... */
  bin: string;
  /** https://127.0.0.1:PORT */
  apiserverUrl: string;
  /** The variables of DIR/env (KUBECONFIG, APISERVER_URL, ports, UNDERPASS_TESTENV_BIN, ...). */
  vars: Record<string, string>;
  /** Runs kubectl with --kubeconfig (unless args carry their own) and a private cache dir. Never throws on a non-zero exit. */
  kubectl(args: string[], opts?: KubectlOptions): Promise<CommandResult>;
  /** Like kubectl() but throws (with stderr) unless the exit code is 0; returns stdout. */
  kubectlOk(args: string[], opts?: KubectlOptions): Promise<string>;
  /**
   * Waits until the named CRDs are Established and kubectl's discovery sees them (kubectl
   * caches discovery, so a command right after `apply -f crds/` may not know the new kinds).
   */
  waitForCrds(names: string[], timeoutMs?: number): Promise<void>;
  /** Stops the control plane and removes the directory (unless UNDERPASS_TESTENV_KEEP=1). Idempotent. */
  stop(): Promise<void>;
}

export interface StartOptions {
  /** Build missing binaries first (default: true unless UNDERPASS_TESTENV_BUILD=0). */
  build?: boolean;
  /** Seconds start.sh waits for readiness (default 90). */
  readyTimeoutSec?: number;
}

/** Runs a command; resolves with its exit code and output (never rejects on a non-zero exit). */
export function run(cmd: string, args: string[], opts: { input?: string; timeoutMs?: number; env?: NodeJS.ProcessEnv } = {}): Promise<CommandResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'], env: opts.env ?? process.env });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => { stdout += d; });
    child.stderr.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
    const timer = setTimeout(() => {
      stderr += `\n[testenv] ${path.basename(cmd)} killed after ${opts.timeoutMs} ms`;
      child.kill('SIGKILL');
    }, opts.timeoutMs ?? 60_000);
    child.on('error', (err) => { clearTimeout(timer); reject(err); });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? (signal ? 128 : 1), stdout, stderr });
    });
    child.stdin.on('error', () => undefined); // the command may exit before reading stdin
    child.stdin.end(opts.input ?? '');
  });
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

function tail(text: string, lines = 40): string {
  return text.trimEnd().split('\n').slice(-lines).join('\n');
}

/** Starts a fresh control plane in a new temp dir; resolves once /readyz answers. */
export async function startTestEnv(opts: StartOptions = {}): Promise<TestEnv> {
  const build = opts.build ?? process.env['UNDERPASS_TESTENV_BUILD'] !== '0';
  const check = await run('bash', [path.join(ENV_SCRIPTS, 'build.sh'), '--check'], { timeoutMs: 30_000 });
  if (check.code !== 0) {
    if (!build) {
      throw new Error('the test control plane binaries are not built; run test/env/build.sh (about 10 minutes once per machine)');
    }
    process.stderr.write('[testenv] binaries missing: running test/env/build.sh (about 10 minutes once per machine)\n');
    await new Promise<void>((resolve, reject) => {
      execFile('bash', [path.join(ENV_SCRIPTS, 'build.sh')], { maxBuffer: 64 << 20, timeout: TESTENV_START_TIMEOUT_MS }, (err, _stdout, stderr) => {
        if (err) reject(new Error(`test/env/build.sh failed:\n${tail(stderr)}`));
        else resolve();
      });
    });
  }

  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'underpass-k8s-'));
  const startArgs = [path.join(ENV_SCRIPTS, 'start.sh'), '--no-build', dir];
  if (opts.readyTimeoutSec) startArgs.splice(1, 0, '--timeout', String(opts.readyTimeoutSec));
  const started = await run('bash', startArgs, { timeoutMs: ((opts.readyTimeoutSec ?? 90) + 60) * 1000 });
  if (started.code !== 0) {
    spawnSync('bash', [path.join(ENV_SCRIPTS, 'stop.sh'), dir], { stdio: 'ignore' });
    throw new Error(`test/env/start.sh ${dir} failed (exit ${started.code}); logs are kept in ${dir}:\n${tail(started.stderr)}`);
  }

  const vars = readEnvFile(path.join(dir, 'env'));
  const kubeconfig = vars['KUBECONFIG'] ?? path.join(dir, 'kubeconfig');
  const bin = vars['UNDERPASS_TESTENV_BIN'];
  if (!bin) throw new Error(`${dir}/env does not name UNDERPASS_TESTENV_BIN`);
  const cacheDir = path.join(dir, 'kubectl-cache');

  // If the test process ends without stop() (a crash, a forgotten afterAll), do not leave
  // etcd and the apiserver running: stop them synchronously on exit.
  let stopped = false;
  const onExit = (): void => {
    if (!stopped) spawnSync('bash', [path.join(ENV_SCRIPTS, 'stop.sh'), '--grace', '1', dir], { stdio: 'ignore' });
  };
  process.once('exit', onExit);

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

  const waitForCrds = async (names: string[], timeoutMs = 30_000): Promise<void> => {
    // `kubectl wait` fails (instead of waiting) on a CRD whose status has no conditions yet; poll instead.
    const established = Date.now() + timeoutMs;
    for (const name of names) {
      for (;;) {
        const r = await kubectl(['get', `customresourcedefinition/${name}`, '-o', 'jsonpath={.status.conditions[?(@.type=="Established")].status}']);
        if (r.code === 0 && r.stdout.trim() === 'True') break;
        if (Date.now() > established) throw new Error(`CRD ${name} not Established after ${timeoutMs} ms: ${r.stderr}${r.stdout}`);
        await new Promise((res) => setTimeout(res, 200));
      }
    }
    // Drop kubectl's discovery cache, then wait until discovery lists every new resource.
    fs.rmSync(cacheDir, { recursive: true, force: true });
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const r = await kubectl(['api-resources', '-o', 'name']);
      const known = new Set(r.stdout.split('\n').map((s) => s.trim()));
      const missing = names.filter((n) => !known.has(n));
      if (r.code === 0 && missing.length === 0) return;
      if (Date.now() > deadline) throw new Error(`discovery does not list ${missing.join(', ')}:\n${r.stderr}`);
      fs.rmSync(cacheDir, { recursive: true, force: true });
      await new Promise((res) => setTimeout(res, 250));
    }
  };

  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    process.removeListener('exit', onExit);
    const keep = process.env['UNDERPASS_TESTENV_KEEP'] === '1';
    const r = await run('bash', [path.join(ENV_SCRIPTS, 'stop.sh'), ...(keep ? [] : ['--purge']), dir], { timeoutMs: 60_000 });
    if (r.code !== 0) throw new Error(`test/env/stop.sh ${dir} failed:\n${tail(r.stderr)}`);
    if (keep) process.stderr.write(`[testenv] kept ${dir} (UNDERPASS_TESTENV_KEEP=1)\n`);
  };

  return { dir, kubeconfig, bin, apiserverUrl: vars['APISERVER_URL'] ?? '', vars, kubectl, kubectlOk, waitForCrds, stop };
}
