/**
 * Renews the connector's certificate over its authenticated session before
 * two thirds of its lifetime have passed (docs/connector-lifecycle.md): a new
 * key pair is made here, a certificate signing request goes to a worker on the
 * control channel, the worker forwards it to the operator, which signs it for
 * the identity the session proved. The new pair is written beside the old one
 * (connector/credentials.ts) and every link moves to a new session with it
 * while the old sessions drain, so no stream is dropped. The private key never
 * leaves this process. Failures are retried with backoff until the
 * certificate expires; each attempt is counted.
 */
import { X509Certificate } from 'node:crypto';
import type { Logger } from 'pino';
import { Counter, type Registry } from 'prom-client';
import { Backoff, sleep } from '../tunnel/backoff.js';
import { errorCode, errorMessage, UnderpassError } from '../tunnel/errors.js';
import { identityFromCertificate } from '../tunnel/identity.js';
import { createKeyAndCsr } from '../tunnel/pki-csr.js';
import type { Credentials } from './credentials.js';
import type { WorkerLink } from './link.js';

/** Renew when this share of notBefore..notAfter has passed. */
export const RENEW_AT = 2 / 3;
const ANSWER_TIMEOUT_MS = 30_000;
/** setTimeout's limit (about 24.8 days): longer waits are taken in steps. */
const MAX_TIMER_MS = 2 ** 31 - 1;

export interface RenewerOptions {
  name: string;
  credentials: Credentials;
  links: readonly WorkerLink[];
  log: Logger;
  registry: Registry;
  /** Retry delays after a failed renewal; default 2 s growing to 5 min. */
  retry?: { initialMs: number; maxMs: number };
  now?: () => number;
}

/** When a certificate valid from `notBefore` to `notAfter` is renewed. */
export function renewalTime(notBefore: number, notAfter: number): number {
  return notBefore + Math.floor((notAfter - notBefore) * RENEW_AT);
}

export class CertificateRenewer {
  readonly #o: RenewerOptions;
  readonly #now: () => number;
  readonly #renewals: Counter;
  #wake: (() => void) | undefined;
  #soon = false;

  constructor(o: RenewerOptions) {
    this.#o = o;
    this.#now = o.now ?? Date.now;
    const name = 'underpass_certificate_renewals_total';
    this.#renewals = (o.registry.getSingleMetric(name) as Counter | undefined) ?? new Counter({
      name, help: 'Renewals of this connector\'s certificate over its session, by result (renewed, failed).', labelNames: ['result'], registers: [o.registry],
    });
  }

  /** Renew at the next chance instead of waiting (e.g. the connection's CA is rotating). */
  renewSoon(): void {
    this.#soon = true;
    this.#wake?.();
  }

  /** Runs until `signal` aborts. */
  async run(signal: AbortSignal): Promise<void> {
    const backoff = new Backoff(this.#o.retry ?? { initialMs: 2_000, maxMs: 300_000 });
    while (!signal.aborted) {
      const at = await this.#dueAt();
      await this.#waitUntil(at, signal);
      if (signal.aborted) return;
      try {
        await this.#renewOnce();
        this.#soon = false;
        backoff.reset();
        this.#renewals.inc({ result: 'renewed' });
      } catch (err) {
        this.#renewals.inc({ result: 'failed' });
        const delay = backoff.next();
        this.#o.log.warn({ err: errorMessage(err), code: errorCode(err), retryInMs: delay }, `certificate renewal failed (${errorCode(err) ?? 'ERROR'}): ${errorMessage(err)}; retrying in ${delay} ms`);
        await sleep(delay, signal);
        this.#soon = true;
      }
    }
  }

  async #dueAt(): Promise<number> {
    if (this.#soon) return 0;
    const m = this.#o.credentials.current ?? await this.#o.credentials.material();
    const cert = new X509Certificate(m.cert);
    return renewalTime(Date.parse(cert.validFrom), Date.parse(cert.validTo));
  }

  async #waitUntil(at: number, signal: AbortSignal): Promise<void> {
    while (!signal.aborted && !this.#soon) {
      const left = at - this.#now();
      if (left <= 0) return;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, Math.min(left, MAX_TIMER_MS));
        const onAbort = (): void => done();
        signal.addEventListener('abort', onAbort, { once: true });
        this.#wake = done;
        function done(): void {
          clearTimeout(timer);
          signal.removeEventListener('abort', onAbort);
          resolve();
        }
      });
      this.#wake = undefined;
    }
  }

  /** One renewal: new key here, CSR over a live session, the answer checked, written, and used for new sessions. */
  async #renewOnce(): Promise<void> {
    const link = this.#o.links.find((l) => l.session);
    if (!link) throw new UnderpassError('ERR_NOT_CONNECTED', 'no worker session to renew over; retrying once connected');
    const before = this.#o.credentials.current ?? await this.#o.credentials.material();
    const { keyPem, csrPem } = await createKeyAndCsr(this.#o.name);
    const answer = await link.renew(csrPem, ANSWER_TIMEOUT_MS);
    const cert = new X509Certificate(answer.certificate);
    // The operator signs for the identity the session proved; check it is still ours before using it.
    const was = identityFromCertificate(new X509Certificate(before.cert));
    const now = identityFromCertificate(cert);
    if (now.role !== 'connector' || was.role !== 'connector' || now.name !== was.name || now.namespace !== was.namespace || now.connection !== was.connection) {
      throw new UnderpassError('ERR_RENEWAL', `the renewed certificate names ${now.namespace}/${now.connection} connector ${now.name ?? '?'}, not this connector`);
    }
    await this.#o.credentials.replace(answer.certificate, keyPem, answer.ca);
    this.#o.log.info({ serial: cert.serialNumber, notAfter: new Date(cert.validTo).toISOString(), renewAt: new Date(renewalTime(Date.parse(cert.validFrom), Date.parse(cert.validTo))).toISOString() },
      `renewed this connector's certificate over the session with ${link.url.href}: serial ${cert.serialNumber}, valid until ${new Date(cert.validTo).toISOString()}; new sessions use it, the current ones drain`);
    // Sessions opened with the old certificate may carry their streams until it expires, not longer.
    // (A timer longer than MAX_TIMER_MS would fire at once: capped.)
    const drainMs = Math.min(MAX_TIMER_MS, Math.max(0, Date.parse(new X509Certificate(before.cert).validTo) - this.#now()));
    for (const l of this.#o.links) l.cycle(drainMs);
  }
}
