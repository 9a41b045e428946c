/**
 * An informer that never gives up: client-node's ListWatch relists on 410
 * Gone by itself; on any other error we restart it with backoff (never exit
 * from a watch). Handlers only enqueue keys (cert-manager style).
 */
import * as k8s from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { Backoff } from '../tunnel/backoff.js';
import { apiErrorMessage } from './kube.js';

export interface InformerOptions<T extends k8s.KubernetesObject> {
  kc: k8s.KubeConfig;
  /** Watch path, e.g. /apis/apps/v1/deployments or /api/v1/namespaces/x/secrets. */
  path: string;
  list: () => Promise<k8s.KubernetesListObject<T>>;
  labelSelector?: string;
  onChange: (obj: T, kind: 'add' | 'update' | 'delete') => void;
  logger: Logger;
  name: string;
}

export class Informer<T extends k8s.KubernetesObject> {
  readonly #opts: InformerOptions<T>;
  readonly #informer: k8s.Informer<T> & k8s.ObjectCache<T>;
  readonly #backoff = new Backoff({ initialMs: 500, maxMs: 30_000 });
  #stopped = false;
  #synced = false;
  #syncWaiters: Array<() => void> = [];
  #restartTimer: NodeJS.Timeout | undefined;

  constructor(opts: InformerOptions<T>) {
    this.#opts = opts;
    this.#informer = k8s.makeInformer<T>(opts.kc, opts.path, opts.list, opts.labelSelector);
    this.#informer.on('add', (o) => this.#changed(o, 'add'));
    this.#informer.on('update', (o) => this.#changed(o, 'update'));
    this.#informer.on('delete', (o) => this.#changed(o, 'delete'));
    this.#informer.on('connect', () => this.#backoff.reset());
    this.#informer.on('error', (err) => this.#onError(err));
  }

  async start(): Promise<void> {
    this.#stopped = false;
    try {
      await this.#informer.start();
      this.#markSynced();
    } catch (err) {
      this.#onError(err);
    }
  }

  /** Resolves after the first successful list. */
  synced(): Promise<void> {
    if (this.#synced) return Promise.resolve();
    return new Promise((resolve) => this.#syncWaiters.push(resolve));
  }

  list(namespace?: string): readonly T[] {
    return this.#informer.list(namespace);
  }

  get(name: string, namespace?: string): T | undefined {
    return this.#informer.get(name, namespace);
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#restartTimer);
    await this.#informer.stop();
  }

  #markSynced(): void {
    if (this.#synced) return;
    this.#synced = true;
    for (const w of this.#syncWaiters.splice(0)) w();
  }

  #changed(obj: T, kind: 'add' | 'update' | 'delete'): void {
    this.#markSynced();
    this.#opts.onChange(obj, kind);
  }

  #onError(err: unknown): void {
    if (this.#stopped) return;
    const delay = this.#backoff.next();
    this.#opts.logger.warn({ informer: this.#opts.name, err: apiErrorMessage(err), delayMs: delay }, `watch of ${this.#opts.name} failed (${apiErrorMessage(err)}); restarting in ${delay} ms`);
    clearTimeout(this.#restartTimer);
    this.#restartTimer = setTimeout(() => {
      if (this.#stopped) return;
      this.#informer.start().then(() => this.#markSynced(), (e: unknown) => this.#onError(e));
    }, delay);
  }
}
