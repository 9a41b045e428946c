/**
 * TLS material from files, re-read when the files change, so renewed
 * certificates take effect without a restart and without dropping sessions
 * (Kubernetes updates mounted Secrets by swapping a symlink, so we poll
 * content, not inotify).
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { UnderpassError } from '../errors.js';

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
