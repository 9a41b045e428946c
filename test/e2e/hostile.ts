/**
 * Hostile peers for the abuse and limit tests: a connector made of the library's own pieces (our
 * WebSocket client over mTLS, a yamux Session, the control channel), so it speaks the real
 * protocol, that can also write what no honest peer writes — raw WebSocket and yamux frames — and
 * stop reading. Plus what the tests measure a process by: its RSS and CPU time from /proc.
 */
import { once } from 'node:events';
import { readFile } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import type { TLSSocket } from 'node:tls';
import { ControlChannel, PROTOCOL_VERSION } from '../../tunnel/control.js';
import type { Channel, ChannelSink } from '../../tunnel/mux/channel.js';
import { encodeHeader, Flag, FrameType } from '../../tunnel/mux/frame.js';
import { Session } from '../../tunnel/mux/session.js';
import type { Mapping } from '../../tunnel/mapping.js';
import { encodeOpenRequest } from '../../tunnel/open.js';
import { acceptWebSocket, connectWebSocket, WebSocketStream } from '../../tunnel/transport/websocket.js';
import { encodeControlFrame, encodeFrameHeader, Opcode } from '../../tunnel/transport/ws-frame.js';

export interface Creds {
  cert: Buffer;
  key: Buffer;
  ca: Buffer;
}

export async function credsOf(dir: string, name: string): Promise<Creds> {
  return {
    cert: await readFile(path.join(dir, `connector-${name}.crt`)),
    key: await readFile(path.join(dir, `connector-${name}.key`)),
    ca: await readFile(path.join(dir, 'ca.crt')),
  };
}

/** yamux frames, as a hostile peer writes them. */
export const yamux = {
  ping: (id: number): Buffer => encodeHeader(FrameType.Ping, Flag.SYN, 0, id),
  syn: (stream: number): Buffer => encodeHeader(FrameType.WindowUpdate, Flag.SYN, stream, 0),
  rst: (stream: number): Buffer => encodeHeader(FrameType.WindowUpdate, Flag.RST, stream, 0),
  data: (stream: number, payload: Buffer, flags = 0): Buffer => Buffer.concat([encodeHeader(FrameType.Data, flags, stream, payload.length), payload]),
};

/** A client WebSocket frame (zero mask, as our connectors send): binary with `payload`, or a ping. */
export const wsFrame = {
  binary: (payload: Buffer): Buffer => Buffer.concat([encodeFrameHeader(Opcode.Binary, payload.length, true), payload]),
  ping: (payload: Buffer): Buffer => encodeControlFrame(Opcode.Ping, payload, true),
  /** Only the header of a binary frame claiming `length` bytes. */
  header: (length: number): Buffer => encodeFrameHeader(Opcode.Binary, length, true),
};

export class HostileConnector {
  readonly ws: WebSocketStream;
  readonly session: Session;
  control: ControlChannel | undefined;
  #reading = true;

  private constructor(ws: WebSocketStream) {
    this.ws = ws;
    this.session = new Session(ws, { client: true, config: { keepaliveIntervalMs: 0 } });
    this.session.on('close', () => undefined);
    ws.on('error', () => undefined);
  }

  /** TLS with `creds`, the upgrade, a session, and (unless `hello: false`) hello → welcome. */
  static async connect(url: string, name: string, creds: Creds, opts: { hello?: boolean } = {}): Promise<HostileConnector> {
    const ws = await connectWebSocket(new URL('/v1/tunnel', url), { ...creds, timeoutMs: 10_000 });
    const c = new HostileConnector(ws);
    if (opts.hello !== false) {
      c.control = new ControlChannel(c.session.open());
      c.control.on('error', () => undefined);
      c.control.send({ type: 'hello', protocol: PROTOCOL_VERSION, connector: name, version: 'hostile', capabilities: ['tcp'] });
      await c.control.expect('welcome', 10_000);
    }
    return c;
  }

  get socket(): TLSSocket {
    return this.ws.socket as TLSSocket;
  }

  /** Raw bytes to the TLS socket (whole WebSocket frames), past the session; false when the socket is full. */
  write(bytes: Buffer): boolean {
    return this.socket.write(bytes);
  }

  /**
   * Runs `write` — raw bytes that make up one WebSocket frame over several socket writes — while the
   * session's own frames wait (its answers to the worker's keepalive pings would land inside the raw
   * frame and corrupt the stream: the worker then read "unsupported yamux version 66").
   */
  async withSessionHeld<T>(write: () => Promise<T>): Promise<T> {
    this.ws.cork();
    try {
      return await write();
    } finally {
      this.ws.uncork();
    }
  }

  /** yamux bytes as one binary WebSocket frame, past the session. */
  sendYamux(bytes: Buffer): boolean {
    return this.write(wsFrame.binary(bytes));
  }

  /** From now on nothing more is read from the worker: the socket stays paused, whatever asks it to resume. */
  stopReading(): void {
    this.#reading = false;
    const s = this.socket;
    s.pause();
    s.resume = () => s;
  }

  get reading(): boolean {
    return this.#reading;
  }

  /**
   * Writes `next()` chunks until `total` bytes have been written or the socket took nothing for
   * `stallMs` (the worker stopped reading). Never more than 1 MiB waits in our own socket buffer.
   */
  async flood(next: () => Buffer, total: number, stallMs = 2_000): Promise<{ written: number; stalled: boolean }> {
    const s = this.socket;
    let written = 0;
    while (written < total && !s.destroyed) {
      if (s.writableLength > 1 << 20) {
        const drained = await Promise.race([once(s, 'drain').then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), stallMs))]);
        if (!drained) return { written: written - s.writableLength, stalled: true };
        continue;
      }
      const chunk = next();
      s.write(chunk);
      written += chunk.length;
      if (written % (1 << 20) < chunk.length) await new Promise((r) => setImmediate(r));
    }
    return { written: written - s.writableLength, stalled: false };
  }

  /**
   * Opens a stream and writes `bytes` on it in Data frames of exactly `frameSize` bytes each (a
   * Duplex would merge them), as the worker's window allows. Resolves with the bytes written when
   * all are, or when the stream is reset or the session ends.
   */
  async writeInFrames(bytes: Buffer, frameSize: number, timeoutMs = 60_000): Promise<number> {
    const channel = this.session.openChannel();
    let wake: (() => void) | undefined;
    let gone = false;
    const sink: ChannelSink = {
      onData: (chunk) => channel.consumed(chunk.length),
      onEnd: () => undefined,
      onAbort: () => {
        gone = true;
        wake?.();
      },
      onWritable: () => wake?.(),
    };
    (channel as Channel).attach(sink);
    const deadline = Date.now() + timeoutMs;
    let at = 0;
    while (at < bytes.length && !gone && !this.session.isClosed && Date.now() < deadline) {
      const more = channel.write(bytes.subarray(at, at + frameSize));
      at += frameSize;
      if (!more) await new Promise<void>((r) => (wake = r));
      else if (at % (256 * frameSize) === 0) await new Promise((r) => setImmediate(r));
    }
    return Math.min(at, bytes.length);
  }

  /** fillStream on this connector's session. */
  fillStream(mapping: string, stallMs?: number): Promise<{ written: number; reset: boolean }> {
    return fillStream(this.session, this.ws, mapping, stallMs);
  }

  close(): void {
    this.session.close();
    this.socket.destroy();
  }
}

/**
 * Opens a stream on `session` for `mapping`, waits for the answer, then sends as much as the other
 * end's window lets it until nothing more is let through for `stallMs` (the target does not read),
 * and ends its side with a raw FIN written past the channel (which would wait for window first):
 * a peer that moves on to the next stream this way keeps the other end's count of receiving
 * streams low, so each stream gets a full window. Resolves with the payload bytes sent and
 * whether the other end reset the stream.
 */
export async function fillStream(session: Session, ws: WebSocketStream, mapping: string, stallMs = 300, block = Buffer.alloc(64 * 1024, 0x66)): Promise<{ written: number; reset: boolean }> {
  const channel = session.openChannel();
  let wake: ((progress: boolean) => void) | undefined;
  let answered = false;
  let reset = false;
  const sink: ChannelSink = {
    onData: (chunk) => {
      answered = true;
      channel.consumed(chunk.length);
      wake?.(true);
    },
    onEnd: () => undefined,
    onAbort: () => {
      reset = true;
      wake?.(false);
    },
    onWritable: () => wake?.(true),
  };
  channel.attach(sink);
  const progress = (): Promise<boolean> => new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), stallMs);
    wake = (p) => {
      clearTimeout(timer);
      wake = undefined;
      resolve(p);
    };
  });
  channel.write(encodeOpenRequest({ mapping, source: '192.0.2.1:1' }));
  while (!answered && !reset && (await progress()));
  while (answered && !reset && !session.isClosed) {
    if (!channel.write(block) && !(await progress())) break;
  }
  if (!reset && !session.isClosed) ws.write(encodeHeader(FrameType.WindowUpdate, Flag.FIN, channel.id, 0));
  return { written: channel.bytesWritten, reset };
}

/** Resident memory of a process (VmRSS), bytes. */
export function rssOf(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m?.[1] ?? NaN) * 1024;
}

/** CPU time (user + system) a process has used, seconds. */
export function cpuSecondsOf(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime in clock ticks (USER_HZ = 100)
}

/** Samples `pid`'s RSS every `everyMs` until stopped; `max` is the largest seen. */
export function sampleRss(pid: number, everyMs = 50): { stop(): number; readonly max: number } {
  let max = rssOf(pid);
  const timer = setInterval(() => {
    try {
      max = Math.max(max, rssOf(pid));
    } catch {
      // the process is gone
    }
  }, everyMs);
  return {
    stop: () => {
      clearInterval(timer);
      return max;
    },
    get max() {
      return max;
    },
  };
}

/** How long GET `url` takes to answer, ms (Infinity if it fails). */
export async function latencyOf(url: string): Promise<number> {
  const t0 = performance.now();
  try {
    const res = await fetch(url);
    await res.text();
    return performance.now() - t0;
  } catch {
    return Infinity;
  }
}

/** Fails with a message naming the limit when `ok` is false. */
export function expectLimit(limit: string, ok: boolean, what: string): void {
  if (!ok) throw new Error(`limit ${limit}: ${what}`);
}

export const MiB = 1 << 20;

/** A worker built by hand from the library (TLS with the connection's certificates, our WebSocket, a Session): what a compromised worker could send a connector. */
export interface FakeWorker {
  port: number;
  url: string;
  /** The next connector session: its WebSocket, Session and control channel, after hello → welcome → config. */
  next(): Promise<{ ws: WebSocketStream; session: Session; control: ControlChannel }>;
  close(): void;
}

export async function fakeWorker(dir: string, mappings: Mapping[]): Promise<FakeWorker> {
  const https = await import('node:https');
  const server = https.createServer({
    cert: await readFile(path.join(dir, 'worker.crt')), key: await readFile(path.join(dir, 'worker.key')), ca: await readFile(path.join(dir, 'ca.crt')),
    requestCert: true, rejectUnauthorized: true,
  });
  const waiting: Array<(s: { ws: WebSocketStream; session: Session; control: ControlChannel }) => void> = [];
  const sessions: Session[] = [];
  server.on('upgrade', (req, socket, head) => {
    const ws = acceptWebSocket(req, socket as never, head);
    if (!(ws instanceof WebSocketStream)) return void socket.destroy();
    ws.on('error', () => undefined);
    const session = new Session(ws, { client: false, config: { keepaliveIntervalMs: 0 } });
    sessions.push(session);
    session.on('stream', (first) => {
      first.on('error', () => undefined);
      const control = new ControlChannel(first);
      control.on('error', () => undefined);
      void control.expect('hello', 10_000).then(() => {
        control.send({ type: 'welcome', protocol: PROTOCOL_VERSION, connection: 'team-a/dc1', worker: { instance: 'fake-worker', version: 'hostile' }, session: 'fake' });
        control.send({ type: 'config', revision: 1, mappings });
        waiting.shift()?.({ ws, session, control });
      }, () => undefined);
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as AddressInfo).port;
  return {
    port,
    url: `wss://127.0.0.1:${port}`,
    next: () => new Promise((resolve) => waiting.push(resolve)),
    close: () => {
      for (const s of sessions) s.close();
      server.closeAllConnections();
      server.close();
    },
  };
}
