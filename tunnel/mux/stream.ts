/**
 * One yamux stream as a Node Duplex.
 *
 * Flow control follows the spec with two deliberate choices. Receive credit is
 * returned to the peer when the application *consumes* bytes (they leave the
 * Readable buffer), never on arrival: a paused reader stops its writer once
 * one window is buffered, and a stream never holds more than its window of
 * unread bytes. And the window is the session's to size (StreamHost
 * .windowTarget): the SYN/ACK raises it to the share a new receiver would get
 * (the full maxStreamWindow while it is alone); once the stream has consumed
 * half the initial window it counts as a receiver, and each later grant tops
 * it up to its current share of maxSessionWindow. (Raising at open rather than
 * on first consumption keeps a lone transfer's start exactly as with a fixed
 * window; measured, the slower start tipped some worker processes into a
 * full-GC mode for the rest of the transfer.)
 */
import { Duplex } from 'node:stream';
import { UnderpassError } from '../errors.js';
import type { MuxConfig } from './config.js';
import { encodeHeader, Flag, FrameType, INITIAL_WINDOW } from './frame.js';

/** What a stream needs from its session. */
export interface StreamHost {
  readonly config: MuxConfig;
  /** `urgent`: write after the current callback rather than after the event-loop turn (see Session). */
  sendFrame(header: Buffer, payload: Buffer | undefined, cb?: (err?: Error | null) => void, urgent?: boolean): void;
  streamFinished(stream: MuxStream): void;
  /** The receive window a stream should have now; `receiving`: it is counted as a receiver already. */
  windowTarget(receiving: boolean): number;
  /** A stream became a receiver (+1: its window was raised) or stopped being one (-1). */
  receiverCount(delta: 1 | -1): void;
}

export type StreamState = 'open' | 'local-closed' | 'remote-closed' | 'closed' | 'reset';

type WriteCallback = (err?: Error | null) => void;

export class MuxStream extends Duplex {
  readonly id: number;
  readonly #host: StreamHost;
  #sendWindow = INITIAL_WINDOW;
  /** Bytes the peer may still send before our next window update. */
  #recvWindow = INITIAL_WINDOW;
  /** Bytes pushed into the Readable buffer, ever. */
  #delivered = 0;
  /** Receive credit given to the peer, ever (the initial window included). */
  #granted = INITIAL_WINDOW;
  /** Bytes consumed when credit was last given. */
  #consumedAtGrant = 0;
  /** Counted among the session's receivers (window raised above the initial one). */
  #receiving = false;
  #localFin = false;
  #remoteFin = false;
  #reset = false;
  #finished = false;
  #pendingWrite: { chunk: Buffer; cb: WriteCallback } | undefined;
  /** Bytes sent and received on this stream (Data payload only). */
  bytesWritten = 0;
  bytesRead = 0;

  constructor(host: StreamHost, id: number) {
    super({ allowHalfOpen: true, decodeStrings: true, emitClose: true });
    this.id = id;
    this.#host = host;
  }

  get state(): StreamState {
    if (this.#reset) return 'reset';
    if (this.#localFin && this.#remoteFin) return 'closed';
    if (this.#localFin) return 'local-closed';
    if (this.#remoteFin) return 'remote-closed';
    return 'open';
  }

  /** Receive credit the peer currently has (for the session's window check). */
  get recvWindow(): number {
    return this.#recvWindow;
  }

  /** @internal Send the opening frame: SYN (we opened) or ACK (we accepted), raising the window. */
  _announce(flag: Flag.SYN | Flag.ACK): void {
    const delta = this.#host.windowTarget(false) - INITIAL_WINDOW;
    this.#granted += delta;
    this.#recvWindow += delta;
    this.#host.sendFrame(encodeHeader(FrameType.WindowUpdate, flag, this.id, delta), undefined);
  }

  /** @internal The session checked `length <= recvWindow` before the payload arrives. */
  _reserve(length: number): void {
    this.#recvWindow -= length;
  }

  /** @internal Part of a Data frame's payload. `chunk` is a view into the transport's buffer. */
  _receive(chunk: Buffer): void {
    if (this.#remoteFin || this.#reset || this.destroyed) return;
    this.bytesRead += chunk.length;
    this.#delivered += chunk.length;
    // Handed straight to a flowing consumer, a view is fine. Kept in our buffer, a view pins its
    // whole transport buffer: copy small views (which would pin far more than they hold), keep
    // large ones (bulk data), so memory stays within about twice the window without copying bulk.
    const direct = this.readableFlowing === true && this.readableLength === 0;
    const keepView = direct || chunk.length * 2 >= chunk.buffer.byteLength;
    this.push(keepView ? chunk : Buffer.from(chunk));
    if (this.readableLength === 0) this.#maybeGrant();
  }

  /** @internal Window update from the peer. */
  _grantSend(delta: number): void {
    if (delta === 0) return;
    this.#sendWindow = Math.min(this.#sendWindow + delta, 0xffffffff);
    const pending = this.#pendingWrite;
    if (pending && this.#sendWindow > 0) {
      this.#pendingWrite = undefined;
      this.#writeChunk(pending.chunk, pending.cb);
    }
  }

  /** @internal ACK / FIN / RST flags from the peer. */
  _applyFlags(flags: number): void {
    if (flags & Flag.RST) {
      this.#reset = true;
      this.#finish();
      this.destroy(new UnderpassError('ERR_STREAM_RESET', `stream ${this.id} was reset by the peer`));
      return;
    }
    if (flags & Flag.FIN && !this.#remoteFin) {
      this.#remoteFin = true;
      this.#stopReceiving();
      this.push(null);
      if (this.#localFin) this.#finish();
    }
  }

  /** @internal The session is gone; end this stream with its error. */
  _abort(err: Error): void {
    this.#reset = true;
    this.#finish();
    this.destroy(err);
  }

  override _read(): void {
    this.#maybeGrant();
  }

  /**
   * Node calls `_read()` before it takes the bytes being read out of the
   * buffer, so credit is also checked after every read() that returned data
   * (otherwise a `for await` reader a full window behind waits forever).
   */
  override read(size?: number): any {
    const chunk = super.read(size);
    if (chunk !== null) this.#maybeGrant();
    return chunk;
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, cb: WriteCallback): void {
    this.#writeChunk(chunk, cb);
  }

  override _writev(chunks: Array<{ chunk: Buffer }>, cb: WriteCallback): void {
    this.#writeChunk(chunks.length === 1 ? chunks[0]!.chunk : Buffer.concat(chunks.map((c) => c.chunk)), cb);
  }

  override _final(cb: WriteCallback): void {
    if (this.#reset) return cb(new UnderpassError('ERR_STREAM_RESET', `stream ${this.id} was reset`));
    this.#localFin = true;
    this.#host.sendFrame(encodeHeader(FrameType.WindowUpdate, Flag.FIN, this.id, 0), undefined, cb);
    if (this.#remoteFin) this.#finish();
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    if (!this.#reset && !(this.#localFin && this.#remoteFin)) {
      this.#reset = true;
      this.#host.sendFrame(encodeHeader(FrameType.WindowUpdate, Flag.RST, this.id, 0), undefined);
    }
    const pending = this.#pendingWrite;
    this.#pendingWrite = undefined;
    pending?.cb(err ?? new UnderpassError('ERR_STREAM_DESTROYED', `stream ${this.id} was destroyed`));
    this.#finish();
    cb(err);
  }

  #writeChunk(chunk: Buffer, cb: WriteCallback): void {
    if (this.#reset) return cb(new UnderpassError('ERR_STREAM_RESET', `stream ${this.id} was reset`));
    const maxFrame = this.#host.config.maxFrameSize;
    while (chunk.length > 0) {
      if (this.#sendWindow === 0) {
        this.#pendingWrite = { chunk, cb };
        return;
      }
      const n = Math.min(chunk.length, this.#sendWindow, maxFrame);
      const last = n === chunk.length;
      this.#sendWindow -= n;
      this.bytesWritten += n;
      this.#host.sendFrame(encodeHeader(FrameType.Data, 0, this.id, n), chunk.subarray(0, n), last ? cb : undefined);
      chunk = chunk.subarray(n);
    }
  }

  /**
   * Tops the peer's credit up to the window target once at most half of it is outstanding (as
   * hashicorp/yamux does with a fixed window) and at least half the initial window was consumed
   * since the last grant (a stream carrying a few small messages sends no updates at all).
   */
  #maybeGrant(): void {
    if (this.#remoteFin || this.#reset) return;
    const consumed = this.#delivered - this.readableLength;
    if (consumed - this.#consumedAtGrant < INITIAL_WINDOW / 2) return;
    // Credit the peer has not used yet, plus bytes received and not yet consumed.
    const outstanding = this.#granted - consumed;
    const target = this.#host.windowTarget(this.#receiving);
    if (outstanding > target / 2) return;
    const delta = target - outstanding;
    this.#granted += delta;
    this.#consumedAtGrant = consumed;
    this.#recvWindow += delta;
    if (!this.#receiving && target > INITIAL_WINDOW) {
      this.#receiving = true;
      this.#host.receiverCount(1);
    }
    this.#host.sendFrame(encodeHeader(FrameType.WindowUpdate, 0, this.id, delta), undefined, undefined, true);
  }

  #stopReceiving(): void {
    if (!this.#receiving) return;
    this.#receiving = false;
    this.#host.receiverCount(-1);
  }

  #finish(): void {
    if (this.#finished) return;
    this.#finished = true;
    this.#stopReceiving();
    this.#host.streamFinished(this);
  }
}
