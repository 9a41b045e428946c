import { describe, expect, it } from '@jest/globals';
import { EventEmitter } from 'node:events';
import { Registry } from 'prom-client';
import type { ConnectorSession } from './connector-session.js';
import { SessionExpiry } from './session-expiry.js';

const DAY_MS = 86_400_000;

/** A clock and timers moved by hand; the session is only what SessionExpiry uses. */
function setup() {
  let now = 0;
  const timers: Array<{ at: number; fn: () => void; cleared: boolean; unref(): void }> = [];
  const expiry = new SessionExpiry({
    registry: new Registry(),
    now: () => now,
    setTimer: (fn, ms) => {
      const t = { at: now + ms, fn, cleared: false, unref: () => undefined };
      timers.push(t);
      return t;
    },
    clearTimer: (t) => {
      (t as unknown as { cleared: boolean }).cleared = true;
    },
  });
  const refused: string[] = [];
  const session = Object.assign(new EventEmitter(), {
    connector: 'site-a', certificateSerial: '5A0C', mux: { isClosed: false },
    refuse: (code: string) => void refused.push(code),
  });
  /** Moves the clock to `to`, firing the timers due on the way. */
  const advance = (to: number): void => {
    for (;;) {
      const due = timers.filter((t) => !t.cleared && t.at <= to).sort((a, b) => a.at - b.at)[0];
      if (!due) break;
      due.cleared = true;
      now = due.at;
      due.fn();
    }
    now = to;
  };
  return { expiry, session, refused, timers, advance, watch: (notAfter: number) => expiry.watch(session as unknown as ConnectorSession, new Date(notAfter)) };
}

describe('SessionExpiry', () => {
  it.each([
    ['a certificate that expires in a minute closes its session then', 60_000],
    ['a 30-day certificate (beyond one timer) closes its session at its expiry, not earlier', 30 * DAY_MS],
  ])('%s', (_name, lifetime) => {
    const { refused, advance, watch } = setup();
    watch(lifetime);
    advance(lifetime - 1);
    expect(refused).toEqual([]);
    advance(lifetime);
    expect(refused).toEqual(['CERTIFICATE_EXPIRED']);
  });

  it('closes at once a session whose certificate has already expired', () => {
    const { refused, watch } = setup();
    watch(-1);
    expect(refused).toEqual(['CERTIFICATE_EXPIRED']);
  });

  it('forgets a session that closed before its certificate expired', () => {
    const { refused, timers, session, advance, watch } = setup();
    watch(60_000);
    session.emit('close');
    expect(timers.every((t) => t.cleared)).toBe(true);
    advance(120_000);
    expect(refused).toEqual([]);
  });
});
