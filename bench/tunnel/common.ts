/**
 * What every contender and measurement of `tunnel-bench` shares: the Forward
 * interface (a local port that reaches a target), child processes that are
 * always cleaned up, and /proc sampling (RSS, CPU ticks) of process trees.
 */
import { execFileSync, spawn, spawnSync, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { once } from 'node:events';
import { closeSync, existsSync, openSync, readdirSync, readFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository root (this file runs from dist/bench/tunnel/). */
export const ROOT = path.resolve(fileURLToPath(new URL('.', import.meta.url)), '../../..');
export const BIN = path.join(ROOT, 'bin/underpass');

/** A local port that forwards to one target host:port, and the processes doing it. */
export interface Forward {
  port: number;
  /** Role → root PID (its descendants count too): e.g. {worker, connector} or {ssh, sshd}. */
  roles: Record<string, number>;
  /** Admin (metrics) ports by role, where the contender has them. */
  adminPorts?: Record<string, number>;
  stop(): Promise<void>;
}

export type ContenderId = 'direct' | 'ssh' | 'chisel' | 'chisel-tls' | 'node-mux' | 'underpass';
export const CONTENDER_IDS: ContenderId[] = ['direct', 'ssh', 'chisel', 'chisel-tls', 'node-mux', 'underpass'];

export interface Contender {
  id: ContenderId;
  label: string;
  /** Facts for the report (version, cipher, caveats). */
  info: Record<string, string>;
  forward(targetPort: number): Promise<Forward>;
  close(): Promise<void>;
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export function log(msg: string): void {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
}

export async function freePort(): Promise<number> {
  const s = net.createServer().listen(0, '127.0.0.1');
  await once(s, 'listening');
  const { port } = s.address() as net.AddressInfo;
  await new Promise((r) => s.close(r));
  return port;
}

/** True when some socket LISTENs on 127.0.0.1/0.0.0.0:port (read from /proc, without connecting). */
export function listening(port: number): boolean {
  const hex = port.toString(16).toUpperCase().padStart(4, '0');
  for (const f of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text = '';
    try {
      text = readFileSync(f, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols[1]?.endsWith(`:${hex}`) && cols[3] === '0A') return true;
    }
  }
  return false;
}

export async function waitUntil(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 20_000, child?: Child): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (child && !child.alive) throw new Error(`${what}: ${child.name} exited (${child.proc.exitCode ?? child.proc.signalCode}); log ${child.logFile}:\n${child.tail()}`);
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${child ? `; log ${child.logFile}:\n${child.tail()}` : ''}`);
    await sleep(50);
  }
}

/**
 * Waits until `child` has written a JSON line to its log `file` that `pick` finds a value in
 * (children report their listening ports this way) and returns that value.
 */
export async function valueFromLog<T>(file: string, what: string, child: Child, pick: (line: Record<string, unknown>) => T | undefined, timeoutMs = 10_000): Promise<T> {
  let value: T | undefined;
  await waitUntil(what, async () => {
    const { readFile } = await import('node:fs/promises');
    for (const line of (await readFile(file, 'utf8').catch(() => '')).split('\n')) {
      if (value === undefined && line.startsWith('{')) value = pick(JSON.parse(line) as Record<string, unknown>);
    }
    return value !== undefined;
  }, timeoutMs, child);
  return value!;
}

/** The contenders in run order for `round`: reversed every other round, so none always runs first. */
export function inRoundOrder<T>(items: readonly T[], round: number): readonly T[] {
  return round % 2 === 0 ? items : [...items].reverse();
}

const children = new Set<ChildProcess>();
process.on('exit', () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
});

/** A child process whose stdout and stderr go to a log file (no pipe for us to drain). */
export class Child {
  readonly proc: ChildProcess;
  readonly exited: Promise<void>;

  constructor(readonly name: string, cmd: string, args: string[], readonly logFile: string, opts: SpawnOptions = {}) {
    const fd = openSync(logFile, 'a');
    this.proc = spawn(cmd, args, { stdio: ['ignore', fd, fd], ...opts });
    closeSync(fd);
    children.add(this.proc);
    this.exited = new Promise((resolve) => this.proc.once('exit', () => {
      children.delete(this.proc);
      resolve();
    }));
  }

  get pid(): number {
    return this.proc.pid ?? -1;
  }

  get alive(): boolean {
    return this.proc.exitCode === null && this.proc.signalCode === null;
  }

  tail(lines = 15): string {
    try {
      return readFileSync(this.logFile, 'utf8').split('\n').slice(-lines).join('\n');
    } catch {
      return '';
    }
  }

  async stop(graceMs = 3_000): Promise<void> {
    if (!this.alive) return;
    this.proc.kill('SIGTERM');
    const timer = setTimeout(() => this.proc.kill('SIGKILL'), graceMs);
    await this.exited;
    clearTimeout(timer);
  }
}

export function commandExists(cmd: string): string | undefined {
  if (cmd.includes('/')) return existsSync(cmd) ? cmd : undefined;
  for (const dir of (process.env.PATH ?? '').split(':').concat(['/usr/sbin', '/sbin'])) {
    const p = path.join(dir, cmd);
    if (dir && existsSync(p)) return p;
  }
  return undefined;
}

/** Runs a command to completion; returns stdout and stderr together ('' if it cannot start). */
export function run(cmd: string, args: string[], timeoutMs = 30_000): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: timeoutMs });
  return `${r.stdout ?? ''}${r.stderr ?? ''}`;
}

// ---- /proc sampling ---------------------------------------------------------

let clockTicks = 100;
try {
  clockTicks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
} catch {
  /* keep 100 */
}

function statFields(pid: number): string[] | undefined {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name (which may contain spaces) start at ") ".
    return s.slice(s.lastIndexOf(')') + 2).split(' ');
  } catch {
    return undefined;
  }
}

/** pid and all its descendants that are alive now. */
export function processTree(root: number): number[] {
  const parentOf = new Map<number, number>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const f = statFields(Number(name));
    if (f) parentOf.set(Number(name), Number(f[1]));
  }
  const tree = parentOf.has(root) ? [root] : [];
  for (let i = 0; i < tree.length; i++) {
    for (const [pid, ppid] of parentOf) if (ppid === tree[i]) tree.push(pid);
  }
  return tree;
}

/** Resident set size in bytes (VmRSS) of one process; 0 when it is gone. */
export function rssOf(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

/** RSS in bytes per role, each role counting its whole process tree. */
export function rssByRole(roles: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [role, pid] of Object.entries(roles)) out[role] = processTree(pid).reduce((sum, p) => sum + rssOf(p), 0);
  return out;
}

export function sum(values: Iterable<number>): number {
  let s = 0;
  for (const v of values) s += v;
  return s;
}

/**
 * CPU seconds (user + system) per role, each role counting its whole process tree: every live
 * process's own time and the time of its children that have exited and been waited for (cutime,
 * cstime), so a child that ends during a measurement (a PostgreSQL backend when its client
 * disconnects) still counts once, in its parent.
 */
export function cpuByRole(roles: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [role, pid] of Object.entries(roles)) {
    let ticks = 0;
    for (const p of processTree(pid)) {
      const f = statFields(p);
      if (f) ticks += Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]);
    }
    out[role] = ticks / clockTicks;
  }
  return out;
}

/** Busy and total jiffies of the whole machine (all CPUs), from /proc/stat. */
function machineTicks(): { busy: number; total: number } {
  const cols = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1, 9).map(Number);
  const total = cols.reduce((a, b) => a + b, 0);
  return { busy: total - cols[3]! - cols[4]!, total };
}

/**
 * Measures CPU use of the roles (and of this process) while `work` runs: % of
 * one core each; `machine` is every process on the machine together (up to
 * 100% × cores): whether the run was CPU-bound, and how much else was running.
 */
export interface CpuUse<T> {
  result: T;
  /** % of one core per role, plus `bench` (this process) and `machine` (everything). */
  cpu: Record<string, number>;
  seconds: number;
  /** CPU seconds of all roles together. */
  cpuSeconds: number;
  /** read- and write-type system calls of all roles together (/proc/PID/io syscr + syscw). */
  syscalls: number;
}

/** syscr + syscw of every process of every role. */
function syscalls(roles: Record<string, number>): number {
  let n = 0;
  for (const pid of Object.values(roles)) {
    for (const p of processTree(pid)) {
      try {
        const io = readFileSync(`/proc/${p}/io`, 'utf8');
        n += Number(/syscr: (\d+)/.exec(io)?.[1] ?? 0) + Number(/syscw: (\d+)/.exec(io)?.[1] ?? 0);
      } catch {
        /* gone, or not ours to read */
      }
    }
  }
  return n;
}

export async function withCpu<T>(roles: Record<string, number>, work: () => Promise<T>): Promise<CpuUse<T>> {
  const before = cpuByRole(roles);
  const sys0 = syscalls(roles);
  const m0 = machineTicks();
  const self0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  const result = await work();
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const after = cpuByRole(roles);
  const sys1 = syscalls(roles);
  const self = process.cpuUsage(self0);
  const m1 = machineTicks();
  const cpu: Record<string, number> = {};
  for (const role of Object.keys(roles)) cpu[role] = (100 * ((after[role] ?? 0) - (before[role] ?? 0))) / seconds;
  cpu.bench = (100 * (self.user + self.system)) / 1e6 / seconds;
  cpu.machine = (100 * os.availableParallelism() * (m1.busy - m0.busy)) / Math.max(1, m1.total - m0.total);
  const cpuSeconds = sum(Object.keys(roles).map((r) => (after[r] ?? 0) - (before[r] ?? 0)));
  return { result, cpu, seconds, cpuSeconds, syscalls: sys1 - sys0 };
}

/** Rejects when `work` has not settled within `ms` (the caller then stops the forward, which ends the work). */
export function withDeadline<T>(work: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no result within ${Math.round(ms / 1000)} s`)), ms);
  });
  return Promise.race([work, timeout]).finally(() => clearTimeout(timer));
}

/** Runs `task(i)` for i in [0, n) with at most `limit` in flight. */
export async function pool(n: number, limit: number, task: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  const workers = Array.from({ length: Math.min(limit, n) }, async () => {
    while (next < n) await task(next++);
  });
  await Promise.all(workers);
}

export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}
