/**
 * The connection's PKI: the CA in the operator's namespace
 * (operator/connection-ca.ts) and `<tc>-worker-tls` in the tenant's
 * (kubernetes.io/tls + ca.crt: what workers mount). The worker certificate
 * is reissued when missing, when the names connectors dial change, when
 * signed by another CA, or within `renewBefore` of expiry. The decision is
 * made from the copy of the certificate kept beside the CA, so the operator
 * needs no list or watch on tenant Secrets; it reads `<tc>-worker-tls` by
 * name only now and then (DRIFT_CHECK_MS) to repair one that was deleted or
 * changed. Workers re-read the mounted files, so renewal never restarts a pod
 * or drops a session.
 */
import { createPrivateKey, createPublicKey, generateKeyPairSync, X509Certificate, type KeyObject } from 'node:crypto';
import type * as k8s from '@kubernetes/client-node';
import { parseDuration } from '../tunnel/duration.js';
import { UnderpassError } from '../tunnel/errors.js';
import { certificateInfo, createCA, issueWorkerCert, loadCA, type CertificateAuthority } from '../tunnel/pki.js';
import { signConnectorCsr } from '../tunnel/pki-csr.js';
import {
  caSecretName, certRecords, decodeCAState, deleteLegacyCA, readLegacyCA, ROTATE_ANNOTATION, trustBundle, writeCAState, type CAState,
} from './connection-ca.js';
import { MAX_REVOKED_SERIALS, normalizeSerial } from '../tunnel/admission.js';
import { nextStep, rotationPhase, waitingFor, type RotationPhase, type RotationStep } from './ca-rotation.js';
import type { WorkerReport } from '../tunnel/operator-channel.js';
import { ownerReference } from './desired.js';
import { HASH_ANNOTATION } from './names.js';
import { isAlreadyExists, isConflict, isNotFound, type Kube } from './kube.js';
import { namesFor, ownedLabels } from './names.js';
import type { TunnelConnection } from './types.js';

/** How often the tenant's worker Secret is read back to repair drift (someone deleted or edited it). */
export const DRIFT_CHECK_MS = 5 * 60_000;

export interface PkiResult {
  caPem: string;
  notAfter: Date;
  renewalTime: Date;
  /** What happened this pass (for Events). */
  action: 'none' | 'ca-created' | 'ca-adopted' | 'issued' | 'renewed' | 'reissued';
  reason?: string;
  /** A step of a CA rotation taken this pass (operator/ca-rotation.ts). */
  rotation?: { step: RotationStep; why: string };
  /** While a rotation runs: its phase and who it waits for. */
  rotating?: { phase: RotationPhase; waitingFor: string[] };
}

export function workerSans(tc: TunnelConnection, extra: string[] = []): string[] {
  const svc = namesFor(tc.metadata.name).tunnelService;
  const ns = tc.metadata.namespace;
  const names = [svc, `${svc}.${ns}`, `${svc}.${ns}.svc`, `${svc}.${ns}.svc.cluster.local`, ...(tc.spec.endpoint.hosts ?? []), ...extra];
  if (tc.spec.endpoint.route?.host) names.push(tc.spec.endpoint.route.host);
  return [...new Set(names.map((n) => n.toLowerCase()))].sort();
}

const b64 = (s: string): string => Buffer.from(s).toString('base64');
const unb64 = (s: string | undefined): string => (s ? Buffer.from(s, 'base64').toString('utf8') : '');

export interface PkiDeps {
  kube: Kube;
  /** The operator's namespace: where CA Secrets live. */
  namespace: string;
  /** The CA Secret of a connection as the operator's informer has it. */
  caSecret(name: string): k8s.V1Secret | undefined;
  /** Default DRIFT_CHECK_MS. */
  driftCheckMs?: number;
}

export class ConnectionPki {
  readonly #d: PkiDeps;
  /** When each connection's worker Secret was last read back (by connection uid). */
  readonly #checked = new Map<string, number>();

  constructor(deps: PkiDeps) {
    this.#d = deps;
  }

  /** The CA certificate of a connection (from the informer), or undefined. */
  caPem(tc: TunnelConnection): string | undefined {
    const state = decodeCAState(this.#d.caSecret(caSecretName(tc)));
    return state.caPem ? trustBundle(state) : undefined;
  }

  async ensure(tc: TunnelConnection, sans: string[], now: Date, reports: readonly WorkerReport[] = []): Promise<PkiResult> {
    let live = this.#d.caSecret(caSecretName(tc));
    let state = decodeCAState(live);
    let action: PkiResult['action'] = 'none';
    if (!state.caPem || !state.caKeyPem) {
      ({ state, action, live } = await this.#createOrAdopt(tc, live, now));
    }
    const caDurationMs = parseDuration(tc.spec.certificates.caDuration ?? DEFAULT_CA_DURATION, 'spec.certificates.caDuration');
    const rotation = nextStep({
      state, requested: tc.metadata.annotations?.[ROTATE_ANNOTATION], caNotAfter: certificateInfo(state.caPem!).notAfter, caDurationMs, now, reports,
    });
    if (rotation) {
      state = await rotate(rotation.step, state, tc, now, caDurationMs, tc.metadata.annotations?.[ROTATE_ANNOTATION]);
      live = await writeCAState(this.#d.kube, this.#d.namespace, tc, live, state);
    }
    const trust = trustBundle(state);
    const phase = rotationPhase(state);
    const extra = {
      ...(rotation ? { rotation } : {}),
      ...(phase !== 'Stable' ? { rotating: { phase, waitingFor: waitingFor({ state, reports }) } } : {}),
    };
    let ca: CertificateAuthority;
    try {
      ca = await loadCA(state.caPem!, state.caKeyPem!);
    } catch (err) {
      throw new UnderpassError('ERR_CA_INVALID', `Secret ${this.#d.namespace}/${caSecretName(tc)} does not hold a usable CA for this connection: ${(err as Error).message}`, { cause: err });
    }

    const duration = parseDuration(tc.spec.certificates.duration, 'spec.certificates.duration');
    const renewBefore = parseDuration(tc.spec.certificates.renewBefore, 'spec.certificates.renewBefore');
    let needs = workerCertProblem(state.workerCertPem, ca.certPem, sans, now, duration, renewBefore)
      ?? (state.workerTrustPem !== trust ? 'the CA certificates to trust changed' : undefined);
    if (!needs && action === 'none') needs = await this.#drift(tc, state, trust, now);
    if (!needs) {
      const info = certificateInfo(state.workerCertPem!);
      return { caPem: trust, notAfter: info.notAfter, renewalTime: new Date(info.notAfter.getTime() - renewBefore), action, ...extra };
    }

    // Never past the CA: a shorter certificate rather than none.
    const notAfter = new Date(Math.min(now.getTime() + duration, ca.certificate.notAfter.getTime()));
    const issued = await issueWorkerCert(ca, { sans, now, notAfter });
    await this.#writeWorkerSecret(tc, { 'tls.crt': issued.certPem, 'tls.key': issued.keyPem, 'ca.crt': trust });
    // Recorded after the tenant write: a failure in between only reissues once more.
    await writeCAState(this.#d.kube, this.#d.namespace, tc, live, { ...state, workerCertPem: issued.certPem, workerTrustPem: trust });
    this.#checked.set(tc.metadata.uid ?? '', now.getTime());
    if (action === 'none') action = needs === 'missing' ? 'issued' : needs.startsWith('expires') ? 'renewed' : 'reissued';
    const info = certificateInfo(issued.certPem);
    return { caPem: trust, notAfter: info.notAfter, renewalTime: new Date(info.notAfter.getTime() - renewBefore), action, reason: needs, ...extra };
  }

  /**
   * Signs a connector certificate for the key in `csrPem`, naming `connector`
   * (what the worker's session or an enrollment token proved, never what the
   * request says), valid for spec.certificates.duration. Returns the
   * certificate and the CA certificates the connection trusts now.
   */
  async signConnector(tc: TunnelConnection, connector: string, csrPem: string, now: Date): Promise<{ certificate: string; ca: string; serial: string; notAfter: Date }> {
    const state = decodeCAState(this.#d.caSecret(caSecretName(tc)));
    if (!state.caPem || !state.caKeyPem) throw new UnderpassError('ERR_CA_NOT_READY', `connection ${tc.metadata.namespace}/${tc.metadata.name} has no CA yet; retry shortly`);
    const ca = await loadCA(state.caPem, state.caKeyPem);
    const validityMs = parseDuration(tc.spec.certificates.duration, 'spec.certificates.duration');
    // Never past the CA: a shorter certificate rather than none (rotation replaces the CA before that matters).
    const capped = Math.min(validityMs, ca.certificate.notAfter.getTime() - now.getTime());
    const certificate = await signConnectorCsr(ca, { connector, csrPem, now, validityMs: capped });
    const info = certificateInfo(certificate);
    const serial = normalizeSerial(info.serialNumber);
    // Recorded before it is handed out: revoking the connector later covers this certificate too.
    await this.#update(tc, (s) => ({
      ...s, issuedJson: JSON.stringify([...certRecords(s.issuedJson, now), { connector, serial, notAfter: info.notAfter.toISOString() }]),
    }));
    return { certificate, ca: trustBundle(state), serial, notAfter: info.notAfter };
  }

  /**
   * Revokes every certificate issued to `connector` that has not expired:
   * they move from issued.json to revoked.json, which every worker's admission
   * list carries (operator channel) until they expire. Returns their serials.
   */
  async revoke(tc: TunnelConnection, connector: string, now: Date, extraSerials: readonly string[] = []): Promise<string[]> {
    let moved: string[] = [];
    await this.#update(tc, (s) => {
      const issued = certRecords(s.issuedJson, now);
      const revoked = certRecords(s.revokedJson, now);
      const mine = issued.filter((r) => r.connector === connector);
      const known = new Set(revoked.map((r) => r.serial));
      const extra = extraSerials.map(normalizeSerial).filter((x) => !mine.some((r) => r.serial === x))
        .map((serial) => ({ connector, serial, notAfter: new Date(now.getTime() + 366 * 86_400_000).toISOString() }));
      const add = [...mine, ...extra].filter((r) => !known.has(r.serial));
      moved = [...mine, ...extra].map((r) => r.serial);
      return { ...s, issuedJson: JSON.stringify(issued.filter((r) => r.connector !== connector)), revokedJson: JSON.stringify([...revoked, ...add]) };
    });
    return moved;
  }

  /** Serials refused by every worker of the connection (from the informer). */
  revokedSerials(tc: TunnelConnection, now: Date): string[] {
    return certRecords(decodeCAState(this.#d.caSecret(caSecretName(tc))).revokedJson, now).map((r) => r.serial).slice(0, MAX_REVOKED_SERIALS);
  }

  /** Read-modify-write of the CA Secret from the API (not the cache), retried on a conflict. */
  async #update(tc: TunnelConnection, mutate: (s: CAState) => CAState): Promise<void> {
    const name = caSecretName(tc);
    for (let attempt = 1; ; attempt++) {
      const live = await this.#d.kube.core.readNamespacedSecret({ name, namespace: this.#d.namespace });
      try {
        await writeCAState(this.#d.kube, this.#d.namespace, tc, live, mutate(decodeCAState(live)));
        return;
      } catch (err) {
        if (!isConflict(err) || attempt >= 5) throw err;
      }
    }
  }

  /**
   * The key this connection's enrollment tokens are signed with (made on
   * first use, kept beside the CA), and the CA certificates a token pins.
   */
  async tokenKey(tc: TunnelConnection): Promise<{ key: KeyObject; trust: string }> {
    const live = this.#d.caSecret(caSecretName(tc));
    const state = decodeCAState(live);
    if (!state.caPem) throw new UnderpassError('ERR_CA_NOT_READY', `connection ${tc.metadata.namespace}/${tc.metadata.name} has no CA yet; retry shortly`);
    if (state.tokenKeyPem) return { key: createPrivateKey(state.tokenKeyPem), trust: trustBundle(state) };
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const tokenKeyPem = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    await writeCAState(this.#d.kube, this.#d.namespace, tc, live, { ...state, tokenKeyPem });
    return { key: privateKey, trust: trustBundle(state) };
  }

  /** The public half of the token key, or undefined when no token was ever issued for the connection. */
  tokenPublicKey(tc: TunnelConnection): KeyObject | undefined {
    const pem = decodeCAState(this.#d.caSecret(caSecretName(tc))).tokenKeyPem;
    return pem ? createPublicKey(createPrivateKey(pem)) : undefined;
  }

  /** After the TunnelConnection is gone: the CA Secret, the worker Secret and any old in-namespace CA. */
  async remove(tc: TunnelConnection): Promise<void> {
    const { kube, namespace } = this.#d;
    const del = async (ns: string, name: string): Promise<void> => {
      try {
        await kube.write('delete', 'secrets', () => kube.core.deleteNamespacedSecret({ name, namespace: ns }));
      } catch (err) {
        if (!isNotFound(err)) throw err;
      }
    };
    await del(tc.metadata.namespace, namesFor(tc.metadata.name).workerTlsSecret);
    await deleteLegacyCA(kube, tc);
    await del(namespace, caSecretName(tc));
    this.#checked.delete(tc.metadata.uid ?? '');
  }

  /** A new CA, or the one the connection kept in its own namespace before (moved here, then deleted there). */
  async #createOrAdopt(tc: TunnelConnection, live: k8s.V1Secret | undefined, now: Date): Promise<{ state: CAState; action: PkiResult['action']; live: k8s.V1Secret }> {
    const legacy = await readLegacyCA(this.#d.kube, tc);
    let state: CAState;
    let action: PkiResult['action'];
    if (legacy) {
      try {
        await loadCA(legacy.caPem, legacy.caKeyPem);
        state = { caPem: legacy.caPem, caKeyPem: legacy.caKeyPem };
        action = 'ca-adopted';
      } catch {
        state = await newCA(tc, now);
        action = 'ca-created';
      }
    } else {
      state = await newCA(tc, now);
      action = 'ca-created';
    }
    const written = await writeCAState(this.#d.kube, this.#d.namespace, tc, live, state);
    // Only once the CA is safe in our namespace does the tenant's copy of the key go.
    if (legacy) await deleteLegacyCA(this.#d.kube, tc);
    return { state, action, live: written };
  }

  /** Reads the tenant's worker Secret back (at most every DRIFT_CHECK_MS): why it must be written again, if it must. */
  async #drift(tc: TunnelConnection, state: CAState, trust: string, now: Date): Promise<string | undefined> {
    const uid = tc.metadata.uid ?? '';
    if (now.getTime() - (this.#checked.get(uid) ?? -Infinity) < (this.#d.driftCheckMs ?? DRIFT_CHECK_MS)) return undefined;
    const name = namesFor(tc.metadata.name).workerTlsSecret;
    let secret: k8s.V1Secret;
    try {
      secret = await this.#d.kube.core.readNamespacedSecret({ name, namespace: tc.metadata.namespace });
    } catch (err) {
      if (isNotFound(err)) return 'missing';
      throw err;
    }
    this.#checked.set(uid, now.getTime());
    if (unb64(secret.data?.['tls.crt']) !== state.workerCertPem || unb64(secret.data?.['ca.crt']) !== trust) {
      return `Secret ${tc.metadata.namespace}/${name} was changed`;
    }
    return undefined;
  }

  /** Replaces the worker Secret (no read first: the operator keeps the truth beside the CA), or creates it. */
  async #writeWorkerSecret(tc: TunnelConnection, files: Record<string, string>): Promise<void> {
    const { kube } = this.#d;
    const ns = tc.metadata.namespace;
    const name = namesFor(tc.metadata.name).workerTlsSecret;
    const data = Object.fromEntries(Object.entries(files).map(([k, v]) => [k, b64(v)]));
    const body: k8s.V1Secret = {
      apiVersion: 'v1', kind: 'Secret', type: 'kubernetes.io/tls',
      metadata: { name, namespace: ns, labels: ownedLabels(tc.metadata.name), ownerReferences: [ownerReference(tc)], annotations: { [HASH_ANNOTATION]: 'pki' } },
      data,
    };
    try {
      await kube.write('update', 'secrets', () => kube.core.replaceNamespacedSecret({ name, namespace: ns, body }));
      return;
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
    try {
      await kube.write('create', 'secrets', () => kube.core.createNamespacedSecret({ namespace: ns, body }));
    } catch (err) {
      if (!isAlreadyExists(err)) throw err;
      await kube.write('update', 'secrets', () => kube.core.replaceNamespacedSecret({ name, namespace: ns, body }));
    }
  }
}

const DEFAULT_CA_DURATION = '8760h';

async function newCA(tc: TunnelConnection, now: Date): Promise<CAState> {
  const created = await createCAFor(tc, now, parseDuration(tc.spec.certificates.caDuration ?? DEFAULT_CA_DURATION, 'spec.certificates.caDuration'));
  return { caPem: created.certPem, caKeyPem: created.keyPem };
}

function createCAFor(tc: TunnelConnection, now: Date, durationMs: number) {
  return createCA({ connection: { namespace: tc.metadata.namespace, name: tc.metadata.name }, now, validityDays: durationMs / 86_400_000 });
}

/** The CA state after one rotation step (operator/ca-rotation.ts). */
async function rotate(step: RotationStep, state: CAState, tc: TunnelConnection, now: Date, caDurationMs: number, requested: string | undefined): Promise<CAState> {
  switch (step) {
    case 'start': {
      const next = await createCAFor(tc, now, caDurationMs);
      return { ...state, nextPem: next.certPem, nextKeyPem: next.keyPem, ...(requested !== undefined ? { rotateHandled: requested } : {}) };
    }
    case 'switch': {
      const { nextPem, nextKeyPem, ...rest } = state;
      return { ...rest, caPem: nextPem!, caKeyPem: nextKeyPem!, retiringPem: state.caPem! };
    }
    case 'finish': {
      const { retiringPem: _old, ...rest } = state;
      return rest;
    }
  }
}

/** Why the recorded worker certificate must be reissued, or undefined. */
export function workerCertProblem(
  certPem: string | undefined, caPem: string, sans: string[], now: Date, duration: number, renewBefore: number,
): string | undefined {
  if (!certPem) return 'missing';
  try {
    const info = certificateInfo(certPem);
    const have = [...info.dnsNames, ...info.ips].map((n) => n.toLowerCase()).sort();
    // Old and new CAs of a connection share their subject: compare keys, not names.
    const leaf = new X509Certificate(certPem);
    const ca = new X509Certificate(caPem);
    if (!leaf.checkIssued(ca) || !leaf.verify(ca.publicKey)) return 'signed by another CA';
    if (have.join(',') !== sans.join(',')) return `names changed (${sans.join(', ')})`;
    if (now.getTime() >= info.notAfter.getTime() - renewBefore) return `expires ${info.notAfter.toISOString()}`;
    if (info.notAfter.getTime() - info.notBefore.getTime() > duration + 10 * 60_000) return 'duration shortened';
    return undefined;
  } catch {
    return 'unreadable';
  }
}
