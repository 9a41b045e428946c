/**
 * The mesh as the operator sees it (docs/ha.md): from the workers' reports,
 * which live workers each connector process holds a session with, which it
 * misses and since when, and the `Degraded` condition. Pure; the clock is
 * passed in.
 */
import type { WorkerReport } from '../tunnel/operator-channel.js';
import type { ConditionInput } from './conditions.js';
import type { MeshConnectorStatus, MeshStatus } from './types.js';

/** A connector missing a worker for longer than this makes the connection Degraded (a join takes about a second). */
export const MESH_GRACE_MS = 15_000;
/** status.mesh.connectors holds at most this many entries (the CRD's maxItems). */
export const MAX_MESH_CONNECTORS = 256;

export type TimedReport = WorkerReport & { receivedAt: number };

/**
 * `reports`: live reports; those older than `maxAgeMs` or draining are not
 * part of the worker set (the set announced to connectors uses the same rule).
 * `previous` keeps `missingSince` across reconciles.
 */
export function meshOf(reports: readonly TimedReport[], previous: MeshStatus | undefined, now: Date, maxAgeMs: number): MeshStatus {
  const workers = reports.filter((r) => !r.draining && now.getTime() - r.receivedAt <= maxAgeMs).map((r) => r.instance).sort();
  const inSet = new Set(workers);
  const byProcess = new Map<string, { name: string; host?: string; workers: Set<string> }>();
  for (const r of reports) {
    for (const c of r.connectors) {
      const key = `${c.name}\u0000${c.hostname ?? ''}`;
      let entry = byProcess.get(key);
      if (!entry) byProcess.set(key, (entry = { name: c.name, ...(c.hostname ? { host: c.hostname } : {}), workers: new Set() }));
      if (inSet.has(r.instance)) entry.workers.add(r.instance);
    }
  }
  const before = new Map((previous?.connectors ?? []).map((c) => [`${c.name}\u0000${c.host ?? ''}`, c]));
  const connectors: MeshConnectorStatus[] = [...byProcess.entries()].map(([key, e]) => {
    const missing = workers.filter((w) => !e.workers.has(w));
    const since = missing.length > 0 ? (before.get(key)?.missingSince ?? now.toISOString()) : undefined;
    return { name: e.name, ...(e.host ? { host: e.host } : {}), workers: [...e.workers].sort(), missing, ...(since ? { missingSince: since } : {}) };
  });
  connectors.sort((a, b) => a.name.localeCompare(b.name) || (a.host ?? '').localeCompare(b.host ?? ''));
  return { workers, connectors: connectors.slice(0, MAX_MESH_CONNECTORS) };
}

/**
 * Degraded: True when a connector has missed a worker for longer than
 * `graceMs`. `recheckMs`: when the condition could flip without a new report
 * (a connector reaching the grace period), for the requeue.
 */
export function degradedCondition(mesh: MeshStatus, now: Date, graceMs = MESH_GRACE_MS): { condition: ConditionInput; recheckMs?: number } {
  if (mesh.workers.length === 0) {
    return { condition: { type: 'Degraded', status: 'False', reason: 'NoWorkers', message: 'no worker has reported yet' } };
  }
  if (mesh.connectors.length === 0) {
    return { condition: { type: 'Degraded', status: 'False', reason: 'NoConnectors', message: 'no connector is connected' } };
  }
  const incomplete = mesh.connectors.filter((c) => c.missing.length > 0);
  const overdue = incomplete.filter((c) => now.getTime() - Date.parse(c.missingSince ?? now.toISOString()) > graceMs);
  const who = (c: MeshConnectorStatus): string => `connector ${c.name}${c.host ? ` (${c.host})` : ''}`;
  if (overdue.length > 0) {
    const message = overdue.map((c) => `${who(c)} has no session with ${c.missing.join(', ')} (since ${c.missingSince})`).join('; ');
    return { condition: { type: 'Degraded', status: 'True', reason: 'ConnectorsMissWorkers', message: `${message}; see docs/ha.md` } };
  }
  if (incomplete.length > 0) {
    const next = Math.min(...incomplete.map((c) => Date.parse(c.missingSince!) + graceMs - now.getTime()));
    return {
      condition: { type: 'Degraded', status: 'False', reason: 'Joining', message: incomplete.map((c) => `${who(c)} is joining ${c.missing.join(', ')}`).join('; ') },
      recheckMs: Math.max(1_000, next + 1),
    };
  }
  return {
    condition: {
      type: 'Degraded', status: 'False', reason: 'FullMesh',
      message: `each of ${mesh.connectors.length} connector(s) has a session with each of ${mesh.workers.length} worker(s)`,
    },
  };
}
