/**
 * A connector pod's state (key, certificate, CA certificates) kept in a Secret
 * of its own, so a restart does not enroll again (docs/connector-lifecycle.md,
 * "In a peer cluster"). The state directory (an emptyDir) is the working copy;
 * the Secret is the durable one: restored into the directory at start, saved
 * after enrollment and after every renewal. The pod's ServiceAccount may only
 * get and update that one Secret (the chart's Role, by name); the chart
 * creates it empty, since RBAC cannot limit create by name.
 *
 * Replicas of one connector share the Secret. Each renews on its own (its own
 * key), so each save compares: the Secret keeps the pair that expires later,
 * and a replica that has not renewed yet (or saves a new trust bundle) never
 * puts its older pair over one another replica renewed; `ca.crt`, the same
 * for every replica, follows the latest save. The read and the write are one
 * step under the Secret's resourceVersion (409: read again, compare again).
 */
import { X509Certificate } from 'node:crypto';
import { access, mkdir, readFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import * as k8s from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { errorMessage, UnderpassError } from '../tunnel/errors.js';
import type { TlsFiles } from '../tunnel/transport/tls-files.js';
import { replaceFile } from './credentials.js';

const KEYS = { cert: 'tls.crt', key: 'tls.key', ca: 'ca.crt' } as const;

export interface StateSecretOptions {
  name: string;
  /** Default: the pod's own namespace. */
  namespace?: string;
  /** Default: the in-cluster ServiceAccount. */
  kubeconfig?: string;
  files: TlsFiles;
  log: Logger;
}

export class StateSecret {
  readonly #o: StateSecretOptions;
  readonly #core: k8s.CoreV1Api;
  readonly #namespace: Promise<string>;

  constructor(o: StateSecretOptions) {
    this.#o = o;
    const kc = new k8s.KubeConfig();
    if (o.kubeconfig) kc.loadFromFile(o.kubeconfig);
    else kc.loadFromCluster();
    this.#core = kc.makeApiClient(k8s.CoreV1Api);
    this.#namespace = o.namespace ? Promise.resolve(o.namespace)
      : readFile('/var/run/secrets/kubernetes.io/serviceaccount/namespace', 'utf8').then((s) => s.trim());
  }

  get where(): string {
    return `Secret ${this.#o.namespace ?? '(own namespace)'}/${this.#o.name}`;
  }

  /** Fills the state directory from the Secret when it holds a pair and the directory does not. True when a certificate is there now. */
  async restore(): Promise<boolean> {
    if (await exists(this.#o.files.cert)) return true;
    const data = (await this.#read()).data ?? {};
    if (!data[KEYS.cert] || !data[KEYS.key] || !data[KEYS.ca]) return false;
    const text = (k: string): string => Buffer.from(data[k]!, 'base64').toString('utf8');
    await mkdir(dirname(this.#o.files.key), { recursive: true, mode: 0o700 });
    await replaceFile(this.#o.files.key, text(KEYS.key), 0o600);
    await replaceFile(this.#o.files.cert, text(KEYS.cert), 0o644);
    await replaceFile(this.#o.files.ca, text(KEYS.ca), 0o644);
    this.#o.log.info({ secret: this.#o.name }, `restored this connector's certificate from ${this.where}`);
    return true;
  }

  /** Saves the state directory into the Secret (after enrollment, renewal, a new trust bundle). */
  async save(): Promise<void> {
    const [cert, key, ca] = await Promise.all([readFile(this.#o.files.cert), readFile(this.#o.files.key), readFile(this.#o.files.ca)]);
    for (let attempt = 1; ; attempt++) {
      const secret = await this.#read();
      const stored = secret.data?.[KEYS.cert] && secret.data[KEYS.key] ? Buffer.from(secret.data[KEYS.cert], 'base64').toString('utf8') : undefined;
      const keep = laterPair(stored, cert.toString('utf8')) === 'stored';
      if (keep) this.#o.log.info({ secret: this.#o.name }, `${this.where} holds a certificate that expires later (another replica renewed): keeping it, saving only the CA certificates`);
      const pair: Record<string, string> = keep ? {} : { [KEYS.cert]: cert.toString('base64'), [KEYS.key]: key.toString('base64') };
      const body: k8s.V1Secret = { ...secret, data: { ...secret.data, ...pair, [KEYS.ca]: ca.toString('base64') } };
      try {
        await this.#core.replaceNamespacedSecret({ name: this.#o.name, namespace: await this.#namespace, body });
        return;
      } catch (err) {
        if ((err as { code?: number }).code !== 409 || attempt >= 5) {
          throw new UnderpassError('ERR_STATE_SECRET', `cannot update ${this.where}: ${errorMessage(err)}`, { cause: err });
        }
      }
    }
  }

  async #read(): Promise<k8s.V1Secret> {
    try {
      return await this.#core.readNamespacedSecret({ name: this.#o.name, namespace: await this.#namespace });
    } catch (err) {
      throw new UnderpassError('ERR_STATE_SECRET', `cannot read ${this.where}: ${errorMessage(err)} (the chart creates it; the pod's Role allows get and update on it only)`, { cause: err });
    }
  }
}

async function exists(file: string): Promise<boolean> {
  return access(file).then(() => true, () => false);
}

/**
 * Which certificate (and so which key) the shared Secret keeps: the stored
 * one when it expires later than ours, else ours (also when nothing, or
 * nothing readable, is stored).
 */
export function laterPair(storedPem: string | undefined, oursPem: string): 'stored' | 'ours' {
  if (!storedPem) return 'ours';
  let stored: number;
  try {
    stored = new X509Certificate(storedPem).validToDate.getTime();
  } catch {
    return 'ours';
  }
  return stored > new X509Certificate(oursPem).validToDate.getTime() ? 'stored' : 'ours';
}
