/**
 * Steady request/response load through tunnel mappings, counted the way
 * docs/ha.md measures rollouts and pod loss: each client opens a connection,
 * does `requests` round trips of `size` bytes `intervalMs` apart (the target
 * echoes), closes, and starts over. A connection that fails before its first
 * answer is a **failed new connection**; one that fails after it (reset,
 * timeout, wrong bytes) is a **broken in-flight stream**.
 */
import net from 'node:net';
import { formatHostPort } from '../tunnel/address.js';

export interface LoadTarget {
  /** A label for the summary, e.g. connector-side. */
  name: string;
  host: string;
  port: number;
  clients: number;
}

export interface LoadOptions {
  targets: LoadTarget[];
  /** Round trips per connection (default 20). */
  requests?: number;
  /** Pause between round trips (default 50 ms). */
  intervalMs?: number;
  /** Bytes per request (default 64, at least 8). */
  size?: number;
  /** Connect and each round trip (default 5 s). */
  timeoutMs?: number;
}

export interface LoadFailure {
  /** Milliseconds since the start. */
  at: number;
  /** When that connection was started (ms since the start): a failed new connection started before an event or after it. */
  started: number;
  target: string;
  kind: 'new' | 'broken';
  /** Round trips done on that connection before it failed. */
  done: number;
  message: string;
  /**
   * This end's address:port of the connection, once connected: the `client` of the worker's or
   * connector's audit line for the same stream, which says where it went and why it failed.
   */
  client?: string;
}

export interface TargetCounts {
  connections: number;
  completed: number;
  requests: number;
  failedNew: number;
  broken: number;
  latencyMs: { p50: number; p99: number; max: number };
}

export interface LoadSummary {
  startedAt: string;
  durationMs: number;
  total: TargetCounts;
  targets: Record<string, TargetCounts>;
  /** The first MAX_FAILURES failures, for diagnosis. */
  failures: LoadFailure[];
  /** Per second: connections started, failed new connections, broken streams. */
  timeline: Array<{ second: number; connections: number; failedNew: number; broken: number }>;
}

const MAX_FAILURES = 200;
const MAX_SAMPLES = 50_000;

class Counts {
  connections = 0;
  completed = 0;
  requests = 0;
  failedNew = 0;
  broken = 0;
  readonly samples: number[] = [];
  seen = 0;

  latency(ms: number): void {
    this.seen++;
    if (this.samples.length < MAX_SAMPLES) this.samples.push(ms);
    else {
      // Reservoir sampling keeps percentiles of a long run within bounded memory.
      const i = Math.floor(Math.random() * this.seen);
      if (i < MAX_SAMPLES) this.samples[i] = ms;
    }
  }

  summary(): TargetCounts {
    const sorted = [...this.samples].sort((a, b) => a - b);
    const at = (q: number): number => (sorted.length === 0 ? 0 : round(sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!));
    return {
      connections: this.connections, completed: this.completed, requests: this.requests, failedNew: this.failedNew, broken: this.broken,
      latencyMs: { p50: at(0.5), p99: at(0.99), max: at(1) },
    };
  }
}

export class LoadGenerator {
  readonly #o: Required<LoadOptions>;
  readonly #counts = new Map<string, Counts>();
  readonly #failures: LoadFailure[] = [];
  readonly #timeline = new Map<number, { connections: number; failedNew: number; broken: number }>();
  readonly #running = new Set<Promise<void>>();
  #started = 0;
  #stopping = false;
  #nextId = 0;

  constructor(o: LoadOptions) {
    this.#o = { requests: 20, intervalMs: 50, size: 64, timeoutMs: 5_000, ...o };
    if (this.#o.size < 8) throw new RangeError('size must be at least 8 bytes');
    for (const t of o.targets) this.#counts.set(t.name, new Counts());
  }

  start(): void {
    this.#started = Date.now();
    for (const t of this.#o.targets) {
      for (let i = 0; i < t.clients; i++) {
        const p = this.#client(t);
        this.#running.add(p);
        void p.finally(() => this.#running.delete(p));
      }
    }
  }

  /** Stops starting connections; those open finish their round trips. */
  async stop(): Promise<LoadSummary> {
    this.#stopping = true;
    await Promise.all([...this.#running]);
    return this.snapshot();
  }

  snapshot(): LoadSummary {
    const total = new Counts();
    const targets: Record<string, TargetCounts> = {};
    for (const [name, c] of this.#counts) {
      targets[name] = c.summary();
      total.connections += c.connections;
      total.completed += c.completed;
      total.requests += c.requests;
      total.failedNew += c.failedNew;
      total.broken += c.broken;
      for (const s of c.samples) total.latency(s);
    }
    return {
      startedAt: new Date(this.#started).toISOString(),
      durationMs: Date.now() - this.#started,
      total: total.summary(),
      targets,
      failures: [...this.#failures],
      timeline: [...this.#timeline.entries()].sort((a, b) => a[0] - b[0]).map(([second, v]) => ({ second, ...v })),
    };
  }

  async #client(t: LoadTarget): Promise<void> {
    while (!this.#stopping) await this.#connection(t);
  }

  #bucket(): { connections: number; failedNew: number; broken: number } {
    const second = Math.floor((Date.now() - this.#started) / 1000);
    let b = this.#timeline.get(second);
    if (!b) this.#timeline.set(second, (b = { connections: 0, failedNew: 0, broken: 0 }));
    return b;
  }

  /** One connection's life; never rejects. */
  #connection(t: LoadTarget): Promise<void> {
    const counts = this.#counts.get(t.name)!;
    counts.connections++;
    this.#bucket().connections++;
    const id = this.#nextId++;
    const started = Date.now() - this.#started;
    const { requests, intervalMs, size, timeoutMs } = this.#o;
    return new Promise((resolve) => {
      const socket = net.connect({ host: t.host, port: t.port, allowHalfOpen: true });
      socket.setNoDelay(true);
      let done = 0;
      let expected: Buffer | undefined;
      let received: Buffer[] = [];
      let receivedBytes = 0;
      let sentAt = 0;
      let client: string | undefined;
      /** Counted already (completed or failed): later events of this socket change nothing. */
      let over = false;
      // Whether the name was resolved tells a lost DNS answer (the resolver retries after 5 s) from a
      // TCP connect that got no answer.
      let resolved: string | undefined;
      socket.once('lookup', (err: Error | null, address: string) => { if (!err) resolved = address; });
      const isIp = net.isIP(t.host) !== 0;
      let timer: NodeJS.Timeout | undefined = setTimeout(() => fail(`no connection within ${timeoutMs} ms (${
        isIp ? `TCP connect to ${t.host} not answered` : resolved === undefined ? `no answer to the name lookup of ${t.host}` : `${t.host} resolved to ${resolved}, TCP connect not answered`})`), timeoutMs);
      const finish = (): void => {
        clearTimeout(timer);
        timer = undefined;
        resolve();
      };
      const fail = (message: string): void => {
        if (over) return;
        over = true;
        clearTimeout(timer);
        socket.destroy();
        const kind = done === 0 ? 'new' : 'broken';
        if (kind === 'new') {
          counts.failedNew++;
          this.#bucket().failedNew++;
        } else {
          counts.broken++;
          this.#bucket().broken++;
        }
        if (this.#failures.length < MAX_FAILURES) {
          this.#failures.push({ at: Date.now() - this.#started, started, target: t.name, kind, done, message, ...(client ? { client } : {}) });
        }
        // A failed connection is retried after a short pause, as a client would, not in a tight loop.
        setTimeout(finish, Math.min(100, intervalMs));
      };
      const send = (): void => {
        expected = Buffer.alloc(size, (id + done) & 0xff);
        expected.writeUInt32BE(id >>> 0, 0);
        expected.writeUInt32BE(done, 4);
        received = [];
        receivedBytes = 0;
        sentAt = performance.now();
        clearTimeout(timer);
        timer = setTimeout(() => fail(`no answer within ${timeoutMs} ms (round trip ${done + 1})`), timeoutMs);
        socket.write(expected);
      };
      socket.once('connect', () => {
        client = socket.localAddress ? formatHostPort({ host: socket.localAddress, port: socket.localPort ?? 0 }) : undefined;
        send();
      });
      socket.on('data', (chunk: Buffer) => {
        if (over) return;
        if (!expected) return fail('data before any request');
        received.push(chunk);
        receivedBytes += chunk.length;
        if (receivedBytes < size) return;
        const answer = Buffer.concat(received);
        if (receivedBytes > size || !answer.equals(expected)) return fail(`wrong answer in round trip ${done + 1}`);
        counts.latency(performance.now() - sentAt);
        counts.requests++;
        done++;
        expected = undefined;
        clearTimeout(timer);
        if (done >= requests) {
          timer = setTimeout(() => fail(`not closed within ${timeoutMs} ms`), timeoutMs);
          socket.end();
          return;
        }
        timer = setTimeout(send, intervalMs);
      });
      socket.on('end', () => {
        if (done < requests) fail(`closed by the peer after ${done} round trip(s)`);
      });
      socket.on('error', (err: NodeJS.ErrnoException) => fail(err.code ?? err.message));
      socket.on('close', () => {
        if (over) return;
        if (done >= requests) {
          over = true;
          counts.completed++;
          finish();
        } else {
          fail(`closed after ${done} round trip(s)`);
        }
      });
    });
  }
}

function round(ms: number): number {
  return Math.round(ms * 100) / 100;
}
