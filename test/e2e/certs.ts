/**
 * Certificates that tunnel/pki.ts rightly refuses to issue, for refusal tests:
 * a leaf signed by a connection's CA but naming any identity URI (another
 * connection, another role, none, two), and a look-alike CA of an impostor.
 * Built with @peculiar/x509 directly; nothing here belongs in the product.
 */
import { randomBytes, webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import { createCA, issueConnectorCert, loadCA, writePemFiles, type CertificateAuthority, type PemKeyPair } from '../../tunnel/pki.js';
import type { ConnectionId } from '../../tunnel/identity.js';

const provider = webcrypto;
const EC_KEY = { name: 'ECDSA', namedCurve: 'P-256' } as const;
const SIGNING = { name: 'ECDSA', hash: 'SHA-256' } as const;
const HOUR_MS = 3_600_000;

export interface LeafSpec {
  commonName?: string;
  /** SAN URIs, written as given (no identity checks). */
  uris?: string[];
  dnsNames?: string[];
  ips?: string[];
  notBefore?: Date;
  notAfter?: Date;
  /** Extended key usages; default clientAuth. */
  usages?: string[];
}

/** Issues a leaf signed by `ca` with exactly the names in `spec`. */
export async function craftLeaf(ca: CertificateAuthority, spec: LeafSpec): Promise<PemKeyPair> {
  const keys = (await provider.subtle.generateKey(EC_KEY, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const names: x509.JsonGeneralName[] = [
    ...(spec.uris ?? []).map((value) => ({ type: 'url' as const, value })),
    ...(spec.dnsNames ?? []).map((value) => ({ type: 'dns' as const, value })),
    ...(spec.ips ?? []).map((value) => ({ type: 'ip' as const, value })),
  ];
  const now = Date.now();
  const extensions: x509.Extension[] = [
    new x509.BasicConstraintsExtension(false, undefined, true),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
    new x509.ExtendedKeyUsageExtension(spec.usages ?? [x509.ExtendedKeyUsage.clientAuth]),
    await x509.SubjectKeyIdentifierExtension.create(keys.publicKey, false, provider),
  ];
  if (names.length > 0) extensions.push(new x509.SubjectAlternativeNameExtension(names));
  const ski = ca.certificate.getExtension(x509.SubjectKeyIdentifierExtension);
  if (ski) extensions.push(new x509.AuthorityKeyIdentifierExtension(ski.keyId));
  const serial = randomBytes(16);
  serial[0] = ((serial[0] as number) & 0x7f) | 0x40;
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serial.toString('hex'),
    subject: [{ CN: [spec.commonName ?? 'crafted-for-tests'] }],
    issuer: ca.certificate.subjectName,
    publicKey: keys.publicKey,
    signingKey: ca.signingKey,
    notBefore: spec.notBefore ?? new Date(now - 5 * 60_000),
    notAfter: spec.notAfter ?? new Date(now + 24 * HOUR_MS),
    signingAlgorithm: SIGNING,
    extensions,
  }, provider);
  const pkcs8 = await provider.subtle.exportKey('pkcs8', keys.privateKey);
  return { certPem: `${cert.toString('pem')}\n`, keyPem: `${x509.PemConverter.encode(pkcs8, 'PRIVATE KEY')}\n` };
}

/**
 * A CA nobody trusts that claims the same connection, and a connector
 * certificate from it: what an impostor could make without the real CA key.
 */
export async function impostorConnectorCert(connection: ConnectionId, connector: string): Promise<PemKeyPair & { caPem: string }> {
  const caPem = await createCA({ connection });
  const ca = await loadCA(caPem.certPem, caPem.keyPem);
  const leaf = await issueConnectorCert(ca, { connector });
  return { ...leaf, caPem: caPem.certPem };
}

/** Writes connector-NAME.crt/.key into `dir`, the names the harness's startConnector reads. */
export async function writeConnectorFiles(dir: string, name: string, pair: PemKeyPair): Promise<void> {
  await writePemFiles(dir, { [`connector-${name}.crt`]: pair.certPem, [`connector-${name}.key`]: pair.keyPem }, { force: true });
}
