/**
 * Live connector sessions of this worker. New streams go round-robin over the
 * sessions that can carry the mapping; a session that is gone or going away is
 * skipped at once, so one lost connector never stalls new streams; so is one
 * its connector retired (it replaces the session, or stops: docs/ha.md).
 * Sessions of a connector that said `draining` are used only when no other
 * can carry the stream.
 */
import { CarrierOrder, type CarrierSource } from '../tunnel/carrier-order.js';
import type { RefusalCode } from '../tunnel/open.js';
import type { Carrier } from '../tunnel/stream-flow.js';
import type { ConnectorSession } from './connector-session.js';

export class SessionRegistry implements CarrierSource<ConnectorSession, string> {
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
  candidates(mapping: string): CarrierOrder<ConnectorSession, string> {
    const n = this.#sessions.length;
    return new CarrierOrder(this, this.#sessions, n === 0 ? 0 : this.#next++ % n, mapping);
  }

  // ---- CarrierSource (CarrierOrder's questions) ------------------------------

  preferred(s: ConnectorSession, mapping: string): boolean {
    return !s.peerDraining && s.canCarry(mapping);
  }

  fallback(s: ConnectorSession, mapping: string): boolean {
    return s.peerDraining && s.canCarry(mapping);
  }

  carrier(s: ConnectorSession): Carrier {
    return { session: s.mux, connector: s.connector, worker: this.#worker };
  }
}
