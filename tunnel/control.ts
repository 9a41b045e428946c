/**
 * The control channel: the first stream a connector opens on a session.
 * u32-length JSON messages, each validated on arrival.
 *
 *   connector → worker   hello            (protocol version, identity, capabilities)
 *   worker → connector   welcome          (which worker instance, session id)
 *   worker → connector   config           (the mapping set; sent again on every change)
 *   connector → worker   mapping-status   (mappings the connector refused or cannot serve)
 *   either               error            (fatal: the sender closes the session next)
 *   connector → worker   renew            (a certificate signing request for this connector)
 *   worker → connector   renewed | renew-failed   (the operator's answer to one renew)
 *   worker → connector   trust            (the connection's CA certificates; again when they change)
 *   connector → worker   retire           (this session is being replaced: open no new stream on it)
 *   worker → connector   retired          (done: nothing new will arrive on it; the connector drains it)
 */
import { EventEmitter } from 'node:events';
import type { Duplex } from 'node:stream';
import { z } from 'zod';
import { ProtocolError, UnderpassError } from './errors.js';
import { ownerSlot } from './owner.js';
import { encodeJsonFrame, JsonFrameDecoder } from './frames.js';
import { formatPath } from './config-load.js';
import { mappingSchema } from './mapping.js';

export const PROTOCOL_VERSION = 1;
export const MAX_CONTROL_MESSAGE = 1 << 20;

/**
 * Limits on what a peer may put in a control message, checked where the
 * message arrives: a message over any of them is refused as a whole
 * (ControlMessageError names the field), so nothing unbounded reaches a
 * session, a log line or the operator report.
 */
export const CONTROL_LIMITS = {
  /** Mappings in one config message, and entries in one mapping-status message. */
  mappings: 1000,
  /** A version string (connector or worker): printable ASCII, no spaces. */
  versionChars: 64,
  capabilities: 16,
  capabilityChars: 32,
  hostnameChars: 253,
  /** A reason or error code: letters, digits, "_", "-" and ".". */
  codeChars: 64,
  /** Free text (mapping-status and error messages). */
  messageChars: 1024,
  /** Worker instance names (a pod name is at most 253). */
  instanceChars: 253,
  sessionChars: 64,
} as const;

const L = CONTROL_LIMITS;
const max = (n: number) => ({ message: `must be at most ${n} characters` });

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
export const dnsLabelSchema = z.string().max(63, max(63)).regex(DNS_LABEL, 'must be a DNS-1123 label: lowercase letters, digits and "-", starting and ending with a letter or digit');
export const versionSchema = z.string().max(L.versionChars, max(L.versionChars)).regex(/^[\x21-\x7e]*$/, 'must be printable ASCII without spaces');
export const codeSchema = z.string().min(1, 'must not be empty').max(L.codeChars, max(L.codeChars)).regex(/^[A-Za-z0-9_.-]+$/, 'must be a code: letters, digits, "_", "-" and "."');
export const messageTextSchema = z.string().max(L.messageChars, max(L.messageChars));
export const MAPPING_STATES = ['Ready', 'Refused', 'Failed'] as const;

const helloSchema = z.object({
  type: z.literal('hello'),
  protocol: z.number().int(),
  connector: dnsLabelSchema,
  version: versionSchema,
  capabilities: z.array(z.string().max(L.capabilityChars, max(L.capabilityChars))).max(L.capabilities, { message: `must have at most ${L.capabilities} entries` }),
  hostname: z.string().max(L.hostnameChars, max(L.hostnameChars)).optional(),
});

const welcomeSchema = z.object({
  type: z.literal('welcome'),
  protocol: z.number().int(),
  connection: z.string().max(127, max(127)),
  worker: z.object({ instance: z.string().max(L.instanceChars, max(L.instanceChars)), version: versionSchema }),
  session: z.string().max(L.sessionChars, max(L.sessionChars)),
});

const configSchema = z.object({
  type: z.literal('config'),
  revision: z.number().int().nonnegative(),
  mappings: z.array(mappingSchema).max(L.mappings, { message: `must have at most ${L.mappings} entries` }),
});

export const mappingStatusEntrySchema = z.object({
  name: dnsLabelSchema,
  state: z.enum(MAPPING_STATES),
  reason: codeSchema.optional(),
  message: messageTextSchema.optional(),
});

/**
 * Entries as a peer may send them: at most CONTROL_LIMITS.mappings entries,
 * messages cut to CONTROL_LIMITS.messageChars and, for long lists, shorter
 * still so the whole message stays under MAX_CONTROL_MESSAGE (256 bytes per
 * entry for the rest, 6 bytes per message character at worst in JSON). Our
 * own status is never refused for an over-long error text.
 */
export function fitMappingStatus(entries: readonly MappingStatusEntry[]): MappingStatusEntry[] {
  const kept = entries.slice(0, L.mappings);
  const perEntry = Math.min(L.messageChars, Math.floor((MAX_CONTROL_MESSAGE - 256 * L.mappings) / Math.max(1, kept.length) / 6));
  return kept.map((e) => (e.message !== undefined && e.message.length > perEntry
    ? { ...e, message: `${e.message.slice(0, perEntry - 1)}…` }
    : e));
}

const mappingStatusSchema = z.object({
  type: z.literal('mapping-status'),
  revision: z.number().int().nonnegative(),
  mappings: z.array(mappingStatusEntrySchema).max(L.mappings, { message: `must have at most ${L.mappings} entries` }),
});

const errorSchema = z.object({
  type: z.literal('error'),
  code: codeSchema,
  message: messageTextSchema,
  /** The field of the peer's message that was refused, when one was. */
  field: z.string().max(128, max(128)).optional(),
});

/** A renewal's id: the connector's, echoed in the answer. */
const renewIdSchema = z.string().min(1).max(64, max(64)).regex(/^[A-Za-z0-9-]+$/, 'must be letters, digits and "-"');
/** PEM text: a CSR (4 KiB), a certificate (8 KiB), a CA bundle of a few CAs (64 KiB). */
const pemSchema = (chars: number) => z.string().max(chars, max(chars)).regex(/^[-A-Za-z0-9+/=\s]*$/, 'must be PEM text');
export const PEM_LIMITS = { csrChars: 4096, certificateChars: 8192, caChars: 65_536 } as const;

const renewSchema = z.object({
  type: z.literal('renew'),
  id: renewIdSchema,
  csr: pemSchema(PEM_LIMITS.csrChars),
});

const renewedSchema = z.object({
  type: z.literal('renewed'),
  id: renewIdSchema,
  certificate: pemSchema(PEM_LIMITS.certificateChars),
  ca: pemSchema(PEM_LIMITS.caChars),
});

const renewFailedSchema = z.object({
  type: z.literal('renew-failed'),
  id: renewIdSchema,
  code: codeSchema,
  message: messageTextSchema,
});

const trustSchema = z.object({
  type: z.literal('trust'),
  ca: pemSchema(PEM_LIMITS.caChars),
});

const retireSchema = z.object({ type: z.literal('retire') });
const retiredSchema = z.object({ type: z.literal('retired') });

export const controlMessageSchema = z.discriminatedUnion('type', [
  helloSchema, welcomeSchema, configSchema, mappingStatusSchema, errorSchema, renewSchema, renewedSchema, renewFailedSchema, trustSchema,
  retireSchema, retiredSchema,
]);

/**
 * A control message the peer sent that the protocol refuses (unknown type, a
 * missing field, a field over its limit). The message is dropped as a whole.
 */
export class ControlMessageError extends ProtocolError {
  /** The message's type, when it named a known one. */
  readonly messageType: string | undefined;
  /** Path of the refused field, e.g. "version" or "mappings[3].message"; undefined for the whole message. */
  readonly field: string | undefined;

  constructor(messageType: string | undefined, field: string | undefined, problem: string) {
    super('ERR_CONTROL_INVALID', `invalid control message${messageType ? ` "${messageType}"` : ''}: ${field ?? '(message)'}: ${problem}`);
    this.messageType = messageType;
    this.field = field;
  }
}

const KNOWN_TYPES = new Set(['hello', 'welcome', 'config', 'mapping-status', 'error', 'renew', 'renewed', 'renew-failed', 'trust', 'retire', 'retired']);

/** Validates one decoded control message; the error names the first refused field. */
export function parseControlMessage(raw: unknown): ControlMessage | ControlMessageError {
  const parsed = controlMessageSchema.safeParse(raw);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0];
  const type = (raw as { type?: unknown } | null)?.type;
  const known = typeof type === 'string' && KNOWN_TYPES.has(type) ? type : undefined;
  const path = issue?.path ?? [];
  const field = path.length > 0 ? formatPath(path) : undefined;
  return new ControlMessageError(known, field, issue?.message ?? 'invalid');
}

export type ControlMessage = z.infer<typeof controlMessageSchema>;
export type Hello = z.infer<typeof helloSchema>;
export type Welcome = z.infer<typeof welcomeSchema>;
export type ConfigMessage = z.infer<typeof configSchema>;
export type MappingStatusMessage = z.infer<typeof mappingStatusSchema>;
export type MappingStatusEntry = MappingStatusMessage['mappings'][number];
export type RenewMessage = z.infer<typeof renewSchema>;
export type RenewedMessage = z.infer<typeof renewedSchema>;
export type RenewFailedMessage = z.infer<typeof renewFailedSchema>;
export type TrustMessage = z.infer<typeof trustSchema>;

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
    try {
      this.#decoder.feed(chunk, this.#onRaw);
    } catch (err) {
      this.emit('error', err);
      this.#stream.destroy();
    }
  }

  readonly #onRaw = (raw: unknown): void => {
    const parsed = parseControlMessage(raw);
    if (parsed instanceof ControlMessageError) this.emit('error', parsed);
    else this.emit('message', parsed);
  };
}
