/**
 * One connector attached to this worker: the WebSocket, the yamux session on
 * it, and the control channel handshake (hello → welcome → config). Data
 * streams that arrive before the handshake finishes are reset.
 */
import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import {
  ControlChannel, ControlMessageError, CONTROL_LIMITS, PROTOCOL_VERSION, type ConfigMessage, type ControlMessage, type MappingStatusEntry,
  type RenewedMessage, type RenewFailedMessage, type RenewMessage, type TrustMessage,
} from '../tunnel/control.js';
import { errorCode, errorMessage, UnderpassError } from '../tunnel/errors.js';
import { reportText } from '../tunnel/operator-channel.js';
import { ownerSlot } from '../tunnel/owner.js';
import type { MuxConfig } from '../tunnel/mux/config.js';
import { Session } from '../tunnel/mux/session.js';
import type { Channel } from '../tunnel/mux/channel.js';
import { MuxStream } from '../tunnel/mux/stream.js';
import { VERSION } from '../tunnel/version.js';
import type { AcceptedConnector } from './tunnel-server.js';

export const HANDSHAKE_TIMEOUT_MS = 10_000;
/** Distinct refused control messages (type and field) logged per session; the rest are only counted. */
const MAX_REFUSAL_LOGS = 8;

const owner = ownerSlot<ConnectorSession>('underpass.connector-session');

export interface ConnectorSessionOptions {
  connection: string;
  instance: string;
  mux: Partial<MuxConfig>;
  logger: Logger;
}

export interface ConnectorSession {
  on(event: 'ready', listener: () => void): this;
  on(event: 'stream', listener: (channel: Channel) => void): this;
  on(event: 'mapping-status', listener: (entries: MappingStatusEntry[]) => void): this;
  on(event: 'close', listener: (err: Error | undefined) => void): this;
  /** A keepalive round trip with this connector (milliseconds). */
  on(event: 'rtt', listener: (ms: number) => void): this;
  /** The connector asks for a renewed certificate (worker/renewals.ts). */
  on(event: 'renew', listener: (msg: RenewMessage) => void): this;
}

export class ConnectorSession extends EventEmitter {
  readonly id = randomUUID();
  readonly connector: string;
  readonly peer: string;
  /** Hex serial of the connector's client certificate. */
  readonly certificateSerial: string;
  /** The CA (id) that issued it. */
  readonly certificateIssuer: string | undefined;
  readonly since = new Date();
  readonly mux: Session;
  version = '';
  hostname: string | undefined;
  /** Mappings this connector reported it cannot serve, by name (messages cut to what a report carries). */
  readonly unavailable = new Map<string, MappingStatusEntry>();
  /** Control messages from this connector refused after the handshake (each dropped whole). */
  refusedMessages = 0;
  readonly #refusalsLogged = new Set<string>();
  #ready = false;
  #failed = false;
  /** The connector replaced this session (see 'retire'): it carries no new stream. */
  #retired = false;
  #control: ControlChannel | undefined;
  #logger: Logger | undefined;
  #handshakeTimer: NodeJS.Timeout | undefined;
  readonly #opts: ConnectorSessionOptions;

  constructor(accepted: AcceptedConnector, opts: ConnectorSessionOptions) {
    super();
    this.connector = accepted.connector;
    this.peer = accepted.peer;
    this.certificateSerial = accepted.certificateSerial;
    this.certificateIssuer = accepted.certificateIssuer;
    this.#opts = opts;
    this.mux = new Session(accepted.stream, { client: false, config: opts.mux });
    // Shared listeners that find this session through its mux (tunnel/owner.ts): an idle session
    // keeps no closures.
    owner.set(this.mux, this);
    this.mux.on('channel', ConnectorSession.#onMuxChannel);
    this.mux.on('close', ConnectorSession.#onMuxClose);
    this.mux.on('rtt', ConnectorSession.#onMuxRtt);
    this.#handshakeTimer = setTimeout(ConnectorSession.#handshakeTimeout, HANDSHAKE_TIMEOUT_MS, this);
    this.#handshakeTimer.unref();
  }

  static #onMuxChannel(this: Session, channel: Channel): void {
    owner.of(this).#onChannel(channel);
  }

  static #onMuxClose(this: Session, err: Error | undefined): void {
    const s = owner.of(this);
    s.#clearHandshakeTimer();
    s.emit('close', err);
  }

  static #onMuxRtt(this: Session, ms: number): void {
    owner.of(this).emit('rtt', ms);
  }

  static #handshakeTimeout(s: ConnectorSession): void {
    s.#handshakeTimer = undefined;
    if (!s.#ready) s.#fail(new UnderpassError('ERR_HANDSHAKE_TIMEOUT', `connector sent no hello within ${HANDSHAKE_TIMEOUT_MS} ms`));
  }

  static #onControlError(this: ControlChannel, err: Error): void {
    const s = owner.of(this);
    if (s.mux.isClosed) return;
    if (!(err instanceof ControlMessageError)) return void s.#log.warn({ err: errorMessage(err) }, `control channel: ${errorMessage(err)}`);
    if (!s.#ready) return; // the handshake refuses the session and says why
    // A refused message is dropped whole; a peer that keeps sending them gets a few log lines, not one each.
    s.refusedMessages++;
    const key = `${err.messageType} ${err.field}`;
    if (s.#refusalsLogged.has(key) || s.#refusalsLogged.size >= MAX_REFUSAL_LOGS) return;
    s.#refusalsLogged.add(key);
    s.#log.warn({ code: err.code, type: err.messageType, field: err.field }, `refused a control message from connector "${s.connector}": ${err.message}`);
  }

  static #onControlClose(this: ControlChannel): void {
    const s = owner.of(this);
    if (!s.mux.isClosed && !s.mux.localGoneAway && !s.mux.remoteGoneAway) {
      s.#fail(new UnderpassError('ERR_CONTROL_CLOSED', 'the connector closed its control channel'));
    }
  }

  static #onControlMessage(this: ControlChannel, msg: ControlMessage): void {
    if (msg.type === 'renew') return void owner.of(this).emit('renew', msg);
    if (msg.type === 'retire') {
      // The connector moves to a new session (renewed certificate): nothing new goes here from now on,
      // and it hears so before it sends GoAway, so no stream we open crosses its GoAway.
      const s = owner.of(this);
      s.#retired = true;
      s.#control?.send({ type: 'retired' });
      return;
    }
    if (msg.type !== 'mapping-status') return;
    const s = owner.of(this);
    s.unavailable.clear();
    for (const entry of msg.mappings) {
      if (entry.state === 'Ready') continue;
      s.unavailable.set(entry.name, entry.message === undefined ? entry : { ...entry, message: reportText(entry.message) });
    }
    s.emit('mapping-status', msg.mappings);
  }

  /** This session's logger, made on first use (most sessions log only through the worker's lines). */
  get #log(): Logger {
    return (this.#logger ??= this.#opts.logger.child({ connector: this.connector, session: this.id, peer: this.peer }));
  }

  #clearHandshakeTimer(): void {
    if (this.#handshakeTimer) clearTimeout(this.#handshakeTimer);
    this.#handshakeTimer = undefined;
  }

  get ready(): boolean {
    return this.#ready && !this.mux.isClosed;
  }

  /** Can this session carry a new stream for `mapping`? */
  canCarry(mapping: string): boolean {
    return this.ready && !this.#retired && !this.mux.remoteGoneAway && !this.mux.localGoneAway && !this.unavailable.has(mapping);
  }

  sendConfig(config: ConfigMessage): void {
    this.#control?.send(config);
  }

  /** Any worker-to-connector control message (renewal answers, trust). */
  sendControl(msg: RenewedMessage | RenewFailedMessage | TrustMessage): void {
    if (this.#ready) this.#control?.send(msg);
  }

  close(err?: Error): void {
    this.mux.close(err);
  }

  /**
   * Ends the session for a coded reason the connector should see (e.g.
   * CONNECTOR_NOT_ALLOWED): an error message on the control channel, then
   * the session closes with that error.
   */
  refuse(code: string, message: string): void {
    this.#fail(new UnderpassError(code, message));
  }

  /** GoAway, close the control channel, let data streams finish up to the deadline. */
  drain(deadlineMs: number): Promise<void> {
    this.mux.goAway();
    this.#control?.close();
    return this.mux.drain(deadlineMs);
  }

  /** The connector's first stream is the control channel (a Duplex); every later one carries a connection. */
  #onChannel(channel: Channel): void {
    if (!this.#control) {
      this.#control = new ControlChannel(new MuxStream(channel));
      void this.#handshake(this.#control);
      return;
    }
    if (!this.#ready) {
      channel.reset();
      return;
    }
    this.emit('stream', channel);
  }

  async #handshake(control: ControlChannel): Promise<void> {
    owner.set(control, this);
    control.on('error', ConnectorSession.#onControlError);
    control.on('close', ConnectorSession.#onControlClose);
    try {
      const hello = await control.expect('hello', HANDSHAKE_TIMEOUT_MS);
      if (this.#failed) return; // refused meanwhile (e.g. taken off the admission list)
      if (hello.protocol !== PROTOCOL_VERSION) {
        throw new UnderpassError('ERR_PROTOCOL_VERSION', `this worker speaks tunnel protocol ${PROTOCOL_VERSION}, the connector speaks ${hello.protocol}; upgrade the older side`);
      }
      if (hello.connector !== this.connector) {
        throw new UnderpassError('ERR_IDENTITY_MISMATCH', `hello names connector "${hello.connector}" but the certificate is for "${this.connector}"`);
      }
      this.version = hello.version;
      this.hostname = hello.hostname;
      control.on('message', ConnectorSession.#onControlMessage);
      control.send({
        type: 'welcome',
        protocol: PROTOCOL_VERSION,
        connection: this.#opts.connection,
        worker: { instance: this.#opts.instance, version: VERSION },
        session: this.id,
      });
      this.#ready = true;
      this.#clearHandshakeTimer();
      this.emit('ready');
    } catch (err) {
      this.#fail(err as Error);
    }
  }

  /** Tells the connector why (a coded error message, naming the refused field if any), then closes the session. */
  #fail(err: Error): void {
    if (this.#failed) return;
    this.#failed = true;
    this.#log.warn({ err: errorMessage(err), code: errorCode(err) }, `closing session of connector "${this.connector}": ${errorMessage(err)}`);
    const code = errorCode(err);
    if (code && /^[A-Za-z0-9_.-]{1,64}$/.test(code)) {
      this.#control?.send({
        type: 'error', code, message: errorMessage(err).slice(0, CONTROL_LIMITS.messageChars),
        ...(err instanceof ControlMessageError && err.field ? { field: err.field.slice(0, 128) } : {}),
      });
    }
    // Let the error message on the control channel reach the connector first.
    setTimeout(() => this.mux.close(err), 50).unref();
  }
}
