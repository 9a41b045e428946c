/**
 * The latest report of every worker, per connection. The connection is what
 * the worker's certificate proves; the instance name inside a report is only
 * what the worker says (every worker of a connection holds the same
 * certificate). So memory is bounded by what the operator decides, not by
 * what workers send: at most `maxInstances(connection)` reports per
 * connection (the oldest goes first) and at most `maxBytes` of reports in
 * all (taken from the connection that holds the most).
 */
import { createHash } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type { WorkerReport } from '../tunnel/operator-channel.js';

/** Report bytes kept over all connections by default (about 3× that in heap). */
export const DEFAULT_REPORT_STORE_BYTES = 32 << 20;

/**
 * Worker instances that can report for one connection at once: `replicas` new
 * pods, one surge pod of a rolling update, and each replaced pod while it
 * drains (it still holds sessions and reports them).
 */
export function instanceLimit(replicas: number): number {
  return 2 * Math.max(1, replicas) + 1;
}

export type EvictionReason = 'instances' | 'memory';

interface StoredReport {
  report: WorkerReport;
  receivedAt: number;
  digest: string;
  bytes: number;
}

interface ConnectionReports {
  workers: Map<string, StoredReport>;
  bytes: number;
}

export interface ReportStoreOptions {
  now?: () => number;
  /** Most worker instances kept per connection key; default instanceLimit(10). */
  maxInstances?: (connection: string) => number;
  /** Report bytes kept over all connections. */
  maxBytes?: number;
}

export interface ReportStore {
  on(event: 'report', listener: (connection: string) => void): this;
  on(event: 'evicted', listener: (connection: string, reason: EvictionReason) => void): this;
}

/**
 * Keyed "ns/name". 'report' fires only when a report is news: a new worker,
 * different content, or a worker reporting again after `live()` last saw it
 * as stale. 'evicted' fires when a limit pushed a report out.
 */
export class ReportStore extends EventEmitter {
  readonly #now: () => number;
  readonly #maxInstances: (connection: string) => number;
  readonly #maxBytes: number;
  readonly #connections = new Map<string, ConnectionReports>();
  /** The maxAge `live()` last used per connection: a longer silence makes the next report news. */
  readonly #maxAge = new Map<string, number>();
  #bytes = 0;
  #count = 0;

  constructor(opts: ReportStoreOptions | (() => number) = {}) {
    super();
    const o = typeof opts === 'function' ? { now: opts } : opts;
    this.#now = o.now ?? Date.now;
    this.#maxInstances = o.maxInstances ?? (() => instanceLimit(10));
    this.#maxBytes = o.maxBytes ?? DEFAULT_REPORT_STORE_BYTES;
  }

  /** Bytes of all stored reports (their bodies as received). */
  get bytes(): number {
    return this.#bytes;
  }

  /** Number of stored reports. */
  get size(): number {
    return this.#count;
  }

  /**
   * Stores `report` (`bytes`: its body's size); returns true (and emits
   * 'report') when it changed what we know.
   */
  record(connection: string, report: WorkerReport, bytes: number): boolean {
    const now = this.#now();
    let conn = this.#connections.get(connection);
    if (!conn) this.#connections.set(connection, (conn = { workers: new Map(), bytes: 0 }));
    const before = conn.workers.get(report.instance);
    if (before) this.#remove(conn, report.instance, before);
    else this.#makeRoom(connection, conn);
    const digest = createHash('sha256').update(JSON.stringify(report)).digest('base64');
    const entry = { report, receivedAt: now, digest, bytes };
    conn.workers.set(report.instance, entry);
    conn.bytes += bytes;
    this.#bytes += bytes;
    this.#count++;
    this.#enforceBytes(entry);
    const news = !before || before.digest !== digest || now - before.receivedAt > (this.#maxAge.get(connection) ?? Infinity);
    if (news) this.emit('report', connection);
    return news;
  }

  /** Reports received within `maxAgeMs`, by instance name. Older ones are dropped: that worker is gone. */
  live(connection: string, maxAgeMs: number): Array<WorkerReport & { receivedAt: number }> {
    this.#maxAge.set(connection, maxAgeMs);
    const conn = this.#connections.get(connection);
    if (!conn) return [];
    const now = this.#now();
    const out: Array<WorkerReport & { receivedAt: number }> = [];
    for (const [instance, entry] of conn.workers) {
      if (now - entry.receivedAt > maxAgeMs) this.#remove(conn, instance, entry);
      else out.push({ ...entry.report, receivedAt: entry.receivedAt });
    }
    return out.sort((a, b) => (a.instance < b.instance ? -1 : a.instance > b.instance ? 1 : 0));
  }

  hasReported(connection: string): boolean {
    return this.#connections.has(connection);
  }

  forget(connection: string): void {
    const conn = this.#connections.get(connection);
    if (conn) for (const [instance, entry] of [...conn.workers]) this.#remove(conn, instance, entry);
    this.#connections.delete(connection);
    this.#maxAge.delete(connection);
  }

  /** A new instance of a connection at its limit pushes out the one heard from longest ago. */
  #makeRoom(connection: string, conn: ConnectionReports): void {
    const limit = Math.max(1, this.#maxInstances(connection));
    while (conn.workers.size >= limit) {
      const [instance, entry] = oldest(conn);
      this.#remove(conn, instance, entry);
      this.emit('evicted', connection, 'instances');
    }
  }

  /** Over the byte limit: the connection holding the most gives up its oldest report (never `keep`). */
  #enforceBytes(keep: StoredReport): void {
    while (this.#bytes > this.#maxBytes) {
      let victim: [string, ConnectionReports] | undefined;
      for (const [key, conn] of this.#connections) {
        const evictable = conn.workers.size > 1 || ![...conn.workers.values()].includes(keep);
        if (evictable && conn.workers.size > 0 && (!victim || conn.bytes > victim[1].bytes)) victim = [key, conn];
      }
      if (!victim) return;
      const [instance, entry] = oldest(victim[1], keep);
      this.#remove(victim[1], instance, entry);
      this.emit('evicted', victim[0], 'memory');
    }
  }

  #remove(conn: ConnectionReports, instance: string, entry: StoredReport): void {
    conn.workers.delete(instance);
    conn.bytes -= entry.bytes;
    this.#bytes -= entry.bytes;
    this.#count--;
  }
}

function oldest(conn: ConnectionReports, except?: StoredReport): [string, StoredReport] {
  let found: [string, StoredReport] | undefined;
  for (const [instance, entry] of conn.workers) {
    if (entry !== except && (!found || entry.receivedAt < found[1].receivedAt)) found = [instance, entry];
  }
  return found!;
}
