/**
 * A yamux session over any Node Duplex byte stream (TCP, TLS, a WebSocket
 * adapter, an in-memory pair). One reader (FrameReader → frame handlers), one
 * writer (frames queued in one event-loop turn are written together, corked), and one
 * close path (#terminate) that records why the session ended.
 */
import { EventEmitter } from 'node:events';
import type { Duplex } from 'node:stream';
import { ProtocolError, UnderpassError } from '../errors.js';
import type { LimitName } from '../limits.js';
import { ownerSlot } from '../owner.js';
import { muxConfig, type MuxConfig } from './config.js';
import {
  describeHeader,
  encodeHeader,
  Flag,
  FrameReader,
  FrameType,
  GoAwayCode,
  HEADER_SIZE,
  INITIAL_WINDOW,
  writeHeader,
  type FrameHandler,
  type FrameHeader,
} from './frame.js';
import { BULK_PAYLOAD, Channel, type BufferedBytes, type StreamHost } from './channel.js';
import { MuxStream } from './stream.js';

export interface SessionOptions {
  /** The dialling side is the client (odd stream ids); the accepting side the server (even). */
  client: boolean;
  config?: Partial<MuxConfig>;
  /** Injected clock for keepalive tests. */
  now?: () => number;
}

type Callback = (err?: Error | null) => void;

/** A transport that can write one frame from a caller's buffer at once (WebSocketStream). */
export interface InPlaceTransport {
  writeInPlace(buf: Buffer, start: number, end: number, done: () => void): boolean;
}

/**
 * A transport that bounds what a peer leaves unread by itself (WebSocketStream): it stops reading
 * from the peer while more than the limit of our output waits, and says so.
 */
export interface OutputLimitedTransport {
  limitUnreadOutput(bytes: number): void;
  /** Reading is paused because the peer left more than the limit unread. */
  readonly outputBlocked: boolean;
  /** Bytes written and not yet taken by the peer. */
  readonly unreadOutput: number;
}

/**
 * A transport the session may read and write past its Node stream sides (WebSocketStream): its
 * payload comes to `transportData` as it is decoded, and a flush is one `writeDirect` — the
 * message path then passes no Readable or Writable state machine of the transport at all.
 */
export interface DirectTransport {
  /** False: the transport already holds data for its Readable side; read it as a Duplex. */
  readDirect(reader: { transportData(chunk: Buffer): void }): boolean;
  /** False: nothing was written (the Writable side holds data); write as a Duplex. */
  writeDirect(chunks: Buffer[]): boolean;
  /** Full: wait for 'drain'. */
  readonly needDrain: boolean;
}

/** A flush of at least this many frames averaging at most SMALL_FRAME_AVERAGE bytes goes out as one buffer. */
const MANY_FRAMES = 64;
const SMALL_FRAME_AVERAGE = 128;

/** Bytes to leave free before a payload written in place: the yamux header and the largest WebSocket header. */
export const IN_PLACE_HEADROOM = HEADER_SIZE + 14;

const owner = ownerSlot<Session>('underpass.mux.session');

/** What every open session of this process buffers for its streams (for the underpass_stream_buffer_bytes gauge). */
const liveBuffers = new Set<BufferedBytes>();

interface PendingPing {
  resolve: (rttMs: number) => void;
  reject: (err: Error) => void;
  started: bigint;
  timer: NodeJS.Timeout | undefined;
}

export interface Session {
  /** A stream the peer opened, as a Duplex (when nobody listens for 'channel'). */
  on(event: 'stream', listener: (stream: MuxStream) => void): this;
  /**
   * A stream the peer opened, as a plain channel (tunnel/mux/channel.ts). With a listener here,
   * 'stream' is not emitted; the listener attaches a sink, or makes a Duplex with `new MuxStream(channel)`.
   */
  on(event: 'channel', listener: (channel: Channel) => void): this;
  on(event: 'goaway', listener: (code: number) => void): this;
  on(event: 'close', listener: (err: Error | undefined) => void): this;
  /** A keepalive ping was answered (round trip in milliseconds). */
  on(event: 'rtt', listener: (ms: number) => void): this;
  /**
   * The peer ran into one of the limits of tunnel/limits.ts (a stream refused over the stream
   * limit, the open buffer budget, ping replies dropped, the session closed for not reading, or
   * the transport's own: a WebSocket frame too large). For metrics; the refusal itself is done.
   */
  on(event: 'limit', listener: (limit: LimitName, message: string) => void): this;
  once(event: 'close', listener: (err: Error | undefined) => void): this;
  once(event: 'goaway', listener: (code: number) => void): this;
}

export class Session extends EventEmitter implements StreamHost, FrameHandler {
  readonly client: boolean;
  readonly config: MuxConfig;
  /** Resolves with the error that ended the session (undefined for a clean close). */
  readonly closed: Promise<Error | undefined>;
  readonly #transport: Duplex;
  /** The transport's in-place write (WebSocketStream.writeInPlace), if it has one. */
  readonly #inPlace: InPlaceTransport | undefined;
  /** The transport's own unread-output limit, if it has one (WebSocketStream). */
  readonly #outputLimited: OutputLimitedTransport | undefined;
  /** The transport read and written directly (WebSocketStream), if it agreed to it. */
  readonly #direct: DirectTransport | undefined;
  readonly #now: () => number;
  readonly #reader: FrameReader;
  readonly #streams = new Map<number, Channel>();
  /** Channels whose writer waits for the transport to drain. */
  #waitingForDrain = new Set<Channel>();
  #nextId: number;
  /** Streams that have consumed data and hold a window above the initial one (they share maxSessionWindow). */
  #receivers = 0;
  /** Streams whose window was raised at open and that are not receivers yet (a new stream's share counts them). */
  #opening = 0;
  /** Bytes the streams hold for their consumers (limited by config.streamBufferBytes). */
  readonly buffered: BufferedBytes;
  #out: Buffer[] = [];
  #outCallbacks: Callback[] = [];
  #heldCallbacks: Callback[] = [];
  /** A flush is queued as an immediate (after this event-loop turn) / as a microtask (after this callback). */
  #flushLaterScheduled = false;
  #flushSoonScheduled = false;
  readonly #flushSoon = (): void => {
    this.#flushSoonScheduled = false;
    this.#flush();
  };
  /** FIN flags of a Data frame wait until its payload has been delivered. */
  #deferredFlags: { streamId: number; flags: number } | undefined;
  readonly #pings = new Map<number, PendingPing>();
  #pingId = 0;
  /** Bytes held by streams before they relay (open headers, early data): limited by config.openBufferBytes. */
  #openHeld = 0;
  /** Reading from the transport is paused: more than config.unreadOutputBytes of our output waits. */
  #readPaused = false;
  /** A ping answer that waits for the transport to drain (the latest one; older ones are dropped). */
  #pendingPingAck: number | undefined;
  #localGoAway = false;
  #remoteGoAway = false;
  #isClosed = false;
  #closeError: Error | undefined;
  #resolveClosed!: (err: Error | undefined) => void;
  #lastInbound: number;
  #lastKeepalivePing: number;
  #keepaliveTimer: NodeJS.Timeout | undefined;

  constructor(transport: Duplex, options: SessionOptions) {
    super();
    this.client = options.client;
    this.config = muxConfig(options.config);
    this.#transport = transport;
    this.#inPlace = typeof (transport as Partial<InPlaceTransport>).writeInPlace === 'function' ? (transport as Duplex & InPlaceTransport) : undefined;
    this.#outputLimited = typeof (transport as Partial<OutputLimitedTransport>).limitUnreadOutput === 'function' ? (transport as Duplex & OutputLimitedTransport) : undefined;
    this.#outputLimited?.limitUnreadOutput(this.config.unreadOutputBytes);
    this.buffered = { held: 0, limit: this.config.streamBufferBytes };
    liveBuffers.add(this.buffered);
    this.#now = options.now ?? Date.now;
    this.#nextId = options.client ? 1 : 2;
    this.#reader = new FrameReader(this);
    this.#lastInbound = this.#now();
    this.#lastKeepalivePing = this.#lastInbound;
    this.closed = new Promise((resolve) => (this.#resolveClosed = resolve));
    // Shared listeners that find this session through the transport (tunnel/owner.ts): no
    // closures per session.
    owner.set(transport, this);
    transport.on('data', Session.#onData);
    transport.on('drain', Session.#onDrain);
    transport.on('end', Session.#onEnd);
    transport.on('error', Session.#onError);
    transport.on('close', Session.#onClose);
    transport.on('limit', Session.#onTransportLimit);
    const direct = transport as Duplex & Partial<DirectTransport>;
    this.#direct = typeof direct.readDirect === 'function' && direct.readDirect(this) ? (direct as Duplex & DirectTransport) : undefined;
    this.#startKeepalive();
  }

  static #onData(this: Duplex, chunk: Buffer): void {
    owner.of(this).#onTransportData(chunk);
  }

  static #onDrain(this: Duplex): void {
    const s = owner.of(this);
    s.#releaseHeldCallbacks();
    if (s.#readPaused && this.writableLength <= s.config.unreadOutputBytes / 2) {
      s.#readPaused = false;
      this.resume();
    }
  }

  static #onTransportLimit(this: Duplex, limit: LimitName, message: string): void {
    owner.of(this).emit('limit', limit, message);
  }

  static #onEnd(this: Duplex): void {
    const s = owner.of(this);
    s.#terminate(s.#localGoAway || s.#remoteGoAway ? undefined : new UnderpassError('ERR_MUX_EOF', 'the peer closed the connection'));
  }

  static #onError(this: Duplex, err: Error): void {
    owner.of(this).#terminate(new UnderpassError('ERR_MUX_TRANSPORT', `transport failed: ${err.message}`, { cause: err }));
  }

  static #onClose(this: Duplex): void {
    owner.of(this).#terminate(new UnderpassError('ERR_MUX_EOF', 'the connection closed'));
  }

  static #tick(s: Session): void {
    s.#keepaliveTick();
  }

  static #flushLater(s: Session): void {
    s.#flushLaterScheduled = false;
    s.#flush();
  }

  get isClosed(): boolean {
    return this.#isClosed;
  }

  get closeError(): Error | undefined {
    return this.#closeError;
  }

  /** The peer sent GoAway: no new streams may be opened towards it. */
  get remoteGoneAway(): boolean {
    return this.#remoteGoAway;
  }

  get localGoneAway(): boolean {
    return this.#localGoAway;
  }

  get streamCount(): number {
    return this.#streams.size;
  }

  /** Opens a stream as a Duplex. Data may be written at once (the spec allows it before the ACK). */
  open(): MuxStream {
    return new MuxStream(this.openChannel());
  }

  /** Opens a stream as a plain channel; attach a sink before the event loop turns. */
  openChannel(): Channel {
    if (this.#isClosed) throw new UnderpassError('ERR_MUX_SESSION_CLOSED', 'the session is closed', { cause: this.#closeError });
    if (this.#remoteGoAway) throw new UnderpassError('ERR_MUX_GOAWAY', 'the peer is going away and accepts no new streams');
    if (this.#localGoAway) throw new UnderpassError('ERR_MUX_GOAWAY', 'this session is going away');
    const id = this.#nextId;
    if (id > 0xffffffff - 2) throw new UnderpassError('ERR_MUX_IDS_EXHAUSTED', 'stream ids exhausted; open a new session');
    this.#nextId += 2;
    const channel = new Channel(this, id);
    this.#streams.set(id, channel);
    channel._announce(Flag.SYN);
    return channel;
  }

  /** Round-trip time in milliseconds. */
  ping(timeoutMs = this.config.keepaliveTimeoutMs || 10_000): Promise<number> {
    if (this.#isClosed) return Promise.reject(new UnderpassError('ERR_MUX_SESSION_CLOSED', 'the session is closed'));
    const id = (this.#pingId = (this.#pingId + 1) >>> 0);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pings.delete(id);
        reject(new UnderpassError('ERR_MUX_PING_TIMEOUT', `no ping answer within ${timeoutMs} ms`));
      }, timeoutMs);
      timer.unref();
      this.#pings.set(id, { resolve, reject, started: process.hrtime.bigint(), timer });
      this.#sendControl(encodeHeader(FrameType.Ping, Flag.SYN, 0, id));
    });
  }

  /** Tells the peer we accept no new streams; existing ones continue. */
  goAway(code: GoAwayCode = GoAwayCode.Normal): void {
    if (this.#localGoAway || this.#isClosed) return;
    this.#localGoAway = true;
    this.#sendControl(encodeHeader(FrameType.GoAway, 0, 0, code));
  }

  /**
   * Graceful end: GoAway, wait for open streams to finish up to `deadlineMs`,
   * then close. Streams still open at the deadline are reset.
   */
  async drain(deadlineMs: number): Promise<void> {
    this.goAway();
    if (this.#streams.size > 0 && !this.#isClosed) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, deadlineMs);
        const check = (): void => {
          if (this.#streams.size === 0 || this.#isClosed) done();
        };
        const interval = setInterval(check, 50);
        function done(): void {
          clearTimeout(timer);
          clearInterval(interval);
          resolve();
        }
        check();
      });
    }
    this.close();
  }

  /** Closes the session. With an error, the peer is told it was an internal error. */
  close(err?: Error): void {
    if (this.#isClosed) return;
    if (!this.#localGoAway) {
      this.#localGoAway = true;
      this.#sendControl(encodeHeader(FrameType.GoAway, 0, 0, err ? GoAwayCode.InternalError : GoAwayCode.Normal));
    }
    this.#flush();
    this.#terminate(err, true);
  }

  // ---- StreamHost ----------------------------------------------------------

  /** `urgent` (also implied by a payload of 16 KiB or more): flush after the current callback, not after the turn. */
  sendFrame(header: Buffer, payload: Buffer | undefined, cb?: Callback, urgent = false): void {
    if (this.#isClosed) {
      cb?.(new UnderpassError('ERR_MUX_SESSION_CLOSED', 'the session is closed', { cause: this.#closeError }));
      return;
    }
    this.#out.push(header);
    if (payload) this.#out.push(payload);
    if (cb) this.#outCallbacks.push(cb);
    this.#scheduleFlush(urgent || (payload !== undefined && payload.length >= BULK_PAYLOAD));
  }

  /**
   * A Data frame for `streamId` whose payload is `buf[start, end)`, with room for the frame headers
   * before `start`, written through at once — when nothing is queued ahead of it and the transport
   * can take it in place (see WebSocketStream.writeInPlace). False: nothing was sent. `done` runs
   * once the transport has sent it on.
   */
  sendDataInPlace(streamId: number, buf: Buffer, start: number, end: number, done: () => void): boolean {
    const t = this.#inPlace;
    if (!t || this.#isClosed || this.#out.length !== 0 || this.#heldCallbacks.length !== 0 || start < IN_PLACE_HEADROOM) return false;
    writeHeader(buf, start - HEADER_SIZE, FrameType.Data, 0, streamId, end - start);
    return t.writeInPlace(buf, start - HEADER_SIZE, end, done);
  }

  /**
   * Takes `n` bytes of the session's open buffer budget (config.openBufferBytes) for a stream that
   * holds them before it relays; false (and nothing taken) when they do not fit.
   */
  holdOpenBytes(n: number): boolean {
    if (this.#openHeld + n > this.config.openBufferBytes) {
      this.emit('limit', 'open_buffer_bytes', `the session's streams already hold ${this.#openHeld} bytes before relaying; ${n} more would exceed the ${this.config.openBufferBytes}-byte limit`);
      return false;
    }
    this.#openHeld += n;
    return true;
  }

  releaseOpenBytes(n: number): void {
    this.#openHeld -= n;
  }

  /** Bytes held under holdOpenBytes now. */
  get openBytesHeld(): number {
    return this.#openHeld;
  }

  streamFinished(channel: Channel): void {
    if (this.#streams.get(channel.id) === channel) this.#streams.delete(channel.id);
  }

  get congested(): boolean {
    return this.#heldCallbacks.length > 0 || (this.#direct ? this.#direct.needDrain : this.#transport.writableNeedDrain);
  }

  waitForDrain(channel: Channel): void {
    this.#waitingForDrain.add(channel);
  }

  /**
   * A receiving stream's share of maxSessionWindow, between the initial window and maxStreamWindow.
   * While the streams hold more than half of config.streamBufferBytes, only the initial window:
   * streams whose targets keep up go on, those that stall hold less.
   */
  windowTarget(receiving: boolean): number {
    if (this.#underPressure()) return INITIAL_WINDOW;
    const receivers = this.#receivers + (receiving ? 0 : 1);
    const share = Math.floor(this.config.maxSessionWindow / receivers);
    return Math.max(INITIAL_WINDOW, Math.min(this.config.maxStreamWindow, share));
  }

  /**
   * A new stream's share, counting the streams raised at open that have not started receiving: a
   * burst of opens (honest uploads, or a peer's flood) is not handed a full window each.
   */
  openWindowTarget(): number {
    if (this.#underPressure()) return INITIAL_WINDOW;
    const share = Math.floor(this.config.maxSessionWindow / (this.#receivers + this.#opening + 1));
    return Math.max(INITIAL_WINDOW, Math.min(this.config.maxStreamWindow, share));
  }

  #underPressure(): boolean {
    return this.buffered.held > this.buffered.limit / 2;
  }

  receiverCount(delta: 1 | -1): void {
    this.#receivers += delta;
  }

  openingCount(delta: 1 | -1): void {
    this.#opening += delta;
  }

  bufferLimitHit(message: string): void {
    this.emit('limit', 'stream_buffer_bytes', message);
  }

  /** Bytes the session's streams hold for their consumers now. */
  get streamBytesHeld(): number {
    return this.buffered.held;
  }

  /** The same, summed over every open session of this process. */
  static get streamBytesHeldTotal(): number {
    let total = 0;
    for (const b of liveBuffers) total += b.held;
    return total;
  }

  // ---- FrameHandler (reader side) -----------------------------------------

  onHeader(h: FrameHeader): void {
    switch (h.type) {
      case FrameType.Data:
      case FrameType.WindowUpdate:
        return this.#onStreamFrame(h);
      case FrameType.Ping:
        return this.#onPing(h);
      case FrameType.GoAway:
        return this.#onGoAway(h);
    }
  }

  onPayload(streamId: number, chunk: Buffer, last: boolean): void {
    this.#streams.get(streamId)?._receive(chunk);
    if (last && this.#deferredFlags?.streamId === streamId) {
      const { flags } = this.#deferredFlags;
      this.#deferredFlags = undefined;
      this.#streams.get(streamId)?._applyFlags(flags);
    }
  }

  #onStreamFrame(h: FrameHeader): void {
    let stream = this.#streams.get(h.streamId);
    if (h.flags & Flag.SYN) {
      if (stream) throw new ProtocolError('ERR_MUX_DUPLICATE_STREAM', `SYN for stream ${h.streamId}, which is already open`);
      if ((h.streamId % 2 === 1) === this.client) {
        throw new ProtocolError('ERR_MUX_BAD_STREAM', `peer opened stream ${h.streamId}, an id reserved for our side`);
      }
      stream = this.#accept(h.streamId);
      if (!stream) return; // refused with RST; any payload is discarded
    }
    if (!stream) return; // late frame for a stream that is gone: ignored, as the spec allows
    if (h.type === FrameType.Data) {
      if (h.length > stream.recvWindow) {
        throw new ProtocolError(
          'ERR_MUX_WINDOW_EXCEEDED',
          `peer sent ${h.length} bytes on stream ${h.streamId} with only ${stream.recvWindow} bytes of window`,
        );
      }
      stream._reserve(h.length);
      const late = h.flags & (Flag.FIN);
      const now = h.flags & ~Flag.FIN;
      if (now) stream._applyFlags(now);
      if (late) {
        if (h.length === 0) stream._applyFlags(late);
        else this.#deferredFlags = { streamId: h.streamId, flags: late };
      }
    } else {
      stream._grantSend(h.length);
      if (h.flags) stream._applyFlags(h.flags);
    }
  }

  #accept(id: number): Channel | undefined {
    const asChannel = this.listenerCount('channel') > 0;
    const overLimit = this.#streams.size >= this.config.maxStreams;
    const refuse = this.#localGoAway || overLimit || (!asChannel && this.listenerCount('stream') === 0);
    if (refuse) {
      if (overLimit && !this.#localGoAway) {
        this.emit('limit', 'streams_per_session', `the peer opened stream ${id} with ${this.#streams.size} streams open; the limit is ${this.config.maxStreams}`);
      }
      this.#sendControl(encodeHeader(FrameType.WindowUpdate, Flag.RST, id, 0));
      return undefined;
    }
    const channel = new Channel(this, id);
    this.#streams.set(id, channel);
    if (asChannel) {
      channel._announceLater();
      this.emit('channel', channel);
    } else {
      channel._announce(Flag.ACK);
      this.emit('stream', new MuxStream(channel));
    }
    return channel;
  }

  #onPing(h: FrameHeader): void {
    if (h.flags & Flag.SYN) {
      // While the transport is full, only the latest ping is answered, once it drains (as
      // hashicorp/yamux drops replies it cannot send): a peer that pings and never reads must not
      // make us queue one answer per ping.
      if (this.congested) {
        if (this.#pendingPingAck !== undefined) this.emit('limit', 'ping_replies', 'a ping answer was dropped: the peer sends pings faster than it reads the answers');
        this.#pendingPingAck = h.length;
        return;
      }
      this.#sendControl(encodeHeader(FrameType.Ping, Flag.ACK, 0, h.length));
    } else if (h.flags & Flag.ACK) {
      const pending = this.#pings.get(h.length);
      if (!pending) return;
      this.#pings.delete(h.length);
      clearTimeout(pending.timer);
      pending.resolve(Number(process.hrtime.bigint() - pending.started) / 1e6);
    }
  }

  #onGoAway(h: FrameHeader): void {
    this.#remoteGoAway = true;
    this.emit('goaway', h.length);
    if (h.length === GoAwayCode.ProtocolError) {
      this.#terminate(new ProtocolError('ERR_MUX_PEER_PROTOCOL_ERROR', 'the peer reported a protocol error and is closing the session'));
    } else if (h.length === GoAwayCode.InternalError) {
      this.#terminate(new UnderpassError('ERR_MUX_PEER_INTERNAL_ERROR', 'the peer reported an internal error and is closing the session'));
    }
  }

  /** The transport's payload, from a DirectTransport (not for other callers). */
  transportData(chunk: Buffer): void {
    this.#onTransportData(chunk);
  }

  #onTransportData(chunk: Buffer): void {
    if (this.#isClosed) return;
    this.#lastInbound = this.#now();
    try {
      this.#reader.push(chunk);
    } catch (err) {
      const error = err instanceof UnderpassError ? err : new UnderpassError('ERR_MUX_INTERNAL', `frame handling failed: ${String(err)}`, { cause: err });
      // Tell the peer why, then stop reading: nothing after a bad frame can be trusted.
      if (!this.#localGoAway) {
        this.#localGoAway = true;
        this.#out.push(encodeHeader(FrameType.GoAway, 0, 0, err instanceof ProtocolError ? GoAwayCode.ProtocolError : GoAwayCode.InternalError));
      }
      this.#flush();
      this.#terminate(error, true);
    }
  }

  // ---- writer --------------------------------------------------------------

  #sendControl(header: Buffer): void {
    this.sendFrame(header, undefined);
  }

  /**
   * Small frames (opens, open requests, FINs, a few bytes of data) are flushed after the current
   * event-loop turn (setImmediate): the frames of every socket read in one poll — eight
   * connections opening at once — go out as one TLS record and one write (connector CPU per
   * connection −6 %, round-trip time unchanged: a lone read flushes at the end of its turn).
   * Bulk payloads and window grants are flushed after the current callback (a microtask), as
   * all frames were before: deferring those to the end of the turn cost 5–10 % more CPU per GiB
   * (same-run A/B) — grants arrived later, and reads piled up into larger multi-buffer writes.
   */
  #scheduleFlush(urgent: boolean): void {
    if (urgent) {
      if (this.#flushSoonScheduled) return;
      this.#flushSoonScheduled = true;
      queueMicrotask(this.#flushSoon);
      return;
    }
    if (this.#flushLaterScheduled) return;
    this.#flushLaterScheduled = true;
    setImmediate(Session.#flushLater, this);
  }

  /** Writes everything queued in one corked batch; holds write callbacks while the transport is full. */
  #flush(): void {
    if (this.#out.length === 0 || this.#transport.destroyed || this.#transport.writableEnded) return;
    const out = this.#out;
    const callbacks = this.#outCallbacks;
    this.#out = [];
    this.#outCallbacks = [];
    const t = this.#transport;
    // Many small frames (answers to pings, refused opens, FINs): one buffer, not a queue entry of
    // ~100 bytes each while the transport waits — what a peer provokes stays as big as it is.
    const batch = out.length >= MANY_FRAMES && Session.#smallFrames(out) ? [Buffer.concat(out)] : out;
    const direct = this.#direct;
    if (direct === undefined || !direct.writeDirect(batch)) {
      t.cork();
      for (const buf of batch) t.write(buf);
      t.uncork();
    }
    if (direct ? direct.needDrain : t.writableNeedDrain) {
      for (const cb of callbacks) this.#heldCallbacks.push(cb);
    } else {
      for (const cb of callbacks) cb();
    }
    if (!this.#readPaused && direct === undefined && t.writableLength > this.config.unreadOutputBytes) {
      // The peer leaves our output unread: read nothing more from it (nothing it sends can make us
      // queue more) until the transport drains; the keepalive closes the session if it never does.
      // (A DirectTransport pauses its socket by the same limit itself: limitUnreadOutput.)
      this.#readPaused = true;
      t.pause();
    }
  }

  static #smallFrames(out: Buffer[]): boolean {
    let bytes = 0;
    for (const b of out) bytes += b.length;
    return bytes <= out.length * SMALL_FRAME_AVERAGE;
  }

  #releaseHeldCallbacks(): void {
    const ack = this.#pendingPingAck;
    if (ack !== undefined) {
      this.#pendingPingAck = undefined;
      this.#sendControl(encodeHeader(FrameType.Ping, Flag.ACK, 0, ack));
    }
    const held = this.#heldCallbacks;
    this.#heldCallbacks = [];
    for (const cb of held) cb();
    const waiting = this.#waitingForDrain;
    if (waiting.size === 0) return;
    this.#waitingForDrain = new Set();
    for (const channel of waiting) channel._drained();
  }

  // ---- keepalive and close -------------------------------------------------

  #startKeepalive(): void {
    const interval = this.config.keepaliveIntervalMs;
    if (interval <= 0) return;
    const tick = Math.max(10, Math.min(interval, this.config.keepaliveTimeoutMs - interval) / 2);
    this.#keepaliveTimer = setInterval(Session.#tick, tick, this);
    this.#keepaliveTimer.unref();
  }

  /**
   * Each end pings every interval whatever the traffic (as hashicorp/yamux does), so both ends
   * keep a current round-trip time; the session is dead when nothing at all arrived for the
   * timeout. (Pinging only after inbound silence let one end's pings keep the other from ever
   * pinging, and left a busy session without a round-trip time.)
   */
  #keepaliveTick(): void {
    const now = this.#now();
    const silent = now - this.#lastInbound;
    if (silent >= this.config.keepaliveTimeoutMs) {
      if (this.#readPaused || this.#outputLimited?.outputBlocked) {
        const unread = this.#outputLimited?.unreadOutput ?? this.#transport.writableLength;
        const message = `the peer has left ${unread} bytes of our output unread for ${silent} ms (limit ${this.config.unreadOutputBytes} bytes); closing the session`;
        this.emit('limit', 'unread_output_bytes', message);
        this.#terminate(new UnderpassError('ERR_MUX_PEER_NOT_READING', message));
      } else {
        this.#terminate(new UnderpassError('ERR_MUX_KEEPALIVE_TIMEOUT', `nothing received from the peer for ${silent} ms; the connection is considered dead`));
      }
    } else if (now - this.#lastKeepalivePing >= this.config.keepaliveIntervalMs) {
      this.#lastKeepalivePing = now;
      this.ping().then((ms) => this.emit('rtt', ms), () => undefined); // the timeout above decides; a lost ping alone does not
    }
  }

  /**
   * The one place a session ends; records why, fails what is pending, tells
   * listeners once. `graceful` lets queued frames (our GoAway) reach the peer.
   */
  #terminate(err: Error | undefined, graceful = false): void {
    if (this.#isClosed) return;
    this.#isClosed = true;
    this.#closeError = err;
    clearInterval(this.#keepaliveTimer);
    liveBuffers.delete(this.buffered);
    const streamErr = new UnderpassError('ERR_MUX_SESSION_CLOSED', `session closed${err ? `: ${err.message}` : ''}`, { cause: err });
    for (const channel of [...this.#streams.values()]) channel._abort(streamErr);
    this.#streams.clear();
    this.#waitingForDrain.clear();
    for (const [, ping] of this.#pings) {
      clearTimeout(ping.timer);
      ping.reject(streamErr);
    }
    this.#pings.clear();
    const callbacks = [...this.#heldCallbacks, ...this.#outCallbacks];
    this.#heldCallbacks = [];
    this.#outCallbacks = [];
    for (const cb of callbacks) cb(streamErr);
    if (graceful || !err) {
      this.#transport.end();
      // A peer that never finishes the close handshake must not keep the socket.
      setTimeout(() => this.#transport.destroy(), 2_000).unref();
    } else {
      this.#transport.destroy();
    }
    this.#resolveClosed(err);
    this.emit('close', err);
  }
}

export { describeHeader };
