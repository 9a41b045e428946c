/**
 * Bulk throughput through a forward, one way at a time: iperf3 (`-n`, `-R`,
 * `-P`; its control and data connections both go through the forward), or,
 * without iperf3 (--quick), a Node client against the bulk source/sink of
 * apps.ts. CPU of the forwarder's processes is sampled over the transfer.
 */
import { execFile } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import { Child, commandExists, freePort, listening, waitUntil, withCpu, type Forward } from './common.js';

export type BulkTool = 'iperf3' | 'node';

export interface BulkOptions {
  bytes: number;
  streams: number;
  /** false: client → target (upload); true: target → client (iperf3 -R). */
  reverse: boolean;
  tool: BulkTool;
}

export interface BulkResult {
  gbps: number;
  seconds: number;
  /** % of one core per role over the transfer (plus `bench`, this process, and `machine`). */
  cpu: Record<string, number>;
  /** CPU seconds the forwarder's processes spent per GiB carried. */
  cpuPerGiB: number;
  /** Their read/write system calls per MiB carried. */
  syscallsPerMiB: number;
}

/** An iperf3 server for the whole run (it serves one test at a time). */
export async function startIperfServer(dir: string): Promise<{ port: number; stop(): Promise<void> } | undefined> {
  const bin = commandExists('iperf3');
  if (!bin) return undefined;
  const port = await freePort();
  const child = new Child('iperf3 -s', bin, ['-s', '-B', '127.0.0.1', '-p', String(port)], path.join(dir, 'iperf3-server.log'));
  await waitUntil('iperf3 server', () => listening(port), 10_000, child);
  return { port, stop: () => child.stop() };
}

export async function bulk(fwd: Forward, o: BulkOptions): Promise<BulkResult> {
  const use = await withCpu(fwd.roles, () => (o.tool === 'iperf3' ? iperf(fwd.port, o) : nodeBulk(fwd.port, o)));
  return { gbps: use.result, seconds: use.seconds, cpu: use.cpu, cpuPerGiB: use.cpuSeconds / (o.bytes / 2 ** 30), syscallsPerMiB: use.syscalls / (o.bytes / 2 ** 20) };
}

function iperf(port: number, o: BulkOptions): Promise<number> {
  const args = ['-c', '127.0.0.1', '-p', String(port), '-n', String(o.bytes), '-P', String(o.streams), '-J', ...(o.reverse ? ['-R'] : [])];
  return new Promise((resolve, reject) => {
    execFile('iperf3', args, { timeout: 300_000, maxBuffer: 64 << 20 }, (err, stdout) => {
      let json: { error?: string; end?: { sum_received?: { bits_per_second?: number } } } | undefined;
      try {
        json = JSON.parse(stdout) as typeof json;
      } catch {
        /* reported below */
      }
      const bps = json?.end?.sum_received?.bits_per_second;
      if (json?.error || !bps) return reject(new Error(`iperf3 ${args.join(' ')}: ${json?.error ?? err?.message ?? 'no result'}`));
      resolve(bps / 1e9);
    });
  });
}

async function nodeBulk(port: number, o: BulkOptions): Promise<number> {
  const per = Math.floor(o.bytes / o.streams);
  const t0 = process.hrtime.bigint();
  await Promise.all(Array.from({ length: o.streams }, () => (o.reverse ? download(port, per) : upload(port, per))));
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  return (per * o.streams * 8) / seconds / 1e9;
}

const block = Buffer.alloc(256 * 1024, 0xa5);

function upload(port: number, size: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ port, host: '127.0.0.1', noDelay: true, allowHalfOpen: true });
    let left = size;
    const reply: Buffer[] = [];
    const pump = (): void => {
      while (left > 0) {
        const n = Math.min(left, block.length);
        left -= n;
        if (!s.write(n === block.length ? block : block.subarray(0, n))) return void s.once('drain', pump);
      }
      s.end();
    };
    s.once('connect', () => {
      s.write('U');
      pump();
    });
    s.on('data', (d: Buffer) => reply.push(d));
    s.on('error', reject);
    s.on('end', () => {
      const r = Buffer.concat(reply);
      s.destroy();
      if (r.length !== 8 || Number(r.readBigUInt64BE(0)) !== size) reject(new Error(`upload: the sink counted ${r.length === 8 ? r.readBigUInt64BE(0) : '?'} of ${size} bytes`));
      else resolve();
    });
  });
}

function download(port: number, size: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ port, host: '127.0.0.1', noDelay: true });
    let got = 0;
    s.once('connect', () => {
      const head = Buffer.alloc(9);
      head[0] = 0x44;
      head.writeBigUInt64BE(BigInt(size), 1);
      s.write(head);
    });
    s.on('data', (d: Buffer) => (got += d.length));
    s.on('error', reject);
    s.on('close', () => (got === size ? resolve() : reject(new Error(`download: received ${got} of ${size} bytes`))));
  });
}
