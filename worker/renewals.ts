/**
 * A connector's certificate renewal as the worker sees it (docs/connector-lifecycle.md):
 * the connector sends a `renew` with a certificate signing request over its
 * authenticated session; the worker forwards it to the operator with what the
 * session proved (the connector's name, the serial of the certificate it
 * connected with) and hands the answer back as `renewed` or `renew-failed`.
 * The worker signs nothing itself and never sees a private key. One renewal
 * at a time per session; each is audited.
 */
import type { Logger } from 'pino';
import type { AuditLog } from '../tunnel/audit.js';
import type { RenewMessage } from '../tunnel/control.js';
import { errorCode, errorMessage } from '../tunnel/errors.js';
import { capText } from '../tunnel/limits.js';
import type { SignAnswer, SignRequest } from '../tunnel/operator-channel.js';
import type { ConnectorSession } from './connector-session.js';

export interface RenewalOptions {
  connection: string;
  instance: string;
  log: Logger;
  audit: AuditLog;
  /** The operator channel's signing call; undefined when this worker has no operator (renewal is refused). */
  sign: ((req: SignRequest) => Promise<SignAnswer>) | undefined;
}

export class RenewalForwarder {
  readonly #o: RenewalOptions;
  readonly #busy = new WeakSet<ConnectorSession>();

  constructor(o: RenewalOptions) {
    this.#o = o;
  }

  handle(session: ConnectorSession, msg: RenewMessage): void {
    if (this.#busy.has(session)) {
      this.#reply(session, msg.id, { code: 'RENEW_BUSY', message: 'a renewal of this session is already in progress' });
      return;
    }
    const sign = this.#o.sign;
    if (!sign) {
      this.#reply(session, msg.id, { code: 'NO_SIGNER', message: 'this worker has no operator channel: renew the certificate by hand (underpass connector bundle, or pki connector)' });
      return;
    }
    this.#busy.add(session);
    sign({ connector: session.connector, certificateSerial: session.certificateSerial, csr: msg.csr })
      .then((answer) => this.#reply(session, msg.id, answer), (err: unknown) => this.#reply(session, msg.id, {
        code: errorCode(err) ?? 'SIGN_FAILED', message: capText(errorMessage(err), 1000),
      }))
      .finally(() => this.#busy.delete(session));
  }

  #reply(session: ConnectorSession, id: string, result: SignAnswer | { code: string; message: string }): void {
    const ok = 'certificate' in result;
    const base = { event: 'certificate-renewal' as const, connection: this.#o.connection, worker: this.#o.instance, connector: session.connector, session: session.id, previousSerial: session.certificateSerial };
    if (ok) {
      session.sendControl({ type: 'renewed', id, certificate: result.certificate, ca: result.ca });
      this.#o.audit.write({ ...base, outcome: 'renewed' as const });
      this.#o.log.info({ connector: session.connector, session: session.id }, `forwarded a certificate renewal of connector "${session.connector}": signed by the operator`);
      return;
    }
    const code = /^[A-Za-z0-9_.-]{1,64}$/.test(result.code) ? result.code : 'SIGN_FAILED';
    session.sendControl({ type: 'renew-failed', id, code, message: result.message.slice(0, 1024) });
    this.#o.audit.write({ ...base, outcome: 'refused' as const, reason: code, message: capText(result.message) });
    this.#o.log.warn({ connector: session.connector, session: session.id, reason: code }, `certificate renewal of connector "${session.connector}" refused (${code}): ${capText(result.message)}`);
  }
}
