/**
 * What the kubelet does for a worker pod's volumes, for tests without a
 * kubelet: materialise a ConfigMap and a Secret as files (config/ and tls/
 * beside each other, as the Deployment mounts them) and keep them in sync,
 * swapping files atomically like the kubelet's symlink flip.
 */
import { mkdir, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Kube } from '../../operator/kube.js';

export class PodFiles {
  readonly configDir: string;
  readonly tlsDir: string;
  readonly #timer: NodeJS.Timeout;
  #last = '';
  syncs = 0;

  private constructor(readonly dir: string, readonly kube: Kube, readonly namespace: string, readonly configMap: string, readonly secret: string, intervalMs: number) {
    this.configDir = path.join(dir, 'config');
    this.tlsDir = path.join(dir, 'tls');
    this.#timer = setInterval(() => void this.sync().catch(() => undefined), intervalMs);
  }

  static async start(dir: string, kube: Kube, namespace: string, configMap: string, secret: string, intervalMs = 500): Promise<PodFiles> {
    const p = new PodFiles(dir, kube, namespace, configMap, secret, intervalMs);
    await mkdir(p.configDir, { recursive: true });
    await mkdir(p.tlsDir, { recursive: true });
    await p.sync();
    return p;
  }

  get configFile(): string {
    return path.join(this.configDir, 'worker.yaml');
  }

  async sync(): Promise<void> {
    const cm = await this.kube.core.readNamespacedConfigMap({ name: this.configMap, namespace: this.namespace });
    const secret = await this.kube.core.readNamespacedSecret({ name: this.secret, namespace: this.namespace });
    const stamp = `${cm.metadata?.resourceVersion}/${secret.metadata?.resourceVersion}`;
    if (stamp === this.#last) return;
    for (const [k, v] of Object.entries(secret.data ?? {})) await atomicWrite(path.join(this.tlsDir, k), Buffer.from(v, 'base64'));
    for (const [k, v] of Object.entries(cm.data ?? {})) await atomicWrite(path.join(this.configDir, k), Buffer.from(v));
    this.#last = stamp;
    this.syncs++;
  }

  stop(): void {
    clearInterval(this.#timer);
  }
}

async function atomicWrite(file: string, data: Buffer): Promise<void> {
  const tmp = `${file}.tmp-${process.pid}`;
  await writeFile(tmp, data, { mode: 0o600 });
  await rename(tmp, file);
}
