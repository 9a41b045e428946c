/**
 * The fuzzing harness (docs/fuzzing.md): runs each target's fast-check
 * properties with one seed, measures every input (time, heap growth), stops
 * a run that hangs, and writes what it counted for the `make fuzz` table.
 *
 * A target is one parser that reads peer bytes; its properties are generators
 * of valid inputs (round trips), mutations of valid inputs and random bytes.
 * A property fails when the parser throws anything but its documented coded
 * error, takes longer than FUZZ_MAX_MS on one input, grows the heap by more
 * than the target's bound, or breaks its own invariant (split invariance,
 * round trip, a buffer limit).
 */
import fc from 'fast-check';
import { appendFileSync } from 'node:fs';
import { inspect } from 'node:util';
import { GCProfiler, getHeapStatistics } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { setFlagsFromString } from 'node:v8';
import { startWatchdog, type Watchdog } from './watchdog.js';

export interface FuzzSettings {
  /** The seed of every property (FUZZ_SEED); the same seed gives the same inputs. */
  seed: number;
  /** Inputs per target, spread over its properties by weight (FUZZ_RUNS). */
  runs: number;
  /** Longest CPU time one input may take (FUZZ_MAX_MS). */
  maxMsPerInput: number;
  /** Only targets (or "target/property") whose name starts with this (FUZZ_ONLY). */
  only: string | undefined;
  /** fast-check's replay path of a failure (FUZZ_PATH, with FUZZ_SEED and FUZZ_ONLY naming the property). */
  path: string | undefined;
  /** Where each finished target appends its counts as a JSON line (FUZZ_REPORT; `make fuzz` sets it). */
  report: string | undefined;
  /** No progress for this long is a hang: the run stops and prints the input's number (FUZZ_HANG_MS). */
  hangMs: number;
}

/** `make test`'s short pass: a fixed seed, so every run checks the same inputs. */
export const DEFAULT_SEED = 20261207;
export const DEFAULT_RUNS = 2000;

function intFromEnv(name: string, fallback: number): number {
  const text = process.env[name];
  if (text === undefined || text === '') return fallback;
  const n = Number(text);
  if (!Number.isSafeInteger(n)) throw new Error(`${name}=${text} is not an integer`);
  return n;
}

export function fuzzSettings(): FuzzSettings {
  return {
    seed: intFromEnv('FUZZ_SEED', DEFAULT_SEED) | 0,
    runs: Math.max(1, intFromEnv('FUZZ_RUNS', DEFAULT_RUNS)),
    maxMsPerInput: intFromEnv('FUZZ_MAX_MS', 2000),
    only: process.env.FUZZ_ONLY || undefined,
    path: process.env.FUZZ_PATH || undefined,
    report: process.env.FUZZ_REPORT || undefined,
    hangMs: intFromEnv('FUZZ_HANG_MS', 30_000),
  };
}

export interface FuzzProperty<T> {
  name: string;
  /** Share of the target's inputs (default 1). */
  weight?: number;
  arbitrary: fc.Arbitrary<T>;
  /** Throws (or rejects) when the input breaks a property. */
  check(input: T): void | Promise<void>;
  /** `check` returns a promise (the parser is driven through streams or sockets). */
  async?: boolean;
}

export interface FuzzTarget {
  /** Short name, used in the table, FUZZ_ONLY and test names. */
  name: string;
  /** The public parse path it drives. */
  parser: string;
  /** Largest heap growth one input may cause, in bytes (default 64 MiB). */
  maxHeapGrowth?: number;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  properties: Array<FuzzProperty<any>>;
  /** Runs once before the properties (servers, fixtures); its result is given back to `teardown`. */
  setup?(): Promise<void>;
  teardown?(): Promise<void>;
}

export interface TargetStats {
  target: string;
  parser: string;
  inputs: number;
  crashes: number;
  hangs: number;
  /** Largest heap growth of one input (garbage included: an upper bound of what it allocated). */
  maxHeapGrowth: number;
  /** Heap still in use after the target, garbage collected, compared with before it. */
  retained: number | undefined;
  maxMs: number;
  /** Inputs that hit a known bug (known-bugs.ts), by id. */
  known: Record<string, number>;
  seed: number;
  seconds: number;
}

/** fast-check runs of one property, sized by weight. */
export function runsFor(target: FuzzTarget, property: FuzzProperty<unknown>, total: number): number {
  const sum = target.properties.reduce((n, p) => n + (p.weight ?? 1), 0);
  return Math.max(1, Math.round((total * (property.weight ?? 1)) / sum));
}

const gc = exposeGc();

function exposeGc(): (() => void) | undefined {
  try {
    setFlagsFromString('--expose-gc');
    return runInNewContext('gc') as () => void;
  } catch {
    return undefined;
  }
}

function heapUsed(): number {
  return getHeapStatistics().used_heap_size;
}

/** A failed property: the counterexample (shrunk), the seed and how to replay it. */
export class FuzzFailure extends Error {}

/** The meter of the input being checked, for `parsing`. */
let active: Meter | undefined;

/**
 * Runs the parser-only part of a check (no event log of the harness) and counts its heap growth,
 * measured while its result is still referenced, as the input's heap growth. Checks that never
 * call it are measured whole.
 */
export function parsing<T>(fn: () => T): T {
  const heap = heapUsed();
  const result = fn();
  active?.section(heapUsed() - heap);
  return result;
}

export async function parsingAsync<T>(fn: () => Promise<T>): Promise<T> {
  const heap = heapUsed();
  const result = await fn();
  active?.section(heapUsed() - heap);
  return result;
}

/** An input hit a known bug (known-bugs.ts): counted, not a failure. */
export function noteKnownBug(id: string): void {
  if (active) active.known.set(id, (active.known.get(id) ?? 0) + 1);
}

/**
 * The CPU time an input's own code takes: the main thread's (`process.threadCpuUsage`), less the
 * garbage collector's pauses on it (`v8.GCProfiler`). Not the process's: a full collection
 * costs what the whole heap costs — in a Jest worker, the heap every suite it ran before left —
 * not what the input does, and V8's helper threads add to it, more so on a loaded machine. In a
 * loaded CI run one ws-frame input (seed 20261207) took 2.3 s of process CPU that way; the same
 * input takes 43 ms alone. A parser that is slow on an input spends it in its own code (copies
 * and loops on the main thread); what it allocates is bounded separately (heap growth).
 */
export class InputClock {
  #thread: NodeJS.CpuUsage | undefined;
  #gc: GCProfiler | undefined;

  start(): void {
    this.#gc = new GCProfiler();
    this.#gc.start();
    this.#thread = process.threadCpuUsage();
  }

  /** Milliseconds of main-thread CPU since start(), the collector's pauses not counted; and those pauses. */
  stop(): { ms: number; gcMs: number } {
    const used = process.threadCpuUsage(this.#thread);
    const stats = this.#gc?.stop()?.statistics ?? [];
    let gcUs = 0;
    for (const e of stats) gcUs += e.cost;
    const cpuMs = (used.user + used.system) / 1000;
    return { ms: Math.max(0, cpuMs - gcUs / 1000), gcMs: gcUs / 1000 };
  }
}

/** Measures inputs, enforces the per-input bounds and counts. */
export class Meter {
  inputs = 0;
  readonly known = new Map<string, number>();
  maxMs = 0;
  maxHeap = 0;
  slow = 0;
  /** Largest growth of a `parsing` section of the current input; undefined: none ran. */
  #section: number | undefined;
  readonly #settings: FuzzSettings;
  readonly #maxHeap: number;
  readonly #watchdog: Watchdog;

  constructor(settings: FuzzSettings, maxHeap: number, watchdog: Watchdog) {
    this.#settings = settings;
    this.#maxHeap = maxHeap;
    this.#watchdog = watchdog;
  }

  section(grown: number): void {
    if (this.#section === undefined || grown > this.#section) this.#section = grown;
  }

  sync<T>(input: T, check: (input: T) => void): void {
    this.#before();
    const heap = heapUsed();
    const clock = new InputClock();
    clock.start();
    try {
      check(input);
    } finally {
      active = undefined;
    }
    this.#after(clock, heap);
  }

  async async<T>(input: T, check: (input: T) => void | Promise<void>): Promise<void> {
    this.#before();
    const heap = heapUsed();
    const clock = new InputClock();
    clock.start();
    try {
      await check(input);
    } finally {
      active = undefined;
    }
    this.#after(clock, heap);
  }

  #before(): void {
    this.#watchdog.beat(this.inputs);
    this.#section = undefined;
    active = this;
  }

  /**
   * The time an input took is the CPU time its own code spent on the main thread (InputClock), not
   * the wall clock (on a loaded machine a process that is merely not scheduled for seconds failed
   * an input that takes 250 ms, seed 20261207, ws-frame) nor the process's CPU (collections of the
   * whole heap). A parser that is slow on an input burns CPU; one stuck in a loop is the watchdog's.
   */
  #after(clock: InputClock, heap: number): void {
    const { ms } = clock.stop();
    const grown = this.#section ?? heapUsed() - heap;
    this.inputs++;
    if (ms > this.maxMs) this.maxMs = ms;
    if (grown > this.maxHeap) this.maxHeap = grown;
    if (ms > this.#settings.maxMsPerInput) {
      this.slow++;
      throw new Error(`one input took ${ms.toFixed(0)} ms of CPU, the collector's pauses not counted (limit FUZZ_MAX_MS=${this.#settings.maxMsPerInput})`);
    }
    if (grown > this.#maxHeap) throw new Error(`one input grew the heap by ${grown} bytes (limit ${this.#maxHeap})`);
  }
}

export function selected(settings: FuzzSettings, name: string): boolean {
  return settings.only === undefined || name.startsWith(settings.only) || settings.only.startsWith(`${name}/`);
}

/** Runs every property of `target`; throws a FuzzFailure (with replay instructions) on the first failure. */
export async function runTarget(target: FuzzTarget, settings: FuzzSettings): Promise<TargetStats> {
  const started = performance.now();
  const watchdog = startWatchdog(target.name, settings);
  const meter = new Meter(settings, target.maxHeapGrowth ?? 64 << 20, watchdog);
  gc?.();
  const heapBefore = heapUsed();
  let failure: FuzzFailure | undefined;
  await target.setup?.();
  try {
    for (const property of target.properties) {
      const id = `${target.name}/${property.name}`;
      if (!selected(settings, id)) continue;
      watchdog.property(id);
      const params: fc.Parameters<[unknown]> = {
        seed: settings.seed,
        numRuns: runsFor(target, property, settings.runs),
        ...(settings.path && settings.only === id ? { path: settings.path } : {}),
      };
      const details = property.async
        ? await fc.check(fc.asyncProperty(property.arbitrary, (input) => meter.async(input, property.check)), params)
        : fc.check(fc.property(property.arbitrary, (input) => meter.sync(input, property.check)), params);
      if (details.failed) {
        failure = new FuzzFailure(failureReport(id, details));
        break;
      }
    }
  } finally {
    watchdog.stop();
    await target.teardown?.();
  }
  gc?.();
  const stats: TargetStats = {
    target: target.name,
    parser: target.parser,
    inputs: meter.inputs,
    crashes: failure && meter.slow === 0 ? 1 : 0,
    hangs: meter.slow > 0 ? 1 : 0,
    maxHeapGrowth: meter.maxHeap,
    retained: gc ? heapUsed() - heapBefore : undefined,
    maxMs: meter.maxMs,
    known: Object.fromEntries(meter.known),
    seed: settings.seed,
    seconds: (performance.now() - started) / 1000,
  };
  if (settings.report) appendFileSync(settings.report, `${JSON.stringify(stats)}\n`);
  if (failure) throw failure;
  return stats;
}

/** Long inputs are cut in the report: the seed and path replay them exactly. */
const INSPECT = { depth: 8, maxArrayLength: 64, maxStringLength: 400, breakLength: 120 } as const;

function failureReport(id: string, details: fc.RunDetails<[unknown]>): string {
  const error = details.errorInstance;
  const coded = error && typeof error === 'object' && 'code' in error ? ` (code ${String((error as { code: unknown }).code)})` : '';
  return [
    `fuzz property ${id} failed after ${details.numRuns} inputs${coded}:`,
    `counterexample (shrunk ${details.numShrinks} times): ${inspect(details.counterexample, INSPECT)}`,
    '',
    `error: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`,
    '',
    `replay: FUZZ_SEED=${details.seed} FUZZ_ONLY="${id}" FUZZ_PATH="${details.counterexamplePath ?? ''}" make fuzz`,
  ].join('\n');
}

/** Human-readable bytes for the table. */
export function formatBytes(n: number | undefined): string {
  if (n === undefined) return 'n/a';
  const sign = n < 0 ? '-' : '';
  const a = Math.abs(n);
  if (a < 1024) return `${sign}${a} B`;
  if (a < 1 << 20) return `${sign}${(a / 1024).toFixed(1)} KiB`;
  return `${sign}${(a / (1 << 20)).toFixed(1)} MiB`;
}

/** The `make fuzz` table. */
export function formatTable(rows: readonly TargetStats[]): string {
  const header = ['parser', 'inputs', 'crashes', 'hangs', 'known bugs hit', 'max heap growth', 'retained', 'max CPU/input', 'seed', 'seconds'];
  const lines = rows.map((r) => [
    r.target, r.inputs.toLocaleString('en-US'), String(r.crashes), String(r.hangs),
    Object.entries(r.known).map(([id, n]) => `${id} ×${n}`).join(', ') || '0', formatBytes(r.maxHeapGrowth),
    formatBytes(r.retained), `${r.maxMs.toFixed(1)} ms`, String(r.seed), r.seconds.toFixed(1),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i]!.length)));
  const row = (cells: string[]): string => `| ${cells.map((c, i) => c.padEnd(widths[i]!)).join(' | ')} |`;
  return [row(header), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...lines.map(row)].join('\n');
}
