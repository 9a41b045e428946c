/**
 * Length-prefixed JSON messages on a byte stream, shared by the control
 * channel (u32 length) and the stream-open header (u16 length).
 *
 * Both readers are linear in the bytes received, however the peer cuts them: a
 * message's bytes are copied at most once, into one buffer of the size its
 * length prefix declared (after the limit check), and a message that arrives
 * whole in one chunk is parsed in place. (Concatenating the whole buffer per
 * chunk made a 4 MiB control message sent in 64-byte frames cost 18 s of CPU.)
 */
import type { Readable } from 'node:stream';
import { ProtocolError, UnderpassError } from './errors.js';

export function encodeJsonFrame(value: unknown, lengthBytes: 2 | 4): Buffer {
  const json = JSON.stringify(value);
  const length = Buffer.byteLength(json, 'utf8');
  const max = lengthBytes === 2 ? 0xffff : 0xffffffff;
  if (length > max) throw new UnderpassError('ERR_FRAME_TOO_LARGE', `message of ${length} bytes does not fit a ${lengthBytes}-byte length`);
  // One allocation (a stream-open header is written per connection).
  const frame = Buffer.allocUnsafe(lengthBytes + length);
  if (lengthBytes === 2) frame.writeUInt16BE(length, 0);
  else frame.writeUInt32BE(length, 0);
  frame.write(json, lengthBytes, 'utf8');
  return frame;
}

/** Counts the bytes a reader copies (tests inject one to show the work is linear). */
export interface CopyMeter {
  copied: number;
}

/** The error a too-large message produces, by reader. */
export interface SizeRefusal {
  code: string;
  what: string;
}

/**
 * One length-prefixed message at a time: the length prefix (copied while split), then the body —
 * parsed in place when it lies whole in one chunk, otherwise copied into a buffer of exactly the
 * declared size. Each input byte is copied at most once.
 */
class LengthPrefixed {
  readonly #lengthBytes: 2 | 4;
  readonly #max: number;
  readonly #refusal: SizeRefusal;
  readonly #meter: CopyMeter | undefined;
  readonly #prefix: Buffer;
  #prefixFill = 0;
  #body: Buffer | undefined;
  #bodyFill = 0;

  constructor(lengthBytes: 2 | 4, max: number, refusal: SizeRefusal, meter?: CopyMeter) {
    this.#lengthBytes = lengthBytes;
    this.#max = max;
    this.#refusal = refusal;
    this.#meter = meter;
    this.#prefix = Buffer.alloc(lengthBytes);
  }

  /** Bytes held for the message under way (its prefix and the body buffer allocated for it). */
  get held(): number {
    return this.#prefixFill + (this.#body?.length ?? 0);
  }

  /**
   * Reads from `chunk` at `offset` until one message is whole (`onBody` gets its body, a view valid
   * during the call) or the chunk is used up. Returns the offset reached; `done` tells which.
   */
  read(chunk: Buffer, offset: number, onBody: (body: Buffer) => void): { offset: number; done: boolean } {
    const n = this.#lengthBytes;
    if (this.#body === undefined) {
      let length: number;
      if (this.#prefixFill === 0 && chunk.length - offset >= n) {
        length = n === 2 ? chunk.readUInt16BE(offset) : chunk.readUInt32BE(offset);
        offset += n;
      } else {
        const take = Math.min(n - this.#prefixFill, chunk.length - offset);
        chunk.copy(this.#prefix, this.#prefixFill, offset, offset + take);
        this.#prefixFill += take;
        offset += take;
        if (this.#prefixFill < n) return { offset, done: false };
        this.#prefixFill = 0;
        length = n === 2 ? this.#prefix.readUInt16BE(0) : this.#prefix.readUInt32BE(0);
      }
      if (length > this.#max) {
        throw new ProtocolError(this.#refusal.code, `${this.#refusal.what} of ${length} bytes exceeds the ${this.#max}-byte limit`);
      }
      if (chunk.length - offset >= length) {
        onBody(chunk.subarray(offset, offset + length));
        return { offset: offset + length, done: true };
      }
      this.#body = Buffer.allocUnsafe(length);
      this.#bodyFill = 0;
    }
    const body = this.#body;
    const take = Math.min(body.length - this.#bodyFill, chunk.length - offset);
    chunk.copy(body, this.#bodyFill, offset, offset + take);
    if (this.#meter) this.#meter.copied += take;
    this.#bodyFill += take;
    offset += take;
    if (this.#bodyFill < body.length) return { offset, done: false };
    this.#body = undefined;
    onBody(body);
    return { offset, done: true };
  }
}

/** Incremental decoder of u32-length JSON frames (the control channel). */
export class JsonFrameDecoder {
  readonly #reader: LengthPrefixed;
  #onMessage: (value: unknown) => void = () => undefined;
  readonly #onBody = (body: Buffer): void => {
    this.#onMessage(parseJson(body));
  };

  /** Messages above `maxBytes` are refused (ERR_CONTROL_TOO_LARGE) as soon as their length is read. */
  constructor(maxBytes: number, meter?: CopyMeter) {
    this.#reader = new LengthPrefixed(4, maxBytes, { code: 'ERR_CONTROL_TOO_LARGE', what: 'control message' }, meter);
  }

  /**
   * Hands each complete message in `chunk` (parsed JSON, not yet validated) to `onMessage` as it is
   * decoded, so the messages before a bad frame arrive however TCP cut the bytes; then throws the
   * bad frame's coded error.
   */
  feed(chunk: Buffer, onMessage: (value: unknown) => void): void {
    this.#onMessage = onMessage;
    let offset = 0;
    while (offset < chunk.length) offset = this.#reader.read(chunk, offset, this.#onBody).offset;
  }

  /** The complete messages in `chunk`; throws on a bad frame (messages before it are lost: use feed). */
  push(chunk: Buffer): unknown[] {
    const out: unknown[] = [];
    this.feed(chunk, (value) => out.push(value));
    return out;
  }
}

function parseJson(body: Buffer, what = 'message'): unknown {
  try {
    return JSON.parse(body.toString('utf8'));
  } catch (err) {
    throw new ProtocolError('ERR_FRAME_JSON', `${what} is not valid JSON`, { cause: err });
  }
}

/** A u16-length frame read by JsonFrame16Reader: its JSON (not yet validated) and the bytes of the chunk after it. */
export interface Frame16 {
  value: unknown;
  rest: Buffer;
}

/**
 * Reads one u16-length JSON frame (the stream-open header), fed chunk by chunk. A frame above
 * `maxBytes` is refused (ERR_OPEN_HEADER_TOO_LARGE) as soon as its length is read; a body that is
 * not JSON is ERR_FRAME_JSON naming `what`.
 */
export class JsonFrame16Reader {
  readonly #reader: LengthPrefixed;
  readonly #what: string;
  #value: unknown;
  readonly #onBody = (body: Buffer): void => {
    this.#value = parseJson(body, this.#what);
  };

  constructor(maxBytes: number, what: string, meter?: CopyMeter) {
    this.#reader = new LengthPrefixed(2, maxBytes, { code: 'ERR_OPEN_HEADER_TOO_LARGE', what }, meter);
    this.#what = what;
  }

  /** Bytes held for a frame not yet complete. */
  get held(): number {
    return this.#reader.held;
  }

  /** The frame, once `chunk` completes it (`rest`: a view of what follows it in `chunk`); undefined before. */
  push(chunk: Buffer): Frame16 | undefined {
    const { offset, done } = this.#reader.read(chunk, 0, this.#onBody);
    if (!done) return undefined;
    const value = this.#value;
    this.#value = undefined;
    return { value, rest: chunk.subarray(offset) };
  }
}

/**
 * The u16-length JSON frame at the start of `buf`: its JSON (not yet validated) and how many bytes
 * it took, or undefined while it is incomplete. Throws ERR_FRAME_JSON, naming `what`, when the body
 * is not JSON.
 */
export function parseJsonFrame16(buf: Buffer, what: string): { value: unknown; size: number } | undefined {
  if (buf.length < 2) return undefined;
  const size = 2 + buf.readUInt16BE(0);
  if (buf.length < size) return undefined;
  return { value: parseJson(buf.subarray(2, size), what), size };
}

/**
 * Reads one u16-length JSON frame (at most `maxBytes`) from the start of `stream` and leaves any
 * bytes after it in the stream (paused) for whoever pipes it next.
 */
export function readJsonFrame16(stream: Readable, timeoutMs: number, what: string, maxBytes = 0xffff): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const reader = new JsonFrame16Reader(maxBytes, what);
    const timer = setTimeout(() => fail(new UnderpassError('ERR_OPEN_TIMEOUT', `no ${what} within ${timeoutMs} ms`)), timeoutMs);
    const onData = (chunk: Buffer): void => {
      let frame: Frame16 | undefined;
      try {
        frame = reader.push(chunk);
      } catch (err) {
        cleanup();
        stream.pause();
        reject(err as Error);
        return;
      }
      if (!frame) return;
      cleanup();
      stream.pause();
      if (frame.rest.length > 0) stream.unshift(frame.rest);
      resolve(frame.value);
    };
    const onEnd = (): void => fail(new UnderpassError('ERR_OPEN_EOF', `stream ended before the ${what}`));
    const onError = (err: Error): void => fail(err);
    function fail(err: Error): void {
      cleanup();
      reject(err);
    }
    function cleanup(): void {
      clearTimeout(timer);
      stream.off('data', onData);
      stream.off('end', onEnd);
      stream.off('error', onError);
    }
    stream.on('data', onData);
    stream.once('end', onEnd);
    stream.once('error', onError);
  });
}
