/**
 * Which ApplicationMappings a TunnelConnection serves, and why the others are
 * not served. Pure: the oldest mapping keeps a contested listener (then by
 * name), so adding a mapping can never take a port from one that works.
 */
import { formatHostPort, listenersOverlap } from '../tunnel/address.js';
import { mappingSchema, type Mapping } from '../tunnel/mapping.js';
import { RESERVED_WORKER_PORTS } from './names.js';
import type { ApplicationMapping } from './types.js';

export type MappingProblemReason = 'InvalidSpec' | 'UnsupportedProtocol' | 'PortConflict' | 'ConnectionNotFound';

export interface MappingVerdict {
  am: ApplicationMapping;
  mapping?: Mapping;
  problem?: { reason: MappingProblemReason; message: string };
}

export function byAge(a: ApplicationMapping, b: ApplicationMapping): number {
  const ta = String(a.metadata.creationTimestamp ?? '');
  const tb = String(b.metadata.creationTimestamp ?? '');
  return ta === tb ? a.metadata.name.localeCompare(b.metadata.name) : ta < tb ? -1 : 1;
}

export function resolveMappings(ams: readonly ApplicationMapping[]): MappingVerdict[] {
  const accepted: MappingVerdict[] = [];
  const out: MappingVerdict[] = [];
  for (const am of [...ams].sort(byAge)) {
    const verdict = convert(am);
    if (verdict.mapping) {
      const m = verdict.mapping;
      if (m.target.side === 'Connector' && RESERVED_WORKER_PORTS.includes(m.listen.port)) {
        verdict.problem = { reason: 'PortConflict', message: `listen.port ${m.listen.port} is reserved on the worker (tunnel ${RESERVED_WORKER_PORTS[0]}, admin ${RESERVED_WORKER_PORTS[1]})` };
        delete verdict.mapping;
      } else {
        const clash = accepted.find((a) => a.mapping!.target.side === m.target.side
          && listenersOverlap({ host: a.mapping!.listen.address, port: a.mapping!.listen.port }, { host: m.listen.address, port: m.listen.port }));
        if (clash) {
          verdict.problem = {
            reason: 'PortConflict',
            message: `listener ${formatHostPort({ host: m.listen.address, port: m.listen.port })} on the ${m.target.side === 'Connector' ? 'worker' : 'connector'} side is already taken by ApplicationMapping ${clash.am.metadata.name} (older)`,
          };
          delete verdict.mapping;
        } else {
          accepted.push(verdict);
        }
      }
    }
    out.push(verdict);
  }
  return out;
}

function convert(am: ApplicationMapping): MappingVerdict {
  const s = am.spec;
  if (s.protocol === 'UDP') return { am, problem: { reason: 'UnsupportedProtocol', message: 'protocol UDP is not supported yet; use TCP' } };
  const parsed = mappingSchema.safeParse({
    name: am.metadata.name,
    protocol: s.protocol ?? 'TCP',
    target: s.target,
    listen: { port: s.listen?.port, ...(s.listen?.address ? { address: s.listen.address } : {}) },
    allowedSources: s.allowedSources ?? [],
  });
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const field = issue.path.join('.') || 'spec';
    const where = field === 'name' ? 'metadata.name (used as the mapping name)' : `spec.${field}`;
    return { am, problem: { reason: 'InvalidSpec', message: `${where}: ${issue.message}` } };
  }
  return { am, mapping: parsed.data };
}
