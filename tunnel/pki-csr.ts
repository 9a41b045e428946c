/**
 * Certificate signing requests: how a connector gets a certificate without
 * its private key ever leaving the place it was made (renewal over its
 * session, enrollment with a token). The connector makes a P-256 key pair and
 * a PKCS#10 request; the operator checks the request's self-signature and key
 * type and signs a connector certificate for the *identity it verified*
 * (the session's, or the token's): names in the request are ignored.
 */
import { webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import { UnderpassError } from './errors.js';
import { connectorUri, formatConnectionId, parseConnectorName, type ConnectionId } from './identity.js';
import type { CertificateAuthority } from './pki.js';
import { CLOCK_SKEW_MS } from './pki.js';
import { generateKeys, privateKeyPem, signLeaf, wholeSeconds } from './pki-leaf.js';

type CryptoKey = webcrypto.CryptoKey;
const provider = webcrypto;
const EC_KEY = { name: 'ECDSA', namedCurve: 'P-256' } as const;
const SIGNING = { name: 'ECDSA', hash: 'SHA-256' } as const;

/** A CSR is a few hundred bytes; anything near this is not one of ours. */
export const MAX_CSR_CHARS = 4096;

export interface KeyAndCsr {
  keyPem: string;
  csrPem: string;
}

/** A new key pair and a request for `connector` (the subject is informative only). */
export async function createKeyAndCsr(connector: string): Promise<KeyAndCsr> {
  const keys = await generateKeys();
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: [{ CN: [parseConnectorName(connector)] }],
    keys,
    signingAlgorithm: SIGNING,
  }, provider);
  return { keyPem: await privateKeyPem(keys.privateKey), csrPem: `${csr.toString('pem')}\n` };
}

/** The public key of a valid request: PEM PKCS#10, self-signature correct, ECDSA P-256. */
export async function csrPublicKey(pem: string): Promise<CryptoKey> {
  if (pem.length > MAX_CSR_CHARS) throw new UnderpassError('ERR_CSR_INVALID', `the certificate request is ${pem.length} characters (at most ${MAX_CSR_CHARS})`);
  let csr: x509.Pkcs10CertificateRequest;
  try {
    csr = new x509.Pkcs10CertificateRequest(pem);
  } catch (err) {
    throw new UnderpassError('ERR_CSR_INVALID', 'the certificate request is not a PEM PKCS#10 request', { cause: err });
  }
  let key: CryptoKey;
  try {
    key = await csr.publicKey.export(EC_KEY, ['verify'], provider) as CryptoKey;
  } catch (err) {
    throw new UnderpassError('ERR_CSR_KEY', 'the certificate request\'s key is not an ECDSA P-256 key (Underpass uses P-256)', { cause: err });
  }
  if (!(await csr.verify(provider))) throw new UnderpassError('ERR_CSR_SIGNATURE', 'the certificate request\'s signature does not verify with its own key');
  return key;
}

export interface ConnectorFromCsrOptions {
  connection?: ConnectionId;
  connector: string;
  csrPem: string;
  now?: Date;
  /** Lifetime from now. */
  validityMs: number;
}

/** A connector certificate (clientAuth only) for the key in `csrPem`, naming `connector` of the CA's connection. */
export async function signConnectorCsr(ca: CertificateAuthority, options: ConnectorFromCsrOptions): Promise<string> {
  if (options.connection && formatConnectionId(options.connection) !== formatConnectionId(ca.connection)) {
    throw new UnderpassError('ERR_PKI_CONNECTION_MISMATCH',
      `the CA belongs to connection ${formatConnectionId(ca.connection)} and cannot issue for ${formatConnectionId(options.connection)}`);
  }
  const name = parseConnectorName(options.connector);
  const publicKey = await csrPublicKey(options.csrPem);
  const now = (options.now ?? new Date()).getTime();
  const notAfter = wholeSeconds(now + options.validityMs);
  return signLeaf(ca, {
    notBefore: wholeSeconds(now - backdate(options.validityMs)),
    notAfter,
    commonName: name,
    names: [{ type: 'url', value: connectorUri(ca.connection, name) }],
    usages: [x509.ExtendedKeyUsage.clientAuth],
    outlivesCAHint: 'the connection CA expires first; rotate it',
  }, publicKey);
}

/**
 * How far a certificate starts in the past: CLOCK_SKEW_MS, but at most a
 * tenth of its lifetime, so a short certificate (tests use one minute) is
 * not mostly spent before it is issued and its renewal point (two thirds of
 * notBefore..notAfter) stays in the future.
 */
export function backdate(validityMs: number): number {
  return Math.min(CLOCK_SKEW_MS, Math.floor(validityMs / 10));
}
