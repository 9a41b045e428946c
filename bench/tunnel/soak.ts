/**
 * Soak: steady load through one forward for a long time while the RSS of its
 * processes is sampled. Load: `echoConnections` connections each echoing
 * 16 KiB messages back to back, plus `newPerSecond` new connections per second,
 * each carrying one 64-byte round trip.
 *
 * Steady state starts after the warm-up (a third of the soak): about 110 s in,
 * V8's memory reducer shrinks both heaps by ~40 MiB each, and RSS then takes
 * another minute or so to grow back to its working size, so an earlier "start"
 * measures that dip, not a leak. "start" is the mean of the first tenth of the
 * steady samples (at least three), "end" the mean of the last tenth: RSS swings
 * by several % between GC cycles, and one cycle more or less must not decide
 * the verdict. "trend" is a least-squares line through the steady samples,
 * extrapolated over the whole soak, as a second view of the same question.
 */
import net from 'node:net';
import { log, processTree, rssByRole, sleep, sum, type Forward } from './common.js';

export interface SoakOptions {
  seconds: number;
  intervalSeconds: number;
  warmupSeconds: number;
  echoConnections: number;
  messageBytes: number;
  newPerSecond: number;
}

export interface SoakResult {
  seconds: number;
  baseline: number;
  start: number;
  end: number;
  max: number;
  growthPct: number;
  /** Least-squares slope through the steady samples x soak duration, in % of their mean. */
  trendPct: number;
  warmupSeconds: number;
  samples: Array<{ t: number; rss: number }>;
  messages: number;
  connections: number;
  errors: number;
  firstError?: string;
}

export async function soak(fwd: Forward, o: SoakOptions): Promise<SoakResult> {
  const total = (): number => sum(Object.values(rssByRole(fwd.roles)));
  const baseline = total();
  let stopping = false;
  let messages = 0;
  let connections = 0;
  let errors = 0;
  let firstError: string | undefined;
  const fail = (err: Error): void => {
    errors++;
    firstError ??= err.message;
  };

  const message = Buffer.alloc(o.messageBytes, 0x63);
  const echoLoop = async (): Promise<void> => {
    while (!stopping) {
      const s = net.connect({ port: fwd.port, host: '127.0.0.1', noDelay: true });
      await new Promise<void>((resolve) => {
        let got = 0;
        s.on('connect', () => s.write(message));
        s.on('data', (d: Buffer) => {
          got += d.length;
          while (got >= message.length) {
            got -= message.length;
            messages++;
            if (stopping) return void s.end();
            s.write(message);
          }
        });
        s.on('error', (err) => fail(err));
        s.on('close', () => resolve());
      });
      if (!stopping) await sleep(100); // a dropped connection is replaced, not spun on
    }
  };
  const oneConnection = (): void => {
    const s = net.connect({ port: fwd.port, host: '127.0.0.1', noDelay: true, allowHalfOpen: true });
    let got = 0;
    s.on('connect', () => s.write(message.subarray(0, 64)));
    s.on('data', (d: Buffer) => {
      got += d.length;
      if (got >= 64) {
        connections++;
        s.end();
      }
    });
    s.on('error', (err) => fail(err));
    s.setTimeout(10_000, () => {
      fail(new Error('a new connection got no echo within 10 s'));
      s.destroy();
    });
  };

  const echoes = Array.from({ length: o.echoConnections }, () => echoLoop());
  const opener = setInterval(oneConnection, 1000 / o.newPerSecond);
  const samples: SoakResult['samples'] = [];
  const t0 = Date.now();
  let nextLog = 60;
  while (Date.now() - t0 < o.seconds * 1000) {
    await sleep(Math.min(o.intervalSeconds * 1000, o.seconds * 1000 - (Date.now() - t0)));
    const t = (Date.now() - t0) / 1000;
    const dead = Object.entries(fwd.roles).filter(([, pid]) => processTree(pid).length === 0).map(([role]) => role);
    if (dead.length) {
      clearInterval(opener);
      stopping = true;
      throw new Error(`soak: ${dead.join(' and ')} exited after ${t.toFixed(0)} s (${messages} messages, ${connections} connections, ${errors} errors so far)`);
    }
    samples.push({ t, rss: total() });
    if (t >= nextLog) {
      log(`soak: ${t.toFixed(0)} s, RSS ${(samples.at(-1)!.rss / 2 ** 20).toFixed(1)} MiB, ${messages} messages, ${connections} connections, ${errors} errors`);
      nextLog += 60;
    }
  }
  clearInterval(opener);
  stopping = true;
  await Promise.race([Promise.all(echoes), sleep(5_000)]);

  const steady = samples.filter((s) => s.t >= o.warmupSeconds);
  const use = steady.length >= 2 ? steady : samples;
  const k = Math.max(1, Math.min(Math.max(3, Math.floor(use.length / 10)), Math.floor(use.length / 2)));
  const mean = (xs: typeof samples): number => sum(xs.map((x) => x.rss)) / xs.length;
  const start = mean(use.slice(0, k));
  const end = mean(use.slice(-k));
  return {
    seconds: o.seconds,
    baseline,
    start,
    end,
    max: Math.max(...samples.map((s) => s.rss)),
    growthPct: (100 * (end - start)) / start,
    trendPct: trend(use, o.seconds),
    warmupSeconds: o.warmupSeconds,
    samples,
    messages,
    connections,
    errors,
    ...(firstError ? { firstError } : {}),
  };
}

function trend(xs: Array<{ t: number; rss: number }>, seconds: number): number {
  if (xs.length < 2) return 0;
  const mt = sum(xs.map((x) => x.t)) / xs.length;
  const mr = sum(xs.map((x) => x.rss)) / xs.length;
  const slope = sum(xs.map((x) => (x.t - mt) * (x.rss - mr))) / Math.max(1e-9, sum(xs.map((x) => (x.t - mt) ** 2)));
  return (100 * slope * seconds) / mr;
}
