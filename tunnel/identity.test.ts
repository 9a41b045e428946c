import { describe, it, expect } from '@jest/globals';
import type { PeerCertificate } from 'node:tls';
import { X509Certificate } from 'node:crypto';
import {
  caUri, connectorUri, formatConnectionId, formatIdentityUri, identityFromCertificate, identityFromPeerCertificate, parseConnectionId,
  parseConnectorName, parseIdentityUri, sameConnection, subjectAltNames, workerUri, type ConnectionId, type Identity,
} from './identity.js';
import { createCA, issueConnectorCert, issueWorkerCert, loadCA } from './pki.js';

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    return (err as { code?: string }).code;
  }
  return undefined;
}

function messageOf(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    return (err as Error).message;
  }
  throw new Error('expected a throw');
}

const LABEL_63 = 'a'.repeat(63);

describe('connection ids', () => {
  it.each([
    ['team-a/dc1', { namespace: 'team-a', name: 'dc1' }],
    ['a/b', { namespace: 'a', name: 'b' }],
    ['0/9', { namespace: '0', name: '9' }],
    ['kube-system/x-1-y', { namespace: 'kube-system', name: 'x-1-y' }],
    [`${LABEL_63}/${LABEL_63}`, { namespace: LABEL_63, name: LABEL_63 }],
  ])('%s parses and formats back to itself', (text, id) => {
    expect(parseConnectionId(text)).toEqual(id);
    expect(formatConnectionId(id)).toBe(text);
  });

  it.each([
    ['dc1', 'must have the form <namespace>/<name>'],
    ['a/b/c', 'must have the form <namespace>/<name>'],
    ['', 'must have the form <namespace>/<name>'],
    ['/dc1', 'namespace "" in "/dc1" is empty'],
    ['team-a/', 'connection name "" in "team-a/" is empty'],
    ['Team-A/dc1', 'namespace "Team-A" in "Team-A/dc1" must be a DNS-1123 label'],
    ['team-a/dc_1', 'connection name "dc_1" in "team-a/dc_1" must be a DNS-1123 label'],
    ['-a/dc1', 'namespace "-a"'],
    ['a/dc1-', 'connection name "dc1-"'],
    ['a/b.c', 'connection name "b.c"'],
    [`${'a'.repeat(64)}/dc1`, 'is 64 characters long'],
  ])('%j is rejected: %s', (text, message) => {
    expect(codeOf(() => parseConnectionId(text))).toBe('ERR_CONNECTION_ID_INVALID');
    expect(messageOf(() => parseConnectionId(text))).toContain(message);
  });

  it('refuses to format an invalid id, naming the bad part', () => {
    expect(messageOf(() => formatConnectionId({ namespace: 'ok', name: 'Bad' }))).toContain('connection name "Bad"');
  });
});

describe('connector names', () => {
  it.each(['site-a', 'a', '1', LABEL_63])('%s is a valid connector name', (name) => {
    expect(parseConnectorName(name)).toBe(name);
  });

  it.each(['', 'Site', 'site_a', 'site.a', '-a', 'a-', 'a'.repeat(64), 'a/b'])('%j is not', (name) => {
    expect(codeOf(() => parseConnectorName(name))).toBe('ERR_CONNECTOR_NAME_INVALID');
  });
});

describe('identity URIs', () => {
  const connection = { namespace: 'team-a', name: 'dc1' };

  it.each<[string, Identity]>([
    ['underpass://team-a/dc1', { namespace: 'team-a', connection: 'dc1', role: 'ca' }],
    ['underpass://team-a/dc1/worker', { namespace: 'team-a', connection: 'dc1', role: 'worker' }],
    ['underpass://team-a/dc1/connector/site-a', { namespace: 'team-a', connection: 'dc1', role: 'connector', name: 'site-a' }],
    [`underpass://${LABEL_63}/${LABEL_63}/connector/${LABEL_63}`, { namespace: LABEL_63, connection: LABEL_63, role: 'connector', name: LABEL_63 }],
  ])('%s parses and formats back to itself', (uri, identity) => {
    expect(parseIdentityUri(uri)).toEqual(identity);
    expect(formatIdentityUri(identity)).toBe(uri);
  });

  it('builds each role from a connection id', () => {
    expect(caUri(connection)).toBe('underpass://team-a/dc1');
    expect(workerUri(connection)).toBe('underpass://team-a/dc1/worker');
    expect(connectorUri(connection, 'site-a')).toBe('underpass://team-a/dc1/connector/site-a');
    expect(codeOf(() => connectorUri(connection, 'Site A'))).toBe('ERR_CONNECTOR_NAME_INVALID');
  });

  it.each([
    ['https://team-a/dc1', 'must start with "underpass://"'],
    ['UNDERPASS://team-a/dc1', 'must start with "underpass://"'],
    ['underpass:team-a/dc1', 'must start with "underpass://"'],
    ['underpass://team-a', 'must be underpass://<namespace>/<connection>'],
    ['underpass://team-a/dc1/', 'must be underpass://'],
    ['underpass://team-a/dc1/worker/x', 'must be underpass://'],
    ['underpass://team-a/dc1/connector', 'must be underpass://'],
    ['underpass://team-a/dc1/connector/a/b', 'must be underpass://'],
    ['underpass://team-a/dc1/admin', 'must be underpass://'],
    ['underpass://team-a/dc1/site-a', 'must be underpass://'],
    ['underpass://Team-A/dc1', 'has namespace "Team-A"'],
    ['underpass://team-a/dc%31', 'has connection "dc%31"'],
    ['underpass://team-a/dc1/connector/Site', 'has connector name "Site"'],
    ['underpass://user@team-a/dc1', 'has namespace "user@team-a"'],
    ['underpass://team-a/dc1?x=1', 'has connection "dc1?x=1"'],
  ])('%s is rejected: %s', (uri, message) => {
    expect(codeOf(() => parseIdentityUri(uri))).toBe('ERR_IDENTITY_INVALID');
    expect(messageOf(() => parseIdentityUri(uri))).toContain(message);
  });
});

describe('subjectaltname text', () => {
  it.each([
    ['', []],
    ['DNS:a', [{ type: 'DNS', value: 'a' }]],
    [
      'DNS:localhost, IP Address:127.0.0.1, URI:underpass://x/y/worker',
      [{ type: 'DNS', value: 'localhost' }, { type: 'IP Address', value: '127.0.0.1' }, { type: 'URI', value: 'underpass://x/y/worker' }],
    ],
    ['URI:"a, URI:b", DNS:c', [{ type: 'URI', value: 'a, URI:b' }, { type: 'DNS', value: 'c' }]],
    ['DNS:"q\\"uote", DNS:d', [{ type: 'DNS', value: 'q"uote' }, { type: 'DNS', value: 'd' }]],
  ])('%j splits into its entries', (text, entries) => {
    expect(subjectAltNames(text)).toEqual(entries);
  });
});

describe('identityFromPeerCertificate', () => {
  const peer = (subjectaltname?: string) =>
    ({ subject: { CN: 'x' }, serialNumber: '01', ...(subjectaltname === undefined ? {} : { subjectaltname }) }) as unknown as PeerCertificate;

  it('returns the single underpass identity among other SANs', () => {
    const cert = peer('DNS:a, URI:underpass://x/y/connector/z, IP Address:127.0.0.1, URI:https://example.com/');
    expect(identityFromPeerCertificate(cert)).toEqual({ namespace: 'x', connection: 'y', role: 'connector', name: 'z' });
  });

  it.each([
    ['no certificate at all', {} as PeerCertificate, 'ERR_IDENTITY_MISSING'],
    ['no SAN extension', peer(), 'ERR_IDENTITY_MISSING'],
    ['only DNS and IP SANs', peer('DNS:a, IP Address:127.0.0.1'), 'ERR_IDENTITY_MISSING'],
    ['an underpass name that is not a URI SAN', peer('DNS:underpass://x/y/worker'), 'ERR_IDENTITY_MISSING'],
    ['two underpass URIs', peer('URI:underpass://x/y/worker, URI:underpass://x/y/connector/z'), 'ERR_IDENTITY_AMBIGUOUS'],
    ['the same underpass URI twice', peer('URI:underpass://x/y/worker, URI:underpass://x/y/worker'), 'ERR_IDENTITY_AMBIGUOUS'],
    ['a malformed underpass URI', peer('URI:underpass://x/y/connector'), 'ERR_IDENTITY_INVALID'],
    ['an upper-case scheme (still a claim, but not canonical)', peer('URI:Underpass://x/y/worker'), 'ERR_IDENTITY_INVALID'],
    ['a quoted URI hiding a separator', peer('URI:"underpass://x/y/connector/z, DNS:a"'), 'ERR_IDENTITY_INVALID'],
  ])('a certificate with %s is refused', (_what, cert, code) => {
    expect(codeOf(() => identityFromPeerCertificate(cert))).toBe(code);
  });

  it('checks the expected connection and role when asked', () => {
    const cert = peer('URI:underpass://x/y/connector/z');
    expect(identityFromPeerCertificate(cert, { connection: { namespace: 'x', name: 'y' }, role: 'connector' }).name).toBe('z');
    expect(codeOf(() => identityFromPeerCertificate(cert, { connection: { namespace: 'x', name: 'other' } }))).toBe('ERR_IDENTITY_MISMATCH');
    expect(codeOf(() => identityFromPeerCertificate(cert, { role: 'worker' }))).toBe('ERR_IDENTITY_MISMATCH');
  });

  it.each([
    ['a connector of the same connection name in another namespace', 'URI:underpass://team-b/dc1/connector/site-a', 'belongs to connection team-b/dc1, not team-a/dc1'],
    ['a worker of the same connection name in another namespace', 'URI:underpass://team-b/dc1/worker', 'belongs to connection team-b/dc1, not team-a/dc1'],
    ['a connector of another connection in the same namespace', 'URI:underpass://team-a/dc2/connector/site-a', 'belongs to connection team-a/dc2, not team-a/dc1'],
  ])('refuses %s when connection team-a/dc1 is expected (ERR_IDENTITY_MISMATCH)', (_what, san, message) => {
    const expectation = { connection: { namespace: 'team-a', name: 'dc1' } };
    expect(codeOf(() => identityFromPeerCertificate(peer(san), expectation))).toBe('ERR_IDENTITY_MISMATCH');
    expect(messageOf(() => identityFromPeerCertificate(peer(san), expectation))).toContain(message);
  });
});

describe('sameConnection', () => {
  const a: ConnectionId = { namespace: 'team-a', name: 'dc1' };
  it.each<[string, ConnectionId, boolean]>([
    ['the same namespace and name', { namespace: 'team-a', name: 'dc1' }, true],
    ['the same name in another namespace', { namespace: 'team-b', name: 'dc1' }, false],
    ['another name in the same namespace', { namespace: 'team-a', name: 'dc2' }, false],
    ['namespace and name swapped', { namespace: 'dc1', name: 'team-a' }, false],
  ])('%s → %s', (_what, b, want) => {
    expect(sameConnection(a, b)).toBe(want);
    expect(sameConnection(b, a)).toBe(want);
  });
});

describe('identityFromCertificate (a certificate we hold)', () => {
  it('reads the identity of certificates the PKI issues, by the same rules as a peer certificate', async () => {
    const connection = { namespace: 'team-a', name: 'dc1' };
    const caPem = await createCA({ connection });
    const ca = await loadCA(caPem.certPem, caPem.keyPem);
    const connector = new X509Certificate((await issueConnectorCert(ca, { connector: 'site-a' })).certPem);
    const worker = new X509Certificate((await issueWorkerCert(ca, { sans: ['localhost'] })).certPem);
    expect(identityFromCertificate(connector, { role: 'connector' })).toEqual({ namespace: 'team-a', connection: 'dc1', role: 'connector', name: 'site-a' });
    expect(identityFromCertificate(worker, { connection, role: 'worker' })).toEqual({ namespace: 'team-a', connection: 'dc1', role: 'worker' });
    expect(codeOf(() => identityFromCertificate(worker, { role: 'connector' }))).toBe('ERR_IDENTITY_MISMATCH');
    expect(codeOf(() => identityFromCertificate(connector, { connection: { namespace: 'team-b', name: 'dc1' } }))).toBe('ERR_IDENTITY_MISMATCH');
  });
});
