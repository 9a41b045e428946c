/**
 * One yamux stream as a plain object: the protocol state and flow control,
 * without a Node stream. Its consumer is a `ChannelSink` (the relay, or the
 * `MuxStream` Duplex adapter for code that wants a Node stream: the control
 * channel, tests). A connection through the tunnel is carried by a socket and
 * a channel at each end; a Duplex in between added two more stream state
 * machines per connection and side, and every message passed them once more
 * (docs/benchmarks.md, connections).
 *
 * Flow control follows the spec with two deliberate choices. Receive credit is
 * returned to the peer when the consumer says it *consumed* bytes
 * (`consumed(n)`), never on arrival: a slow consumer stops its writer once one
 * window is outstanding, and a channel never holds more than its window of
 * unconsumed bytes. And the window is the session's to size
 * (StreamHost.windowTarget): the SYN/ACK raises it to the share a new stream
 * would get (the full maxStreamWindow while it is alone), counting the streams
 * raised at open that are not receiving yet, so a burst of opens does not hand
 * out one full window each; once the channel has consumed half the initial
 * window it counts as a receiver, and each later grant tops it up to its
 * current share of maxSessionWindow. (Raising at open rather than on first
 * consumption keeps a lone transfer's start exactly as with a fixed window;
 * measured, the slower start tipped some worker processes into a full-GC mode
 * for the rest of the transfer.)
 *
 * What the session's channels hold together is bounded too (StreamHost.buffered,
 * limits.streamBufferBytes): every byte delivered counts until its consumer says
 * it consumed it (or the channel is dropped). Windows alone cannot bound it — a
 * peer may send the initial 256 KiB on every new stream without any grant — so
 * a channel whose consumer keeps bytes while the session holds more than the
 * limit is reset (ERR_STREAM_BUFFER_LIMIT), and past half the limit new streams
 * get no raise and grants shrink to the initial window. Two counter updates per
 * chunk; no pausing of the transport, which could deadlock streams whose
 * consumers wait for window updates behind it.
 */
import { UnderpassError } from '../errors.js';
import type { MuxConfig } from './config.js';
import { encodeHeader, Flag, FrameType, INITIAL_WINDOW } from './frame.js';
import { keepAsView } from '../views.js';

type Callback = (err?: Error | null) => void;

/**
 * Data frames at least this large are bulk: the session flushes them after their callback rather
 * than after the event-loop turn (Session.#scheduleFlush), and a read this large may go to the
 * transport in place (writeTransient); smaller ones are batched with the turn's other frames.
 */
export const BULK_PAYLOAD = 16 * 1024;

/** What a channel needs from its session. */
export interface StreamHost {
  readonly config: MuxConfig;
  /** `urgent`: write after the current callback rather than after the event-loop turn (see Session). */
  sendFrame(header: Buffer, payload: Buffer | undefined, cb?: Callback, urgent?: boolean): void;
  /** A Data frame written through at once from the caller's buffer (see Session.sendDataInPlace); false if it was not sent. */
  sendDataInPlace(streamId: number, buf: Buffer, start: number, end: number, done: () => void): boolean;
  streamFinished(channel: Channel): void;
  /** The receive window a channel should have now; `receiving`: it is counted as a receiver already. */
  windowTarget(receiving: boolean): number;
  /** The window a new channel is raised to at its SYN/ACK. */
  openWindowTarget(): number;
  /** A channel became a receiver (+1: its window was raised) or stopped being one (-1). */
  receiverCount(delta: 1 | -1): void;
  /** A channel was raised at open and is not a receiver yet (+1), or no longer (-1). */
  openingCount(delta: 1 | -1): void;
  /** The bytes all channels of the session hold for their consumers, and the limit on them. */
  readonly buffered: BufferedBytes;
  /** A channel is reset for holding bytes while the session is over `buffered.limit` (for metrics). */
  bufferLimitHit(message: string): void;
  /** The transport is full: writers should wait. */
  readonly congested: boolean;
  /** Call `channel`'s sink's onWritable once the transport has drained. */
  waitForDrain(channel: Channel): void;
  /** Takes `n` bytes of the session's open buffer budget; false when they do not fit (nothing taken). */
  holdOpenBytes(n: number): boolean;
  /** Gives back bytes taken with holdOpenBytes. */
  releaseOpenBytes(n: number): void;
}

/** The consumer of a channel. Every method is called synchronously from the session's read or from a channel call. */
export interface ChannelSink {
  /**
   * Payload from the peer. `chunk` is a view into the transport's buffer: write it on, or copy it
   * if it is kept. Report what was consumed with `Channel.consumed` (the peer's credit).
   */
  onData(chunk: Buffer): void;
  /** The peer will send nothing more (FIN). */
  onEnd(): void;
  /** The channel is gone: reset by the peer, or its session ended. Nothing more arrives or leaves. */
  onAbort(err: Error): void;
  /** A `write` that returned false can be followed by more now (credit came back, the transport drained). */
  onWritable(): void;
}

export type StreamState = 'open' | 'local-closed' | 'remote-closed' | 'closed' | 'reset';

/**
 * Bytes the channels of one session hold that the peer sent and their consumers have not reported
 * consumed (MuxConfig.streamBufferBytes is the limit). One object per session, updated in place.
 */
export interface BufferedBytes {
  held: number;
  readonly limit: number;
}

/** Where a channel stands in the session's window sharing. */
enum Share {
  None,
  /** Its window was raised at open; it has not consumed enough to count as a receiver yet. */
  Opening,
  Receiving,
}

/** Events that arrived before a sink was attached (an accepted channel's first frames). */
interface Early {
  data: Buffer[];
  end: boolean;
  abort: Error | undefined;
}

export class Channel {
  readonly id: number;
  readonly #host: StreamHost;
  readonly #buffered: BufferedBytes;
  #sink: ChannelSink | undefined;
  #early: Early | undefined;
  #sendWindow = INITIAL_WINDOW;
  /** Bytes the peer may still send before our next window update. */
  #recvWindow = INITIAL_WINDOW;
  /** Bytes the consumer reported consumed, ever. */
  #consumed = 0;
  /** Receive credit given to the peer, ever (the initial window included). */
  #granted = INITIAL_WINDOW;
  /** Bytes consumed when credit was last given. */
  #consumedAtGrant = 0;
  #share = Share.None;
  /** What this channel held of `#buffered` was given back (it was reset or aborted; its consumer drops it). */
  #released = false;
  #localFin = false;
  #remoteFin = false;
  #reset = false;
  #finished = false;
  /** Bytes written while the send window was exhausted, with the write's callback. */
  #pending: Buffer | undefined;
  #pendingCb: Callback | undefined;
  /** end() called while bytes were pending: the FIN follows them. */
  #finAfterPending: { cb: Callback | undefined } | undefined;
  /** Accepted with `_announceLater`: the ACK waits for this end's first frame. */
  #ackPending = false;
  /** A write returned false: tell the sink when it may write again. */
  #wantWritable = false;
  /** After an in-place write: the writer may go on. */
  readonly #inPlaceDone = (): void => this.#notifyWritable();
  /** Bytes sent and received on this channel (Data payload only). */
  bytesWritten = 0;
  bytesRead = 0;

  constructor(host: StreamHost, id: number) {
    this.id = id;
    this.#host = host;
    this.#buffered = host.buffered;
  }

  get state(): StreamState {
    if (this.#reset) return 'reset';
    if (this.#localFin && this.#remoteFin) return 'closed';
    if (this.#localFin) return 'local-closed';
    if (this.#remoteFin) return 'remote-closed';
    return 'open';
  }

  /** Reset or aborted: nothing more flows either way. */
  get isReset(): boolean {
    return this.#reset;
  }

  /** The session this channel belongs to (per-session state of its consumers is keyed by it). */
  get host(): StreamHost {
    return this.#host;
  }

  /** Receive credit the peer currently has (for the session's window check). */
  get recvWindow(): number {
    return this.#recvWindow;
  }

  /**
   * Sets the consumer. What arrived before (data, FIN, reset) is handed over at once, in order;
   * a channel accepted from the peer may carry its first bytes in the frame that opened it.
   */
  attach(sink: ChannelSink): void {
    if (this.#sink) throw new Error(`stream ${this.id} already has a consumer`);
    this.#sink = sink;
    const early = this.#early;
    if (!early) return;
    this.#early = undefined;
    for (const chunk of early.data) sink.onData(chunk);
    if (early.end) sink.onEnd();
    if (early.abort) sink.onAbort(early.abort);
  }

  /**
   * Sends `chunk` (split into frames of at most maxFrameSize, as the send window allows). False
   * when the writer should stop until its sink's onWritable: the window is used up (the rest is
   * kept and sent as credit comes back) or the transport is full. `cb` runs once the last byte
   * was handed to the transport (failed with the reason if the channel is reset first).
   */
  write(chunk: Buffer, cb?: Callback): boolean {
    if (this.#reset || this.#localFin) {
      cb?.(new UnderpassError('ERR_STREAM_RESET', this.#reset ? `stream ${this.id} was reset` : `stream ${this.id} was ended`));
      return true;
    }
    if (this.#ackPending) this.#ack();
    if (this.#pending) {
      // A writer that did not wait: keep the order, one callback per pending block.
      const earlier = this.#pendingCb;
      this.#pending = Buffer.concat([this.#pending, chunk]);
      this.#pendingCb = earlier && cb ? (err) => (earlier(err), cb(err)) : (earlier ?? cb);
      this.#wantWritable = true;
      return false;
    }
    this.#send(chunk, cb);
    if (this.#pending) {
      this.#wantWritable = true;
      return false;
    }
    if (this.#host.congested) {
      this.#wantWritable = true;
      this.#host.waitForDrain(this);
      return false;
    }
    return true;
  }

  /**
   * Sends `buf[start, end)`: bytes valid only during this call (a read buffer shared by every
   * socket), with at least IN_PLACE_HEADROOM (session.ts) free bytes before `start` for the frame
   * headers. A bulk write that the send window takes whole goes to the transport from `buf` itself
   * when nothing is queued ahead of it — no copy, no allocation — and returns false: the writer
   * waits for onWritable, once the transport has sent that write on (its next read would otherwise
   * find the transport busy, and be copied). Anything else is copied and sent as `write` sends it,
   * with `write`'s answer.
   */
  writeTransient(buf: Buffer, start: number, end: number): boolean {
    const n = end - start;
    if (n >= BULK_PAYLOAD && !this.#reset && !this.#localFin && !this.#ackPending && !this.#pending && n <= this.#sendWindow
      && n <= this.#host.config.maxFrameSize && this.#host.sendDataInPlace(this.id, buf, start, end, this.#inPlaceDone)) {
      this.#sendWindow -= n;
      this.bytesWritten += n;
      // Read nothing more until this write is through: the next read would find the transport busy and be copied.
      this.#wantWritable = true;
      return false;
    }
    return this.write(Buffer.from(buf.subarray(start, end)));
  }

  /** Half-closes our side (FIN) once pending bytes are sent. `cb` when the FIN was handed to the transport. */
  end(cb?: Callback): void {
    if (this.#reset) {
      cb?.(new UnderpassError('ERR_STREAM_RESET', `stream ${this.id} was reset`));
      return;
    }
    if (this.#localFin || this.#finAfterPending) {
      cb?.();
      return;
    }
    if (this.#pending) {
      this.#finAfterPending = { cb };
      return;
    }
    this.#sendFin(cb);
  }

  /**
   * Abandons the channel both ways: RST to the peer (unless it closed cleanly already); pending
   * writes fail with `err`. The consumer drops what it holds: it no longer counts as buffered.
   */
  reset(err?: Error): void {
    this.#ackPending = false; // an RST needs no ACK before it
    if (!this.#reset && !(this.#localFin && this.#remoteFin)) {
      this.#reset = true;
      this.#host.sendFrame(encodeHeader(FrameType.WindowUpdate, Flag.RST, this.id, 0), undefined);
    }
    if (this.#pendingCb || this.#finAfterPending) this.#failPending(err ?? new UnderpassError('ERR_STREAM_DESTROYED', `stream ${this.id} was destroyed`));
    else this.#pending = undefined;
    this.#release();
    this.#finish();
  }

  /**
   * The consumer keeps `n` bytes before the channel relays (an open header, early data): they count
   * against the session's open buffer budget (limits.openBufferBytes). False when they do not fit:
   * the consumer must drop the channel. Give them back with `releaseOpen`.
   */
  holdOpen(n: number): boolean {
    return this.#host.holdOpenBytes(n);
  }

  releaseOpen(n: number): void {
    this.#host.releaseOpenBytes(n);
  }

  /**
   * The consumer is done with `n` more bytes of what onData delivered (written on, or dropped): the
   * peer may get credit, and the session's buffered bytes go down. Also after the channel finished:
   * a relay credits bytes its socket took late.
   */
  consumed(n: number): void {
    this.#consumed += n;
    if (!this.#released) this.#buffered.held -= n;
    this.#maybeGrant();
  }

  /** @internal Send the opening frame: SYN (we opened) or ACK (we accepted), raising the window. */
  _announce(flag: Flag.SYN | Flag.ACK): void {
    const delta = this.#host.openWindowTarget() - INITIAL_WINDOW;
    if (delta > 0) {
      this.#granted += delta;
      this.#recvWindow += delta;
      this.#share = Share.Opening;
      this.#host.openingCount(1);
    }
    this.#host.sendFrame(encodeHeader(FrameType.WindowUpdate, flag, this.id, delta), undefined);
  }

  /**
   * @internal Accepted as a channel: the ACK (and its window raise) goes out with the first frame
   * this end sends — for a tunnel connection the open response, after the dial — so that both
   * leave in one tunnel write instead of two. Until then the peer may send the initial window.
   */
  _announceLater(): void {
    this.#ackPending = true;
  }

  #ack(): void {
    this.#ackPending = false;
    this._announce(Flag.ACK);
  }

  /** @internal The session checked `length <= recvWindow` before the payload arrives. */
  _reserve(length: number): void {
    this.#recvWindow -= length;
  }

  /**
   * Whether a consumer may hold `chunk` (a view of the transport's buffer, delivered by onData) as it
   * is, or must copy it: how much a view may pin depends on what the session holds (views.ts).
   */
  keepAsView(chunk: Buffer): boolean {
    return keepAsView(chunk, this.#buffered);
  }

  /** @internal Part of a Data frame's payload. `chunk` is a view into the transport's buffer. */
  _receive(chunk: Buffer): void {
    if (this.#remoteFin || this.#reset) return;
    this.bytesRead += chunk.length;
    const buffered = this.#buffered;
    buffered.held += chunk.length;
    const sink = this.#sink;
    if (sink) sink.onData(chunk);
    else this.#earlyEvents().data.push(Buffer.from(chunk)); // a view would pin the transport buffer
    if (buffered.held > buffered.limit && !this.#reset && this.bytesRead > this.#consumed) this.#overBuffered();
  }

  /** @internal Window update from the peer. */
  _grantSend(delta: number): void {
    if (delta === 0) return;
    this.#sendWindow = Math.min(this.#sendWindow + delta, 0xffffffff);
    const pending = this.#pending;
    if (!pending || this.#sendWindow === 0) return;
    const cb = this.#pendingCb;
    this.#pending = undefined;
    this.#pendingCb = undefined;
    this.#send(pending, cb);
    if (this.#pending) return;
    const fin = this.#finAfterPending;
    if (fin) {
      this.#finAfterPending = undefined;
      this.#sendFin(fin.cb);
    }
    this.#notifyWritable();
  }

  /** @internal ACK / FIN / RST flags from the peer. */
  _applyFlags(flags: number): void {
    if (flags & Flag.RST) {
      this.#abort(new UnderpassError('ERR_STREAM_RESET', `stream ${this.id} was reset by the peer`));
      return;
    }
    if (flags & Flag.FIN && !this.#remoteFin && !this.#reset) {
      this.#remoteFin = true;
      this.#stopReceiving();
      if (this.#localFin) this.#finish();
      const sink = this.#sink;
      if (sink) sink.onEnd();
      else this.#earlyEvents().end = true;
    }
  }

  /** @internal The session is gone; end this channel with its error. */
  _abort(err: Error): void {
    this.#abort(err);
  }

  /** @internal The transport drained (after waitForDrain). */
  _drained(): void {
    if (!this.#pending) this.#notifyWritable();
  }

  #abort(err: Error): void {
    if (this.#reset) return;
    this.#reset = true;
    this.#failPending(err);
    this.#release();
    this.#finish();
    const sink = this.#sink;
    if (sink) sink.onAbort(err);
    else this.#earlyEvents().abort = err;
  }

  /**
   * The session's streams hold more than the limit and this one keeps bytes: reset it (RST), so
   * its consumer drops what it holds (a relay destroys its socket and the bytes queued there).
   */
  #overBuffered(): void {
    const { held, limit } = this.#buffered;
    const message = `the session's streams hold ${held} bytes not yet taken by their targets or clients, over the ${limit}-byte limit; stream ${this.id} holds ${this.bytesRead - this.#consumed} of them and is reset`;
    this.#host.bufferLimitHit(message);
    this.#ackPending = false;
    this.#host.sendFrame(encodeHeader(FrameType.WindowUpdate, Flag.RST, this.id, 0), undefined);
    this.#abort(new UnderpassError('ERR_STREAM_BUFFER_LIMIT', message));
  }

  /** What this channel holds no longer counts: its consumer is dropping it. */
  #release(): void {
    if (this.#released) return;
    this.#released = true;
    this.#buffered.held -= this.bytesRead - this.#consumed;
  }

  /** Where events wait until a sink is attached. */
  #earlyEvents(): Early {
    return (this.#early ??= { data: [], end: false, abort: undefined });
  }

  #notifyWritable(): void {
    if (!this.#wantWritable || this.#reset) return;
    if (this.#host.congested) {
      this.#host.waitForDrain(this);
      return;
    }
    this.#wantWritable = false;
    this.#sink?.onWritable();
  }

  #send(chunk: Buffer, cb: Callback | undefined): void {
    const maxFrame = this.#host.config.maxFrameSize;
    while (chunk.length > 0) {
      if (this.#sendWindow === 0) {
        this.#pending = chunk;
        this.#pendingCb = cb;
        return;
      }
      const n = Math.min(chunk.length, this.#sendWindow, maxFrame);
      const last = n === chunk.length;
      this.#sendWindow -= n;
      this.bytesWritten += n;
      this.#host.sendFrame(encodeHeader(FrameType.Data, 0, this.id, n), last ? chunk : chunk.subarray(0, n), last ? cb : undefined);
      chunk = chunk.subarray(n);
    }
  }

  #sendFin(cb: Callback | undefined): void {
    if (this.#ackPending) this.#ack();
    this.#localFin = true;
    this.#host.sendFrame(encodeHeader(FrameType.WindowUpdate, Flag.FIN, this.id, 0), undefined, cb);
    if (this.#remoteFin) this.#finish();
  }

  #failPending(err: Error): void {
    const cb = this.#pendingCb;
    const fin = this.#finAfterPending;
    this.#pending = undefined;
    this.#pendingCb = undefined;
    this.#finAfterPending = undefined;
    cb?.(err);
    fin?.cb?.(err);
  }

  /**
   * Tops the peer's credit up to the window target once at most half of it is outstanding (as
   * hashicorp/yamux does with a fixed window) and at least half the initial window was consumed
   * since the last grant (a channel carrying a few small messages sends no updates at all).
   */
  #maybeGrant(): void {
    if (this.#remoteFin || this.#reset) return;
    const consumed = this.#consumed;
    if (consumed - this.#consumedAtGrant < INITIAL_WINDOW / 2) return;
    if (this.#ackPending) this.#ack(); // the ACK's window raise first; the grant below tops up from there
    // Credit the peer has not used yet, plus bytes received and not yet consumed.
    const outstanding = this.#granted - consumed;
    const target = this.#host.windowTarget(this.#share === Share.Receiving);
    if (outstanding > target / 2) return;
    const delta = target - outstanding;
    this.#granted += delta;
    this.#consumedAtGrant = consumed;
    this.#recvWindow += delta;
    if (this.#share !== Share.Receiving && target > INITIAL_WINDOW) {
      if (this.#share === Share.Opening) this.#host.openingCount(-1);
      this.#share = Share.Receiving;
      this.#host.receiverCount(1);
    }
    this.#host.sendFrame(encodeHeader(FrameType.WindowUpdate, 0, this.id, delta), undefined, undefined, true);
  }

  #stopReceiving(): void {
    const share = this.#share;
    if (share === Share.None) return;
    this.#share = Share.None;
    if (share === Share.Receiving) this.#host.receiverCount(-1);
    else this.#host.openingCount(-1);
  }

  #finish(): void {
    if (this.#finished) return;
    this.#finished = true;
    this.#stopReceiving();
    this.#host.streamFinished(this);
  }
}
