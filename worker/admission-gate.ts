/**
 * The worker's admission list in force (tunnel/admission.ts): checked when a
 * connector upgrades to WebSocket, and for every session each time the list
 * changes, so a connector removed from spec.connectors loses its sessions as
 * soon as this worker hears of it (its next operator answer).
 *
 * Two sources feed it: the config file (the ConfigMap the operator writes:
 * `connectors:` and `revoked:`), read at start and on every change, and the
 * operator's answers. Before the first answer the file decides alone, so a
 * worker that starts while the operator is unreachable already refuses
 * revoked certificates; afterwards the answer says who may attach and the
 * revocations of both apply (`admissionInForce`).
 */
import type { Logger } from 'pino';
import { Counter, type Registry } from 'prom-client';
import {
  admissionFromList, admissionInForce, admissionRefusal, ANY_CONNECTOR, describeAdmission, sameAdmission,
  type Admission, type AdmissionCandidate, type AdmissionRefusal,
} from '../tunnel/admission.js';
import type { AuditLog } from '../tunnel/audit.js';
import type { ConnectorSession } from './connector-session.js';

/** The admission part of a worker config file (worker/config.ts). */
export function admissionOfConfig(config: { connectors?: readonly string[] | undefined; revoked?: { serials: readonly string[]; connectors: readonly string[] } | undefined }): Admission {
  const serials = config.revoked?.serials ?? [];
  const names = config.revoked?.connectors ?? [];
  return {
    ...admissionFromList(config.connectors),
    ...(serials.length > 0 ? { revokedSerials: [...serials] } : {}),
    ...(names.length > 0 ? { revokedConnectors: [...names] } : {}),
  };
}

export interface AdmissionGateOptions {
  connection: string;
  instance: string;
  /** What the config file says at start-up. */
  initial: Admission;
  log: Logger;
  audit: AuditLog;
  registry: Registry;
}

export class AdmissionGate {
  readonly #o: AdmissionGateOptions;
  readonly #closed: Counter;
  #current: Admission;
  #file: Admission;
  #operator: Admission | undefined;

  constructor(o: AdmissionGateOptions) {
    this.#o = o;
    this.#file = o.initial ?? ANY_CONNECTOR;
    this.#current = this.#file;
    const name = 'underpass_admission_sessions_closed_total';
    this.#closed = (o.registry.getSingleMetric(name) as Counter | undefined) ?? new Counter({
      name, help: 'Connector sessions closed because the connector was removed from the admission list (spec.connectors).', registers: [o.registry],
    });
  }

  get current(): Admission {
    return this.#current;
  }

  /** Why `candidate` may not attach now (the tunnel server answers 403 with the code). */
  check(candidate: AdmissionCandidate): AdmissionRefusal | undefined {
    return admissionRefusal(this.#current, candidate);
  }

  /** The config file changed (or was read again): its list and revocations. */
  fromFile(admission: Admission, sessions: readonly ConnectorSession[]): number {
    this.#file = admission;
    return this.#apply(admissionInForce(this.#file, this.#operator), sessions, 'config file');
  }

  /** An operator answer's list. */
  fromOperator(admission: Admission, sessions: readonly ConnectorSession[]): number {
    this.#operator = admission;
    return this.#apply(admissionInForce(this.#file, this.#operator), sessions, 'operator');
  }

  /**
   * Puts `next` in force and closes every session it no longer admits, each
   * told why (CONNECTOR_NOT_ALLOWED, CERTIFICATE_REVOKED, …). Returns how many were closed.
   */
  #apply(next: Admission, sessions: readonly ConnectorSession[], source: string): number {
    if (sameAdmission(next, this.#current)) return 0;
    const before = this.#current;
    this.#current = next;
    this.#o.log.info({ admission: next.connectors ?? 'any', source }, `admission changed (${source}): now ${describeAdmission(next)}, was ${describeAdmission(before)}`);
    this.#o.audit.write({
      event: 'admission-changed', connection: this.#o.connection, worker: this.#o.instance, source,
      connectors: next.connectors === undefined ? 'any' : [...next.connectors],
      ...(next.revokedSerials?.length || next.revokedConnectors?.length
        ? { message: `revoked: ${next.revokedConnectors?.length ?? 0} connector(s), ${next.revokedSerials?.length ?? 0} certificate(s)` } : {}),
    });
    let closed = 0;
    for (const session of sessions) {
      const refusal = admissionRefusal(next, { connector: session.connector, certificateSerial: session.certificateSerial });
      if (!refusal) continue;
      closed++;
      this.#closed.inc();
      session.refuse(refusal.code, refusal.message);
    }
    return closed;
  }
}
