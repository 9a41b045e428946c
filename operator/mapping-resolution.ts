/**
 * Which ApplicationMappings a TunnelConnection serves, and why the others are
 * not served. Pure: the oldest mapping keeps a contested listener (then by
 * name), so adding a mapping can never take a port from one that works. A
 * Cluster-side target the cluster admin's policy does not allow is refused
 * first (operator/cluster-targets.ts), and so never takes a port.
 */
import { formatHostPort, listenersOverlap } from '../tunnel/address.js';
import { mappingSchema, type Mapping } from '../tunnel/mapping.js';
import { checkClusterTarget, DEFAULT_CLUSTER_TARGET_POLICY, type ClusterTarget, type ClusterTargetPolicy } from './cluster-targets.js';
import { RESERVED_WORKER_PORTS } from './names.js';
import type { AllowedNamespaces, ApplicationMapping } from './types.js';

export type MappingProblemReason = 'InvalidSpec' | 'UnsupportedProtocol' | 'PortConflict' | 'ConnectionNotFound' | 'TargetNotAllowed';

/** Who may reach a Connector-side listener, as the NetworkPolicy says it. */
export interface MappingSources {
  /** spec.allowedSources (normalised). */
  cidrs: string[];
  namespaces?: AllowedNamespaces;
}

export interface MappingVerdict {
  am: ApplicationMapping;
  /**
   * What workers serve. Its allowedSources are the worker's own check: the
   * spec's CIDRs, or none when spec.allowedNamespaces is set (a worker cannot
   * see a client's namespace; the NetworkPolicy alone decides then).
   */
  mapping?: Mapping;
  problem?: { reason: MappingProblemReason; message: string };
  /** Connector-side: who may connect (the NetworkPolicy's ingress rule). */
  sources?: MappingSources;
  /** Cluster-side: where the target is (the NetworkPolicy's egress rule). */
  clusterTarget?: ClusterTarget;
}

/** A served mapping with what the NetworkPolicy needs of it. */
export type ServedMapping = Omit<MappingVerdict, 'am' | 'mapping' | 'problem'> & { mapping: Mapping };

/** What the cluster admin allows (operator flags) and what the operator observed. */
export interface ResolutionPolicy {
  clusterTargets: ClusterTargetPolicy;
  /** Addresses of the Kubernetes API server (operator/api-server.ts). */
  apiServer: readonly string[];
}

export const DEFAULT_RESOLUTION_POLICY: ResolutionPolicy = { clusterTargets: DEFAULT_CLUSTER_TARGET_POLICY, apiServer: [] };

export function byAge(a: ApplicationMapping, b: ApplicationMapping): number {
  const ta = String(a.metadata.creationTimestamp ?? '');
  const tb = String(b.metadata.creationTimestamp ?? '');
  return ta === tb ? a.metadata.name.localeCompare(b.metadata.name) : ta < tb ? -1 : 1;
}

export function resolveMappings(ams: readonly ApplicationMapping[], policy: ResolutionPolicy = DEFAULT_RESOLUTION_POLICY): MappingVerdict[] {
  const accepted: MappingVerdict[] = [];
  const out: MappingVerdict[] = [];
  for (const am of [...ams].sort(byAge)) {
    const verdict = convert(am);
    if (verdict.mapping) {
      const m = verdict.mapping;
      const target = m.target.side === 'Cluster' ? checkClusterTarget(m, am.metadata.namespace, policy.clusterTargets, policy.apiServer) : undefined;
      if (target && !target.ok) {
        verdict.problem = { reason: 'TargetNotAllowed', message: target.message };
        delete verdict.mapping;
      } else if (m.target.side === 'Connector' && RESERVED_WORKER_PORTS.includes(m.listen.port)) {
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
          if (target?.ok) verdict.clusterTarget = target.target;
          accepted.push(verdict);
        }
      }
    }
    out.push(verdict);
  }
  return out;
}

/** The served mappings of a resolution, with what the NetworkPolicy needs of each. */
export function servedMappings(verdicts: readonly MappingVerdict[]): ServedMapping[] {
  return verdicts.filter((v) => v.mapping).map(({ mapping, sources, clusterTarget }) => ({
    mapping: mapping!, ...(sources ? { sources } : {}), ...(clusterTarget ? { clusterTarget } : {}),
  }));
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
  const mapping = parsed.data;
  if (mapping.target.side !== 'Connector') return { am, mapping };
  const namespaces = s.allowedNamespaces;
  const sources: MappingSources = { cidrs: mapping.allowedSources, ...(namespaces ? { namespaces } : {}) };
  // With namespaces the CIDRs widen who may connect; the worker, blind to namespaces, must not narrow it.
  return { am, mapping: namespaces ? { ...mapping, allowedSources: [] } : mapping, sources };
}
