/**
 * The largest report the operator channel's schema accepts, for tests: every
 * list and string at its limit, with the widest characters each field allows.
 * Its compact JSON must fit MAX_REPORT_BYTES (the bound is computed from the
 * same limits), and a flood of them is what a misbehaving worker can send.
 */
import { CONTROL_LIMITS } from '../control.js';
import { REPORT_LIMITS as R, type ReportedConnector, type WorkerReport } from '../operator-channel.js';

const label = (prefix: string, i: number): string => `${prefix}${i}-`.padEnd(62, 'x') + 'z';

export function largestReport(instance = 'w'.repeat(R.instanceChars)): WorkerReport {
  const version = '"'.repeat(CONTROL_LIMITS.versionChars); // escaped in JSON: 2 bytes each
  const perSession = Math.ceil(R.unavailableMappings / R.sessions);
  // Messages of 3-byte characters, as many as the total budget allows, spread over the entries.
  const messageCount = Math.floor(R.messageCharsTotal / R.messageChars);
  let messagesLeft = messageCount;
  const message = (): string | undefined => (messagesLeft-- > 0 ? '€'.repeat(R.messageChars) : undefined);
  let entriesLeft: number = R.unavailableMappings;
  const connectors: ReportedConnector[] = Array.from({ length: R.sessions }, (_, s) => {
    const n = Math.min(perSession, entriesLeft);
    entriesLeft -= n;
    return {
      name: label('c', s),
      session: 'S'.repeat(R.sessionChars),
      since: '2026-12-06T10:00:00.000+01:00'.padEnd(R.sinceChars, '0'),
      version,
      address: `[${'f'.repeat(R.addressChars - 8)}]:65535`.slice(0, R.addressChars),
      unavailableMappings: Array.from({ length: n }, (_, i) => {
        const text = message();
        return { name: label('m', s * perSession + i), state: 'Refused' as const, reason: 'R'.repeat(CONTROL_LIMITS.codeChars), ...(text ? { message: text } : {}) };
      }),
    };
  });
  return {
    instance,
    version,
    ready: true,
    draining: false,
    connectors,
    listenerFailures: Array.from({ length: R.listenerFailures }, (_, i) => ({ mapping: label('f', i), message: '' })),
    dropped: { sessions: 1e9, unavailableMappings: 1e9, listenerFailures: 1e9, messages: 1e9 },
  };
}
