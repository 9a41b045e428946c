/**
 * Smoke run of the tunnel benchmark (bench/tunnel-bench.ts) so it cannot rot:
 * `--quick` (a few MiB, direct TCP + Underpass, Node clients only; no sshd,
 * chisel, iperf3 or wrk needed; the redis-benchmark rows run when redis-server and
 * redis-benchmark are installed, the pgbench row when PostgreSQL is, and each is skipped, saying why, when not). Asserts that it exits 0 and prints a results
 * table whose Underpass cells are positive numbers — never how fast they are.
 * Requires `make build` (dist/).
 */
import { describe, expect, it } from '@jest/globals';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { pgMissing } from '../bench/tunnel/pgsql.js';
import { redisMissing } from '../bench/tunnel/redis.js';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const SCRIPT = path.join(ROOT, 'dist/bench/tunnel-bench.js');
const SWEEP = path.join(ROOT, 'dist/bench/connrate-sweep.js');
const FLOOR = path.join(ROOT, 'dist/bench/node-floor.js');
const MICRO = path.join(ROOT, 'dist/bench/stream-open-micro.js');
const CHURN = path.join(ROOT, 'dist/bench/node-read-churn.js');
/** Why the redis rows cannot run here (redis-server or redis-benchmark missing), or undefined. */
const NO_REDIS = redisMissing();
if (NO_REDIS) console.log(`tunnel benchmark smoke run: redis-benchmark rows skipped: ${NO_REDIS}`);
/** Why the pgbench row cannot run here (PostgreSQL missing, or root without a `postgres` user), or undefined. */
const NO_PG = pgMissing();
if (NO_PG) console.log(`tunnel benchmark smoke run: pgbench row skipped: ${NO_PG}`);

function runBench(args: string[], script = SCRIPT, env: NodeJS.ProcessEnv = process.env): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [script, ...args], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

/** The first Markdown table after `heading`: header cells and body rows. */
function tableAfter(text: string, heading: string): { header: string[]; rows: string[][] } {
  const after = text.slice(text.indexOf(heading)).split('\n');
  const first = after.findIndex((l) => l.startsWith('|'));
  const end = after.findIndex((l, i) => i > first && !l.startsWith('|'));
  const lines = first < 0 ? [] : after.slice(first, end < 0 ? undefined : end);
  const cells = (l: string): string[] => l.split('|').slice(1, -1).map((c) => c.trim());
  return { header: cells(lines[0] ?? ''), rows: lines.slice(2).map(cells) };
}

describe('tunnel benchmark smoke run', () => {
  it('--quick --no-docs exits 0 and reports positive Underpass numbers', async () => {
    expect(existsSync(SCRIPT)).toBe(true);
    const { code, stdout, stderr } = await runBench(['--quick', '--no-docs']);
    if (code !== 0) throw new Error(`tunnel-bench exited ${code}\n--- stdout\n${stdout}\n--- stderr\n${stderr.slice(-4000)}`);
    expect(stdout).toContain('## Results');
    const { header, rows } = tableAfter(stdout, '## Results');
    const col = header.indexOf('Underpass');
    expect(col).toBeGreaterThan(0);
    expect(rows.length).toBeGreaterThanOrEqual(8);
    const labels = rows.map((r) => r[0] ?? '');
    const wanted = ['1 stream', '8 streams', 'RTT p50', 'new connections', 'idle streams', 'idle connector sessions', 'HTTP'];
    if (!NO_REDIS) wanted.push('redis-benchmark SET', 'redis-benchmark GET');
    else expect(stdout).toContain(`skipped: redis rows: ${NO_REDIS}`);
    if (!NO_PG) wanted.push('pgbench -S');
    else expect(stdout).toContain(`skipped: pgbench row: ${NO_PG}`);
    for (const want of wanted) {
      expect(labels.some((l) => l.includes(want))).toBe(true);
    }
    for (const row of rows) {
      const value = Number((row[col] ?? '').split(' ')[0]!.replace(/,/g, ''));
      // Memory rows are RSS differences: at smoke sizes a GC can make one zero or negative.
      const ok = (row[0] ?? '').includes('[KiB]') ? Number.isFinite(value) : value > 0;
      if (!ok) throw new Error(`row "${row[0]}": Underpass cell "${row[col]}" is not a ${row[0]?.includes('[KiB]') ? '' : 'positive '}number\n${stdout}`);
    }
    expect(stdout).toContain('## Soak');
  }, 180_000);

  it('--rounds runs every contender once per round and reports the median round', async () => {
    const { code, stdout, stderr } = await runBench(['--quick', '--no-docs', '--only', 'rtt', '--rounds', '3']);
    if (code !== 0) throw new Error(`tunnel-bench exited ${code}\n--- stdout\n${stdout}\n--- stderr\n${stderr.slice(-4000)}`);
    // Each contender once per round, the order reversed in the second round.
    const order = [...stderr.matchAll(/rtt \(round (\d) of 3\): (.+)$/gm)].map((m) => `${m[1]} ${m[2]}`);
    expect(order).toEqual(['1 direct TCP', '1 Underpass', '2 Underpass', '2 direct TCP', '3 direct TCP', '3 Underpass']);
    const rounds = /Rounds of "RTT p50[^"]*" \[µs\], in the order run \(median reported\): (.*)$/m.exec(stdout);
    expect(rounds).not.toBeNull();
    const underpass = /underpass ([\d.]+) \/ ([\d.]+) \/ ([\d.]+)/.exec(rounds![1]!);
    expect(underpass).not.toBeNull();
    const median = underpass!.slice(1, 4).map(Number).sort((a, b) => a - b)[1]!;
    const { header, rows } = tableAfter(stdout, '## Results');
    const cell = rows.find((r) => (r[0] ?? '').startsWith('RTT p50'))![header.indexOf('Underpass')]!;
    expect(Number(cell.split(' ')[0]!.replace(/,/g, ''))).toBe(median);
  }, 120_000);

  it('the bare Node mux runs as the floor in the RTT and connection rows only, a fresh forward each round', async () => {
    const { code, stdout, stderr } = await runBench(['--quick', '--no-docs', '--only', 'bulk,rtt,connrate', '--contenders', 'node-mux,underpass', '--rounds', '2']);
    if (code !== 0) throw new Error(`tunnel-bench exited ${code}\n--- stdout\n${stdout}\n--- stderr\n${stderr.slice(-4000)}`);
    const { header, rows } = tableAfter(stdout, '## Results');
    const floor = header.indexOf('bare Node mux (floor)');
    expect(floor).toBeGreaterThan(0);
    const cell = (label: string): string => rows.find((r) => (r[0] ?? '').startsWith(label))![floor]!;
    // Both rounds' forwards carried connections (the second is a new pair of processes).
    expect(Number(cell('RTT p50').replace(/,/g, '').split(' ')[0])).toBeGreaterThan(0);
    expect(Number(cell('new connections').replace(/,/g, '').split(' ')[0])).toBeGreaterThan(0);
    expect(stdout).toMatch(/Rounds of "new connections[^"]*" \[conn\/s\], in the order run \(median reported\): node-mux [1-9][\d.]* \/ [1-9][\d.]*/);
    expect(cell('1 stream')).toBe('— (n/a)');
    expect(stdout).not.toContain('## Problems');
  }, 120_000);

  (NO_REDIS ? it.skip : it)(`--only redis runs redis-benchmark SET and GET through direct TCP and Underpass${NO_REDIS ? ` (skipped: ${NO_REDIS})` : ''}`, async () => {
    const { code, stdout, stderr } = await runBench(['--quick', '--no-docs', '--only', 'redis']);
    if (code !== 0) throw new Error(`tunnel-bench exited ${code}\n--- stdout\n${stdout}\n--- stderr\n${stderr.slice(-4000)}`);
    const { header, rows } = tableAfter(stdout, '## Results');
    expect(rows.map((r) => r[0])).toEqual([
      'redis-benchmark SET, 50 clients, not pipelined, 5,000 requests [req/s]',
      'redis-benchmark GET, 50 clients, not pipelined, 5,000 requests [req/s]',
    ]);
    for (const row of rows) {
      for (const label of ['direct TCP', 'Underpass']) expect(Number(row[header.indexOf(label)]!.replace(/,/g, ''))).toBeGreaterThan(0);
    }
    expect(stdout).toMatch(/^- redis: redis-server \S+ \(no persistence\)/m);
    // The forwarder's CPU per request, the number to improve (issue 20), is in the details.
    for (const test of ['SET', 'GET']) {
      expect(stdout).toMatch(new RegExp(`^- Underpass, redis-benchmark ${test} \\d+ req/s: p50 [\\d.]+ ms, p99 [\\d.]+ ms \\(redis-benchmark's\\); CPU time per request worker \\d+ µs, connector \\d+ µs, redis-server \\d+ µs \\(forwarder \\d+ µs in all\\)`, 'm'));
    }
    expect(stdout).not.toContain('## Problems');
  }, 120_000);

  it('--only redis without redis-benchmark installed stops before anything runs and says what to install', async () => {
    // A PATH with node only: neither redis-server nor redis-benchmark is found.
    const { code, stderr } = await runBench(['--quick', '--no-docs', '--only', 'redis'], SCRIPT, { ...process.env, PATH: path.dirname(process.execPath) });
    expect(code).toBe(2);
    expect(stderr).toContain('--only redis: redis-server and redis-benchmark not installed (bench/setup.sh installs the Debian packages redis-server and redis-tools)');
  }, 30_000);

  it('refuses a bad --rounds with a clear error', async () => {
    const { code, stderr } = await runBench(['--quick', '--rounds', '0']);
    expect(code).toBe(2);
    expect(stderr).toContain('--rounds: must be a whole number from 1 to 20');
  });

  it('connrate-sweep measures every concurrency asked for', async () => {
    const { code, stdout, stderr } = await runBench(['--concurrency', '1,2', '--seconds', '0.5'], SWEEP);
    if (code !== 0) throw new Error(`connrate-sweep exited ${code}\n--- stdout\n${stdout}\n--- stderr\n${stderr.slice(-4000)}`);
    const { header, rows } = tableAfter(stdout, '| contender');
    const underpass = rows.filter((r) => r[0] === 'Underpass');
    const floor = rows.filter((r) => r[0] === 'bare Node mux (floor)');
    expect(underpass.map((r) => r[header.indexOf('at a time')])).toEqual(['1', '2']);
    expect(floor.map((r) => r[header.indexOf('at a time')])).toEqual(['1', '2']);
    for (const r of [...underpass, ...floor]) {
      expect(Number(r[header.indexOf('conn/s')])).toBeGreaterThan(0);
      expect(r[header.indexOf('errors')]).toBe('0');
    }
    const bad = await runBench(['--concurrency', '0'], SWEEP);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('--concurrency: whole numbers from 1 to 256');
  }, 120_000);

  it('stream-open-micro measures the multiplexer per stream: Duplex, with the open handshake, plain channels', async () => {
    for (const [args, label] of [[[], 'multiplexer only'], [['--open'], 'multiplexer + open request/response'], [['--channel'], 'multiplexer channels']] as const) {
      const { code, stdout, stderr } = await runBench(['--streams', '300', ...args], MICRO);
      if (code !== 0) throw new Error(`stream-open-micro exited ${code}\n--- stdout\n${stdout}\n--- stderr\n${stderr.slice(-4000)}`);
      const m = new RegExp(`^${label.replace(/[+/]/g, '\\$&')}: 300 streams, (\\d+) streams/s, ([\\d.]+) µs CPU per stream`, 'm').exec(stdout);
      expect(m).not.toBeNull();
      expect(Number(m![1])).toBeGreaterThan(0);
      expect(Number(m![2])).toBeGreaterThan(0);
    }
    const bad = await runBench(['--streams', '2'], MICRO);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('--streams: a whole number from 8');
    const both = await runBench(['--open', '--channel'], MICRO);
    expect(both.code).toBe(2);
    expect(both.stderr).toContain('--open and --channel measure different paths');
  }, 60_000);

  it('node-read-churn measures the relay in every read mode, dialled and accepted', async () => {
    const { code, stdout, stderr } = await runBench(['--round-trips', '1000'], CHURN);
    if (code !== 0) throw new Error(`node-read-churn exited ${code}\n--- stdout\n${stdout}\n--- stderr\n${stderr.slice(-4000)}`);
    expect(stderr).toContain(`relay on ${process.version}`);
    for (const mode of ['default', 'onread', 'accepted', 'adopted']) {
      expect(stderr).toMatch(new RegExp(`${mode} *: \\d+ µs per round trip; relay arrayBuffers [\\d.]+–[\\d.]+ MB over [1-9]\\d* samples; at most [\\d.]+ MB more per 100 ms; \\d+ mark-compacts`));
    }
    const bad = await runBench(['--round-trips', 'many'], CHURN);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain('--round-trips must be an integer of at least 1000');
  }, 60_000);

  it('UNDERPASS_BENCH_NODE that is not a Node binary is refused by name before anything runs', async () => {
    const { code, stderr } = await runBench(['--quick', '--no-docs'], SCRIPT, { ...process.env, UNDERPASS_BENCH_NODE: '/nonexistent/node' });
    expect(code).toBe(1);
    expect(stderr).toContain('UNDERPASS_BENCH_NODE=/nonexistent/node is not a Node binary that runs here');
  }, 30_000);

  it('node-floor measures echo round trips and the bare Node forwarders beside Underpass', async () => {
    const { code, stdout, stderr } = await runBench(['--round-trips', '500', '--seconds', '0.5', '--rounds', '1'], FLOOR);
    if (code !== 0) throw new Error(`node-floor exited ${code}\n--- stdout\n${stdout}\n--- stderr\n${stderr.slice(-4000)}`);
    const { rows } = tableAfter(stdout, '| 78-byte echo');
    expect(rows.map((r) => r[0])).toEqual(['TCP', 'TLS, one buffer per write', 'TLS, three buffers corked per write']);
    for (const r of rows) for (const cell of r.slice(1)) expect(Number(cell)).toBeGreaterThan(0);
    const fwd = tableAfter(stdout, '| forwarder');
    const col = (r: string[], name: string): string => r[fwd.header.indexOf(name)]!;
    const ours = fwd.rows.filter((r) => r[0] !== 'ssh -L'); // ssh -L is there when sshd is installed
    expect(ours.map((r) => r[0])).toEqual(['bare Node TCP relay, one process', 'bare Node mux over TLS, two processes', 'Underpass']);
    for (const r of ours) {
      expect(Number(col(r, 'RTT p50 µs'))).toBeGreaterThan(0);
      expect(Number(col(r, 'conn/s (8 at a time)'))).toBeGreaterThan(0);
      expect(col(r, 'errors')).toBe('0');
    }
    expect(col(ours[1]!, 'CPU µs per connection')).toMatch(/^entry \d+, exit \d+$/);
    expect(col(ours[2]!, 'CPU µs per round trip')).toMatch(/^worker \d+, connector \d+$/);
    for (const [args, message] of [[['--round-trips', 'x'], '--round-trips: a whole number'], [['--rounds', '0'], '--rounds: a whole number from 1 to 20'], [['--seconds', '-1'], '--seconds: a number of seconds']] as const) {
      const bad = await runBench([...args], FLOOR);
      expect(bad.code).toBe(2);
      expect(bad.stderr).toContain(message);
    }
  }, 180_000);
});
