/**
 * Where a Cluster-side target is (by how cluster DNS answers it from a worker
 * pod) and whether the cluster admin's policy lets a mapping name it.
 */
import { describe, expect, it } from '@jest/globals';
import type { Mapping } from '../tunnel/mapping.js';
import { checkClusterTarget, DEFAULT_CLUSTER_TARGET_POLICY, placeName, type ClusterTarget, type ClusterTargetPolicy } from './cluster-targets.js';

const NS = 'team-a';
const API = ['10.96.0.1', '192.0.2.10'];

function mapping(host: string, port = 8080): Mapping {
  return { name: 'app', protocol: 'TCP', target: { side: 'Cluster', host, port }, listen: { port: 18080, address: '127.0.0.1' }, allowedSources: [] };
}

describe('placeName', () => {
  it.each<[string, string, ClusterTarget]>([
    ['a bare Service name is in the mapping\'s namespace', 'payroll', { kind: 'namespace', namespace: NS, service: 'payroll' }],
    ['<svc>.<ns>', 'payroll.team-b', { kind: 'namespace', namespace: 'team-b', service: 'payroll' }],
    ['<pod>.<svc>.<ns> (found through svc.<domain>)', 'db-0.db.team-b', { kind: 'namespace', namespace: 'team-b', service: 'db' }],
    ['<svc>.<ns>.svc', 'payroll.team-b.svc', { kind: 'namespace', namespace: 'team-b', service: 'payroll' }],
    ['<svc>.<ns>.svc.cluster.local', 'payroll.team-b.svc.cluster.local', { kind: 'namespace', namespace: 'team-b', service: 'payroll' }],
    ['<pod>.<svc>.<ns>.svc.cluster.local', 'db-0.db.team-b.svc.cluster.local', { kind: 'namespace', namespace: 'team-b', service: 'db' }],
    ['a pod by address', '10-1-2-3.team-b.pod.cluster.local', { kind: 'namespace', namespace: 'team-b' }],
    ['a pod by address, unqualified', '10-1-2-3.team-b.pod', { kind: 'namespace', namespace: 'team-b' }],
    ['four labels: outside the cluster', 'db.corp.example.com', { kind: 'external' }],
    ['too many labels before svc', 'a.b.c.d.svc.cluster.local', { kind: 'external' }],
    ['under the cluster domain but neither svc nor pod', 'x.team-b.cluster.local', { kind: 'external' }],
    ['the API server\'s short name in default', 'kubernetes.default', { kind: 'namespace', namespace: 'default', service: 'kubernetes' }],
  ])('%s: %s', (_name, host, want) => {
    expect(placeName(host, NS, 'cluster.local')).toEqual(want);
  });

  it('follows the cluster domain it is given', () => {
    expect(placeName('payroll.team-b.svc.k8s.example', NS, 'k8s.example')).toEqual({ kind: 'namespace', namespace: 'team-b', service: 'payroll' });
    expect(placeName('payroll.team-b.svc.cluster.local', NS, 'k8s.example')).toEqual({ kind: 'external' });
  });
});

describe('checkClusterTarget', () => {
  const teamB: ClusterTargetPolicy = { ...DEFAULT_CLUSTER_TARGET_POLICY, namespaces: ['team-b'] };
  const any: ClusterTargetPolicy = { ...DEFAULT_CLUSTER_TARGET_POLICY, namespaces: '*' };
  const cidrs: ClusterTargetPolicy = { ...DEFAULT_CLUSTER_TARGET_POLICY, cidrs: ['10.20.0.0/16'] };
  const D = DEFAULT_CLUSTER_TARGET_POLICY;

  it.each<[string, string, ClusterTargetPolicy, ClusterTarget | RegExp]>([
    ['default: a Service of the mapping\'s namespace', 'payroll', D, { kind: 'namespace', namespace: NS, service: 'payroll' }],
    ['default: the mapping\'s namespace by its full name', 'payroll.team-a.svc.cluster.local', D, { kind: 'namespace', namespace: NS, service: 'payroll' }],
    ['default: another namespace is refused, naming the flag', 'payroll.team-b.svc', D, /is in namespace team-b; Cluster-side targets may be in this mapping's namespace \(team-a\) only .*--cluster-target-namespace/],
    ['a namespace the admin allows', 'payroll.team-b.svc', teamB, { kind: 'namespace', namespace: 'team-b', service: 'payroll' }],
    ['a namespace the admin did not allow', 'payroll.team-c', teamB, /in namespace team-c; .* \(team-a\) and team-b only/],
    ['default: an IP address is refused', '10.20.0.5', D, /is an IP address outside the blocks the cluster admin allows .*none; operator flag --cluster-target-cidr/],
    ['an IP inside the admin\'s blocks', '10.20.0.5', cidrs, { kind: 'ip', ip: '10.20.0.5' }],
    ['an IP outside the admin\'s blocks', '10.21.0.5', cidrs, /outside the blocks .*10\.20\.0\.0\/16/],
    ['default: a name outside the cluster is refused', 'db.corp.example.com', D, /is not a Service or pod name of this cluster .*--cluster-target-namespace='\*'/],
    ['with *: a name outside the cluster', 'db.corp.example.com', any, { kind: 'external' }],
    ['with *: any namespace', 'payroll.team-z.svc', any, { kind: 'namespace', namespace: 'team-z', service: 'payroll' }],
    ['with *: any IP', '203.0.113.7', any, { kind: 'ip', ip: '203.0.113.7' }],
    ['never: kubernetes.default', 'kubernetes.default', any, /is the Kubernetes API server \(Service default\/kubernetes\)/],
    ['never: kubernetes.default.svc.cluster.local', 'kubernetes.default.svc.cluster.local', any, /Kubernetes API server/],
    ['never: the API server\'s ClusterIP', '10.96.0.1', any, /is an address of the Kubernetes API server/],
    ['never: an endpoint of the API server', '192.0.2.10', { ...cidrs, cidrs: ['192.0.2.0/24'] }, /is an address of the Kubernetes API server/],
    ['never: the metadata address', '169.254.169.254', any, /is a link-local address \(cloud metadata/],
    ['never: the IPv6 metadata address', 'fd00:ec2::254', any, /is a cloud metadata address/],
    ['never: loopback (the worker pod itself)', '127.0.0.1', any, /is a loopback address/],
    ['never: an IPv4-mapped loopback', '::ffff:127.0.0.1', any, /is a loopback address/],
    ['never: 0.0.0.0, which dials the worker pod', '0.0.0.0', any, /which dials the worker pod itself/],
    ['never: localhost', 'localhost', any, /is the worker pod itself/],
  ])('%s (%s)', (_name, host, policy, want) => {
    const v = checkClusterTarget(mapping(host), NS, policy, API);
    if (want instanceof RegExp) {
      expect(v.ok).toBe(false);
      expect(v.ok ? '' : v.message).toMatch(want);
    } else {
      expect(v).toEqual({ ok: true, target: want });
    }
  });

  it('a Service named kubernetes in the tenant\'s own namespace is theirs, not the API server', () => {
    expect(checkClusterTarget(mapping('kubernetes'), NS, D, API)).toEqual({ ok: true, target: { kind: 'namespace', namespace: NS, service: 'kubernetes' } });
    expect(checkClusterTarget(mapping('kubernetes'), 'default', D, API).ok).toBe(false);
  });
});
