/**
 * Which connectors of a connection may attach to its workers, beyond holding a
 * valid certificate. The operator sends it in every answer on the operator
 * channel (from TunnelConnection spec.connectors); a worker without an
 * operator reads it from its config file (`connectors:`). A worker checks it
 * at the WebSocket upgrade and again for every session whenever it changes.
 *
 *   {}                              any connector with a valid certificate
 *   {connectors: ["site-a", ...]}   only these names; [] admits none
 *
 * New kinds of refusal (e.g. revoked certificate serials) are new optional
 * fields here, each checked by `admissionRefusal`.
 */
import { z } from 'zod';
import { dnsLabelSchema } from './control.js';

/** As many names as TunnelConnection spec.connectors may hold. */
export const MAX_ADMITTED_CONNECTORS = 256;

export interface Admission {
  /** Connector names admitted; undefined = any connector with a valid certificate. */
  readonly connectors?: readonly string[] | undefined;
}

export const ANY_CONNECTOR: Admission = Object.freeze({});

export const admissionSchema = z.object({
  connectors: z.array(dnsLabelSchema)
    .max(MAX_ADMITTED_CONNECTORS, `must have at most ${MAX_ADMITTED_CONNECTORS} entries`)
    .optional(),
});

/** What a worker knows about a connector that wants to attach (or is attached). */
export interface AdmissionCandidate {
  connector: string;
  /** Hex serial of its client certificate (for revocation by serial). */
  certificateSerial: string;
}

export interface AdmissionRefusal {
  code: 'CONNECTOR_NOT_ALLOWED';
  message: string;
}

/** Why `candidate` may not attach under `admission`, or undefined when it may. */
export function admissionRefusal(admission: Admission, candidate: AdmissionCandidate): AdmissionRefusal | undefined {
  const names = admission.connectors;
  if (names === undefined || names.includes(candidate.connector)) return undefined;
  return {
    code: 'CONNECTOR_NOT_ALLOWED',
    message: names.length === 0
      ? `connector "${candidate.connector}" is not admitted: the connection admits no connector (spec.connectors is empty)`
      : `connector "${candidate.connector}" is not in the connection's list of connectors (spec.connectors)`,
  };
}

/** spec.connectors as an Admission: unset admits any connector, a list (even empty) only its names. */
export function admissionFromList(connectors: readonly string[] | undefined): Admission {
  return connectors === undefined ? ANY_CONNECTOR : { connectors: [...new Set(connectors)].sort() };
}

export function sameAdmission(a: Admission, b: Admission): boolean {
  if (a.connectors === undefined || b.connectors === undefined) return a.connectors === b.connectors;
  const x = [...a.connectors].sort();
  const y = [...b.connectors].sort();
  return x.length === y.length && x.every((n, i) => n === y[i]);
}

/** For logs and audit lines: "any" or the names. */
export function describeAdmission(a: Admission): string {
  if (a.connectors === undefined) return 'any connector with a valid certificate';
  return a.connectors.length === 0 ? 'no connector' : `connectors ${a.connectors.join(', ')}`;
}
