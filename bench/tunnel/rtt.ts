/**
 * Round-trip time: one connection through the forward to the echo server,
 * 64 bytes written, the next 64 written only after all 64 came back.
 * Warm-up round trips first, then the timed samples (p50/p99 in µs).
 */
import net from 'node:net';
import { percentile, withCpu, type Forward } from './common.js';

export interface RttResult {
  p50: number;
  p99: number;
  samples: number;
  cpu: Record<string, number>;
  /** CPU time per round trip by role, `bench` (this process) included (µs; warm-up round trips included in both). */
  cpuPerRoundTripUs: Record<string, number>;
}

export interface RttOptions {
  warmup: number;
  samples: number;
  size?: number;
  /** A connected socket to use instead of a TCP connection to `fwd.port` (e.g. TLS); destroyed afterwards. */
  socket?: net.Socket;
  /** The message as several buffers, written corked (default: one buffer of `size` bytes). */
  parts?: Buffer[];
  /** Go on past `samples` round trips until this many seconds have passed (an untimed warm-up; every round trip is kept). */
  minSeconds?: number;
}

export async function rtt(fwd: Pick<Forward, 'port' | 'roles'>, o: RttOptions): Promise<RttResult> {
  const parts = o.parts ?? [Buffer.alloc(o.size ?? 64, 0x61)];
  const size = parts.reduce((n, p) => n + p.length, 0);
  const socket = o.socket ?? net.connect({ port: fwd.port, host: '127.0.0.1', noDelay: true });
  if (!o.socket) {
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
  }
  const send = parts.length === 1 ? (): void => void socket.write(parts[0]) : (): void => {
    socket.cork();
    for (const p of parts) socket.write(p);
    socket.uncork();
  };
  const times: number[] = [];
  const until = o.minSeconds ? process.hrtime.bigint() + BigInt(Math.round(o.minSeconds * 1e9)) : 0n;
  let i = -o.warmup;
  let got = 0;
  let t0 = 0n;
  const done = new Promise<void>((resolve, reject) => {
    socket.on('error', reject);
    socket.on('close', () => reject(new Error(`the connection closed after ${i + o.warmup} round trips`)));
    socket.on('data', (d: Buffer) => {
      got += d.length;
      if (got < size) return;
      if (got > size) return reject(new Error(`echo returned ${got} bytes for ${size}`));
      const t = process.hrtime.bigint();
      if (i >= 0) times.push(Number(t - t0) / 1e3);
      i++;
      if (i >= o.samples && t >= until) return resolve();
      got = 0;
      t0 = process.hrtime.bigint();
      send();
    });
  });
  const { cpu, seconds } = await withCpu(fwd.roles, async () => {
    t0 = process.hrtime.bigint();
    send();
    await done;
  });
  socket.removeAllListeners('close');
  socket.destroy();
  const sorted = times.sort((a, b) => a - b);
  const cpuPerRoundTripUs: Record<string, number> = {};
  for (const role of [...Object.keys(fwd.roles), 'bench']) cpuPerRoundTripUs[role] = ((cpu[role] ?? 0) / 100) * seconds * 1e6 / (o.warmup + sorted.length);
  return { p50: percentile(sorted, 50), p99: percentile(sorted, 99), samples: sorted.length, cpu, cpuPerRoundTripUs };
}
