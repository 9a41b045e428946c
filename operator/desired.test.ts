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
    ['30s', 40],
    ['1m30s', 100],
    ['2m', 130],
    ['500ms', 11],
    ['1h', 3610],
    ['1m0s500ms', 71],
  ])('drainTimeout %s gives a termination grace period of %d s (drain + 10 s)', (drainTimeout, seconds) => {
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
  const inCluster = [{ namespaceSelector: {} }];
  it.each([
    ['no mappings: tunnel from anywhere, admin from the cluster', [], [
      { ports: [{ port: TUNNEL_PORT, protocol: 'TCP' }] },
      { ports: [{ port: ADMIN_PORT, protocol: 'TCP' }], _from: inCluster },
    ]],
    ['a mapping without allowedSources: its port from the cluster', [db], [
      { ports: [{ port: TUNNEL_PORT, protocol: 'TCP' }] },
      { ports: [{ port: ADMIN_PORT, protocol: 'TCP' }], _from: inCluster },
      { ports: [{ port: 15432, protocol: 'TCP' }], _from: inCluster },
    ]],
    ['a mapping with allowedSources: its port from those blocks only', [{ ...db, allowedSources: ['10.0.0.0/8', 'fd00::/8'] }], [
      { ports: [{ port: TUNNEL_PORT, protocol: 'TCP' }] },
      { ports: [{ port: ADMIN_PORT, protocol: 'TCP' }], _from: inCluster },
      { ports: [{ port: 15432, protocol: 'TCP' }], _from: [{ ipBlock: { cidr: '10.0.0.0/8' } }, { ipBlock: { cidr: 'fd00::/8' } }] },
    ]],
    ['a Cluster-side mapping: nothing opened on the worker', [api], [
      { ports: [{ port: TUNNEL_PORT, protocol: 'TCP' }] },
      { ports: [{ port: ADMIN_PORT, protocol: 'TCP' }], _from: inCluster },
    ]],
  ] as Array<[string, Mapping[], unknown]>)('%s', (_name, mappings, ingress) => {
    expect(desired.networkPolicy(tc(), mappings).spec).toEqual({
      podSelector: { matchLabels: { 'app.kubernetes.io/name': 'underpass-worker', 'app.kubernetes.io/instance': 'dc1' } },
      policyTypes: ['Ingress'],
      ingress,
    });
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
      drainTimeout: '1m30s',
      mappings: [
        { name: 'db', protocol: 'TCP', target: db.target, listen: db.listen },
        { name: 'web', protocol: 'TCP', target: web.target, listen: web.listen, allowedSources: ['10.0.0.0/8'] },
      ],
      ...(operator ? { operator } : {}),
    });
    expect(desired.configMap(tc(), [], channel).data?.['operator-ca.crt']).toBe(channel?.caPem);
  });

  it.each([
    ['nothing revoked: no revoked field', {}, undefined],
    ['revoked serials and names, deduplicated and sorted', { revokedSerials: ['B7', '5A0C', 'B7'], revokedConnectors: ['site-c'] }, { serials: ['5A0C', 'B7'], connectors: ['site-c'] }],
    ['a revoked name alone', { revokedConnectors: ['site-c'] }, { serials: [], connectors: ['site-c'] }],
  ])('carries what is revoked, so a worker refuses it from its start: %s', (_name, admission, revoked) => {
    const config = YAML.parse(desired.workerConfigYaml(tc({ connectors: ['site-a'] }), [], undefined, admission));
    expect(config.revoked).toEqual(revoked);
    expect(config.connectors).toEqual(['site-a']);
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
});

describe('ownership', () => {
  it('every object is owned by the TunnelConnection and labelled as managed by the operator', () => {
    const objects = [
      desired.configMap(tc(), []), desired.serviceAccount(tc()), desired.deployment(tc(), [], opts), desired.tunnelService(tc()),
      desired.appsService(tc(), [db])!, desired.networkPolicy(tc(), []),
    ];
    for (const o of objects) {
      expect(o.metadata!.ownerReferences).toEqual([{ apiVersion: 'underpass.dev/v1alpha1', kind: 'TunnelConnection', name: 'dc1', uid: '00000000-0000-0000-0000-000000000001', controller: true, blockOwnerDeletion: true }]);
      expect(o.metadata!.labels).toMatchObject({ 'app.kubernetes.io/managed-by': 'underpass-operator', 'underpass.dev/connection': 'dc1' });
    }
  });
});
