/**
 * @chainsafe/libp2p-yamux over a plain TCP socket, without a libp2p node.
 *
 * The muxer takes a libp2p `MessageStream` (event based, `send()` returns
 * false when full, 'drain' when not). `SocketConnection` is a minimal one
 * over `net.Socket`: socket data to onData, sendData to socket.write (corked,
 * so a frame's header and payload leave in one write), socket 'drain' to
 * 'drain'.
 */
import type { Socket } from 'node:net';
import { yamux } from '@chainsafe/libp2p-yamux';
import type { YamuxStream } from '@chainsafe/libp2p-yamux/stream';
import type { StreamMessageEvent } from '@libp2p/interface';
import { logger } from '@libp2p/logger';
import { AbstractMessageStream, type SendResult } from '@libp2p/utils';
import type { BenchMux, BenchStream, Chunk } from './contender.js';

// libp2p v3 calls Promise.withResolvers (Node >= 22) in onDrain() and ping();
// without it, a full stream can never be waited on and keepalive (hence the
// RTT that drives window growth) never works. Node 20 needs this shim.
if (typeof (Promise as { withResolvers?: unknown }).withResolvers !== 'function') {
  Object.defineProperty(Promise, 'withResolvers', {
    configurable: true,
    writable: true,
    value() {
      let resolve!: (value: unknown) => void;
      let reject!: (reason?: unknown) => void;
      const promise = new Promise((res, rej) => {
        resolve = res;
        reject = rej;
      });
      return { promise, resolve, reject };
    },
  });
}

/** The byte list @libp2p/utils hands to sendData (its own uint8arraylist version). */
type ByteList = Parameters<AbstractMessageStream['sendData']>[0];

class SocketConnection extends AbstractMessageStream {
  readonly #socket: Socket;

  constructor(socket: Socket, client: boolean) {
    super({ log: logger('bench:tcp'), direction: client ? 'outbound' : 'inbound' });
    this.#socket = socket;
    socket.on('data', (buf: Buffer) => this.onData(buf));
    socket.on('drain', () => this.safeDispatchEvent('drain'));
    socket.on('error', (err) => this.abort(err));
    socket.on('close', () => this.onTransportClosed());
  }

  sendData(data: ByteList): SendResult {
    const s = this.#socket;
    let canSendMore = true;
    s.cork();
    for (const buf of data) canSendMore = s.write(buf);
    s.uncork();
    return { sentBytes: data.byteLength, canSendMore };
  }

  sendReset(): void {
    this.#socket.resetAndDestroy();
  }

  sendPause(): void {
    this.#socket.pause();
  }

  sendResume(): void {
    this.#socket.resume();
  }

  async close(): Promise<void> {
    if (this.#socket.destroyed) return;
    await new Promise<void>((resolve) => {
      this.#socket.once('close', () => resolve());
      this.#socket.end();
    });
  }
}

class Libp2pStream implements BenchStream {
  constructor(readonly s: YamuxStream) {}
  write(chunk: Buffer | Chunk): boolean {
    return this.s.send(chunk as Uint8Array);
  }
  drained(): Promise<void> {
    return this.s.onDrain();
  }
  end(): void {
    this.s.close().catch(() => undefined);
  }
  onData(fn: (chunk: Chunk) => void): void {
    this.s.addEventListener('message', (evt: StreamMessageEvent) => fn(evt.data));
  }
  onEnd(fn: () => void): void {
    this.s.addEventListener('end', fn);
  }
  onError(fn: (err: Error) => void): void {
    this.s.addEventListener('close', (evt) => {
      if (evt.error) fn(evt.error);
    });
  }
  // libp2p throws if a closing/closed stream is paused or resumed; Node streams shrug.
  pause(): void {
    if (this.s.readStatus === 'readable') this.s.pause();
  }
  resume(): void {
    if (this.s.readStatus === 'paused') this.s.resume();
  }
  abort(reason: string): void {
    this.s.abort(new Error(reason));
  }
  iterate(): AsyncIterable<Chunk> {
    return this.s;
  }
  get buffered(): number {
    return this.s.readBufferLength;
  }
}

export class Libp2pMux implements BenchMux {
  readonly #muxer;

  constructor(socket: Socket, client: boolean) {
    // Defaults as shipped, except the stream limits (1,000) that the idle-streams scenario exceeds.
    const factory = yamux({ maxInboundStreams: 1_000_000, maxOutboundStreams: 1_000_000 })();
    this.#muxer = factory.createStreamMuxer(new SocketConnection(socket, client));
  }

  async open(): Promise<BenchStream> {
    return new Libp2pStream(await this.#muxer.createStream());
  }

  onStream(fn: (stream: BenchStream) => void): void {
    this.#muxer.addEventListener('stream', (evt) => fn(new Libp2pStream(evt.detail)));
  }

  close(): void {
    this.#muxer.close().catch(() => undefined);
  }
}
