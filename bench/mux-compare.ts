/**
 * Underpass's multiplexer (tunnel/mux) against @chainsafe/libp2p-yamux, in the
 * same run on the same machine: each side of each connection is its own
 * process over real TCP loopback; contenders alternate run by run (A, B, A,
 * B, ...) so background load hits both alike; the table reports medians.
 *
 *   npx tsc -p tsconfig.build.json && node dist/bench/mux-compare.js [--quick] [--runs N] [--only oneway,rtt,...] [--json FILE]
 *     [--underpass-window BYTES]   (try Underpass with another stream window; not the default)
 *
 * --quick: small sizes and one run per contender (a smoke test, well under 20 s); the
 * default is full sizes and three runs, as reported in docs/multiplexer.md.
 */
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { CONTENDERS, LABELS, type ContenderName } from './lib/contender.js';
import { PeerSet } from './lib/peers.js';
import { bytes, fmt, loadNow, machineInfo, median, table, verdict } from './lib/report.js';
import { FULL, QUICK, type Result, type Scenario, type Sizes } from './lib/workloads.js';

interface Metric {
  key: string;
  label: string;
  higherIsBetter: boolean;
}

interface Plan {
  scenario: Scenario;
  title: (s: Sizes) => string;
  metrics: Metric[];
  /** New processes for every run (memory is measured, so nothing may be left over). */
  fresh?: boolean;
}

const gbit: Metric[] = [{ key: 'gbits', label: 'Gbit/s', higherIsBetter: true }];

const PLANS: Plan[] = [
  { scenario: 'oneway', title: (s) => `1 stream, ${bytes(s.onewayBytes)} one way`, metrics: gbit },
  { scenario: 'echo', title: (s) => `1 stream, ${bytes(s.echoBytes)} echoed (each way)`, metrics: gbit },
  { scenario: 'concurrent', title: (s) => `${s.concurrentStreams} streams × ${bytes(s.concurrentBytes)}, aggregate`, metrics: gbit },
  {
    scenario: 'rtt',
    title: (s) => `64 B echo round trip, ${s.rttIterations}×`,
    metrics: [
      { key: 'p50us', label: 'p50 µs', higherIsBetter: false },
      { key: 'p99us', label: 'p99 µs', higherIsBetter: false },
    ],
  },
  { scenario: 'open', title: (s) => `new stream + 64 B round trip, ${s.openIterations}×`, metrics: [{ key: 'perSecond', label: 'per s', higherIsBetter: true }] },
  {
    scenario: 'idle',
    title: (s) => `${s.idleStreams.toLocaleString('en-US')} idle streams`,
    fresh: true,
    metrics: [
      { key: 'server.rssPerStream', label: 'accept RSS B/stream', higherIsBetter: false },
      { key: 'server.heapPerStream', label: 'accept heap B/stream', higherIsBetter: false },
      { key: 'openerRssPerStream', label: 'opener RSS B/stream', higherIsBetter: false },
    ],
  },
];

const READER_PROBES: { scenario: Scenario; label: string }[] = [
  { scenario: 'paused', label: 'pause()' },
  { scenario: 'unread', label: 'no reader' },
  { scenario: 'slowread', label: 'slow for-await' },
];
const READER_FIELDS: [string, string][] = [
  ['server.arrivedWhileHeld', 'bytes that arrived while held'],
  ['server.arrivedSecondHalf', '… in the second half of the hold'],
  ['server.consumedWhileHeld', 'bytes the application consumed'],
  ['server.keptByReader', 'kept by the reader (arrived − consumed)'],
  ['server.bufferedInStream', 'buffered in the stream object'],
  ['server.rssOverBase', 'reader RSS at end of hold − before the stream'],
  ['server.buffersOverBase', 'reader ArrayBuffers at end of hold − before'],
  ['server.complete', 'all bytes delivered in the end'],
  ['server.error', 'error at the reader'],
  ['error', 'error at the writer'],
];
const SPLIT_FIELDS: [string, string][] = [
  ['ok', 'sha256 of received bytes matches'],
  ['server.socketReads', 'socket reads at the receiver'],
  ['server.meanReadBytes', 'mean bytes per read'],
  ['ms', 'time (ms)'],
  ['server.error', 'error at the receiver'],
  ['error', 'error at the sender'],
];

const HELP = `usage: node dist/bench/mux-compare.js [options]
  --quick                   small sizes, one run per contender (a smoke test)
  --runs N                  runs per contender (default 3; 1 with --quick)
  --only a,b                scenarios (default: all)
  --json FILE               also write the results as JSON
  --underpass-window BYTES  Underpass's stream window (default 4 MiB; for explaining differences)
`;
const flags = (() => {
  try {
    return parseArgs({
      options: { quick: { type: 'boolean', default: false }, runs: { type: 'string' }, only: { type: 'string' }, json: { type: 'string' }, 'underpass-window': { type: 'string' }, help: { type: 'boolean', short: 'h', default: false } },
    }).values;
  } catch (err) {
    process.stderr.write(`mux-compare: ${(err as Error).message}\n${HELP}`);
    process.exit(2);
  }
})();
if (flags.help) {
  process.stdout.write(HELP);
  process.exit(0);
}
const sizes: Sizes = { ...(flags.quick ? QUICK : FULL), underpassWindow: Number(flags['underpass-window'] ?? 0) };
const runs = Number(flags.runs ?? (flags.quick ? 1 : 3));
const only = flags.only ? new Set(flags.only.split(',')) : undefined;
const known = new Set<string>([...PLANS.map((p) => p.scenario), ...READER_PROBES.map((p) => p.scenario), 'split']);
function usage(problem: string): never {
  console.error(`mux-compare: ${problem}`);
  process.exit(2);
}
for (const name of only ?? []) if (!known.has(name)) usage(`--only: unknown scenario "${name}" (known: ${[...known].join(', ')})`);
if (!Number.isInteger(runs) || runs < 1) usage(`--runs: must be a positive integer, got "${flags.runs}"`);
if (!Number.isInteger(sizes.underpassWindow) || sizes.underpassWindow < 0) usage('--underpass-window: must be a byte count');
const wanted = (s: Scenario): boolean => !only || only.has(s);
const results: Partial<Record<Scenario, Record<ContenderName, Result[]>>> = {};

const t0 = Date.now();
function progress(line: string): void {
  process.stderr.write(`${line.replace(/^  /, `  [${((Date.now() - t0) / 1000).toFixed(1).padStart(5)} s] `)}\n`);
}

/** One PeerSet per contender, started together (startup is the slow part of a fresh run). */
async function spawnBoth(withProxy: boolean): Promise<Record<ContenderName, PeerSet>> {
  const sets = Object.fromEntries(CONTENDERS.map((c) => [c, new PeerSet(c, withProxy)])) as Record<ContenderName, PeerSet>;
  await Promise.all(Object.values(sets).map((s) => s.ready));
  return sets;
}

function stopAll(sets: Record<ContenderName, PeerSet>): void {
  for (const set of Object.values(sets)) set.stop();
}

/** Processes shared by the plans that measure time only (each run still gets its own connection and warm-up). */
let sharedSets: Record<ContenderName, PeerSet> | undefined;

async function runPlan(plan: Plan): Promise<void> {
  const byContender = { underpass: [], libp2p: [] } as Record<ContenderName, Result[]>;
  results[plan.scenario] = byContender;
  const shared = plan.fresh ? undefined : (sharedSets ??= await spawnBoth(false));
  for (let run = 1; run <= runs; run++) {
    const sets = shared ?? (await spawnBoth(false));
    for (const contender of CONTENDERS) {
      const result = await sets[contender].run(plan.scenario, sizes);
      byContender[contender].push(result);
      const shown = plan.metrics.map((m) => `${m.label} ${fmt(result[m.key])}`).join(', ');
      progress(`  ${plan.scenario} run ${run} ${contender}: ${shown}${errorOf(result)}`);
    }
    if (!shared) stopAll(sets);
  }
}

function errorOf(r: Result): string {
  const errors = [r.error, r['server.error']].filter(Boolean);
  return errors.length ? ` [${errors.join('; ')}]` : '';
}

/** Probes run `runs` times per contender (interleaved), each run in fresh processes. */
async function runProbe(scenario: Scenario): Promise<void> {
  const byContender = { underpass: [], libp2p: [] } as Record<ContenderName, Result[]>;
  results[scenario] = byContender;
  for (let run = 1; run <= runs; run++) {
    const sets = await spawnBoth(scenario === 'split');
    for (const contender of CONTENDERS) {
      const result = await sets[contender].run(scenario, sizes);
      byContender[contender].push(result);
      progress(`  ${scenario} run ${run} ${contender}: ${JSON.stringify(result)}`);
    }
    stopAll(sets);
  }
}

/** A probe field over runs: median of numbers, "k/n" of booleans, distinct messages of strings. */
function probeCell(rs: Result[], key: string): string {
  const values = rs.map((r) => r[key]).filter((v) => v !== undefined && v !== '');
  if (values.length === 0) return '—';
  if (typeof values[0] === 'number') return fmt(median(values as number[]));
  if (typeof values[0] === 'boolean') return `${values.filter((v) => v === true).length}/${rs.length}`;
  const counts = new Map<string, number>();
  for (const v of values) {
    const msg = String(v).replace(/\d{3,}/g, 'N'); // byte counts differ run to run
    counts.set(msg, (counts.get(msg) ?? 0) + 1);
  }
  return [...counts].map(([msg, n]) => `${msg} (${n}/${rs.length})`).join('; ');
}

function numbers(rs: Result[], key: string): number[] {
  return rs.map((r) => (typeof r[key] === 'number' && !r.error && !r['server.error'] ? (r[key] as number) : NaN));
}

function summary(): string {
  const rows: string[][] = [];
  for (const plan of PLANS.filter((p) => wanted(p.scenario))) {
    const rs = results[plan.scenario]!;
    for (const m of plan.metrics) {
      const u = numbers(rs.underpass, m.key);
      const l = numbers(rs.libp2p, m.key);
      const mu = median(u.filter(Number.isFinite));
      const ml = median(l.filter(Number.isFinite));
      rows.push([plan.title(sizes), m.label, fmt(mu), fmt(ml), fmt(mu / ml), verdict(mu, ml, m.higherIsBetter, 'Underpass', 'libp2p'), u.map(fmt).join(' / '), l.map(fmt).join(' / ')]);
    }
  }
  return table(['scenario', 'metric', 'Underpass', 'libp2p-yamux', 'U/L', 'better', 'Underpass runs', 'libp2p runs'], rows);
}

/** One column per (probe, contender) that ran; one row per field. */
function probeTable(title: string, probes: { scenario: Scenario; label: string }[], fields: [string, string][]): string[] {
  const columns = probes
    .filter((p) => results[p.scenario])
    .flatMap((p) => CONTENDERS.map((c) => ({ name: `${c === 'underpass' ? 'Underpass' : 'libp2p'} ${p.label}`.trim(), runs: results[p.scenario]![c] })));
  if (columns.length === 0) return [];
  const rows = fields.map(([key, label]) => [label, ...columns.map((c) => probeCell(c.runs, key))]);
  return ['', title, '', table(['', ...columns.map((c) => c.name)], rows)];
}

const header = [
  `# Multiplexer comparison (${flags.quick ? 'quick' : 'full'} sizes, ${runs} run(s) per contender, interleaved)`,
  '',
  ...machineInfo(),
  `contenders: Underpass = ${LABELS.underpass} (${sizes.underpassWindow ? `stream window ${bytes(sizes.underpassWindow)} (--underpass-window)` : 'defaults: 4 MiB stream window'}, 256 KiB frames); libp2p = ${LABELS.libp2p} (defaults: 256 KiB window auto-tuned up to 16 MiB)`,
  'transport: TCP loopback, TCP_NODELAY, one process per side (plus one proxy process for split frames)',
];
progress(header.join('\n'));
const started = Date.now();
function stopShared(): void {
  if (sharedSets) stopAll(sharedSets);
  sharedSets = undefined;
}
for (const plan of PLANS) {
  if (plan.fresh) stopShared(); // nothing else running while memory is measured
  if (wanted(plan.scenario)) await runPlan(plan);
}
stopShared();
for (const probe of [...READER_PROBES.map((p) => p.scenario), 'split' as const]) if (wanted(probe)) await runProbe(probe);

const out = [
  ...header,
  `load avg: ${loadNow()} (1, 5, 15 min) at end; took ${((Date.now() - started) / 1000).toFixed(1)} s`,
  '',
  `Medians of ${runs} run(s); U/L = Underpass ÷ libp2p-yamux. Probe tables: medians, "k/n" = true in k of n runs, errors with their counts.`,
  '',
  summary(),
  ...probeTable(
    `Reader that stops keeping up: ${bytes(sizes.pausedOffer)} offered on one stream; the reader holds for ${sizes.pausedHoldMs} ms ` +
      `(pause() after ${bytes(sizes.pausedAfter)} / no reader attached / for-await consuming ${bytes(sizes.slowReadRate)}/s after ${bytes(sizes.pausedAfter)}), then reads to the end`,
    READER_PROBES,
    READER_FIELDS,
  ),
  ...probeTable(`Split frames: ${bytes(sizes.splitBytes)} through a proxy that forwards one byte per write`, [{ scenario: 'split', label: '' }], SPLIT_FIELDS),
];
console.log(out.join('\n'));
if (flags.json) writeFileSync(flags.json, JSON.stringify({ sizes, runs, machine: machineInfo(), results }, null, 2));
