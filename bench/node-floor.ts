/**
 * What one Node process costs per message, without any tunnel: a client in this
 * process and an echo server in a child (started with bin/underpass's Node
 * options), 64-byte round trips one after another over plain TCP, over TLS with
 * one buffer per write, and over TLS with the three buffers of one of our frames
 * (WebSocket header, yamux header, payload) corked into one write. Prints p50 and
 * the CPU time per round trip of each side — one read and one write per round
 * trip per process. Each of our worker and connector does two reads and two
 * writes per round trip (the application socket and the tunnel), so twice this
 * floor is what a Node process on our path costs per round trip before any
 * framing; compare with the RTT row's CPU per round trip in docs/benchmarks.md.
 *
 * Then the bare Node forwarders of bench/tunnel/bare-relay.ts (a one-process TCP
 * relay, and Underpass's two-process topology with nothing but framing over one
 * TLS connection) beside `ssh -L` and Underpass, alternating, each warmed up:
 * round-trip time (64-byte echoes) and connections per second (8 at a time), with
 * CPU per round trip and per connection of every process. What the bare `mux`
 * reaches is what any Node forwarder of this shape can reach on this machine.
 *
 *   node dist/bench/node-floor.js [--round-trips N] [--seconds S] [--rounds R]
 */
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { fileURLToPath } from 'node:url';
import { startApps } from './tunnel/apps.js';
import { startBareRelay } from './tunnel/bare-relay.js';
import { Child, inRoundOrder, log, valueFromLog, type Forward } from './tunnel/common.js';
import { connRate } from './tunnel/connrate.js';
import { renderTable } from './tunnel/report.js';
import { rtt } from './tunnel/rtt.js';
import { sshContender } from './tunnel/ssh.js';
import { makePki, nodeArgs, underpassContender } from './tunnel/underpass.js';

type Mode = 'tcp' | 'tls' | 'tls-3';
const MODES: Mode[] = ['tcp', 'tls', 'tls-3'];

const HELP = `usage: node dist/bench/node-floor.js [--round-trips N] [--seconds S] [--rounds R]
  --round-trips N   timed round trips per echo and per forwarder (default 20000; 2000 warm-up first)
  --seconds S       length of each connection-rate measurement (default 3; every forward is warmed up
                    for as long, at most 2 s)
  --rounds R        forwarder measurements per contender, order reversed every other round (default 2)`;

function fail(msg: string): never {
  process.stderr.write(`node-floor: ${msg}\n${HELP}\n`);
  process.exit(2);
}

/** The child: an echo server, its port on stdout as a JSON line. */
function serve(mode: 'tcp' | 'tls', certDir: string): void {
  const onSocket = (s: net.Socket): void => {
    s.setNoDelay(true);
    s.on('data', (d: Buffer) => s.write(d));
    s.on('error', () => undefined);
  };
  const server = mode === 'tcp' ? net.createServer(onSocket) : tls.createServer({
    cert: readFileSync(path.join(certDir, 'worker.crt')),
    key: readFileSync(path.join(certDir, 'worker.key')),
  }, onSocket);
  server.listen(0, '127.0.0.1', () => process.stdout.write(`${JSON.stringify({ echo: (server.address() as net.AddressInfo).port })}\n`));
  process.on('SIGTERM', () => process.exit(0));
}

async function measure(mode: Mode, certDir: string, warmup: number, roundTrips: number): Promise<string[]> {
  const child = new Child('echo server', process.execPath, [...nodeArgs(), fileURLToPath(import.meta.url), '--serve', mode === 'tcp' ? 'tcp' : 'tls', certDir], path.join(certDir, `echo-${mode}.log`));
  try {
    const port = await valueFromLog(path.join(certDir, `echo-${mode}.log`), 'the echo server', child, (line) => line.echo as number | undefined);
    const socket: net.Socket = mode === 'tcp'
      ? net.connect({ port, host: '127.0.0.1', noDelay: true })
      : tls.connect({ port, host: '127.0.0.1', ca: readFileSync(path.join(certDir, 'ca.crt')), servername: 'localhost' });
    await new Promise<void>((resolve, reject) => {
      socket.once(mode === 'tcp' ? 'connect' : 'secureConnect', resolve);
      socket.once('error', reject);
    });
    socket.setNoDelay(true);
    const parts = [Buffer.alloc(2, 0x82), Buffer.alloc(12, 0), Buffer.alloc(64, 0x61)];
    const res = await rtt({ port, roles: { server: child.pid } }, { warmup, samples: roundTrips, socket, parts: mode === 'tls-3' ? parts : [Buffer.concat(parts)] });
    const perRt = (role: string): string => (res.cpuPerRoundTripUs[role] ?? 0).toFixed(1);
    const label = { tcp: 'TCP', tls: 'TLS, one buffer per write', 'tls-3': 'TLS, three buffers corked per write' }[mode];
    return [label, res.p50.toFixed(0), perRt('bench'), perRt('server')];
  } finally {
    await child.stop();
  }
}

interface Forwarder {
  label: string;
  fwd: Forward;
}

const cpuList = (perRole: Record<string, number>): string => Object.entries(perRole)
  .filter(([role]) => role !== 'bench')
  .map(([role, us]) => `${role} ${us.toFixed(0)}`)
  .join(', ');

/** Bare Node forwarders beside ssh -L and Underpass: RTT and connection rate, alternating. */
async function forwarders(certDir: string, dir: string, o: { roundTrips: number; seconds: number; rounds: number }): Promise<string> {
  const cleanup: Array<() => Promise<void>> = [];
  try {
    const apps = await startApps(dir);
    cleanup.push(() => apps.stop());
    const list: Forwarder[] = [];
    const add = async (label: string, start: () => Promise<Forward>): Promise<void> => {
      const fwd = await start();
      cleanup.push(() => fwd.stop());
      list.push({ label, fwd });
    };
    const ssh = await sshContender(dir);
    if (typeof ssh === 'string') log(`skipping ssh -L: ${ssh}`);
    else {
      cleanup.push(() => ssh.close());
      await add('ssh -L', () => ssh.forward(apps.echo));
    }
    await add('bare Node TCP relay, one process', () => startBareRelay('tcp', apps.echo, certDir, dir, nodeArgs()));
    await add('bare Node mux over TLS, two processes', () => startBareRelay('mux', apps.echo, certDir, dir, nodeArgs()));
    const underpass = await underpassContender(dir);
    cleanup.push(() => underpass.close());
    await add('Underpass', () => underpass.forward(apps.echo));
    const warmup = Math.min(2_000, Math.ceil(o.roundTrips / 10));
    for (const { label, fwd } of list) {
      log(`${label}: warm-up`);
      await rtt(fwd, { warmup, samples: warmup });
      await connRate(fwd, { concurrency: 8, seconds: Math.min(2, o.seconds) });
    }
    const rows: string[][] = [];
    for (let round = 0; round < o.rounds; round++) {
      for (const { label, fwd } of inRoundOrder(list, round)) {
        const r = await rtt(fwd, { warmup, samples: o.roundTrips });
        const c = await connRate(fwd, { concurrency: 8, seconds: o.seconds });
        log(`${label}: RTT p50 ${r.p50.toFixed(0)} µs, ${c.perSecond.toFixed(0)} conn/s`);
        rows.push([label, String(round + 1), r.p50.toFixed(0), cpuList(r.cpuPerRoundTripUs), c.perSecond.toFixed(0), cpuList(c.cpuPerConnUs), c.errors ? `${c.errors} (${c.firstError})` : '0']);
      }
    }
    return renderTable(['forwarder', 'round', 'RTT p50 µs', 'CPU µs per round trip', 'conn/s (8 at a time)', 'CPU µs per connection', 'errors'], rows);
  } finally {
    for (const f of cleanup.reverse()) await f().catch(() => undefined);
  }
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  if (argv[0] === '--serve') return serve(argv[1] as 'tcp' | 'tls', argv[2]!);
  const o = { roundTrips: 20_000, seconds: 3, rounds: 2 };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--help' || argv[i] === '-h') {
      console.log(HELP);
      return;
    }
    if (argv[i] === '--round-trips') {
      o.roundTrips = Number(argv[++i]);
      if (!Number.isInteger(o.roundTrips) || o.roundTrips < 10 || o.roundTrips > 10_000_000) fail('--round-trips: a whole number from 10 to 10,000,000');
    } else if (argv[i] === '--seconds') {
      o.seconds = Number(argv[++i]);
      if (!(o.seconds > 0 && o.seconds <= 600)) fail('--seconds: a number of seconds from 0 to 600');
    } else if (argv[i] === '--rounds') {
      o.rounds = Number(argv[++i]);
      if (!Number.isInteger(o.rounds) || o.rounds < 1 || o.rounds > 20) fail('--rounds: a whole number from 1 to 20');
    } else fail(`unknown option ${argv[i]}`);
  }
  const dir = await mkdtemp(path.join(os.tmpdir(), 'node-floor-'));
  try {
    const pki = await makePki(dir);
    const rows: string[][] = [];
    for (const mode of MODES) rows.push(await measure(mode, pki.dir, Math.min(2_000, Math.ceil(o.roundTrips / 10)), o.roundTrips));
    process.stdout.write(`${renderTable(['78-byte echo (64 bytes and two frame headers), one connection', 'p50 µs', 'client CPU µs per round trip', 'server CPU µs per round trip'], rows)}\n\n`);
    process.stdout.write(`${await forwarders(pki.dir, dir, o)}\n`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  process.stderr.write(`node-floor: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
