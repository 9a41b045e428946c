/**
 * End-to-end layout builder (chisel's {server, client, fileServer} + teardown):
 * certificates in a temp dir, real `underpass worker` / `underpass connector`
 * processes from bin/underpass, real TCP apps, and helpers to wait on them.
 * Requires `make build` (dist/) — `make test` does it.
 */
import { nodeFlagsOf } from '../../tunnel/node-flags.js';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import YAML from 'yaml';
import { createCA, issueConnectorCert, issueWorkerCert, loadCA, writePemFiles, type CertificateAuthority } from '../../tunnel/pki.js';

export const ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const BIN = path.join(ROOT, 'bin/underpass');
/** The Node flags bin/underpass runs with (its first line): processes start as the CLI starts them. */
export const NODE_FLAGS = nodeFlagsOf(BIN);

export async function tempDir(prefix = 'underpass-e2e-'): Promise<string> {
  return mkdtemp(path.join(os.tmpdir(), prefix));
}

export async function removeDir(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
}

/**
 * Ports freePort picks from: above the kernel's ephemeral range (Linux default 32768–60999), which
 * every port-0 listen and every outgoing connection on the machine draws from, and away from
 * test/env's ports (below that range). Falls back to the kernel's choice when there is no room.
 */
function pickRange(): [number, number] | undefined {
  let high = 60_999;
  try {
    high = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[1]);
  } catch {
    // not Linux: assume the default
  }
  return Number.isInteger(high) && 65_535 - high >= 1_000 ? [high + 1, 65_535] : undefined;
}

/**
 * Reservations shared by every process on the machine that uses this harness (other test files,
 * other checkouts): a file per port holding its owner's pid, created exclusively. A reservation
 * lasts as long as its process (a Jest worker runs many files); one whose owner is gone is stale,
 * taken over when met and swept once per process.
 */
const RESERVATIONS = path.join(os.tmpdir(), `underpass-test-ports-${process.getuid?.() ?? 0}`);
const reservedHere = new Set<number>();
let swept = false;

function reserve(port: number): boolean {
  if (!swept) {
    swept = true;
    sweepStale();
  }
  const file = path.join(RESERVATIONS, String(port));
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      writeFileSync(file, String(process.pid), { flag: 'wx' });
      reservedHere.add(port);
      return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
        mkdirSync(RESERVATIONS, { recursive: true });
        continue;
      }
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST' || attempt > 0) return false;
      let owner = NaN;
      try {
        owner = Number(readFileSync(file, 'utf8'));
      } catch {
        // removed meanwhile
      }
      if (owner === process.pid || alive(owner)) return false;
      rmSync(file, { force: true }); // stale: its owner is gone
    }
  }
  return false;
}

function alive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function sweepStale(): void {
  let names: string[] = [];
  try {
    names = readdirSync(RESERVATIONS);
  } catch {
    return; // none yet
  }
  for (const name of names) {
    const file = path.join(RESERVATIONS, name);
    try {
      if (!alive(Number(readFileSync(file, 'utf8')))) rmSync(file, { force: true });
    } catch {
      // removed meanwhile
    }
  }
}

/** Listens on `port` (0: any) and closes again; the port, or undefined if it is taken. */
async function probePort(host: string, port: number): Promise<number | undefined> {
  const s = net.createServer();
  try {
    await new Promise<void>((resolve, reject) => {
      s.once('error', reject);
      s.listen(port, host, () => resolve());
    });
  } catch {
    return undefined;
  }
  const got = (s.address() as net.AddressInfo).port;
  await new Promise((r) => s.close(r));
  return got;
}

/**
 * A TCP port that is free on `host` now, for a process the test starts to listen on a little
 * later (seconds, under load). Picked above the kernel's ephemeral range and reserved machine-wide
 * (see pickRange, reserve): a port the kernel had chosen (port 0) could be chosen again for
 * another listener before ours bound it — a worker's tunnel port equal to its mapping's port, or
 * another test's echo server answering on a connector's listener port — which failed a test now
 * and then under load.
 */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  const range = pickRange();
  for (let attempt = 0; attempt < 500; attempt++) {
    const candidate = range ? range[0] + Math.floor(Math.random() * (range[1] - range[0] + 1)) : 0;
    if (reservedHere.has(candidate)) continue;
    const port = await probePort(host, candidate);
    if (port === undefined || reservedHere.has(port) || !reserve(port)) continue;
    return port;
  }
  throw new Error(`no free port on ${host} after 500 attempts`);
}

export interface Pki {
  dir: string;
  ca: CertificateAuthority;
  connection: { namespace: string; name: string };
  /** Issues connector-NAME.crt/.key into dir. */
  connector(name: string, opts?: { notAfter?: Date; notBefore?: Date }): Promise<void>;
}

export async function makePki(dir: string, opts: { connection?: string; workerSans?: string[] } = {}): Promise<Pki> {
  const [namespace, name] = (opts.connection ?? 'team-a/dc1').split('/') as [string, string];
  const connection = { namespace, name };
  const caPem = await createCA({ connection });
  const ca = await loadCA(caPem.certPem, caPem.keyPem);
  const worker = await issueWorkerCert(ca, { sans: opts.workerSans ?? ['localhost', '127.0.0.1'] });
  await writePemFiles(dir, { 'ca.crt': caPem.certPem, 'ca.key': caPem.keyPem, 'worker.crt': worker.certPem, 'worker.key': worker.keyPem }, { force: true });
  return {
    dir,
    ca,
    connection,
    async connector(cname, o = {}) {
      const c = await issueConnectorCert(ca, { connector: cname, ...o });
      await writePemFiles(dir, { [`connector-${cname}.crt`]: c.certPem, [`connector-${cname}.key`]: c.keyPem }, { force: true });
    },
  };
}

/** A running underpass process with its audit lines (stdout) and logs (stderr). */
export class Proc {
  readonly child: ChildProcess;
  readonly audit: Array<Record<string, unknown>> = [];
  logs = '';
  /** Bytes the process wrote to stdout (audit lines) and stderr (logs). */
  stdoutBytes = 0;
  stderrBytes = 0;
  readonly exited: Promise<number | null>;

  constructor(args: string[], opts: { prefix?: string[] } = {}) {
    const argv = [...(opts.prefix ?? []), process.execPath, ...NODE_FLAGS, BIN, ...args];
    this.child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
    let pending = '';
    this.child.stdout!.on('data', (d: Buffer) => {
      this.stdoutBytes += d.length;
      pending += d.toString();
      let i;
      while ((i = pending.indexOf('\n')) >= 0) {
        const line = pending.slice(0, i);
        pending = pending.slice(i + 1);
        try {
          this.audit.push(JSON.parse(line) as Record<string, unknown>);
        } catch {
          this.logs += `${line}\n`;
        }
      }
    });
    this.child.stderr!.on('data', (d: Buffer) => {
      this.stderrBytes += d.length;
      this.logs += d.toString();
    });
    this.exited = new Promise((resolve) => this.child.once('exit', (code) => resolve(code)));
  }

  get alive(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  streams(filter: Record<string, unknown> = {}): Array<Record<string, unknown>> {
    return this.audit.filter((a) => a.event === 'stream' && Object.entries(filter).every(([k, v]) => a[k] === v));
  }

  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> {
    if (this.alive) this.child.kill(signal);
    return this.exited;
  }
}

export interface WorkerSetup {
  proc: Proc;
  tunnelPort: number;
  adminPort: number;
  url: string;
  config: Record<string, unknown>;
}

export async function startWorker(dir: string, overrides: Record<string, unknown> = {}, file = 'worker.yaml'): Promise<WorkerSetup> {
  const tunnelPort = (overrides.tunnelPort as number | undefined) ?? (await freePort());
  const adminPort = await freePort();
  const { tunnelPort: _t, listenHost, ...rest } = overrides as { tunnelPort?: number; listenHost?: string };
  const config = {
    connection: 'team-a/dc1',
    listen: `${listenHost ?? '127.0.0.1'}:${tunnelPort}`,
    tls: { cert: 'worker.crt', key: 'worker.key', ca: 'ca.crt' },
    admin: `127.0.0.1:${adminPort}`,
    keepalive: { interval: '1s', timeout: '3s' },
    drainTimeout: '5s',
    mappings: [],
    ...rest,
  };
  await writeFile(path.join(dir, file), YAML.stringify(config));
  const proc = new Proc(['worker', '--config', path.join(dir, file)]);
  await waitHttp(`http://127.0.0.1:${adminPort}/healthz`, proc);
  return { proc, tunnelPort, adminPort, url: `wss://${listenHost ?? '127.0.0.1'}:${tunnelPort}`, config };
}

export interface ConnectorSetup {
  proc: Proc;
  adminPort: number;
  config: Record<string, unknown>;
}

export async function startConnector(
  dir: string,
  name: string,
  workers: string | string[],
  overrides: Record<string, unknown> = {},
  opts: { prefix?: string[]; waitReady?: boolean; adminHost?: string } = {},
): Promise<ConnectorSetup> {
  const adminPort = await freePort();
  const config = {
    name,
    worker: workers,
    tls: { cert: `connector-${name}.crt`, key: `connector-${name}.key`, ca: 'ca.crt' },
    admin: `${opts.adminHost ?? '127.0.0.1'}:${adminPort}`,
    keepalive: { interval: '1s', timeout: '3s' },
    reconnect: { initialDelay: '100ms', maxDelay: '1s' },
    drainTimeout: '5s',
    ...overrides,
  };
  const file = path.join(dir, `connector-${name}.yaml`);
  await writeFile(file, YAML.stringify(config));
  const proc = new Proc(['connector', '--config', file], opts.prefix ? { prefix: opts.prefix } : {});
  if (opts.waitReady !== false) await waitHttp(`http://${opts.adminHost ?? '127.0.0.1'}:${adminPort}/readyz`, proc, 20_000, opts.prefix);
  return { proc, adminPort, config };
}

/** Polls until the URL answers 2xx (fails early if the process died). */
export async function waitHttp(url: string, proc?: Proc, timeoutMs = 20_000, prefix?: string[]): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() < deadline) {
    if (proc && !proc.alive) throw new Error(`process exited (${proc.child.exitCode}) while waiting for ${url}:\n${proc.logs}`);
    try {
      if (prefix) {
        last = await curlIn(prefix, url);
        if (last.startsWith('200')) return;
      } else {
        const res = await fetch(url);
        last = `${res.status} ${(await res.text()).trim()}`;
        if (res.ok) return;
      }
    } catch (err) {
      last = (err as Error).message;
    }
    await sleep(50);
  }
  throw new Error(`timed out waiting for ${url}: ${last}\n${proc?.logs ?? ''}`);
}

async function curlIn(prefix: string[], url: string): Promise<string> {
  const p = spawn(prefix[0]!, [...prefix.slice(1), process.execPath, '-e', `fetch(${JSON.stringify(url)}).then(async r => console.log(r.status + ' ' + (await r.text()).trim()), e => console.log('ERR ' + e.message))`], { stdio: ['ignore', 'pipe', 'ignore'] });
  let out = '';
  p.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  await once(p, 'exit');
  return out.trim();
}

export async function getJson<T = Record<string, unknown>>(url: string): Promise<T> {
  const res = await fetch(url);
  return (await res.json()) as T;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

export async function waitFor<T>(what: string, check: () => T | undefined | false | Promise<T | undefined | false>, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(50);
  }
}

export interface App {
  server: net.Server;
  port: number;
  close(): Promise<void>;
}

/** TCP echo server (half-close aware: ends after the client ends). */
export async function echoServer(host = '127.0.0.1'): Promise<App> {
  return tcpServer((socket) => {
    socket.on('error', () => undefined);
    socket.pipe(socket);
  }, host);
}

export async function tcpServer(onSocket: (s: net.Socket) => void, host = '127.0.0.1', port = 0): Promise<App> {
  const server = net.createServer({ allowHalfOpen: true }, onSocket);
  const sockets = new Set<net.Socket>();
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  server.listen(port, host);
  await once(server, 'listening');
  return {
    server,
    port: (server.address() as net.AddressInfo).port,
    close: () => new Promise<void>((resolve) => {
      for (const s of sockets) s.destroy();
      server.close(() => resolve());
    }),
  };
}

export interface ExchangeResult {
  received: Buffer;
  error?: Error;
  /** The client's port, once connected (to find the connection in audit lines: their `client`). */
  localPort?: number;
}

/** Connects, writes `data`, half-closes, reads until the server closes. */
export function exchange(port: number, data: Buffer | string, host = '127.0.0.1', timeoutMs = 10_000): Promise<ExchangeResult> {
  return new Promise((resolve) => {
    const socket = net.connect({ port, host, allowHalfOpen: true });
    const parts: Buffer[] = [];
    let error: Error | undefined;
    let localPort: number | undefined;
    socket.once('connect', () => (localPort = socket.localPort));
    const timer = setTimeout(() => {
      error ??= new Error(`timed out after ${timeoutMs} ms`);
      socket.destroy();
    }, timeoutMs);
    socket.on('data', (d: Buffer) => parts.push(d));
    socket.on('error', (err) => (error ??= err));
    socket.on('close', () => {
      clearTimeout(timer);
      resolve({ received: Buffer.concat(parts), ...(error ? { error } : {}), ...(localPort !== undefined ? { localPort } : {}) });
    });
    socket.end(data);
  });
}

/** Streams `size` pseudo-random bytes to the port and hashes what comes back. */
export function bulkEcho(port: number, size: number, host = '127.0.0.1'): Promise<{ sent: string; received: string; receivedBytes: number; error?: Error }> {
  return new Promise((resolve) => {
    const socket = net.connect({ port, host, allowHalfOpen: true });
    const sentHash = createHash('sha256');
    const recvHash = createHash('sha256');
    let receivedBytes = 0;
    let error: Error | undefined;
    const block = randomBytes(1 << 20);
    let offset = 0;
    const pump = (): void => {
      while (offset < size) {
        const n = Math.min(block.length, size - offset);
        const chunk = block.subarray(0, n);
        // Vary the content per block so misordering would change the hash.
        chunk.writeUInt32BE(offset / block.length, 0);
        sentHash.update(chunk);
        offset += n;
        if (!socket.write(Buffer.from(chunk))) return void socket.once('drain', pump);
      }
      socket.end();
    };
    socket.on('connect', pump);
    socket.on('data', (d: Buffer) => {
      receivedBytes += d.length;
      recvHash.update(d);
    });
    socket.on('error', (err) => (error ??= err));
    socket.on('close', () => resolve({ sent: sentHash.digest('hex'), received: recvHash.digest('hex'), receivedBytes, ...(error ? { error } : {}) }));
  });
}

/** How a plain TCP connect attempt ends: connected, refused (RST), timeout (dropped), or another error code. */
export function tcpProbe(host: string, port: number, timeoutMs = 1_500): Promise<'connected' | 'refused' | 'timeout' | string> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    const timer = setTimeout(() => finish('timeout'), timeoutMs);
    const finish = (outcome: string): void => {
      clearTimeout(timer);
      socket.destroy();
      resolve(outcome);
    };
    socket.once('connect', () => finish('connected'));
    socket.once('error', (err: NodeJS.ErrnoException) => finish(err.code === 'ECONNREFUSED' ? 'refused' : (err.code ?? err.message)));
  });
}

/** One sample of a Prometheus metric from an admin endpoint (sum over series matching `labels`). */
export async function metricValue(adminPort: number, name: string, labels: Record<string, string> = {}, host = '127.0.0.1'): Promise<number> {
  const text = await (await fetch(`http://${host}:${adminPort}/metrics`)).text();
  let sum = 0;
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (!m || m[1] !== name) continue;
    if (Object.entries(labels).every(([k, v]) => (m[2] ?? '').includes(`${k}="${v}"`))) sum += Number(m[3]);
  }
  return sum;
}
