/**
 * The tunnel's WebSocket against the `ws` library in both directions (real
 * TLS sockets on loopback): conformance with a mainstream implementation.
 */
import { afterAll, beforeAll, describe, expect, it, jest } from '@jest/globals';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import https from 'node:https';
import net, { type AddressInfo } from 'node:net';
import { Duplex } from 'node:stream';
import WebSocket, { WebSocketServer } from 'ws';
import { createCA, issueConnectorCert, issueWorkerCert, loadCA } from '../pki.js';
import { Session } from '../mux/session.js';
import { WebSocketDuplex } from '../testing/ws-duplex.js';
import { acceptWebSocket, connectWebSocket, WebSocketRefused, WebSocketStream } from './websocket.js';
import { encodeControlFrame, encodeFrameHeader, Opcode } from './ws-frame.js';

let tls: { ca: Buffer; serverCert: Buffer; serverKey: Buffer; clientCert: Buffer; clientKey: Buffer };
const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

beforeAll(async () => {
  const c = await createCA({ connection: { namespace: 'ns', name: 'c' } });
  const ca = await loadCA(c.certPem, c.keyPem);
  const server = await issueWorkerCert(ca, { sans: ['localhost', '127.0.0.1'] });
  const client = await issueConnectorCert(ca, { connector: 'x' });
  tls = { ca: Buffer.from(c.certPem), serverCert: Buffer.from(server.certPem), serverKey: Buffer.from(server.keyPem), clientCert: Buffer.from(client.certPem), clientKey: Buffer.from(client.keyPem) };
});

async function listen(server: https.Server): Promise<number> {
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return (server.address() as AddressInfo).port;
}

/** Sends `data`, half-closes, and collects what the other side echoes until it ends. */
function roundTrip(stream: Duplex, data: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    stream.on('data', (d: Buffer) => parts.push(d));
    stream.on('end', () => resolve(Buffer.concat(parts)));
    stream.on('error', reject);
    stream.write(data);
  });
}

describe('our WebSocket client against a ws server', () => {
  let server: https.Server;
  let port: number;
  beforeAll(async () => {
    server = https.createServer({ cert: tls.serverCert, key: tls.serverKey, ca: tls.ca, requestCert: true });
    const wss = new WebSocketServer({ server, perMessageDeflate: false, maxPayload: 64 << 20 });
    // Echo every byte back; close after `size` bytes (read from the first 4 bytes).
    wss.on('connection', (ws) => {
      const d = new WebSocketDuplex(ws);
      let need = -1;
      let got = 0;
      d.on('data', (chunk: Buffer) => {
        if (need < 0) need = chunk.readUInt32BE(0);
        got += chunk.length;
        d.write(chunk);
        if (got >= need) d.end();
      });
      d.on('error', () => undefined);
    });
    port = await listen(server);
  });
  afterAll(() => void server.close());

  it('carries 32 MiB through ws (which masks nothing back) and ends cleanly', async () => {
    const stream = await connectWebSocket(new URL(`wss://localhost:${port}/`), { cert: tls.clientCert, key: tls.clientKey, ca: tls.ca, timeoutMs: 5_000 });
    const data = randomBytes(32 << 20);
    data.writeUInt32BE(data.length, 0);
    const echoed = await roundTrip(stream, data);
    expect(sha(echoed)).toBe(sha(data));
  }, 30_000);

  it('sends a small batch as one buffer, header included (one write to the TLS socket), and the bytes arrive', async () => {
    const stream = await connectWebSocket(new URL(`wss://localhost:${port}/`), { cert: tls.clientCert, key: tls.clientKey, ca: tls.ca, timeoutMs: 5_000 });
    const writes: unknown[] = [];
    const socketWrite = stream.socket.write.bind(stream.socket);
    stream.socket.write = ((chunk: unknown, ...rest: never[]) => (writes.push(chunk), socketWrite(chunk as Buffer, ...rest))) as typeof stream.socket.write;
    const parts = [Buffer.alloc(4), Buffer.from('a few small frames, '), Buffer.from('written in one turn')];
    const data = Buffer.concat(parts);
    data.writeUInt32BE(data.length, 0);
    const echoed = new Promise<Buffer>((resolve) => {
      const got: Buffer[] = [];
      stream.on('data', (d: Buffer) => (got.push(d), Buffer.concat(got).length >= data.length && resolve(Buffer.concat(got))));
    });
    stream.cork();
    let at = 0;
    for (const p of parts) stream.write(data.subarray(at, (at += p.length)));
    stream.uncork();
    expect(writes).toHaveLength(1);
    expect((writes[0] as Buffer).length).toBe(2 + 4 + data.length); // header (masked, zero key) + payload
    expect((await echoed).equals(data)).toBe(true);
    stream.destroy();
  });

  it('verifies the server certificate against the CA and the host name', async () => {
    await expect(connectWebSocket(new URL(`wss://127.0.0.2:${port}/`), { cert: tls.clientCert, key: tls.clientKey, ca: tls.ca, timeoutMs: 5_000 }))
      .rejects.toMatchObject({ code: expect.stringMatching(/ERR_TLS_CERT_ALTNAME_INVALID|ECONNREFUSED/) });
  });
});

describe('a ws client (random masks) against our WebSocket server', () => {
  let server: https.Server;
  let port: number;
  beforeAll(async () => {
    server = https.createServer({ cert: tls.serverCert, key: tls.serverKey });
    server.on('upgrade', (req, socket, head) => {
      if (req.url === '/refuse') {
        socket.end('HTTP/1.1 403 Forbidden\r\nX-Underpass-Reason: TEST\r\nContent-Length: 4\r\n\r\nnope');
        return;
      }
      const s = acceptWebSocket(req, socket as never, head);
      if (!(s instanceof WebSocketStream)) return void socket.end(`HTTP/1.1 ${s.status} x\r\n\r\n`);
      s.on('error', () => undefined);
      s.pipe(s);
    });
    port = await listen(server);
  });
  afterAll(() => void server.close());

  it('echoes 32 MiB sent by ws with random masking keys', async () => {
    const ws = new WebSocket(`wss://localhost:${port}/`, { ca: tls.ca, perMessageDeflate: false, maxPayload: 64 << 20 });
    await once(ws, 'open');
    const data = randomBytes(32 << 20);
    const got: Buffer[] = [];
    let n = 0;
    const done = new Promise<void>((resolve) => ws.on('message', (m: Buffer) => {
      got.push(m);
      n += m.length;
      if (n >= data.length) resolve();
    }));
    for (let i = 0; i < data.length; i += 1 << 20) ws.send(data.subarray(i, i + (1 << 20)));
    await done;
    expect(sha(Buffer.concat(got))).toBe(sha(data));
    ws.close(1000);
    const [code] = (await once(ws, 'close')) as [number];
    expect(code).toBe(1000);
  }, 30_000);

  it('writes frames in place from a buffer reused at once (our client to our server, which echoes): the bytes arrive intact', async () => {
    const stream = await connectWebSocket(new URL(`wss://localhost:${port}/`), { cert: tls.clientCert, key: tls.clientKey, ca: tls.ca, timeoutMs: 5_000 });
    const shared = Buffer.alloc(14 + (256 << 10));
    const sent: Buffer[] = [];
    let total = 0;
    let inPlace = 0;
    let declined = 0;
    const echoed: Buffer[] = [];
    let received = 0;
    stream.on('data', (d: Buffer) => (echoed.push(d), (received += d.length)));
    while (total < 16 << 20) {
      const n = 1 + Math.floor(Math.random() * (256 << 10));
      const chunk = randomBytes(n);
      chunk.copy(shared, 14);
      const written = await new Promise<boolean>((resolve) => {
        if (!stream.writeInPlace(shared, 14, 14 + n, () => resolve(true))) resolve(false);
        shared.fill(0xee); // the next read overwrites the buffer before the write completes
      });
      if (!written) {
        declined++;
        stream.write(chunk); // the ordinary path, as the session falls back to
      } else inPlace++;
      sent.push(chunk);
      total += n;
      // A write on the ordinary path is in flight: the next in-place write must be declined until it is through.
      if (!written) expect(stream.writeInPlace(shared, 14, 15, () => undefined)).toBe(false);
      if (!written) await new Promise((resolve) => setTimeout(resolve, 5));
    }
    await new Promise<void>((resolve) => {
      const check = (): void => (received >= total ? resolve() : void setTimeout(check, 10));
      check();
    });
    expect(sha(Buffer.concat(echoed))).toBe(sha(Buffer.concat(sent)));
    expect(inPlace).toBeGreaterThan(10);
    stream.destroy();
  }, 30_000);

  it('reads and writes past its stream sides for a direct reader: bytes intact and in order, none through the Readable side, needDrain then drain', async () => {
    const stream = await connectWebSocket(new URL(`wss://localhost:${port}/`), { cert: tls.clientCert, key: tls.clientKey, ca: tls.ca, timeoutMs: 5_000 });
    const viaReadable = jest.fn();
    stream.on('data', viaReadable);
    const echoed: Buffer[] = [];
    let received = 0;
    expect(stream.readDirect({ transportData: (c) => (echoed.push(Buffer.from(c)), (received += c.length)) })).toBe(true);
    const sent: Buffer[] = [];
    let total = 0;
    let drains = 0;
    while (total < 16 << 20) {
      const parts = [randomBytes(1 + Math.floor(Math.random() * 100)), randomBytes(1 + Math.floor(Math.random() * (64 << 10)))];
      expect(stream.writeDirect(parts)).toBe(true);
      sent.push(...parts);
      total += parts[0]!.length + parts[1]!.length;
      if (stream.needDrain) {
        await once(stream, 'drain');
        drains++;
        expect(stream.needDrain).toBe(false);
      }
    }
    await new Promise<void>((resolve) => {
      const check = (): void => (received >= total ? resolve() : void setTimeout(check, 10));
      check();
    });
    expect(sha(Buffer.concat(echoed))).toBe(sha(Buffer.concat(sent)));
    expect(drains).toBeGreaterThan(0); // 16 MiB against an echo: the socket filled at least once
    expect(viaReadable).not.toHaveBeenCalled();
    // Something waiting on the Writable side would be overtaken: declined.
    stream.cork();
    stream.write(Buffer.from('x'));
    expect(stream.writeDirect([Buffer.from('y')])).toBe(false);
    stream.destroy();
  }, 30_000);

  it('declines a direct reader while data waits on its Readable side (it would be overtaken)', async () => {
    const stream = await connectWebSocket(new URL(`wss://localhost:${port}/`), { cert: tls.clientCert, key: tls.clientKey, ca: tls.ca, timeoutMs: 5_000 });
    stream.write(Buffer.from('echo me'));
    await new Promise<void>((resolve) => {
      const check = (): void => (stream.readableLength > 0 ? resolve() : void setTimeout(check, 5));
      check();
    });
    expect(stream.readDirect({ transportData: () => undefined })).toBe(false);
    expect((stream.read() as Buffer).toString()).toBe('echo me');
    stream.destroy();
  });

  it('carries a mux session directly: its frames pass no Node stream side of the WebSocket', async () => {
    const stream = await connectWebSocket(new URL(`wss://localhost:${port}/`), { cert: tls.clientCert, key: tls.clientKey, ca: tls.ca, timeoutMs: 5_000 });
    const push = jest.spyOn(stream, 'push');
    const write = jest.spyOn(stream, 'write');
    const session = new Session(stream, { client: true });
    // The server echoes: our ping comes back as the peer's ping, which we answer, and that answer back as the ACK.
    for (let i = 0; i < 20; i++) expect(await session.ping(5_000)).toBeGreaterThanOrEqual(0);
    expect(push).not.toHaveBeenCalled();
    expect(write).not.toHaveBeenCalled();
    session.close();
  });

  it('declines to write in place over a plain socket (its bytes may be referenced until the kernel takes them)', async () => {
    const server = net.createServer((sock) => sock.resume());
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const sock = net.connect((server.address() as AddressInfo).port, '127.0.0.1');
    await once(sock, 'connect');
    const stream = new WebSocketStream(sock, Buffer.alloc(0), 'client');
    expect(stream.writeInPlace(Buffer.alloc(100), 14, 100, () => undefined)).toBe(false);
    stream.destroy();
    server.close();
  });

  it('answers ws pings with pongs', async () => {
    const ws = new WebSocket(`wss://localhost:${port}/`, { ca: tls.ca });
    await once(ws, 'open');
    ws.ping(Buffer.from('hello'));
    const [payload] = (await once(ws, 'pong')) as [Buffer];
    expect(payload.toString()).toBe('hello');
    ws.terminate();
  });

  it('closes with 1003 when ws sends a text message', async () => {
    const ws = new WebSocket(`wss://localhost:${port}/`, { ca: tls.ca });
    await once(ws, 'open');
    ws.send('text is not tunnel data');
    const [code] = (await once(ws, 'close')) as [number];
    expect(code).toBe(1003);
  });

  it('reports an HTTP refusal with its status and reason to our client', async () => {
    const err = await connectWebSocket(new URL(`wss://localhost:${port}/refuse`), { cert: tls.clientCert, key: tls.clientKey, ca: tls.ca, timeoutMs: 5_000 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(WebSocketRefused);
    expect(err).toMatchObject({ status: 403, reason: 'TEST', message: expect.stringContaining('HTTP 403 TEST') });
  });
});

/** Resolves once `condition` holds (checked every millisecond), or fails after `ms`. */
async function until(condition: () => boolean, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${ms} ms: ${condition.toString()}`);
    await new Promise((r) => setTimeout(r, 1));
  }
}

describe('our WebSocket server against a client that never reads (finding 4)', () => {
  let server: https.Server;
  let port: number;
  const accepted: WebSocketStream[] = [];
  beforeAll(async () => {
    server = https.createServer({ cert: tls.serverCert, key: tls.serverKey });
    server.on('upgrade', (req, socket, head) => {
      const s = acceptWebSocket(req, socket as never, head);
      if (!(s instanceof WebSocketStream)) return void socket.end(`HTTP/1.1 ${s.status} x\r\n\r\n`);
      s.on('error', () => undefined);
      s.resume();
      accepted.push(s);
    });
    port = await listen(server);
  });
  afterAll(() => {
    for (const s of accepted) s.destroy();
    server.close();
  });

  /** A raw TLS client that upgrades, then only writes: it never reads a byte of what the server sends. */
  async function deafClient(): Promise<{ socket: import('node:tls').TLSSocket; server: WebSocketStream }> {
    const { connect } = await import('node:tls');
    const before = accepted.length;
    const socket = connect({ host: '127.0.0.1', port, servername: 'localhost', ca: tls.ca });
    await once(socket, 'secureConnect');
    socket.write('GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n');
    socket.pause();
    for (let i = 0; i < 200 && accepted.length === before; i++) await new Promise((r) => setTimeout(r, 10));
    return { socket, server: accepted[accepted.length - 1]! };
  }

  it('answers 100,000 pings from a client that never reads with less than 64 KiB queued, and counts the pongs it dropped', async () => {
    const { socket, server: s } = await deafClient();
    const dropped: string[] = [];
    s.on('limit', (limit: string) => dropped.push(limit));
    const ping = encodeControlFrame(Opcode.Ping, Buffer.alloc(125, 0x70), true);
    for (let i = 0; i < 100; i++) {
      if (!socket.write(Buffer.concat(Array.from({ length: 1_000 }, () => ping)))) await once(socket, 'drain');
    }
    await until(() => dropped.length > 1_000);
    expect(s.socket.writableLength).toBeLessThan(64 * 1024);
    expect(new Set(dropped)).toEqual(new Set(['ping_replies']));
    socket.destroy();
  }, 30_000);

  it('stops reading a client that leaves more than its unread-output limit unread, and reads again once it has read', async () => {
    const { socket, server: s } = await deafClient();
    s.limitUnreadOutput(1 << 20);
    let arrived = 0;
    s.on('data', (d: Buffer) => (arrived += d.length));
    s.write(randomBytes(12 << 20)); // more than loopback's buffers and the limit together
    await until(() => s.outputBlocked);
    expect(s.unreadOutput).toBeGreaterThan(1 << 20);
    const data = Buffer.concat([encodeFrameHeader(Opcode.Binary, 1000, true), Buffer.alloc(1000, 0x61)]);
    socket.write(data);
    await new Promise((r) => setTimeout(r, 100));
    expect(arrived).toBe(0); // not read while the client does not read
    socket.on('data', () => undefined);
    socket.resume();
    await until(() => arrived === 1000);
    expect(s.outputBlocked).toBe(false);
    socket.destroy();
  }, 30_000);
});
