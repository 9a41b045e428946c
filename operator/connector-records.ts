/**
 * TunnelConnector: the registration record of one connector
 * (docs/connector-lifecycle.md). The operator
 *   - makes each one owned by its TunnelConnection;
 *   - answers a new spec.enrollment.requestId with a one-time token (a JWT signed
 *     with the connection's token key) in the Secret `<name>-token`, and
 *     records the token's id in status (only that token can enroll);
 *   - enrolls a connector that presents that token (forwarded by a worker):
 *     the token is marked used in status *before* a certificate is signed, with
 *     the object's resourceVersion, so a second use is refused even by another
 *     operator replica or after a restart;
 *   - records the certificate it holds (serial, expiry), at enrollment and at
 *     every renewal.
 */
import { randomUUID } from 'node:crypto';
import * as k8s from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { parseDuration } from '../tunnel/duration.js';
import { TokenError, caHash, signToken, verifyToken } from '../tunnel/enrollment-token.js';
import { UnderpassError } from '../tunnel/errors.js';
import { admissionFromList, admissionRefusal } from '../tunnel/admission.js';
import { pemCertificates } from '../tunnel/pki.js';
import type { EventRecorder } from './events.js';
import type { Informer } from './informer.js';
import { GROUP, isConflict, isNotFound, VERSION, type Kube, type ObjectRef } from './kube.js';
import { MANAGED_BY } from './names.js';
import type { ConnectionPki } from './pki-secrets.js';
import { TUNNEL_CONNECTORS, type TunnelConnection, type TunnelConnector } from './types.js';
import type { EnrollRequest } from '../tunnel/operator-channel.js';

export const DEFAULT_TOKEN_TTL = '1h';
/** Held on every TunnelConnector so that deleting one revokes its certificates first. */
export const REVOKE_FINALIZER = 'underpass.dev/revoke';
/** Writes of the token's "used" mark tried before an enrollment gives up on a TunnelConnector that keeps changing. */
const ENROLL_WRITE_ATTEMPTS = 5;
/**
 * A token is written to its Secret before its id is recorded in the status (#issueToken says why):
 * a connector that enrolls in between finds an id it does not know while the issuance is still in
 * progress (spec.enrollment.requestId not yet answered in status). It reads again this often, this
 * long, before answering ERR_ENROLL_BUSY (retryable) instead of TOKEN_UNKNOWN (final).
 */
const ISSUING_POLL_MS = 100;
const ISSUING_WAIT_MS = 2_000;

export interface RecordsDeps {
  kube: Kube;
  pki: ConnectionPki;
  connectors: Informer<TunnelConnector>;
  connection: (namespace: string, name: string) => TunnelConnection | undefined;
  events: EventRecorder;
  logger: Logger;
  now: () => Date;
}


export interface Enrolled {
  certificate: string;
  ca: string;
  connector: string;
  serial: string;
  notAfter: Date;
}

export function recordName(connection: string, connector: string): string {
  return `${connection}.${connector}`;
}

export class ConnectorRecords {
  readonly #d: RecordsDeps;

  constructor(deps: RecordsDeps) {
    this.#d = deps;
  }

  /** Ownership, revocation (spec.revoked, deletion) and token requests of one TunnelConnector. */
  async reconcile(ref: ObjectRef): Promise<void> {
    const tcn = this.#d.connectors.get(ref.name, ref.namespace);
    if (!tcn) return;
    const tc = this.#d.connection(tcn.metadata.namespace, tcn.spec.connection);
    if (tcn.metadata.deletionTimestamp) return this.#finalize(tcn, tc);
    // Nothing to own it, sign with or revoke from yet (the TunnelConnection's arrival requeues us),
    // or its connection is going and takes every certificate with it: no finalizer either then
    // (releaseAll), so that none is left waiting for an operator that may be uninstalled next.
    if (!tc || tc.metadata.deletionTimestamp) return;
    if (!tcn.metadata.finalizers?.includes(REVOKE_FINALIZER)) {
      await this.#patch(tcn, { metadata: { finalizers: [...(tcn.metadata.finalizers ?? []), REVOKE_FINALIZER], resourceVersion: tcn.metadata.resourceVersion } });
      return; // the update brings us back
    }
    if (tcn.spec.revoked === true && !tcn.status?.revokedAt) {
      await this.#revoke(tc, tcn, 'spec.revoked');
      return;
    }
    if (!tcn.metadata.ownerReferences?.some((o) => o.uid === tc.metadata.uid)) {
      await this.#patch(tcn, { metadata: { ownerReferences: [...(tcn.metadata.ownerReferences ?? []), ownerOf(tc)], resourceVersion: tcn.metadata.resourceVersion } });
      return; // the update brings us back
    }
    const requestId = tcn.spec.enrollment?.requestId;
    if (requestId && requestId !== tcn.status?.enrollment?.requestId) {
      if (tcn.spec.revoked === true) {
        const { tokenId: _t, tokenSecret: _s, expiresAt: _e, ...rest } = tcn.status?.enrollment ?? {};
        await this.#writeStatus(tcn, { ...tcn.status, enrollment: { ...rest, requestId, refused: 'the connector is revoked: delete its TunnelConnector to enroll it again' } });
        await this.#d.events.record(tcn, 'Warning', 'TokenRefused', `connector ${tcn.spec.connector} is revoked: no token issued (delete the TunnelConnector to enroll it again)`);
        return;
      }
      await this.#issueToken(tc, tcn, requestId);
    }
  }

  /**
   * Revokes the connector: every certificate issued to it (and any serial a
   * worker reported for it) is refused by serial from the workers' next report
   * on; its sessions are cut there (tunnel/admission.ts).
   */
  async #revoke(tc: TunnelConnection, tcn: TunnelConnector, why: string): Promise<void> {
    const seen = (tcn.status?.sessions ?? []).map((s) => s.serial).filter((s): s is string => Boolean(s));
    const serials = await this.#d.pki.revoke(tc, tcn.spec.connector, this.#d.now(), [...seen, ...(tcn.status?.certificate?.serial ? [tcn.status.certificate.serial] : [])]);
    const message = `revoked connector ${tcn.spec.connector} of ${tc.metadata.namespace}/${tc.metadata.name} (${why}): ${serials.length} certificate(s) refused by serial on every worker (${serials.join(', ') || 'none issued'})`;
    this.#d.logger.warn({ connection: `${tc.metadata.namespace}/${tc.metadata.name}`, connector: tcn.spec.connector, serials, why }, message);
    if (!tcn.metadata.deletionTimestamp) await this.#writeStatus(tcn, { ...tcn.status, revokedAt: this.#d.now().toISOString() });
    await this.#d.events.record(tcn.metadata.deletionTimestamp ? tc : tcn, 'Warning', 'Revoked', message);
  }

  /**
   * The TunnelConnection is being deleted: its TunnelConnectors' revoke finalizers are released now,
   * before the connection's own, rather than when the garbage collector deletes them after it. Their
   * certificates die with the connection's CA, so there is nothing to revoke; and a finalizer left
   * for later would wait for an operator that is often uninstalled right after its connections
   * (the namespace would then hang in Terminating). Returns how many were released.
   */
  async releaseAll(tc: TunnelConnection): Promise<number> {
    let released = 0;
    for (const tcn of this.#d.connectors.list(tc.metadata.namespace)) {
      if (tcn.spec.connection !== tc.metadata.name || !tcn.metadata.finalizers?.includes(REVOKE_FINALIZER)) continue;
      try {
        await this.#patch(tcn, { metadata: { finalizers: tcn.metadata.finalizers.filter((f) => f !== REVOKE_FINALIZER), resourceVersion: tcn.metadata.resourceVersion } });
        released++;
      } catch (err) {
        if (!isNotFound(err)) throw err; // a conflict retries the connection's deletion
      }
    }
    return released;
  }

  /** A deleted TunnelConnector: its certificates are revoked (so a copied key is useless), then it may go. */
  async #finalize(tcn: TunnelConnector, tc: TunnelConnection | undefined): Promise<void> {
    if (!tcn.metadata.finalizers?.includes(REVOKE_FINALIZER)) return;
    // With its connection gone, its CA went too: nothing left to refuse.
    if (tc && !tc.metadata.deletionTimestamp) await this.#revoke(tc, tcn, 'TunnelConnector deleted');
    await this.#patch(tcn, { metadata: { finalizers: (tcn.metadata.finalizers ?? []).filter((f) => f !== REVOKE_FINALIZER), resourceVersion: tcn.metadata.resourceVersion } });
  }

  async #issueToken(tc: TunnelConnection, tcn: TunnelConnector, requestId: string): Promise<void> {
    const now = this.#d.now();
    const ttlMs = parseDuration(tcn.spec.enrollment?.ttl ?? DEFAULT_TOKEN_TTL, 'spec.enrollment.ttl');
    const { key, trust } = await this.#d.pki.tokenKey(tc);
    const jti = randomUUID();
    const connection = { namespace: tc.metadata.namespace, name: tc.metadata.name };
    const token = await signToken(key, { connection, connector: tcn.spec.connector, jti, ttlMs, now, caHashes: pemCertificates(trust).map(caHash) });
    const secret = `${tcn.metadata.name}-token`;
    // The Secret first: a failure before the status write leaves an unrecorded token, which cannot enroll.
    await this.#writeTokenSecret(tcn, secret, token);
    const expiresAt = new Date(now.getTime() + Math.ceil(ttlMs / 1000) * 1000).toISOString();
    const { refused: _r, ...previous } = tcn.status?.enrollment ?? {};
    await this.#writeStatus(tcn, { ...tcn.status, enrollment: { ...previous, requestId, tokenSecret: secret, tokenId: jti, expiresAt } });
    await this.#d.events.record(tcn, 'Normal', 'TokenIssued', `issued a one-time enrollment token ${jti} for connector ${tcn.spec.connector}, valid until ${expiresAt}, in Secret ${secret}`);
  }

  /**
   * Enrolls the connector a token names, for `connection` (what the worker's
   * certificate proved): the token checked, marked used, the CSR signed for
   * the token's connector. Throws TokenError or UnderpassError with the
   * refusal's code.
   */
  async enroll(connection: ObjectRef, req: EnrollRequest): Promise<Enrolled> {
    const tc = this.#d.connection(connection.namespace, connection.name);
    if (!tc || tc.metadata.deletionTimestamp) throw new UnderpassError('ERR_CONNECTION_GONE', `connection ${connection.namespace}/${connection.name} is being deleted or does not exist`);
    const key = this.#d.pki.tokenPublicKey(tc);
    if (!key) throw new TokenError('TOKEN_INVALID', `no token was ever issued for connection ${connection.namespace}/${connection.name}`);
    const now = this.#d.now();
    const claims = await verifyToken(req.token, key, connection, now);
    // Read from the API, not the cache: single use must hold against a cache that lags. The "used"
    // mark is written with the resourceVersion read, so of two requests with one token only one
    // can write it. A conflict alone does not mean that: any write to the TunnelConnector between
    // our read and our write (the operator's own status updates, a label) conflicts too — it is
    // read again and checked again, and only a token found used is refused.
    let tcn: TunnelConnector | undefined;
    const name = `${connection.namespace}/${recordName(connection.name, claims.connector)}`;
    const issuingUntil = Date.now() + ISSUING_WAIT_MS;
    for (let attempt = 1; ; ) {
      tcn = await this.#read(connection.namespace, recordName(connection.name, claims.connector));
      const e = tcn?.status?.enrollment;
      if (!tcn || tcn.metadata.deletionTimestamp) throw new TokenError('TOKEN_UNKNOWN', `connector ${claims.connector} has no TunnelConnector (deleted?); ask for a new token`);
      if (tcn.spec.revoked === true) throw new UnderpassError('CONNECTOR_REVOKED', `connector ${claims.connector} is revoked; delete its TunnelConnector to enroll it again`);
      if (e?.usedTokenId === claims.jti) {
        throw new TokenError('TOKEN_USED', attempt > 1
          ? 'this token was used by another request at the same time; a token enrolls once: ask for a new one'
          : `this token was already used (at ${e.usedAt ?? '?'}); a token enrolls once: ask for a new one`);
      }
      if (e?.tokenId !== claims.jti) {
        const requested = tcn.spec.enrollment?.requestId;
        if (!requested || requested === e?.requestId) throw new TokenError('TOKEN_UNKNOWN', 'this token was replaced by a newer one for the same connector; use the newest');
        // A token is being issued (its Secret may be written already, its id not yet recorded): this may be it.
        if (Date.now() >= issuingUntil) {
          throw new UnderpassError('ERR_ENROLL_BUSY', `a token for TunnelConnector ${name} is still being issued (spec.enrollment.requestId ${requested} not answered in status after ${ISSUING_WAIT_MS} ms); the token is unused: retry`);
        }
        await new Promise((r) => setTimeout(r, ISSUING_POLL_MS));
        continue;
      }
      const refused = admissionRefusal(admissionFromList(tc.spec.connectors), { connector: claims.connector, certificateSerial: '' });
      if (refused) throw new UnderpassError(refused.code, refused.message);
      try {
        await this.#writeStatus(tcn, { ...tcn.status, enrollment: { ...e, usedTokenId: claims.jti, usedAt: now.toISOString() } });
        break;
      } catch (err) {
        if (!isConflict(err)) throw err;
        if (attempt >= ENROLL_WRITE_ATTEMPTS) {
          throw new UnderpassError('ERR_ENROLL_BUSY', `TunnelConnector ${name} changed under ${attempt} attempts to mark the token used; the token is still unused: retry`, { cause: err });
        }
        this.#d.logger.info({ connection: `${connection.namespace}/${connection.name}`, connector: claims.connector, attempt },
          `enrollment of connector ${claims.connector}: its TunnelConnector changed while the token was being marked used; reading it again`);
        attempt++;
      }
    }
    const signed = await this.#d.pki.signConnector(tc, claims.connector, req.csr, now);
    await this.recordCertificate(connection.namespace, connection.name, claims.connector, signed);
    await this.#d.events.record(tcn, 'Normal', 'Enrolled', `connector ${claims.connector} enrolled with token ${claims.jti}: certificate ${signed.serial}, valid until ${signed.notAfter.toISOString()}`);
    return { certificate: signed.certificate, ca: signed.ca, connector: claims.connector, serial: signed.serial, notAfter: signed.notAfter };
  }

  /** The certificate a connector holds now (after enrollment or renewal); no record, nothing to do. */
  async recordCertificate(namespace: string, connection: string, connector: string, cert: { serial: string; notAfter: Date }): Promise<void> {
    for (let attempt = 0; attempt < 3; attempt++) {
      const tcn = await this.#read(namespace, recordName(connection, connector));
      if (!tcn) return;
      try {
        await this.#writeStatus(tcn, { ...tcn.status, certificate: { serial: cert.serial, notAfter: cert.notAfter.toISOString() } });
        return;
      } catch (err) {
        if (!isConflict(err)) throw err;
      }
    }
  }

  async #read(namespace: string, name: string): Promise<TunnelConnector | undefined> {
    try {
      return await this.#d.kube.custom.getNamespacedCustomObject({ group: GROUP, version: VERSION, namespace, plural: TUNNEL_CONNECTORS, name }) as TunnelConnector;
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  async #writeStatus(tcn: TunnelConnector, status: NonNullable<TunnelConnector['status']>): Promise<void> {
    await this.#d.kube.write('update', 'tunnelconnectors/status', () => this.#d.kube.custom.replaceNamespacedCustomObjectStatus({
      group: GROUP, version: VERSION, namespace: tcn.metadata.namespace, plural: TUNNEL_CONNECTORS, name: tcn.metadata.name,
      body: { ...tcn, status },
    }));
  }

  async #patch(tcn: TunnelConnector, body: object): Promise<void> {
    await this.#d.kube.write('patch', 'tunnelconnectors', () => this.#d.kube.custom.patchNamespacedCustomObject(
      { group: GROUP, version: VERSION, namespace: tcn.metadata.namespace, plural: TUNNEL_CONNECTORS, name: tcn.metadata.name, body },
      k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch),
    ));
  }

  async #writeTokenSecret(tcn: TunnelConnector, name: string, token: string): Promise<void> {
    const { kube } = this.#d;
    const namespace = tcn.metadata.namespace;
    const body: k8s.V1Secret = {
      apiVersion: 'v1', kind: 'Secret', type: 'Opaque',
      metadata: {
        name, namespace,
        labels: { 'app.kubernetes.io/managed-by': MANAGED_BY, 'underpass.dev/connection': tcn.spec.connection, 'underpass.dev/connector': tcn.spec.connector },
        ownerReferences: [{ apiVersion: `${GROUP}/${VERSION}`, kind: 'TunnelConnector', name: tcn.metadata.name, uid: tcn.metadata.uid!, controller: true, blockOwnerDeletion: true }],
      },
      data: { token: Buffer.from(token).toString('base64') },
    };
    try {
      await kube.write('update', 'secrets', () => kube.core.replaceNamespacedSecret({ name, namespace, body }));
    } catch (err) {
      if (!isNotFound(err)) throw err;
      await kube.write('create', 'secrets', () => kube.core.createNamespacedSecret({ namespace, body }));
    }
  }
}

function ownerOf(tc: TunnelConnection): k8s.V1OwnerReference {
  return { apiVersion: tc.apiVersion ?? `${GROUP}/${VERSION}`, kind: 'TunnelConnection', name: tc.metadata.name, uid: tc.metadata.uid!, blockOwnerDeletion: true };
}
