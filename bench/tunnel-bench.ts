/**
 * `make bench`: Underpass against direct TCP, OpenSSH `ssh -L` and chisel, on
 * one machine over loopback, every contender in the same run. Prints a table
 * (absolute numbers, ratio to ssh -L, PASS/MISS against the targets) and
 * rewrites docs/benchmarks.md. `make bench-soak` runs the 10-minute soak.
 *
 *   node dist/bench/tunnel-bench.js [--quick] [--only bulk,rtt,…] [--contenders ssh,underpass]
 *                                   [--rounds N] [--no-docs] [--soak-seconds N] [--keep]
 *
 * Progress goes to stderr, the report to stdout.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startApps } from './tunnel/apps.js';
import { bareMuxContender } from './tunnel/bare-relay.js';
import { chiselContender } from './tunnel/chisel.js';
import { CONTENDER_IDS, inRoundOrder, ROOT, log, type Contender, type ContenderId } from './tunnel/common.js';
import { directContender } from './tunnel/direct.js';
import { loadAvg, machine, raiseOpenFileLimit } from './tunnel/env.js';
import { httpTool } from './tunnel/http.js';
import { pgMissing, startPgServer } from './tunnel/pgsql.js';
import { redisMissing, startRedisServer } from './tunnel/redis.js';
import { applies, FULL, MEASUREMENTS, measure, QUICK, Results, ROUNDED, rowKeys, type Ctx, type MeasurementKey } from './tunnel/plan.js';
import { cpuTable, renderTable, resultsTable, soakSection, verdict, writeDocs, writeSoakDocs } from './tunnel/report.js';
import { soak, type SoakResult } from './tunnel/soak.js';
import { sshContender } from './tunnel/ssh.js';
import { startIperfServer } from './tunnel/throughput.js';
import { makePki, underpassContender } from './tunnel/underpass.js';

const HELP = `usage: node dist/bench/tunnel-bench.js [options]
  --quick              tiny sizes, direct + Underpass only, Node-based clients (the test suite's smoke run)
  --only a,b           measurements: ${MEASUREMENTS.join(', ')} (default: all but soak)
  --contenders a,b     ${CONTENDER_IDS.join(', ')} (default: all that are installed)
  --rounds N           rounds of bulk, bulk8, rtt, connrate, redis and pgbench, median reported (default 3; 1 with --quick)
  --no-docs            do not write docs/benchmarks.md
  --soak-seconds N     soak duration (default 600; 3 with --quick)
  --keep               keep the temp dir with every process's log`;

interface Flags {
  quick: boolean;
  only: MeasurementKey[] | undefined;
  contenders: ContenderId[] | undefined;
  docs: boolean;
  soakSeconds: number | undefined;
  rounds: number | undefined;
  keep: boolean;
}

function parseFlags(argv: string[]): Flags {
  const f: Flags = { quick: false, only: undefined, contenders: undefined, docs: true, soakSeconds: undefined, rounds: undefined, keep: false };
  const list = <T extends string>(v: string | undefined, allowed: readonly T[], flag: string): T[] => {
    const items = (v ?? '').split(',').map((x) => x.trim()).filter(Boolean);
    const bad = items.filter((x) => !allowed.includes(x as T));
    if (bad.length || items.length === 0) fail(`${flag}: unknown ${bad.join(', ') || '(empty)'}; expected some of ${allowed.join(', ')}`);
    return items as T[];
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const [name, inline] = a.includes('=') ? [a.slice(0, a.indexOf('=')), a.slice(a.indexOf('=') + 1)] : [a, undefined];
    const value = (): string | undefined => inline ?? argv[++i];
    if (name === '--quick') f.quick = true;
    else if (name === '--no-docs') f.docs = false;
    else if (name === '--keep') f.keep = true;
    else if (name === '--only') f.only = list(value(), MEASUREMENTS, '--only');
    else if (name === '--contenders') f.contenders = list(value(), CONTENDER_IDS, '--contenders');
    else if (name === '--soak-seconds') f.soakSeconds = Number(value());
    else if (name === '--rounds') f.rounds = Number(value());
    else if (name === '--help' || name === '-h') {
      console.log(HELP);
      process.exit(0);
    } else fail(`unknown option ${a}\n${HELP}`);
  }
  if (f.soakSeconds !== undefined && !(f.soakSeconds > 0)) fail('--soak-seconds: must be a positive number');
  if (f.rounds !== undefined && !(Number.isInteger(f.rounds) && f.rounds >= 1 && f.rounds <= 20)) fail('--rounds: must be a whole number from 1 to 20');
  return f;
}

function fail(msg: string): never {
  process.stderr.write(`tunnel-bench: ${msg}\n`);
  process.exit(2);
}

async function main(): Promise<void> {
  const flags = parseFlags(process.argv.slice(2));
  const sizes = { ...(flags.quick ? QUICK : FULL), ...(flags.rounds ? { rounds: flags.rounds } : {}) };
  let measurements: MeasurementKey[] = flags.only ?? (flags.quick ? [...MEASUREMENTS] : MEASUREMENTS.filter((m) => m !== 'soak'));
  const noRedis = measurements.includes('redis') ? redisMissing() : undefined;
  if (noRedis && flags.only) fail(`--only redis: ${noRedis}`);
  if (noRedis) measurements = measurements.filter((x) => x !== 'redis');
  const noPg = measurements.includes('pgbench') ? pgMissing() : undefined;
  if (noPg && flags.only) fail(`--only pgbench: ${noPg}`);
  if (noPg) measurements = measurements.filter((x) => x !== 'pgbench');
  const wanted: ContenderId[] = flags.contenders ?? (flags.quick ? ['direct', 'underpass'] : CONTENDER_IDS);
  // Only the contenders some selected measurement applies to (a soak-only run starts no sshd).
  const needed = wanted.filter((id) => measurements.some((m) => applies(m, id) === true));
  const fullRun = !flags.quick && !flags.only;
  const soakOnly = measurements.length === 1 && measurements[0] === 'soak';
  const m = machine();
  const loadBefore = loadAvg();
  raiseOpenFileLimit(65_535, sizes.idleStreams + 2_000);
  log(`${m.date}: ${m.cpu} × ${m.cores}, ${m.kernel}, Node ${m.node}; load average ${loadBefore}`);

  const dir = mkdtempSync(path.join(os.tmpdir(), 'tunnel-bench-'));
  const cleanup: Array<() => Promise<void>> = [];
  const contenders: Contender[] = [];
  const skipped: string[] = [];
  let failed = false;
  try {
    const apps = await startApps(dir);
    cleanup.push(() => apps.stop());
    let iperf = flags.quick ? undefined : await startIperfServer(dir);
    if (iperf) cleanup.push(() => iperf!.stop());
    else if (!flags.quick) skipped.push('iperf3 not installed: bulk transfers use the Node client');
    if (noRedis) skipped.push(`redis rows: ${noRedis}`);
    const redis = measurements.includes('redis') ? await startRedisServer(dir) : undefined;
    if (redis) cleanup.push(() => redis.stop());
    if (noPg) skipped.push(`pgbench row: ${noPg}`);
    const pg = measurements.includes('pgbench') ? await startPgServer(dir) : undefined;
    if (pg) cleanup.push(() => pg.stop());
    const pki = needed.includes('underpass') && measurements.includes('idle-sessions') ? await makePki(path.join(dir, 'sessions')) : undefined;
    const ctx: Ctx = {
      sizes,
      bulkTool: iperf ? 'iperf3' : 'node',
      httpTool: httpTool(flags.quick),
      ports: { echo: apps.echo, bulk: apps.bulk, http: apps.http, ...(iperf ? { iperf: iperf.port } : {}), ...(redis ? { redis: redis.port } : {}) },
      ...(redis ? { redisPid: redis.pid } : {}),
      ...(pg ? { pg } : {}),
      pki,
      logDir: dir,
      appsPid: apps.pid,
      deadlineMs: flags.quick ? 30_000 : 600_000,
    };
    for (const id of needed) {
      const c = id === 'direct' ? directContender()
        : id === 'ssh' ? await sshContender(dir)
          : id === 'chisel' || id === 'chisel-tls' ? await chiselContender(dir, id === 'chisel-tls')
            : id === 'node-mux' ? await bareMuxContender(dir)
              : await underpassContender(dir);
      if (typeof c === 'string') {
        skipped.push(`${id}: ${c}`);
        log(`skipping ${id}: ${c}`);
        continue;
      }
      contenders.push(c);
      cleanup.push(() => c.close());
    }

    const results = new Results(ctx);
    const runSoak = async (c: Contender): Promise<SoakResult> => {
      const fwd = await c.forward(apps.echo);
      try {
        return await soak(fwd, {
          seconds: flags.soakSeconds ?? (flags.quick ? 3 : 600),
          intervalSeconds: flags.quick ? 1 : 10,
          warmupSeconds: flags.quick ? 1 : Math.round((flags.soakSeconds ?? 600) / 3),
          echoConnections: 8,
          messageBytes: 16 * 1024,
          newPerSecond: 20,
        });
      } finally {
        await fwd.stop();
      }
    };
    let soakResult: SoakResult | undefined;
    for (const key of measurements) {
      const rounds = ROUNDED.has(key) ? sizes.rounds : 1;
      for (let round = 0; round < rounds; round++) {
        // Every other round in reverse, so no contender always runs first (or right after another).
        for (const c of inRoundOrder(contenders, round)) {
          const ok = applies(key, c.id);
          if (ok !== true) {
            if (round === 0) results.note(rowKeys(key), c.id, ok);
            continue;
          }
          log(`${key}${rounds > 1 ? ` (round ${round + 1} of ${rounds})` : ''}: ${c.label}`);
          // One retry: on a shared machine a forwarder process can be killed from outside.
          const attempts = key === 'soak' ? 1 : 2;
          for (let attempt = 1; attempt <= attempts; attempt++) {
            try {
              if (key === 'soak') soakResult = await runSoak(c);
              else await measure(key, c, ctx, results, round);
              if (attempt > 1) results.problems.push(`${c.label}, ${key}: succeeded on the second attempt`);
              break;
            } catch (err) {
              const msg = (err as Error).message.split('\n')[0]!;
              log(`  ${c.label} ${key} FAILED (attempt ${attempt}): ${(err as Error).message}`);
              if (attempt < attempts) {
                if ((key === 'bulk' || key === 'bulk8') && iperf) {
                  // An iperf3 server whose client vanished mid-test stays "busy running a test" until its
                  // own timeout: the retry gets a fresh one.
                  await iperf.stop();
                  iperf = await startIperfServer(dir);
                  if (iperf) ctx.ports.iperf = iperf.port;
                }
                continue;
              }
              results.note(rowKeys(key), c.id, 'failed');
              results.problems.push(`${c.label}, ${key}${rounds > 1 ? ` (round ${round + 1})` : ''}: ${msg}`);
              failed = true;
            }
          }
        }
      }
    }

    const loadAfter = loadAvg();
    const columns = contenders.map((c) => ({ id: c.id, label: c.label }));
    const rows = results.selected(measurements);
    const facts = [
      `date: ${m.date}`,
      `cpu: ${m.cpu}, ${m.cores} cores; memory ${m.memory}; kernel ${m.kernel}; Node ${m.node}`,
      `load average (1, 5, 15 min): ${loadBefore} before, ${loadAfter} after`,
      ...(redis ? [`redis: redis-server ${redis.version} (no persistence) as the target of the redis-benchmark rows`] : []),
      ...(pg ? [`PostgreSQL: ${pg.version} (fsync off, scale 1) as the target of the pgbench row; pgbench of the same version`] : []),
      ...contenders.filter((c) => Object.keys(c.info).length).map((c) => `${c.label}: ${Object.entries(c.info).map(([k, v]) => `${k} ${v}`).join('; ')}`),
      ...skipped.map((s) => `skipped: ${s}`),
    ];
    const sections: string[] = [];
    if (rows.length) sections.push('## Results\n', `Each cell: the absolute number, and in brackets the ratio to \`ssh -L\` in the same run. Targets apply to Underpass.\n`, resultsTable(columns, rows));
    if (results.cpu.length) sections.push('\n## CPU during bulk transfer\n', 'From /proc/PID/stat (utime + stime) of each forwarding process and its children; `bench` is the benchmark process (the Node client when iperf3 is not used); `machine` is every process on the machine (at most 100% × cores: near it, the run was CPU-bound, iperf3 and other load included). CPU s/GiB and syscalls/MiB (from /proc/PID/io) count the forwarder\'s processes only, per byte carried: less sensitive to background load than Gbit/s.\n', cpuTable(results.cpu));
    const details = [...results.details, ...results.roundDetails];
    if (details.length) sections.push('\n## Memory and per-connection detail\n', details.map((d) => `- ${d}`).join('\n'));
    if (soakResult) {
      const s = soakResult;
      sections.push('\n## Soak\n', renderTable(['duration', 'RSS start', 'RSS end', 'RSS max', 'growth', 'trend', 'target', 'result', 'errors'], [[
        `${s.seconds} s`, `${(s.start / 2 ** 20).toFixed(1)} MiB`, `${(s.end / 2 ** 20).toFixed(1)} MiB`, `${(s.max / 2 ** 20).toFixed(1)} MiB`,
        `${s.growthPct.toFixed(1)}%`, `${s.trendPct.toFixed(1)}%`, '< 5%', s.growthPct < 5 ? 'PASS' : 'MISS', `${s.errors}`]]));
    }
    if (results.problems.length) sections.push('\n## Problems\n', results.problems.map((p) => `- ${p}`).join('\n'));
    const report = `# Tunnel benchmark\n\n${facts.map((f) => `- ${f}`).join('\n')}\n\n${sections.join('\n')}\n`;
    process.stdout.write(report);
    const misses = rows.filter((r) => verdict(r) === 'MISS').length;
    log(`done: ${rows.length} rows, ${misses} targets missed${results.problems.length ? `, ${results.problems.length} problems` : ''}`);

    const docFile = path.join(ROOT, 'docs/benchmarks.md');
    if (flags.docs && !flags.quick && (fullRun || (soakOnly && soakResult))) {
      const main = docsMain(facts);
      if (fullRun) writeDocs(docFile, `${main}\n${sections.join('\n')}\n${METHOD}`);
      if (soakOnly && soakResult) {
        writeSoakDocs(docFile, soakSection(soakResult, { date: m.date, load: loadBefore, what: SOAK_WHAT(soakResult.seconds) }), `${main}\nNo full run recorded yet: run \`make bench\`.\n`);
      }
      log(`wrote ${path.relative(process.cwd(), docFile)}`);
    }
    if (soakResult) log(`soak: RSS ${(soakResult.start / 2 ** 20).toFixed(1)} → ${(soakResult.end / 2 ** 20).toFixed(1)} MiB (${soakResult.growthPct.toFixed(1)}%)`);
  } finally {
    for (const f of cleanup.reverse()) await f().catch(() => undefined);
    if (flags.keep || failed) log(`logs kept in ${dir}`);
    else rmSync(dir, { recursive: true, force: true });
  }
  if (failed) process.exitCode = 1;
}

function docsMain(facts: string[]): string {
  return [
    '# Benchmarks',
    '',
    '<!-- Generated by `make bench` (bench/tunnel-bench.ts): the sections above "What limits us" and the soak',
    'section (`make bench-soak`) are rewritten on each run; text under the analysis marker is kept. -->',
    '',
    'Underpass against direct TCP, OpenSSH `ssh -L` and chisel, on one machine over loopback, every',
    'contender in the same run, with a bare Node forwarder of our design beside them as the floor (round',
    'trips and connections; "How it is measured"). Bulk, RTT, connection-rate, redis-benchmark and pgbench rows are the median of three rounds (every',
    'contender once per round, the order reversed every other round; each round\'s value is in the',
    'details); the rest are one run. A shared 2-core machine: read the numbers next to the load average.',
    '',
    facts.map((f) => `- ${f}`).join('\n'),
    '',
  ].join('\n');
}

const SOAK_WHAT = (seconds: number): string => `Underpass for ${seconds} s: 8 connections echoing 16 KiB messages back to back plus 20 new connections per second ` +
  '(each one 64-byte round trip); worker + connector RSS every 10 s. The first third is warm-up: about 110 s in, V8\'s memory reducer shrinks both heaps ' +
  'and RSS takes a minute or more to grow back to its working size. Start = mean of the first tenth of the samples after the warm-up, end = mean of the ' +
  'last tenth (RSS swings by several % between GC cycles); trend = a least-squares line through the post-warm-up samples, extrapolated over the soak.';

const METHOD = `
## How it is measured

- Every contender exposes the same thing: a local port forwarding to a target on 127.0.0.1. Each
  measurement starts a fresh forward (for Underpass: a new worker and connector process with one
  Connector-side mapping) and stops it afterwards. Direct TCP connects to the target itself.
- Targets run in a child process of their own (\`bench/tunnel/apps.ts\`): an echo server, a bulk
  source/sink and a small HTTP server; iperf3's server for the bulk rows.
- Bulk: \`iperf3 -n 1G\` (\`-R\` for target→client, \`-P 8\` for 8 streams); the receiver's rate.
  Both iperf3 connections (control and data) go through the forward. Before the timed transfers,
  every contender's fresh forward carries an untimed 128 MiB each way (the same streams): the
  timed GiB measures a forwarder that has carried traffic, as a running tunnel has. The warm-up's
  own rate is in the details: a fresh Node process is much slower over its first 128 MiB
  (JIT compilation, heap growth) than OpenSSH.
- RTT: first an untimed warm-up of ${FULL.rttWarmupSeconds} s of round trips on a connection of its own through the fresh forward (V8 compiles the message path in a new process's first seconds; the warm-up's p50 and CPU per round trip are in the details), then one connection, 64 bytes out, wait for all 64 back, repeat; ${FULL.rttWarmup.toLocaleString('en-US')} warm-up round trips, then ${FULL.rttSamples.toLocaleString('en-US')} timed.
- Connection rate: 8 loops of connect → 64-byte round trip → half-close, for 5 s, after 2 s of the
  same untimed on the fresh forward (a fresh Node process compiles its connection path over its
  first thousands of connections); CPU time per connection of every process involved (forwarder,
  target app, benchmark client) in the details.
- Idle streams: 10,000 connections, each proven end to end by a 1-byte echo, then idle; RSS (VmRSS of
  every process of the forwarder, children included) after 3 s of rest, minus before, divided by the
  count. A warm-up batch (a fifth of the count, opened and closed again) runs before the "before"
  reading, so one-time growth (code run for the first time, V8 committing its young generation,
  allocator arenas) is not divided among the streams; the details give the RSS before the warm-up
  (cold), half-way, and the cost per stream of the second half (the marginal cost). The verdict
  uses the average.
- Idle sessions: 1,000 connector sessions opened on one worker from the benchmark process with the
  connector's own \`WorkerLink\` (mutual TLS, WebSocket, yamux, control hello), each with its own
  connector certificate; the worker's RSS delta per session (warm-up of 200 sessions opened and
  closed first — a worker that has served connectors before — cold and half-way readings as above).
  The floor row holds the same number of mutual-TLS connections, after the same warm-up, on a bare
  Node TLS server with the worker's TLS settings and Node options and nothing else.
- Rounds: bulk, 8-stream bulk, RTT, connection rate, redis-benchmark and pgbench run three times (\`--rounds N\`), every
  contender once per round with a fresh forward, the order reversed every other round so no
  contender always runs first; a cell is the median round (its CPU row and per-connection detail
  are that round's), and every round's value is listed in the details. Memory and HTTP rows run once.
- Underpass processes start with the Node flags of \`bin/underpass\`'s first line (as the CLI and
  the image run them); the header lists them.
- redis-benchmark: \`redis-benchmark -c 50 -n 200000 -P 1\` (50 clients on persistent connections, not
  pipelined, 3-byte values), \`-t set\` and \`-t get\` as two runs, against a \`redis-server\` the
  bench starts (no persistence; both from Debian's redis-server and redis-tools) after an untimed
  20,000 requests of each on the fresh forward; requests per second as redis-benchmark reports
  them. A client nobody here wrote, many small exchanges in flight at once: what a tunnel mostly
  carries. The details give redis-benchmark's p50/p99 and the CPU time per request of every
  forwarder process and of redis-server.
- pgbench: PostgreSQL's own benchmark client, \`pgbench -S -n -c 16 -j 2 -T 10\` (16 clients on
  persistent connections, the simple query protocol, one \`SELECT abalance FROM pgbench_accounts
  WHERE aid = …\` per transaction) against a PostgreSQL server the bench starts on a fresh data
  directory (scale 1, fsync off, loopback only; Debian's postgresql package) after an untimed 2 s on
  the fresh forward; transactions per second as pgbench reports them (without connection time). A
  SQL client and server nobody here wrote: the workload this issue was first measured with. CPU
  time per transaction of the forwarder and of the server (its backends included) in the details.
- HTTP: \`wrk -t2 -c32 -d10s\` against a Node \`http\` server answering 32 bytes, after an untimed
  \`-d2s\` on the fresh forward.
- CPU: utime + stime from /proc/PID/stat of the forwarder's processes over each transfer; system calls
  from /proc/PID/io (syscr + syscw). Underpass's worker and connector write their logs and audit lines
  to files, as deployed. \`UNDERPASS_BENCH_NODE_ARGS="--cpu-prof --cpu-prof-dir=DIR"\` profiles both
  processes during a run (e.g. with \`--only bulk --contenders underpass\`).
- \`ssh -L\` runs against our own \`sshd -D\` (generated keys, \`UsePAM no\`) with OpenSSH's default
  cipher negotiation. \`chisel (no TLS)\` flatters chisel: it saves the TLS layer (it still encrypts
  with its inner SSH); \`chisel (mTLS)\` is the like-for-like comparison.
- \`bare Node mux (floor)\` is not a tunnel: Underpass's topology in bare Node
  (\`bench/tunnel/bare-relay.ts\`) — an entry process accepting application connections and a TLS
  server the exit process dials out to, the exit dialling the targets, every connection carried
  over that one TLS connection as frames with a 9-byte header, with no per-stream windows and no
  authentication, policy, audit or metrics. It runs the RTT and connection-rate rows only, with the
  worker's Node options: what a Node forwarder of this shape can reach on the machine, so the
  distance from it to \`ssh -L\` is the platform's and from Underpass to it is ours.
`;

main().catch((err) => {
  process.stderr.write(`tunnel-bench: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
