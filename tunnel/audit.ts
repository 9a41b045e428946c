/**
 * The audit trail: one JSON line per tunnel stream and per session event,
 * written where the action happened (worker or connector). Lines never carry
 * secrets; addresses and identities are facts the operator must be able to audit.
 */
import { createWriteStream } from 'node:fs';
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

export class AuditLog {
  readonly #out: Writable;
  readonly #now: () => Date;

  constructor(out: Writable, now: () => Date = () => new Date()) {
    this.#out = out;
    this.#now = now;
  }

  /** Audit to a file (appended) or, without a path, to stdout. */
  static open(file: string | undefined): AuditLog {
    return new AuditLog(file ? createWriteStream(file, { flags: 'a', mode: 0o640 }) : process.stdout);
  }

  write(event: AuditEvent): void {
    this.#out.write(`${JSON.stringify({ time: this.#now().toISOString(), audit: true, ...event })}\n`);
  }

  close(): Promise<void> {
    if (this.#out === process.stdout) return Promise.resolve();
    return new Promise((resolve) => this.#out.end(resolve));
  }
}
