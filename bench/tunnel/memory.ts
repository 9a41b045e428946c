/**
 * Memory at rest:
 *  - idle streams: N connections through a forward, each proven end to end by
 *    a 1-byte echo, then left idle; RSS of the forwarder's processes before and
 *    after, divided by N.
 *  - idle connector sessions: N sessions opened on one worker from this
 *    process with the connector's own WorkerLink (mTLS WebSocket, yamux,
 *    control hello/welcome), each with its own connector certificate; the
 *    worker's RSS before and after, divided by N.
 * RSS settles for a few seconds before each reading (no forced GC: these are
 * the processes as deployed).
 */
import { readTlsFiles } from '../../tunnel/transport/tls-files.js';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import pino from 'pino';
import { WorkerLink } from '../../connector/link.js';
import { TunnelMetrics } from '../../tunnel/metrics.js';
import { log, pool, rssByRole, sleep, sum, type Forward } from './common.js';
import { startTlsFloor } from './apps.js';
import { metric, nodeArgs, startWorker, type UnderpassPki } from './underpass.js';

interface IdleSession {
  close(): Promise<void>;
}

export interface MemoryResult {
  count: number;
  /** Bytes of RSS per stream/session, all roles together. */
  perItem: number;
  perRole: Record<string, number>;
  before: Record<string, number>;
  after: Record<string, number>;
  /** RSS after the streams/sessions were closed again. */
  released: Record<string, number>;
  /**
   * Bytes per item over the second half only: (RSS at n − RSS at n/2) / (n − n/2). One-time growth
   * that the first items trigger (V8 doubling its young generation, allocator arenas) stays out.
   */
  marginal: number;
  /** RSS with the first half open. */
  mid: Record<string, number>;
  /** RSS before the warm-up batch (a process that has served nothing yet). */
  cold: Record<string, number>;
  errors: number;
  firstError?: string;
  note?: string;
}

/** RSS per role after `seconds` of rest. */
async function settledRss(roles: Record<string, number>, seconds: number): Promise<Record<string, number>> {
  await sleep(seconds * 1000);
  return rssByRole(roles);
}

function perRole(before: Record<string, number>, after: Record<string, number>, n: number): Record<string, number> {
  const out: Record<string, number> = {};
  for (const role of Object.keys(after)) out[role] = ((after[role] ?? 0) - (before[role] ?? 0)) / Math.max(1, n);
  return out;
}

/**
 * Per-stream and per-session figures are costs per item of a process that has already served
 * some: a warm-up batch of a fifth of `n` is opened and closed before the "before" reading, so
 * one-time growth (pages of the binary faulted in, JIT code, V8 committing its young generation,
 * allocator arenas) is not divided among the items. The RSS before the warm-up is kept too
 * (`cold`), so the one-time growth is reported beside the figure rather than hidden.
 */
export function warmUpCount(n: number): number {
  return Math.ceil(n / 5);
}

/** Items opened in one batch, and the ones that could not be. */
interface Batch<T> {
  items: T[];
  errors: number;
  firstError?: string;
}

interface ItemKind<T> {
  /** For log lines: "idle streams", … */
  what: string;
  /** Opens `count` items, numbered from `offset` (warm-up and first half both start at 0). */
  open(count: number, offset: number): Promise<Batch<T>>;
  close(items: T[]): Promise<void>;
  /** With all items open, before the "after" reading: a note when the process disagrees with the count. */
  check?(count: number): Promise<string | undefined>;
}

/**
 * The reading shared by every memory row: cold → warm-up opened and closed → before → first half
 * → mid → second half → after → all closed → released, RSS of `roles` settled before each.
 */
async function rssPerItem<T>(roles: Record<string, number>, n: number, settle: number, kind: ItemKind<T>): Promise<MemoryResult> {
  const open: T[] = [];
  try {
    const cold = await settledRss(roles, settle);
    const warm = await kind.open(warmUpCount(n), 0);
    await kind.close(warm.items);
    if (warm.errors) log(`${kind.what}, warm-up: ${warm.errors} of ${warmUpCount(n)} could not be opened (${warm.firstError})`);
    const before = await settledRss(roles, settle);
    const half = Math.floor(n / 2);
    const first = await kind.open(half, 0);
    open.push(...first.items);
    const mid = await settledRss(roles, settle);
    const second = await kind.open(n - half, half);
    open.push(...second.items);
    const errors = first.errors + second.errors;
    const firstError = first.firstError ?? second.firstError;
    if (errors) log(`${kind.what}: ${errors} of ${n} could not be opened (${firstError})`);
    const count = open.length;
    const note = await kind.check?.(count);
    const after = await settledRss(roles, settle);
    await kind.close(open.splice(0));
    const released = await settledRss(roles, settle);
    return {
      count,
      perItem: (sum(Object.values(after)) - sum(Object.values(before))) / Math.max(1, count),
      marginal: (sum(Object.values(after)) - sum(Object.values(mid))) / Math.max(1, second.items.length),
      perRole: perRole(before, after, count),
      cold, before, mid, after, released, errors,
      ...(firstError ? { firstError } : {}),
      ...(note ? { note } : {}),
    };
  } finally {
    await kind.close(open);
  }
}

export async function idleStreams(fwd: Forward, n: number, settle = 3): Promise<MemoryResult> {
  return rssPerItem(fwd.roles, n, settle, {
    what: 'idle streams',
    open: (count) => openIdleStreams(fwd, count),
    close: async (sockets) => {
      for (const s of sockets) s.destroy();
    },
    check: async (count) => {
      if (!fwd.adminPorts?.worker) return undefined;
      const open = await metric(fwd.adminPorts.worker, 'underpass_streams_open').catch(() => NaN);
      return open === count ? undefined : `worker reports ${open} open streams for ${count} clients`;
    },
  });
}

/** Opens `n` connections through the forward, each proven by a 1-byte echo. */
async function openIdleStreams(fwd: Forward, n: number): Promise<Batch<net.Socket>> {
  const items: net.Socket[] = [];
  let errors = 0;
  let firstError: string | undefined;
  await pool(n, 128, (i) => new Promise<void>((resolve) => {
    const s = net.connect({ port: fwd.port, host: '127.0.0.1', noDelay: true });
    const timer = setTimeout(() => fail(new Error('no echo within 20 s')), 20_000);
    function fail(err: Error): void {
      clearTimeout(timer);
      errors++;
      firstError ??= `stream ${i}: ${err.message}`;
      s.destroy();
      resolve();
    }
    s.once('connect', () => s.write('x'));
    s.once('data', () => {
      clearTimeout(timer);
      s.removeAllListeners('error');
      s.on('error', () => undefined);
      items.push(s);
      resolve();
    });
    s.once('error', fail);
  }));
  return { items, errors, ...(firstError ? { firstError } : {}) };
}

export async function idleSessions(pki: UnderpassPki, n: number, settle = 3): Promise<MemoryResult> {
  const worker = await startWorker(pki);
  try {
    const t0 = Date.now();
    const creds: Array<{ name: string; cert: string; key: string; ca: string }> = [];
    for (let i = 0; i < n; i++) creds.push({ name: `idle-${i}`, ...(await pki.connector(`idle-${i}`)) });
    log(`idle sessions: issued ${n} connector certificates in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    return await rssPerItem<IdleSession>({ worker: worker.child.pid }, n, settle, {
      what: 'idle sessions',
      open: async (count, offset) => {
        const items: IdleSession[] = [];
        let errors = 0;
        let firstError: string | undefined;
        await pool(count, 16, async (k) => {
          const i = offset + k;
          try {
            items.push(await openSession(worker.url, creds[i]!));
          } catch (err) {
            errors++;
            firstError ??= `session ${i}: ${(err as Error).message}`;
          }
        });
        return { items, errors, ...(firstError ? { firstError } : {}) };
      },
      close: async (sessions) => {
        await Promise.all(sessions.map((s) => s.close()));
      },
      check: async (count) => {
        const reported = await metric(worker.adminPort, 'underpass_sessions').catch(() => NaN);
        return reported === count ? undefined : `worker reports ${reported} sessions for ${count} opened`;
      },
    });
  } finally {
    await worker.child.stop();
  }
}

/**
 * The floor under an idle session: `n` mutual-TLS connections (TLS 1.3, the worker's certificate,
 * client certificates required) held open on a bare Node TLS server started with the worker's
 * Node options; its RSS per connection, warmed up and read like the sessions.
 * What Node and OpenSSL keep per TLS connection, before any WebSocket, multiplexer or control state.
 */
export async function tlsFloor(pki: UnderpassPki, n: number, logDir: string, settle = 3): Promise<MemoryResult> {
  const server = await startTlsFloor(pki.dir, logDir, nodeArgs());
  try {
    const files = await pki.connector('tls-floor');
    const opts: tls.ConnectionOptions = { host: '127.0.0.1', port: server.port, servername: 'localhost', cert: readFileSync(files.cert), key: readFileSync(files.key), ca: readFileSync(files.ca) };
    return await rssPerItem<tls.TLSSocket>({ 'bare TLS server': server.pid }, n, settle, {
      what: 'bare TLS floor',
      open: async (count) => {
        const items: tls.TLSSocket[] = [];
        let errors = 0;
        let firstError: string | undefined;
        await pool(count, 16, (i) => new Promise<void>((resolve) => {
          const s = tls.connect(opts, () => {
            items.push(s);
            resolve();
          });
          s.on('error', (err) => {
            errors++;
            firstError ??= `connection ${i}: ${err.message}`;
            resolve();
          });
        }));
        return { items, errors, ...(firstError ? { firstError } : {}) };
      },
      close: async (sockets) => {
        for (const s of sockets) s.destroy();
      },
    });
  } finally {
    await server.stop();
  }
}

const quiet = pino({ level: 'silent' });
const linkMetrics = new TunnelMetrics('connector', { defaultMetrics: false });

/** One connector session made by the connector's own WorkerLink (the same dial, TLS, WebSocket, yamux and hello). */
async function openSession(url: string, c: { name: string; cert: string; key: string; ca: string }): Promise<IdleSession> {
  const abort = new AbortController();
  const link = new WorkerLink(new URL(url), {
    name: c.name,
    credentials: () => readTlsFiles({ cert: c.cert, key: c.key, ca: c.ca }),
    mux: {},
    reconnect: { initialDelayMs: 200, maxDelayMs: 2_000 },
    logger: quiet,
    metrics: linkMetrics,
  });
  const up = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no session within 30 s: ${link.lastError ?? 'no error reported'}`)), 30_000);
    link.once('up', () => {
      clearTimeout(timer);
      resolve();
    });
  });
  void link.run(abort.signal);
  const close = async (): Promise<void> => {
    await link.drain(1_000).catch(() => undefined);
    abort.abort();
  };
  try {
    await up;
  } catch (err) {
    await close();
    throw err;
  }
  return { close };
}
