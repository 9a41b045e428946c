/**
 * What the worker does as a connector session goes through its life: keepalive
 * round trips and session counts in the metrics, the mapping set pushed once the
 * handshake is done, streams served, a log line and an audit line when it opens
 * and closes (or is denied), the limits its peer runs into counted, and the
 * operator report refreshed whenever what it shows changes.
 *
 * What a peer provokes is bounded: mapping-status warnings are one line per
 * message (at most MAPPING_STATUS_LINES entries named) and at most
 * MAPPING_STATUS_BURST messages per session and minute; refused handshakes are
 * written one by one at most DENIALS_BURST times per source address, reason and
 * interval, the rest summed up in one `session-denied` line with a `count`.
 * Text the peer chose is copied capped (capText).
 */
import type { Logger } from 'pino';
import type { AuditLog } from '../tunnel/audit.js';
import type { ConfigMessage, MappingStatusEntry, RenewMessage, TrustMessage } from '../tunnel/control.js';
import { errorCode } from '../tunnel/errors.js';
import { capText, LIMIT_OF_ERROR_CODE, type LimitName } from '../tunnel/limits.js';
import { LineLimiter } from '../tunnel/log-limit.js';
import type { TunnelMetrics } from '../tunnel/metrics.js';
import { ownerSlot } from '../tunnel/owner.js';
import type { Channel } from '../tunnel/mux/channel.js';
import type { Session } from '../tunnel/mux/session.js';
import type { OpenRequest } from '../tunnel/open.js';
import { serveStream, type FlowEnv, type Resolution } from '../tunnel/stream-flow.js';
import type { ConnectorSession } from './connector-session.js';
import type { SessionRegistry } from './session-registry.js';
import type { Denial } from './tunnel-server.js';

/** The worker as its sessions see it. */
export interface SessionHost {
  readonly connection: string;
  readonly instance: string;
  readonly log: Logger;
  readonly audit: AuditLog;
  readonly metrics: TunnelMetrics;
  readonly registry: SessionRegistry;
  readonly env: FlowEnv;
  configMessage(): ConfigMessage;
  /** The CA certificates connectors should trust now (pushed at the handshake and on change). */
  trustMessage(): TrustMessage | undefined;
  /** A connector's renewal request (worker/renewals.ts). */
  renew(session: ConnectorSession, msg: RenewMessage): void;
  /** Something the operator report shows has changed. */
  reportChanged(): void;
  resolveClusterTarget(req: OpenRequest): Resolution | Promise<Resolution>;
}

const hosts = ownerSlot<SessionHost>('underpass.session-host');

/** Entries named in one mapping-status warning; the rest are counted in it. */
export const MAPPING_STATUS_LINES = 10;
/** mapping-status warnings per session and MAPPING_STATUS_INTERVAL_MS; more are counted. */
export const MAPPING_STATUS_BURST = 5;
export const MAPPING_STATUS_INTERVAL_MS = 60_000;
/** Refused handshakes written one by one per source address, reason and DENIALS_INTERVAL_MS. */
export const DENIALS_BURST = 5;
export const DENIALS_INTERVAL_MS = 10_000;
/** Source addresses tracked at once; more share one summary. */
const DENIAL_SOURCES = 1024;

const statusLimiters = new WeakMap<ConnectorSession, LineLimiter>();
const denialLimiters = new WeakMap<SessionHost, LineLimiter>();

/**
 * Subscribes the worker to `session` (already in the registry). The listeners are shared by all
 * sessions and find the host through the session (tunnel/owner.ts): an idle session keeps no
 * closures (docs/benchmarks.md, idle sessions).
 */
export function wireSession(host: SessionHost, session: ConnectorSession): void {
  hosts.set(session, host);
  hosts.set(session.mux, host);
  session.mux.on('limit', onLimit);
  session.on('rtt', onRtt);
  session.on('ready', onReady);
  session.on('mapping-status', onMappingStatus);
  session.on('stream', onStream);
  session.on('renew', onRenew);
  session.on('close', onClose);
}

function onRenew(this: ConnectorSession, msg: RenewMessage): void {
  hosts.of(this).renew(this, msg);
}

function onLimit(this: Session, limit: LimitName): void {
  hosts.of(this).metrics.limitHit(limit);
}

function onRtt(this: ConnectorSession, ms: number): void {
  hosts.of(this).metrics.keepaliveRtt.set({ peer: this.connector }, ms / 1000);
}

function onReady(this: ConnectorSession): void {
  sessionReady(hosts.of(this), this);
}

function onMappingStatus(this: ConnectorSession, entries: MappingStatusEntry[]): void {
  mappingStatus(hosts.of(this), this, entries);
}

function onStream(this: ConnectorSession, channel: Channel): void {
  const host = hosts.of(this);
  serveStream(host.env, { connector: this.connector, worker: host.instance }, channel, (req) => host.resolveClusterTarget(req));
}

function onClose(this: ConnectorSession, err: Error | undefined): void {
  sessionClosed(hosts.of(this), this, err);
}

function sessionReady(host: SessionHost, session: ConnectorSession): void {
  host.metrics.sessions.inc({ role: 'worker' });
  session.sendConfig(host.configMessage());
  const trust = host.trustMessage();
  if (trust) session.sendControl(trust);
  host.reportChanged();
  const version = capText(session.version, 64);
  host.log.info({ connector: session.connector, peer: session.peer, session: session.id, version },
    `connector "${session.connector}" connected from ${session.peer} (version ${version})`);
  host.audit.write({ event: 'session-opened', connection: host.connection, connector: session.connector, worker: host.instance, peer: session.peer, session: session.id });
}

function mappingStatus(host: SessionHost, session: ConnectorSession, entries: MappingStatusEntry[]): void {
  host.reportChanged();
  const problems = entries.filter((x) => x.state !== 'Ready');
  if (problems.length === 0) return;
  if (!statusLimiter(host, session).allow('mapping-status')) {
    host.metrics.logLinesSuppressed.inc({ kind: 'mapping-status' });
    return;
  }
  // One line per message, whatever its size: the first entries named (their text capped), the rest counted.
  const named = problems.slice(0, MAPPING_STATUS_LINES).map((e) =>
    `"${capText(e.name, 64)}": ${e.state}${e.reason ? ` (${capText(e.reason, 64)})` : ''}${e.message ? `: ${capText(e.message)}` : ''}`);
  const more = problems.length - named.length;
  host.log.warn({ connector: session.connector, mappings: problems.length, names: problems.slice(0, MAPPING_STATUS_LINES).map((e) => capText(e.name, 64)) },
    `connector "${session.connector}" cannot serve ${problems.length} mapping(s): ${named.join('; ')}${more > 0 ? `; and ${more} more` : ''}`);
}

function statusLimiter(host: SessionHost, session: ConnectorSession): LineLimiter {
  let limiter = statusLimiters.get(session);
  if (!limiter) {
    limiter = new LineLimiter({
      burst: MAPPING_STATUS_BURST,
      intervalMs: MAPPING_STATUS_INTERVAL_MS,
      maxKeys: 1,
      overflowKey: 'mapping-status',
      onSummary: (_key, count, intervalMs) => host.log.warn({ connector: session.connector, count },
        `connector "${session.connector}" sent ${count} more mapping-status messages with problems in ${intervalMs / 1000} s; not logged one by one`),
    });
    statusLimiters.set(session, limiter);
  }
  return limiter;
}

function sessionClosed(host: SessionHost, session: ConnectorSession, err: Error | undefined): void {
  const limit = LIMIT_OF_ERROR_CODE[errorCode(err) ?? ''];
  if (limit) host.metrics.limitHit(limit);
  statusLimiters.get(session)?.flush();
  const wasReady = host.registry.all.includes(session) && session.version !== '';
  host.registry.remove(session);
  if (!wasReady) return;
  host.reportChanged();
  host.metrics.sessions.dec({ role: 'worker' });
  const durationMs = Date.now() - session.since.getTime();
  host.log.info({ connector: session.connector, session: session.id, err: err?.message },
    `connector "${session.connector}" disconnected${err ? `: ${err.message}` : ''}`);
  host.audit.write({
    event: 'session-closed', connection: host.connection, connector: session.connector, worker: host.instance,
    peer: session.peer, session: session.id, durationMs, ...(err ? { reason: (err as { code?: string }).code ?? 'ERROR', message: err.message } : {}),
  });
}

/**
 * A connector the tunnel server turned away (TLS or HTTP, or a limit before TLS). Counted always;
 * written one by one up to DENIALS_BURST per source address and reason and interval, the rest in
 * one summary line per interval.
 */
export function sessionDenied(host: SessionHost, d: Denial): void {
  host.metrics.handshakeFailures.inc({ reason: d.reason });
  if (d.limit) host.metrics.limitHit(d.limit);
  if (!denialLimiter(host).allow(`${sourceOf(d.peer)}|${d.reason}`)) {
    host.metrics.logLinesSuppressed.inc({ kind: 'session-denied' });
    return;
  }
  const message = capText(d.message, 512);
  host.log.warn({ peer: d.peer, reason: d.reason, status: d.status }, `refused tunnel connection from ${d.peer}: ${message}`);
  host.audit.write({ event: 'session-denied', connection: host.connection, worker: host.instance, peer: d.peer, reason: d.reason, message });
}

function denialLimiter(host: SessionHost): LineLimiter {
  let limiter = denialLimiters.get(host);
  if (!limiter) {
    limiter = new LineLimiter({
      burst: DENIALS_BURST,
      intervalMs: DENIALS_INTERVAL_MS,
      maxKeys: DENIAL_SOURCES,
      overflowKey: '(other sources)|(any)',
      onSummary: (key, count, intervalMs) => {
        const [source, reason] = key.split('|') as [string, string];
        const message = `${count} more refused tunnel connections (${reason}) from ${source} in ${intervalMs / 1000} s, not logged one by one`;
        host.log.warn({ peer: source, reason, count }, message);
        host.audit.write({ event: 'session-denied', connection: host.connection, worker: host.instance, peer: source, reason, message, count, intervalMs });
      },
    });
    denialLimiters.set(host, limiter);
  }
  return limiter;
}

/** "10.1.2.3:4567" → "10.1.2.3", "[fd00::1]:443" → "fd00::1": denials are summed up per address. */
function sourceOf(peer: string): string {
  if (peer.startsWith('[')) return peer.slice(1, peer.indexOf(']'));
  const colon = peer.lastIndexOf(':');
  return colon > 0 ? peer.slice(0, colon) : peer;
}
