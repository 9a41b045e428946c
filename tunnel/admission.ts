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
 *   {revokedSerials: ["5A0C…"]}     certificates refused by serial (revoked connectors,
 *                                   so a copied key is useless), until they expire
 *   {revokedConnectors: ["site-b"]} names refused while their TunnelConnector says revoked
 *
 * New kinds of refusal are new optional fields here, each checked by
 * `admissionRefusal`; a worker that does not know a field ignores it. The
 * operator writes the same list into the worker's ConfigMap (`connectors:`,
 * `revoked:`), so a worker enforces revocations from start-up; see
 * `admissionInForce` for how the two sources combine.
 */
import { z } from 'zod';
import { dnsLabelSchema } from './control.js';

/** As many names as TunnelConnection spec.connectors may hold. */
export const MAX_ADMITTED_CONNECTORS = 256;
/** Revoked certificates not expired yet, per connection (about 35 bytes each in an answer). */
export const MAX_REVOKED_SERIALS = 4096;

export interface Admission {
  /** Connector names admitted; undefined = any connector with a valid certificate. */
  readonly connectors?: readonly string[] | undefined;
  /** Certificate serials refused (normalised: uppercase hex, no leading zeros). */
  readonly revokedSerials?: readonly string[] | undefined;
  /** Connector names refused (their TunnelConnector is marked revoked). */
  readonly revokedConnectors?: readonly string[] | undefined;
}

/** A serial as Node prints it (uppercase hex) without leading zeros, whatever the source's spelling. */
export function normalizeSerial(serial: string): string {
  return serial.toUpperCase().replace(/^0+(?=.)/, '');
}

export const ANY_CONNECTOR: Admission = Object.freeze({});

export const admissionSchema = z.object({
  connectors: z.array(dnsLabelSchema)
    .max(MAX_ADMITTED_CONNECTORS, `must have at most ${MAX_ADMITTED_CONNECTORS} entries`)
    .optional(),
  revokedSerials: z.array(z.string().min(1).max(64).regex(/^[0-9A-Fa-f]+$/, 'must be hex'))
    .max(MAX_REVOKED_SERIALS, `must have at most ${MAX_REVOKED_SERIALS} entries`)
    .optional(),
  revokedConnectors: z.array(dnsLabelSchema)
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
  code: 'CONNECTOR_NOT_ALLOWED' | 'CERTIFICATE_REVOKED' | 'CONNECTOR_REVOKED';
  message: string;
}

/** Why `candidate` may not attach under `admission`, or undefined when it may. */
export function admissionRefusal(admission: Admission, candidate: AdmissionCandidate): AdmissionRefusal | undefined {
  if (candidate.certificateSerial && admission.revokedSerials?.some((s) => normalizeSerial(s) === normalizeSerial(candidate.certificateSerial))) {
    return { code: 'CERTIFICATE_REVOKED', message: `the certificate of connector "${candidate.connector}" (serial ${normalizeSerial(candidate.certificateSerial)}) is revoked` };
  }
  if (admission.revokedConnectors?.includes(candidate.connector)) {
    return { code: 'CONNECTOR_REVOKED', message: `connector "${candidate.connector}" is revoked (its TunnelConnector says spec.revoked: true)` };
  }
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

/**
 * What a worker enforces from its two sources: the operator's last answer
 * (undefined before the first one) and its config file (the ConfigMap the
 * operator also writes). Who may attach comes from the answer once there is
 * one; revocations from both, because a revocation only ever adds refusals
 * until the certificate expires: it takes effect from start-up, before the
 * first answer, and still reaches a worker that cannot reach the operator but
 * sees its ConfigMap change.
 */
export function admissionInForce(file: Admission, operator: Admission | undefined): Admission {
  if (!operator) return file;
  const serials = union(operator.revokedSerials?.map(normalizeSerial), file.revokedSerials?.map(normalizeSerial));
  const names = union(operator.revokedConnectors, file.revokedConnectors);
  return {
    ...(operator.connectors !== undefined ? { connectors: operator.connectors } : {}),
    ...(serials ? { revokedSerials: serials.slice(0, MAX_REVOKED_SERIALS) } : {}),
    ...(names ? { revokedConnectors: names.slice(0, MAX_ADMITTED_CONNECTORS) } : {}),
  };
}

function union(a: readonly string[] | undefined, b: readonly string[] | undefined): string[] | undefined {
  if (!a?.length && !b?.length) return undefined;
  return [...new Set([...(a ?? []), ...(b ?? [])])].sort();
}

export function sameAdmission(a: Admission, b: Admission): boolean {
  return sameList(a.connectors, b.connectors) && sameList(a.revokedSerials?.map(normalizeSerial), b.revokedSerials?.map(normalizeSerial))
    && sameList(a.revokedConnectors, b.revokedConnectors);
}

function sameList(a: readonly string[] | undefined, b: readonly string[] | undefined): boolean {
  if (a === undefined || b === undefined) return a === b;
  const x = [...a].sort();
  const y = [...b].sort();
  return x.length === y.length && x.every((n, i) => n === y[i]);
}

/** For logs and audit lines: "any" or the names. */
export function describeAdmission(a: Admission): string {
  const who = a.connectors === undefined ? 'any connector with a valid certificate'
    : a.connectors.length === 0 ? 'no connector' : `connectors ${a.connectors.join(', ')}`;
  const revoked = (a.revokedSerials?.length ?? 0) + (a.revokedConnectors?.length ?? 0);
  return revoked > 0 ? `${who}; revoked: ${[...(a.revokedConnectors ?? []), ...(a.revokedSerials?.length ? [`${a.revokedSerials.length} certificate(s)`] : [])].join(', ')}` : who;
}
