/**
 * Live connector sessions of this worker. New streams go round-robin over the
 * sessions that can carry the mapping; a session that is gone or going away is
 * skipped at once, so one lost connector never stalls new streams; so is one
 * its connector retired (it replaces the session, or stops: docs/ha.md).
 * Sessions of a connector that said `draining` are used only when no other
 * can carry the stream.
 */
import type { RefusalCode } from '../tunnel/open.js';
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

  /** Sessions that can carry new streams (the worker's readiness: docs/ha.md, "can serve"). */
  get usableCount(): number {
    let n = 0;
    for (const s of this.#sessions) if (s.usable) n++;
    return n;
  }

  add(session: ConnectorSession): void {
    this.#sessions.push(session);
  }

  remove(session: ConnectorSession): void {
    this.#sessions = this.#sessions.filter((s) => s !== session);
  }

  /**
   * When no session can carry `mapping` although connectors are attached:
   * their own reason (a connector refused it), so audit lines name the real cause.
   */
  whyNot(mapping: string): { code: RefusalCode; message: string } | undefined {
    const ready = this.#sessions.filter((s) => s.ready);
    const refusals = ready.map((s) => ({ s, u: s.unavailable.get(mapping) })).filter((x) => x.u);
    if (ready.length === 0 || refusals.length !== ready.length) return undefined;
    const first = refusals[0]!;
    const code: RefusalCode = first.u!.reason === 'NotAllowed' ? 'NOT_ALLOWED' : 'DIAL_FAILED';
    const message = refusals.map(({ s, u }) => `connector "${s.connector}" cannot serve mapping "${mapping}": ${u!.message ?? u!.reason ?? u!.state}`).join('; ');
    return { code, message };
  }

  /**
   * Sessions to try for one new stream, starting at the next round-robin
   * position: those of connectors not draining first, then draining ones.
   */
  *candidates(mapping: string): Generator<Carrier> {
    const list = this.#sessions;
    const n = list.length;
    if (n === 0) return;
    const start = this.#next++ % n;
    let draining = 0;
    for (let i = 0; i < n; i++) {
      const s = list[(start + i) % n]!;
      if (!s.canCarry(mapping)) continue;
      if (s.peerDraining) draining++;
      else yield { session: s.mux, connector: s.connector, worker: this.#worker };
    }
    if (draining === 0) return;
    for (let i = 0; i < n; i++) {
      const s = list[(start + i) % n]!;
      if (s.peerDraining && s.canCarry(mapping)) yield { session: s.mux, connector: s.connector, worker: this.#worker };
    }
  }
}
