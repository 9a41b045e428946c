/**
 * The operator's cluster-admin settings for tenants (issue 15 finding 9),
 * parsed and checked once here: where Cluster-side targets may be, the worker
 * NetworkPolicy (metrics scrapers, egress to DNS), and which spec.worker
 * settings a TunnelConnection may override. docs/operator.md lists them; the
 * chart's values map onto them.
 *
 * Label selectors are written as `key=value[,key=value]` (equality only, as
 * `kubectl get -l`); an empty string selects nothing (the peer is left out).
 */
import type * as k8s from '@kubernetes/client-node';
import { isDns1123Label, parsePort } from '../tunnel/address.js';
import { formatCidr, parseCidr } from '../tunnel/cidr.js';
import { ConfigError, errorMessage } from '../tunnel/errors.js';
import { ANY_NAMESPACE, NAMESPACE_NAME_LABEL, type ClusterTargetPolicy } from '../operator/cluster-targets.js';
import { OVERRIDABLE_FIELDS, type OverridableField, type OverridePolicy } from '../operator/worker-overrides.js';
import type { OperatorOptions } from '../operator/operator.js';

export interface PolicyFlags {
  clusterTargetNamespace: string[];
  clusterTargetCidr: string[];
  clusterDomain: string;
  metricsNamespaceSelector: string;
  workerEgress: boolean;
  workerDnsNamespaceSelector: string;
  workerDnsPodSelector: string;
  workerDnsCidr: string[];
  workerDnsPort: string[];
  workerOverrides: string;
  workerImagePrefix: string[];
}

export const POLICY_DEFAULTS = {
  metricsNamespaceSelector: 'underpass.dev/metrics-scraper=true',
  workerDnsNamespaceSelector: `${NAMESPACE_NAME_LABEL}=kube-system`,
  workerDnsPodSelector: 'k8s-app=kube-dns',
  workerDnsPort: ['53'],
  workerOverrides: 'resources',
  clusterDomain: 'cluster.local',
} as const;

const QUALIFIED_NAME = /^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;
const LABEL_VALUE = /^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$/;

/** `k=v,k2=v2` → {matchLabels}; '' → undefined (selects nothing). */
export function parseLabelSelector(text: string, field: string): k8s.V1LabelSelector | undefined {
  if (text.trim() === '') return undefined;
  const matchLabels: Record<string, string> = {};
  for (const part of text.split(',')) {
    const eq = part.indexOf('=');
    const key = (eq < 0 ? part : part.slice(0, eq)).trim();
    const value = eq < 0 ? undefined : part.slice(eq + 1).trim().replace(/^=/, '');
    if (value === undefined) throw new ConfigError(`"${part}" is not key=value (a label selector such as underpass.dev/metrics-scraper=true)`, { field });
    if (!QUALIFIED_NAME.test(key) || key.length > 317) throw new ConfigError(`"${key}" is not a label key`, { field });
    if (!LABEL_VALUE.test(value)) throw new ConfigError(`"${value}" is not a label value (at most 63 letters, digits, '-', '_', '.')`, { field });
    matchLabels[key] = value;
  }
  return { matchLabels };
}

/** Comma lists and repeated flags alike: ["a,b", "c"] → ["a", "b", "c"]. */
function items(values: readonly string[]): string[] {
  return values.flatMap((v) => v.split(',')).map((v) => v.trim()).filter((v) => v !== '');
}

function cidrs(values: readonly string[], field: string): string[] {
  return [...new Set(items(values).map((c) => {
    try {
      return formatCidr(parseCidr(c));
    } catch (err) {
      throw new ConfigError(errorMessage(err), { field });
    }
  }))];
}

export function parseClusterTargetPolicy(f: Pick<PolicyFlags, 'clusterTargetNamespace' | 'clusterTargetCidr' | 'clusterDomain'>): ClusterTargetPolicy {
  const namespaces = items(f.clusterTargetNamespace);
  for (const ns of namespaces) {
    if (ns !== ANY_NAMESPACE && !isDns1123Label(ns)) throw new ConfigError(`"${ns}" is not a namespace name (or * for any)`, { field: '--cluster-target-namespace' });
  }
  const domain = f.clusterDomain.replace(/\.$/, '').toLowerCase();
  if (!domain.split('.').every(isDns1123Label)) throw new ConfigError(`"${f.clusterDomain}" is not a DNS domain such as cluster.local`, { field: '--cluster-domain' });
  return {
    namespaces: namespaces.includes(ANY_NAMESPACE) ? ANY_NAMESPACE : [...new Set(namespaces)].sort(),
    cidrs: cidrs(f.clusterTargetCidr, '--cluster-target-cidr'),
    clusterDomain: domain,
  };
}

export function parseWorkerNetwork(f: Omit<PolicyFlags, 'clusterTargetNamespace' | 'clusterTargetCidr' | 'clusterDomain' | 'workerOverrides' | 'workerImagePrefix'>): NonNullable<OperatorOptions['workerNetwork']> {
  const metricsNamespaces = parseLabelSelector(f.metricsNamespaceSelector, '--metrics-namespace-selector');
  if (!f.workerEgress) return { ...(metricsNamespaces ? { metricsNamespaces } : {}), egress: false };
  const namespaceSelector = parseLabelSelector(f.workerDnsNamespaceSelector, '--worker-dns-namespace-selector');
  const podSelector = parseLabelSelector(f.workerDnsPodSelector, '--worker-dns-pod-selector');
  const to: k8s.V1NetworkPolicyPeer[] = [];
  if (namespaceSelector || podSelector) to.push({ ...(namespaceSelector ? { namespaceSelector } : {}), ...(podSelector ? { podSelector } : {}) });
  for (const cidr of cidrs(f.workerDnsCidr, '--worker-dns-cidr')) to.push({ ipBlock: { cidr } });
  if (to.length === 0) {
    throw new ConfigError('workers would reach no DNS server: give --worker-dns-pod-selector/--worker-dns-namespace-selector or --worker-dns-cidr (or --no-worker-egress)', { field: '--worker-dns-cidr' });
  }
  const ports = [...new Set(items(f.workerDnsPort).map((p) => parsePort(p, '--worker-dns-port')))];
  if (ports.length === 0) throw new ConfigError('needs at least one port (53)', { field: '--worker-dns-port' });
  return { ...(metricsNamespaces ? { metricsNamespaces } : {}), egress: { dns: { to, ports } } };
}

export function parseOverridePolicy(f: Pick<PolicyFlags, 'workerOverrides' | 'workerImagePrefix'>): OverridePolicy {
  const listed = items([f.workerOverrides]).filter((x) => x !== 'none');
  for (const x of listed) {
    if (x === 'image') throw new ConfigError('image is allowed by --worker-image-prefix (which images), not here', { field: '--worker-overrides' });
    if (!(OVERRIDABLE_FIELDS as readonly string[]).includes(x)) throw new ConfigError(`"${x}" is not one of ${OVERRIDABLE_FIELDS.join(', ')} (or none)`, { field: '--worker-overrides' });
  }
  const prefixes = items(f.workerImagePrefix);
  for (const p of prefixes) {
    if (!/^[\x21-\x7e]{1,512}$/.test(p)) throw new ConfigError(`"${p}" is not an image prefix such as registry.example.com/underpass/ (or * for any image)`, { field: '--worker-image-prefix' });
  }
  return { fields: [...new Set(listed)] as OverridableField[], imagePrefixes: [...new Set(prefixes)] };
}
