/**
 * Where a connection's CA lives: one Secret per TunnelConnection in the
 * operator's own namespace (issue 15, finding 10), never in the tenant's. A
 * tenant who can read Secrets in its namespace sees what its workers need
 * (`<tc>-worker-tls`: worker certificate, key and the CA certificate) but no
 * CA key, so it cannot mint connector or worker certificates.
 *
 *   Secret <operator ns>/ca.<ns>.<name>.<uid>       (labels name the connection)
 *     ca.crt, ca.key     the connection CA (signs worker and connector certificates)
 *     worker.crt         the worker certificate last written to the tenant (public; the
 *                        operator decides renewal from it without reading tenant Secrets)
 *     worker-ca.crt      the CA certificates written beside it (the trust bundle then)
 *     next.crt, next.key while the CA rotates, first phase: the new CA, trusted, not signing yet
 *     retiring.crt       second phase: the old CA, still trusted, no longer signing
 *     token.key          the key enrollment tokens of this connection are signed with (ES256)
 *     issued.json        connector certificates issued and not expired: [{connector, serial, notAfter}]
 *     revoked.json       the same, revoked (refused by every worker until they expire)
 *   annotation underpass.dev/rotate-ca-handled: the rotate-ca value the last rotation answered
 *
 * The uid in the name keeps a TunnelConnection deleted and created again
 * under the same name from adopting the old CA (its old connector
 * certificates must not attach to the new one). Connections made before this
 * kept `<tc>-ca` in their own namespace: that Secret is adopted once (its CA
 * moves here) and then deleted (`adoptLegacyCA`).
 */
import type * as k8s from '@kubernetes/client-node';
import { UnderpassError } from '../tunnel/errors.js';
import { isNotFound, type Kube } from './kube.js';
import { MANAGED_BY, namesFor } from './names.js';
import type { TunnelConnection } from './types.js';

export const CA_COMPONENT = 'connection-ca';
export const LABEL_COMPONENT = 'underpass.dev/component';
export const LABEL_CONNECTION_NAMESPACE = 'underpass.dev/connection-namespace';
export const LABEL_CONNECTION = 'underpass.dev/connection';
export const LABEL_CONNECTION_UID = 'underpass.dev/connection-uid';
/** The label selector of every connection CA Secret (the operator's informer in its own namespace). */
export const CA_SECRET_SELECTOR = `app.kubernetes.io/managed-by=${MANAGED_BY},${LABEL_COMPONENT}=${CA_COMPONENT}`;

/** What the CA Secret holds, decoded. */
export interface CAState {
  caPem?: string;
  caKeyPem?: string;
  workerCertPem?: string;
  workerTrustPem?: string;
  nextPem?: string;
  nextKeyPem?: string;
  retiringPem?: string;
  tokenKeyPem?: string;
  issuedJson?: string;
  revokedJson?: string;
  /** The value of the TunnelConnection's rotate-ca annotation the last rotation started from. */
  rotateHandled?: string;
}

export const ROTATE_ANNOTATION = 'underpass.dev/rotate-ca';
export const ROTATE_HANDLED_ANNOTATION = 'underpass.dev/rotate-ca-handled';

const KEYS: Array<[keyof CAState, string]> = [
  ['caPem', 'ca.crt'], ['caKeyPem', 'ca.key'], ['workerCertPem', 'worker.crt'], ['workerTrustPem', 'worker-ca.crt'],
  ['nextPem', 'next.crt'], ['nextKeyPem', 'next.key'], ['retiringPem', 'retiring.crt'], ['tokenKeyPem', 'token.key'],
  ['issuedJson', 'issued.json'], ['revokedJson', 'revoked.json'],
];

/** A connector certificate the operator issued (serial normalised, tunnel/admission.ts). */
export interface CertRecord {
  connector: string;
  serial: string;
  notAfter: string;
}

/** issued.json or revoked.json, without the entries that expired by `now`. */
export function certRecords(json: string | undefined, now: Date): CertRecord[] {
  if (!json) return [];
  try {
    const list = JSON.parse(json) as CertRecord[];
    return Array.isArray(list) ? list.filter((r) => typeof r?.serial === 'string' && Date.parse(r.notAfter) > now.getTime()) : [];
  } catch {
    return [];
  }
}

/** The CA certificates the connection trusts: the one that signs first, then the new (rotation, first phase) or the old one (second phase). */
export function trustBundle(state: CAState): string {
  return [state.caPem, state.nextPem, state.retiringPem].filter((p): p is string => Boolean(p)).join('');
}

export function caSecretName(tc: Pick<TunnelConnection, 'metadata'>): string {
  return `ca.${tc.metadata.namespace}.${tc.metadata.name}.${tc.metadata.uid ?? 'no-uid'}`;
}

/** The connection a CA Secret belongs to, from its labels (for the informer's handler). */
export function connectionOfCASecret(secret: k8s.V1Secret): { namespace: string; name: string } | undefined {
  const labels = secret.metadata?.labels ?? {};
  const namespace = labels[LABEL_CONNECTION_NAMESPACE];
  const name = labels[LABEL_CONNECTION];
  return namespace && name ? { namespace, name } : undefined;
}

export function decodeCAState(secret: k8s.V1Secret | undefined): CAState {
  const get = (key: string): string | undefined => {
    const v = secret?.data?.[key];
    return v ? Buffer.from(v, 'base64').toString('utf8') : undefined;
  };
  const state: CAState = {};
  for (const [field, key] of KEYS) {
    const v = get(key);
    if (v) (state as Record<string, string>)[field] = v;
  }
  const handled = secret?.metadata?.annotations?.[ROTATE_HANDLED_ANNOTATION];
  if (handled !== undefined) state.rotateHandled = handled;
  return state;
}

const b64 = (s: string): string => Buffer.from(s).toString('base64');

function encode(state: CAState): Record<string, string> {
  const data: Record<string, string> = {};
  for (const [field, key] of KEYS) {
    const v = state[field];
    if (v) data[key] = b64(v);
  }
  return data;
}

/**
 * Writes the CA Secret: creates it, or replaces its data keeping the
 * resourceVersion it was read at (a concurrent writer makes this a 409, which
 * the reconcile retries with the newer object).
 */
export async function writeCAState(kube: Kube, namespace: string, tc: TunnelConnection, live: k8s.V1Secret | undefined, state: CAState): Promise<k8s.V1Secret> {
  const name = caSecretName(tc);
  const body: k8s.V1Secret = {
    apiVersion: 'v1', kind: 'Secret', type: 'Opaque',
    metadata: {
      name, namespace,
      labels: {
        'app.kubernetes.io/managed-by': MANAGED_BY,
        [LABEL_COMPONENT]: CA_COMPONENT,
        [LABEL_CONNECTION_NAMESPACE]: tc.metadata.namespace,
        [LABEL_CONNECTION]: tc.metadata.name,
        [LABEL_CONNECTION_UID]: tc.metadata.uid ?? '',
      },
      ...(live?.metadata?.resourceVersion ? { resourceVersion: live.metadata.resourceVersion } : {}),
      ...(state.rotateHandled !== undefined ? { annotations: { [ROTATE_HANDLED_ANNOTATION]: state.rotateHandled } } : {}),
    },
    data: encode(state),
  };
  if (!live) return kube.write('create', 'secrets', () => kube.core.createNamespacedSecret({ namespace, body }));
  return kube.write('update', 'secrets', () => kube.core.replaceNamespacedSecret({ name, namespace, body }));
}

/**
 * The CA a connection kept in its own namespace before (`<tc>-ca`), or
 * undefined when there is none. Read by name only once per connection: after
 * adoption the operator never reads it again.
 */
export async function readLegacyCA(kube: Kube, tc: TunnelConnection): Promise<{ caPem: string; caKeyPem: string } | undefined> {
  const name = namesFor(tc.metadata.name).caSecret;
  let secret: k8s.V1Secret;
  try {
    secret = await kube.core.readNamespacedSecret({ name, namespace: tc.metadata.namespace });
  } catch (err) {
    if (isNotFound(err)) return undefined;
    throw new UnderpassError('ERR_CA_MIGRATION', `cannot read the old CA Secret ${tc.metadata.namespace}/${name}: ${(err as Error).message}`, { cause: err });
  }
  const state = decodeCAState(secret);
  if (!state.caPem || !state.caKeyPem) return undefined;
  return { caPem: state.caPem, caKeyPem: state.caKeyPem };
}

/** Deletes the old in-namespace CA Secret after its CA was adopted (404 is fine: already gone). */
export async function deleteLegacyCA(kube: Kube, tc: TunnelConnection): Promise<void> {
  const name = namesFor(tc.metadata.name).caSecret;
  try {
    await kube.write('delete', 'secrets', () => kube.core.deleteNamespacedSecret({ name, namespace: tc.metadata.namespace }));
  } catch (err) {
    if (!isNotFound(err)) throw err;
  }
}
