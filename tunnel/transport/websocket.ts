/**
 * The tunnel's WebSocket: RFC 6455 handshake on both ends and a Duplex that
 * carries yamux bytes in binary frames (see ws-frame.ts for why payloads are
 * streamed, not reassembled). Writes go straight to the TLS socket, one frame
 * per corked batch; reads hand payload views to the multiplexer.
 *
 * A peer that sends and never reads must not grow our output: pings are answered
 * one at a time (while the socket is full only the latest waits, as RFC 6455
 * allows), and while more than the unread-output limit of our writes waits for
 * the peer, nothing more is read from it (the multiplexer closes the session if
 * that lasts past its keepalive timeout, ERR_MUX_PEER_NOT_READING).
 */
import { createHash, randomBytes } from 'node:crypto';
import https from 'node:https';
import type { IncomingHttpHeaders, IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import type { PeerCertificate } from 'node:tls';
import { Duplex } from 'node:stream';
import { UnderpassError } from '../errors.js';
import { DEFAULT_LIMITS, WS_MAX_FRAME } from '../limits.js';
import { ownerSlot } from '../owner.js';
import {
  encodeClosePayload, encodeControlFrame, encodeFrameHeader, FrameDecoder, frameHeaderLength, Opcode, WebSocketProtocolError, writeFrameHeader, type FrameSink,
} from './ws-frame.js';

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
/** Largest frame we accept (tunnel/limits.ts); the sender stays far below it. */
export const MAX_FRAME = WS_MAX_FRAME;
/** Largest frame we send (a batch above it is split). */
const SEND_FRAME = 4 << 20;
/** Batches up to this size are copied into one buffer with their header (see #send); with the header it stays within Node's buffer pool (allocations under 4 KiB). */
const SMALL_FRAME = 4080;

type Callback = (err?: Error | null) => void;

const owner = ownerSlot<WebSocketStream>('underpass.websocket');

export function acceptKey(key: string): string {
  return createHash('sha1').update(key + GUID).digest('base64');
}

/** What takes a WebSocketStream's payload as it is decoded (the multiplexer), instead of its Readable side. */
export interface TransportReader {
  transportData(chunk: Buffer): void;
}

export class WebSocketStream extends Duplex {
  readonly socket: Socket;
  readonly #client: boolean;
  /** The socket is TLS: a write to it is consumed before it returns (see writeInPlace). */
  readonly #tls: boolean;
  readonly #decoder: FrameDecoder;
  #closeSent = false;
  #closeReceived = false;
  /** Unread output (our writes the peer has not taken) past which the socket is not read. */
  #unreadLimit: number = DEFAULT_LIMITS.unreadOutputBytes;
  /** The socket is paused: the peer left more than #unreadLimit unread. */
  #outputPaused = false;
  /** The socket is paused: our reader is full (readable backpressure). */
  #inputPaused = false;
  /** The answer to the latest ping, waiting for the socket to drain. */
  #pendingPong: Buffer | undefined;
  /** Takes the payload directly (readDirect); undefined: it goes through the Readable side. */
  #reader: TransportReader | undefined;
  /** A direct write found the socket full: emit 'drain' when it drains. */
  #directWaiting = false;

  constructor(socket: Socket, head: Buffer, role: 'client' | 'server') {
    super({ allowHalfOpen: false, readableHighWaterMark: 1 << 20, writableHighWaterMark: 1 << 20 });
    this.socket = socket;
    this.#client = role === 'client';
    this.#tls = (socket as Socket & { encrypted?: boolean }).encrypted === true;
    // A session lives as long as its connector: its listeners are shared functions that find
    // this stream through the socket (tunnel/owner.ts), not closures per session.
    this.#decoder = new FrameDecoder(new WebSocketStream.#Sink(this), { expectMasked: !this.#client, maxFrame: MAX_FRAME });
    owner.set(socket, this);
    socket.setNoDelay(true);
    socket.on('data', WebSocketStream.#onSocketData);
    socket.on('error', WebSocketStream.#onSocketError);
    // HTTP server sockets allow half-open connections: a peer that sends FIN
    // without a close frame must not leave our side open forever.
    socket.on('end', WebSocketStream.#onSocketEnd);
    socket.on('close', WebSocketStream.#onSocketClose);
    socket.on('drain', WebSocketStream.#onSocketDrain);
    if (head.length > 0) queueMicrotask(() => this.#onData(head));
  }

  static #onSocketData(this: Socket, chunk: Buffer): void {
    owner.of(this).#onData(chunk);
  }

  static #onSocketError(this: Socket, err: Error): void {
    owner.of(this).destroy(err);
  }

  static #onSocketEnd(this: Socket): void {
    const ws = owner.of(this);
    if (!ws.#closeReceived) ws.destroy(new UnderpassError('ERR_WS_CLOSED', 'the peer closed the connection without a WebSocket close frame'));
    this.end();
  }

  static #onSocketDrain(this: Socket): void {
    const ws = owner.of(this);
    const pong = ws.#pendingPong;
    if (pong) {
      ws.#pendingPong = undefined;
      ws.#control(Opcode.Pong, pong);
    }
    ws.#maybeResume();
    if (ws.#directWaiting) {
      ws.#directWaiting = false;
      ws.emit('drain');
    }
  }

  static #onSocketClose(this: Socket): void {
    const ws = owner.of(this);
    if (!ws.destroyed) ws.destroy(ws.#closeReceived ? undefined : new UnderpassError('ERR_WS_CLOSED', 'the connection closed without a WebSocket close frame'));
  }

  /** What the frame decoder hands over: one small object per stream instead of four closures. */
  static readonly #Sink = class implements FrameSink {
    readonly ws: WebSocketStream;
    constructor(ws: WebSocketStream) {
      this.ws = ws;
    }
    // RFC 6455 5.5.1: nothing follows a close frame; whatever a peer sends after one is dropped.
    onData(chunk: Buffer): void {
      if (this.ws.#closeReceived) return;
      const reader = this.ws.#reader;
      if (reader) return reader.transportData(chunk);
      if (!this.ws.push(chunk)) {
        this.ws.#inputPaused = true;
        this.ws.socket.pause();
      }
    }
    onPing(payload: Buffer): void {
      if (!this.ws.#closeReceived) this.ws.#pong(payload);
    }
    onPong(): void {}
    onClose(code: number, reason: string): void {
      if (!this.ws.#closeReceived) this.ws.#onClose(code, reason);
    }
  };

  override _read(): void {
    this.#inputPaused = false;
    if (!this.#outputPaused && this.socket.isPaused()) this.socket.resume();
  }

  /** Stop reading from the peer while more than `bytes` of our output waits for it (Session sets its limit). */
  limitUnreadOutput(bytes: number): void {
    this.#unreadLimit = bytes;
  }

  /** Reading is paused because the peer left more than the limit of our output unread. */
  get outputBlocked(): boolean {
    return this.#outputPaused;
  }

  /** Bytes written and not yet taken by the peer (in this stream's and the socket's buffers). */
  get unreadOutput(): number {
    return this.writableLength + this.socket.writableLength;
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: Callback): void {
    this.#send([chunk], chunk.length, cb);
  }

  override _writev(chunks: Array<{ chunk: Buffer }>, cb: Callback): void {
    let total = 0;
    const list = chunks.map((c) => ((total += c.chunk.length), c.chunk));
    this.#send(list, total, cb);
  }

  override _final(cb: Callback): void {
    this.#sendClose(1000, 'session closed');
    this.socket.end();
    cb();
  }

  override _destroy(err: Error | null, cb: Callback): void {
    if (!this.socket.destroyed) {
      if (err) {
        if (err instanceof WebSocketProtocolError) this.#sendClose(err.closeCode, err.message);
        this.socket.destroySoon();
        setTimeout(() => this.socket.destroy(), 1_000).unref();
      } else {
        this.#sendClose(1000, 'session closed');
        this.socket.end();
      }
    }
    cb(err);
  }

  /**
   * Sends `buf[start, end)` as one binary frame whose header is written into the bytes before
   * `start` (up to 14 must be free), straight to the TLS socket, and returns true — only when the
   * bytes are sure to be consumed before this returns: nothing is queued on this stream or on the
   * socket (the write reaches TLSWrap at once, and OpenSSL copies the plaintext into its record
   * buffer), and the socket is TLS (a plain socket may keep a reference to the bytes until the
   * kernel takes them). Otherwise it writes nothing and returns false. `done` runs when the socket
   * has sent the write on. One buffer per TLS write also spares Node the copy it makes of a
   * multi-buffer write to a TLS socket.
   */
  writeInPlace(buf: Buffer, start: number, end: number, done: () => void): boolean {
    const s = this.socket;
    if (!this.#tls || this.#closeSent || s.destroyed || s.connecting) return false;
    if (this.writableLength !== 0 || this.writableCorked !== 0 || s.writableLength !== 0 || s.writableCorked !== 0) return false;
    const length = end - start;
    const at = start - frameHeaderLength(length, this.#client);
    if (at < 0 || length > SEND_FRAME) return false;
    writeFrameHeader(buf, at, Opcode.Binary, length, this.#client);
    s.write(buf.subarray(at, end), done);
    return true;
  }

  /**
   * From now on the payload goes to `reader` as it is decoded, not through the Readable side (two
   * Node stream state machines less per message; 'end' and 'close' still come as events) — only
   * when nothing waits in the Readable buffer, which would otherwise be overtaken. False: nothing
   * changed, read the stream as a Duplex.
   */
  readDirect(reader: TransportReader): boolean {
    if (this.readableLength !== 0 || this.readableEnded || this.destroyed) return false;
    this.#reader = reader;
    return true;
  }

  /**
   * Writes `chunks` as one binary frame to the socket now, past the Writable side — only when
   * nothing waits there (it would be overtaken); false: nothing was written, use write(). Once it
   * was written, `needDrain` says whether the socket is full; 'drain' follows when it empties.
   */
  writeDirect(chunks: Buffer[]): boolean {
    if (this.writableLength !== 0 || this.writableCorked !== 0 || this.writableEnded || this.destroyed) return false;
    const s = this.socket;
    if (s.destroyed || this.#closeSent) return false;
    let total = 0;
    for (const c of chunks) total += c.length;
    this.#writeFrame(chunks, total);
    if (s.writableNeedDrain) this.#directWaiting = true;
    this.#checkOutput();
    return true;
  }

  /** The socket (or this stream's Writable side) is full: writers should wait for 'drain'. */
  get needDrain(): boolean {
    return this.writableNeedDrain || this.socket.writableNeedDrain;
  }

  #send(chunks: Buffer[], total: number, cb: Callback): void {
    const s = this.socket;
    if (s.destroyed || this.#closeSent) return cb(new UnderpassError('ERR_WS_CLOSED', 'the WebSocket is closed'));
    this.#writeFrame(chunks, total);
    if (s.writableNeedDrain) {
      s.once('drain', () => {
        cb();
        this.#maybeResume(); // this batch has left our own buffer too
      });
    } else {
      cb();
    }
    this.#checkOutput();
  }

  /** `chunks` (`total` bytes) as one frame (split above SEND_FRAME). */
  #writeFrame(chunks: Buffer[], total: number): void {
    const s = this.socket;
    if (total <= SMALL_FRAME) {
      // A small batch (opens, open headers, FINs, a few bytes) as one buffer: one write to the TLS
      // socket, which Node would otherwise gather from several into a copy of its own.
      const frame = Buffer.allocUnsafe(frameHeaderLength(total, this.#client) + total);
      let at = writeFrameHeader(frame, 0, Opcode.Binary, total, this.#client);
      for (const c of chunks) at += c.copy(frame, at);
      s.write(frame);
    } else {
      s.cork();
      this.#writeFrames(chunks, total);
      s.uncork();
    }
  }

  /** Past the unread-output limit, read nothing more from the peer until the socket drains. */
  #checkOutput(): void {
    if (this.#outputPaused || this.unreadOutput <= this.#unreadLimit) return;
    this.#outputPaused = true;
    this.socket.pause();
  }

  #maybeResume(): void {
    if (!this.#outputPaused || this.unreadOutput > this.#unreadLimit / 2) return;
    this.#outputPaused = false;
    if (!this.#inputPaused) this.socket.resume();
  }

  /** While the socket is full only the latest ping is answered, once it drains (RFC 6455 5.5.3 allows it). */
  #pong(payload: Buffer): void {
    if (!this.socket.writableNeedDrain) return this.#control(Opcode.Pong, payload);
    if (this.#pendingPong) this.emit('limit', 'ping_replies', 'a WebSocket pong was dropped: the peer sends pings faster than it reads the answers');
    this.#pendingPong = Buffer.from(payload);
  }

  /** Header and chunks as frames of at most SEND_FRAME bytes (the socket is corked). */
  #writeFrames(chunks: Buffer[], total: number): void {
    const s = this.socket;
    if (total <= SEND_FRAME) {
      s.write(encodeFrameHeader(Opcode.Binary, total, this.#client));
      for (const c of chunks) s.write(c);
    } else {
      // Split into frames of at most SEND_FRAME bytes (a chunk may straddle two frames).
      let frameLeft = 0;
      for (let c of chunks) {
        while (c.length > 0) {
          if (frameLeft === 0) {
            frameLeft = Math.min(SEND_FRAME, total);
            total -= frameLeft;
            s.write(encodeFrameHeader(Opcode.Binary, frameLeft, this.#client));
          }
          const n = Math.min(frameLeft, c.length);
          s.write(c.subarray(0, n));
          c = c.subarray(n);
          frameLeft -= n;
        }
      }
    }
  }

  #onData(chunk: Buffer): void {
    try {
      this.#decoder.push(chunk);
    } catch (err) {
      if (err instanceof WebSocketProtocolError && err.closeCode === 1009) this.emit('limit', 'ws_frame_bytes', err.message);
      this.destroy(err as Error);
    }
  }

  #control(opcode: Opcode, payload: Buffer): void {
    if (this.socket.destroyed || this.#closeSent) return;
    this.socket.write(encodeControlFrame(opcode, payload, this.#client));
    this.#checkOutput();
  }

  #sendClose(code: number, reason: string): void {
    if (this.#closeSent || this.socket.destroyed) return;
    this.#control(Opcode.Close, encodeClosePayload(code, reason));
    this.#closeSent = true;
  }

  #onClose(code: number, reason: string): void {
    this.#closeReceived = true;
    this.#sendClose(code === 1005 ? 1000 : code, '');
    this.socket.end();
    if (code === 1000 || code === 1001 || code === 1005) this.push(null);
    else this.destroy(new UnderpassError('ERR_WS_CLOSED', `the peer closed the WebSocket with code ${code}${reason ? `: ${reason}` : ''}`));
  }
}

export interface HandshakeRefusal {
  status: number;
  message: string;
  headers?: Record<string, string>;
}

/** Server side: validates an upgrade request; on success answers 101 and returns the stream. */
export function acceptWebSocket(req: IncomingMessage, socket: Socket, head: Buffer): WebSocketStream | HandshakeRefusal {
  if (req.method !== 'GET') return { status: 405, message: 'WebSocket upgrades use GET' };
  if ((req.headers.upgrade ?? '').toLowerCase() !== 'websocket') return { status: 400, message: 'Upgrade: websocket is required' };
  if (req.headers['sec-websocket-version'] !== '13') return { status: 426, message: 'WebSocket version 13 is required', headers: { 'Sec-WebSocket-Version': '13' } };
  const key = req.headers['sec-websocket-key'];
  if (typeof key !== 'string' || !/^[A-Za-z0-9+/]{22}==$/.test(key)) return { status: 400, message: 'missing or malformed Sec-WebSocket-Key' };
  socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${acceptKey(key)}\r\n\r\n`);
  return new WebSocketStream(socket, head, 'server');
}

export class WebSocketRefused extends UnderpassError {
  readonly status: number;
  readonly reason: string | undefined;
  readonly body: string;
  /** The refusal's headers (e.g. the mesh's X-Underpass-Worker, docs/ha.md). */
  readonly headers: IncomingHttpHeaders;
  constructor(status: number, reason: string | undefined, body: string, headers: IncomingHttpHeaders = {}) {
    super('ERR_WORKER_REFUSED', `worker refused the connection (HTTP ${status}${reason ? ` ${reason}` : ''}): ${body.trim()}`);
    this.status = status;
    this.reason = reason;
    this.body = body;
    this.headers = headers;
  }
}

export interface ConnectOptions {
  cert: Buffer;
  key: Buffer;
  ca: Buffer;
  headers?: Record<string, string>;
  timeoutMs: number;
  signal?: AbortSignal;
  /** Replaces Node's host-name check of the server certificate (call tls.checkServerIdentity inside to keep it). */
  checkServerIdentity?: (host: string, cert: PeerCertificate) => Error | undefined;
}

/** Client side: TLS with client certificate, upgrade, verified Sec-WebSocket-Accept. */
export function connectWebSocket(url: URL, o: ConnectOptions): Promise<WebSocketStream> {
  return new Promise((resolve, reject) => {
    const key = randomBytes(16).toString('base64');
    const req = https.request({
      host: url.hostname.replace(/^\[|\]$/g, ''),
      port: url.port || 443,
      path: `${url.pathname}${url.search}`,
      method: 'GET',
      agent: false,
      cert: o.cert,
      key: o.key,
      ca: o.ca,
      minVersion: 'TLSv1.2',
      ...(o.checkServerIdentity ? { checkServerIdentity: o.checkServerIdentity } : {}),
      headers: { Connection: 'Upgrade', Upgrade: 'websocket', 'Sec-WebSocket-Version': '13', 'Sec-WebSocket-Key': key, ...o.headers },
    });
    const timer = setTimeout(() => fail(new UnderpassError('ERR_DIAL', `no WebSocket handshake within ${o.timeoutMs} ms`)), o.timeoutMs);
    const onAbort = (): void => fail(new UnderpassError('ERR_DIAL', 'aborted'));
    o.signal?.addEventListener('abort', onAbort, { once: true });
    let settled = false;
    function fail(err: Error): void {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      o.signal?.removeEventListener('abort', onAbort);
      req.destroy();
      reject(err);
    }
    req.on('upgrade', (res: IncomingMessage, socket: Socket, head: Buffer) => {
      if (res.headers['sec-websocket-accept'] !== acceptKey(key)) {
        socket.destroy();
        return fail(new UnderpassError('ERR_WS_HANDSHAKE', 'the server answered the upgrade with a wrong Sec-WebSocket-Accept'));
      }
      settled = true;
      clearTimeout(timer);
      o.signal?.removeEventListener('abort', onAbort);
      resolve(new WebSocketStream(socket, head, 'client'));
    });
    req.on('response', (res: IncomingMessage) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body = (body + d).slice(0, 4096)));
      const reason = res.headers['x-underpass-reason'];
      res.on('end', () => fail(new WebSocketRefused(res.statusCode ?? 0, typeof reason === 'string' ? reason : undefined, body, res.headers)));
      res.on('error', () => fail(new WebSocketRefused(res.statusCode ?? 0, typeof reason === 'string' ? reason : undefined, body, res.headers)));
    });
    req.on('error', (err) => fail(err));
    req.end();
  });
}
