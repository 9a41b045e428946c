/**
 * The operator's tenant-isolation flags: parsed once, a clear error naming
 * the flag for anything else.
 */
import { describe, expect, it } from '@jest/globals';
import { parseClusterTargetPolicy, parseLabelSelector, parseOverridePolicy, parseWorkerNetwork, POLICY_DEFAULTS } from './operator-policy-flags.js';

describe('parseLabelSelector', () => {
  it.each([
    ['one label', 'underpass.dev/metrics-scraper=true', { matchLabels: { 'underpass.dev/metrics-scraper': 'true' } }],
    ['two labels', 'a=1, b=2', { matchLabels: { a: '1', b: '2' } }],
    ['an empty value', 'node-role.kubernetes.io/infra=', { matchLabels: { 'node-role.kubernetes.io/infra': '' } }],
    ['== as kubectl writes it', 'a==1', { matchLabels: { a: '1' } }],
    ['the empty string: selects nothing', '', undefined],
  ])('%s: %s', (_name, text, want) => {
    expect(parseLabelSelector(text, '--x')).toEqual(want);
  });

  it.each([
    ['no value', 'team', /"team" is not key=value/],
    ['a bad key', 'a b=1', /"a b" is not a label key/],
    ['a bad value', 'a=b c', /"b c" is not a label value/],
  ])('refuses %s (%s)', (_name, text, message) => {
    expect(() => parseLabelSelector(text, '--metrics-namespace-selector')).toThrow(message);
  });
});

describe('parseClusterTargetPolicy', () => {
  const base = { clusterTargetNamespace: [], clusterTargetCidr: [], clusterDomain: 'cluster.local' };
  it.each([
    ['the default: the mapping\'s namespace only', base, { namespaces: [], cidrs: [], clusterDomain: 'cluster.local' }],
    ['repeated and comma-listed namespaces, sorted once each', { ...base, clusterTargetNamespace: ['team-c,team-b', 'team-c'] }, { namespaces: ['team-b', 'team-c'], cidrs: [], clusterDomain: 'cluster.local' }],
    ['* anywhere in the list', { ...base, clusterTargetNamespace: ['team-b', '*'] }, { namespaces: '*', cidrs: [], clusterDomain: 'cluster.local' }],
    ['blocks, normalised', { ...base, clusterTargetCidr: ['10.20.0.0/16', 'FD00::/8'] }, { namespaces: [], cidrs: ['10.20.0.0/16', 'fd00::/8'], clusterDomain: 'cluster.local' }],
    ['a cluster domain with a trailing dot', { ...base, clusterDomain: 'K8s.Example.' }, { namespaces: [], cidrs: [], clusterDomain: 'k8s.example' }],
  ])('%s', (_name, flags, want) => {
    expect(parseClusterTargetPolicy(flags)).toEqual(want);
  });

  it.each([
    ['a namespace that is not a name', { ...base, clusterTargetNamespace: ['Team_A'] }, '--cluster-target-namespace', /"Team_A" is not a namespace name/],
    ['a block with host bits', { ...base, clusterTargetCidr: ['10.20.0.1/16'] }, '--cluster-target-cidr', /host bits set/],
    ['a bad domain', { ...base, clusterDomain: 'cluster_local' }, '--cluster-domain', /not a DNS domain/],
  ])('refuses %s, naming %s', (_name, flags, field, message) => {
    expect(() => parseClusterTargetPolicy(flags)).toThrow(expect.objectContaining({ message: expect.stringMatching(message), field }));
  });
});

describe('parseWorkerNetwork', () => {
  const base = {
    metricsNamespaceSelector: POLICY_DEFAULTS.metricsNamespaceSelector, workerEgress: true,
    workerDnsNamespaceSelector: POLICY_DEFAULTS.workerDnsNamespaceSelector, workerDnsPodSelector: POLICY_DEFAULTS.workerDnsPodSelector,
    workerDnsCidr: [] as string[], workerDnsPort: ['53'],
  };
  const scrapers = { matchLabels: { 'underpass.dev/metrics-scraper': 'true' } };
  const kubeDns = { namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'kube-system' } }, podSelector: { matchLabels: { 'k8s-app': 'kube-dns' } } };
  it.each([
    ['the defaults: kube-dns pods in kube-system on 53', base, { metricsNamespaces: scrapers, egress: { dns: { to: [kubeDns], ports: [53] } } }],
    ['a DNS server that is not a pod (the local cluster\'s CoreDNS on the node)', { ...base, workerDnsNamespaceSelector: '', workerDnsPodSelector: '', workerDnsCidr: ['10.213.0.1'] },
      { metricsNamespaces: scrapers, egress: { dns: { to: [{ ipBlock: { cidr: '10.213.0.1/32' } }], ports: [53] } } }],
    ['OpenShift DNS on 5353', { ...base, workerDnsNamespaceSelector: 'kubernetes.io/metadata.name=openshift-dns', workerDnsPodSelector: 'dns.operator.openshift.io/daemonset-dns=default', workerDnsPort: ['5353'] },
      { metricsNamespaces: scrapers, egress: { dns: { to: [{ namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'openshift-dns' } }, podSelector: { matchLabels: { 'dns.operator.openshift.io/daemonset-dns': 'default' } } }], ports: [5353] } } }],
    ['egress off, no scrapers', { ...base, workerEgress: false, metricsNamespaceSelector: '' }, { egress: false }],
  ])('%s', (_name, flags, want) => {
    expect(parseWorkerNetwork(flags)).toEqual(want);
  });

  it('refuses an egress policy that reaches no DNS server', () => {
    expect(() => parseWorkerNetwork({ ...base, workerDnsNamespaceSelector: '', workerDnsPodSelector: '' })).toThrow(/workers would reach no DNS server/);
  });
});

describe('parseOverridePolicy', () => {
  it.each([
    ['the default', { workerOverrides: 'resources', workerImagePrefix: [] }, { fields: ['resources'], imagePrefixes: [] }],
    ['none', { workerOverrides: 'none', workerImagePrefix: [] }, { fields: [], imagePrefixes: [] }],
    ['all three and two image prefixes', { workerOverrides: 'resources,nodeSelector,tolerations', workerImagePrefix: ['ghcr.io/underpass/', 'registry.example.test/'] },
      { fields: ['resources', 'nodeSelector', 'tolerations'], imagePrefixes: ['ghcr.io/underpass/', 'registry.example.test/'] }],
  ])('%s', (_name, flags, want) => {
    expect(parseOverridePolicy(flags)).toEqual(want);
  });

  it.each([
    ['an unknown field', { workerOverrides: 'securityContext', workerImagePrefix: [] }, /"securityContext" is not one of resources, nodeSelector, tolerations/],
    ['image (which has its own flag)', { workerOverrides: 'image', workerImagePrefix: [] }, /--worker-image-prefix/],
    ['a prefix with a space', { workerOverrides: 'none', workerImagePrefix: ['a b'] }, /not an image prefix/],
  ])('refuses %s', (_name, flags, message) => {
    expect(() => parseOverridePolicy(flags)).toThrow(message);
  });
});
