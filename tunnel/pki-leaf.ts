/**
 * The signing steps shared by tunnel/pki.ts (one CA per connection) and
 * tunnel/pki-generic.ts (the operator's own CA): ECDSA P-256 keys, SHA-256
 * signatures, PKCS#8 PEM keys, random 16-byte serials, one CA profile and one
 * leaf profile. Callers compute the validity window and the names.
 */
import { createPublicKey, randomBytes, webcrypto, type KeyObject } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import { UnderpassError } from './errors.js';

const subtle = webcrypto.subtle;
const provider = webcrypto;
type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;
const EC_KEY = { name: 'ECDSA', namedCurve: 'P-256' } as const;
const SIGNING = { name: 'ECDSA', hash: 'SHA-256' } as const;

export interface PemKeyPair {
  certPem: string;
  keyPem: string;
}

/** A CA certificate and its signing key: all that issuing a leaf needs. */
export interface Issuer {
  readonly certificate: x509.X509Certificate;
  readonly signingKey: CryptoKey;
}

export interface ValidityWindow {
  notBefore: Date;
  notAfter: Date;
}

export interface CAProfile extends ValidityWindow {
  commonName: string;
  /** Subject alternative names; none means no SAN extension. */
  names?: x509.JsonGeneralName[];
}

export interface LeafProfile extends ValidityWindow {
  commonName: string;
  names: x509.JsonGeneralName[];
  /** Extended key usages (OIDs). */
  usages: string[];
  /** Appended to the refusal when the leaf would outlive its CA. */
  outlivesCAHint?: string;
}

/** A self-signed CA that may sign leaves only (path length 0). */
export async function selfSignCA(profile: CAProfile): Promise<PemKeyPair> {
  const keys = await generateKeys();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: randomSerial(),
    name: [{ CN: [profile.commonName] }],
    keys,
    notBefore: profile.notBefore,
    notAfter: profile.notAfter,
    signingAlgorithm: SIGNING,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      ...(profile.names ? [new x509.SubjectAlternativeNameExtension(profile.names)] : []),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey, false, provider),
    ],
  }, provider);
  return { certPem: `${cert.toString('pem')}\n`, keyPem: await privateKeyPem(keys.privateKey) };
}

/** A leaf signed by `ca`, with a new key pair; refused if it would expire after the CA. */
export async function issueLeaf(ca: Issuer, profile: LeafProfile): Promise<PemKeyPair> {
  const keys = await generateKeys();
  const certPem = await signLeaf(ca, profile, keys.publicKey);
  return { certPem, keyPem: await privateKeyPem(keys.privateKey) };
}

/**
 * A leaf for a public key someone else holds (from a certificate signing
 * request: the private key never leaves where it was made).
 */
export async function signLeaf(ca: Issuer, profile: LeafProfile, publicKey: CryptoKey): Promise<string> {
  const { notBefore, notAfter } = profile;
  refuseOutlivingCA(ca, notAfter, profile.outlivesCAHint);
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: randomSerial(),
    subject: [{ CN: [profile.commonName] }],
    issuer: ca.certificate.subjectName,
    publicKey,
    signingKey: ca.signingKey,
    notBefore,
    notAfter,
    signingAlgorithm: SIGNING,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension(profile.usages),
      new x509.SubjectAlternativeNameExtension(profile.names),
      await x509.SubjectKeyIdentifierExtension.create(publicKey, false, provider),
      await authorityKeyIdentifier(ca),
    ],
  }, provider);
  return `${cert.toString('pem')}\n`;
}

/** Throws ERR_PKI_VALIDITY if a leaf ending at `notAfter` would outlive `ca`; `hint` says what to do about it. */
export function refuseOutlivingCA(ca: Issuer, notAfter: Date, hint?: string): void {
  if (notAfter <= ca.certificate.notAfter) return;
  throw new UnderpassError(
    'ERR_PKI_VALIDITY',
    `the certificate would expire ${notAfter.toISOString()}, after its CA (${ca.certificate.notAfter.toISOString()})${hint ? `; ${hint}` : ''}`,
  );
}

/** Checks that `key` belongs to `certificate` and imports it, non-extractable, for signing. */
export async function importSigningKey(certificate: x509.X509Certificate, key: KeyObject): Promise<CryptoKey> {
  if (!createPublicKey(key).export({ type: 'spki', format: 'der' }).equals(Buffer.from(certificate.publicKey.rawData))) {
    throw new UnderpassError('ERR_PKI_KEY_MISMATCH', `the CA key does not belong to the CA certificate (${certificate.subject})`);
  }
  const der = key.export({ type: 'pkcs8', format: 'der' });
  return (await subtle.importKey('pkcs8', der, EC_KEY, false, ['sign'])) as CryptoKey;
}

/** The first of each type:value pair, in order. */
export function dedupeNames(names: x509.JsonGeneralName[]): x509.JsonGeneralName[] {
  const byKey = new Map(names.map((n) => [`${n.type}:${n.value}`, n]));
  return [...byKey.values()];
}

/** X.509 times have whole seconds; truncate so what we compute is what the certificate says. */
export function wholeSeconds(ms: number): Date {
  return new Date(Math.floor(ms / 1000) * 1000);
}

export async function generateKeys(): Promise<CryptoKeyPair> {
  return (await subtle.generateKey(EC_KEY, true, ['sign', 'verify'])) as CryptoKeyPair;
}

/** 16 random bytes, top bit clear (positive) and next bit set (no leading zero byte to trim). */
function randomSerial(): string {
  const bytes = randomBytes(16);
  bytes[0] = ((bytes[0] as number) & 0x7f) | 0x40;
  return bytes.toString('hex');
}

async function authorityKeyIdentifier(ca: Issuer): Promise<x509.AuthorityKeyIdentifierExtension> {
  // Reuse the CA's own SKI when it has one: chain building matches AKI to SKI byte for byte.
  const ski = ca.certificate.getExtension(x509.SubjectKeyIdentifierExtension);
  if (ski) return new x509.AuthorityKeyIdentifierExtension(ski.keyId);
  return x509.AuthorityKeyIdentifierExtension.create(ca.certificate.publicKey, false, provider);
}

export async function privateKeyPem(key: CryptoKey): Promise<string> {
  const der = await subtle.exportKey('pkcs8', key);
  return `${x509.PemConverter.encode(der, 'PRIVATE KEY')}\n`;
}
