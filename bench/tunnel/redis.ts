/**
 * A real request/response client nobody here wrote: `redis-benchmark` (50 clients, not
 * pipelined, SET and GET) through a forward to a `redis-server` the bench starts on a free
 * loopback port, with no persistence. Both come from Debian (redis-server, redis-tools;
 * bench/setup.sh installs them). Each test runs on its own, so CPU time per request of every
 * process on the path (forwarder, redis-server) is measured per test.
 */
import { execFile } from 'node:child_process';
import path from 'node:path';
import { Child, commandExists, freePort, listening, waitUntil, withCpu, type Forward } from './common.js';

export const REDIS_TESTS = ['SET', 'GET'] as const;
export type RedisTest = (typeof REDIS_TESTS)[number];
export const REDIS_CLIENTS = 50;

export interface RedisServer {
  port: number;
  pid: number;
  version: string;
  stop(): Promise<void>;
}

export interface RedisResult {
  perSecond: number;
  /** redis-benchmark's own latency percentiles (ms). */
  p50Ms: number;
  p99Ms: number;
  cpu: Record<string, number>;
  /** CPU time per request by role (µs), `bench` (redis-benchmark runs in a child, not counted there) and `machine` excluded. */
  cpuPerRequestUs: Record<string, number>;
}

/** Why the redis rows cannot run here, or undefined when both binaries are installed. */
export function redisMissing(): string | undefined {
  const missing = [['redis-server', 'redis-server'], ['redis-benchmark', 'redis-tools']].filter(([cmd]) => !commandExists(cmd!));
  if (missing.length === 0) return undefined;
  return `${missing.map(([cmd]) => cmd).join(' and ')} not installed (bench/setup.sh installs the Debian package${missing.length > 1 ? 's' : ''} ${missing.map(([, pkg]) => pkg).join(' and ')})`;
}

/** Starts redis-server on a free loopback port: no snapshots, no append-only file, logging to `dir`. */
export async function startRedisServer(dir: string): Promise<RedisServer> {
  const port = await freePort();
  const server = commandExists('redis-server')!;
  const child = new Child('redis-server', server, [
    '--port', String(port), '--bind', '127.0.0.1', '--protected-mode', 'no',
    '--save', '', '--appendonly', 'no', '--dir', dir, '--daemonize', 'no',
    '--maxclients', '10000', '--loglevel', 'warning',
  ], path.join(dir, 'redis-server.log'));
  await waitUntil('redis-server to listen', () => listening(port), 10_000, child);
  const version = await new Promise<string>((resolve) => execFile(server, ['--version'], (_err, out) => resolve(/v=(\S+)/.exec(out ?? '')?.[1] ?? 'unknown')));
  return { port, pid: child.pid, version, stop: () => child.stop() };
}

/** One redis-benchmark test of `requests` requests through `fwd` (50 clients, keep-alive, not pipelined). */
export async function redisBench(fwd: Forward, o: { test: RedisTest; requests: number; timeoutMs: number; extraRoles?: Record<string, number> }): Promise<RedisResult> {
  const { result, cpu, seconds } = await withCpu({ ...fwd.roles, ...o.extraRoles }, () => runRedisBenchmark(fwd.port, o.test, o.requests, o.timeoutMs));
  const cpuPerRequestUs: Record<string, number> = {};
  for (const [role, pct] of Object.entries(cpu)) {
    if (role !== 'machine' && role !== 'bench') cpuPerRequestUs[role] = (pct / 100) * seconds * 1e6 / o.requests;
  }
  return { ...result, cpu, cpuPerRequestUs };
}

/**
 * redis-benchmark keeps reconnecting when it cannot connect instead of exiting, so it is killed
 * after `timeoutMs`.
 */
function runRedisBenchmark(port: number, test: RedisTest, requests: number, timeoutMs: number): Promise<Omit<RedisResult, 'cpu' | 'cpuPerRequestUs'>> {
  const args = ['-h', '127.0.0.1', '-p', String(port), '-c', String(REDIS_CLIENTS), '-n', String(requests), '-P', '1', '-t', test.toLowerCase(), '--csv'];
  return new Promise((resolve, reject) => {
    execFile('redis-benchmark', args, { timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: 1 << 20 }, (err, stdout, stderr) => {
      const fail = (why: string): void => reject(new Error(`redis-benchmark ${args.join(' ')}: ${why}${stderr ? `; stderr: ${stderr.trim().split('\n').slice(-3).join(' / ')}` : ''}`));
      if (err) return fail(err.killed ? `no result within ${Math.round(timeoutMs / 1000)} s` : err.message);
      // redis 7: "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
      const lines = stdout.trim().split('\n').map((l) => l.split(',').map((c) => c.replace(/^"|"$/g, '')));
      const header = lines.find((l) => l[0] === 'test');
      const row = lines.find((l) => l[0] === test);
      if (!row) return fail(`no "${test}" line in its output: ${stdout.trim().slice(0, 300)}`);
      const col = (name: string, fallback: number): number => Number(row[header ? header.indexOf(name) : fallback]);
      const perSecond = col('rps', 1);
      if (!(perSecond > 0)) return fail(`no requests per second in "${row.join(',')}"`);
      resolve({ perSecond, p50Ms: col('p50_latency_ms', 4), p99Ms: col('p99_latency_ms', 6) });
    });
  });
}
