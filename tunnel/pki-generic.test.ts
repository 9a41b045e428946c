import { describe, it, expect, beforeAll } from '@jest/globals';
import { X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import * as tls from 'node:tls';
import { createCA, issueConnectorCert, issueWorkerCert, loadCA, type PemKeyPair } from './pki.js';
import {
  CLIENT_AUTH, createSelfSignedCA, issueServingCert, leafProblem, loadSigningCA, normaliseSans, SERVER_AUTH, servingSans,
  type SigningCA,
} from './pki-generic.js';

const NOW = new Date('2026-03-01T12:00:00Z');
const DAY = 86_400_000;

let caPems: PemKeyPair;
let ca: SigningCA;
let serving: PemKeyPair;

beforeAll(async () => {
  caPems = await createSelfSignedCA({ commonName: 'underpass-operator-ca', now: NOW, validityDays: 3650 });
  ca = await loadSigningCA(caPems.certPem, caPems.keyPem);
  serving = await issueServingCert(ca, { commonName: 'underpass-operator', sans: ['Operator.Example', '127.0.0.1', '::1'], now: NOW, validityDays: 365 });
});

describe('createSelfSignedCA', () => {
  it('makes a self-signed P-256 CA with no identity URI', () => {
    const cert = new X509Certificate(caPems.certPem);
    expect(cert.ca).toBe(true);
    expect(cert.subject).toBe('CN=underpass-operator-ca');
    expect(cert.checkIssued(cert) && cert.verify(cert.publicKey)).toBe(true);
    expect(cert.subjectAltName).toBeUndefined();
    expect(cert.publicKey.asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
    expect(new Date(cert.validTo).getTime()).toBe(NOW.getTime() + 3650 * DAY);
  });
});

describe('issueServingCert', () => {
  it('issues a serverAuth certificate for the given names, normalised', () => {
    const cert = new X509Certificate(serving.certPem);
    expect(cert.keyUsage).toEqual([SERVER_AUTH]);
    expect(cert.ca).toBe(false);
    expect(servingSans(serving.certPem)).toEqual(normaliseSans(['127.0.0.1', 'operator.example', '::1']));
    expect(leafProblem(cert, new X509Certificate(caPems.certPem), NOW, SERVER_AUTH)).toBeUndefined();
  });

  it.each([
    ['no SANs', { sans: [] }, 'ERR_PKI_SAN_REQUIRED'],
    ['a bad SAN', { sans: ['not a name'] }, 'ERR_PKI_SAN_INVALID'],
    ['a life past the CA', { sans: ['a.example'], validityDays: 4000 }, 'ERR_PKI_VALIDITY'],
  ])('refuses %s', async (_name, options, code) => {
    await expect(issueServingCert(ca, { commonName: 'x', validityDays: 1, now: NOW, ...options })).rejects.toMatchObject({ code });
  });

  it('passes a real TLS handshake with hostname checks, and fails for a name it lacks', async () => {
    const server = tls.createServer({ cert: serving.certPem, key: serving.keyPem }, (s) => s.end());
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const { port } = server.address() as AddressInfo;
    const dial = (servername: string) => new Promise<string>((resolve) => {
      const s = tls.connect({ host: '127.0.0.1', port, servername, ca: caPems.certPem }, () => {
        resolve('authorized');
        s.destroy();
      });
      s.on('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
    });
    try {
      expect(await dial('operator.example')).toBe('authorized');
      expect(await dial('other.example')).toBe('ERR_TLS_CERT_ALTNAME_INVALID');
    } finally {
      server.close();
    }
  });
});

describe('loadSigningCA', () => {
  it('refuses a key of another CA', async () => {
    const other = await createSelfSignedCA({ commonName: 'other', validityDays: 1 });
    await expect(loadSigningCA(caPems.certPem, other.keyPem)).rejects.toMatchObject({ code: 'ERR_PKI_KEY_MISMATCH' });
  });

  it('refuses a certificate that is not a CA', async () => {
    await expect(loadSigningCA(serving.certPem, serving.keyPem)).rejects.toMatchObject({ code: 'ERR_PKI_NOT_CA' });
  });
});

describe('leafProblem', () => {
  const connection = { namespace: 'team-a', name: 'dc1' };
  let dc1Ca: X509Certificate;
  let leaves: Record<string, X509Certificate>;

  beforeAll(async () => {
    const pems = await createCA({ connection, now: NOW });
    const loaded = await loadCA(pems.certPem, pems.keyPem);
    dc1Ca = new X509Certificate(pems.certPem);
    const other = await loadCA(...Object.values(await createCA({ connection, now: NOW })) as [string, string]);
    const cert = async (p: Promise<PemKeyPair>) => new X509Certificate((await p).certPem);
    leaves = {
      worker: await cert(issueWorkerCert(loaded, { sans: ['localhost'], now: NOW })),
      connector: await cert(issueConnectorCert(loaded, { connector: 'site-a', now: NOW })),
      impostor: await cert(issueWorkerCert(other, { sans: ['localhost'], now: NOW })),
      future: await cert(issueWorkerCert(loaded, { sans: ['localhost'], now: new Date(NOW.getTime() + 2 * DAY) })),
    };
  });

  it.each([
    ['a worker certificate of the CA, for clientAuth', 'worker', 0, CLIENT_AUTH, undefined],
    ['a certificate of a look-alike CA', 'impostor', 0, CLIENT_AUTH, 'CERT_UNTRUSTED'],
    ['an expired certificate', 'worker', 31 * DAY, CLIENT_AUTH, 'CERT_EXPIRED'],
    ['a certificate before its start', 'future', DAY, CLIENT_AUTH, 'CERT_NOT_YET_VALID'],
    ['any certificate while its CA is not valid', 'worker', -DAY, CLIENT_AUTH, 'CA_NOT_VALID'],
    ['a connector certificate used for serverAuth', 'connector', 0, SERVER_AUTH, 'WRONG_USAGE'],
  ])('judges %s', (_name, leaf, offsetMs, usage, code) => {
    expect(leafProblem(leaves[leaf]!, dc1Ca, new Date(NOW.getTime() + offsetMs), usage)?.code).toBe(code);
  });

  it('refuses the CA certificate itself as a leaf', () => {
    expect(leafProblem(dc1Ca, dc1Ca, NOW, CLIENT_AUTH)?.code).toBe('WRONG_USAGE');
  });
});
