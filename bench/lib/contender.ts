/**
 * One small interface over both multiplexers, so every workload runs the same
 * code against each: a muxed connection opens and accepts streams; a stream
 * writes with backpressure, delivers chunks, pauses and half-closes.
 */
import type { Socket } from 'node:net';
import type { MuxConfig } from '../../tunnel/mux/config.js';
import { Session } from '../../tunnel/mux/session.js';
import type { MuxStream } from '../../tunnel/mux/stream.js';

export type ContenderName = 'underpass' | 'libp2p';
export const CONTENDERS: readonly ContenderName[] = ['underpass', 'libp2p'];
export const LABELS: Record<ContenderName, string> = {
  underpass: 'Underpass tunnel/mux',
  libp2p: '@chainsafe/libp2p-yamux',
};

/** A chunk as delivered: a Buffer (Underpass) or Uint8Array / Uint8ArrayList (libp2p). */
export interface Chunk {
  readonly byteLength: number;
}

export interface BenchStream {
  /** False: wait for drained() before writing more. */
  write(chunk: Buffer | Chunk): boolean;
  drained(): Promise<void>;
  /** Half-close: no more writes from this side. */
  end(): void;
  onData(fn: (chunk: Chunk) => void): void;
  /** The peer half-closed and everything it sent was delivered. */
  onEnd(fn: () => void): void;
  onError(fn: (err: Error) => void): void;
  pause(): void;
  resume(): void;
  /** Resets the stream (RST to the peer). */
  abort(reason: string): void;
  /** The library's own async iteration (what `for await` gives an application). */
  iterate(): AsyncIterable<Chunk>;
  /** Bytes received but not yet handed to onData (held while paused). */
  readonly buffered: number;
}

export interface BenchMux {
  open(): Promise<BenchStream>;
  onStream(fn: (stream: BenchStream) => void): void;
  close(): void;
}

/** Copies a delivered chunk's bytes out (for hashing); cheap for Buffers. */
export function* bytesOf(chunk: Chunk): Generator<Uint8Array> {
  if (chunk instanceof Uint8Array) {
    yield chunk;
    return;
  }
  // Uint8ArrayList is iterable over its Uint8Array parts.
  yield* chunk as unknown as Iterable<Uint8Array>;
}

class UnderpassStream implements BenchStream {
  constructor(readonly s: MuxStream) {}
  write(chunk: Buffer | Chunk): boolean {
    return this.s.write(chunk as Buffer);
  }
  drained(): Promise<void> {
    if (!this.s.writableNeedDrain) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const onDrain = (): void => {
        this.s.off('close', onClose);
        resolve();
      };
      const onClose = (): void => {
        this.s.off('drain', onDrain);
        reject(new Error(`stream ${this.s.id} closed while waiting for drain`));
      };
      this.s.once('drain', onDrain);
      this.s.once('close', onClose);
    });
  }
  end(): void {
    this.s.end();
  }
  onData(fn: (chunk: Chunk) => void): void {
    this.s.on('data', fn);
  }
  onEnd(fn: () => void): void {
    this.s.on('end', fn);
  }
  onError(fn: (err: Error) => void): void {
    this.s.on('error', fn);
  }
  pause(): void {
    this.s.pause();
  }
  resume(): void {
    this.s.resume();
  }
  abort(reason: string): void {
    this.s.destroy(new Error(reason));
  }
  iterate(): AsyncIterable<Chunk> {
    return this.s;
  }
  get buffered(): number {
    return this.s.readableLength;
  }
}

class UnderpassMux implements BenchMux {
  readonly #session: Session;
  constructor(socket: Socket, client: boolean, config: Partial<MuxConfig>) {
    this.#session = new Session(socket, { client, config });
    this.#session.on('close', () => undefined);
  }
  open(): Promise<BenchStream> {
    return Promise.resolve(new UnderpassStream(this.#session.open()));
  }
  onStream(fn: (stream: BenchStream) => void): void {
    this.#session.on('stream', (s) => fn(new UnderpassStream(s)));
  }
  close(): void {
    this.#session.close();
  }
}

/** Wraps a connected TCP socket in the named multiplexer; `underpass` settings apply to Underpass only (default: its defaults). */
export async function createMux(name: ContenderName, socket: Socket, client: boolean, underpass: Partial<MuxConfig> = {}): Promise<BenchMux> {
  socket.setNoDelay(true);
  if (name === 'underpass') return new UnderpassMux(socket, client, underpass);
  const { Libp2pMux } = await loadLibp2p();
  return new Libp2pMux(socket, client);
}

/** Loaded only in the processes that use it, so each process pays for one library. */
export function loadLibp2p(): Promise<typeof import('./libp2p-adapter.js')> {
  return import('./libp2p-adapter.js');
}
