/**
 * The yamux wire format (hashicorp/yamux spec.md): a 12-byte big-endian header
 * — version, type, flags, stream id, length — followed, for Data frames only,
 * by `length` payload bytes.
 */
import { ProtocolError } from '../errors.js';

export const PROTOCOL_VERSION = 0;
export const HEADER_SIZE = 12;
/** Every stream starts with this window in both directions (spec: "256KB"). */
export const INITIAL_WINDOW = 256 * 1024;

export enum FrameType {
  Data = 0,
  WindowUpdate = 1,
  Ping = 2,
  GoAway = 3,
}

export enum Flag {
  SYN = 0x1,
  ACK = 0x2,
  FIN = 0x4,
  RST = 0x8,
}

export enum GoAwayCode {
  Normal = 0,
  ProtocolError = 1,
  InternalError = 2,
}

export interface FrameHeader {
  version: number;
  type: FrameType;
  flags: number;
  streamId: number;
  length: number;
}

const TYPE_NAMES = ['Data', 'WindowUpdate', 'Ping', 'GoAway'];

export function encodeHeader(type: FrameType, flags: number, streamId: number, length: number): Buffer {
  const buf = Buffer.allocUnsafe(HEADER_SIZE);
  writeHeader(buf, 0, type, flags, streamId, length);
  return buf;
}

/** Writes a frame header into `buf` at `offset`. */
export function writeHeader(buf: Buffer, offset: number, type: FrameType, flags: number, streamId: number, length: number): void {
  buf[offset] = PROTOCOL_VERSION;
  buf[offset + 1] = type;
  buf.writeUInt16BE(flags, offset + 2);
  buf.writeUInt32BE(streamId, offset + 4);
  buf.writeUInt32BE(length, offset + 8);
}

export function decodeHeader(buf: Buffer, offset = 0): FrameHeader {
  return {
    version: buf[offset]!,
    type: buf[offset + 1]! as FrameType,
    flags: buf.readUInt16BE(offset + 2),
    streamId: buf.readUInt32BE(offset + 4),
    length: buf.readUInt32BE(offset + 8),
  };
}

export function describeHeader(h: FrameHeader): string {
  const flags = [h.flags & Flag.SYN && 'SYN', h.flags & Flag.ACK && 'ACK', h.flags & Flag.FIN && 'FIN', h.flags & Flag.RST && 'RST']
    .filter(Boolean)
    .join('|');
  return `${TYPE_NAMES[h.type] ?? `type ${h.type}`} stream=${h.streamId} flags=${flags || '0'} length=${h.length}`;
}

/** Checks what can be checked from the header alone; window checks belong to the session. */
export function validateHeader(h: FrameHeader): void {
  if (h.version !== PROTOCOL_VERSION) {
    throw new ProtocolError('ERR_MUX_BAD_VERSION', `unsupported yamux version ${h.version} (expected ${PROTOCOL_VERSION}); is the peer speaking yamux?`);
  }
  if (h.type > FrameType.GoAway) {
    throw new ProtocolError('ERR_MUX_BAD_TYPE', `unknown yamux frame type ${h.type}`);
  }
  if ((h.type === FrameType.Ping || h.type === FrameType.GoAway) && h.streamId !== 0) {
    throw new ProtocolError('ERR_MUX_BAD_STREAM', `${TYPE_NAMES[h.type]} frame on stream ${h.streamId}; it must use stream 0`);
  }
  if ((h.type === FrameType.Data || h.type === FrameType.WindowUpdate) && h.streamId === 0) {
    throw new ProtocolError('ERR_MUX_BAD_STREAM', `${TYPE_NAMES[h.type]} frame on stream 0, which is reserved for the session`);
  }
}

export interface FrameHandler {
  /** A complete header; for Data frames the payload follows through onPayload. Throw to abort. */
  onHeader(header: FrameHeader): void;
  /** Part of the current Data frame's payload (a view into the input; copy to keep past the call). */
  onPayload(streamId: number, chunk: Buffer, last: boolean): void;
}

/**
 * Incremental decoder: accepts the byte stream cut at any boundary. Payloads
 * are handed on as they arrive (zero-copy subarrays), so a frame is never
 * buffered whole; only a header split across reads is copied.
 */
export class FrameReader {
  readonly #handler: FrameHandler;
  readonly #header = Buffer.alloc(HEADER_SIZE);
  #headerFill = 0;
  #payloadLeft = 0;
  #payloadStream = 0;

  constructor(handler: FrameHandler) {
    this.#handler = handler;
  }

  /** True when the reader is between frames (useful for tests and clean shutdown). */
  get idle(): boolean {
    return this.#headerFill === 0 && this.#payloadLeft === 0;
  }

  push(chunk: Buffer): void {
    let offset = 0;
    while (offset < chunk.length) {
      if (this.#payloadLeft > 0) {
        const n = Math.min(this.#payloadLeft, chunk.length - offset);
        this.#payloadLeft -= n;
        this.#handler.onPayload(this.#payloadStream, chunk.subarray(offset, offset + n), this.#payloadLeft === 0);
        offset += n;
        continue;
      }
      let header: FrameHeader;
      if (this.#headerFill === 0 && chunk.length - offset >= HEADER_SIZE) {
        header = decodeHeader(chunk, offset);
        offset += HEADER_SIZE;
      } else {
        const n = Math.min(HEADER_SIZE - this.#headerFill, chunk.length - offset);
        chunk.copy(this.#header, this.#headerFill, offset, offset + n);
        this.#headerFill += n;
        offset += n;
        if (this.#headerFill < HEADER_SIZE) return;
        this.#headerFill = 0;
        header = decodeHeader(this.#header);
      }
      validateHeader(header);
      this.#handler.onHeader(header);
      if (header.type === FrameType.Data && header.length > 0) {
        this.#payloadLeft = header.length;
        this.#payloadStream = header.streamId;
      }
    }
  }
}
