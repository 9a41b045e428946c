/**
 * What keeps the operator from working, and how to fix it: a missing
 * namespace, missing CRDs, RBAC that forbids what it needs. Each part of the
 * start-up (informers, the Lease, the report TLS Secret, the permission check)
 * reports its current problem, or none, under its own source; the board logs
 * once when a source's problem appears, changes or goes away (never once per
 * retry), and /readyz answers 503 with the list.
 */
import type { Logger } from 'pino';
import { apiErrorMessage, statusCode } from './api.js';

/** Stable codes (also the label of underpass_operator_problems). */
export const PROBLEM_CODES = ['NamespaceMissing', 'CrdMissing', 'Forbidden', 'ApiError'] as const;
export type ProblemCode = (typeof PROBLEM_CODES)[number];

export interface Problem {
  code: ProblemCode;
  /** What is wrong and the fix, in one line. */
  message: string;
}

/** One API request the operator makes: what the messages name. */
export interface Request {
  verb: string;
  /** plural.group, e.g. "leases.coordination.k8s.io" (core resources without a group). */
  resource: string;
  /** Unset: cluster-wide (all namespaces). */
  namespace?: string;
  /** The resource is one of our CRDs: a 404 (not about a namespace) means it is not installed. */
  crd?: boolean;
}

export const RBAC_FIX = 'apply operator/rbac/ or the underpass-operator chart';
export const CRD_FIX = 'kubectl apply -f crds/ (or install the underpass-operator chart)';

export function where(namespace: string | undefined): string {
  return namespace ? `in namespace ${namespace}` : 'in all namespaces';
}

export function namespaceMissing(namespace: string): Problem {
  return {
    code: 'NamespaceMissing',
    message: `namespace ${namespace} does not exist: create it (kubectl create namespace ${namespace}) or set --pod-namespace (POD_NAMESPACE) to the namespace the operator runs in`,
  };
}

export function crdMissing(resource: string): Problem {
  return { code: 'CrdMissing', message: `CRD ${resource} is not installed: ${CRD_FIX}` };
}

export function forbidden(requests: readonly Request[], detail?: string): Problem {
  // "create/delete deployments.apps, get services in all namespaces; get leases... in namespace x"
  const places = new Map<string, Map<string, string[]>>();
  for (const r of requests) {
    const place = where(r.namespace);
    const resources = places.get(place) ?? new Map<string, string[]>();
    resources.set(r.resource, [...(resources.get(r.resource) ?? []), r.verb]);
    places.set(place, resources);
  }
  const what = [...places].map(([place, resources]) => `${[...resources].map(([resource, verbs]) => `${verbs.join('/')} ${resource}`).join(', ')} ${place}`).join('; ');
  return { code: 'Forbidden', message: `forbidden: ${what}: ${RBAC_FIX}${detail ? ` (${detail})` : ''}` };
}

/**
 * The problem a failed request shows, or undefined when the failure is no
 * problem of the installation (a lost optimistic-concurrency race).
 */
export function problemOf(err: unknown, req: Request): Problem | undefined {
  const api = apiCause(err);
  const code = statusCode(api);
  if (code === 409) return undefined;
  if (code === 403) return forbidden([req], apiErrorMessage(api));
  if (code === 404) {
    const missing = missingObject(api);
    if (missing?.kind === 'namespaces' && missing.name) return namespaceMissing(missing.name);
    if (req.crd) return crdMissing(req.resource);
  }
  return { code: 'ApiError', message: `cannot ${req.verb} ${req.resource} ${where(req.namespace)}: ${apiErrorMessage(api)}` };
}

/** The API error inside wrappers (`{ cause }` chains), or the error itself. */
function apiCause(err: unknown): unknown {
  let e: unknown = err;
  for (let i = 0; i < 8 && e; i++) {
    if (statusCode(e) !== undefined) return e;
    e = (e as { cause?: unknown }).cause;
  }
  return err;
}

/** The `details` of a NotFound Status: which object is missing. */
function missingObject(err: unknown): { kind?: string; name?: string } | undefined {
  let body = (err as { body?: unknown }).body;
  if (typeof body === 'string') {
    try {
      body = JSON.parse(body);
    } catch {
      return undefined;
    }
  }
  return (body as { details?: { kind?: string; name?: string } } | undefined)?.details;
}

export class ProblemBoard {
  readonly #log: Logger;
  readonly #problems = new Map<string, Problem>();
  readonly #onChange: (() => void) | undefined;

  constructor(logger: Logger, onChange?: () => void) {
    this.#log = logger;
    this.#onChange = onChange;
  }

  /** Sets (or clears, with undefined) the problem of one source; logs only when it changed. */
  set(source: string, problem: Problem | undefined): void {
    const before = this.#problems.get(source);
    if (before?.code === problem?.code && before?.message === problem?.message) return;
    if (problem) {
      this.#problems.set(source, problem);
      this.#log.error({ source, code: problem.code }, problem.message);
    } else {
      this.#problems.delete(source);
      this.#log.info({ source, code: before!.code }, `resolved: ${before!.message}`);
    }
    this.#onChange?.();
  }

  /** Drops a source's problem that no longer applies (not fixed: e.g. a leader-only step on a standby). */
  withdraw(source: string, why: string): void {
    const before = this.#problems.get(source);
    if (!before) return;
    this.#problems.delete(source);
    this.#log.info({ source, code: before.code }, `${why}; no longer reported: ${before.message}`);
    this.#onChange?.();
  }

  /** Current problems, one per source, deduplicated by message (two informers may lack one CRD). */
  get list(): Problem[] {
    const seen = new Set<string>();
    return [...this.#problems.values()].filter((p) => !seen.has(p.message) && seen.add(p.message));
  }

  count(code: ProblemCode): number {
    return this.list.filter((p) => p.code === code).length;
  }
}
