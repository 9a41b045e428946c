/** Kubernetes Events for important transitions (never for steady state, so resyncs stay write-free). */
import type * as k8s from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { apiErrorMessage, type Kube } from './kube.js';

export interface EventTarget {
  apiVersion?: string;
  kind?: string;
  metadata: { name: string; namespace: string; uid?: string };
}

export class EventRecorder {
  readonly #kube: Kube;
  readonly #log: Logger;
  readonly #identity: string;

  constructor(kube: Kube, logger: Logger, identity: string) {
    this.#kube = kube;
    this.#log = logger;
    this.#identity = identity;
  }

  async record(obj: EventTarget, type: 'Normal' | 'Warning', reason: string, message: string): Promise<void> {
    const now = new Date();
    const body: k8s.CoreV1Event = {
      apiVersion: 'v1',
      kind: 'Event',
      metadata: { name: `${obj.metadata.name}.${now.getTime().toString(16)}${Math.floor(Math.random() * 0xfff).toString(16)}`, namespace: obj.metadata.namespace },
      involvedObject: { apiVersion: obj.apiVersion, kind: obj.kind, name: obj.metadata.name, namespace: obj.metadata.namespace, uid: obj.metadata.uid },
      reason,
      message: message.slice(0, 1024),
      type,
      count: 1,
      firstTimestamp: now,
      lastTimestamp: now,
      source: { component: 'underpass-operator' },
      reportingComponent: 'underpass.dev/operator',
      reportingInstance: this.#identity,
    };
    this.#log.info({ object: `${obj.kind}/${obj.metadata.namespace}/${obj.metadata.name}`, reason, type }, `event ${reason}: ${message}`);
    try {
      await this.#kube.write('create', 'events', () => this.#kube.core.createNamespacedEvent({ namespace: obj.metadata.namespace, body }));
    } catch (err) {
      this.#log.warn({ err: apiErrorMessage(err) }, 'could not record an event');
    }
  }
}
