/**
 * The worker's own check of the address it is about to dial for a
 * Cluster-side mapping (the second layer behind the operator's check).
 */
import { describe, expect, it } from '@jest/globals';
import { ClusterTargetGuard } from './cluster-target-guard.js';

const pod = new ClusterTargetGuard({ loopback: false, refuse: ['10.96.0.1/32', '192.0.2.0/30'] });
const standalone = new ClusterTargetGuard({ loopback: true, refuse: [] });

describe('ClusterTargetGuard.whyNot', () => {
  it.each<[string, ClusterTargetGuard, string, string, RegExp | undefined]>([
    ['a pod address', pod, '10.213.0.17', 'payroll', undefined],
    ['the metadata address by IP', pod, '169.254.169.254', '169.254.169.254', /^target 169\.254\.169\.254:80 is a link-local address \(cloud metadata/],
    ['a name that resolves to the metadata address', pod, '169.254.169.254', 'metadata.attacker.example', /^target metadata\.attacker\.example:80 resolves to 169\.254\.169\.254, which is a link-local address/],
    ['IPv6 link-local', pod, 'fe80::1', 'x', /link-local/],
    ['the IPv6 metadata address', pod, 'fd00:ec2::254', 'x', /cloud metadata/],
    ['the API server\'s ClusterIP (refuse list)', pod, '10.96.0.1', 'kubernetes.default', /resolves to 10\.96\.0\.1, which is an address of the Kubernetes API server/],
    ['an address inside a refused block', pod, '192.0.2.3', 'x', /Kubernetes API server/],
    ['just outside it', pod, '192.0.2.4', 'x', undefined],
    ['an IPv4-mapped form of a refused address', pod, '::ffff:10.96.0.1', 'x', /Kubernetes API server/],
    ['loopback in a pod', pod, '127.0.0.1', 'localhost', /the worker's own host/],
    ['the unspecified address in a pod', pod, '0.0.0.0', '0.0.0.0', /the worker's own host/],
    ['loopback for a stand-alone worker', standalone, '127.0.0.1', '127.0.0.1', undefined],
    ['metadata even for a stand-alone worker', standalone, '169.254.169.254', 'x', /link-local/],
  ])('%s', (_name, guard, ip, host, want) => {
    const why = guard.whyNot(ip, host, 80);
    if (want) expect(why).toMatch(want);
    else expect(why).toBeUndefined();
  });
});
