/**
 * Kubernetes API access for the operator. Every write goes through `Kube`
 * so that it is counted (underpass_operator_api_writes_total), which is how
 * tests prove that a resync of unchanged objects writes nothing.
 */
import * as k8s from '@kubernetes/client-node';
import { UnderpassError } from '../tunnel/errors.js';

export { GROUP, VERSION, statusCode, isNotFound, isConflict, isAlreadyExists, apiErrorMessage, keyOf, refOf, type ObjectRef } from './api.js';

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
  readonly policy: k8s.PolicyV1Api;
  readonly coordination: k8s.CoordinationV1Api;
  readonly custom: k8s.CustomObjectsApi;
  readonly apis: k8s.ApisApi;
  readonly authorization: k8s.AuthorizationV1Api;
  readonly discovery: k8s.DiscoveryV1Api;
  readonly #listeners: WriteListener[] = [];

  constructor(kc: k8s.KubeConfig) {
    this.kc = kc;
    this.core = kc.makeApiClient(k8s.CoreV1Api);
    this.apps = kc.makeApiClient(k8s.AppsV1Api);
    this.networking = kc.makeApiClient(k8s.NetworkingV1Api);
    this.policy = kc.makeApiClient(k8s.PolicyV1Api);
    this.coordination = kc.makeApiClient(k8s.CoordinationV1Api);
    this.custom = kc.makeApiClient(k8s.CustomObjectsApi);
    this.apis = kc.makeApiClient(k8s.ApisApi);
    this.authorization = kc.makeApiClient(k8s.AuthorizationV1Api);
    this.discovery = kc.makeApiClient(k8s.DiscoveryV1Api);
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
