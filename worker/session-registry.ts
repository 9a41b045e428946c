/**
 * Live connector sessions of this worker. New streams go round-robin over the
 * sessions that can carry the mapping; a session that is gone or going away is
 * skipped at once, so one lost connector never stalls new streams.
 */
import type { Carrier } from '../tunnel/stream-flow.js';
import type { ConnectorSession } from './connector-session.js';

export class SessionRegistry {
  #sessions: ConnectorSession[] = [];
  #next = 0;
  readonly #worker: string;

  constructor(worker: string) {
    this.#worker = worker;
  }

  get all(): readonly ConnectorSession[] {
    return this.#sessions;
  }

  get readyCount(): number {
    return this.#sessions.filter((s) => s.ready).length;
  }

  add(session: ConnectorSession): void {
    this.#sessions.push(session);
  }

  remove(session: ConnectorSession): void {
    this.#sessions = this.#sessions.filter((s) => s !== session);
  }

  /** Sessions to try for one new stream, starting at the next round-robin position. */
  *candidates(mapping: string): Generator<Carrier> {
    const list = this.#sessions;
    const n = list.length;
    if (n === 0) return;
    const start = this.#next++ % n;
    for (let i = 0; i < n; i++) {
      const s = list[(start + i) % n]!;
      if (s.canCarry(mapping)) yield { session: s.mux, connector: s.connector, worker: this.#worker };
    }
  }
}
