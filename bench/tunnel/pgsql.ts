/**
 * A SQL database's own benchmark client: `pgbench` (16 clients on persistent connections,
 * read-only `-S`, the simple query protocol) through a forward to a PostgreSQL server the
 * bench starts on a free loopback port: a fresh data directory (initdb, trust authentication
 * on loopback only, fsync off), scale 1 (100,000 accounts) loaded once directly before any
 * forward is measured. Both come from Debian (postgresql; bench/setup.sh installs it).
 *
 * PostgreSQL refuses to run as root: as root the server, initdb and the loader run as the
 * `postgres` user Debian's package creates, with the data directory owned by it. pgbench runs
 * as whoever runs the bench (it only needs TCP); the database user is the server's own
 * (`postgres`, or the bench's user when not root).
 *
 * The server forks one backend per connection; the server's root PID's descendants are counted,
 * so "postgres" in the details is the server and its 16 backends.
 */
import { execFile, execFileSync } from 'node:child_process';
import { chownSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Child, freePort, listening, waitUntil, withCpu, type Forward } from './common.js';

export const PG_CLIENTS = 16;

export interface PgServer {
  port: number;
  pid: number;
  version: string;
  /** The database user pgbench connects as. */
  user: string;
  bin: string;
  stop(): Promise<void>;
}

export interface PgResult {
  /** Transactions per second, pgbench's "without initial connection time". */
  perSecond: number;
  transactions: number;
  /** pgbench's average latency (ms). */
  latencyMs: number;
  cpu: Record<string, number>;
  /** CPU time per transaction by role (µs), `bench` and `machine` excluded. */
  cpuPerTxUs: Record<string, number>;
}

/** The newest PostgreSQL server installed by Debian's packages (/usr/lib/postgresql/N/bin), if any. */
function pgBinDir(): string | undefined {
  const root = '/usr/lib/postgresql';
  if (!existsSync(root)) return undefined;
  const versions = readdirSync(root).filter((v) => /^\d+$/.test(v) && ['postgres', 'initdb', 'pgbench'].every((b) => existsSync(path.join(root, v, 'bin', b))));
  versions.sort((a, b) => Number(b) - Number(a));
  return versions[0] ? path.join(root, versions[0], 'bin') : undefined;
}

/** The uid and gid to run the server as: the `postgres` user when we are root, else our own. */
function serverIdentity(): { uid: number; gid: number; user: string } | string {
  if (process.getuid?.() !== 0) return { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0, user: os.userInfo().username };
  try {
    const uid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).trim());
    const gid = Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).trim());
    if (Number.isInteger(uid) && uid > 0) return { uid, gid, user: 'postgres' };
  } catch {
    /* reported below */
  }
  return 'running as root and there is no `postgres` user to run the server as (Debian\'s postgresql package creates it; bench/setup.sh installs it)';
}

/** Why the pgbench row cannot run here, or undefined when it can. */
export function pgMissing(): string | undefined {
  if (!pgBinDir()) return 'PostgreSQL (postgres, initdb, pgbench under /usr/lib/postgresql/N/bin) not installed (bench/setup.sh installs the Debian package postgresql)';
  const id = serverIdentity();
  return typeof id === 'string' ? id : undefined;
}

/** Runs a command to completion, as `id` when given. */
function runAs(cmd: string, args: string[], id: { uid: number; gid: number } | undefined, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { ...(id ? { uid: id.uid, gid: id.gid } : {}), timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: 4 << 20, env: { ...process.env, LC_ALL: 'C', PGTZ: 'UTC' } }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${path.basename(cmd)} ${args.join(' ')}: ${err.killed ? `no result within ${Math.round(timeoutMs / 1000)} s` : err.message}${stderr ? `; stderr: ${stderr.trim().split('\n').slice(-3).join(' / ')}` : ''}`));
      else resolve(`${stdout}${stderr}`);
    });
  });
}

/**
 * Creates a data directory, starts the server on a free loopback port (TCP only: no Unix socket)
 * and loads pgbench's tables at scale 1. The data directory is not under `dir` when we are root:
 * `dir` is private to root, and the server runs as `postgres`.
 */
export async function startPgServer(dir: string): Promise<PgServer> {
  const bin = pgBinDir();
  const id = serverIdentity();
  if (!bin || typeof id === 'string') throw new Error(pgMissing());
  const base = mkdtempSync(path.join(os.tmpdir(), 'underpass-bench-pg-'));
  const data = path.join(base, 'data');
  mkdirSync(data, { mode: 0o700 });
  chownSync(base, id.uid, id.gid);
  chownSync(data, id.uid, id.gid);
  try {
    await runAs(path.join(bin, 'initdb'), ['-D', data, '-U', id.user, '--auth=trust', '--no-sync', '-E', 'UTF8', '--locale=C'], id, 120_000);
    // Loopback only; trust is what initdb wrote for local connections, and nothing else may connect.
    writeFileSync(path.join(data, 'pg_hba.conf'), 'host all all 127.0.0.1/32 trust\n');
    chownSync(path.join(data, 'pg_hba.conf'), id.uid, id.gid);
  } catch (err) {
    rmSync(base, { recursive: true, force: true });
    throw err;
  }
  const port = await freePort();
  const child = new Child('postgres', path.join(bin, 'postgres'), [
    '-D', data, '-p', String(port), '-c', 'listen_addresses=127.0.0.1', '-c', 'unix_socket_directories=',
    '-c', 'fsync=off', '-c', 'synchronous_commit=off', '-c', 'full_page_writes=off', '-c', 'max_connections=100',
    '-c', 'logging_collector=off', '-c', 'log_min_messages=warning',
  ], path.join(dir, 'postgres.log'), { uid: id.uid, gid: id.gid });
  const stop = async (): Promise<void> => {
    // SIGINT: PostgreSQL's fast shutdown (SIGTERM waits for clients to disconnect).
    if (child.alive) child.proc.kill('SIGINT');
    await Promise.race([child.exited, new Promise((r) => setTimeout(r, 10_000))]);
    await child.stop();
    rmSync(base, { recursive: true, force: true });
  };
  try {
    await waitUntil('postgres to listen', () => listening(port), 30_000, child);
    await runAs(path.join(bin, 'pgbench'), ['-h', '127.0.0.1', '-p', String(port), '-U', id.user, '-i', '-s', '1', '-q', id.user], undefined, 120_000);
  } catch (err) {
    await stop();
    throw err;
  }
  const version = execFileSync(path.join(bin, 'postgres'), ['--version'], { encoding: 'utf8' }).trim().replace(/^postgres \(PostgreSQL\) /, '');
  return { port, pid: child.pid, version, user: id.user, bin, stop };
}

/** `seconds` of pgbench -S with 16 clients through `fwd`. */
export async function pgBench(fwd: Forward, server: PgServer, o: { seconds: number; timeoutMs: number; extraRoles?: Record<string, number> }): Promise<PgResult> {
  const { result, cpu, seconds } = await withCpu({ ...fwd.roles, ...o.extraRoles }, () => runPgBench(fwd.port, server, o.seconds, o.timeoutMs));
  const cpuPerTxUs: Record<string, number> = {};
  for (const [role, pct] of Object.entries(cpu)) {
    if (role !== 'machine' && role !== 'bench') cpuPerTxUs[role] = (pct / 100) * seconds * 1e6 / result.transactions;
  }
  return { ...result, cpu, cpuPerTxUs };
}

/** Parses pgbench's summary; exported for its unit test. */
export function parsePgBench(out: string): Omit<PgResult, 'cpu' | 'cpuPerTxUs'> | string {
  const tps = /tps = ([\d.]+) \((?:without initial connection time|excluding connections establishing)\)/.exec(out);
  const tx = /number of transactions actually processed: (\d+)/.exec(out);
  const lat = /latency average = ([\d.]+) ms/.exec(out);
  const failed = /number of failed transactions: (\d+)/.exec(out);
  if (!tps || !tx) return `no "tps = …" and "number of transactions actually processed" lines in its output: ${out.trim().slice(-300)}`;
  if (failed && Number(failed[1]) > 0) return `${failed[1]} transactions failed`;
  const perSecond = Number(tps[1]);
  if (!(perSecond > 0)) return `no transactions per second in "${tps[0]}"`;
  return { perSecond, transactions: Number(tx[1]), latencyMs: lat ? Number(lat[1]) : NaN };
}

function runPgBench(port: number, server: PgServer, seconds: number, timeoutMs: number): Promise<Omit<PgResult, 'cpu' | 'cpuPerTxUs'>> {
  // -n: no vacuum before the run (read-only; it would also need a direct connection); -j 2: two
  // threads for 16 clients, as this 2-core machine has.
  const args = ['-h', '127.0.0.1', '-p', String(port), '-U', server.user, '-S', '-n', '-c', String(PG_CLIENTS), '-j', '2', '-T', String(Math.max(1, Math.round(seconds))), server.user];
  return new Promise((resolve, reject) => {
    execFile(path.join(server.bin, 'pgbench'), args, { timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: 1 << 20, env: { ...process.env, LC_ALL: 'C' } }, (err, stdout, stderr) => {
      const fail = (why: string): void => reject(new Error(`pgbench ${args.join(' ')}: ${why}${stderr ? `; stderr: ${stderr.trim().split('\n').slice(-3).join(' / ')}` : ''}`));
      if (err) return fail(err.killed ? `no result within ${Math.round(timeoutMs / 1000)} s` : err.message);
      const r = parsePgBench(stdout);
      if (typeof r === 'string') return fail(r);
      resolve(r);
    });
  });
}
