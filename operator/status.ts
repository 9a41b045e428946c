/**
 * Status of a TunnelConnection and its ApplicationMappings, computed from
 * what the operator observed (pure; the clock is passed in). Ready is a chain
 * of small checks; the first that fails gives Ready its reason.
 */
import type * as k8s from '@kubernetes/client-node';
import { formatHostPort } from '../tunnel/address.js';
import type { WorkerReport } from '../tunnel/operator-channel.js';
import { setConditions, type ConditionInput } from './conditions.js';
import type { MappingVerdict } from './mapping-resolution.js';
import { namesFor } from './names.js';
import type { ApplicationMapping, ApplicationMappingStatus, ConnectorStatus, TunnelConnection, TunnelConnectionStatus } from './types.js';

export interface Observed {
  tc: TunnelConnection;
  verdicts: MappingVerdict[];
  deployment: k8s.V1Deployment | undefined;
  tunnelService: k8s.V1Service | undefined;
  /** Live worker reports (stale ones already dropped). */
  reports: WorkerReport[];
  /** False right after the operator started, before workers had a chance to report. */
  reportsKnown: boolean;
  pki: { ok: true; notAfter: Date; renewalTime: Date } | { ok: false; message: string };
  /** spec.worker settings the operator ignores (operator/worker-overrides.ts); none when absent. */
  ignoredOverrides?: readonly string[];
  now: Date;
}

/** status.connectors holds at most this many entries (the CRD's maxItems). */
export const MAX_STATUS_CONNECTORS = 1024;

/**
 * One entry per connector and worker (the list's map keys): a connector with
 * several sessions on one worker shows its newest. What workers report must
 * never make the status write fail, so the list is also cut to the CRD's limit.
 */
export function connectorsOf(reports: readonly WorkerReport[]): ConnectorStatus[] {
  const byKey = new Map<string, ConnectorStatus>();
  for (const r of reports) {
    for (const c of r.connectors) {
      const key = `${c.name}\u0000${r.instance}`;
      const before = byKey.get(key);
      if (!before || c.since > before.since) byKey.set(key, { name: c.name, worker: r.instance, since: c.since, version: c.version, address: c.address });
    }
  }
  return [...byKey.values()]
    .sort((a, b) => a.name.localeCompare(b.name) || a.worker.localeCompare(b.worker))
    .slice(0, MAX_STATUS_CONNECTORS);
}

export function endpointOf(tc: TunnelConnection, svc: k8s.V1Service | undefined): string {
  const port = tc.spec.endpoint.service.port;
  const host = tc.spec.endpoint.hosts?.[0] ?? tc.spec.endpoint.route?.host;
  if (host) return `wss://${formatHostPort({ host, port: tc.spec.endpoint.route?.host === host ? 443 : port })}`;
  const ingress = svc?.status?.loadBalancer?.ingress?.[0];
  if (ingress?.hostname || ingress?.ip) return `wss://${formatHostPort({ host: (ingress.hostname ?? ingress.ip)!, port })}`;
  if (tc.spec.endpoint.service.type === 'NodePort') {
    const nodePort = svc?.spec?.ports?.[0]?.nodePort;
    if (nodePort) return `wss://<node-address>:${nodePort}`;
  }
  return `wss://${namesFor(tc.metadata.name).tunnelService}.${tc.metadata.namespace}.svc:${port}`;
}

export function tunnelConnectionStatus(o: Observed): TunnelConnectionStatus {
  const { tc } = o;
  const previous = tc.status ?? {};
  const desired = tc.spec.replicas;
  const reporting = o.reports.filter((r) => !r.draining).length;
  const available = Math.max(o.deployment?.status?.availableReplicas ?? 0, reporting);
  // Until workers could report, keep what we knew: a restart must not flap Connected.
  const connectors = o.reportsKnown ? connectorsOf(o.reports) : (previous.connectors ?? []);

  const certs: ConditionInput = o.pki.ok
    ? { type: 'CertificatesReady', status: 'True', reason: 'Issued', message: `CA and worker certificate valid; worker certificate renews at ${o.pki.renewalTime.toISOString()}` }
    : { type: 'CertificatesReady', status: 'False', reason: 'CertificateError', message: o.pki.message };
  const workers: ConditionInput = available > 0
    ? { type: 'WorkersAvailable', status: 'True', reason: 'WorkersAvailable', message: `${available} of ${desired} worker(s) available` }
    : { type: 'WorkersAvailable', status: 'False', reason: 'NoWorkers', message: `0 of ${desired} worker(s) available (Deployment ${namesFor(tc.metadata.name).deployment}: ${o.deployment?.status?.readyReplicas ?? 0} ready, ${o.deployment?.status?.replicas ?? 0} created)` };
  const connected: ConditionInput = connectors.length > 0
    ? { type: 'Connected', status: 'True', reason: 'ConnectorsConnected', message: `${connectors.length} connector session(s): ${[...new Set(connectors.map((c) => c.name))].join(', ')}` }
    : { type: 'Connected', status: 'False', reason: 'NoConnectors', message: 'no connector is connected; start one with a bundle from `underpass connector bundle`' };
  const chain = [certs, workers, connected];
  const failed = chain.find((c) => c.status !== 'True');
  const ready: ConditionInput = failed
    ? { type: 'Ready', status: 'False', reason: failed.reason, message: failed.message }
    : { type: 'Ready', status: 'True', reason: 'Ready', message: `tunnel up: ${connected.message}` };

  // Not in Ready's chain: ignored overrides leave the workers on the operator's defaults, which work.
  const ignored = o.ignoredOverrides ?? [];
  const overrides: ConditionInput = ignored.length === 0
    ? { type: 'OverridesAccepted', status: 'True', reason: 'Accepted', message: 'every spec.worker setting is in use' }
    : { type: 'OverridesAccepted', status: 'False', reason: 'OverrideNotAllowed', message: `ignored, not allowed by the cluster admin: ${ignored.join(', ')}; the workers run with the operator's defaults for them` };

  const generation = tc.metadata.generation ?? 0;
  return {
    observedGeneration: generation,
    conditions: setConditions(previous.conditions, [ready, certs, workers, connected, overrides], generation, o.now),
    readyConnectors: new Set(connectors.map((c) => c.name)).size,
    connectors,
    workers: { desired, ready: available },
    endpoint: endpointOf(tc, o.tunnelService),
    ...(o.pki.ok ? { certificate: { notAfter: o.pki.notAfter.toISOString(), renewalTime: o.pki.renewalTime.toISOString() } } : previous.certificate ? { certificate: previous.certificate } : {}),
  };
}

/** Status for one ApplicationMapping; `reports` tell whether connectors refused it or a listener failed. */
export function mappingStatus(am: ApplicationMapping, verdict: MappingVerdict | undefined, tc: TunnelConnection | undefined, reports: readonly WorkerReport[], now: Date): ApplicationMappingStatus {
  const generation = am.metadata.generation ?? 0;
  const cond = (c: ConditionInput): ApplicationMappingStatus => ({
    observedGeneration: generation,
    conditions: setConditions(am.status?.conditions, [c], generation, now),
    ...(endpoint ? { endpoint } : {}),
  });
  const endpoint = tc && verdict?.mapping ? mappingEndpoint(tc, verdict.mapping.target.side, verdict.mapping.listen.port) : undefined;
  if (!tc) return cond({ type: 'Ready', status: 'False', reason: 'ConnectionNotFound', message: `TunnelConnection ${am.metadata.namespace}/${am.spec.connection} does not exist` });
  if (!verdict?.mapping) {
    const p = verdict?.problem ?? { reason: 'InvalidSpec', message: 'not served' };
    return cond({ type: 'Ready', status: 'False', reason: p.reason, message: p.message });
  }
  const name = verdict.mapping.name;
  const listenFailure = reports.flatMap((r) => r.listenerFailures.filter((f) => f.mapping === name).map((f) => `${r.instance}: ${f.message}`));
  if (listenFailure.length > 0) return cond({ type: 'Ready', status: 'False', reason: 'ListenFailed', message: `worker cannot listen: ${listenFailure.join('; ')}` });
  const sessions = reports.flatMap((r) => r.connectors);
  const refusals = sessions.flatMap((c) => c.unavailableMappings.filter((u) => u.name === name).map((u) => ({ connector: c.name, ...u })));
  if (sessions.length > 0 && refusals.length === sessions.length) {
    const first = refusals[0]!;
    const reason = first.state === 'Refused' ? 'RefusedByConnector' : 'ConnectorFailed';
    return cond({ type: 'Ready', status: 'False', reason, message: refusals.map((r) => `connector ${r.connector}: ${r.reason ?? r.state}${r.message ? ` (${r.message})` : ''}`).join('; ') });
  }
  const partly = refusals.length > 0 ? `; refused by ${[...new Set(refusals.map((r) => r.connector))].join(', ')}` : '';
  return cond({ type: 'Ready', status: 'True', reason: 'Ready', message: `served by TunnelConnection ${tc.metadata.name} at ${endpoint}${partly}` });
}

export function mappingEndpoint(tc: TunnelConnection, side: 'Connector' | 'Cluster', port: number): string {
  return side === 'Connector'
    ? `${namesFor(tc.metadata.name).appsService}.${tc.metadata.namespace}.svc:${port}`
    : `each connector host of ${tc.metadata.name}, port ${port}`;
}
