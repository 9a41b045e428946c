/**
 * One connector attached to this worker: the WebSocket, the yamux session on
 * it, and the control channel handshake (hello → welcome → config). Data
 * streams that arrive before the handshake finishes are reset.
 */
import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import { ControlChannel, PROTOCOL_VERSION, type ConfigMessage, type MappingStatusEntry } from '../tunnel/control.js';
import { errorMessage, UnderpassError } from '../tunnel/errors.js';
import type { MuxConfig } from '../tunnel/mux/config.js';
import { Session } from '../tunnel/mux/session.js';
import type { MuxStream } from '../tunnel/mux/stream.js';
import { VERSION } from '../tunnel/version.js';
import type { AcceptedConnector } from './tunnel-server.js';

export const HANDSHAKE_TIMEOUT_MS = 10_000;

export interface ConnectorSessionOptions {
  connection: string;
  instance: string;
  mux: Partial<MuxConfig>;
  logger: Logger;
}

export interface ConnectorSession {
  on(event: 'ready', listener: () => void): this;
  on(event: 'stream', listener: (stream: MuxStream) => void): this;
  on(event: 'mapping-status', listener: (entries: MappingStatusEntry[]) => void): this;
  on(event: 'close', listener: (err: Error | undefined) => void): this;
}

export class ConnectorSession extends EventEmitter {
  readonly id = randomUUID();
  readonly connector: string;
  readonly peer: string;
  readonly since = new Date();
  readonly mux: Session;
  version = '';
  hostname: string | undefined;
  /** Mappings this connector reported it cannot serve, by name. */
  readonly unavailable = new Map<string, MappingStatusEntry>();
  #ready = false;
  #control: ControlChannel | undefined;
  readonly #log: Logger;
  readonly #opts: ConnectorSessionOptions;

  constructor(accepted: AcceptedConnector, opts: ConnectorSessionOptions) {
    super();
    this.connector = accepted.connector;
    this.peer = accepted.peer;
    this.#opts = opts;
    this.#log = opts.logger.child({ connector: accepted.connector, session: this.id, peer: accepted.peer });
    this.mux = new Session(accepted.stream, { client: false, config: opts.mux });
    this.mux.on('stream', (stream) => this.#onStream(stream));
    this.mux.on('close', (err) => this.emit('close', err));
    const timer = setTimeout(() => {
      if (!this.#ready) this.#fail(new UnderpassError('ERR_HANDSHAKE_TIMEOUT', `connector sent no hello within ${HANDSHAKE_TIMEOUT_MS} ms`));
    }, HANDSHAKE_TIMEOUT_MS);
    timer.unref();
    this.mux.closed.then(() => clearTimeout(timer), () => clearTimeout(timer));
  }

  get ready(): boolean {
    return this.#ready && !this.mux.isClosed;
  }

  /** Can this session carry a new stream for `mapping`? */
  canCarry(mapping: string): boolean {
    return this.ready && !this.mux.remoteGoneAway && !this.mux.localGoneAway && !this.unavailable.has(mapping);
  }

  sendConfig(config: ConfigMessage): void {
    this.#control?.send(config);
  }

  close(err?: Error): void {
    this.mux.close(err);
  }

  /** GoAway, close the control channel, let data streams finish up to the deadline. */
  drain(deadlineMs: number): Promise<void> {
    this.mux.goAway();
    this.#control?.close();
    return this.mux.drain(deadlineMs);
  }

  #onStream(stream: MuxStream): void {
    if (!this.#control) {
      this.#control = new ControlChannel(stream);
      void this.#handshake(this.#control);
      return;
    }
    if (!this.#ready) {
      stream.destroy();
      return;
    }
    this.emit('stream', stream);
  }

  async #handshake(control: ControlChannel): Promise<void> {
    control.on('error', (err) => {
      if (!this.mux.isClosed) this.#log.warn({ err: errorMessage(err) }, `control channel: ${errorMessage(err)}`);
    });
    control.on('close', () => {
      if (!this.mux.isClosed && !this.mux.localGoneAway && !this.mux.remoteGoneAway) {
        this.#fail(new UnderpassError('ERR_CONTROL_CLOSED', 'the connector closed its control channel'));
      }
    });
    try {
      const hello = await control.expect('hello', HANDSHAKE_TIMEOUT_MS);
      if (hello.protocol !== PROTOCOL_VERSION) {
        const message = `this worker speaks tunnel protocol ${PROTOCOL_VERSION}, the connector speaks ${hello.protocol}; upgrade the older side`;
        control.send({ type: 'error', code: 'ERR_PROTOCOL_VERSION', message });
        throw new UnderpassError('ERR_PROTOCOL_VERSION', message);
      }
      if (hello.connector !== this.connector) {
        const message = `hello names connector "${hello.connector}" but the certificate is for "${this.connector}"`;
        control.send({ type: 'error', code: 'ERR_IDENTITY_MISMATCH', message });
        throw new UnderpassError('ERR_IDENTITY_MISMATCH', message);
      }
      this.version = hello.version;
      this.hostname = hello.hostname;
      control.on('message', (msg) => {
        if (msg.type === 'mapping-status') {
          this.unavailable.clear();
          for (const entry of msg.mappings) if (entry.state !== 'Ready') this.unavailable.set(entry.name, entry);
          this.emit('mapping-status', msg.mappings);
        }
      });
      control.send({
        type: 'welcome',
        protocol: PROTOCOL_VERSION,
        connection: this.#opts.connection,
        worker: { instance: this.#opts.instance, version: VERSION },
        session: this.id,
      });
      this.#ready = true;
      this.emit('ready');
    } catch (err) {
      this.#fail(err as Error);
    }
  }

  #fail(err: Error): void {
    this.#log.warn({ err: errorMessage(err) }, `closing session of connector "${this.connector}": ${errorMessage(err)}`);
    // Let an error message on the control channel reach the connector first.
    setTimeout(() => this.mux.close(err), 50).unref();
  }
}
