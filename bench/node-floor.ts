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
 *   node dist/bench/node-floor.js [--round-trips N]
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { fileURLToPath } from 'node:url';
import { renderTable } from './tunnel/report.js';
import { rtt } from './tunnel/rtt.js';
import { makePki, nodeArgs } from './tunnel/underpass.js';

type Mode = 'tcp' | 'tls' | 'tls-3';
const MODES: Mode[] = ['tcp', 'tls', 'tls-3'];

const HELP = `usage: node dist/bench/node-floor.js [--round-trips N]
  --round-trips N   timed round trips per mode (default 20000; 2000 warm-up first)`;

function fail(msg: string): never {
  process.stderr.write(`node-floor: ${msg}\n${HELP}\n`);
  process.exit(2);
}

/** The child: an echo server, its port on stdout. */
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
  server.listen(0, '127.0.0.1', () => process.stdout.write(`${(server.address() as net.AddressInfo).port}\n`));
  process.on('SIGTERM', () => process.exit(0));
}

async function measure(mode: Mode, certDir: string, warmup: number, roundTrips: number): Promise<string[]> {
  const child = spawn(process.execPath, [...nodeArgs(), fileURLToPath(import.meta.url), '--serve', mode === 'tcp' ? 'tcp' : 'tls', certDir], { stdio: ['ignore', 'pipe', 'inherit'] });
  try {
    const port = await new Promise<number>((resolve, reject) => {
      child.stdout.once('data', (d: Buffer) => resolve(Number(d.toString().trim())));
      child.once('exit', (code) => reject(new Error(`echo server exited (${code})`)));
    });
    const socket: net.Socket = mode === 'tcp'
      ? net.connect({ port, host: '127.0.0.1', noDelay: true })
      : tls.connect({ port, host: '127.0.0.1', ca: readFileSync(path.join(certDir, 'ca.crt')), servername: 'localhost' });
    await new Promise<void>((resolve, reject) => {
      socket.once(mode === 'tcp' ? 'connect' : 'secureConnect', resolve);
      socket.once('error', reject);
    });
    socket.setNoDelay(true);
    const parts = [Buffer.alloc(2, 0x82), Buffer.alloc(12, 0), Buffer.alloc(64, 0x61)];
    const res = await rtt({ port, roles: { server: child.pid! } }, { warmup, samples: roundTrips, socket, parts: mode === 'tls-3' ? parts : [Buffer.concat(parts)] });
    const perRt = (role: string): string => (res.cpuPerRoundTripUs[role] ?? 0).toFixed(1);
    const label = { tcp: 'TCP', tls: 'TLS, one buffer per write', 'tls-3': 'TLS, three buffers corked per write' }[mode];
    return [label, res.p50.toFixed(0), perRt('bench'), perRt('server')];
  } finally {
    child.kill('SIGTERM');
  }
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  if (argv[0] === '--serve') return serve(argv[1] as 'tcp' | 'tls', argv[2]!);
  let roundTrips = 20_000;
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--help' || argv[i] === '-h') {
      console.log(HELP);
      return;
    }
    if (argv[i] === '--round-trips') {
      roundTrips = Number(argv[++i]);
      if (!Number.isInteger(roundTrips) || roundTrips < 10 || roundTrips > 10_000_000) fail('--round-trips: a whole number from 10 to 10,000,000');
    } else fail(`unknown option ${argv[i]}`);
  }
  const dir = await mkdtemp(path.join(os.tmpdir(), 'node-floor-'));
  try {
    const pki = await makePki(dir);
    const rows: string[][] = [];
    for (const mode of MODES) rows.push(await measure(mode, pki.dir, Math.min(2_000, Math.ceil(roundTrips / 10)), roundTrips));
    process.stdout.write(`${renderTable(['78-byte echo (64 bytes and two frame headers), one connection', 'p50 µs', 'client CPU µs per round trip', 'server CPU µs per round trip'], rows)}\n`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  process.stderr.write(`node-floor: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
