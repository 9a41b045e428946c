/**
 * What a worker says about itself: the admin endpoint's /status document and
 * the report the operator channel carries (operator/reports.ts validates it;
 * free text is truncated to fit). Both are built from one snapshot.
 */
import type { WorkerReport } from '../operator/reports.js';
import { formatHostPort } from '../tunnel/address.js';
import type { Mapping } from '../tunnel/mapping.js';
import { VERSION } from '../tunnel/version.js';
import type { ConnectorSession } from './connector-session.js';

export interface ListenerFailure {
  mapping: string;
  message: string;
}

export interface WorkerSnapshot {
  connection: string;
  instance: string;
  /** undefined = ready. */
  notReadyReason: string | undefined;
  draining: boolean;
  revision: number;
  /** Every session, ready or not (only ready ones are shown). */
  sessions: readonly ConnectorSession[];
  mappings: readonly Mapping[];
  /** Connector-side mappings whose listener could not be opened, from the last apply. */
  listenerFailures: ListenerFailure[];
}

/** Free text in reports stays within what the operator accepts (MAX_MESSAGE_CHARS there). */
const MAX_REPORTED_MESSAGE = 512;

export function statusDocument(w: WorkerSnapshot): unknown {
  return {
    connection: w.connection,
    worker: { instance: w.instance, version: VERSION },
    ready: w.notReadyReason === undefined,
    draining: w.draining,
    revision: w.revision,
    connectors: w.sessions.filter((s) => s.ready).map((s) => ({
      ...connectorSummary(s),
      hostname: s.hostname,
      streams: s.mux.streamCount - 1,
      unavailableMappings: [...s.unavailable.values()],
    })),
    mappings: w.mappings.map((m) => ({
      name: m.name,
      side: m.target.side,
      target: formatHostPort(m.target),
      listen: formatHostPort({ host: m.listen.address, port: m.listen.port }),
    })),
    listenerFailures: w.listenerFailures,
  };
}

export function workerReport(w: WorkerSnapshot): WorkerReport {
  return {
    instance: w.instance,
    version: VERSION,
    ready: w.notReadyReason === undefined,
    draining: w.draining,
    connectors: w.sessions.filter((s) => s.ready).map((s) => ({
      ...connectorSummary(s),
      unavailableMappings: [...s.unavailable.values()].map((u) => ({ ...u, ...(u.message ? { message: truncate(u.message) } : {}) })),
    })),
    listenerFailures: w.listenerFailures,
  };
}

export function truncate(message: string): string {
  return message.length <= MAX_REPORTED_MESSAGE ? message : `${message.slice(0, MAX_REPORTED_MESSAGE - 1)}…`;
}

/** The fields a connector has in both documents, in this order. */
function connectorSummary(s: ConnectorSession): { name: string; session: string; since: string; version: string; address: string } {
  return { name: s.connector, session: s.id, since: s.since.toISOString(), version: s.version, address: s.peer };
}
