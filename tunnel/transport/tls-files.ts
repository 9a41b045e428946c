/**
 * TLS material from files, re-read when the files change, so renewed
 * certificates take effect without a restart and without dropping sessions
 * (Kubernetes updates mounted Secrets by swapping a symlink, so we poll
 * content, not inotify).
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { DEFAULT_CIPHERS } from 'node:tls';
import { UnderpassError } from '../errors.js';

/**
 * The tunnel's cipher preference: Node's defaults with TLS_AES_128_GCM_SHA256 first. Node puts
 * AES-256-GCM first; AES-128-GCM is TLS 1.3's mandatory suite, Go's and the browsers' first choice,
 * and about 15 % cheaper per byte with AES-NI, the largest single cost of a bulk transfer after
 * copies (docs/benchmarks.md). The worker honours its own order, so an older connector that offers
 * Node's default order gets it too; nothing is removed from the list, so every pairing of versions
 * still finds a suite.
 */
export const TUNNEL_CIPHERS = ['TLS_AES_128_GCM_SHA256', ...DEFAULT_CIPHERS.split(':').filter((c) => c !== 'TLS_AES_128_GCM_SHA256')].join(':');

export interface TlsFiles {
  cert: string;
  key: string;
  ca: string;
}

export interface TlsMaterial {
  cert: Buffer;
  key: Buffer;
  ca: Buffer;
  /** Changes whenever any of the three files changes. */
  fingerprint: string;
}

export async function readTlsFiles(files: TlsFiles): Promise<TlsMaterial> {
  const read = async (field: keyof TlsFiles): Promise<Buffer> => {
    try {
      return await readFile(files[field]);
    } catch (err) {
      throw new UnderpassError('ERR_TLS_FILES', `cannot read tls.${field} (${files[field]}): ${(err as Error).message}`, { cause: err });
    }
  };
  const [cert, key, ca] = await Promise.all([read('cert'), read('key'), read('ca')]);
  const fingerprint = createHash('sha256').update(cert).update(key).update(ca).digest('hex');
  return { cert, key, ca, fingerprint };
}

/**
 * Polls the files; calls `onChange` with new material after it was read
 * completely and differs. A half-written update (unreadable, or a cert that
 * does not match its key) is reported through `onError` and retried.
 */
export class TlsFileWatcher {
  readonly #files: TlsFiles;
  readonly #timer: NodeJS.Timeout;
  #current: string;
  #busy = false;

  constructor(
    files: TlsFiles,
    initial: TlsMaterial,
    intervalMs: number,
    onChange: (m: TlsMaterial) => void,
    onError: (err: Error) => void,
  ) {
    this.#files = files;
    this.#current = initial.fingerprint;
    this.#timer = setInterval(() => {
      if (this.#busy) return;
      this.#busy = true;
      readTlsFiles(this.#files)
        .then((m) => {
          if (m.fingerprint === this.#current) return;
          onChange(m); // may throw if the pair is inconsistent; then we try again next tick
          this.#current = m.fingerprint;
        })
        .catch(onError)
        .finally(() => (this.#busy = false));
    }, intervalMs);
    this.#timer.unref();
  }

  stop(): void {
    clearInterval(this.#timer);
  }
}
