/**
 * Create-or-update of owned objects without needless writes: the desired
 * object's hash is stored in an annotation; an object whose annotation
 * matches is left alone (a resync of unchanged objects writes nothing). A
 * change is sent as a JSON merge patch, so fields the API server assigned
 * (clusterIP, nodePorts) are kept.
 */
import { createHash } from 'node:crypto';
import * as k8s from '@kubernetes/client-node';
import { HASH_ANNOTATION } from './names.js';
import { isNotFound, type Kube } from './kube.js';

export type ApplyResult = 'created' | 'updated' | 'unchanged';

export function stableHash(value: unknown): string {
  return createHash('sha256').update(stableJson(value)).digest('hex').slice(0, 32);
}

function stableJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(stableJson).join(',')}]`;
  if (value && typeof value === 'object') {
    return `{${Object.keys(value).sort().filter((k) => (value as Record<string, unknown>)[k] !== undefined)
      .map((k) => `${JSON.stringify(k)}:${stableJson((value as Record<string, unknown>)[k])}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

export class Applier {
  readonly #kube: Kube;
  readonly #objects: k8s.KubernetesObjectApi;

  constructor(kube: Kube) {
    this.#kube = kube;
    this.#objects = k8s.KubernetesObjectApi.makeApiClient(kube.kc);
  }

  /**
   * `live` is the object as the informer cache has it (undefined = absent).
   * The cache may lag behind our own write; a create that finds the object
   * already there is treated as "compare and patch".
   */
  async apply<T extends k8s.KubernetesObject>(desired: T, live: k8s.KubernetesObject | undefined, resource: string): Promise<ApplyResult> {
    const hash = stableHash(desired);
    const body = { ...desired, metadata: { ...desired.metadata, annotations: { ...desired.metadata?.annotations, [HASH_ANNOTATION]: hash } } } as T;
    if (live?.metadata?.annotations?.[HASH_ANNOTATION] === hash) return 'unchanged';
    if (!live) {
      try {
        await this.#kube.write('create', resource, () => this.#objects.create(body));
        return 'created';
      } catch (err) {
        if ((err as { code?: number }).code !== 409) throw err;
      }
    }
    await this.#kube.write('patch', resource, () =>
      this.#objects.patch(body, undefined, undefined, 'underpass-operator', undefined, k8s.PatchStrategy.MergePatch));
    return 'updated';
  }

  /** The live object, or undefined (for kinds without an informer, e.g. OpenShift Routes). */
  async read(obj: { apiVersion: string; kind: string; metadata: { name: string; namespace: string } }): Promise<k8s.KubernetesObject | undefined> {
    try {
      return await this.#objects.read(obj as never);
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  async remove(obj: { apiVersion: string; kind: string; metadata: { name: string; namespace: string } }, resource: string): Promise<boolean> {
    try {
      await this.#kube.write('delete', resource, () => this.#objects.delete(obj as k8s.KubernetesObject));
      return true;
    } catch (err) {
      if (isNotFound(err)) return false;
      throw err;
    }
  }
}
