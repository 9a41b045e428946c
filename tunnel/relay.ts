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

export function relay(socket: Socket, stream: Duplex, opts: { socketPiped?: boolean } = {}): Promise<RelayResult> {
  return new Promise((resolve) => {
    let error: Error | undefined;
    let open = 2;
    const onClosed = (): void => {
      if (--open > 0) return;
      resolve({ bytesFromSocket: socket.bytesRead, bytesToSocket: socket.bytesWritten, ...(error ? { error } : {}) });
    };
    socket.once('close', onClosed);
    stream.once('close', onClosed);
    socket.on('error', (err: Error) => {
      error ??= err;
      stream.destroy();
    });
    stream.on('error', (err: Error) => {
      error ??= err;
      if (!socket.destroyed) socket.resetAndDestroy();
    });
    // A socket that ends both ways closes itself; a stream does the same (autoDestroy).
    if (!opts.socketPiped) socket.pipe(stream);
    pipeCorked(stream, socket);
  });
}

/**
 * Like `from.pipe(to)`, but writes after the first in one event-loop turn are
 * corked and leave together at the end of the turn: a lone message (an
 * interactive round trip) goes out at once, a bulk burst as one writev.
 */
function pipeCorked(from: Duplex, to: Socket): void {
  let inTurn = false;
  let corked = false;
  const endTurn = (): void => {
    inTurn = false;
    if (corked) {
      corked = false;
      to.uncork();
    }
  };
  const uncork = endTurn;
  from.on('data', (chunk: Buffer) => {
    if (!inTurn) {
      inTurn = true;
      setImmediate(endTurn);
    } else if (!corked) {
      corked = true;
      to.cork();
    }
    if (!to.write(chunk)) from.pause();
  });
  to.on('drain', () => from.resume());
  from.once('end', () => {
    if (corked) uncork();
    to.end();
  });
  from.resume(); // pipe() does this too: the open header left the stream paused
}
