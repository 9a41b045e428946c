/**
 * Which Cluster-side targets a mapping may name: the operator's check, before
 * a mapping is served (a refused one gets Ready False, reason
 * TargetNotAllowed). Two more layers follow it: the worker checks the address
 * it resolved at dial time (worker/cluster-target-guard.ts), and the worker
 * egress NetworkPolicy (operator/desired.ts) lets only these targets through.
 *
 * A target is placed by how cluster DNS answers it from a worker pod, whose
 * resolv.conf searches <ns>.svc.<domain>, svc.<domain>, <domain>:
 *
 *   <svc>                               Service <svc> in the mapping's namespace
 *   <svc>.<ns>                          Service <svc> in namespace <ns>
 *   <pod>.<svc>.<ns>                    a pod behind Service <svc> in <ns> (found through svc.<domain>)
 *   <svc>.<ns>.svc[.<domain>]           Service <svc> in <ns>
 *   <pod>.<svc>.<ns>.svc[.<domain>]     a pod behind Service <svc> in <ns>
 *   <a-b-c-d>.<ns>.pod[.<domain>]       a pod of <ns> by address
 *   an IP literal                       an address: only inside `cidrs`, or with namespaces '*'
 *   any other name (db.example.com)     outside the cluster: only with namespaces '*'
 *
 * Allowed by default: the mapping's own namespace only. `namespaces` (the
 * operator's --cluster-target-namespace) adds namespaces; '*' allows any
 * namespace, address and name. Never allowed, even with '*': the API server
 * (the `kubernetes` Service in `default` by any of its names, its ClusterIP and
 * its endpoints' addresses), localhost, loopback and unspecified addresses
 * (the worker pod itself), link-local and cloud metadata addresses.
 */
import type * as k8s from '@kubernetes/client-node';
import { formatHostPort } from '../tunnel/address.js';
import { CidrSet, ipFamily, parseCidr, unmapIpv4 } from '../tunnel/cidr.js';
import { GUARDED_BLOCKS, guardedAddress } from '../tunnel/guarded-addresses.js';
import type { Mapping } from '../tunnel/mapping.js';

export const ANY_NAMESPACE = '*';
export const DEFAULT_CLUSTER_DOMAIN = 'cluster.local';
export const NAMESPACE_NAME_LABEL = 'kubernetes.io/metadata.name';

export interface ClusterTargetPolicy {
  /** Namespaces targets may be in besides the mapping's own; '*' = no restriction but the never-allowed. */
  namespaces: readonly string[] | typeof ANY_NAMESPACE;
  /** Blocks an IP-literal target may be in (normalised CIDRs). */
  cidrs: readonly string[];
  /** The cluster's DNS domain (kubelet --cluster-domain). */
  clusterDomain: string;
}

export const DEFAULT_CLUSTER_TARGET_POLICY: ClusterTargetPolicy = { namespaces: [], cidrs: [], clusterDomain: DEFAULT_CLUSTER_DOMAIN };

/** Where a target is, as far as the egress NetworkPolicy is concerned. */
export type ClusterTarget =
  | { kind: 'namespace'; namespace: string; service?: string }
  | { kind: 'ip'; ip: string }
  | { kind: 'external' };

export type ClusterTargetVerdict = { ok: true; target: ClusterTarget } | { ok: false; message: string };

/** Where DNS would find `host` from a worker pod in `namespace` (names only; see the table above). */
export function placeName(host: string, namespace: string, clusterDomain: string): Exclude<ClusterTarget, { kind: 'ip' }> {
  const domain = `.${clusterDomain}`;
  let name = host;
  let qualified = false;
  if (name.endsWith(domain)) {
    name = name.slice(0, -domain.length);
    qualified = true;
  }
  const labels = name.split('.');
  const last = labels[labels.length - 1];
  if ((last === 'svc' || last === 'pod') && labels.length >= 3) {
    const ns = labels[labels.length - 2]!;
    const service = last === 'svc' ? labels[labels.length - 3] : undefined;
    if (last === 'pod' ? labels.length === 3 : labels.length <= 4) return { kind: 'namespace', namespace: ns, ...(service ? { service } : {}) };
    return { kind: 'external' };
  }
  // Under the cluster domain but not a Service or pod name: nothing in the cluster answers it.
  if (qualified) return { kind: 'external' };
  if (labels.length === 1) return { kind: 'namespace', namespace, service: labels[0]! };
  if (labels.length === 2) return { kind: 'namespace', namespace: labels[1]!, service: labels[0]! };
  if (labels.length === 3) return { kind: 'namespace', namespace: labels[2]!, service: labels[1]! };
  return { kind: 'external' };
}

/**
 * The operator's verdict on a Cluster-side mapping of `namespace`.
 * `apiServer`: the addresses of the Kubernetes API server (Service ClusterIP
 * and endpoints), as operator/api-server.ts last read them.
 */
export function checkClusterTarget(m: Mapping, namespace: string, policy: ClusterTargetPolicy, apiServer: readonly string[]): ClusterTargetVerdict {
  const { host, port } = m.target;
  const target = formatHostPort({ host, port });
  const any = policy.namespaces === ANY_NAMESPACE;
  if (ipFamily(host) !== 0) {
    const ip = unmapIpv4(host);
    const guarded = guardedAddress(ip);
    if (guarded) return refuse(`target ${target} is ${guarded.replace('connector host', 'worker pod')}; workers never dial it`);
    if (apiServer.includes(ip)) return refuse(`target ${target} is an address of the Kubernetes API server; workers never dial it`);
    if (any || new CidrSet([...policy.cidrs]).contains(ip)) return { ok: true, target: { kind: 'ip', ip } };
    return refuse(`target ${target} is an IP address outside the blocks the cluster admin allows for Cluster-side targets (${policy.cidrs.length > 0 ? policy.cidrs.join(', ') : 'none'}; operator flag --cluster-target-cidr); name a Service instead, e.g. <service>.${namespace}.svc`);
  }
  if (host === 'localhost' || host.endsWith('.localhost')) return refuse(`target ${target} is the worker pod itself; workers never dial it`);
  const place = placeName(host, namespace, policy.clusterDomain);
  if (place.kind === 'namespace' && place.namespace === 'default' && place.service === 'kubernetes') {
    return refuse(`target ${target} is the Kubernetes API server (Service default/kubernetes); workers never dial it`);
  }
  const allowed = policy.namespaces;
  if (allowed === ANY_NAMESPACE) return { ok: true, target: place };
  if (place.kind === 'external') {
    return refuse(`target ${target} is not a Service or pod name of this cluster (<service>, <service>.<namespace>, <service>.<namespace>.svc.${policy.clusterDomain}); names outside the cluster need the cluster admin's --cluster-target-namespace='*'`);
  }
  if (place.namespace === namespace || allowed.includes(place.namespace)) return { ok: true, target: place };
  const others = allowed.length > 0 ? ` and ${allowed.join(', ')}` : '';
  return refuse(`target ${target} is in namespace ${place.namespace}; Cluster-side targets may be in this mapping's namespace (${namespace})${others} only (the cluster admin can allow more: operator flag --cluster-target-namespace)`);
}

function refuse(message: string): ClusterTargetVerdict {
  return { ok: false, message };
}

/**
 * The egress rule that lets a worker reach `target` (after kube-proxy's DNAT,
 * NetworkPolicies see the pod behind a Service, not the ClusterIP):
 *  - in a namespace: every pod of that namespace, on every port (the Service's
 *    targetPort may differ from the mapping's port, and the operator does not
 *    read other namespaces' Services); the worker itself dials only the
 *    mapping's host and port;
 *  - an IP: that address, on the mapping's port (a ClusterIP given as an IP
 *    does not match after DNAT: name the Service instead);
 *  - a name outside the cluster ('*' only): any address but the never-allowed
 *    ones, on the mapping's port.
 */
export function egressRuleFor(target: ClusterTarget, port: number, apiServer: readonly string[]): k8s.V1NetworkPolicyEgressRule {
  if (target.kind === 'namespace') return { to: [{ namespaceSelector: { matchLabels: { [NAMESPACE_NAME_LABEL]: target.namespace } } }] };
  const ports = [{ port, protocol: 'TCP' }];
  if (target.kind === 'ip') return { to: [{ ipBlock: { cidr: `${target.ip}/${ipFamily(target.ip) === 4 ? 32 : 128}` } }], ports };
  return { to: [4, 6].map((family) => ({ ipBlock: { cidr: family === 4 ? '0.0.0.0/0' : '::/0', except: neverAllowed(family as 4 | 6, apiServer) } })), ports };
}

/** The blocks an egress rule to "anywhere" must leave out: guarded addresses and the API server. */
export function neverAllowed(family: 4 | 6, apiServer: readonly string[]): string[] {
  const blocks = GUARDED_BLOCKS.filter((b) => (b.family === 'ipv4') === (family === 4)).map((b) => `${b.address}/${b.prefix}`);
  // ::/128 is the whole of ::/0 at prefix 0 only in name; an except entry must be a strict subset.
  const api = apiServer.filter((ip) => ipFamily(ip) === family).map((ip) => `${ip}/${family === 4 ? 32 : 128}`);
  return [...new Set([...blocks, ...api])].filter((c) => parseCidr(c).prefix > 0);
}
