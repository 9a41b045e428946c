/**
 * TEST SUPPORT: lets tests drive our tunnel with the `ws` library (conformance of
 * tunnel/transport/websocket.ts against a mainstream implementation).
 *
 * Presents a WebSocket as a Node Duplex byte stream for the multiplexer.
 * Message boundaries mean nothing to yamux, so every batch of frames the
 * session flushes becomes one binary message (split when very large).
 * Backpressure: a write completes while less than `highWater` bytes are queued
 * in ws; past that, it completes when ws has flushed the send.
 */
import { Duplex } from 'node:stream';
import type { WebSocket } from 'ws';
import { UnderpassError } from '../errors.js';

export interface WebSocketDuplexOptions {
  /** Bytes queued in ws before writers wait. */
  highWater?: number;
  /** Largest message sent (the peer's maxPayload must be at least this). */
  maxMessage?: number;
}

type Callback = (err?: Error | null) => void;

export class WebSocketDuplex extends Duplex {
  readonly #ws: WebSocket;
  readonly #highWater: number;
  readonly #maxMessage: number;
  #queued = 0;
  #waiting: Callback | undefined;

  constructor(ws: WebSocket, options: WebSocketDuplexOptions = {}) {
    super({ allowHalfOpen: false, readableHighWaterMark: 1 << 20, writableHighWaterMark: 1 << 20 });
    this.#ws = ws;
    this.#highWater = options.highWater ?? 4 << 20;
    this.#maxMessage = options.maxMessage ?? 4 << 20;
    ws.binaryType = 'nodebuffer';
    ws.on('message', (data: Buffer, isBinary: boolean) => this.#onMessage(data, isBinary));
    ws.on('close', (code: number, reason: Buffer) => this.#onClose(code, reason));
    ws.on('error', (err: Error) => this.destroy(err));
  }

  get webSocket(): WebSocket {
    return this.#ws;
  }

  override _read(): void {
    if (this.#ws.isPaused) this.#ws.resume();
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: Callback): void {
    this.#send(chunk, cb);
  }

  override _writev(chunks: Array<{ chunk: Buffer }>, cb: Callback): void {
    if (chunks.length === 1) return this.#send(chunks[0]!.chunk, cb);
    let batch: Buffer[] = [];
    let size = 0;
    for (const { chunk } of chunks) {
      if (size + chunk.length > this.#maxMessage && size > 0) {
        this.#send(Buffer.concat(batch, size), undefined);
        batch = [];
        size = 0;
      }
      batch.push(chunk);
      size += chunk.length;
    }
    this.#send(batch.length === 1 ? batch[0]! : Buffer.concat(batch, size), cb);
  }

  override _final(cb: Callback): void {
    if (this.#ws.readyState === this.#ws.OPEN) this.#ws.close(1000, 'session closed');
    cb();
  }

  override _destroy(err: Error | null, cb: Callback): void {
    const ws = this.#ws;
    if (ws.readyState === ws.OPEN || ws.readyState === ws.CONNECTING) {
      if (err) ws.terminate();
      else ws.close(1000, 'session closed');
    }
    const waiting = this.#waiting;
    this.#waiting = undefined;
    waiting?.(err ?? new UnderpassError('ERR_TRANSPORT_CLOSED', 'the WebSocket closed'));
    cb(err);
  }

  #send(buf: Buffer, cb: Callback | undefined): void {
    if (this.#ws.readyState !== this.#ws.OPEN) {
      cb?.(new UnderpassError('ERR_TRANSPORT_CLOSED', 'the WebSocket is not open'));
      return;
    }
    this.#queued += buf.length;
    this.#ws.send(buf, { binary: true, compress: false }, (err) => {
      this.#queued -= buf.length;
      if (err) return void this.destroy(err);
      if (this.#waiting && this.#queued < this.#highWater) {
        const waiting = this.#waiting;
        this.#waiting = undefined;
        waiting();
      }
    });
    if (!cb) return;
    if (this.#queued < this.#highWater) cb();
    else this.#waiting = cb;
  }

  #onMessage(data: Buffer, isBinary: boolean): void {
    if (!isBinary) {
      this.destroy(new UnderpassError('ERR_TRANSPORT_TEXT_MESSAGE', 'the peer sent a text message; the tunnel carries only binary messages'));
      return;
    }
    if (!this.push(data)) this.#ws.pause();
  }

  #onClose(code: number, reason: Buffer): void {
    if (code === 1000 || code === 1001) {
      this.push(null);
      return;
    }
    const why = reason.length > 0 ? `: ${reason.toString()}` : '';
    this.destroy(new UnderpassError('ERR_TRANSPORT_CLOSED', `the WebSocket closed with code ${code}${why}`));
  }
}
