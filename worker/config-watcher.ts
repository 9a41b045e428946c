/**
 * Re-reads the worker config file when it changes (Kubernetes swaps the
 * symlink of a mounted ConfigMap, so content is polled, not watched) and hands
 * a validated config to `onChange`. An invalid file is reported and ignored:
 * the worker keeps serving the last good config.
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { errorMessage } from '../tunnel/errors.js';
import { loadWorkerConfig, type WorkerConfig } from './config.js';

export interface ConfigWatcherOptions {
  file: string;
  intervalMs: number;
  onChange: (config: WorkerConfig) => Promise<void> | void;
  onInvalid: (message: string) => void;
}

export class ConfigWatcher {
  readonly #opts: ConfigWatcherOptions;
  readonly #timer: NodeJS.Timeout;
  #lastHash: string | undefined;
  #busy = false;

  constructor(opts: ConfigWatcherOptions) {
    this.#opts = opts;
    this.#timer = setInterval(() => void this.check(), opts.intervalMs);
    this.#timer.unref();
  }

  /** Records the current content as applied (call once at start-up). */
  async prime(): Promise<void> {
    this.#lastHash = await this.#hash();
  }

  async check(): Promise<void> {
    if (this.#busy) return;
    this.#busy = true;
    try {
      const hash = await this.#hash();
      if (hash === undefined || hash === this.#lastHash) return;
      this.#lastHash = hash;
      let config: WorkerConfig;
      try {
        config = await loadWorkerConfig(this.#opts.file);
      } catch (err) {
        this.#opts.onInvalid(errorMessage(err));
        return;
      }
      await this.#opts.onChange(config);
    } finally {
      this.#busy = false;
    }
  }

  stop(): void {
    clearInterval(this.#timer);
  }

  async #hash(): Promise<string | undefined> {
    try {
      return createHash('sha256').update(await readFile(this.#opts.file)).digest('hex');
    } catch {
      return undefined; // mid-swap or briefly missing: try again next tick
    }
  }
}
