/**
 * Joins a TCP socket and a tunnel stream both ways, keeping half-close (a
 * client that shuts its write side still reads the whole response) and
 * backpressure. An error on either side tears down both; the socket is reset
 * so its peer sees an error rather than a clean end.
 *
 * Stream → socket writes are corked until the end of the event-loop turn:
 * TLS hands decrypted data over in 16 KiB pieces, and writing each one with
 * its own syscall was the largest cost of a bulk transfer. One writev per turn
 * sends them together without copying.
 *
 * Why not `socket.pipe(stream)`: a relay lives as long as its connection, and
 * an idle connection is mostly this bookkeeping. pipe() allocates a dozen
 * closures and once-wrappers per direction; here every listener is one shared
 * static function that finds its relay through the emitter (tunnel/owner.ts),
 * so a relay costs one small object (docs/benchmarks.md, idle streams).
 */
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { ownerSlot } from './owner.js';

export interface RelayResult {
  /** Bytes read from the socket (sent into the tunnel). */
  bytesFromSocket: number;
  /** Bytes written to the socket (received from the tunnel). */
  bytesToSocket: number;
  /** Set when the relay ended by an error instead of two clean half-closes. */
  error?: Error;
}

const owner = ownerSlot<Relay>('underpass.relay');

export class Relay {
  readonly socket: Socket;
  stream: Duplex | undefined;
  /** The first error of either side. */
  error: Error | undefined;
  #open = 2;
  #running = false;
  #upstream = false;
  #inTurn = false;
  #corked = false;
  #done: ((result: RelayResult) => void) | undefined;

  /** Takes the socket's errors from now on (kept in `error`; they end the relay once it runs). */
  constructor(socket: Socket) {
    this.socket = socket;
    owner.set(socket, this);
    socket.on('error', Relay.#onSocketError);
  }

  /**
   * Starts carrying socket → stream: the client's first bytes may follow the
   * stream-open request before the answer (pipelining). `unpipe` stops it again.
   */
  pipe(stream: Duplex): void {
    if (this.stream !== stream) {
      this.stream = stream;
      owner.set(stream, this);
    }
    if (this.#upstream) return;
    this.#upstream = true;
    this.socket.on('data', Relay.#onSocketData);
    this.socket.on('end', Relay.#onSocketEnd);
    stream.on('drain', Relay.#onStreamDrain);
    this.socket.resume();
  }

  unpipe(): void {
    if (!this.#upstream) return;
    this.#upstream = false;
    this.socket.off('data', Relay.#onSocketData);
    this.socket.off('end', Relay.#onSocketEnd);
    this.stream?.off('drain', Relay.#onStreamDrain);
    this.socket.pause();
  }

  /** Runs both directions until both sides have closed; `done` gets the totals. */
  run(stream: Duplex, done: (result: RelayResult) => void): void {
    if (this.#running) throw new Error('relay already running');
    this.pipe(stream);
    this.#running = true;
    this.#done = done;
    stream.on('error', Relay.#onStreamError);
    this.socket.on('close', Relay.#onClosed);
    stream.on('close', Relay.#onClosed);
    stream.on('data', Relay.#onStreamData);
    stream.on('end', Relay.#onStreamEnd);
    this.socket.on('drain', Relay.#onSocketDrain);
    // A socket or stream that ended both ways closes itself (autoDestroy); one that already
    // closed while the open handshake ran counts as closed now.
    if (this.socket.closed) this.#closed();
    if (stream.closed) this.#closed();
    stream.resume(); // the open header left the stream paused
    if (this.error) {
      if (!this.socket.destroyed) this.socket.resetAndDestroy();
      stream.destroy();
    }
  }

  #closed(): void {
    if (--this.#open > 0) return;
    const done = this.#done;
    this.#done = undefined;
    done?.({ bytesFromSocket: this.socket.bytesRead, bytesToSocket: this.socket.bytesWritten, ...(this.error ? { error: this.error } : {}) });
  }

  #endTurn(): void {
    this.#inTurn = false;
    if (this.#corked) {
      this.#corked = false;
      this.socket.uncork();
    }
  }

  // The listeners: shared by every relay, `this` is the emitter.

  static #onSocketData(this: Socket, chunk: Buffer): void {
    const r = owner.of(this);
    if (r.stream && !r.stream.write(chunk)) this.pause();
  }

  static #onStreamDrain(this: Duplex): void {
    owner.of(this).socket.resume();
  }

  static #onSocketEnd(this: Socket): void {
    owner.of(this).stream?.end();
  }

  /** Stream → socket, corked after the first write of an event-loop turn. */
  static #onStreamData(this: Duplex, chunk: Buffer): void {
    const r = owner.of(this);
    const to = r.socket;
    if (!r.#inTurn) {
      r.#inTurn = true;
      setImmediate(Relay.#endTurnOf, r);
    } else if (!r.#corked) {
      r.#corked = true;
      to.cork();
    }
    if (!to.write(chunk)) this.pause();
  }

  static #endTurnOf(r: Relay): void {
    r.#endTurn();
  }

  static #onSocketDrain(this: Socket): void {
    owner.of(this).stream?.resume();
  }

  static #onStreamEnd(this: Duplex): void {
    const r = owner.of(this);
    r.#endTurn();
    r.socket.end();
  }

  static #onClosed(this: Socket | Duplex): void {
    owner.of(this).#closed();
  }

  static #onSocketError(this: Socket, err: Error): void {
    const r = owner.of(this);
    r.error ??= err;
    if (r.#running) r.stream?.destroy();
  }

  static #onStreamError(this: Duplex, err: Error): void {
    const r = owner.of(this);
    r.error ??= err;
    if (!r.socket.destroyed) r.socket.resetAndDestroy();
  }
}

/** Runs a relay between `socket` and `stream` (both directions) and resolves when both sides closed. */
export function relay(socket: Socket, stream: Duplex): Promise<RelayResult> {
  const r = new Relay(socket);
  return new Promise((resolve) => r.run(stream, resolve));
}
