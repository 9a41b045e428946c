/**
 * Length-prefixed JSON messages on a byte stream, shared by the control
 * channel (u32 length) and the stream-open header (u16 length).
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

const EMPTY = Buffer.alloc(0);

/** Incremental decoder of u32-length JSON frames. */
export class JsonFrameDecoder {
  readonly #maxBytes: number;
  #buffer: Buffer = EMPTY;

  constructor(maxBytes: number) {
    this.#maxBytes = maxBytes;
  }

  /** Returns the complete messages in `chunk` (parsed JSON, not yet validated). */
  push(chunk: Buffer): unknown[] {
    this.#buffer = this.#buffer.length === 0 ? chunk : Buffer.concat([this.#buffer, chunk]);
    const out: unknown[] = [];
    while (this.#buffer.length >= 4) {
      const length = this.#buffer.readUInt32BE(0);
      if (length > this.#maxBytes) {
        throw new ProtocolError('ERR_CONTROL_TOO_LARGE', `control message of ${length} bytes exceeds the ${this.#maxBytes}-byte limit`);
      }
      if (this.#buffer.length < 4 + length) break;
      out.push(parseJson(this.#buffer.subarray(4, 4 + length)));
      this.#buffer = this.#buffer.subarray(4 + length);
    }
    // A leftover view pins the whole transport buffer it came from for as long as the channel
    // lives (the control channel is mostly idle): keep nothing, or a copy of a partial frame.
    if (this.#buffer.length === 0) this.#buffer = EMPTY;
    else if (this.#buffer.length * 2 < this.#buffer.buffer.byteLength) this.#buffer = Buffer.from(this.#buffer);
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

/**
 * The u16-length JSON frame at the start of `buf` (the stream-open header): its JSON (not yet
 * validated) and how many bytes it took, or undefined while it is incomplete. Throws
 * ERR_FRAME_JSON, naming `what`, when the body is not JSON.
 */
export function parseJsonFrame16(buf: Buffer, what: string): { value: unknown; size: number } | undefined {
  if (buf.length < 2) return undefined;
  const size = 2 + buf.readUInt16BE(0);
  if (buf.length < size) return undefined;
  return { value: parseJson(buf.subarray(2, size), what), size };
}

/**
 * Reads one u16-length JSON frame from the start of `stream` and leaves any
 * bytes after it in the stream (paused) for whoever pipes it next.
 */
export function readJsonFrame16(stream: Readable, timeoutMs: number, what: string): Promise<unknown> {
  return new Promise((resolve, reject) => {
    let buffer: Buffer = Buffer.alloc(0);
    const timer = setTimeout(() => fail(new UnderpassError('ERR_OPEN_TIMEOUT', `no ${what} within ${timeoutMs} ms`)), timeoutMs);
    const onData = (chunk: Buffer): void => {
      buffer = buffer.length === 0 ? chunk : Buffer.concat([buffer, chunk]);
      let frame: { value: unknown; size: number } | undefined;
      try {
        frame = parseJsonFrame16(buffer, what);
      } catch (err) {
        cleanup();
        stream.pause();
        reject(err as Error);
        return;
      }
      if (!frame) return;
      cleanup();
      stream.pause();
      const rest = buffer.subarray(frame.size);
      if (rest.length > 0) stream.unshift(rest);
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
