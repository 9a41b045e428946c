/**
 * Joins a TCP socket and a multiplexer channel both ways, keeping half-close
 * (a client that shuts its write side still reads the whole response) and
 * backpressure. An error on either side tears down both; the socket is reset
 * so its peer sees an error rather than a clean end, the channel with RST.
 *
 * The relay is the channel's consumer (ChannelSink): payloads are written to
 * the socket as the session decodes them, with no Node stream in between, and
 * the peer gets credit for them once the socket took them without backing up
 * (otherwise at the socket's 'drain'): the socket's buffer stays within its
 * high-water mark plus one window. Socket reads go to `channel.write`; when it
 * says stop (no send window, or the tunnel is full) the socket is paused until
 * the channel's onWritable.
 *
 * Before it runs, the relay also reads the stream-open header that starts
 * every channel (tunnel/open.ts) with the one reader of that format
 * (JsonFrame16Reader: linear in the bytes, at most OPEN_HEADER_MAX):
 * `readHeader` delivers the JSON and keeps any bytes that followed it
 * (pipelining) until `run`. What it keeps before it runs — a partial header,
 * early data — counts against the session's open buffer budget
 * (Channel.holdOpen, limits.openBufferBytes); a stream that would exceed it is
 * dropped (ERR_OPEN_BUFFER_LIMIT). Once it runs, what it wrote to its socket and
 * not credited yet counts in the session's stream buffer (the channel counts it:
 * limits.streamBufferBytes); the relay credits all of it, at the latest when its
 * socket closes, so the count never leaks.
 *
 * Channel → socket writes are corked until the end of the event-loop turn:
 * TLS hands decrypted data over in 16 KiB pieces, and writing each one with
 * its own syscall was the largest cost of a bulk transfer. One writev per turn
 * sends them together without copying.
 *
 * Why not `socket.pipe(...)`: a relay lives as long as its connection, and an
 * idle connection is mostly this bookkeeping. Every socket listener is one
 * shared static function that finds its relay through the emitter
 * (tunnel/owner.ts), so a relay costs one small object (docs/benchmarks.md,
 * idle streams).
 */
import type { Socket } from 'node:net';
import { UnderpassError } from './errors.js';
import { JsonFrame16Reader, type Frame16 } from './frames.js';
import { OPEN_HEADER_MAX } from './limits.js';
import type { Channel, ChannelSink } from './mux/channel.js';
import { IN_PLACE_HEADROOM } from './mux/session.js';
import { ownerSlot } from './owner.js';

export interface RelayResult {
  /** Bytes read from the socket (sent into the tunnel). */
  bytesFromSocket: number;
  /** Bytes written to the socket (received from the tunnel). */
  bytesToSocket: number;
  /** Set when the relay ended by an error instead of two clean half-closes. */
  error?: Error;
}

/** The open header's JSON (not yet validated), or why it did not come. */
export type HeaderCallback = (header: unknown, err: Error | undefined) => void;

interface HeaderRead {
  cb: HeaderCallback;
  what: string;
  reader: JsonFrame16Reader;
  /** Bytes received in the header phase and not yet reported consumed. */
  received: number;
  timer: NodeJS.Timeout;
}

const owner = ownerSlot<Relay>('underpass.relay');

/** Largest read from a dialled socket, as Node's own reads (256 KiB measured worse: docs/benchmarks.md). */
const READ_SIZE = 64 * 1024;
/**
 * The one read buffer of every socket the tunnel dials (`Relay.socketOptions`), with room for the
 * frame headers before the bytes. A read is handed on before the next one can happen
 * (Channel.writeTransient): written through to TLS from here when nothing is queued ahead of it,
 * copied otherwise. Node's own reads allocate 64 KiB per read instead, and the multi-buffer write
 * that followed was copied once more into one buffer for TLS.
 */
const readBuffer = Buffer.allocUnsafe(IN_PLACE_HEADROOM + READ_SIZE);

export class Relay implements ChannelSink {
  socket: Socket | undefined;
  channel: Channel | undefined;
  /** The first error of either side. */
  error: Error | undefined;
  #socketClosed = false;
  /** The socket ended (its peer half-closed). */
  #socketEnded = false;
  /** We half-closed the channel (the socket ended). */
  #localEnded = false;
  /** The peer half-closed the channel. */
  #remoteEnded = false;
  /** The channel is gone (reset either way, or the session ended). */
  #channelGone = false;
  #running = false;
  #upstream = false;
  #discard = false;
  #inTurn = false;
  #corked = false;
  /** Bytes written to the socket while it was backed up: credit for them waits for its 'drain'. */
  #uncredited = 0;
  #header: HeaderRead | undefined;
  /** Payload that arrived after the header, before `run`. */
  #held: Buffer[] | undefined;
  /** Bytes taken from the session's open buffer budget (partial header, early data), given back once it runs or is dropped. */
  #budgeted = 0;
  /** Read into the shared buffer while nothing was piping (copies, sent by `pipe`). */
  #unsent: Buffer[] | undefined;
  #done: ((result: RelayResult) => void) | undefined;

  /**
   * Options for a socket the tunnel dials (`net.connect`): its reads land in the shared read
   * buffer and go to the relay's channel from there (`onread`).
   */
  static get socketOptions(): { onread: { buffer: Buffer; callback: (nread: number) => boolean } } {
    return (Relay.#socketOptions ??= { onread: { buffer: readBuffer.subarray(IN_PLACE_HEADROOM), callback: Relay.#onRead } });
  }

  static #socketOptions: { onread: { buffer: Buffer; callback: (nread: number) => boolean } } | undefined;

  /** With a socket, takes its errors from now on (kept in `error`; they end the relay once it runs). */
  constructor(socket?: Socket) {
    if (socket) this.attachSocket(socket);
  }

  attachSocket(socket: Socket): void {
    this.socket = socket;
    owner.set(socket, this);
    socket.on('error', Relay.#onSocketError);
    socket.on('close', Relay.#onSocketClose);
  }

  /** Becomes `channel`'s consumer. A relay may try several channels (one per carrier) before it runs; a replaced one must have been reset. */
  attachChannel(channel: Channel): void {
    this.#giveBack();
    this.channel = channel;
    this.#remoteEnded = false;
    this.#channelGone = false;
    this.#localEnded = false;
    this.#held = undefined;
    this.#discard = false;
    channel.attach(this);
  }

  /**
   * Reads one u16-length JSON header from the start of the channel. `cb` runs once: with the
   * parsed JSON, or with the reason (the channel ended or was reset first, malformed JSON, no
   * header within `timeoutMs`). Bytes after the header are kept for `run`.
   */
  readHeader(timeoutMs: number, what: string, cb: HeaderCallback): void {
    const timer = setTimeout(Relay.#headerTimeout, timeoutMs, this, timeoutMs);
    this.#header = { cb, what, reader: new JsonFrame16Reader(OPEN_HEADER_MAX, what), received: 0, timer };
    // A channel whose first frames came before its consumer (connector/link.ts holds the streams a
    // worker opens before the mesh takes the session) handed them over at attachChannel: read the
    // header from them, as if they came now; what follows it is kept for `run` as usual.
    const held = this.#held;
    if (held) {
      this.#held = undefined;
      this.#giveBack();
      for (const chunk of held) this.onData(chunk);
    }
    if (!this.#header) return;
    if (this.#channelGone) this.#headerDone(undefined, this.error ?? new UnderpassError('ERR_OPEN_EOF', `stream reset before the ${what}`));
    else if (this.#remoteEnded) this.#headerDone(undefined, new UnderpassError('ERR_OPEN_EOF', `stream ended before the ${what}`));
  }

  /** From now on the channel's payload is dropped (after a refusal; the peer still gets credit). */
  discard(): void {
    this.#discard = true;
    this.#clearHeader();
    const held = this.#held;
    this.#held = undefined;
    if (held) for (const c of held) this.channel?.consumed(c.length);
    this.#giveBack();
  }

  /**
   * Starts carrying socket → channel: the client's first bytes may follow the
   * open request before the answer (pipelining). `unpipe` stops it again.
   */
  pipe(): void {
    if (this.#upstream) return;
    this.#upstream = true;
    const socket = this.socket!;
    socket.on('data', Relay.#onSocketData);
    socket.on('end', Relay.#onSocketEnd);
    const unsent = this.#unsent;
    this.#unsent = undefined;
    if (unsent) for (const chunk of unsent) this.channel!.write(chunk);
    // A socket that ended while another channel carried it (a carrier that failed before it
    // answered) will not say so again: end this channel now, after what was written to it.
    if (this.#socketEnded && !this.#localEnded) {
      this.#localEnded = true;
      this.channel!.end();
    }
    socket.resume();
  }

  unpipe(): void {
    if (!this.#upstream) return;
    this.#upstream = false;
    const socket = this.socket!;
    socket.off('data', Relay.#onSocketData);
    socket.off('end', Relay.#onSocketEnd);
    socket.pause();
  }

  /** Runs both directions until both sides have closed; `done` gets the totals. */
  run(done: (result: RelayResult) => void): void {
    if (this.#running) throw new Error('relay already running');
    const socket = this.socket!;
    this.#running = true;
    this.#done = done;
    socket.on('drain', Relay.#onSocketDrain);
    if (socket.closed) this.#socketClosed = true;
    this.pipe();
    const held = this.#held;
    this.#held = undefined;
    if (held) for (const chunk of held) this.#toSocket(chunk);
    this.#giveBack();
    if (this.error || this.#channelGone) {
      this.#teardown();
    } else if (this.#remoteEnded) {
      this.#endTurn();
      socket.end();
    }
    this.#check();
  }

  // ---- ChannelSink ----------------------------------------------------------

  onData(chunk: Buffer): void {
    if (this.#header) return this.#headerData(chunk);
    if (this.#discard) return this.channel!.consumed(chunk.length);
    if (this.#running) return this.#toSocket(chunk);
    if (this.#channelGone) return;
    // Between the header and run (the acceptor dials): keep a copy of a small view (a view would
    // pin its whole transport buffer), within the session's open buffer budget.
    if (!this.#take(chunk.length)) return this.#overBudget(chunk.length);
    (this.#held ??= []).push(this.channel!.keepAsView(chunk) ? chunk : Buffer.from(chunk));
  }

  onEnd(): void {
    this.#remoteEnded = true;
    if (this.#header) return this.#headerDone(undefined, new UnderpassError('ERR_OPEN_EOF', `stream ended before the ${this.#header.what}`));
    if (!this.#running) return;
    this.#endTurn();
    if (!this.socket!.destroyed) this.socket!.end();
    this.#check();
  }

  onAbort(err: Error): void {
    this.#channelGone = true;
    this.error ??= err;
    this.#held = undefined;
    this.#giveBack();
    if (this.#header) return this.#headerDone(undefined, err);
    if (!this.#running) return;
    this.#teardown();
    this.#check();
  }

  onWritable(): void {
    if (this.#upstream) this.socket!.resume();
  }

  // ---- internals ------------------------------------------------------------

  #headerData(chunk: Buffer): void {
    const h = this.#header!;
    h.received += chunk.length;
    let frame: Frame16 | undefined;
    try {
      frame = h.reader.push(chunk);
    } catch (err) {
      this.channel!.consumed(h.received);
      this.#giveBack();
      return this.#headerDone(undefined, err as Error);
    }
    if (!frame) {
      // A partial header: the reader holds a copy (not a view of the transport buffer) of the size
      // its length declared, counted against the session's budget.
      const more = h.reader.held - this.#budgeted;
      if (more > 0 && !this.#take(more)) {
        this.channel!.consumed(h.received);
        return this.#headerDone(undefined, this.#budgetError(more));
      }
      return;
    }
    const rest = frame.rest;
    this.channel!.consumed(h.received - rest.length);
    this.#giveBack();
    if (rest.length > 0) {
      if (!this.#take(rest.length)) {
        this.channel!.consumed(rest.length);
        return this.#headerDone(undefined, this.#budgetError(rest.length));
      }
      this.#held = [Buffer.from(rest)];
    }
    this.#headerDone(frame.value, undefined);
  }

  #headerDone(value: unknown, err: Error | undefined): void {
    const h = this.#header!;
    this.#clearHeader();
    if (err) this.#giveBack();
    h.cb(value, err);
  }

  #take(n: number): boolean {
    if (!this.channel!.holdOpen(n)) return false;
    this.#budgeted += n;
    return true;
  }

  #giveBack(): void {
    if (this.#budgeted === 0) return;
    this.channel!.releaseOpen(this.#budgeted);
    this.#budgeted = 0;
  }

  #budgetError(n: number): UnderpassError {
    return new UnderpassError('ERR_OPEN_BUFFER_LIMIT',
      `${n} more bytes before the stream relays would exceed the session's open buffer budget (limits.openBufferBytes)`);
  }

  /** Early data beyond the session's budget: the stream is dropped (RST), what it held given back. */
  #overBudget(n: number): void {
    const held = this.#held;
    this.#held = undefined;
    let bytes = n;
    if (held) for (const c of held) bytes += c.length;
    this.channel!.consumed(bytes);
    this.#giveBack();
    this.error ??= this.#budgetError(n);
    this.#channelGone = true;
    this.channel!.reset(this.error);
  }

  #clearHeader(): void {
    if (!this.#header) return;
    clearTimeout(this.#header.timer);
    this.#header = undefined;
  }

  static #headerTimeout(r: Relay, timeoutMs: number): void {
    if (r.#header) r.#headerDone(undefined, new UnderpassError('ERR_OPEN_TIMEOUT', `no ${r.#header.what} within ${timeoutMs} ms`));
  }

  /** Channel → socket, corked after the first write of an event-loop turn. */
  #toSocket(chunk: Buffer): void {
    const to = this.socket!;
    if (to.destroyed) return this.channel!.consumed(chunk.length);
    if (!this.#inTurn) {
      this.#inTurn = true;
      setImmediate(Relay.#endTurnOf, this);
    } else if (!this.#corked) {
      this.#corked = true;
      to.cork();
    }
    if (this.#uncredited !== 0 && !this.channel!.keepAsView(chunk)) {
      // Queued behind bytes the target has not taken: a small view would pin its whole transport
      // buffer for as long as the target does not read (the session counts only the view's bytes).
      chunk = Buffer.from(chunk);
    }
    if (to.write(chunk) && this.#uncredited === 0) this.channel!.consumed(chunk.length);
    else this.#uncredited += chunk.length;
  }

  #endTurn(): void {
    this.#inTurn = false;
    if (this.#corked) {
      this.#corked = false;
      this.socket!.uncork();
    }
  }

  /** An error on either side: reset the socket and the channel. */
  #teardown(): void {
    const socket = this.socket!;
    if (!socket.destroyed) socket.resetAndDestroy();
    if (!this.#channelGone) {
      this.#channelGone = true;
      this.channel!.reset(this.error);
    }
  }

  #check(): void {
    if (!this.#running || !this.#socketClosed) return;
    if (!this.#channelGone && !(this.#localEnded && this.#remoteEnded)) {
      // The socket is gone without having ended (reset, destroyed): nothing more can be carried.
      if (this.#localEnded) return; // its FIN was sent; wait for the peer's
      this.#channelGone = true;
      this.channel!.reset(this.error);
    }
    const done = this.#done;
    this.#done = undefined;
    if (!done) return;
    const socket = this.socket!;
    done({ bytesFromSocket: socket.bytesRead, bytesToSocket: socket.bytesWritten, ...(this.error ? { error: this.error } : {}) });
  }

  static #endTurnOf(r: Relay): void {
    r.#endTurn();
  }

  // The socket listeners: shared by every relay, `this` is the socket.

  static #onSocketData(this: Socket, chunk: Buffer): void {
    const r = owner.of(this);
    if (!r.channel!.write(chunk)) this.pause();
  }

  /** `onread` of a dialled socket (socketOptions): `nread` bytes after the headroom of the shared buffer. False pauses the socket. */
  static #onRead(this: Socket, nread: number): boolean {
    const r = owner.of(this);
    if (r === undefined || !r.#upstream) {
      // Not carried yet (or between carriers): keep a copy and stop reading until `pipe`. (A socket
      // with no relay at all is one whose dial was abandoned; it is destroyed in its connect handler.)
      if (r !== undefined) (r.#unsent ??= []).push(Buffer.from(readBuffer.subarray(IN_PLACE_HEADROOM, IN_PLACE_HEADROOM + nread)));
      return false;
    }
    return r.channel!.writeTransient(readBuffer, IN_PLACE_HEADROOM, IN_PLACE_HEADROOM + nread);
  }

  static #onSocketEnd(this: Socket): void {
    const r = owner.of(this);
    r.#socketEnded = true;
    r.#localEnded = true;
    r.channel!.end();
    r.#check();
  }

  static #onSocketDrain(this: Socket): void {
    const r = owner.of(this);
    const n = r.#uncredited;
    if (n === 0 || r.socket!.writableNeedDrain) return;
    r.#uncredited = 0;
    r.channel!.consumed(n);
  }

  static #onSocketClose(this: Socket): void {
    const r = owner.of(this);
    r.#socketClosed = true;
    // What the socket had not sent is gone with it: no longer held for the channel.
    const n = r.#uncredited;
    if (n !== 0 && r.channel) {
      r.#uncredited = 0;
      r.channel.consumed(n);
    }
    r.#check();
  }

  static #onSocketError(this: Socket, err: Error): void {
    const r = owner.of(this);
    r.error ??= err;
    if (r.#running) r.#teardown();
  }
}
