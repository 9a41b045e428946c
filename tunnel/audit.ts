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
}

export interface ConfigAuditEvent {
  event: 'config-applied' | 'config-rejected';
  connection: string;
  revision?: number;
  added?: string[];
  removed?: string[];
  changed?: string[];
  message?: string;
}

export type AuditEvent = StreamAuditEvent | SessionAuditEvent | ConfigAuditEvent;

/**
 * Lines are written once per event-loop turn, all the lines of that turn in one write: to stdout
 * redirected to a file, every write is a blocking syscall, and one per connection was the largest
 * cost of our own code in the connection-rate profile. A line waits at most until the end of the
 * current turn; lines still pending when the process exits are written synchronously then.
 */
export class AuditLog {
  readonly #out: Writable;
  readonly #now: () => Date;
  #pending: string[] = [];
  #scheduled = false;
  #closed = false;
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
    // `{"time":…,"audit":true,` + the event's own JSON without its opening brace: no copy of the event.
    this.#pending.push(`{"time":"${this.#now().toISOString()}","audit":true,${JSON.stringify(event).slice(1)}\n`);
    if (this.#scheduled) return;
    this.#scheduled = true;
    setImmediate(this.#flushNow);
  }

  /** Writes the pending lines now (they would otherwise leave at the end of this turn). */
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
    this.#scheduled = false;
    if (this.#pending.length === 0 || this.#closed) return;
    const chunk = this.#pending.length === 1 ? this.#pending[0]! : this.#pending.join('');
    this.#pending = [];
    this.#out.write(chunk);
  }

  /** @internal At exit nothing asynchronous runs any more: write what is pending straight to the descriptor. */
  flushAtExit(): void {
    if (this.#pending.length === 0 || this.#closed) return;
    const chunk = this.#pending.join('');
    this.#pending = [];
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
