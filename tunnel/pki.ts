import { createHash, createPrivateKey, randomBytes, webcrypto, X509Certificate as NodeX509Certificate, type KeyObject } from 'node:crypto';
import { open, mkdir, lstat, rename, unlink } from 'node:fs/promises';
import { isIP } from 'node:net';
import { basename, join } from 'node:path';
import * as x509 from '@peculiar/x509';
import { UnderpassError } from './errors.js';
import {
  caUri, connectorUri, formatConnectionId, isIdentityUri, parseConnectorName, parseIdentityUri,
  sameConnection, workerUri, type ConnectionId,
} from './identity.js';
import { dedupeNames, importSigningKey, issueLeaf, selfSignCA, wholeSeconds, type PemKeyPair } from './pki-leaf.js';

export type { PemKeyPair } from './pki-leaf.js';

/**
 * One certificate authority per connection: it signs that connection's worker
 * and connector certificates and nothing else, so trusting it admits exactly
 * one connection. Keys are ECDSA P-256 (PKCS#8 PEM), signatures SHA-256.
 * See docs/pki.md for what each certificate carries and why.
 */

type CryptoKey = webcrypto.CryptoKey;
const HOUR_MS = 3_600_000;
/** Certificates start a little in the past so a peer whose clock runs behind still accepts them. */
export const CLOCK_SKEW_MS = 5 * 60_000;
export const DEFAULT_CA_VALIDITY_DAYS = 3650;
export const DEFAULT_LEAF_VALIDITY_HOURS = 720;

/** A loaded CA, ready to issue. The signing key is imported non-extractable. */
export interface CertificateAuthority {
  readonly connection: ConnectionId;
  readonly certPem: string;
  readonly certificate: x509.X509Certificate;
  readonly signingKey: CryptoKey;
}

export interface ValidityOptions {
  /** The clock; default `new Date()`. */
  now?: Date;
  /** Default `now` minus CLOCK_SKEW_MS. */
  notBefore?: Date;
  /** Default `now` plus `validityHours`. */
  notAfter?: Date;
  validityHours?: number;
}

export interface CreateCAOptions {
  connection: ConnectionId;
  now?: Date;
  validityDays?: number;
}

export interface WorkerCertOptions extends ValidityOptions {
  /** Must equal the CA's connection; defaults to it. */
  connection?: ConnectionId;
  /** Host names and IP addresses clients use to reach the worker (at least one). */
  sans: string[];
}

export interface ConnectorCertOptions extends ValidityOptions {
  connection?: ConnectionId;
  connector: string;
}

export interface CertificateInfo {
  subject: string;
  issuer: string;
  serialNumber: string;
  notBefore: Date;
  notAfter: Date;
  uris: string[];
  dnsNames: string[];
  ips: string[];
  isCA: boolean;
  fingerprint256: string;
}

export async function createCA(options: CreateCAOptions): Promise<PemKeyPair> {
  const uri = caUri(options.connection);
  const days = options.validityDays ?? DEFAULT_CA_VALIDITY_DAYS;
  const window = validity({ now: options.now, validityHours: positive(days, 'validityDays') * 24 });
  return selfSignCA({ ...window, commonName: `underpass-ca ${formatConnectionId(options.connection)}`, names: [{ type: 'url', value: uri }] });
}

export async function issueWorkerCert(ca: CertificateAuthority, options: WorkerCertOptions): Promise<PemKeyPair> {
  const connection = connectionFor(ca, options.connection);
  if (options.sans.length === 0) {
    throw new UnderpassError('ERR_PKI_SAN_REQUIRED', 'a worker certificate needs at least one DNS name or IP address');
  }
  const sans = dedupeNames(options.sans.map(classifySan));
  return issueConnectionLeaf(ca, options, {
    commonName: `underpass-worker ${formatConnectionId(connection)}`,
    names: [...sans, { type: 'url', value: workerUri(connection) }],
    // clientAuth too: a worker may later dial its peer workers with the same certificate.
    usages: [x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth],
  });
}

export async function issueConnectorCert(ca: CertificateAuthority, options: ConnectorCertOptions): Promise<PemKeyPair> {
  const connection = connectionFor(ca, options.connection);
  const name = parseConnectorName(options.connector);
  return issueConnectionLeaf(ca, options, {
    commonName: name,
    names: [{ type: 'url', value: connectorUri(connection, name) }],
    usages: [x509.ExtendedKeyUsage.clientAuth],
  });
}

function issueConnectionLeaf(
  ca: CertificateAuthority, options: ValidityOptions, profile: { commonName: string; names: x509.JsonGeneralName[]; usages: string[] },
): Promise<PemKeyPair> {
  return issueLeaf(ca, { ...validity(options), ...profile, outlivesCAHint: 'shorten the validity or renew the CA' });
}

/** Parses and checks a CA: it must be a CA certificate of one connection, and the key must be its key. */
export async function loadCA(certPem: string, keyPem: string): Promise<CertificateAuthority> {
  const certificate = parseCertificate(certPem);
  const connection = connectionFromCertificate(certificate);
  const signingKey = await importSigningKey(certificate, parsePrivateKey(keyPem));
  return { connection, certPem, certificate, signingKey };
}

/** The connection a CA certificate belongs to (from its `underpass://<ns>/<name>` SAN URI). */
export function connectionFromCA(certPem: string): ConnectionId {
  return connectionFromCertificate(parseCertificate(certPem));
}

export function certificateInfo(pem: string): CertificateInfo {
  const cert = parseCertificate(pem);
  const names = cert.getExtension(x509.SubjectAlternativeNameExtension)?.names.items ?? [];
  const of = (type: string) => names.filter((n) => n.type === type).map((n) => n.value);
  return {
    subject: cert.subject,
    issuer: cert.issuer,
    serialNumber: cert.serialNumber,
    notBefore: cert.notBefore,
    notAfter: cert.notAfter,
    uris: of('url'),
    dnsNames: of('dns'),
    ips: of('ip'),
    isCA: cert.getExtension(x509.BasicConstraintsExtension)?.ca ?? false,
    fingerprint256: new NodeX509Certificate(pem).fingerprint256,
  };
}

/**
 * Classifies one worker SAN: an IPv4/IPv6 address (no zone, no brackets) or a
 * DNS name (lower-cased; a leading `*.` wildcard is allowed).
 */
export function classifySan(value: string): x509.JsonGeneralName {
  if (isIP(value) !== 0 && !value.includes('%')) return { type: 'ip', value };
  const problem = dnsNameProblem(value);
  if (problem) {
    throw new UnderpassError('ERR_PKI_SAN_INVALID', `worker SAN ${JSON.stringify(value)} is neither an IP address nor a valid DNS name: ${problem}`);
  }
  return { type: 'dns', value: value.toLowerCase() };
}

function dnsNameProblem(value: string): string | undefined {
  if (value.length === 0) return 'it is empty';
  if (value.length > 253) return 'it is longer than 253 characters';
  const labels = value.toLowerCase().split('.');
  for (const [i, label] of labels.entries()) {
    if (i === 0 && label === '*' && labels.length > 2) continue;
    if (label.length === 0) return 'it has an empty label (leading, trailing or doubled ".")';
    if (label.length > 63) return `label "${label}" is longer than 63 characters`;
    if (!/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(label)) {
      return `label "${label}" may hold only letters, digits and "-" (not at either end)`;
    }
  }
  if (/^[0-9]+$/.test(labels[labels.length - 1] as string)) return 'its last label is numeric (a mistyped IP address?)';
  return undefined;
}

function connectionFor(ca: CertificateAuthority, requested: ConnectionId | undefined): ConnectionId {
  if (requested && !sameConnection(requested, ca.connection)) {
    throw new UnderpassError(
      'ERR_PKI_CONNECTION_MISMATCH',
      `the CA belongs to connection ${formatConnectionId(ca.connection)} and cannot issue for ${formatConnectionId(requested)}`,
    );
  }
  return ca.connection;
}

function connectionFromCertificate(cert: x509.X509Certificate): ConnectionId {
  if (!cert.getExtension(x509.BasicConstraintsExtension)?.ca) {
    throw new UnderpassError('ERR_PKI_NOT_CA', `certificate ${cert.subject} is not a CA certificate`);
  }
  const names = cert.getExtension(x509.SubjectAlternativeNameExtension)?.names.items ?? [];
  const uris = names.filter((n) => n.type === 'url' && isIdentityUri(n.value)).map((n) => n.value);
  if (uris.length !== 1) {
    throw new UnderpassError(
      uris.length === 0 ? 'ERR_IDENTITY_MISSING' : 'ERR_IDENTITY_AMBIGUOUS',
      `CA certificate ${cert.subject} must carry exactly one underpass:// SAN URI, found ${uris.length}`,
    );
  }
  const identity = parseIdentityUri(uris[0] as string);
  if (identity.role !== 'ca') {
    throw new UnderpassError('ERR_IDENTITY_INVALID', `CA certificate ${cert.subject} carries ${uris[0]}, which is not a connection (CA) identity`);
  }
  return { namespace: identity.namespace, name: identity.connection };
}

function validity(options: ValidityOptions): { notBefore: Date; notAfter: Date } {
  const now = (options.now ?? new Date()).getTime();
  const hours = positive(options.validityHours ?? DEFAULT_LEAF_VALIDITY_HOURS, 'validityHours');
  const end = options.notAfter?.getTime() ?? now + hours * HOUR_MS;
  // At most a tenth of the lifetime: a one-minute certificate must not be spent before it is issued.
  const notBefore = wholeSeconds(options.notBefore?.getTime() ?? now - Math.min(CLOCK_SKEW_MS, Math.max(0, Math.floor((end - now) / 10))));
  const notAfter = wholeSeconds(end);
  if (notAfter <= notBefore) {
    throw new UnderpassError('ERR_PKI_VALIDITY', `notAfter ${notAfter.toISOString()} is not after notBefore ${notBefore.toISOString()}`);
  }
  return { notBefore, notAfter };
}

function positive(value: number, what: string): number {
  if (!Number.isFinite(value) || value <= 0) {
    throw new UnderpassError('ERR_PKI_VALIDITY', `${what} must be a positive number, got ${value}`);
  }
  return value;
}

function parseCertificate(pem: string): x509.X509Certificate {
  try {
    return new x509.X509Certificate(pem);
  } catch (err) {
    throw new UnderpassError('ERR_PKI_CERT_INVALID', 'not a PEM X.509 certificate', { cause: err });
  }
}

function parsePrivateKey(pem: string): KeyObject {
  let key: KeyObject;
  try {
    key = createPrivateKey(pem);
  } catch (err) {
    throw new UnderpassError('ERR_PKI_KEY_INVALID', 'not a PEM private key', { cause: err });
  }
  if (key.asymmetricKeyType !== 'ec' || key.asymmetricKeyDetails?.namedCurve !== 'prime256v1') {
    throw new UnderpassError(
      'ERR_PKI_KEY_UNSUPPORTED',
      `the key is ${key.asymmetricKeyType ?? 'unknown'} ${key.asymmetricKeyDetails?.namedCurve ?? ''}`.trimEnd() + '; Underpass uses ECDSA P-256',
    );
  }
  return key;
}

/** Refusal to overwrite: names the file so the caller can point at it. */
export class FileExistsError extends UnderpassError {
  readonly file: string;

  constructor(file: string) {
    super('ERR_PKI_FILE_EXISTS', `${file} already exists; refusing to overwrite it`);
    this.file = file;
  }
}

export interface WritePemOptions {
  /** Replace existing files (each is swapped in atomically with a rename). */
  force?: boolean;
}

/**
 * Writes `files` (basename -> PEM) into `dir`, creating it (mode 0700) if
 * needed. `*.key` files get mode 0600, everything else 0644, whatever the
 * umask. Without `force` nothing is written if any of the files exists.
 * Returns the paths written, in order.
 */
export async function writePemFiles(dir: string, files: Record<string, string>, options: WritePemOptions = {}): Promise<string[]> {
  const entries = Object.entries(files).map(([name, content]) => {
    if (name !== basename(name) || name === '.' || name === '..') {
      throw new UnderpassError('ERR_PKI_FILE_NAME', `${JSON.stringify(name)} is not a plain file name`);
    }
    return { path: join(dir, name), content, mode: name.endsWith('.key') ? 0o600 : 0o644 };
  });
  await mkdir(dir, { recursive: true, mode: 0o700 });
  if (!options.force) {
    for (const { path } of entries) {
      if (await exists(path)) throw new FileExistsError(path);
    }
  }
  for (const entry of entries) {
    await writeOne(entry.path, entry.content, entry.mode, options.force ?? false);
  }
  return entries.map((e) => e.path);
}

async function writeOne(path: string, content: string, mode: number, force: boolean): Promise<void> {
  // 'wx' both refuses an existing file (a race with the check above) and never follows a planted symlink.
  const target = force ? `${path}.${randomBytes(6).toString('hex')}.tmp` : path;
  let handle;
  try {
    handle = await open(target, 'wx', mode);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw new FileExistsError(path);
    throw err;
  }
  try {
    await handle.chmod(mode);
    await handle.writeFile(content);
    await handle.sync();
  } catch (err) {
    await handle.close();
    await unlink(target).catch(() => undefined);
    throw err;
  }
  await handle.close();
  if (force) await rename(target, path);
}

async function exists(path: string): Promise<boolean> {
  try {
    await lstat(path);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
}

/**
 * A short, stable id of a CA certificate (the first 16 hex digits of the
 * SHA-256 of its DER): how workers tell the operator which CAs they trust and
 * which CA issued a certificate, while the connection's CA rotates.
 */
export function caId(pem: string): string {
  return createHash('sha256').update(new NodeX509Certificate(pem).raw).digest('hex').slice(0, 16);
}

/** The id of the CA in `bundle` that issued `cert` (DER or PEM), or undefined. */
export function issuerIdIn(cert: Buffer | string, bundle: readonly string[]): string | undefined {
  const leaf = new NodeX509Certificate(cert);
  for (const pem of bundle) {
    const ca = new NodeX509Certificate(pem);
    if (leaf.checkIssued(ca) && leaf.verify(ca.publicKey)) return caId(pem);
  }
  return undefined;
}

/** The certificates of a PEM bundle, each as its own PEM block, in order. */
export function pemCertificates(pem: string): string[] {
  return [...pem.matchAll(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g)].map((m) => `${m[0]}\n`);
}
