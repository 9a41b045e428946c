/**
 * What the worker does as a connector session goes through its life: keepalive
 * round trips and session counts in the metrics, the mapping set pushed once the
 * handshake is done, streams served, a log line and an audit line when it opens
 * and closes (or is denied), and the operator report refreshed whenever what it
 * shows changes.
 */
import type { Logger } from 'pino';
import type { AuditLog } from '../tunnel/audit.js';
import type { ConfigMessage, MappingStatusEntry } from '../tunnel/control.js';
import type { TunnelMetrics } from '../tunnel/metrics.js';
import { ownerSlot } from '../tunnel/owner.js';
import type { Channel } from '../tunnel/mux/channel.js';
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
  /** Something the operator report shows has changed. */
  reportChanged(): void;
  resolveClusterTarget(req: OpenRequest): Resolution;
}

const hosts = ownerSlot<SessionHost>('underpass.session-host');

/**
 * Subscribes the worker to `session` (already in the registry). The listeners are shared by all
 * sessions and find the host through the session (tunnel/owner.ts): an idle session keeps no
 * closures (docs/benchmarks.md, idle sessions).
 */
export function wireSession(host: SessionHost, session: ConnectorSession): void {
  hosts.set(session, host);
  session.on('rtt', onRtt);
  session.on('ready', onReady);
  session.on('mapping-status', onMappingStatus);
  session.on('stream', onStream);
  session.on('close', onClose);
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
  host.reportChanged();
  host.log.info({ connector: session.connector, peer: session.peer, session: session.id, version: session.version },
    `connector "${session.connector}" connected from ${session.peer} (version ${session.version})`);
  host.audit.write({ event: 'session-opened', connection: host.connection, connector: session.connector, worker: host.instance, peer: session.peer, session: session.id });
}

function mappingStatus(host: SessionHost, session: ConnectorSession, entries: MappingStatusEntry[]): void {
  host.reportChanged();
  for (const e of entries.filter((x) => x.state !== 'Ready')) {
    host.log.warn({ connector: session.connector, mapping: e.name, state: e.state, reason: e.reason },
      `connector "${session.connector}" cannot serve mapping "${e.name}": ${e.state}${e.reason ? ` (${e.reason})` : ''}${e.message ? `: ${e.message}` : ''}`);
  }
}

function sessionClosed(host: SessionHost, session: ConnectorSession, err: Error | undefined): void {
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

/** A connector the tunnel server turned away (TLS or HTTP). */
export function sessionDenied(host: SessionHost, d: Denial): void {
  host.metrics.handshakeFailures.inc({ reason: d.reason });
  host.log.warn({ peer: d.peer, reason: d.reason, status: d.status }, `refused tunnel connection from ${d.peer}: ${d.message}`);
  host.audit.write({ event: 'session-denied', connection: host.connection, worker: host.instance, peer: d.peer, reason: d.reason, message: d.message });
}
