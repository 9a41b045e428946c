/**
 * Round trips on one forward per contender, round after round, with each forwarding process's
 * CPU per round trip split into its main thread and V8's helper threads (the optimizing
 * compilers, parallel GC). Shows what a fresh Node process spends compiling its message path
 * before it reaches its steady state — why `make bench` warms the RTT row up for 5 s — and the
 * steady state itself. Same loop as the `rtt` row of tunnel-bench (64 bytes out, all 64 back).
 * To compare two builds, run it in each build's checkout, alternating.
 *
 *   node dist/bench/rtt-threads.js [--contenders underpass,ssh,node-mux] [--rounds 5] [--samples 20000] [--warmup-seconds 0]
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startApps } from './tunnel/apps.js';
import { bareMuxContender } from './tunnel/bare-relay.js';
import type { Contender, Forward } from './tunnel/common.js';
import { log } from './tunnel/common.js';
import { renderTable } from './tunnel/report.js';
import { rtt } from './tunnel/rtt.js';
import { sshContender } from './tunnel/ssh.js';
import { underpassContender } from './tunnel/underpass.js';

const KINDS = ['underpass', 'ssh', 'node-mux'] as const;
type Kind = (typeof KINDS)[number];

const HELP = `usage: node dist/bench/rtt-threads.js [options]
  --contenders a,b      some of ${KINDS.join(', ')} (default: all)
  --rounds N            rounds of round trips on the same forward (default 5)
  --samples N           timed round trips per round (default 20000; 1,000 untimed ones come first)
  --warmup-seconds S    untimed round trips before the first round (default 0: the first rounds show the compiling)`;

function fail(msg: string): never {
  process.stderr.write(`rtt-threads: ${msg}\n${HELP}\n`);
  process.exit(2);
}

function parse(argv: string[]): { contenders: Kind[]; rounds: number; samples: number; warmupSeconds: number } {
  const o = { contenders: [...KINDS] as Kind[], rounds: 5, samples: 20_000, warmupSeconds: 0 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const num = (lo: number, hi: number): number => {
      const n = Number(argv[++i]);
      if (!(n >= lo && n <= hi)) fail(`${a}: a number from ${lo} to ${hi}`);
      return n;
    };
    if (a === '--help' || a === '-h') {
      console.log(HELP);
      process.exit(0);
    } else if (a === '--contenders') {
      o.contenders = (argv[++i] ?? '').split(',') as Kind[];
      if (o.contenders.some((c) => !KINDS.includes(c))) fail(`--contenders: some of ${KINDS.join(', ')}`);
    } else if (a === '--rounds') o.rounds = Math.round(num(1, 100));
    else if (a === '--samples') o.samples = Math.round(num(100, 10_000_000));
    else if (a === '--warmup-seconds') o.warmupSeconds = num(0, 600);
    else fail(`unknown option ${a}`);
  }
  return o;
}

/** CPU ticks (utime + stime) of a process's threads: V8's helper threads ("V8Worker", "V8 …") apart from the rest. */
export function threadTicks(pid: number): { main: number; v8: number } {
  const out = { main: 0, v8: 0 };
  for (const t of readdirSync(`/proc/${pid}/task`)) {
    let stat: string;
    try {
      stat = readFileSync(`/proc/${pid}/task/${t}/stat`, 'utf8');
    } catch {
      continue; // the thread ended
    }
    const comm = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const ticks = Number(fields[11]) + Number(fields[12]);
    if (comm.startsWith('V8')) out.v8 += ticks;
    else out.main += ticks;
  }
  return out;
}

async function contender(kind: Kind, dir: string): Promise<Contender | undefined> {
  if (kind === 'underpass') return underpassContender(dir);
  if (kind === 'node-mux') return bareMuxContender(dir);
  const ssh = await sshContender(dir);
  if (typeof ssh !== 'string') return ssh;
  log(`skipping ssh -L: ${ssh}`);
  return undefined;
}

async function main(): Promise<void> {
  const o = parse(process.argv.slice(2));
  const dir = mkdtempSync(path.join(os.tmpdir(), 'rtt-threads-'));
  const cleanup: Array<() => Promise<void>> = [];
  const hz = 100; // USER_HZ: /proc ticks per second
  try {
    const apps = await startApps(dir);
    cleanup.push(() => apps.stop());
    const rows: string[][] = [];
    for (const kind of o.contenders) {
      const c = await contender(kind, dir);
      if (!c) continue;
      cleanup.push(() => c.close());
      const f: Forward = await c.forward(apps.echo);
      try {
        if (o.warmupSeconds > 0) await rtt(f, { warmup: 0, samples: 1, minSeconds: o.warmupSeconds });
        for (let round = 1; round <= o.rounds; round++) {
          const before = Object.entries(f.roles).map(([role, pid]) => [role, pid, threadTicks(pid)] as const);
          const r = await rtt(f, { warmup: 1_000, samples: o.samples });
          const n = 1_000 + r.samples;
          const per = before.map(([role, pid, b]) => {
            const a = threadTicks(pid);
            const us = (ticks: number): string => ((ticks * 1e6) / hz / n).toFixed(0);
            return `${role} ${us(a.main - b.main)} + ${us(a.v8 - b.v8)}`;
          }).join(', ');
          log(`${c.label}, round ${round}: p50 ${r.p50.toFixed(0)} µs, p99 ${r.p99.toFixed(0)} µs; CPU µs per round trip (main + V8 threads): ${per}`);
          rows.push([c.label, String(round), r.p50.toFixed(0), r.p99.toFixed(0), per]);
        }
      } finally {
        await f.stop();
      }
    }
    process.stdout.write(`${renderTable(['contender', 'round', 'p50 µs', 'p99 µs', 'CPU µs per round trip: main thread + V8 helper threads (root process of each role)'], rows)}\n`);
  } finally {
    for (const f of cleanup.reverse()) await f().catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  process.stderr.write(`rtt-threads: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
