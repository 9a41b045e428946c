/**
 * A multiplexer channel as a Node Duplex, for code that wants a Node stream
 * (the control channel, tests, tools). The data path of application
 * connections uses the channel itself (tunnel/relay.ts).
 *
 * Receive credit follows the Readable buffer: bytes count as consumed when
 * they leave it, so a paused reader stops its writer once one window is
 * buffered. Small views of the transport's buffer are copied when they are
 * kept (they would pin far more memory than they hold); large ones (bulk) are
 * kept as they are, so memory stays within about twice the window without
 * copying bulk data.
 */
import { Duplex } from 'node:stream';
import type { Channel, ChannelSink, StreamState } from './channel.js';

export type { StreamHost, StreamState } from './channel.js';

type WriteCallback = (err?: Error | null) => void;

export class MuxStream extends Duplex implements ChannelSink {
  readonly channel: Channel;
  /** Bytes pushed into the Readable buffer, ever. */
  #delivered = 0;
  /** Bytes reported to the channel as consumed, ever. */
  #reported = 0;

  constructor(channel: Channel) {
    super({ allowHalfOpen: true, decodeStrings: true, emitClose: true });
    this.channel = channel;
    channel.attach(this);
  }

  get id(): number {
    return this.channel.id;
  }

  get state(): StreamState {
    return this.channel.state;
  }

  get bytesWritten(): number {
    return this.channel.bytesWritten;
  }

  get bytesRead(): number {
    return this.channel.bytesRead;
  }

  // ---- ChannelSink ---------------------------------------------------------

  onData(chunk: Buffer): void {
    if (this.destroyed) return;
    this.#delivered += chunk.length;
    const direct = this.readableFlowing === true && this.readableLength === 0;
    const keepView = direct || this.channel.keepAsView(chunk);
    this.push(keepView ? chunk : Buffer.from(chunk));
    if (this.readableLength === 0) this.#report();
  }

  onEnd(): void {
    this.push(null);
  }

  onAbort(err: Error): void {
    this.destroy(err);
  }

  onWritable(): void {
    // Writes wait on their callbacks, which the channel calls; nothing to do.
  }

  // ---- Duplex --------------------------------------------------------------

  override _read(): void {
    this.#report();
  }

  /**
   * Node calls `_read()` before it takes the bytes being read out of the
   * buffer, so consumption is also reported after every read() that returned
   * data (otherwise a `for await` reader a full window behind waits forever).
   */
  override read(size?: number): any {
    const chunk = super.read(size);
    if (chunk !== null) this.#report();
    return chunk;
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, cb: WriteCallback): void {
    this.channel.write(chunk, cb);
  }

  override _writev(chunks: Array<{ chunk: Buffer }>, cb: WriteCallback): void {
    this.channel.write(chunks.length === 1 ? chunks[0]!.chunk : Buffer.concat(chunks.map((c) => c.chunk)), cb);
  }

  override _final(cb: WriteCallback): void {
    this.channel.end(cb);
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    this.channel.reset(err ?? undefined);
    cb(err);
  }

  #report(): void {
    const consumed = this.#delivered - this.readableLength;
    if (consumed > this.#reported) {
      this.channel.consumed(consumed - this.#reported);
      this.#reported = consumed;
    }
  }
}
