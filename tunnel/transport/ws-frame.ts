/**
 * RFC 6455 framing as a byte stream. The tunnel treats a WebSocket as a pipe
 * for yamux bytes, so payloads are handed on as they arrive (zero-copy
 * subarrays), never reassembled into messages — that reassembly is what caps
 * message-oriented libraries (see docs/transport.md).
 *
 * Accepted: binary and continuation frames (any size up to `maxFrame`), ping
 * (answered with pong), pong, close. Refused with a close code: text frames
 * (1003), reserved bits or opcodes (1002), masking in the wrong direction
 * (1002), control frames that are fragmented or longer than 125 bytes (1002),
 * frames over the limit (1009).
 */
import { UnderpassError } from '../errors.js';

export enum Opcode {
  Continuation = 0x0,
  Text = 0x1,
  Binary = 0x2,
  Close = 0x8,
  Ping = 0x9,
  Pong = 0xa,
}

export class WebSocketProtocolError extends UnderpassError {
  readonly closeCode: number;
  constructor(closeCode: number, message: string) {
    super('ERR_WS_PROTOCOL', message);
    this.closeCode = closeCode;
  }
}

/** Bytes of the header of a frame with `length` bytes of payload. */
export function frameHeaderLength(length: number, masked: boolean): number {
  return 2 + (length < 126 ? 0 : length <= 0xffff ? 2 : 8) + (masked ? 4 : 0);
}

/**
 * Writes the header of one frame (FIN set) into `target` at `offset`; returns its length. A client
 * must mask: it sends the all-zero key, which RFC 6455 allows and which makes masking a no-op
 * (over TLS, masking protects nothing).
 */
export function writeFrameHeader(target: Buffer, offset: number, opcode: number, length: number, masked: boolean): number {
  const ext = length < 126 ? 0 : length <= 0xffff ? 2 : 8;
  target[offset] = 0x80 | opcode;
  const maskBit = masked ? 0x80 : 0;
  if (ext === 0) target[offset + 1] = maskBit | length;
  else if (ext === 2) {
    target[offset + 1] = maskBit | 126;
    target.writeUInt16BE(length, offset + 2);
  } else {
    target[offset + 1] = maskBit | 127;
    target.writeUInt32BE(Math.floor(length / 2 ** 32), offset + 2);
    target.writeUInt32BE(length >>> 0, offset + 6);
  }
  if (masked) target.writeUInt32BE(0, offset + 2 + ext);
  return frameHeaderLength(length, masked);
}

/** The header of one frame (FIN set), see writeFrameHeader. */
export function encodeFrameHeader(opcode: number, length: number, masked: boolean): Buffer {
  const header = Buffer.allocUnsafe(frameHeaderLength(length, masked));
  writeFrameHeader(header, 0, opcode, length, masked);
  return header;
}

/** A whole control frame (payload ≤ 125 bytes). */
export function encodeControlFrame(opcode: Opcode, payload: Buffer, masked: boolean): Buffer {
  return Buffer.concat([encodeFrameHeader(opcode, payload.length, masked), payload]);
}

/** RFC 6455 5.5: a control frame's payload is at most 125 bytes, 2 of them the code. */
const MAX_CLOSE_REASON_BYTES = 123;

export function encodeClosePayload(code: number, reason = ''): Buffer {
  const r = utf8Prefix(reason, MAX_CLOSE_REASON_BYTES);
  const b = Buffer.allocUnsafe(2 + r.length);
  b.writeUInt16BE(code, 0);
  r.copy(b, 2);
  return b;
}

/** The longest prefix of `text` whose UTF-8 encoding fits `maxBytes`, never splitting a character. */
function utf8Prefix(text: string, maxBytes: number): Buffer {
  const all = Buffer.from(text, 'utf8');
  if (all.length <= maxBytes) return all;
  let end = maxBytes;
  while (end > 0 && (all[end]! & 0xc0) === 0x80) end--; // back off a continuation byte
  return all.subarray(0, end);
}

export interface FrameSink {
  /** Bytes of a binary message (possibly part of a frame); a view into the input. */
  onData(chunk: Buffer): void;
  onPing(payload: Buffer): void;
  onPong(payload: Buffer): void;
  onClose(code: number, reason: string): void;
}

/** Incremental decoder: accepts input cut at any byte boundary. */
export class FrameDecoder {
  readonly #sink: FrameSink;
  /** True on the server side: frames must arrive masked. */
  readonly #expectMasked: boolean;
  readonly #maxFrame: number;
  readonly #header = Buffer.alloc(14);
  #headerFill = 0;
  #remaining = 0;
  #opcode = 0;
  #mask: Buffer | undefined;
  #maskOffset = 0;
  #control: Buffer[] = [];
  #inMessage = false;

  constructor(sink: FrameSink, opts: { expectMasked: boolean; maxFrame: number }) {
    this.#sink = sink;
    this.#expectMasked = opts.expectMasked;
    this.#maxFrame = opts.maxFrame;
  }

  push(chunk: Buffer): void {
    let offset = 0;
    while (offset < chunk.length) {
      if (this.#remaining > 0) {
        const n = Math.min(this.#remaining, chunk.length - offset);
        this.#payload(chunk.subarray(offset, offset + n));
        offset += n;
        this.#remaining -= n;
        if (this.#remaining === 0) this.#endFrame();
        continue;
      }
      offset = this.#readHeader(chunk, offset);
    }
  }

  #readHeader(chunk: Buffer, offset: number): number {
    const h = this.#header;
    while (this.#headerFill < 2 && offset < chunk.length) h[this.#headerFill++] = chunk[offset++]!;
    if (this.#headerFill < 2) return offset;
    const len7 = h[1]! & 0x7f;
    const masked = (h[1]! & 0x80) !== 0;
    const need = 2 + (len7 === 126 ? 2 : len7 === 127 ? 8 : 0) + (masked ? 4 : 0);
    while (this.#headerFill < need && offset < chunk.length) h[this.#headerFill++] = chunk[offset++]!;
    if (this.#headerFill < need) return offset;
    this.#headerFill = 0;
    const fin = (h[0]! & 0x80) !== 0;
    if ((h[0]! & 0x70) !== 0) throw new WebSocketProtocolError(1002, 'reserved bits set (no extension was negotiated)');
    const opcode = h[0]! & 0x0f;
    if (masked !== this.#expectMasked) {
      throw new WebSocketProtocolError(1002, this.#expectMasked ? 'client frame is not masked' : 'server frame is masked');
    }
    let length = len7;
    if (len7 === 126) length = h.readUInt16BE(2);
    else if (len7 === 127) {
      const high = h.readUInt32BE(2);
      if (high > 0x1fffff) throw new WebSocketProtocolError(1009, 'frame length out of range');
      length = high * 2 ** 32 + h.readUInt32BE(6);
    }
    // A zero key (what our connectors send) leaves nothing to undo: no copy of it per frame.
    this.#mask = masked && h.readUInt32BE(need - 4) !== 0 ? Buffer.from(h.subarray(need - 4, need)) : undefined;
    this.#maskOffset = 0;
    this.#opcode = opcode;
    switch (opcode) {
      case Opcode.Binary:
        if (this.#inMessage) throw new WebSocketProtocolError(1002, 'new data frame inside a fragmented message');
        this.#inMessage = !fin;
        break;
      case Opcode.Continuation:
        if (!this.#inMessage) throw new WebSocketProtocolError(1002, 'continuation frame without a message');
        this.#inMessage = !fin;
        break;
      case Opcode.Text:
        throw new WebSocketProtocolError(1003, 'text frames are not accepted; the tunnel carries binary data');
      case Opcode.Close:
      case Opcode.Ping:
      case Opcode.Pong:
        if (!fin || length > 125) throw new WebSocketProtocolError(1002, 'control frame fragmented or longer than 125 bytes');
        this.#control = [];
        break;
      default:
        throw new WebSocketProtocolError(1002, `reserved opcode ${opcode}`);
    }
    if (length > this.#maxFrame) throw new WebSocketProtocolError(1009, `frame of ${length} bytes exceeds the ${this.#maxFrame}-byte limit`);
    this.#remaining = length;
    if (length === 0) this.#endFrame();
    return offset;
  }

  #payload(data: Buffer): void {
    let bytes = data;
    if (this.#mask) {
      bytes = Buffer.from(data);
      for (let i = 0; i < bytes.length; i++) bytes[i]! ^= this.#mask[(this.#maskOffset + i) & 3]!;
      this.#maskOffset = (this.#maskOffset + bytes.length) & 3;
    }
    if (this.#opcode === Opcode.Binary || this.#opcode === Opcode.Continuation) this.#sink.onData(bytes);
    else this.#control.push(Buffer.from(bytes));
  }

  #endFrame(): void {
    if (this.#opcode === Opcode.Binary || this.#opcode === Opcode.Continuation) return;
    const payload = Buffer.concat(this.#control);
    this.#control = [];
    if (this.#opcode === Opcode.Ping) this.#sink.onPing(payload);
    else if (this.#opcode === Opcode.Pong) this.#sink.onPong(payload);
    else if (this.#opcode === Opcode.Close) {
      if (payload.length === 1) throw new WebSocketProtocolError(1002, 'close frame with a 1-byte payload');
      const code = payload.length >= 2 ? payload.readUInt16BE(0) : 1005;
      this.#sink.onClose(code, payload.subarray(2).toString('utf8'));
    }
  }
}
