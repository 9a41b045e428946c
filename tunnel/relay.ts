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
 * module-level function that finds its relay through a symbol on the emitter,
 * so a relay costs one small object (docs/benchmarks.md, idle streams).
 */
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';

export interface RelayResult {
  /** Bytes read from the socket (sent into the tunnel). */
  bytesFromSocket: number;
  /** Bytes written to the socket (received from the tunnel). */
  bytesToSocket: number;
  /** Set when the relay ended by an error instead of two clean half-closes. */
  error?: Error;
}

const kRelay = Symbol('underpass.relay');

interface Carried {
  [kRelay]?: Relay;
}

/** A listener for streams whose errors are decided elsewhere (a relay, an open handshake). */
export function ignoreError(): void {}

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
    (socket as Carried)[kRelay] = this;
    socket.on('error', onSocketError);
  }

  /**
   * Starts carrying socket → stream: the client's first bytes may follow the
   * stream-open request before the answer (pipelining). `unpipe` stops it again.
   */
  pipe(stream: Duplex): void {
    if (this.stream !== stream) {
      this.stream = stream;
      (stream as Carried)[kRelay] = this;
    }
    if (this.#upstream) return;
    this.#upstream = true;
    this.socket.on('data', onSocketData);
    this.socket.on('end', onSocketEnd);
    stream.on('drain', onStreamDrain);
    this.socket.resume();
  }

  unpipe(): void {
    if (!this.#upstream) return;
    this.#upstream = false;
    this.socket.off('data', onSocketData);
    this.socket.off('end', onSocketEnd);
    this.stream?.off('drain', onStreamDrain);
    this.socket.pause();
  }

  /** Runs both directions until both sides have closed; `done` gets the totals. */
  run(stream: Duplex, done: (result: RelayResult) => void): void {
    if (this.#running) throw new Error('relay already running');
    this.pipe(stream);
    this.#running = true;
    this.#done = done;
    stream.on('error', onStreamError);
    this.socket.on('close', onClosed);
    stream.on('close', onClosed);
    stream.on('data', onStreamData);
    stream.on('end', onStreamEnd);
    this.socket.on('drain', onSocketDrain);
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

  /** Runs the relay and resolves with its totals. */
  static run(socket: Socket, stream: Duplex): Promise<RelayResult> {
    const r = (socket as Carried)[kRelay] ?? new Relay(socket);
    return new Promise((resolve) => r.run(stream, resolve));
  }

  #closed(): void {
    if (--this.#open > 0) return;
    const done = this.#done;
    this.#done = undefined;
    done?.({ bytesFromSocket: this.socket.bytesRead, bytesToSocket: this.socket.bytesWritten, ...(this.error ? { error: this.error } : {}) });
  }

  /** @internal */
  static closed(r: Relay): void {
    r.#closed();
  }

  /** @internal The stream emitted data: write it to the socket, corked after the first write of a turn. */
  static down(r: Relay, from: Duplex, chunk: Buffer): void {
    const to = r.socket;
    if (!r.#inTurn) {
      r.#inTurn = true;
      setImmediate(endTurn, r);
    } else if (!r.#corked) {
      r.#corked = true;
      to.cork();
    }
    if (!to.write(chunk)) from.pause();
  }

  /** @internal */
  static endTurn(r: Relay): void {
    r.#inTurn = false;
    if (r.#corked) {
      r.#corked = false;
      r.socket.uncork();
    }
  }

  /** @internal */
  static running(r: Relay): boolean {
    return r.#running;
  }
}

/** Runs a relay between `socket` and `stream` (both directions) and resolves when both sides closed. */
export function relay(socket: Socket, stream: Duplex): Promise<RelayResult> {
  return Relay.run(socket, stream);
}

// The listeners: shared by every relay, `this` is the emitter.

function relayOf(emitter: unknown): Relay {
  return (emitter as Carried)[kRelay]!;
}

function endTurn(r: Relay): void {
  Relay.endTurn(r);
}

function onSocketData(this: Socket, chunk: Buffer): void {
  const r = relayOf(this);
  if (r.stream && !r.stream.write(chunk)) this.pause();
}

function onStreamDrain(this: Duplex): void {
  relayOf(this).socket.resume();
}

function onSocketEnd(this: Socket): void {
  relayOf(this).stream?.end();
}

function onStreamData(this: Duplex, chunk: Buffer): void {
  Relay.down(relayOf(this), this, chunk);
}

function onSocketDrain(this: Socket): void {
  relayOf(this).stream?.resume();
}

function onStreamEnd(this: Duplex): void {
  const r = relayOf(this);
  Relay.endTurn(r);
  r.socket.end();
}

function onClosed(this: Socket | Duplex): void {
  Relay.closed(relayOf(this));
}

function onSocketError(this: Socket, err: Error): void {
  const r = relayOf(this);
  r.error ??= err;
  if (Relay.running(r)) r.stream?.destroy();
}

function onStreamError(this: Duplex, err: Error): void {
  const r = relayOf(this);
  r.error ??= err;
  if (!r.socket.destroyed) r.socket.resetAndDestroy();
}
