/**
 * What a worker says about itself: the admin endpoint's /status document and
 * the report the operator channel carries. Both are built from one snapshot.
 * The report always fits the channel's schema (tunnel/operator-channel.ts):
 * what does not fit is left out and counted in `dropped`, because an operator
 * that cannot read a report cannot show what it says.
 */
import { formatHostPort } from '../tunnel/address.js';
import type { Mapping } from '../tunnel/mapping.js';
import {
  REPORT_LIMITS, reportText, workerReportSchema, type ReportDropped, type ReportedConnector, type WorkerReport,
} from '../tunnel/operator-channel.js';
import { formatPath } from '../tunnel/config-load.js';
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
  /** The CA ids in tls.ca and the one that issued the worker's own certificate. */
  trust?: { cas: string[]; issuer: string | undefined };
}

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

/** The report, cut to fit (see fitReport); `problem` is set when only a fallback validated. */
export interface BuiltReport {
  report: WorkerReport;
  dropped: ReportDropped;
  /** Why the fitted report did not validate (a bug): the fallback went out instead. */
  problem?: string;
}

export function workerReport(w: WorkerSnapshot): BuiltReport {
  return fitReport({
    instance: w.instance,
    version: VERSION,
    ready: w.notReadyReason === undefined,
    draining: w.draining,
    connectors: w.sessions.filter((s) => s.ready).map((s) => ({
      ...connectorSummary(s), unavailableMappings: [...s.unavailable.values()], ...(s.certificateIssuer ? { issuer: s.certificateIssuer } : {}),
      serial: s.certificateSerial, ...(s.hostname ? { hostname: s.hostname } : {}),
    })),
    listenerFailures: w.listenerFailures,
    ...(w.trust ? { trust: w.trust.cas, ...(w.trust.issuer ? { issuer: w.trust.issuer } : {}) } : {}),
  });
}

/**
 * Cuts `raw` to REPORT_LIMITS: sessions after the first 256 and unavailable
 * entries after the first 1024 are left out, messages are cleaned, shortened to
 * 256 characters and left out once 32 Ki characters are used, other strings
 * are shortened. The result is validated with the operator's own schema; if
 * it still fails (a bug), a report without the failing detail goes out.
 */
export function fitReport(raw: WorkerReport): BuiltReport {
  const dropped: Required<ReportDropped> = { sessions: 0, unavailableMappings: 0, listenerFailures: 0, messages: 0 };
  let budget: number = REPORT_LIMITS.messageCharsTotal;
  let entriesLeft: number = REPORT_LIMITS.unavailableMappings;
  const message = (text: string): string | undefined => {
    const long = text.length > REPORT_LIMITS.messageChars;
    const cut = reportText(text);
    if (cut.length > budget) {
      dropped.messages++;
      return undefined;
    }
    if (long) dropped.messages++;
    budget -= cut.length;
    return cut;
  };
  const sessions = raw.connectors.slice(0, REPORT_LIMITS.sessions);
  dropped.sessions = raw.connectors.length - sessions.length;
  const connectors: ReportedConnector[] = sessions.map((c) => {
    const kept = c.unavailableMappings.slice(0, entriesLeft);
    dropped.unavailableMappings += c.unavailableMappings.length - kept.length;
    entriesLeft -= kept.length;
    return {
      name: c.name,
      session: c.session.slice(0, REPORT_LIMITS.sessionChars),
      since: c.since.slice(0, REPORT_LIMITS.sinceChars),
      version: c.version,
      address: c.address.slice(0, REPORT_LIMITS.addressChars),
      ...(c.issuer ? { issuer: c.issuer } : {}),
      ...(c.serial ? { serial: c.serial.slice(0, REPORT_LIMITS.serialChars) } : {}),
      ...(c.hostname ? { hostname: c.hostname.replace(/[^A-Za-z0-9._-]/g, '').slice(0, REPORT_LIMITS.hostnameChars) } : {}),
      unavailableMappings: kept.map((u) => {
        const text = u.message === undefined ? undefined : message(u.message);
        return { name: u.name, state: u.state, ...(u.reason !== undefined ? { reason: u.reason } : {}), ...(text !== undefined ? { message: text } : {}) };
      }),
    };
  });
  const failures = raw.listenerFailures.slice(0, REPORT_LIMITS.listenerFailures);
  dropped.listenerFailures = raw.listenerFailures.length - failures.length;
  const listenerFailures = failures.map((f) => ({ mapping: f.mapping, message: message(f.message) ?? '' }));
  const counted = Object.fromEntries(Object.entries(dropped).filter(([, n]) => n > 0)) as ReportDropped;
  const base = {
    instance: raw.instance, version: raw.version, ready: raw.ready, draining: raw.draining,
    ...(raw.trust ? { trust: raw.trust.slice(0, REPORT_LIMITS.trustedCAs) } : {}), ...(raw.issuer ? { issuer: raw.issuer } : {}),
  };
  const full: WorkerReport = { ...base, connectors, listenerFailures, ...(Object.keys(counted).length > 0 ? { dropped: counted } : {}) };
  const problem = validationProblem(full);
  if (problem === undefined) return { report: full, dropped: counted };
  // Fallbacks: sessions without their detail, then nothing but the worker itself.
  const lean: WorkerReport = {
    ...base,
    connectors: connectors.map((c) => ({ ...c, unavailableMappings: [] })),
    listenerFailures: [],
    dropped: { ...counted, unavailableMappings: raw.connectors.reduce((n, c) => n + c.unavailableMappings.length, 0), listenerFailures: raw.listenerFailures.length },
  };
  if (validationProblem(lean) === undefined) return { report: lean, dropped: lean.dropped!, problem };
  const bare: WorkerReport = { ...base, connectors: [], listenerFailures: [], dropped: { ...lean.dropped, sessions: raw.connectors.length } };
  return { report: bare, dropped: bare.dropped!, problem };
}

function validationProblem(report: WorkerReport): string | undefined {
  const result = workerReportSchema.safeParse(report);
  if (result.success) return undefined;
  const issue = result.error.issues[0];
  return `${formatPath(issue?.path ?? []) || '(report)'}: ${issue?.message ?? 'invalid'}`;
}

/** The fields a connector has in both documents, in this order. */
function connectorSummary(s: ConnectorSession): { name: string; session: string; since: string; version: string; address: string } {
  return { name: s.connector, session: s.id, since: s.since.toISOString(), version: s.version, address: s.peer };
}
