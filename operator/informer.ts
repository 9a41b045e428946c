/**
 * An informer that never gives up: client-node's ListWatch relists on 410
 * Gone by itself; on any other error we restart it with backoff (never exit
 * from a watch). Handlers only enqueue keys (cert-manager style). It counts
 * as synced only after a start without error (client-node's start() also
 * resolves when its list failed), and each outcome goes to `report`, so a
 * missing CRD or a forbidden list is reported once, not logged per retry.
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
  /** Called with the error of a failed list or watch, and with undefined once a (re)start got through. */
  report?: (err: unknown) => void;
}

export class Informer<T extends k8s.KubernetesObject> {
  readonly #opts: InformerOptions<T>;
  readonly #informer: k8s.Informer<T> & k8s.ObjectCache<T>;
  readonly #backoff = new Backoff({ initialMs: 500, maxMs: 30_000 });
  #stopped = false;
  #synced = false;
  #syncWaiters: Array<() => void> = [];
  #restartTimer: NodeJS.Timeout | undefined;
  #errors = 0;

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
    await this.#run();
  }

  /** One (re)start: list when needed, then watch. Failures arrive through the 'error' event. */
  async #run(): Promise<void> {
    const errorsBefore = this.#errors;
    try {
      await this.#informer.start();
    } catch (err) {
      this.#onError(err);
      return;
    }
    if (this.#errors !== errorsBefore || this.#stopped) return;
    this.#markSynced();
    this.#opts.report?.(undefined);
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
    this.#errors++;
    const delay = this.#backoff.next();
    this.#opts.report?.(err);
    // With a reporter the problem is logged once by whoever receives it; the retries only at debug.
    this.#opts.logger[this.#opts.report ? 'debug' : 'warn']({ informer: this.#opts.name, err: apiErrorMessage(err), delayMs: delay }, `watch of ${this.#opts.name} failed (${apiErrorMessage(err)}); restarting in ${delay} ms`);
    clearTimeout(this.#restartTimer);
    this.#restartTimer = setTimeout(() => {
      if (!this.#stopped) void this.#run();
    }, delay);
  }
}
