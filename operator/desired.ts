/**
 * Pure builders of the objects one TunnelConnection needs: worker config,
 * ServiceAccount, Deployment, Services, NetworkPolicy, Route. Same input,
 * same output — the reconcile compares a hash of these to what exists.
 */
import type * as k8s from '@kubernetes/client-node';
import YAML from 'yaml';
import type { Admission } from '../tunnel/admission.js';
import { parseDuration } from '../tunnel/duration.js';
import type { Mapping } from '../tunnel/mapping.js';
import { egressRuleFor, NAMESPACE_NAME_LABEL } from './cluster-targets.js';
import type { MappingSources, ServedMapping } from './mapping-resolution.js';
import { ADMIN_PORT, namesFor, ownedLabels, selectorLabels, TUNNEL_PORT } from './names.js';
import type { TunnelConnection } from './types.js';

export interface OperatorChannel {
  url: string;
  caPem: string;
}

export interface BuildOptions {
  workerImage: string;
  channel?: OperatorChannel;
}

/**
 * How long a stopping worker keeps its listeners open (not ready) before GoAway,
 * so every node's kube-proxy has dropped it from the apps Service first (docs/ha.md, Drain).
 */
export const WORKER_DRAIN_DELAY = '5s';

/**
 * What the worker NetworkPolicy needs besides the mappings: who may reach the
 * admin port, and where workers may connect to (the cluster admin's settings,
 * operator flags; docs/operator.md).
 */
export interface WorkerNetwork {
  /** The operator's namespace: its pods reach the workers' admin port; workers reach its report port. */
  operatorNamespace: string;
  /** Namespaces (besides the operator's) whose pods may reach the admin port: metrics scrapers. Unset: none. */
  metricsNamespaces?: k8s.V1LabelSelector;
  /** Worker egress; unset: not restricted (the policy has no Egress type). */
  egress?: WorkerEgress;
  /** Addresses of the Kubernetes API server (kept out of any wide egress rule; written into the worker config). */
  apiServer: readonly string[];
}

export interface WorkerEgress {
  /** Where cluster DNS answers (peers after DNAT: the DNS pods, or their addresses) and on which ports (UDP and TCP). */
  dns: { to: k8s.V1NetworkPolicyPeer[]; ports: number[] };
  /** The operator pods' report port (the channel); unset without the channel. */
  report?: { podSelector: k8s.V1LabelSelector; port: number };
}

/** The label every operator pod carries (the chart's selector). */
export const OPERATOR_POD_SELECTOR: k8s.V1LabelSelector = { matchLabels: { 'app.kubernetes.io/name': 'underpass-operator' } };

/** Upstream kube-dns / CoreDNS: pods labelled k8s-app=kube-dns in kube-system, port 53. */
export const DEFAULT_DNS_PEERS: k8s.V1NetworkPolicyPeer[] = [{
  namespaceSelector: { matchLabels: { [NAMESPACE_NAME_LABEL]: 'kube-system' } },
  podSelector: { matchLabels: { 'k8s-app': 'kube-dns' } },
}];

export const DEFAULT_WORKER_NETWORK: WorkerNetwork = {
  operatorNamespace: 'underpass-system',
  metricsNamespaces: { matchLabels: { 'underpass.dev/metrics-scraper': 'true' } },
  egress: { dns: { to: DEFAULT_DNS_PEERS, ports: [53] } },
  apiServer: [],
};

/** Where the pod mounts things; the worker config uses paths relative to its own folder. */
const CONFIG_DIR = '/etc/underpass/config';
const TLS_DIR = '/etc/underpass/tls';

export function ownerReference(tc: TunnelConnection): k8s.V1OwnerReference {
  return { apiVersion: tc.apiVersion!, kind: tc.kind!, name: tc.metadata.name, uid: tc.metadata.uid!, controller: true, blockOwnerDeletion: true };
}

function meta(tc: TunnelConnection, name: string, extra: Partial<k8s.V1ObjectMeta> = {}): k8s.V1ObjectMeta {
  return { name, namespace: tc.metadata.namespace, labels: ownedLabels(tc.metadata.name), ownerReferences: [ownerReference(tc)], ...extra };
}

/**
 * The worker's config file. `apiServer`: addresses Cluster-side mappings may
 * never dial. `admission` is what the operator's answers carry
 * (spec.connectors and what is revoked): written here too, so a worker that
 * starts while the operator is unreachable enforces it from its first
 * connection. Without it, spec.connectors alone. The file lives in the
 * ConfigMap, never in the pod template: a revocation rolls no worker.
 */
export function workerConfigYaml(tc: TunnelConnection, mappings: readonly Mapping[], channel?: OperatorChannel, apiServer: readonly string[] = [], admission?: Admission): string {
  const config: Record<string, unknown> = {
    connection: `${tc.metadata.namespace}/${tc.metadata.name}`,
    listen: `0.0.0.0:${TUNNEL_PORT}`,
    tls: { cert: '../tls/tls.crt', key: '../tls/tls.key', ca: '../tls/ca.crt' },
    admin: `0.0.0.0:${ADMIN_PORT}`,
    drainDelay: WORKER_DRAIN_DELAY,
    drainTimeout: tc.spec.worker.drainTimeout,
    mappings: mappings.map((m) => ({
      name: m.name,
      protocol: m.protocol,
      target: m.target,
      listen: m.listen,
      ...(m.allowedSources.length > 0 ? { allowedSources: m.allowedSources } : {}),
    })),
  };
  if (channel) config.operator = { url: channel.url, ca: 'operator-ca.crt' };
  // The start-up admission list; with the channel, the operator's answers keep it current.
  if (tc.spec.connectors !== undefined) config.connectors = [...new Set(tc.spec.connectors)].sort();
  const serials = [...new Set(admission?.revokedSerials ?? [])].sort();
  const names = [...new Set(admission?.revokedConnectors ?? [])].sort();
  if (serials.length > 0 || names.length > 0) config.revoked = { serials, connectors: names };
  // Tenants write these mappings: the pod's own loopback and the API server are never targets.
  config.clusterTargets = { loopback: false, refuse: [...new Set(apiServer)].sort() };
  return `# Written by the Underpass operator for TunnelConnection ${tc.metadata.namespace}/${tc.metadata.name}; do not edit.\n${YAML.stringify(config)}`;
}

export function configMap(tc: TunnelConnection, mappings: readonly Mapping[], channel?: OperatorChannel, apiServer: readonly string[] = [], admission?: Admission): k8s.V1ConfigMap {
  const data: Record<string, string> = { 'worker.yaml': workerConfigYaml(tc, mappings, channel, apiServer, admission) };
  if (channel) data['operator-ca.crt'] = channel.caPem;
  return { apiVersion: 'v1', kind: 'ConfigMap', metadata: meta(tc, namesFor(tc.metadata.name).configMap), data };
}

export function serviceAccount(tc: TunnelConnection): k8s.V1ServiceAccount {
  return { apiVersion: 'v1', kind: 'ServiceAccount', metadata: meta(tc, namesFor(tc.metadata.name).serviceAccount), automountServiceAccountToken: false };
}

/**
 * The pod's termination grace period: twice the worker's drain delay (its
 * listeners stay open up to a second delay while clients still arrive,
 * tunnel/drain-listeners.ts), its drain time (the duration parser the worker
 * itself uses, so "1m30s" is 90 s here too), plus 10 s to close. The CRD's
 * pattern already refuses anything else.
 */
export function terminationGraceSeconds(tc: TunnelConnection): number {
  const ms = 2 * parseDuration(WORKER_DRAIN_DELAY, 'drainDelay') + parseDuration(tc.spec.worker.drainTimeout, 'spec.worker.drainTimeout');
  return Math.ceil(ms / 1000) + 10;
}

/**
 * Spread the workers over nodes and zones, softly: a one-node cluster still
 * runs every replica. Each rollout (pod-template-hash) spreads its own pods.
 */
function topologySpread(tc: TunnelConnection): k8s.V1TopologySpreadConstraint[] {
  return ['kubernetes.io/hostname', 'topology.kubernetes.io/zone'].map((topologyKey) => ({
    maxSkew: 1,
    topologyKey,
    whenUnsatisfiable: 'ScheduleAnyway',
    labelSelector: { matchLabels: selectorLabels(tc.metadata.name) },
    matchLabelKeys: ['pod-template-hash'],
  }));
}

/**
 * The worker Deployment. Its pod template depends on the TunnelConnection
 * only, never on the mappings: any change to the template rolls every worker,
 * and mappings reach running workers through the operator channel instead.
 * (No containerPort per mapping: the apps Service targets numeric ports, and
 * containerPort is informational.) `_mappings` stays in the signature so the
 * table tests can pin exactly that.
 */
export function deployment(tc: TunnelConnection, _mappings: readonly Mapping[], opts: BuildOptions): k8s.V1Deployment {
  const names = namesFor(tc.metadata.name);
  const w = tc.spec.worker;
  return {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: meta(tc, names.deployment),
    spec: {
      replicas: tc.spec.replicas,
      selector: { matchLabels: selectorLabels(tc.metadata.name) },
      // Never take every worker down: surge one new pod before an old one goes.
      strategy: { type: 'RollingUpdate', rollingUpdate: { maxUnavailable: 0, maxSurge: 1 } },
      template: {
        metadata: { labels: ownedLabels(tc.metadata.name) },
        spec: {
          serviceAccountName: names.serviceAccount,
          automountServiceAccountToken: false,
          terminationGracePeriodSeconds: terminationGraceSeconds(tc),
          securityContext: { runAsNonRoot: true, runAsUser: 65532, runAsGroup: 65532, fsGroup: 65532, seccompProfile: { type: 'RuntimeDefault' } },
          ...(w.nodeSelector ? { nodeSelector: w.nodeSelector } : {}),
          ...(w.tolerations ? { tolerations: w.tolerations } : {}),
          topologySpreadConstraints: topologySpread(tc),
          containers: [{
            name: 'worker',
            image: w.image ?? opts.workerImage,
            args: ['worker', '--config', `${CONFIG_DIR}/worker.yaml`],
            ports: [
              { containerPort: TUNNEL_PORT, name: 'tunnel', protocol: 'TCP' },
              { containerPort: ADMIN_PORT, name: 'admin', protocol: 'TCP' },
            ],
            readinessProbe: { httpGet: { path: '/readyz', port: 'admin' }, periodSeconds: 5, failureThreshold: 2 },
            // Liveness starts once /healthz has answered (up to 2 minutes: Node starts slowly on a busy node).
            startupProbe: { httpGet: { path: '/healthz', port: 'admin' }, periodSeconds: 2, failureThreshold: 60 },
            livenessProbe: { httpGet: { path: '/healthz', port: 'admin' }, periodSeconds: 10, failureThreshold: 3 },
            resources: w.resources ?? { requests: { cpu: '100m', memory: '128Mi' }, limits: { memory: '512Mi' } },
            securityContext: { allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ['ALL'] } },
            volumeMounts: [
              { name: 'config', mountPath: CONFIG_DIR, readOnly: true },
              { name: 'tls', mountPath: TLS_DIR, readOnly: true },
            ],
          }],
          volumes: [
            { name: 'config', configMap: { name: names.configMap } },
            { name: 'tls', secret: { secretName: names.workerTlsSecret, defaultMode: 0o440 } },
          ],
        },
      },
    },
  };
}

export function tunnelService(tc: TunnelConnection): k8s.V1Service {
  const s = tc.spec.endpoint.service;
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: meta(tc, namesFor(tc.metadata.name).tunnelService, s.annotations ? { annotations: s.annotations } : {}),
    spec: {
      type: s.type,
      selector: selectorLabels(tc.metadata.name),
      // Workers are "ready" only with a connector attached; connectors must reach them before that.
      publishNotReadyAddresses: true,
      ports: [{ name: 'tunnel', port: s.port, targetPort: TUNNEL_PORT, protocol: 'TCP', ...(s.type !== 'ClusterIP' && s.nodePort ? { nodePort: s.nodePort } : {}) }],
      ...(s.type === 'LoadBalancer' && s.loadBalancerSourceRanges ? { loadBalancerSourceRanges: s.loadBalancerSourceRanges } : {}),
    },
  };
}

/** One ClusterIP Service with a port per Connector-side mapping; undefined when there is none. */
export function appsService(tc: TunnelConnection, mappings: readonly Mapping[]): k8s.V1Service | undefined {
  const ports = mappings.filter((m) => m.target.side === 'Connector').map((m) => ({
    name: portName(m.listen.port), port: m.listen.port, targetPort: m.listen.port, protocol: 'TCP',
  }));
  if (ports.length === 0) return undefined;
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: meta(tc, namesFor(tc.metadata.name).appsService),
    spec: { type: 'ClusterIP', selector: selectorLabels(tc.metadata.name), ports },
  };
}

/**
 * A voluntary eviction (node drain, autoscaler) never takes the last ready
 * worker; workers that are not ready (no connector reaches them) never block
 * one. With one replica there is none: a single worker cannot be both
 * evictable and always available, and blocking every node drain is worse.
 */
export function podDisruptionBudget(tc: TunnelConnection): k8s.V1PodDisruptionBudget | undefined {
  if (tc.spec.replicas < 2) return undefined;
  return {
    apiVersion: 'policy/v1',
    kind: 'PodDisruptionBudget',
    metadata: meta(tc, namesFor(tc.metadata.name).podDisruptionBudget),
    spec: { minAvailable: 1, selector: { matchLabels: selectorLabels(tc.metadata.name) }, unhealthyPodEvictionPolicy: 'AlwaysAllow' },
  };
}

/**
 * The worker pods' NetworkPolicy. Ingress: the tunnel port from anywhere
 * (connectors are outside the cluster); the admin port (/healthz, /readyz,
 * /metrics) from the operator's namespace and the metrics namespaces only
 * (kubelet probes come from the node, which NetworkPolicy never blocks); each
 * Connector-side mapping port from its sources (mappingPeers). Egress, unless
 * the cluster admin turned it off: DNS, the operator's report port, and the
 * Cluster-side targets of the served mappings (cluster-targets.ts
 * egressRuleFor). Everything else is dropped. The tunnel port is ingress only:
 * connectors dial in, workers never dial out to them.
 */
export function networkPolicy(tc: TunnelConnection, served: readonly ServedMapping[], net: WorkerNetwork = DEFAULT_WORKER_NETWORK): k8s.V1NetworkPolicy {
  const operatorNs: k8s.V1NetworkPolicyPeer = { namespaceSelector: { matchLabels: { [NAMESPACE_NAME_LABEL]: net.operatorNamespace } } };
  const ingress: k8s.V1NetworkPolicyIngressRule[] = [
    { ports: [{ port: TUNNEL_PORT, protocol: 'TCP' }] },
    { ports: [{ port: ADMIN_PORT, protocol: 'TCP' }], _from: [operatorNs, ...(net.metricsNamespaces ? [{ namespaceSelector: net.metricsNamespaces }] : [])] },
  ];
  // Rules in a fixed order (listen port; egress by the rule itself), whatever order the informer
  // lists mappings in: a reordered but equal policy would be rewritten on every reconcile.
  for (const s of served.filter((x) => x.mapping.target.side === 'Connector').sort((a, b) => a.mapping.listen.port - b.mapping.listen.port)) {
    ingress.push({ ports: [{ port: s.mapping.listen.port, protocol: 'TCP' }], _from: mappingPeers(s.sources ?? { cidrs: s.mapping.allowedSources }) });
  }
  const spec: k8s.V1NetworkPolicySpec = { podSelector: { matchLabels: selectorLabels(tc.metadata.name) }, policyTypes: ['Ingress'], ingress };
  if (net.egress) {
    spec.policyTypes = ['Ingress', 'Egress'];
    spec.egress = egressRules(served, net, net.egress);
  }
  return { apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: meta(tc, namesFor(tc.metadata.name).networkPolicy), spec };
}

/**
 * Who may reach a Connector-side listener: the listed and selected
 * namespaces and the allowedSources blocks together; with neither, the pods
 * of the mapping's own namespace (the policy's namespace) only.
 */
export function mappingPeers(sources: MappingSources): k8s.V1NetworkPolicyPeer[] {
  const peers: k8s.V1NetworkPolicyPeer[] = [];
  const names = [...new Set(sources.namespaces?.names ?? [])].sort();
  if (names.length > 0) peers.push({ namespaceSelector: { matchExpressions: [{ key: NAMESPACE_NAME_LABEL, operator: 'In', values: names }] } });
  if (sources.namespaces?.selector) peers.push({ namespaceSelector: sources.namespaces.selector });
  for (const cidr of sources.cidrs) peers.push({ ipBlock: { cidr } });
  return peers.length > 0 ? peers : [{ podSelector: {} }];
}

function egressRules(served: readonly ServedMapping[], net: WorkerNetwork, egress: WorkerEgress): k8s.V1NetworkPolicyEgressRule[] {
  const rules: k8s.V1NetworkPolicyEgressRule[] = [
    { to: egress.dns.to, ports: egress.dns.ports.flatMap((port) => [{ port, protocol: 'UDP' }, { port, protocol: 'TCP' }]) },
  ];
  if (egress.report) {
    rules.push({
      to: [{ namespaceSelector: { matchLabels: { [NAMESPACE_NAME_LABEL]: net.operatorNamespace } }, podSelector: egress.report.podSelector }],
      ports: [{ port: egress.report.port, protocol: 'TCP' }],
    });
  }
  const targets = new Map<string, k8s.V1NetworkPolicyEgressRule>();
  for (const s of served) {
    if (s.mapping.target.side !== 'Cluster' || !s.clusterTarget) continue;
    const rule = egressRuleFor(s.clusterTarget, s.mapping.target.port, net.apiServer);
    targets.set(JSON.stringify(rule), rule);
  }
  for (const key of [...targets.keys()].sort()) rules.push(targets.get(key)!);
  return rules;
}

/**
 * Passthrough Routes balance by source address by default, which pins every
 * attempt of a connector to one worker; the mesh needs each connection balanced
 * (docs/ha.md). roundrobin, not random: HAProxy's random costs memory per backend.
 */
export const ROUTE_BALANCE_ANNOTATION = 'haproxy.router.openshift.io/balance';

/** OpenShift Route with TLS passthrough: the worker terminates mutual TLS itself. */
export function route(tc: TunnelConnection): Record<string, unknown> {
  const host = tc.spec.endpoint.route?.host;
  return {
    apiVersion: 'route.openshift.io/v1',
    kind: 'Route',
    metadata: meta(tc, namesFor(tc.metadata.name).route, { annotations: { [ROUTE_BALANCE_ANNOTATION]: 'roundrobin' } }),
    spec: {
      ...(host ? { host } : {}),
      to: { kind: 'Service', name: namesFor(tc.metadata.name).tunnelService, weight: 100 },
      port: { targetPort: 'tunnel' },
      tls: { termination: 'passthrough', insecureEdgeTerminationPolicy: 'None' },
    },
  };
}

/** Service/container port names are at most 15 characters: "p" + port number. */
export function portName(port: number): string {
  return `p${port}`;
}
