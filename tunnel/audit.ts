/**
 * The audit trail: one JSON line per tunnel stream and per session event,
 * written where the action happened (worker or connector). Lines never carry
 * secrets; addresses and identities are facts the operator must be able to audit.
 */
import { createWriteStream, writeSync } from 'node:fs';
import type { Writable } from 'node:stream';

export type StreamOutcome = 'closed' | 'refused' | 'failed';

export interface StreamAuditEvent {
  event: 'stream';
  connection: string;
  connector: string;
  worker?: string;
  mapping: string;
  /** Side where the target runs. */
  side?: 'Connector' | 'Cluster';
  /** host:port of the client that connected to the listener. */
  client: string;
  target?: string;
  outcome: StreamOutcome;
  reason?: string;
  message?: string;
  /** Bytes client → target and target → client. */
  bytesIn: number;
  bytesOut: number;
  durationMs: number;
}

/**
 * Refused or failed streams a peer opened beyond the per-session rate (tunnel/stream-flow.ts):
 * how many of one outcome and reason were not audited one by one in the interval.
 */
export interface StreamSummaryAuditEvent {
  event: 'stream-summary';
  connection: string;
  connector: string;
  worker?: string;
  outcome: StreamOutcome;
  reason: string;
  count: number;
  intervalMs: number;
  message: string;
}

export interface SessionAuditEvent {
  event: 'session-opened' | 'session-closed' | 'session-denied';
  connection: string;
  connector?: string;
  worker?: string;
  peer: string;
  session?: string;
  reason?: string;
  message?: string;
  durationMs?: number;
  /** session-denied: a summary of this many refusals of one reason from one source address in `intervalMs`. */
  count?: number;
  intervalMs?: number;
}

export interface ConfigAuditEvent {
  event: 'config-applied' | 'config-rejected' | 'admission-changed';
  connection: string;
  worker?: string;
  /** admission-changed: where the list came from (operator, config file) and the names now admitted. */
  source?: string;
  connectors?: string[] | 'any';
  revision?: number;
  added?: string[];
  removed?: string[];
  changed?: string[];
  message?: string;
}

/** A connector's certificate: renewed over its session, enrolled with a token, or refused (docs/connector-lifecycle.md). */
export interface CertificateAuditEvent {
  event: 'certificate-renewal' | 'certificate-renewed' | 'enrollment' | 'connector-revoked';
  connection: string;
  connector?: string;
  worker?: string;
  session?: string;
  peer?: string;
  outcome: 'renewed' | 'enrolled' | 'refused' | 'revoked';
  reason?: string;
  message?: string;
  previousSerial?: string;
  serial?: string;
  notAfter?: string;
}

export type AuditEvent = StreamAuditEvent | StreamSummaryAuditEvent | SessionAuditEvent | ConfigAuditEvent | CertificateAuditEvent;

/** A line waits at most this long before it is written… */
export const AUDIT_FLUSH_MS = 10;
/** …or until this much is waiting. */
export const AUDIT_FLUSH_CHARS = 16 * 1024;

/**
 * Lines are written in batches: every line waiting when AUDIT_FLUSH_MS have passed since the
 * first of them, or as soon as AUDIT_FLUSH_CHARS are waiting, in one write. To stdout redirected to a
 * file or a pipe, every write is a blocking syscall; one per connection was the largest cost of
 * our own code in the connection-rate profile, and one per event-loop turn still about half a
 * write per connection at 3,000 connections/s. Lines still pending when the process exits are
 * written synchronously then (a SIGKILL loses at most the last AUDIT_FLUSH_MS).
 */
export class AuditLog {
  readonly #out: Writable;
  readonly #now: () => Date;
  #pending: string[] = [];
  #pendingChars = 0;
  #timer: NodeJS.Timeout | undefined;
  #closed = false;
  /** The time of the last line, formatted: many lines share a millisecond. */
  #lastMs = NaN;
  #lastIso = '';
  readonly #flushNow = (): void => this.#flush();

  constructor(out: Writable, now: () => Date = () => new Date()) {
    this.#out = out;
    this.#now = now;
    live.add(this);
    if (!exitHooked) {
      exitHooked = true;
      process.on('exit', flushAllAtExit);
    }
  }

  /** Audit to a file (appended) or, without a path, to stdout. */
  static open(file: string | undefined): AuditLog {
    return new AuditLog(file ? createWriteStream(file, { flags: 'a', mode: 0o640 }) : process.stdout);
  }

  write(event: AuditEvent): void {
    const now = this.#now();
    const ms = now.getTime();
    if (ms !== this.#lastMs) {
      this.#lastMs = ms;
      this.#lastIso = now.toISOString();
    }
    // `{"time":…,"audit":true,` + the event's own JSON without its opening brace: no copy of the event.
    const line = `{"time":"${this.#lastIso}","audit":true,${JSON.stringify(event).slice(1)}\n`;
    this.#pending.push(line);
    this.#pendingChars += line.length;
    if (this.#pendingChars >= AUDIT_FLUSH_CHARS) this.#flush();
    else if (this.#timer === undefined) this.#timer = setTimeout(this.#flushNow, AUDIT_FLUSH_MS).unref();
  }

  /** Writes the pending lines now (they would otherwise wait up to AUDIT_FLUSH_MS). */
  flush(): void {
    this.#flush();
  }

  close(): Promise<void> {
    this.#flush();
    this.#closed = true;
    live.delete(this);
    if (this.#out === process.stdout) return Promise.resolve();
    return new Promise((resolve) => this.#out.end(resolve));
  }

  #flush(): void {
    if (this.#timer !== undefined) {
      clearTimeout(this.#timer);
      this.#timer = undefined;
    }
    const chunk = this.#takePending();
    if (chunk !== undefined) this.#out.write(chunk);
  }

  /** The waiting lines as one string, and none waiting any more; undefined when there are none (or closed). */
  #takePending(): string | undefined {
    if (this.#pending.length === 0 || this.#closed) return undefined;
    const chunk = this.#pending.join('');
    this.#pending = [];
    this.#pendingChars = 0;
    return chunk;
  }

  /** @internal At exit nothing asynchronous runs any more: write what is pending straight to the descriptor. */
  flushAtExit(): void {
    const chunk = this.#takePending();
    if (chunk === undefined) return;
    const fd = this.#out === process.stdout ? 1 : (this.#out as unknown as { fd?: unknown }).fd;
    if (typeof fd === 'number') {
      try {
        writeSync(fd, chunk);
      } catch {
        // the descriptor is gone: nothing more can be done at exit
      }
    }
  }
}

/** Audit logs not closed yet; one 'exit' listener writes what any of them still holds. */
const live = new Set<AuditLog>();
let exitHooked = false;

function flushAllAtExit(): void {
  for (const log of live) log.flushAtExit();
}
