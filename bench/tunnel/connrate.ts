/**
 * New connections per second: `concurrency` loops, each connecting through the
 * forward, writing 64 bytes, waiting for the 64-byte echo, half-closing, and
 * starting the next connection at once, for `seconds`.
 */
import net from 'node:net';
import { sleep, withCpu, type Forward } from './common.js';

export interface ConnRateResult {
  perSecond: number;
  completed: number;
  errors: number;
  firstError?: string;
  cpu: Record<string, number>;
  /** CPU time per completed connection by process (µs), `machine` excluded. */
  cpuPerConnUs: Record<string, number>;
}

/** `extraRoles` (e.g. the target app) are measured for CPU too, beside the forwarder's processes. */
export async function connRate(fwd: Forward, o: { concurrency: number; seconds: number; extraRoles?: Record<string, number> }): Promise<ConnRateResult> {
  const payload = Buffer.alloc(64, 0x62);
  let completed = 0;
  let errors = 0;
  let firstError: string | undefined;
  const open = new Set<net.Socket>();
  const deadline = Date.now() + o.seconds * 1000;

  const one = (): Promise<void> => new Promise((resolve) => {
    const s = net.connect({ port: fwd.port, host: '127.0.0.1', noDelay: true, allowHalfOpen: true });
    open.add(s);
    let got = 0;
    let settled = false;
    const finish = (err?: Error): void => {
      if (settled) return;
      settled = true;
      if (err) {
        errors++;
        firstError ??= err.message;
        s.destroy();
      } else {
        completed++;
        s.end();
      }
      resolve();
    };
    s.once('connect', () => s.write(payload));
    s.on('data', (d: Buffer) => {
      got += d.length;
      if (got >= 64) finish();
    });
    s.on('error', (err) => finish(err));
    s.on('end', () => (got < 64 ? finish(new Error(`closed after ${got} of 64 bytes`)) : undefined));
    s.on('close', () => {
      open.delete(s);
      finish(new Error('closed before the echo'));
    });
  });

  const { cpu, seconds } = await withCpu({ ...fwd.roles, ...o.extraRoles }, async () => {
    await Promise.all(Array.from({ length: o.concurrency }, async () => {
      while (Date.now() < deadline) {
        await one();
        if (errors > 1000) break;
      }
    }));
  });
  // Let the closes drain before the next measurement.
  for (let i = 0; i < 100 && open.size > 0; i++) await sleep(50);
  for (const s of open) s.destroy();
  const cpuPerConnUs: Record<string, number> = {};
  for (const [role, pct] of Object.entries(cpu)) if (role !== 'machine') cpuPerConnUs[role] = (pct / 100) * seconds * 1e6 / Math.max(1, completed);
  return { perSecond: completed / seconds, completed, errors, ...(firstError ? { firstError } : {}), cpu, cpuPerConnUs };
}
