import { describe, it, expect, beforeAll, afterAll } from '@jest/globals';
import { createPrivateKey, generateKeyPairSync, X509Certificate } from 'node:crypto';
import { mkdtemp, readFile, rm, stat, writeFile, chmod, readdir } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tls from 'node:tls';
import { identityFromPeerCertificate } from './identity.js';
import {
  certificateInfo, classifySan, CLOCK_SKEW_MS, connectionFromCA, createCA, issueConnectorCert, issueWorkerCert, loadCA,
  writePemFiles, type CertificateAuthority, type PemKeyPair,
} from './pki.js';

const DC1 = { namespace: 'team-a', name: 'dc1' };
const DC2 = { namespace: 'team-a', name: 'dc2' };
const NOW = new Date('2026-03-01T12:00:00.750Z');
const HOUR = 3_600_000;
const DAY = 24 * HOUR;
const SERVER_AUTH = '1.3.6.1.5.5.7.3.1';
const CLIENT_AUTH = '1.3.6.1.5.5.7.3.2';

async function codeOf(promise: Promise<unknown> | (() => unknown)): Promise<string | undefined> {
  try {
    await (typeof promise === 'function' ? promise() : promise);
  } catch (err) {
    return (err as { code?: string }).code;
  }
  return undefined;
}

function seconds(ms: number): Date {
  return new Date(Math.floor(ms / 1000) * 1000);
}

let caPems: PemKeyPair;
let ca: CertificateAuthority;
let caCert: X509Certificate;

beforeAll(async () => {
  caPems = await createCA({ connection: DC1, now: NOW });
  ca = await loadCA(caPems.certPem, caPems.keyPem);
  caCert = new X509Certificate(caPems.certPem);
});

describe('createCA', () => {
  it('makes a self-signed P-256 CA naming its connection', () => {
    expect(caCert.ca).toBe(true);
    expect(caCert.checkIssued(caCert)).toBe(true);
    expect(caCert.verify(caCert.publicKey)).toBe(true);
    expect(caCert.subject).toBe('CN=underpass-ca team-a/dc1');
    expect(caCert.subjectAltName).toBe('URI:underpass://team-a/dc1');
    expect(caCert.publicKey.asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
    expect(caCert.toLegacyObject().asn1Curve).toBe('prime256v1');
  });

  it('is valid from five minutes before now for ten years by default', () => {
    const info = certificateInfo(caPems.certPem);
    expect(info.isCA).toBe(true);
    expect(info.notBefore).toEqual(seconds(NOW.getTime() - CLOCK_SKEW_MS));
    expect(info.notAfter).toEqual(seconds(NOW.getTime() + 3650 * DAY));
    expect(new Date(caCert.validTo)).toEqual(info.notAfter);
  });

  it('writes the key as PKCS#8 PEM', () => {
    expect(caPems.keyPem).toMatch(/^-----BEGIN PRIVATE KEY-----\n[A-Za-z0-9+/=\n]+-----END PRIVATE KEY-----\n$/);
    const key = createPrivateKey(caPems.keyPem);
    expect(key.asymmetricKeyType).toBe('ec');
    expect(key.asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
  });

  it('uses random positive 16-byte serials', async () => {
    const other = await createCA({ connection: DC1, now: NOW });
    const serials = [caPems, other].map((p) => certificateInfo(p.certPem).serialNumber);
    for (const serial of serials) expect(serial).toMatch(/^[4-7][0-9a-f]{31}$/);
    expect(serials[0]).not.toBe(serials[1]);
  });

  it('honours validityDays and rejects a non-positive one', async () => {
    const short = await createCA({ connection: DC1, now: NOW, validityDays: 2 });
    expect(certificateInfo(short.certPem).notAfter).toEqual(seconds(NOW.getTime() + 2 * DAY));
    expect(await codeOf(createCA({ connection: DC1, validityDays: 0 }))).toBe('ERR_PKI_VALIDITY');
  });
});

describe('issueWorkerCert', () => {
  let worker: PemKeyPair;
  let cert: X509Certificate;

  beforeAll(async () => {
    worker = await issueWorkerCert(ca, { sans: ['dc1.tunnel.example.com', '127.0.0.1', '::1', 'localhost'], now: NOW });
    cert = new X509Certificate(worker.certPem);
  });

  it('is signed by the CA', () => {
    expect(cert.checkIssued(caCert)).toBe(true);
    expect(cert.verify(caCert.publicKey)).toBe(true);
    expect(cert.ca).toBe(false);
    expect(cert.issuer).toBe(caCert.subject);
  });

  it('carries the DNS and IP SANs and the worker identity', () => {
    expect(cert.subjectAltName).toBe(
      'DNS:dc1.tunnel.example.com, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1, DNS:localhost, URI:underpass://team-a/dc1/worker',
    );
    expect(cert.checkHost('dc1.tunnel.example.com')).toBe('dc1.tunnel.example.com');
    expect(cert.checkIP('127.0.0.1')).toBe('127.0.0.1');
    expect(cert.checkIP('::1')).toBe('::1');
    const info = certificateInfo(worker.certPem);
    expect(info).toMatchObject({
      subject: 'CN=underpass-worker team-a/dc1',
      uris: ['underpass://team-a/dc1/worker'],
      dnsNames: ['dc1.tunnel.example.com', 'localhost'],
      ips: ['127.0.0.1', '::1'],
      isCA: false,
    });
  });

  it('may serve and, later, dial peer workers', () => {
    expect(cert.keyUsage?.sort()).toEqual([SERVER_AUTH, CLIENT_AUTH]);
  });

  it('is valid for 720 hours by default, starting a little before now', () => {
    expect(new Date(cert.validFrom)).toEqual(seconds(NOW.getTime() - CLOCK_SKEW_MS));
    expect(new Date(cert.validTo)).toEqual(seconds(NOW.getTime() + 720 * HOUR));
  });

  it('takes explicit dates and hours', async () => {
    const notBefore = new Date('2026-03-02T00:00:00Z');
    const explicit = certificateInfo((await issueWorkerCert(ca, { sans: ['a.example'], notBefore, notAfter: new Date('2026-03-03T00:00:00Z') })).certPem);
    expect([explicit.notBefore, explicit.notAfter]).toEqual([notBefore, new Date('2026-03-03T00:00:00Z')]);
    const hours = certificateInfo((await issueWorkerCert(ca, { sans: ['a.example'], now: NOW, validityHours: 1 })).certPem);
    expect(hours.notAfter).toEqual(seconds(NOW.getTime() + HOUR));
  });

  it('drops duplicate SANs', async () => {
    const info = certificateInfo((await issueWorkerCert(ca, { sans: ['A.example', 'a.example', '10.0.0.1', '10.0.0.1'] })).certPem);
    expect([info.dnsNames, info.ips]).toEqual([['a.example'], ['10.0.0.1']]);
  });

  it.each([
    ['no SANs at all', [], 'ERR_PKI_SAN_REQUIRED'],
    ['an underscore', ['db_1.example'], 'ERR_PKI_SAN_INVALID'],
    ['a URL instead of a name', ['https://a.example'], 'ERR_PKI_SAN_INVALID'],
    ['a port', ['a.example:443'], 'ERR_PKI_SAN_INVALID'],
  ])('rejects %s', async (_what, sans, code) => {
    expect(await codeOf(issueWorkerCert(ca, { sans }))).toBe(code);
  });
});

describe('classifySan', () => {
  it.each([
    ['127.0.0.1', { type: 'ip', value: '127.0.0.1' }],
    ['::1', { type: 'ip', value: '::1' }],
    ['2001:db8::10', { type: 'ip', value: '2001:db8::10' }],
    ['::ffff:10.0.0.1', { type: 'ip', value: '::ffff:10.0.0.1' }],
    ['localhost', { type: 'dns', value: 'localhost' }],
    ['Worker.Example.COM', { type: 'dns', value: 'worker.example.com' }],
    ['dc1-worker.team-a.svc.cluster.local', { type: 'dns', value: 'dc1-worker.team-a.svc.cluster.local' }],
    ['*.tunnel.example.com', { type: 'dns', value: '*.tunnel.example.com' }],
    ['1password.example', { type: 'dns', value: '1password.example' }],
  ])('%s is %j', (value, expected) => {
    expect(classifySan(value)).toEqual(expected);
  });

  it.each([
    ['', 'it is empty'],
    ['a..b', 'empty label'],
    ['a.example.', 'empty label'],
    ['-a.example', 'label "-a"'],
    ['a_b.example', 'label "a_b"'],
    ['*.com', 'label "*"'],
    ['a.*.example', 'label "*"'],
    [`${'a'.repeat(64)}.example`, 'longer than 63'],
    [`${'a.'.repeat(127)}a`, 'longer than 253'],
    ['1.2.3', 'numeric'],
    ['256.1.1.1', 'numeric'],
    ['fe80::1%eth0', 'label'],
    ['[::1]', 'label "[::1]"'],
    [' localhost', 'label " localhost"'],
  ])('%j is rejected: %s', (value, message) => {
    expect(() => classifySan(value)).toThrow(message);
    expect(() => classifySan(value)).toThrow(/is neither an IP address nor a valid DNS name/);
  });
});

describe('issueConnectorCert', () => {
  it('names the connector in CN and identity URI, for client auth only', async () => {
    const pems = await issueConnectorCert(ca, { connector: 'site-a', now: NOW });
    const cert = new X509Certificate(pems.certPem);
    expect(cert.checkIssued(caCert)).toBe(true);
    expect(cert.verify(caCert.publicKey)).toBe(true);
    expect(cert.subject).toBe('CN=site-a');
    expect(cert.subjectAltName).toBe('URI:underpass://team-a/dc1/connector/site-a');
    expect(cert.keyUsage).toEqual([CLIENT_AUTH]);
    expect(new Date(cert.validTo)).toEqual(seconds(NOW.getTime() + 720 * HOUR));
  });

  it('accepts the CA connection given explicitly, and refuses any other', async () => {
    await expect(issueConnectorCert(ca, { connection: DC1, connector: 'site-a' })).resolves.toBeDefined();
    expect(await codeOf(issueConnectorCert(ca, { connection: DC2, connector: 'site-a' }))).toBe('ERR_PKI_CONNECTION_MISMATCH');
  });

  it.each([
    ['a bad connector name', { connector: 'Site A' }, 'ERR_CONNECTOR_NAME_INVALID'],
    ['a certificate outliving its CA', { connector: 'a', now: NOW, validityHours: 3651 * 24 }, 'ERR_PKI_VALIDITY'],
    ['notAfter before notBefore', { connector: 'a', notBefore: NOW, notAfter: new Date(NOW.getTime() - 1000) }, 'ERR_PKI_VALIDITY'],
    ['zero hours', { connector: 'a', validityHours: 0 }, 'ERR_PKI_VALIDITY'],
  ])('refuses %s', async (_what, options, code) => {
    expect(await codeOf(issueConnectorCert(ca, options))).toBe(code);
  });
});

describe('loadCA and connectionFromCA', () => {
  it('reads the connection from the CA certificate', async () => {
    expect(connectionFromCA(caPems.certPem)).toEqual(DC1);
    expect(ca.connection).toEqual(DC1);
  });

  it('accepts a SEC1 ("EC PRIVATE KEY") encoding of the same key', async () => {
    const sec1 = createPrivateKey(caPems.keyPem).export({ type: 'sec1', format: 'pem' }) as string;
    expect((await loadCA(caPems.certPem, sec1)).connection).toEqual(DC1);
  });

  it.each<[string, () => Promise<[string, string]>, string]>([
    ['a key of another CA', async () => [caPems.certPem, (await createCA({ connection: DC1 })).keyPem], 'ERR_PKI_KEY_MISMATCH'],
    ['an RSA key', async () => [caPems.certPem, rsaKeyPem()], 'ERR_PKI_KEY_UNSUPPORTED'],
    ['a key that is not PEM', async () => [caPems.certPem, 'nope'], 'ERR_PKI_KEY_INVALID'],
    ['a certificate that is not PEM', async () => ['nope', caPems.keyPem], 'ERR_PKI_CERT_INVALID'],
    ['a leaf certificate', async () => {
      const leaf = await issueConnectorCert(ca, { connector: 'a' });
      return [leaf.certPem, leaf.keyPem];
    }, 'ERR_PKI_NOT_CA'],
  ])('refuses %s', async (_what, inputs, code) => {
    const [cert, key] = await inputs();
    expect(await codeOf(loadCA(cert, key))).toBe(code);
  });
});

function rsaKeyPem(): string {
  return generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
}

describe('writePemFiles', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'underpass-pki-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  const mode = async (path: string) => (await stat(path)).mode & 0o777;

  it('writes keys 0600 and certificates 0644 whatever the umask, creating the directory 0700', async () => {
    const target = join(dir, 'fresh', 'pki');
    const old = process.umask(0o077);
    let written: string[];
    try {
      written = await writePemFiles(target, { 'a.crt': 'CERT\n', 'a.key': 'KEY\n' });
    } finally {
      process.umask(old);
    }
    expect(written).toEqual([join(target, 'a.crt'), join(target, 'a.key')]);
    expect([await mode(written[0] as string), await mode(written[1] as string)]).toEqual([0o644, 0o600]);
    expect(await mode(target)).toBe(0o700);
    expect(await readFile(join(target, 'a.key'), 'utf8')).toBe('KEY\n');
  });

  it('refuses to overwrite, names the file, and writes nothing', async () => {
    const target = join(dir, 'exists');
    await writePemFiles(target, { 'b.crt': 'old\n' });
    const err = await writePemFiles(target, { 'a.crt': 'new\n', 'b.crt': 'new\n' }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'ERR_PKI_FILE_EXISTS', file: join(target, 'b.crt') });
    expect((err as Error).message).toContain(join(target, 'b.crt'));
    expect((await readdir(target)).sort()).toEqual(['b.crt']);
  });

  it('with force replaces the file and restores the key mode', async () => {
    const target = join(dir, 'force');
    await writePemFiles(target, { 'c.key': 'old\n' });
    await chmod(join(target, 'c.key'), 0o644);
    await writePemFiles(target, { 'c.key': 'new\n' }, { force: true });
    expect(await readFile(join(target, 'c.key'), 'utf8')).toBe('new\n');
    expect(await mode(join(target, 'c.key'))).toBe(0o600);
    expect(await readdir(target)).toEqual(['c.key']);
  });

  it('refuses a name that is not a plain file name', async () => {
    expect(await codeOf(writePemFiles(dir, { '../x.key': 'k' }))).toBe('ERR_PKI_FILE_NAME');
  });

  it('leaves an existing file untouched when it refuses', async () => {
    const target = join(dir, 'untouched');
    await writePemFiles(target, { 'd.key': 'mine\n' });
    await writeFile(join(target, 'd.key'), 'edited\n');
    expect(await codeOf(writePemFiles(target, { 'd.key': 'k' }))).toBe('ERR_PKI_FILE_EXISTS');
    expect(await readFile(join(target, 'd.key'), 'utf8')).toBe('edited\n');
  });
});

interface Side {
  authorized: boolean;
  authorizationError: string | undefined;
  peer: tls.PeerCertificate;
}

interface TlsEnds {
  server: { key: string; cert: string; ca: string };
  client: { key: string; cert: string; ca: string; servername?: string };
}

/** One real TLS handshake on 127.0.0.1; neither side rejects, so both verdicts can be read. */
async function handshake(ends: TlsEnds): Promise<{ server: Side; client: Side }> {
  const server = tls.createServer({ ...ends.server, ca: [ends.server.ca], requestCert: true, rejectUnauthorized: false });
  const serverSide = new Promise<Side>((resolve, reject) => {
    server.once('tlsClientError', reject);
    server.once('secureConnection', (socket) => {
      socket.on('error', () => undefined); // the client may reset after we have our verdict
      resolve(verdict(socket));
      socket.end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  try {
    const clientSide = new Promise<Side>((resolve, reject) => {
      const socket = tls.connect({ host: '127.0.0.1', port, ...ends.client, ca: [ends.client.ca], rejectUnauthorized: false }, () => {
        resolve(verdict(socket));
      });
      socket.on('error', reject);
      socket.on('end', () => socket.end());
    });
    return { client: await clientSide, server: await serverSide };
  } finally {
    await new Promise((resolve) => server.close(resolve));
  }
}

function verdict(socket: tls.TLSSocket): Side {
  const error = socket.authorizationError as unknown;
  const authorizationError = error === undefined || error === null ? undefined : String((error as { code?: string }).code ?? error);
  return { authorized: socket.authorized, authorizationError, peer: socket.getPeerCertificate() };
}

describe('mutual TLS between a worker and a connector', () => {
  let worker: PemKeyPair;
  let connector: PemKeyPair;
  let other: { caPem: string; connector: PemKeyPair; worker: PemKeyPair };
  let liveCA: CertificateAuthority;
  let liveCaPem: string;

  beforeAll(async () => {
    const pems = await createCA({ connection: DC1 });
    liveCaPem = pems.certPem;
    liveCA = await loadCA(pems.certPem, pems.keyPem);
    worker = await issueWorkerCert(liveCA, { sans: ['localhost', '127.0.0.1'] });
    connector = await issueConnectorCert(liveCA, { connector: 'site-a' });
    const otherPems = await createCA({ connection: DC2 });
    const otherCA = await loadCA(otherPems.certPem, otherPems.keyPem);
    other = {
      caPem: otherPems.certPem,
      connector: await issueConnectorCert(otherCA, { connector: 'site-a' }),
      worker: await issueWorkerCert(otherCA, { sans: ['localhost'] }),
    };
  });

  /** `servername: null` dials 127.0.0.1 without SNI, so the client checks the worker's IP SANs. */
  const ends = (client: PemKeyPair, serverCert: PemKeyPair = worker, servername: string | null = 'localhost'): TlsEnds => ({
    server: { key: serverCert.keyPem, cert: serverCert.certPem, ca: liveCaPem },
    client: { key: client.keyPem, cert: client.certPem, ca: liveCaPem, ...(servername ? { servername } : {}) },
  });

  it('authorizes both sides, and each reads the other\'s identity', async () => {
    const { server, client } = await handshake(ends(connector));
    expect([server.authorized, server.authorizationError]).toEqual([true, undefined]);
    expect([client.authorized, client.authorizationError]).toEqual([true, undefined]);
    expect(identityFromPeerCertificate(server.peer, { connection: DC1, role: 'connector' }))
      .toEqual({ namespace: 'team-a', connection: 'dc1', role: 'connector', name: 'site-a' });
    expect(identityFromPeerCertificate(client.peer, { connection: DC1, role: 'worker' }))
      .toEqual({ namespace: 'team-a', connection: 'dc1', role: 'worker' });
  });

  it('verifies the worker by its IP SAN when the client dials an address', async () => {
    const { client } = await handshake(ends(connector, worker, null));
    expect(client.authorized).toBe(true);
  });

  it('does not authorize a connector of another connection (another CA)', async () => {
    const { server } = await handshake(ends(other.connector));
    expect(server.authorized).toBe(false);
    expect(server.authorizationError).toBe('UNABLE_TO_VERIFY_LEAF_SIGNATURE');
    // Even read past the CA verdict, its identity names the other connection.
    expect(() => identityFromPeerCertificate(server.peer, { connection: DC1 })).toThrow(/belongs to connection team-a\/dc2/);
  });

  it('does not authorize a forged CA that claims the same connection', async () => {
    const forgedPems = await createCA({ connection: DC1 });
    const forged = await issueConnectorCert(await loadCA(forgedPems.certPem, forgedPems.keyPem), { connector: 'site-a' });
    const { server } = await handshake(ends(forged));
    expect(server.authorized).toBe(false);
  });

  it('does not authorize an expired connector certificate', async () => {
    const now = Date.now();
    const expired = await issueConnectorCert(liveCA, { connector: 'site-a', notBefore: new Date(now - 2 * HOUR), notAfter: new Date(now - HOUR) });
    const { server } = await handshake(ends(expired));
    expect([server.authorized, server.authorizationError]).toEqual([false, 'CERT_HAS_EXPIRED']);
  });

  it('lets the client refuse a worker certificate that lacks the requested name', async () => {
    const { client } = await handshake(ends(connector, worker, 'dc1.tunnel.example.com'));
    expect([client.authorized, client.authorizationError]).toEqual([false, 'ERR_TLS_CERT_ALTNAME_INVALID']);
  });

  it('lets the client refuse a worker certificate that lacks the dialled IP', async () => {
    const dnsOnly = await issueWorkerCert(liveCA, { sans: ['localhost'] });
    const { client } = await handshake(ends(connector, dnsOnly, null));
    expect([client.authorized, client.authorizationError]).toEqual([false, 'ERR_TLS_CERT_ALTNAME_INVALID']);
  });

  it('lets the client refuse a worker of another connection', async () => {
    const { client } = await handshake(ends(connector, other.worker));
    expect(client.authorized).toBe(false);
  });

  it('with the worker\'s real settings, a foreign connector never gets a secure connection', async () => {
    const server = tls.createServer({ key: worker.keyPem, cert: worker.certPem, ca: [liveCaPem], requestCert: true, rejectUnauthorized: true });
    let accepted = false;
    server.on('secureConnection', () => { accepted = true; });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as AddressInfo;
    try {
      const outcome = await new Promise<string>((resolve) => {
        const socket = tls.connect({ host: '127.0.0.1', port, servername: 'localhost', ca: [liveCaPem], key: other.connector.keyPem, cert: other.connector.certPem });
        socket.on('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
        socket.on('close', () => resolve('closed'));
      });
      expect(outcome).toMatch(/ALERT|ECONNRESET|closed/);
      expect(accepted).toBe(false);
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });
});
