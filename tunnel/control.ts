/**
 * The control channel: the first stream a connector opens on a session.
 * u32-length JSON messages, each validated on arrival.
 *
 *   connector → worker   hello            (protocol version, identity, capabilities)
 *   worker → connector   welcome          (which worker instance, session id)
 *   worker → connector   config           (the mapping set; sent again on every change)
 *   connector → worker   mapping-status   (mappings the connector refused or cannot serve)
 *   either               error            (fatal: the sender closes the session next)
 */
import { EventEmitter } from 'node:events';
import type { Duplex } from 'node:stream';
import { z } from 'zod';
import { ProtocolError, UnderpassError } from './errors.js';
import { ownerSlot } from './owner.js';
import { encodeJsonFrame, JsonFrameDecoder } from './frames.js';
import { mappingSchema } from './mapping.js';

export const PROTOCOL_VERSION = 1;
export const MAX_CONTROL_MESSAGE = 1 << 20;

const helloSchema = z.object({
  type: z.literal('hello'),
  protocol: z.number().int(),
  connector: z.string(),
  version: z.string(),
  capabilities: z.array(z.string()),
  hostname: z.string().optional(),
});

const welcomeSchema = z.object({
  type: z.literal('welcome'),
  protocol: z.number().int(),
  connection: z.string(),
  worker: z.object({ instance: z.string(), version: z.string() }),
  session: z.string(),
});

const configSchema = z.object({
  type: z.literal('config'),
  revision: z.number().int().nonnegative(),
  mappings: z.array(mappingSchema),
});

export const MAPPING_STATES = ['Ready', 'Refused', 'Failed'] as const;
const mappingStatusSchema = z.object({
  type: z.literal('mapping-status'),
  revision: z.number().int().nonnegative(),
  mappings: z.array(z.object({
    name: z.string(),
    state: z.enum(MAPPING_STATES),
    reason: z.string().optional(),
    message: z.string().optional(),
  })),
});

const errorSchema = z.object({ type: z.literal('error'), code: z.string(), message: z.string() });

export const controlMessageSchema = z.discriminatedUnion('type', [helloSchema, welcomeSchema, configSchema, mappingStatusSchema, errorSchema]);

export type ControlMessage = z.infer<typeof controlMessageSchema>;
export type Hello = z.infer<typeof helloSchema>;
export type Welcome = z.infer<typeof welcomeSchema>;
export type ConfigMessage = z.infer<typeof configSchema>;
export type MappingStatusMessage = z.infer<typeof mappingStatusSchema>;
export type MappingStatusEntry = MappingStatusMessage['mappings'][number];

export interface ControlChannel {
  on(event: 'message', listener: (msg: ControlMessage) => void): this;
  on(event: 'error', listener: (err: Error) => void): this;
  on(event: 'close', listener: () => void): this;
}

const owner = ownerSlot<ControlChannel>('underpass.control');

export class ControlChannel extends EventEmitter {
  readonly #stream: Duplex;
  readonly #decoder = new JsonFrameDecoder(MAX_CONTROL_MESSAGE);

  constructor(stream: Duplex) {
    super();
    this.#stream = stream;
    // Shared listeners (the channel lives as long as its session): no closures per channel.
    owner.set(stream, this);
    stream.on('data', ControlChannel.#onStreamData);
    stream.on('error', ControlChannel.#onStreamError);
    // The peer closing its side ends the channel: close ours too so the stream finishes.
    stream.on('end', ControlChannel.#onStreamEnd);
    stream.on('close', ControlChannel.#onStreamClose);
  }

  static #onStreamData(this: Duplex, chunk: Buffer): void {
    owner.of(this).#onData(chunk);
  }

  static #onStreamError(this: Duplex, err: Error): void {
    owner.of(this).emit('error', err);
  }

  static #onStreamEnd(this: Duplex): void {
    this.end();
  }

  static #onStreamClose(this: Duplex): void {
    owner.of(this).emit('close');
  }

  send(msg: ControlMessage): void {
    if (this.#stream.destroyed || this.#stream.writableEnded) return;
    this.#stream.write(encodeJsonFrame(msg, 4));
  }

  /** Next message of the given type (used for the hello/welcome handshake). */
  expect<T extends ControlMessage['type']>(type: T, timeoutMs: number): Promise<Extract<ControlMessage, { type: T }>> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => done(new UnderpassError('ERR_HANDSHAKE_TIMEOUT', `no ${type} message within ${timeoutMs} ms`)), timeoutMs);
      const onMessage = (msg: ControlMessage): void => {
        if (msg.type === type) return done(undefined, msg as Extract<ControlMessage, { type: T }>);
        if (msg.type === 'error') return done(new UnderpassError(msg.code, `peer refused the session: ${msg.message}`));
        done(new ProtocolError('ERR_HANDSHAKE_ORDER', `expected ${type}, got ${msg.type}`));
      };
      const onClose = (): void => done(new UnderpassError('ERR_HANDSHAKE_CLOSED', `control stream closed before ${type}`));
      const onError = (err: Error): void => done(err);
      const done = (err?: Error, msg?: Extract<ControlMessage, { type: T }>): void => {
        clearTimeout(timer);
        this.off('message', onMessage);
        this.off('close', onClose);
        this.off('error', onError);
        if (err) reject(err);
        else resolve(msg!);
      };
      this.on('message', onMessage);
      this.on('close', onClose);
      this.on('error', onError);
    });
  }

  close(): void {
    this.#stream.end();
  }

  #onData(chunk: Buffer): void {
    let raws: unknown[];
    try {
      raws = this.#decoder.push(chunk);
    } catch (err) {
      this.emit('error', err);
      this.#stream.destroy();
      return;
    }
    for (const raw of raws) {
      const parsed = controlMessageSchema.safeParse(raw);
      if (!parsed.success) {
        const issue = parsed.error.issues[0];
        const type = (raw as { type?: unknown })?.type;
        this.emit('error', new ProtocolError('ERR_CONTROL_INVALID', `invalid control message${typeof type === 'string' ? ` "${type}"` : ''}: ${issue?.path.join('.') || '(root)'}: ${issue?.message}`));
        continue;
      }
      this.emit('message', parsed.data);
    }
  }
}
