/**
 * Connection rate against concurrency: Underpass, `ssh -L` and the bare Node mux of
 * bench/tunnel/bare-relay.ts (the floor of our design) in the same run,
 * each forward warmed up, then for every concurrency the same loop as the
 * `connrate` row of tunnel-bench (connect → 64-byte round trip → half-close),
 * alternating the contenders. Prints conn/s, the time one connection takes
 * (concurrency ÷ rate), the machine's CPU and the CPU time per connection of
 * every process on the path. Explains the connection-rate row: at 8 at a time
 * neither forwarder uses both cores, so the rate is set by how long each
 * process takes per connection (service time and queueing), not by idle CPU.
 *
 *   node dist/bench/connrate-sweep.js [--concurrency 1,2,8,16] [--seconds 3]
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startApps } from './tunnel/apps.js';
import { bareMuxContender } from './tunnel/bare-relay.js';
import type { Contender, Forward } from './tunnel/common.js';
import { inRoundOrder, log } from './tunnel/common.js';
import { connRate } from './tunnel/connrate.js';
import { renderTable } from './tunnel/report.js';
import { sshContender } from './tunnel/ssh.js';
import { underpassContender } from './tunnel/underpass.js';

const HELP = `usage: node dist/bench/connrate-sweep.js [--concurrency 1,2,8,16] [--seconds 3]
  --concurrency a,b   connections in flight at once, one measurement each (default 1,2,8,16)
  --seconds N         length of each measurement (default 3; 2 s of warm-up come first)`;

function fail(msg: string): never {
  process.stderr.write(`connrate-sweep: ${msg}\n${HELP}\n`);
  process.exit(2);
}

function parse(argv: string[]): { concurrency: number[]; seconds: number } {
  const o = { concurrency: [1, 2, 8, 16], seconds: 3 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--help' || a === '-h') {
      console.log(HELP);
      process.exit(0);
    } else if (a === '--concurrency') {
      o.concurrency = (argv[++i] ?? '').split(',').map(Number);
      if (o.concurrency.length === 0 || o.concurrency.some((n) => !Number.isInteger(n) || n < 1 || n > 256)) fail('--concurrency: whole numbers from 1 to 256, comma-separated');
    } else if (a === '--seconds') {
      o.seconds = Number(argv[++i]);
      if (!(o.seconds > 0 && o.seconds <= 600)) fail('--seconds: a number of seconds from 0 to 600');
    } else fail(`unknown option ${a}`);
  }
  return o;
}

async function main(): Promise<void> {
  const o = parse(process.argv.slice(2));
  const dir = mkdtempSync(path.join(os.tmpdir(), 'connrate-sweep-'));
  const cleanup: Array<() => Promise<void>> = [];
  try {
    const apps = await startApps(dir);
    cleanup.push(() => apps.stop());
    const contenders: Contender[] = [];
    const ssh = await sshContender(dir);
    if (typeof ssh === 'string') log(`skipping ssh -L: ${ssh}`);
    else contenders.push(ssh);
    contenders.push(await bareMuxContender(dir), await underpassContender(dir));
    const forwards: Array<{ c: Contender; f: Forward }> = [];
    for (const c of contenders) {
      cleanup.push(() => c.close());
      const f = await c.forward(apps.echo);
      cleanup.push(() => f.stop());
      log(`${c.label}: warm-up`);
      await connRate(f, { concurrency: 8, seconds: 2 });
      forwards.push({ c, f });
    }
    const rows: string[][] = [];
    for (const concurrency of o.concurrency) {
      for (const { c, f } of inRoundOrder(forwards, concurrency)) {
        const r = await connRate(f, { concurrency, seconds: o.seconds, extraRoles: { 'target app': apps.pid } });
        const per = Object.entries(r.cpuPerConnUs).map(([role, us]) => `${role} ${us.toFixed(0)}`).join(', ');
        log(`${c.label}, ${concurrency} at a time: ${r.perSecond.toFixed(0)} conn/s; µs CPU per connection: ${per}`);
        rows.push([c.label, String(concurrency), r.perSecond.toFixed(0), ((concurrency / r.perSecond) * 1000).toFixed(2), `${r.cpu.machine?.toFixed(0)}%`, per, r.errors ? `${r.errors} (${r.firstError})` : '0']);
      }
    }
    process.stdout.write(`${renderTable(['contender', 'at a time', 'conn/s', 'ms per connection', `machine CPU (of ${os.availableParallelism() * 100}%)`, 'CPU µs per connection', 'errors'], rows)}\n`);
  } finally {
    for (const f of cleanup.reverse()) await f().catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  process.stderr.write(`connrate-sweep: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
