/**
 * Which of a TunnelConnection's spec.worker settings the operator honours.
 * Whoever may edit a TunnelConnection would otherwise choose what runs in the
 * worker pods (image) and where (tolerations, nodeSelector): that is the
 * cluster admin's decision. Two layers, both from the operator chart's
 * `workerOverrides` values:
 *  - a ValidatingAdmissionPolicy refuses a TunnelConnection that sets what is
 *    not allowed (charts/underpass-operator/templates/worker-overrides-policy.yaml);
 *  - the operator ignores what is not allowed here (--worker-overrides,
 *    --worker-image-prefix), for objects written before the policy existed or
 *    where it is not installed, and says so in the condition OverridesAccepted.
 */
import type { TunnelConnection, TunnelConnectionSpec } from './types.js';

export const OVERRIDABLE_FIELDS = ['resources', 'nodeSelector', 'tolerations'] as const;
export type OverridableField = (typeof OVERRIDABLE_FIELDS)[number];

export interface OverridePolicy {
  /** spec.worker fields honoured besides image. */
  fields: readonly OverridableField[];
  /** spec.worker.image is honoured when it starts with one of these ('*': any image); [] = never. */
  imagePrefixes: readonly string[];
}

/** The default: a tenant may size its workers, nothing more. */
export const DEFAULT_OVERRIDE_POLICY: OverridePolicy = { fields: ['resources'], imagePrefixes: [] };

export interface EffectiveWorker {
  /** spec.worker with what is not allowed left out. */
  worker: TunnelConnectionSpec['worker'];
  /** What was left out, as field paths with the reason (for the condition). */
  ignored: string[];
}

export function imageAllowed(image: string, prefixes: readonly string[]): boolean {
  return prefixes.some((p) => p === '*' || image.startsWith(p));
}

export function effectiveWorker(tc: TunnelConnection, policy: OverridePolicy): EffectiveWorker {
  const worker = { ...tc.spec.worker };
  const ignored: string[] = [];
  if (worker.image !== undefined && !imageAllowed(worker.image, policy.imagePrefixes)) {
    ignored.push(`spec.worker.image (${policy.imagePrefixes.length > 0 ? `allowed images start with ${policy.imagePrefixes.join(', ')}` : 'no image override is allowed'})`);
    delete worker.image;
  }
  for (const field of OVERRIDABLE_FIELDS) {
    if (worker[field] !== undefined && !policy.fields.includes(field)) {
      ignored.push(`spec.worker.${field}`);
      delete worker[field];
    }
  }
  return { worker, ignored };
}

/** `tc` with the spec.worker the operator honours (what the Deployment is built from). */
export function withEffectiveWorker(tc: TunnelConnection, effective: EffectiveWorker): TunnelConnection {
  return effective.ignored.length === 0 ? tc : { ...tc, spec: { ...tc.spec, worker: effective.worker } };
}
