/**
 * The measurements of tunnel-bench, their sizes (full and --quick), the rows
 * they fill and the targets those rows are held to.
 */
import os from 'node:os';
import { connRate } from './connrate.js';
import type { Contender, ContenderId, Forward } from './common.js';
import { log, withDeadline } from './common.js';
import { httpLoad, type HttpTool } from './http.js';
import { idleSessions, idleStreams, tlsFloor, warmUpCount } from './memory.js';
import type { CpuRow, Row } from './report.js';
import { PG_CLIENTS, pgBench, type PgServer } from './pgsql.js';
import { REDIS_CLIENTS, redisBench, REDIS_TESTS } from './redis.js';
import { rtt } from './rtt.js';
import { bulk, type BulkTool } from './throughput.js';
import type { UnderpassPki } from './underpass.js';

export const MEASUREMENTS = ['bulk', 'bulk8', 'rtt', 'connrate', 'redis', 'pgbench', 'idle-streams', 'idle-sessions', 'http', 'soak'] as const;
export type MeasurementKey = (typeof MEASUREMENTS)[number];

export interface Sizes {
  bulkBytes: number;
  /**
   * Untimed transfer each way through a fresh forward before its timed ones, for every contender:
   * the timed GiB measures a forwarder that has carried traffic (JIT-compiled paths, heap grown),
   * as a long-running tunnel is; the warm-up's own rate is reported beside it.
   */
  bulkWarmupBytes: number;
  idleStreams: number;
  idleSessions: number;
  /** Round trips on the timed connection before its samples start (its stream open, first frames). */
  rttWarmup: number;
  rttSamples: number;
  /**
   * Untimed seconds of round trips through the fresh forward before the RTT measurement, on a
   * connection of their own: V8 compiles the message path on background threads for the first
   * seconds of a process's life, and with 1,000 warm-up round trips (0.2 s) alone that compiling
   * fell into the timed samples — it competed for the machine's two cores with the four processes
   * of the round trip, and its CPU counted as CPU per round trip (docs/benchmarks.md). The
   * warm-up's own p50 and CPU per round trip are reported in the details.
   */
  rttWarmupSeconds: number;
  loopSeconds: number;
  /**
   * Untimed seconds of the same load through the fresh forward before the connection-rate and
   * HTTP measurements (as the bulk rows' warm-up transfer and the RTT's warm-up round trips): a
   * fresh Node process spends its first seconds compiling; measured cold, Underpass used 318 + 391
   * µs of CPU per connection where the same build warmed up uses 232 + 275.
   */
  warmupSeconds: number;
  httpSeconds: number;
  /** Requests per redis-benchmark test (SET, GET), after an untimed run of a tenth of them on the fresh forward. */
  redisRequests: number;
  /** Seconds of each timed pgbench run, after an untimed run of a fifth of them on the fresh forward. */
  pgSeconds: number;
  /** Seconds RSS may settle before each memory reading. */
  settleSeconds: number;
  /**
   * Rounds of the bulk, RTT and connection-rate measurements: every contender once per round, the
   * order reversed every other round (no contender always runs first or last), the median
   * reported. One run each swung 0.98–1.17× between otherwise identical runs.
   */
  rounds: number;
}

/** The measurements repeated `rounds` times (the others are slow, or steady from run to run). */
export const ROUNDED: ReadonlySet<MeasurementKey> = new Set(['bulk', 'bulk8', 'rtt', 'connrate', 'redis', 'pgbench']);

export const FULL: Sizes = { bulkBytes: 2 ** 30, bulkWarmupBytes: 128 * 2 ** 20, idleStreams: 10_000, idleSessions: 1_000, rttWarmup: 1_000, rttSamples: 20_000, rttWarmupSeconds: 5, loopSeconds: 5, warmupSeconds: 2, httpSeconds: 10, redisRequests: 200_000, pgSeconds: 10, settleSeconds: 3, rounds: 3 };
export const QUICK: Sizes = { bulkBytes: 8 * 2 ** 20, bulkWarmupBytes: 2 ** 20, idleStreams: 200, idleSessions: 20, rttWarmup: 200, rttSamples: 2_000, rttWarmupSeconds: 0.5, loopSeconds: 2, warmupSeconds: 0.5, httpSeconds: 2, redisRequests: 5_000, pgSeconds: 2, settleSeconds: 0.5, rounds: 1 };

export interface Ctx {
  sizes: Sizes;
  bulkTool: BulkTool;
  httpTool: HttpTool;
  ports: { echo: number; bulk: number; http: number; iperf?: number; redis?: number };
  /** The PostgreSQL server of the pgbench row (its CPU per transaction is reported beside the forwarder's). */
  pg?: PgServer;
  /** The redis-server process (its CPU per request is reported beside the forwarder's). */
  redisPid?: number;
  pki: UnderpassPki | undefined;
  /** The target apps' process (its CPU is reported for the connection rate). */
  appsPid: number;
  /** Where child processes write their logs. */
  logDir: string;
  /** How long one measurement of one contender may take before it counts as failed. */
  deadlineMs: number;
}

/** One round's result in a row, with what is reported beside it when that round is the median. */
interface Sample {
  value: number;
  cpu?: CpuRow;
  detail?: string;
}

export class Results {
  readonly rows = new Map<string, Row>();
  readonly problems: string[] = [];
  readonly details: string[] = [];
  readonly #samples = new Map<string, Map<ContenderId, Sample[]>>();

  constructor(ctx: Ctx) {
    const s = ctx.sizes;
    const size = s.bulkBytes >= 2 ** 30 ? `${s.bulkBytes / 2 ** 30} GiB` : `${s.bulkBytes / 2 ** 20} MiB`;
    const tool = ctx.bulkTool === 'iperf3' ? 'iperf3' : 'Node client';
    const one = { kind: 'ratio', min: 1.0, text: '≥ 1.0× ssh -L (aim 1.25×)' } as const;
    const even = { kind: 'ratio', min: 1.0, text: '≥ 1.0× ssh -L' } as const;
    this.add('bulk-up', { label: `1 stream, ${size} client→target (${tool})`, unit: 'Gbit/s', decimals: 2, values: {}, target: one });
    this.add('bulk-down', { label: `1 stream, ${size} target→client (${tool})`, unit: 'Gbit/s', decimals: 2, values: {}, target: one });
    this.add('bulk8-up', { label: `8 streams, ${size} in all, client→target`, unit: 'Gbit/s', decimals: 2, values: {}, target: even });
    this.add('bulk8-down', { label: `8 streams, ${size} in all, target→client`, unit: 'Gbit/s', decimals: 2, values: {}, target: even });
    this.add('rtt-p50', { label: `RTT p50, 64 B echo (${s.rttSamples.toLocaleString('en-US')} samples)`, unit: 'µs', decimals: 0, values: {}, target: { kind: 'ratio', max: 1.0, text: '≤ ssh -L' } });
    this.add('rtt-p99', { label: 'RTT p99, 64 B echo', unit: 'µs', decimals: 0, values: {} });
    this.add('connrate', { label: `new connections + 1 round trip, 8 at a time, ${s.loopSeconds} s`, unit: 'conn/s', decimals: 0, values: {}, target: even });
    this.add('idle-streams', { label: `${s.idleStreams.toLocaleString('en-US')} idle streams: RSS per stream, all processes`, unit: 'KiB', decimals: 1, values: {}, target: { kind: 'abs', max: 16, text: '≤ 16 KiB' } });
    this.add('idle-sessions', { label: `${s.idleSessions.toLocaleString('en-US')} idle connector sessions: worker RSS per session`, unit: 'KiB', decimals: 1, values: {}, target: { kind: 'abs', max: 64, text: '≤ 64 KiB' } });
    this.add('idle-tls', { label: `floor under a session: ${s.idleSessions.toLocaleString('en-US')} idle mTLS connections on a bare Node TLS server, RSS per connection`, unit: 'KiB', decimals: 1, values: {} });
    for (const test of REDIS_TESTS) {
      this.add(`redis-${test.toLowerCase()}`, { label: `redis-benchmark ${test}, ${REDIS_CLIENTS} clients, not pipelined, ${s.redisRequests.toLocaleString('en-US')} requests`, unit: 'req/s', decimals: 0, values: {}, target: even });
    }
    this.add('pgbench', { label: `pgbench -S (SELECT by primary key), ${PG_CLIENTS} clients, persistent connections, ${s.pgSeconds} s`, unit: 'tx/s', decimals: 0, values: {}, target: even });
    this.add('http', { label: `HTTP GET, 32 keep-alive connections, ${s.httpSeconds} s (${ctx.httpTool === 'wrk' ? 'wrk -t2 -c32' : 'Node client'})`, unit: 'req/s', decimals: 0, values: {} });
  }

  add(key: string, row: Row): void {
    this.rows.set(key, row);
  }

  /** Records one round's value; the row shows the median of the rounds so far. */
  set(key: string, id: ContenderId, value: number, extra: Omit<Sample, 'value'> = {}): void {
    let byContender = this.#samples.get(key);
    if (!byContender) this.#samples.set(key, (byContender = new Map()));
    const samples = byContender.get(id) ?? [];
    byContender.set(id, [...samples, { value, ...extra }]);
    this.rows.get(key)!.values[id] = medianSample(byContender.get(id)!).value;
  }

  /** The CPU rows of the median rounds, in the order they were first recorded. */
  get cpu(): CpuRow[] {
    return this.#medians().flatMap((m) => (m.sample.cpu ? [m.sample.cpu] : []));
  }

  /** Details of the median rounds, then every round's value where there was more than one. */
  get roundDetails(): string[] {
    const out = this.#medians().flatMap((m) => (m.sample.detail ? [m.sample.detail] : []));
    for (const [key, byContender] of this.#samples) {
      const multi = [...byContender].filter(([, samples]) => samples.length > 1);
      if (multi.length === 0) continue;
      const row = this.rows.get(key)!;
      out.push(`Rounds of "${row.label}" [${row.unit}], in the order run (median reported): ${multi.map(([id, samples]) => `${id} ${samples.map((x) => x.value.toFixed(row.decimals)).join(' / ')}`).join('; ')}`);
    }
    return out;
  }

  #medians(): Array<{ key: string; id: ContenderId; sample: Sample }> {
    return [...this.#samples].flatMap(([key, byContender]) => [...byContender].map(([id, samples]) => ({ key, id, sample: medianSample(samples) })));
  }

  note(keys: string[], id: ContenderId, text: string): void {
    for (const key of keys) {
      const row = this.rows.get(key)!;
      (row.notes ??= {})[id] = text;
    }
  }

  /** Rows of the measurements that ran, in order. */
  selected(keys: readonly MeasurementKey[]): Row[] {
    return keys.flatMap((k) => rowKeys(k)).map((k) => this.rows.get(k)!);
  }
}

/** The middle sample by value (of an even count, the lower of the two middle ones). */
export function medianSample(samples: readonly Sample[]): Sample {
  const sorted = [...samples].sort((a, b) => a.value - b.value);
  return sorted[Math.floor((sorted.length - 1) / 2)]!;
}

export function rowKeys(m: MeasurementKey): string[] {
  switch (m) {
    case 'bulk': return ['bulk-up', 'bulk-down'];
    case 'bulk8': return ['bulk8-up', 'bulk8-down'];
    case 'rtt': return ['rtt-p50', 'rtt-p99'];
    case 'redis': return REDIS_TESTS.map((t) => `redis-${t.toLowerCase()}`);
    case 'idle-sessions': return ['idle-sessions', 'idle-tls'];
    case 'soak': return [];
    default: return [m];
  }
}

/** Whether a measurement applies to a contender; otherwise the note for its cell. */
export function applies(m: MeasurementKey, id: ContenderId): true | string {
  if (m === 'idle-streams' && id === 'direct') return 'no forwarder';
  if (m === 'idle-sessions' && id !== 'underpass') return 'n/a';
  if (m === 'soak' && id !== 'underpass') return 'n/a';
  if (id === 'node-mux' && m !== 'rtt' && m !== 'connrate') return 'n/a';
  return true;
}

function targetPort(m: MeasurementKey, ctx: Ctx): number {
  if (m === 'bulk' || m === 'bulk8') return ctx.bulkTool === 'iperf3' ? ctx.ports.iperf! : ctx.ports.bulk;
  if (m === 'http') return ctx.ports.http;
  if (m === 'redis') return ctx.ports.redis!;
  if (m === 'pgbench') return ctx.pg!.port;
  return ctx.ports.echo;
}

const mib = (b: number): string => `${(b / 2 ** 20).toFixed(1)} MiB`;
const kib = (b: number): string => `${(b / 1024).toFixed(1)} KiB`;

/** Runs one measurement for one contender (a fresh forward each time) and records it. */
export async function measure(m: MeasurementKey, c: Contender, ctx: Ctx, r: Results, round = 0): Promise<void> {
  const s = ctx.sizes;
  if (m === 'idle-sessions') {
    const res = await withDeadline(idleSessions(ctx.pki!, s.idleSessions, s.settleSeconds), ctx.deadlineMs, 'idle sessions');
    r.set('idle-sessions', c.id, res.perItem / 1024);
    r.details.push(`${c.label}, ${res.count} idle connector sessions: worker RSS ${mib(res.cold.worker!)} cold, ${mib(res.before.worker!)} after a warm-up of ${warmUpCount(s.idleSessions)} sessions opened and closed → ${mib(res.mid.worker!)} at ${Math.floor(s.idleSessions / 2)} → ${mib(res.after.worker!)} (${kib(res.perItem)} per session on average, ${kib(res.marginal)} per session over the second half), ` +
      `${mib(res.released.worker!)} after closing them${res.errors ? `; ${res.errors} failed: ${res.firstError}` : ''}${res.note ? `; ${res.note}` : ''}`);
    const floor = await withDeadline(tlsFloor(ctx.pki!, s.idleSessions, ctx.logDir, s.settleSeconds), ctx.deadlineMs, 'TLS floor');
    r.set('idle-tls', c.id, floor.perItem / 1024);
    r.details.push(`Bare Node TLS server (the floor under a session, the worker's Node options), ${floor.count} idle mutual-TLS connections: RSS ${mib(floor.cold['bare TLS server']!)} cold, ${mib(floor.before['bare TLS server']!)} after the warm-up → ` +
      `${mib(floor.mid['bare TLS server']!)} → ${mib(floor.after['bare TLS server']!)} (${kib(floor.perItem)} per connection on average, ${kib(floor.marginal)} over the second half)${floor.errors ? `; ${floor.errors} failed: ${floor.firstError}` : ''}`);
    log(`  ${c.label} idle sessions: ${kib(res.perItem)} per session (second half ${kib(res.marginal)}); bare TLS floor ${kib(floor.perItem)} per connection (second half ${kib(floor.marginal)})`);
    return;
  }
  const fwd: Forward = await c.forward(targetPort(m, ctx));
  try {
    await withDeadline(run(m, c, ctx, r, fwd, round), ctx.deadlineMs, `${c.label} ${m}`);
  } finally {
    await fwd.stop();
  }
}

async function run(m: MeasurementKey, c: Contender, ctx: Ctx, r: Results, fwd: Forward, round: number): Promise<void> {
  const s = ctx.sizes;
  switch (m) {
    case 'bulk':
    case 'bulk8': {
      const streams = m === 'bulk' ? 1 : 8;
      const warm: string[] = [];
      for (const reverse of [false, true]) {
        const res = await bulk(fwd, { bytes: s.bulkWarmupBytes, streams, reverse, tool: ctx.bulkTool });
        warm.push(`${reverse ? 'target→client' : 'client→target'} ${res.gbps.toFixed(2)} Gbit/s, ${res.cpuPerGiB.toFixed(2)} CPU s/GiB`);
      }
      if (round === 0) r.details.push(`${c.label}, ${streams} stream${streams > 1 ? 's' : ''}, untimed warm-up of ${s.bulkWarmupBytes / 2 ** 20} MiB each way on the fresh forward${s.rounds > 1 ? ' (first round; every round warms up its own forward)' : ''}: ${warm.join('; ')}`);
      for (const reverse of [false, true]) {
        const key = `${m}-${reverse ? 'down' : 'up'}`;
        const res = await bulk(fwd, { bytes: s.bulkBytes, streams, reverse, tool: ctx.bulkTool });
        const what = `${streams} stream${streams > 1 ? 's' : ''}, ${reverse ? 'target→client' : 'client→target'}`;
        r.set(key, c.id, res.gbps, { cpu: { contender: c.label, what, value: `${res.gbps.toFixed(2)} Gbit/s`, cpu: res.cpu, cpuPerGiB: res.cpuPerGiB, syscallsPerMiB: res.syscallsPerMiB } });
        log(`  ${c.label} ${key}: ${res.gbps.toFixed(2)} Gbit/s in ${res.seconds.toFixed(1)} s; CPU ${fmtCpu(res.cpu)}; ${res.cpuPerGiB.toFixed(2)} CPU s/GiB, ${res.syscallsPerMiB.toFixed(0)} syscalls/MiB`);
      }
      return;
    }
    case 'rtt': {
      const warm = await rtt(fwd, { warmup: 0, samples: s.rttWarmup, minSeconds: s.rttWarmupSeconds });
      if (round === 0) {
        const perRtWarm = Object.entries(warm.cpuPerRoundTripUs).filter(([role]) => role !== 'bench');
        r.details.push(`${c.label}, RTT: untimed warm-up of ${s.rttWarmupSeconds} s on the fresh forward${s.rounds > 1 ? ' (first round; every round warms up its own forward)' : ''}: ${warm.samples.toLocaleString('en-US')} round trips, p50 ${warm.p50.toFixed(0)} µs, p99 ${warm.p99.toFixed(0)} µs` +
          `${perRtWarm.length ? `; CPU time per round trip ${perRtWarm.map(([role, us]) => `${role} ${us.toFixed(0)} µs`).join(', ')}` : ''}`);
      }
      const res = await rtt(fwd, { warmup: s.rttWarmup, samples: s.rttSamples });
      const perRt = Object.entries(res.cpuPerRoundTripUs).filter(([role]) => role !== 'bench');
      const detail = perRt.length === 0 ? undefined
        : `${c.label}, RTT p50 ${res.p50.toFixed(0)} µs${s.rounds > 1 ? ' (the median round)' : ''}: CPU time per round trip ${perRt.map(([role, us]) => `${role} ${us.toFixed(0)} µs`).join(', ')} (${perRt.reduce((a, [, us]) => a + us, 0).toFixed(0)} µs in all)`;
      r.set('rtt-p50', c.id, res.p50, detail ? { detail } : {});
      r.set('rtt-p99', c.id, res.p99);
      log(`  ${c.label} rtt: p50 ${res.p50.toFixed(0)} µs, p99 ${res.p99.toFixed(0)} µs; CPU ${fmtCpu(res.cpu)}`);
      return;
    }
    case 'connrate': {
      const warm = await connRate(fwd, { concurrency: 8, seconds: s.warmupSeconds });
      if (round === 0) r.details.push(`${c.label}, connection rate: untimed warm-up of ${s.warmupSeconds} s on the fresh forward${s.rounds > 1 ? ' (first round; every round warms up its own forward)' : ''}: ${warm.perSecond.toFixed(0)} conn/s`);
      const res = await connRate(fwd, { concurrency: 8, seconds: s.loopSeconds, extraRoles: { 'target app': ctx.appsPid } });
      if (res.errors) r.problems.push(`${c.label}, connection rate: ${res.errors} of ${res.completed + res.errors} connections failed (${res.firstError})`);
      log(`  ${c.label} connrate: ${res.perSecond.toFixed(0)} conn/s (${res.errors} errors); CPU ${fmtCpu(res.cpu)}`);
      const per = Object.entries(res.cpuPerConnUs).map(([role, us]) => `${role} ${us.toFixed(0)} µs`).join(', ');
      r.set('connrate', c.id, res.perSecond, { detail: `${c.label}, connection rate ${res.perSecond.toFixed(0)}/s${s.rounds > 1 ? ' (the median round)' : ''}: CPU time per connection ${per}; machine ${res.cpu.machine?.toFixed(0)}% of ${os.availableParallelism() * 100}%` });
      return;
    }
    case 'redis': {
      const warmup = Math.max(1_000, Math.round(s.redisRequests / 10));
      const warm: string[] = [];
      for (const test of REDIS_TESTS) {
        const w = await redisBench(fwd, { test, requests: warmup, timeoutMs: ctx.deadlineMs });
        warm.push(`${test} ${w.perSecond.toFixed(0)} req/s`);
      }
      if (round === 0) r.details.push(`${c.label}, redis-benchmark: untimed warm-up of ${warmup.toLocaleString('en-US')} requests per test on the fresh forward${s.rounds > 1 ? ' (first round; every round warms up its own forward)' : ''}: ${warm.join(', ')}`);
      for (const test of REDIS_TESTS) {
        const res = await redisBench(fwd, { test, requests: s.redisRequests, timeoutMs: ctx.deadlineMs, ...(ctx.redisPid ? { extraRoles: { 'redis-server': ctx.redisPid } } : {}) });
        const per = Object.entries(res.cpuPerRequestUs).map(([role, us]) => `${role} ${us.toFixed(0)} µs`).join(', ');
        const forwarder = Object.entries(res.cpuPerRequestUs).filter(([role]) => role !== 'redis-server');
        const detail = `${c.label}, redis-benchmark ${test} ${res.perSecond.toFixed(0)} req/s${s.rounds > 1 ? ' (the median round)' : ''}: p50 ${res.p50Ms} ms, p99 ${res.p99Ms} ms (redis-benchmark's); CPU time per request ${per}` +
          `${forwarder.length > 1 ? ` (forwarder ${forwarder.reduce((a, [, us]) => a + us, 0).toFixed(0)} µs in all)` : ''}; machine ${res.cpu.machine?.toFixed(0)}% of ${os.availableParallelism() * 100}%`;
        r.set(`redis-${test.toLowerCase()}`, c.id, res.perSecond, { detail });
        log(`  ${c.label} redis ${test}: ${res.perSecond.toFixed(0)} req/s, p50 ${res.p50Ms} ms; CPU ${fmtCpu(res.cpu)}`);
      }
      return;
    }
    case 'pgbench': {
      const pg = ctx.pg!;
      const warmSeconds = Math.max(1, Math.round(s.pgSeconds / 5));
      const warm = await pgBench(fwd, pg, { seconds: warmSeconds, timeoutMs: ctx.deadlineMs });
      if (round === 0) r.details.push(`${c.label}, pgbench: untimed warm-up of ${warmSeconds} s on the fresh forward${s.rounds > 1 ? ' (first round; every round warms up its own forward)' : ''}: ${warm.perSecond.toFixed(0)} tx/s`);
      const res = await pgBench(fwd, pg, { seconds: s.pgSeconds, timeoutMs: ctx.deadlineMs, extraRoles: { postgres: pg.pid } });
      const per = Object.entries(res.cpuPerTxUs).map(([role, us]) => `${role} ${us.toFixed(0)} µs`).join(', ');
      const forwarder = Object.entries(res.cpuPerTxUs).filter(([role]) => role !== 'postgres');
      const detail = `${c.label}, pgbench ${res.perSecond.toFixed(0)} tx/s${s.rounds > 1 ? ' (the median round)' : ''}: latency average ${res.latencyMs} ms (pgbench's); CPU time per transaction ${per}` +
        `${forwarder.length > 1 ? ` (forwarder ${forwarder.reduce((a, [, us]) => a + us, 0).toFixed(0)} µs in all)` : ''}; machine ${res.cpu.machine?.toFixed(0)}% of ${os.availableParallelism() * 100}%`;
      r.set('pgbench', c.id, res.perSecond, { detail });
      log(`  ${c.label} pgbench: ${res.perSecond.toFixed(0)} tx/s, latency ${res.latencyMs} ms; CPU ${fmtCpu(res.cpu)}`);
      return;
    }
    case 'idle-streams': {
      const res = await idleStreams(fwd, s.idleStreams, s.settleSeconds);
      r.set('idle-streams', c.id, res.perItem / 1024);
      const roles = Object.keys(res.after).map((role) => `${role} ${mib(res.cold[role]!)} cold, ${mib(res.before[role]!)} after the warm-up → ${mib(res.mid[role]!)} → ${mib(res.after[role]!)} (${kib(res.perRole[role]!)}/stream; ${mib(res.released[role]!)} after close)`);
      r.details.push(`${c.label}, ${res.count} idle streams: ${roles.join('; ')}${res.errors ? `; ${res.errors} failed: ${res.firstError}` : ''}${res.note ? `; ${res.note}` : ''}`);
      if (res.errors) r.problems.push(`${c.label}, idle streams: ${res.errors} of ${s.idleStreams} could not be opened (${res.firstError})`);
      r.details.push(`${c.label}, idle streams: ${kib(res.perItem)} per stream on average, ${kib(res.marginal)} per stream over the second half`);
      log(`  ${c.label} idle streams: ${kib(res.perItem)} per stream over ${res.count} (second half ${kib(res.marginal)})`);
      return;
    }
    case 'http': {
      const warm = await httpLoad(fwd, { tool: ctx.httpTool, seconds: s.warmupSeconds, connections: 32 });
      r.details.push(`${c.label}, HTTP: untimed warm-up of ${s.warmupSeconds} s on the fresh forward: ${warm.perSecond.toFixed(0)} req/s`);
      const res = await httpLoad(fwd, { tool: ctx.httpTool, seconds: s.httpSeconds, connections: 32 });
      r.set('http', c.id, res.perSecond);
      if (res.errors) r.problems.push(`${c.label}, HTTP: ${res.errors} errors`);
      log(`  ${c.label} http: ${res.perSecond.toFixed(0)} req/s (${res.errors} errors); CPU ${fmtCpu(res.cpu)}`);
      return;
    }
    default:
      throw new Error(`measure(${m}) is not a table measurement`);
  }
}

export function fmtCpu(cpu: Record<string, number>): string {
  return Object.entries(cpu).map(([k, v]) => `${k} ${v.toFixed(0)}%`).join(', ');
}
