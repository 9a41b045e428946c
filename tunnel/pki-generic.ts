/**
 * Certificates that belong to no connection: a self-signed CA of our own (the
 * operator's) and TLS serving certificates it issues, plus the one check a
 * server that verifies client certificates itself needs (`leafProblem`).
 * tunnel/pki.ts stays the per-connection PKI; both sign through
 * tunnel/pki-leaf.ts, and both backdate by CLOCK_SKEW_MS.
 */
import { createPrivateKey, webcrypto, X509Certificate as NodeX509Certificate } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import { UnderpassError } from './errors.js';
import { classifySan, CLOCK_SKEW_MS } from './pki.js';
import {
  dedupeNames, importSigningKey, issueLeaf, refuseOutlivingCA, selfSignCA, wholeSeconds, type PemKeyPair,
} from './pki-leaf.js';

type CryptoKey = webcrypto.CryptoKey;
const DAY_MS = 86_400_000;
export const SERVER_AUTH = '1.3.6.1.5.5.7.3.1';
export const CLIENT_AUTH = '1.3.6.1.5.5.7.3.2';

/** A loaded CA, ready to issue; the signing key is non-extractable. */
export interface SigningCA {
  readonly certPem: string;
  readonly certificate: x509.X509Certificate;
  readonly signingKey: CryptoKey;
}

export interface SelfSignedCAOptions {
  commonName: string;
  now?: Date;
  validityDays: number;
}

export interface ServingCertOptions {
  commonName: string;
  /** DNS names and IP addresses clients dial (at least one). */
  sans: string[];
  now?: Date;
  validityDays: number;
}

export async function createSelfSignedCA(options: SelfSignedCAOptions): Promise<PemKeyPair> {
  return selfSignCA({ ...validity(options.now, options.validityDays), commonName: options.commonName });
}

/** Parses a CA pair: a CA certificate and the P-256 key that belongs to it. */
export async function loadSigningCA(certPem: string, keyPem: string): Promise<SigningCA> {
  let certificate: x509.X509Certificate;
  try {
    certificate = new x509.X509Certificate(certPem);
  } catch (err) {
    throw new UnderpassError('ERR_PKI_CERT_INVALID', 'the CA certificate is not a PEM X.509 certificate', { cause: err });
  }
  if (!certificate.getExtension(x509.BasicConstraintsExtension)?.ca) {
    throw new UnderpassError('ERR_PKI_NOT_CA', `certificate ${certificate.subject} is not a CA certificate`);
  }
  let key;
  try {
    key = createPrivateKey(keyPem);
  } catch (err) {
    throw new UnderpassError('ERR_PKI_KEY_INVALID', 'the CA key is not a PEM private key', { cause: err });
  }
  if (key.asymmetricKeyType !== 'ec' || key.asymmetricKeyDetails?.namedCurve !== 'prime256v1') {
    throw new UnderpassError('ERR_PKI_KEY_UNSUPPORTED', 'the CA key is not an ECDSA P-256 key');
  }
  return { certPem, certificate, signingKey: await importSigningKey(certificate, key) };
}

/** A TLS server certificate (EKU serverAuth) for `sans`, signed by `ca`. */
export async function issueServingCert(ca: SigningCA, options: ServingCertOptions): Promise<PemKeyPair> {
  if (options.sans.length === 0) {
    throw new UnderpassError('ERR_PKI_SAN_REQUIRED', 'a serving certificate needs at least one DNS name or IP address');
  }
  const window = validity(options.now, options.validityDays);
  // Checked before the SANs are parsed, so a caller with both faults hears about the validity first, as always.
  refuseOutlivingCA(ca, window.notAfter);
  const names = dedupeNames(options.sans.map(classifySan));
  return issueLeaf(ca, { ...window, commonName: options.commonName, names, usages: [x509.ExtendedKeyUsage.serverAuth] });
}

/** The DNS and IP SANs of a certificate, as `classifySan` spells them, sorted. */
export function servingSans(certPem: string): string[] {
  const names = new x509.X509Certificate(certPem).getExtension(x509.SubjectAlternativeNameExtension)?.names.items ?? [];
  return names.filter((n) => n.type === 'dns' || n.type === 'ip').map((n) => n.value).sort();
}

/** `sans` normalised the way a certificate stores them (lowercase DNS, canonical IPs), deduplicated, sorted. */
export function normaliseSans(sans: readonly string[]): string[] {
  return [...new Set(sans.map((s) => classifySan(s).value))].sort();
}

export type LeafProblemCode = 'CERT_UNTRUSTED' | 'CERT_EXPIRED' | 'CERT_NOT_YET_VALID' | 'CA_NOT_VALID' | 'WRONG_USAGE';

export interface LeafProblem {
  code: LeafProblemCode;
  message: string;
}

/**
 * Why `leaf` is not a valid certificate issued directly by `ca` for
 * `usage` at `now`, or undefined if it is. For servers that accept any
 * client certificate at the TLS layer and decide per request which CA applies.
 */
export function leafProblem(leaf: NodeX509Certificate, ca: NodeX509Certificate, now: Date, usage: string): LeafProblem | undefined {
  if (!ca.ca || !leaf.checkIssued(ca) || !leaf.verify(ca.publicKey)) {
    return { code: 'CERT_UNTRUSTED', message: `certificate "${leaf.subject}" (serial ${leaf.serialNumber}) is not issued by CA "${ca.subject}"` };
  }
  const t = now.getTime();
  if (t > Date.parse(ca.validTo) || t < Date.parse(ca.validFrom)) {
    return { code: 'CA_NOT_VALID', message: `CA "${ca.subject}" is not valid now (${ca.validFrom} to ${ca.validTo})` };
  }
  if (t > Date.parse(leaf.validTo)) {
    return { code: 'CERT_EXPIRED', message: `certificate "${leaf.subject}" expired ${new Date(leaf.validTo).toISOString()}` };
  }
  if (t < Date.parse(leaf.validFrom)) {
    return { code: 'CERT_NOT_YET_VALID', message: `certificate "${leaf.subject}" is valid only from ${new Date(leaf.validFrom).toISOString()}` };
  }
  if (leaf.ca) return { code: 'WRONG_USAGE', message: `certificate "${leaf.subject}" is a CA certificate, not a leaf` };
  // No EKU extension means any usage (RFC 5280 4.2.1.12); Node returns undefined then.
  const usages = leaf.keyUsage as string[] | undefined;
  if (usages && !usages.includes(usage)) {
    return { code: 'WRONG_USAGE', message: `certificate "${leaf.subject}" does not allow ${usage === CLIENT_AUTH ? 'clientAuth' : usage}` };
  }
  return undefined;
}

function validity(now: Date | undefined, days: number): { notBefore: Date; notAfter: Date } {
  if (!Number.isFinite(days) || days <= 0) throw new UnderpassError('ERR_PKI_VALIDITY', `validity must be a positive number of days, got ${days}`);
  const t = (now ?? new Date()).getTime();
  return { notBefore: wholeSeconds(t - CLOCK_SKEW_MS), notAfter: wholeSeconds(t + days * DAY_MS) };
}
