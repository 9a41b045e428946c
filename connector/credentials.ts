/**
 * The connector's certificate, key and trusted CAs, as every new session
 * uses them. They come from the files in `tls` (re-read at each connection, so
 * files an admin replaces take effect without a restart) and are replaced in
 * place by a renewal or a new trust bundle: the new files are written beside
 * the old ones and renamed over them, key first, and the pair in memory is
 * switched at once, so no connection attempt ever sees half of an update
 * (a read that finds a certificate that does not match its key keeps the
 * last good pair).
 */
import { X509Certificate, createPrivateKey, randomBytes } from 'node:crypto';
import { open, rename, unlink } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import type { Logger } from 'pino';
import { errorMessage, UnderpassError } from '../tunnel/errors.js';
import { readTlsFiles, type TlsFiles, type TlsMaterial } from '../tunnel/transport/tls-files.js';

export class Credentials {
  readonly files: TlsFiles;
  /** Called after new files were written (renewal, trust): e.g. save them into the pod's state Secret. */
  onPersisted: (() => Promise<void>) | undefined;
  readonly #log: Logger;
  #last: TlsMaterial | undefined;
  #mismatchLogged = false;

  constructor(files: TlsFiles, log: Logger) {
    this.files = files;
    this.#log = log;
  }

  /** What a new session uses: the files as they are now, unless they hold a pair that does not match. */
  async material(): Promise<TlsMaterial> {
    let read: TlsMaterial;
    try {
      read = await readTlsFiles(this.files);
    } catch (err) {
      if (this.#last) return this.#last;
      throw err;
    }
    if (read.fingerprint === this.#last?.fingerprint) return this.#last;
    if (!pairMatches(read)) {
      if (!this.#last) throw new UnderpassError('ERR_CONNECTOR_CERT', `tls.cert (${this.files.cert}) does not belong to the key in tls.key (${this.files.key})`);
      if (!this.#mismatchLogged) this.#log.warn({ cert: this.files.cert }, 'tls.cert and tls.key do not match (being replaced?); using the previous pair');
      this.#mismatchLogged = true;
      return this.#last;
    }
    this.#mismatchLogged = false;
    this.#last = read;
    return read;
  }

  /** The certificate in force now (for renewal timing). */
  get current(): TlsMaterial | undefined {
    return this.#last;
  }

  /**
   * A renewed pair (and the CA certificates that came with it): in force for
   * the next connection at once, and written to the files so a restart keeps
   * it. A failed write (read-only files) is logged; the pair still applies
   * until the process ends.
   */
  async replace(certPem: string, keyPem: string, caPem: string): Promise<void> {
    const next = material(certPem, keyPem, caPem);
    if (!pairMatches(next)) throw new UnderpassError('ERR_RENEWAL', 'the renewed certificate does not belong to the new key');
    this.#last = next;
    await this.#persist([[this.files.key, keyPem, 0o600], [this.files.cert, certPem, 0o644], [this.files.ca, caPem, 0o644]]);
  }

  /** A new set of trusted CA certificates (while the connection's CA rotates). */
  async trust(caPem: string): Promise<void> {
    const base = this.#last ?? await this.material();
    if (base.ca.toString() === caPem) return;
    this.#last = material(base.cert.toString(), base.key.toString(), caPem);
    await this.#persist([[this.files.ca, caPem, 0o644]]);
  }

  async #persist(files: Array<[string, string, number]>): Promise<void> {
    try {
      for (const [path, content, mode] of files) await replaceFile(path, content, mode);
    } catch (err) {
      this.#log.warn({ err: errorMessage(err) }, `cannot write the renewed certificate files (${errorMessage(err)}); they are used until this connector stops`);
      return;
    }
    try {
      await this.onPersisted?.();
    } catch (err) {
      this.#log.warn({ err: errorMessage(err) }, `cannot save the renewed certificate (${errorMessage(err)}); a restart falls back to the previous one`);
    }
  }
}

function material(cert: string, key: string, ca: string): TlsMaterial {
  const [c, k, a] = [Buffer.from(cert), Buffer.from(key), Buffer.from(ca)];
  return { cert: c, key: k, ca: a, fingerprint: createHash('sha256').update(c).update(k).update(a).digest('hex') };
}

function pairMatches(m: TlsMaterial): boolean {
  try {
    return new X509Certificate(m.cert).checkPrivateKey(createPrivateKey(m.key));
  } catch {
    return false;
  }
}

/** Writes `content` beside `path` and renames it over: readers see the old file or the new one. */
export async function replaceFile(path: string, content: string, mode: number): Promise<void> {
  const tmp = `${path}.${randomBytes(6).toString('hex')}.tmp`;
  const handle = await open(tmp, 'wx', mode);
  try {
    await handle.chmod(mode);
    await handle.writeFile(content);
    await handle.sync();
  } catch (err) {
    await handle.close();
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
  await handle.close();
  await rename(tmp, path);
}
