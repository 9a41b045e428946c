/**
 * The pure builders of operator/desired.ts: what one TunnelConnection and its
 * mappings turn into. The cluster tests show these objects are accepted; these
 * tables pin what they contain, above all that mappings never reach the worker
 * pod template (a template change rolls every worker).
 */
import { describe, expect, it } from '@jest/globals';
import YAML from 'yaml';
import type { Mapping } from '../tunnel/mapping.js';
import * as desired from './desired.js';
import type { ServedMapping } from './mapping-resolution.js';
import { ADMIN_PORT, TUNNEL_PORT } from './names.js';
import type { TunnelConnection, TunnelConnectionSpec } from './types.js';

type SpecPatch = { [K in keyof TunnelConnectionSpec]?: Partial<TunnelConnectionSpec[K]> };

/** A TunnelConnection as the API server hands it over: every default filled in. */
function tc(patch: SpecPatch = {}): TunnelConnection {
  return {
    apiVersion: 'underpass.dev/v1alpha1',
    kind: 'TunnelConnection',
    metadata: { name: 'dc1', namespace: 'team-a', uid: '00000000-0000-0000-0000-000000000001' },
    spec: {
      replicas: patch.replicas ?? 2,
      endpoint: { service: { type: 'LoadBalancer', port: 443 }, ...patch.endpoint } as TunnelConnectionSpec['endpoint'],
      certificates: { duration: '720h', renewBefore: '240h', ...patch.certificates },
      worker: { drainTimeout: '30s', ...patch.worker },
      ...(patch.connectors ? { connectors: patch.connectors as string[] } : {}),
    },
  };
}

function mapping(name: string, side: 'Connector' | 'Cluster', listenPort: number, extra: Partial<Mapping> = {}): Mapping {
  return {
    name, protocol: 'TCP', target: { side, host: `${name}.internal`, port: 5432 },
    listen: { port: listenPort, address: '0.0.0.0' }, allowedSources: [], ...extra,
  };
}

const db = mapping('db', 'Connector', 15432);
const web = mapping('web', 'Connector', 18080);
const api = mapping('api', 'Cluster', 19000);
const opts: desired.BuildOptions = { workerImage: 'ghcr.io/underpass/underpass:0.1.0' };

const template = (mappings: Mapping[], t = tc()): string => JSON.stringify(desired.deployment(t, mappings, opts).spec!.template);

describe('the worker Deployment', () => {
  it.each([
    ['adding the first mapping', [], [db]],
    ['adding a second Connector-side mapping', [db], [db, web]],
    ['adding a Cluster-side mapping', [db], [db, api]],
    ['changing a mapping\'s listen port', [db], [{ ...db, listen: { ...db.listen, port: 15433 } }]],
    ['changing a mapping\'s target', [db], [{ ...db, target: { ...db.target, host: 'db2.internal', port: 5433 } }]],
    ['changing a mapping\'s allowedSources', [db], [{ ...db, allowedSources: ['10.0.0.0/8'] }]],
    ['moving a mapping to the other side', [db], [{ ...db, target: { ...db.target, side: 'Cluster' as const } }]],
    ['removing a mapping', [db, web], [web]],
    ['removing the last mapping', [db], []],
  ] as Array<[string, Mapping[], Mapping[]]>)('%s leaves the pod template byte-identical (no worker restarts)', (_name, before, after) => {
    expect(template(after)).toBe(template(before));
  });

  it('lists only the tunnel and admin ports, whatever the mappings', () => {
    const ports = desired.deployment(tc(), [db, web, api], opts).spec!.template.spec!.containers[0]!.ports;
    expect(ports).toEqual([
      { containerPort: TUNNEL_PORT, name: 'tunnel', protocol: 'TCP' },
      { containerPort: ADMIN_PORT, name: 'admin', protocol: 'TCP' },
    ]);
  });

  it.each([
    ['30s', 50],
    ['1m30s', 110],
    ['2m', 140],
    ['500ms', 21],
    ['1h', 3620],
    ['1m0s500ms', 81],
  ])('drainTimeout %s gives a termination grace period of %d s (twice the 5 s drain delay + drain + 10 s)', (drainTimeout, seconds) => {
    const t = tc({ worker: { drainTimeout } });
    expect(desired.terminationGraceSeconds(t)).toBe(seconds);
    expect(desired.deployment(t, [], opts).spec!.template.spec!.terminationGracePeriodSeconds).toBe(seconds);
  });

  it('names the field when drainTimeout is not a duration (the CRD refuses it first)', () => {
    expect(() => desired.terminationGraceSeconds(tc({ worker: { drainTimeout: '30' } }))).toThrow(/spec\.worker\.drainTimeout/);
  });

  it.each([
    ['the operator\'s image by default', {}, 'ghcr.io/underpass/underpass:0.1.0'],
    ['spec.worker.image when set', { image: 'registry.example/underpass:pinned' }, 'registry.example/underpass:pinned'],
  ])('runs %s', (_name, worker, image) => {
    expect(desired.deployment(tc({ worker }), [], opts).spec!.template.spec!.containers[0]!.image).toBe(image);
  });

  it('copies resources, nodeSelector and tolerations from spec.worker', () => {
    const worker = {
      resources: { limits: { cpu: '1', memory: '256Mi' } },
      nodeSelector: { 'node-role.kubernetes.io/infra': '' },
      tolerations: [{ key: 'infra', operator: 'Exists', effect: 'NoSchedule' }],
    };
    const pod = desired.deployment(tc({ worker }), [], opts).spec!.template.spec!;
    expect(pod.containers[0]!.resources).toEqual(worker.resources);
    expect(pod.nodeSelector).toEqual(worker.nodeSelector);
    expect(pod.tolerations).toEqual(worker.tolerations);
  });

  it('runs restricted: non-root, no token, read-only root filesystem, no capabilities, RuntimeDefault seccomp', () => {
    const pod = desired.deployment(tc(), [], opts).spec!.template.spec!;
    expect(pod.automountServiceAccountToken).toBe(false);
    expect(pod.securityContext).toMatchObject({ runAsNonRoot: true, runAsUser: 65532, seccompProfile: { type: 'RuntimeDefault' } });
    expect(pod.containers[0]!.securityContext).toEqual({ allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ['ALL'] } });
  });

  it('probes liveness only after /healthz first answered (a startup probe of up to 2 minutes: slow starts on a busy node)', () => {
    const c = desired.deployment(tc(), [], opts).spec!.template.spec!.containers[0]!;
    expect(c.startupProbe?.httpGet).toEqual(c.livenessProbe?.httpGet);
    expect(c.startupProbe!.periodSeconds! * c.startupProbe!.failureThreshold!).toBeGreaterThanOrEqual(120);
  });
});

describe('the apps Service', () => {
  it.each([
    ['no mappings', [], undefined],
    ['only Cluster-side mappings', [api], undefined],
    ['one Connector-side mapping', [db, api], [{ name: 'p15432', port: 15432, targetPort: 15432, protocol: 'TCP' }]],
    ['two Connector-side mappings', [db, web], [
      { name: 'p15432', port: 15432, targetPort: 15432, protocol: 'TCP' },
      { name: 'p18080', port: 18080, targetPort: 18080, protocol: 'TCP' },
    ]],
  ] as Array<[string, Mapping[], unknown]>)('with %s: one port per Connector-side mapping, numeric targetPorts (the pod lists none)', (_name, mappings, ports) => {
    expect(desired.appsService(tc(), mappings)?.spec?.ports).toEqual(ports);
  });
});

describe('the tunnel Service', () => {
  it.each([
    ['LoadBalancer with nodePort and source ranges', { type: 'LoadBalancer', port: 443, nodePort: 30443, loadBalancerSourceRanges: ['203.0.113.0/24'] },
      { type: 'LoadBalancer', port: { name: 'tunnel', port: 443, targetPort: TUNNEL_PORT, protocol: 'TCP', nodePort: 30443 }, loadBalancerSourceRanges: ['203.0.113.0/24'] }],
    ['NodePort keeps its nodePort', { type: 'NodePort', port: 8443, nodePort: 30443 },
      { type: 'NodePort', port: { name: 'tunnel', port: 8443, targetPort: TUNNEL_PORT, protocol: 'TCP', nodePort: 30443 } }],
    ['ClusterIP drops a nodePort', { type: 'ClusterIP', port: 443, nodePort: 30443 },
      { type: 'ClusterIP', port: { name: 'tunnel', port: 443, targetPort: TUNNEL_PORT, protocol: 'TCP' } }],
    ['NodePort drops source ranges', { type: 'NodePort', port: 443, loadBalancerSourceRanges: ['203.0.113.0/24'] },
      { type: 'NodePort', port: { name: 'tunnel', port: 443, targetPort: TUNNEL_PORT, protocol: 'TCP' } }],
  ] as Array<[string, TunnelConnectionSpec['endpoint']['service'], { type: string; port: object; loadBalancerSourceRanges?: string[] }]>)('%s', (_name, service, want) => {
    const spec = desired.tunnelService(tc({ endpoint: { service } })).spec!;
    expect(spec.type).toBe(want.type);
    expect(spec.ports).toEqual([want.port]);
    expect(spec.loadBalancerSourceRanges).toEqual(want.loadBalancerSourceRanges);
    expect(spec.publishNotReadyAddresses).toBe(true);
  });
});

describe('the worker NetworkPolicy', () => {
  const served = (m: Mapping, more: Omit<ServedMapping, 'mapping'> = {}): ServedMapping => ({ mapping: m, ...more });
  const tunnel = { ports: [{ port: TUNNEL_PORT, protocol: 'TCP' }] };
  const operatorNs = { namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'underpass-system' } } };
  const scrapers = { namespaceSelector: { matchLabels: { 'underpass.dev/metrics-scraper': 'true' } } };
  const admin = { ports: [{ port: ADMIN_PORT, protocol: 'TCP' }], _from: [operatorNs, scrapers] };
  const port = (p: number) => ({ ports: [{ port: p, protocol: 'TCP' }] });
  const ingressOf = (list: ServedMapping[], net?: desired.WorkerNetwork) => desired.networkPolicy(tc(), list, net).spec!.ingress;

  it.each([
    ['no mappings: tunnel from anywhere, admin from the operator\'s namespace and metrics scrapers only', [], [tunnel, admin]],
    ['a mapping with neither allowedSources nor allowedNamespaces: its port from its own namespace\'s pods only', [served(db, { sources: { cidrs: [] } })], [
      tunnel, admin, { ...port(15432), _from: [{ podSelector: {} }] },
    ]],
    ['a mapping with allowedSources: its port from those blocks only', [served(db, { sources: { cidrs: ['10.0.0.0/8', 'fd00::/8'] } })], [
      tunnel, admin, { ...port(15432), _from: [{ ipBlock: { cidr: '10.0.0.0/8' } }, { ipBlock: { cidr: 'fd00::/8' } }] },
    ]],
    ['a mapping with allowedNamespaces names: those namespaces (sorted, once each)', [served(db, { sources: { cidrs: [], namespaces: { names: ['team-c', 'team-b', 'team-c'] } } })], [
      tunnel, admin, { ...port(15432), _from: [{ namespaceSelector: { matchExpressions: [{ key: 'kubernetes.io/metadata.name', operator: 'In', values: ['team-b', 'team-c'] }] } }] },
    ]],
    ['a mapping with an allowedNamespaces selector: the namespaces it selects', [served(db, { sources: { cidrs: [], namespaces: { selector: { matchLabels: { team: 'payroll' } } } } })], [
      tunnel, admin, { ...port(15432), _from: [{ namespaceSelector: { matchLabels: { team: 'payroll' } } }] },
    ]],
    ['a mapping with selector {}: every namespace (the explicit opt-in)', [served(db, { sources: { cidrs: [], namespaces: { selector: {} } } })], [
      tunnel, admin, { ...port(15432), _from: [{ namespaceSelector: {} }] },
    ]],
    ['a mapping with names, a selector and blocks: any of them', [served(db, { sources: { cidrs: ['192.0.2.0/24'], namespaces: { names: ['team-b'], selector: { matchLabels: { team: 'x' } } } } })], [
      tunnel, admin, { ...port(15432), _from: [
        { namespaceSelector: { matchExpressions: [{ key: 'kubernetes.io/metadata.name', operator: 'In', values: ['team-b'] }] } },
        { namespaceSelector: { matchLabels: { team: 'x' } } },
        { ipBlock: { cidr: '192.0.2.0/24' } },
      ] },
    ]],
    ['a mapping served without its sources (the worker-side list only): its allowedSources', [served({ ...db, allowedSources: ['10.0.0.0/8'] })], [
      tunnel, admin, { ...port(15432), _from: [{ ipBlock: { cidr: '10.0.0.0/8' } }] },
    ]],
    ['a Cluster-side mapping: nothing opened on the worker', [served(api, { clusterTarget: { kind: 'namespace', namespace: 'team-a' } })], [tunnel, admin]],
  ] as Array<[string, ServedMapping[], unknown]>)('ingress, %s', (_name, list, ingress) => {
    expect(ingressOf(list)).toEqual(ingress);
  });

  it.each([
    ['the operator\'s namespace only when no scraper selector is set', { ...desired.DEFAULT_WORKER_NETWORK, metricsNamespaces: undefined }, [operatorNs]],
    ['the operator\'s own namespace, whatever it is called', { ...desired.DEFAULT_WORKER_NETWORK, operatorNamespace: 'ops' }, [
      { namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'ops' } } }, scrapers,
    ]],
    ['a scraper selector of the cluster admin\'s choice', { ...desired.DEFAULT_WORKER_NETWORK, metricsNamespaces: { matchLabels: { 'kubernetes.io/metadata.name': 'monitoring' } } }, [
      operatorNs, { namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'monitoring' } } },
    ]],
  ] as Array<[string, desired.WorkerNetwork, unknown]>)('the admin port admits %s', (_name, net, from) => {
    expect(ingressOf([], net)![1]).toEqual({ ports: [{ port: ADMIN_PORT, protocol: 'TCP' }], _from: from });
  });

  const dnsRule = { to: desired.DEFAULT_DNS_PEERS, ports: [{ port: 53, protocol: 'UDP' }, { port: 53, protocol: 'TCP' }] };
  const reportRule = {
    to: [{ namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'underpass-system' } }, podSelector: { matchLabels: { 'app.kubernetes.io/name': 'underpass-operator' } } }],
    ports: [{ port: 9443, protocol: 'TCP' }],
  };
  const withReport: desired.WorkerNetwork = { ...desired.DEFAULT_WORKER_NETWORK, egress: { ...desired.DEFAULT_WORKER_NETWORK.egress!, report: { podSelector: desired.OPERATOR_POD_SELECTOR, port: 9443 } }, apiServer: ['10.96.0.1', '192.0.2.10'] };
  const cluster = (host: string, p: number, target: ServedMapping['clusterTarget']): ServedMapping =>
    served({ ...api, name: host.replace(/[^a-z0-9]/g, '-'), target: { side: 'Cluster', host, port: p } }, target ? { clusterTarget: target } : {});

  it.each([
    ['no Cluster-side mapping: DNS and the operator\'s report port only', [served(db, { sources: { cidrs: [] } })], [dnsRule, reportRule]],
    ['a Service of the mapping\'s namespace: every pod of that namespace, any port (after DNAT the pod\'s targetPort counts)', [cluster('payroll', 8080, { kind: 'namespace', namespace: 'team-a' })], [
      dnsRule, reportRule, { to: [{ namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'team-a' } } }] },
    ]],
    ['two targets in one namespace: one rule', [cluster('a', 80, { kind: 'namespace', namespace: 'team-b' }), cluster('b.team-b', 81, { kind: 'namespace', namespace: 'team-b' })], [
      dnsRule, reportRule, { to: [{ namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'team-b' } } }] },
    ]],
    ['an IP target: that address, on the mapping\'s port', [cluster('10.20.0.5', 5432, { kind: 'ip', ip: '10.20.0.5' })], [
      dnsRule, reportRule, { to: [{ ipBlock: { cidr: '10.20.0.5/32' } }], ports: [{ port: 5432, protocol: 'TCP' }] },
    ]],
    ['an IPv6 target: that address', [cluster('fd00::5', 5432, { kind: 'ip', ip: 'fd00::5' })], [
      dnsRule, reportRule, { to: [{ ipBlock: { cidr: 'fd00::5/128' } }], ports: [{ port: 5432, protocol: 'TCP' }] },
    ]],
    ['a name outside the cluster (allowed with *): anywhere but link-local, metadata, loopback and the API server, on the mapping\'s port', [cluster('db.example.com', 5432, { kind: 'external' })], [
      dnsRule, reportRule, {
        to: [
          { ipBlock: { cidr: '0.0.0.0/0', except: ['0.0.0.0/8', '127.0.0.0/8', '169.254.0.0/16', '100.100.100.200/32', '10.96.0.1/32', '192.0.2.10/32'] } },
          { ipBlock: { cidr: '::/0', except: ['::/128', '::1/128', 'fe80::/10', 'fd00:ec2::254/128', '64:ff9b::7f00:0/104', '64:ff9b::a9fe:0/112'] } },
        ],
        ports: [{ port: 5432, protocol: 'TCP' }],
      },
    ]],
    ['a Cluster-side mapping the operator did not place (never served so): no rule, so no egress to it', [cluster('x', 80, undefined)], [dnsRule, reportRule]],
  ] as Array<[string, ServedMapping[], unknown]>)('egress, %s', (_name, list, egress) => {
    const spec = desired.networkPolicy(tc(), list, withReport).spec!;
    expect(spec.policyTypes).toEqual(['Ingress', 'Egress']);
    expect(spec.egress).toEqual(egress);
  });

  it('is the same object whatever order the mappings come in (an equal policy is never rewritten)', () => {
    const list = [
      cluster('b.team-b', 81, { kind: 'namespace', namespace: 'team-b' }), cluster('a', 80, { kind: 'namespace', namespace: 'team-a' }),
      cluster('10.20.0.5', 5432, { kind: 'ip', ip: '10.20.0.5' }),
      served({ ...db, name: 'db2', listen: { ...db.listen, port: 15433 } }, { sources: { cidrs: [] } }), served(db, { sources: { cidrs: [] } }),
    ];
    const one = desired.networkPolicy(tc(), list, withReport);
    for (const order of [[...list].reverse(), [list[2]!, list[0]!, list[4]!, list[1]!, list[3]!]]) {
      expect(desired.networkPolicy(tc(), order, withReport)).toEqual(one);
    }
  });

  it('egress names no tunnel port: connectors dial in, workers never dial out to them', () => {
    const ports = desired.networkPolicy(tc(), [cluster('a', 80, { kind: 'namespace', namespace: 'team-a' })], withReport).spec!.egress!.flatMap((r) => r.ports ?? []);
    expect(ports.map((p) => p.port)).not.toContain(TUNNEL_PORT);
  });

  it('without the report channel there is no report rule', () => {
    expect(desired.networkPolicy(tc(), []).spec!.egress).toEqual([dnsRule]);
  });

  it('with egress turned off by the cluster admin the policy is ingress-only', () => {
    const spec = desired.networkPolicy(tc(), [cluster('a', 80, { kind: 'namespace', namespace: 'team-a' })], { ...desired.DEFAULT_WORKER_NETWORK, egress: undefined }).spec!;
    expect(spec.policyTypes).toEqual(['Ingress']);
    expect(spec.egress).toBeUndefined();
  });

  it('every port names its protocol (some enforcers, kube-network-policies among them, need it)', () => {
    const spec = desired.networkPolicy(tc(), [served(db, { sources: { cidrs: [] } }), cluster('10.0.0.1', 80, { kind: 'ip', ip: '10.0.0.1' })], withReport).spec!;
    const ports = [...spec.ingress!.flatMap((r) => r.ports ?? []), ...spec.egress!.flatMap((r) => r.ports ?? [])];
    expect(ports.every((p) => p.protocol === 'TCP' || p.protocol === 'UDP')).toBe(true);
  });
});

describe('the worker config', () => {
  it.each([
    ['without the operator channel', undefined, undefined],
    ['with the operator channel', { url: 'https://underpass-operator.underpass-system.svc:8443', caPem: 'PEM' }, { url: 'https://underpass-operator.underpass-system.svc:8443', ca: 'operator-ca.crt' }],
  ])('%s', (_name, channel, operator) => {
    const config = YAML.parse(desired.workerConfigYaml(tc({ worker: { drainTimeout: '1m30s' } }), [db, { ...web, allowedSources: ['10.0.0.0/8'] }], channel));
    expect(config).toEqual({
      connection: 'team-a/dc1',
      listen: `0.0.0.0:${TUNNEL_PORT}`,
      tls: { cert: '../tls/tls.crt', key: '../tls/tls.key', ca: '../tls/ca.crt' },
      admin: `0.0.0.0:${ADMIN_PORT}`,
      drainDelay: '5s',
      drainTimeout: '1m30s',
      mappings: [
        { name: 'db', protocol: 'TCP', target: db.target, listen: db.listen },
        { name: 'web', protocol: 'TCP', target: web.target, listen: web.listen, allowedSources: ['10.0.0.0/8'] },
      ],
      ...(operator ? { operator } : {}),
      clusterTargets: { loopback: false, refuse: [] },
    });
    expect(desired.configMap(tc(), [], channel).data?.['operator-ca.crt']).toBe(channel?.caPem);
  });

  it.each([
    ['nothing revoked: no revoked field', {}, undefined],
    ['revoked serials and names, deduplicated and sorted', { revokedSerials: ['B7', '5A0C', 'B7'], revokedConnectors: ['site-c'] }, { serials: ['5A0C', 'B7'], connectors: ['site-c'] }],
    ['a revoked name alone', { revokedConnectors: ['site-c'] }, { serials: [], connectors: ['site-c'] }],
  ])('carries what is revoked, so a worker refuses it from its start: %s', (_name, admission, revoked) => {
    const config = YAML.parse(desired.workerConfigYaml(tc({ connectors: ['site-a'] }), [], undefined, [], admission));
    expect(config.revoked).toEqual(revoked);
    expect(config.connectors).toEqual(['site-a']);
  });
});

describe('the worker config\'s clusterTargets', () => {
  it('refuses loopback and every address of the API server, sorted and once each', () => {
    const config = YAML.parse(desired.workerConfigYaml(tc(), [api], undefined, ['192.0.2.10', '10.96.0.1', '192.0.2.10']));
    expect(config.clusterTargets).toEqual({ loopback: false, refuse: ['10.96.0.1', '192.0.2.10'] });
  });
});

describe('the OpenShift Route', () => {
  it.each([
    ['without a host (the router assigns one)', {}, undefined],
    ['with spec.endpoint.route.host', { host: 'tunnel.apps.example.com' }, 'tunnel.apps.example.com'],
  ])('%s passes TLS through to the tunnel Service', (_name, route, host) => {
    const r = desired.route(tc({ endpoint: { service: { type: 'ClusterIP', port: 443 }, route: { enabled: true, ...route } } })) as { spec: Record<string, unknown> };
    expect(r.spec).toEqual({
      ...(host ? { host } : {}),
      to: { kind: 'Service', name: 'dc1-tunnel', weight: 100 },
      port: { targetPort: 'tunnel' },
      tls: { termination: 'passthrough', insecureEdgeTerminationPolicy: 'None' },
    });
  });

  it('balances each connection, not by source address (the passthrough default), so connectors reach every worker', () => {
    const r = desired.route(tc({ endpoint: { service: { type: 'ClusterIP', port: 443 }, route: { enabled: true } } })) as { metadata: { annotations: Record<string, string> } };
    expect(r.metadata.annotations).toEqual({ 'haproxy.router.openshift.io/balance': 'roundrobin' });
  });
});

describe('high availability of the workers (docs/ha.md)', () => {
  it.each([
    [1, undefined],
    [2, 1],
    [5, 1],
  ])('with %d replica(s) the PodDisruptionBudget keeps minAvailable %s', (replicas, minAvailable) => {
    const pdb = desired.podDisruptionBudget(tc({ replicas }));
    if (minAvailable === undefined) return void expect(pdb).toBeUndefined();
    expect(pdb).toMatchObject({
      apiVersion: 'policy/v1', kind: 'PodDisruptionBudget', metadata: { name: 'dc1-worker', namespace: 'team-a' },
      spec: {
        minAvailable,
        selector: { matchLabels: { 'app.kubernetes.io/name': 'underpass-worker', 'app.kubernetes.io/instance': 'dc1' } },
        unhealthyPodEvictionPolicy: 'AlwaysAllow',
      },
    });
  });

  it('spreads workers over nodes and zones without refusing to schedule on one node', () => {
    const spread = desired.deployment(tc(), [], opts).spec!.template.spec!.topologySpreadConstraints!;
    expect(spread.map((c) => [c.topologyKey, c.maxSkew, c.whenUnsatisfiable])).toEqual([
      ['kubernetes.io/hostname', 1, 'ScheduleAnyway'],
      ['topology.kubernetes.io/zone', 1, 'ScheduleAnyway'],
    ]);
    for (const c of spread) {
      expect(c.labelSelector).toEqual({ matchLabels: { 'app.kubernetes.io/name': 'underpass-worker', 'app.kubernetes.io/instance': 'dc1' } });
      expect(c.matchLabelKeys).toEqual(['pod-template-hash']);
    }
  });

  it('rolls out one new worker before an old one goes, and gives a stopping worker its drain delay and drain time', () => {
    const d = desired.deployment(tc(), [], opts);
    expect(d.spec!.strategy).toEqual({ type: 'RollingUpdate', rollingUpdate: { maxUnavailable: 0, maxSurge: 1 } });
    expect(YAML.parse(desired.workerConfigYaml(tc(), []))).toMatchObject({ drainDelay: '5s', drainTimeout: '30s' });
    expect(d.spec!.template.spec!.terminationGracePeriodSeconds).toBe(2 * 5 + 30 + 10);
  });
});

describe('ownership', () => {
  it('every object is owned by the TunnelConnection and labelled as managed by the operator', () => {
    const objects = [
      desired.configMap(tc(), []), desired.serviceAccount(tc()), desired.deployment(tc(), [], opts), desired.tunnelService(tc()),
      desired.appsService(tc(), [db])!, desired.networkPolicy(tc(), []), desired.podDisruptionBudget(tc())!,
    ];
    for (const o of objects) {
      expect(o.metadata!.ownerReferences).toEqual([{ apiVersion: 'underpass.dev/v1alpha1', kind: 'TunnelConnection', name: 'dc1', uid: '00000000-0000-0000-0000-000000000001', controller: true, blockOwnerDeletion: true }]);
      expect(o.metadata!.labels).toMatchObject({ 'app.kubernetes.io/managed-by': 'underpass-operator', 'underpass.dev/connection': 'dc1' });
    }
  });
});
