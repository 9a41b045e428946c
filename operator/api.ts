/**
 * Kubernetes API constants and error helpers that need no client library, so
 * commands that never talk to the API do not load @kubernetes/client-node.
 */
export const GROUP = 'underpass.dev';
export const VERSION = 'v1alpha1';

export function statusCode(err: unknown): number | undefined {
  if (err && typeof err === 'object') {
    const e = err as { code?: unknown; statusCode?: unknown };
    if (typeof e.code === 'number') return e.code;
    if (typeof e.statusCode === 'number') return e.statusCode;
  }
  return undefined;
}

export const isNotFound = (err: unknown): boolean => statusCode(err) === 404;
export const isConflict = (err: unknown): boolean => statusCode(err) === 409;
export const isAlreadyExists = (err: unknown): boolean => statusCode(err) === 409;

/** A readable one-line message from a client-node ApiException. */
export function apiErrorMessage(err: unknown): string {
  const e = err as { code?: number; body?: unknown; message?: string };
  let body = e.body;
  if (typeof body === 'string') {
    try {
      body = JSON.parse(body);
    } catch {
      // keep the string
    }
  }
  const message = (body as { message?: string } | undefined)?.message;
  if (message) return `${e.code ?? ''} ${message}`.trim();
  return (e.message ?? String(err)).split('\n')[0]!;
}

export interface ObjectRef {
  namespace: string;
  name: string;
}

export function keyOf(ref: ObjectRef): string {
  return `${ref.namespace}/${ref.name}`;
}

export function refOf(key: string): ObjectRef {
  const i = key.indexOf('/');
  return { namespace: key.slice(0, i), name: key.slice(i + 1) };
}
