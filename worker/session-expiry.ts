/**
 * A connector session lives no longer than the certificate it was
 * authenticated with: when that certificate expires the worker closes the
 * session, telling the connector why (CERTIFICATE_EXPIRED, a `session-closed`
 * audit line with that reason, underpass_sessions_expired_total). Without
 * this, a session opened a minute before expiry would carry streams for as
 * long as the WebSocket stays up, past any certificate lifetime.
 *
 * A renewal does not extend the session: TLS cannot swap the client
 * certificate of an open connection, so a connector that renews opens a new
 * session with the new certificate and retires the old one, which drains
 * until this same deadline at the latest (connector/link.ts, `cycle`).
 */
import { Counter, type Registry } from 'prom-client';
import type { ConnectorSession } from './connector-session.js';

/** setTimeout's limit (about 24.8 days): later deadlines are reached in steps. */
const MAX_TIMER_MS = 2 ** 31 - 1;

export interface SessionExpiryOptions {
  registry: Registry;
  now?: () => number;
  setTimer?: (fn: () => void, ms: number) => { unref(): unknown };
  clearTimer?: (timer: { unref(): unknown }) => void;
}

export class SessionExpiry {
  readonly #now: () => number;
  readonly #setTimer: NonNullable<SessionExpiryOptions['setTimer']>;
  readonly #clearTimer: NonNullable<SessionExpiryOptions['clearTimer']>;
  readonly #expired: Counter;

  constructor(o: SessionExpiryOptions) {
    this.#now = o.now ?? Date.now;
    this.#setTimer = o.setTimer ?? ((fn, ms) => setTimeout(fn, ms));
    this.#clearTimer = o.clearTimer ?? ((t) => clearTimeout(t as NodeJS.Timeout));
    const name = 'underpass_sessions_expired_total';
    this.#expired = (o.registry.getSingleMetric(name) as Counter | undefined) ?? new Counter({
      name, help: 'Connector sessions the worker closed because the certificate they were authenticated with expired.', registers: [o.registry],
    });
  }

  /** Closes `session` when `notAfter` passes (at once when it already has). */
  watch(session: ConnectorSession, notAfter: Date): void {
    let timer: { unref(): unknown } | undefined;
    const arm = (): void => {
      const left = notAfter.getTime() - this.#now();
      if (left > 0) {
        timer = this.#setTimer(arm, Math.min(left, MAX_TIMER_MS));
        timer.unref();
        return;
      }
      timer = undefined;
      if (session.mux.isClosed) return;
      this.#expired.inc();
      session.refuse('CERTIFICATE_EXPIRED',
        `the certificate of connector "${session.connector}" (serial ${session.certificateSerial}) expired at ${notAfter.toISOString()}; it must reconnect with a renewed one`);
    };
    session.once('close', () => {
      if (timer) this.#clearTimer(timer);
      timer = undefined;
    });
    arm();
  }
}
