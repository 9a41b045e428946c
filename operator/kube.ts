/**
 * Kubernetes API access for the operator. Every write goes through `Kube`
 * so that it is counted (underpass_operator_api_writes_total), which is how
 * tests prove that a resync of unchanged objects writes nothing.
 */
import * as k8s from '@kubernetes/client-node';
import { UnderpassError } from '../tunnel/errors.js';

export const GROUP = 'underpass.dev';
export const VERSION = 'v1alpha1';

export type WriteVerb = 'create' | 'update' | 'patch' | 'delete';
export type WriteListener = (verb: WriteVerb, resource: string) => void;

export function loadKubeConfig(file?: string): k8s.KubeConfig {
  const kc = new k8s.KubeConfig();
  try {
    if (file) kc.loadFromFile(file);
    else kc.loadFromDefault();
  } catch (err) {
    throw new UnderpassError('ERR_KUBECONFIG', `cannot load kubeconfig${file ? ` ${file}` : ''}: ${(err as Error).message}`, { cause: err });
  }
  if (!kc.getCurrentCluster()) throw new UnderpassError('ERR_KUBECONFIG', `kubeconfig${file ? ` ${file}` : ''} has no current cluster`);
  return kc;
}

export class Kube {
  readonly kc: k8s.KubeConfig;
  readonly core: k8s.CoreV1Api;
  readonly apps: k8s.AppsV1Api;
  readonly networking: k8s.NetworkingV1Api;
  readonly coordination: k8s.CoordinationV1Api;
  readonly custom: k8s.CustomObjectsApi;
  readonly apis: k8s.ApisApi;
  readonly #listeners: WriteListener[] = [];

  constructor(kc: k8s.KubeConfig) {
    this.kc = kc;
    this.core = kc.makeApiClient(k8s.CoreV1Api);
    this.apps = kc.makeApiClient(k8s.AppsV1Api);
    this.networking = kc.makeApiClient(k8s.NetworkingV1Api);
    this.coordination = kc.makeApiClient(k8s.CoordinationV1Api);
    this.custom = kc.makeApiClient(k8s.CustomObjectsApi);
    this.apis = kc.makeApiClient(k8s.ApisApi);
  }

  onWrite(listener: WriteListener): void {
    this.#listeners.push(listener);
  }

  /** Runs a write call and counts it (also when it fails: the request was made). */
  async write<T>(verb: WriteVerb, resource: string, call: () => Promise<T>): Promise<T> {
    for (const l of this.#listeners) l(verb, resource);
    return call();
  }
}

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
