/**
 * The observed part of a TunnelConnector's status, from the workers' live
 * reports (pure, so a table test pins it): which workers hold a session with
 * it, its version and host, when it was last seen, and the conditions
 * Connected and CertificateValid. Written only when it changed; lastSeen
 * moves only when the last session goes, so a connected connector causes no
 * writes between reports.
 */
import type { WorkerReport } from '../tunnel/operator-channel.js';
import { setConditions, findCondition, type ConditionInput } from './conditions.js';
import type { TunnelConnector, TunnelConnectorStatus } from './types.js';

const MAX_SESSIONS = 64;

export function connectorRecordStatus(tcn: TunnelConnector, reports: readonly WorkerReport[], now: Date): TunnelConnectorStatus {
  const previous = tcn.status ?? {};
  const mine = reports.flatMap((r) => r.connectors.filter((c) => c.name === tcn.spec.connector).map((c) => ({ worker: r.instance, c })));
  const sessions = mine.slice(0, MAX_SESSIONS).map(({ worker, c }) => ({
    worker, ...(c.since ? { since: c.since } : {}), ...(c.address ? { address: c.address } : {}), ...(c.serial ? { serial: c.serial } : {}),
  })).sort((a, b) => a.worker.localeCompare(b.worker) || (a.since ?? '').localeCompare(b.since ?? ''));
  const newest = mine.map(({ c }) => c).sort((a, b) => b.since.localeCompare(a.since))[0];
  const connected = mine.length > 0;
  const wasConnected = findCondition(previous.conditions, 'Connected')?.status === 'True';
  const notAfter = previous.certificate?.notAfter ? Date.parse(previous.certificate.notAfter) : undefined;
  const conditions: ConditionInput[] = [
    connected
      ? { type: 'Connected', status: 'True', reason: 'SessionsUp', message: `sessions with ${new Set(mine.map((m) => m.worker)).size} worker(s)` }
      : { type: 'Connected', status: 'False', reason: 'NoSession', message: 'no worker reports a session with this connector' },
    notAfter === undefined
      ? { type: 'CertificateValid', status: 'Unknown', reason: 'NotEnrolled', message: 'the operator has issued no certificate to this connector yet' }
      : notAfter > now.getTime()
        ? { type: 'CertificateValid', status: 'True', reason: 'Valid', message: `valid until ${previous.certificate!.notAfter}` }
        : { type: 'CertificateValid', status: 'False', reason: 'Expired', message: `expired ${previous.certificate!.notAfter}` },
  ];
  const status: TunnelConnectorStatus = {
    ...previous,
    conditions: setConditions(previous.conditions, conditions, tcn.metadata.generation ?? 0, now),
    sessionCount: mine.length,
    sessions,
  };
  if (newest?.version) status.version = newest.version;
  if (newest?.hostname) status.host = newest.hostname;
  if (wasConnected && !connected) status.lastSeen = now.toISOString();
  return status;
}
