/** The EndpointSlice that points the report Service at the leader. */
import { describe, expect, it } from '@jest/globals';
import { leaderEndpointSlice } from './leader-endpoint.js';

describe('leaderEndpointSlice', () => {
  it.each([
    ['an IPv4 pod', '10.244.0.7', 'IPv4'],
    ['an IPv6 pod', 'fd00:10:244::7', 'IPv6'],
  ])('names %s as the one ready endpoint of the Service, owned by it', (_name, ip, addressType) => {
    const slice = leaderEndpointSlice({ namespace: 'underpass-system', service: 'underpass-operator', ip, port: 8443, pod: 'underpass-operator-abc' }, { uid: 'svc-uid' });
    expect(slice).toEqual({
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      metadata: {
        name: 'underpass-operator-leader',
        namespace: 'underpass-system',
        labels: {
          'kubernetes.io/service-name': 'underpass-operator',
          'endpointslice.kubernetes.io/managed-by': 'underpass-operator',
          'app.kubernetes.io/managed-by': 'underpass-operator',
        },
        ownerReferences: [{ apiVersion: 'v1', kind: 'Service', name: 'underpass-operator', uid: 'svc-uid' }],
      },
      addressType,
      endpoints: [{ addresses: [ip], conditions: { ready: true }, targetRef: { kind: 'Pod', name: 'underpass-operator-abc', namespace: 'underpass-system' } }],
      ports: [{ name: 'report', port: 8443, protocol: 'TCP' }],
    });
  });
});
