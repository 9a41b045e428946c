/**
 * The operator's own TLS, for the worker channel (operator/reports.ts): a
 * self-signed operator CA (10 years) and a serving certificate for the names
 * workers dial, in one Secret (ca.crt, ca.key, tls.crt, tls.key). Workers
 * trust the CA through their ConfigMap. The serving certificate is reissued
 * when the names change, when it expires within 30 days, or when it no longer
 * matches the CA; the CA is replaced only when it is unusable or about to
 * expire. Unchanged input writes nothing. Several operator replicas may race:
 * the Secret's resourceVersion decides, and the loser reads the winner's.
 */
import { createPrivateKey, X509Certificate } from 'node:crypto';
import type * as k8s from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { errorMessage, UnderpassError } from '../tunnel/errors.js';
import {
  createSelfSignedCA, issueServingCert, leafProblem, loadSigningCA, normaliseSans, SERVER_AUTH, servingSans, type SigningCA,
} from '../tunnel/pki-generic.js';
import { apiErrorMessage, isConflict, isNotFound, type Kube } from './kube.js';
import { MANAGED_BY } from './names.js';

const DAY_MS = 86_400_000;
export const OPERATOR_CA_VALIDITY_DAYS = 3650;
export const SERVING_CERT_VALIDITY_DAYS = 365;
/** Reissue this long before expiry; also the CA's. */
export const RENEW_BEFORE_MS = 30 * DAY_MS;
const MAX_ATTEMPTS = 3;

export interface OperatorTlsOptions {
  kube: Kube;
  namespace: string;
  secretName: string;
  /** DNS names and IPs workers use to reach the operator (e.g. its Service's names). */
  sans: string[];
  logger: Logger;
  /** Owner of the Secret when it is created (the report Service: uninstalling removes it). */
  owner?: k8s.V1OwnerReference;
  /** The clock; default `new Date()`. */
  now?: () => Date;
}

export interface OperatorTls {
  caPem: string;
  certPem: string;
  keyPem: string;
  /** When to call ensureOperatorTls again (the serving certificate's renewal time). */
  renewalTime: Date;
}

interface Material {
  caPem: string;
  caKeyPem: string;
  certPem: string;
  keyPem: string;
}

/** Reads the Secret, creates or repairs it if needed, and returns what the report server should serve. */
export async function ensureOperatorTls(opts: OperatorTlsOptions): Promise<OperatorTls> {
  const now = opts.now?.() ?? new Date();
  let sans: string[];
  try {
    sans = normaliseSans(opts.sans);
  } catch (err) {
    throw new UnderpassError('ERR_OPERATOR_TLS', `invalid operator serving name: ${errorMessage(err)}`, { cause: err });
  }
  const where = `Secret ${opts.namespace}/${opts.secretName}`;
  for (let attempt = 1; ; attempt++) {
    const secret = await readSecret(opts, where);
    const { material, why } = await plan(secret ? decode(secret) : undefined, sans, now);
    const result = { caPem: material.caPem, certPem: material.certPem, keyPem: material.keyPem, renewalTime: renewalTime(material.certPem) };
    if (!why) return result;
    try {
      await writeSecret(opts, secret, material);
    } catch (err) {
      if (isConflict(err) && attempt < MAX_ATTEMPTS) continue; // another replica wrote first: use theirs
      throw new UnderpassError('ERR_OPERATOR_TLS', `cannot write ${where}: ${apiErrorMessage(err)}`, { cause: err });
    }
    opts.logger.info({ secret: `${opts.namespace}/${opts.secretName}`, sans, reason: why, renewalTime: result.renewalTime },
      `operator TLS in ${where} updated: ${why}`);
    return result;
  }
}

/** The material to use and, when it differs from the Secret, why. */
async function plan(have: Partial<Material> | undefined, sans: string[], now: Date): Promise<{ material: Material; why?: string }> {
  let caWhy: string | undefined;
  let ca: SigningCA | undefined;
  if (!have) caWhy = 'created the operator CA and serving certificate';
  else {
    try {
      ca = await loadSigningCA(have.caPem ?? '', have.caKeyPem ?? '');
      if (ca.certificate.notAfter.getTime() - now.getTime() < RENEW_BEFORE_MS) {
        caWhy = `replaced the operator CA, which expires ${ca.certificate.notAfter.toISOString()}`;
        ca = undefined;
      }
    } catch (err) {
      caWhy = `replaced the operator CA, which was unusable (${errorMessage(err)})`;
    }
  }
  let caPem = have?.caPem ?? '';
  let caKeyPem = have?.caKeyPem ?? '';
  if (!ca) {
    const created = await createSelfSignedCA({ commonName: 'underpass-operator-ca', now, validityDays: OPERATOR_CA_VALIDITY_DAYS });
    ({ certPem: caPem, keyPem: caKeyPem } = created);
    ca = await loadSigningCA(caPem, caKeyPem);
  }
  const servingWhy = caWhy ?? servingProblem(have, caPem, sans, now);
  if (!servingWhy) return { material: have as Material };
  const serving = await issueServingCert(ca, { commonName: 'underpass-operator', sans, now, validityDays: SERVING_CERT_VALIDITY_DAYS });
  return { material: { caPem, caKeyPem, certPem: serving.certPem, keyPem: serving.keyPem }, why: servingWhy };
}

function servingProblem(have: Partial<Material> | undefined, caPem: string, sans: string[], now: Date): string | undefined {
  if (!have?.certPem || !have.keyPem) return 'issued the missing serving certificate';
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(have.certPem);
    if (!cert.checkPrivateKey(createPrivateKey(have.keyPem))) return 'reissued the serving certificate: its key does not match';
  } catch (err) {
    return `reissued the unreadable serving certificate (${errorMessage(err)})`;
  }
  const problem = leafProblem(cert, new X509Certificate(caPem), now, SERVER_AUTH);
  if (problem) return `reissued the serving certificate (${problem.message})`;
  const names = servingSans(have.certPem);
  if (names.join(',') !== sans.join(',')) return `reissued the serving certificate for new names (${sans.join(', ')}; had ${names.join(', ')})`;
  if (Date.parse(cert.validTo) - now.getTime() < RENEW_BEFORE_MS) return `renewed the serving certificate, which expires ${new Date(cert.validTo).toISOString()}`;
  return undefined;
}

function renewalTime(certPem: string): Date {
  return new Date(Date.parse(new X509Certificate(certPem).validTo) - RENEW_BEFORE_MS);
}

async function readSecret(opts: OperatorTlsOptions, where: string): Promise<k8s.V1Secret | undefined> {
  try {
    return await opts.kube.core.readNamespacedSecret({ name: opts.secretName, namespace: opts.namespace });
  } catch (err) {
    if (isNotFound(err)) return undefined;
    throw new UnderpassError('ERR_OPERATOR_TLS', `cannot read ${where}: ${apiErrorMessage(err)}`, { cause: err });
  }
}

/** Creates the Secret, or replaces our four keys in it (other keys, labels and type are kept). */
async function writeSecret(opts: OperatorTlsOptions, existing: k8s.V1Secret | undefined, m: Material): Promise<void> {
  const data = { 'ca.crt': b64(m.caPem), 'ca.key': b64(m.caKeyPem), 'tls.crt': b64(m.certPem), 'tls.key': b64(m.keyPem) };
  const { kube, namespace, secretName: name } = opts;
  if (!existing) {
    const body: k8s.V1Secret = {
      apiVersion: 'v1', kind: 'Secret', type: 'kubernetes.io/tls',
      metadata: {
        name, namespace, labels: { 'app.kubernetes.io/name': 'underpass-operator', 'app.kubernetes.io/managed-by': MANAGED_BY },
        ...(opts.owner ? { ownerReferences: [opts.owner] } : {}),
      },
      data,
    };
    await kube.write('create', 'secrets', () => kube.core.createNamespacedSecret({ namespace, body }));
    return;
  }
  // resourceVersion stays in the body: a concurrent writer makes this a 409, not a lost update.
  const body: k8s.V1Secret = { ...existing, data: { ...existing.data, ...data } };
  await kube.write('update', 'secrets', () => kube.core.replaceNamespacedSecret({ name, namespace, body }));
}

function decode(secret: k8s.V1Secret): Partial<Material> {
  const get = (key: string) => {
    const v = secret.data?.[key];
    return v ? Buffer.from(v, 'base64').toString('utf8') : undefined;
  };
  const m: Partial<Material> = {};
  const [caPem, caKeyPem, certPem, keyPem] = [get('ca.crt'), get('ca.key'), get('tls.crt'), get('tls.key')];
  if (caPem) m.caPem = caPem;
  if (caKeyPem) m.caKeyPem = caKeyPem;
  if (certPem) m.certPem = certPem;
  if (keyPem) m.keyPem = keyPem;
  return m;
}

const b64 = (s: string): string => Buffer.from(s).toString('base64');
