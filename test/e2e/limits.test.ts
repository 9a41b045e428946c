/**
 * The limits a running worker and connector actually enforce, with their production defaults,
 * through the public path (real processes, real mTLS; hostile peers made of the library's pieces):
 * the WebSocket frame size, the control message size, the open header size, streams per session,
 * the open buffer budget, sessions per connector name and per worker, unauthenticated connections
 * in total and per source (issue 19 item 4, issue 15 finding 5). The expected values are written
 * here, not imported: changing a production default fails a test that names the limit
 * (docs/security.md, "Limits", is the table to update with it).
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { once } from 'node:events';
import net from 'node:net';
import { ControlChannel, PROTOCOL_VERSION } from '../../tunnel/control.js';
import type { Channel, ChannelSink } from '../../tunnel/mux/channel.js';
import { FrameType, encodeHeader } from '../../tunnel/mux/frame.js';
import type { Session } from '../../tunnel/mux/session.js';
import { readOpenResponse } from '../../tunnel/open.js';
import { connectWebSocket, WebSocketRefused } from '../../tunnel/transport/websocket.js';
import { encodeFrameHeader, Opcode } from '../../tunnel/transport/ws-frame.js';
import { echoServer, makePki, metricValue, removeDir, startConnector, startWorker, tcpServer, tempDir, waitFor, type App, type Pki, type WorkerSetup } from './harness.js';
import { credsOf, expectLimit, fakeWorker, fillStream, HostileConnector, MiB, wsFrame, yamux, type Creds } from './hostile.js';

// The production defaults (tunnel/limits.ts), pinned.
const WS_MAX_FRAME = 16 * MiB;
const CONTROL_MESSAGE_MAX = 1 * MiB;
const OPEN_HEADER_MAX = 8 * 1024;
const STREAMS_PER_SESSION = 16_384;
const OPEN_BUFFER_BYTES = 8 * MiB;
const SESSIONS_PER_CONNECTOR = 3;
const SESSIONS = 64;
const UNAUTHENTICATED = 256;
const UNAUTHENTICATED_PER_SOURCE = 32;
const STREAM_BUFFER_BYTES = 32 * MiB;

/** An open request whose JSON, padded with whitespace, is exactly `n` bytes long (after its u16 length). */
function openHeaderOf(n: number, mapping = 'nope'): Buffer {
  const json = JSON.stringify({ mapping, source: '192.0.2.1:1' });
  const frame = Buffer.alloc(2 + n, 0x20);
  frame.writeUInt16BE(n, 0);
  frame.write(json, 2);
  return frame;
}

/** A channel of `session` whose reset (or not) can be awaited. */
function watchedChannel(session: Session): { channel: Channel; reset: Promise<boolean> } {
  const channel = session.openChannel();
  let settle!: (reset: boolean) => void;
  const reset = new Promise<boolean>((r) => (settle = r));
  const sink: ChannelSink = { onData: (c) => channel.consumed(c.length), onEnd: () => undefined, onAbort: () => settle(true), onWritable: () => undefined };
  channel.attach(sink);
  return { channel, reset };
}

const within = <T>(p: Promise<T>, ms: number, otherwise: T): Promise<T> => Promise.race([p, new Promise<T>((r) => setTimeout(() => r(otherwise), ms))]);

describe('limits a worker enforces on one session (production defaults)', () => {
  let dir: string;
  let pki: Pki;
  let worker: WorkerSetup;
  const creds: Record<string, Creds> = {};
  const names = ['frame', 'frame-max', 'ctl', 'ctl-max', 'hdr', 'streams', 'buffer'];

  beforeAll(async () => {
    dir = await tempDir('underpass-limits-');
    pki = await makePki(dir);
    await Promise.all(names.map((n) => pki.connector(n)));
    for (const n of names) creds[n] = await credsOf(dir, n);
    worker = await startWorker(dir);
  }, 60_000);

  afterAll(async () => {
    await worker?.proc.stop();
    await removeDir(dir);
  });

  it(`ws_frame_bytes: a WebSocket frame of ${WS_MAX_FRAME} + 1 bytes closes the connection with 1009`, async () => {
    const c = await HostileConnector.connect(worker.url, 'frame', creds.frame!);
    c.write(wsFrame.header(WS_MAX_FRAME + 1));
    const err = await c.session.closed;
    expectLimit('ws_frame_bytes', /code 1009: frame of 16777217 bytes exceeds the 16777216-byte limit/.test(String(err?.message)),
      `a frame of 16 MiB + 1 must be refused with 1009, the session ended with: ${err?.message}`);
    await waitFor('the limit counted', async () => (await metricValue(worker.adminPort, 'underpass_limit_refusals_total', { limit: 'ws_frame_bytes' })) >= 1);
  });

  it(`ws_frame_bytes: a WebSocket frame of exactly ${WS_MAX_FRAME} bytes is carried`, async () => {
    const c = await HostileConnector.connect(worker.url, 'frame-max', creds['frame-max']!);
    try {
      // 16 MiB of window updates for a stream that does not exist (ignored, as the spec allows); the
      // last yamux frame straddles into the next WebSocket frame, with a ping behind it.
      const ignored = encodeHeader(FrameType.WindowUpdate, 0, 1_000_001, 0);
      const payload = Buffer.alloc(WS_MAX_FRAME);
      for (let at = 0; at + 12 <= payload.length; at += 12) ignored.copy(payload, at);
      const tail = WS_MAX_FRAME % 12;
      ignored.copy(payload, WS_MAX_FRAME - tail, 0, tail);
      await c.withSessionHeld(async () => {
        c.write(wsFrame.header(WS_MAX_FRAME));
        for (let at = 0; at < payload.length; at += MiB) if (!c.write(payload.subarray(at, at + MiB))) await once(c.socket, 'drain');
        c.sendYamux(ignored.subarray(tail));
      });
      const rtt = await c.session.ping(10_000).catch((e: Error) => e);
      expectLimit('ws_frame_bytes', typeof rtt === 'number', `a frame of exactly 16 MiB must be accepted, the ping after it got: ${String(rtt)}`);
    } finally {
      c.close();
    }
  }, 60_000);

  it(`control_message_bytes: a hello of exactly ${CONTROL_MESSAGE_MAX} bytes is answered, one of ${CONTROL_MESSAGE_MAX} + 1 ends the session`, async () => {
    const hello = (name: string, size: number): Buffer => {
      const frame = Buffer.alloc(4 + size, 0x20);
      frame.writeUInt32BE(size, 0);
      frame.write(JSON.stringify({ type: 'hello', protocol: PROTOCOL_VERSION, connector: name, version: 'limits', capabilities: ['tcp'] }), 4);
      return frame;
    };
    const ok = await HostileConnector.connect(worker.url, 'ctl-max', creds['ctl-max']!, { hello: false });
    try {
      const stream = ok.session.open();
      const control = new ControlChannel(stream);
      control.on('error', () => undefined);
      stream.write(hello('ctl-max', CONTROL_MESSAGE_MAX));
      const welcome = await control.expect('welcome', 10_000).catch((e: Error) => e);
      expectLimit('control_message_bytes', !(welcome instanceof Error), `a control message of exactly 1 MiB must be accepted: ${String(welcome)}`);
    } finally {
      ok.close();
    }
    const big = await HostileConnector.connect(worker.url, 'ctl', creds.ctl!, { hello: false });
    const stream = big.session.open();
    stream.on('error', () => undefined);
    stream.write(hello('ctl', CONTROL_MESSAGE_MAX + 1).subarray(0, 64 * 1024));
    const ended = await within(big.session.closed.then(() => true), 10_000, false);
    expectLimit('control_message_bytes', ended && worker.proc.logs.includes('control message of 1048577 bytes exceeds the 1048576-byte limit'),
      'a control message of 1 MiB + 1 must end the session, and the worker must say why');
  }, 60_000);

  it(`open_header_bytes: an open header of exactly ${OPEN_HEADER_MAX} bytes is answered, one of ${OPEN_HEADER_MAX} + 1 resets the stream`, async () => {
    const c = await HostileConnector.connect(worker.url, 'hdr', creds.hdr!);
    try {
      const ok = c.session.open();
      ok.on('error', () => undefined);
      ok.write(openHeaderOf(OPEN_HEADER_MAX));
      const answer = await readOpenResponse(ok, 10_000).catch((e: Error) => e);
      expectLimit('open_header_bytes', !(answer instanceof Error) && answer.ok === false && answer.code === 'UNKNOWN_MAPPING',
        `an open header of exactly 8 KiB must be read and answered: ${JSON.stringify(answer)}`);
      const { channel, reset } = watchedChannel(c.session);
      channel.write(openHeaderOf(OPEN_HEADER_MAX + 1).subarray(0, 100));
      expectLimit('open_header_bytes', await within(reset, 10_000, false), 'an open header of 8 KiB + 1 must reset the stream');
      const line = await waitFor('the audit line', () => worker.proc.streams({ connector: 'hdr', reason: 'LIMIT_EXCEEDED' })[0]);
      expect(String(line.message)).toBe('stream open request of 8193 bytes exceeds the 8192-byte limit');
      expect(await metricValue(worker.adminPort, 'underpass_limit_refusals_total', { limit: 'open_header_bytes' })).toBeGreaterThanOrEqual(1);
    } finally {
      c.close();
    }
  }, 60_000);

  it(`streams_per_session: ${STREAMS_PER_SESSION} streams (the control stream among them) are accepted, the next is reset`, async () => {
    const c = await HostileConnector.connect(worker.url, 'streams', creds.streams!);
    try {
      const opened: Array<{ reset: Promise<boolean> }> = [];
      for (let i = 1; i < STREAMS_PER_SESSION; i++) {
        opened.push(watchedChannel(c.session));
        if (i % 1_000 === 0) await new Promise((r) => setImmediate(r));
      }
      const over = watchedChannel(c.session);
      expectLimit('streams_per_session', await within(over.reset, 10_000, false), `stream ${STREAMS_PER_SESSION + 1} of a session must be reset`);
      const last = await within(opened.at(-1)!.reset, 500, false);
      expectLimit('streams_per_session', !last, `stream ${STREAMS_PER_SESSION} of a session must be accepted`);
      expect(await metricValue(worker.adminPort, 'underpass_limit_refusals_total', { limit: 'streams_per_session' })).toBeGreaterThanOrEqual(1);
    } finally {
      c.close();
    }
  }, 60_000);

  it(`open_buffer_bytes: a session's streams may hold ${OPEN_BUFFER_BYTES} bytes of unfinished open headers, the stream past it is reset`, async () => {
    const c = await HostileConnector.connect(worker.url, 'buffer', creds.buffer!);
    try {
      // Each stream announces an 8 KiB header and sends 1 byte of it: the worker holds 8 KiB for it.
      const partial = Buffer.concat([Buffer.from([0x20, 0x00]), Buffer.from('{')]);
      const held: Array<{ reset: Promise<boolean> }> = [];
      for (let i = 0; i < OPEN_BUFFER_BYTES / 8192; i++) {
        const w = watchedChannel(c.session);
        w.channel.write(partial);
        held.push(w);
      }
      const over = watchedChannel(c.session);
      over.channel.write(partial);
      expectLimit('open_buffer_bytes', await within(over.reset, 10_000, false), 'the stream whose header does not fit the 8 MiB budget must be reset');
      const early = await within(Promise.race(held.map((h) => h.reset)), 500, false);
      expectLimit('open_buffer_bytes', !early, 'the 1,024 streams within the 8 MiB budget must be held');
      const line = await waitFor('the audit line', () => worker.proc.streams({ connector: 'buffer', reason: 'LIMIT_EXCEEDED' })[0]);
      expect(String(line.message)).toMatch(/open buffer budget/);
      expect(await metricValue(worker.adminPort, 'underpass_limit_refusals_total', { limit: 'open_buffer_bytes' })).toBeGreaterThanOrEqual(1);
    } finally {
      c.close();
    }
  }, 60_000);
});

describe('limits a worker enforces on sessions and unauthenticated connections (production defaults)', () => {
  let dir: string;
  let pki: Pki;
  let worker: WorkerSetup;
  const creds: Record<string, Creds> = {};
  const names = Array.from({ length: 22 }, (_, i) => `s${i}`);

  beforeAll(async () => {
    dir = await tempDir('underpass-limits-sessions-');
    pki = await makePki(dir);
    await Promise.all(names.map((n) => pki.connector(n)));
    for (const n of names) creds[n] = await credsOf(dir, n);
    worker = await startWorker(dir, { listenHost: '0.0.0.0' });
  }, 60_000);

  afterAll(async () => {
    await worker?.proc.stop();
    await removeDir(dir);
  });

  const dial = (name: string) => connectWebSocket(new URL(`wss://127.0.0.1:${worker.tunnelPort}/v1/tunnel`), { ...creds[name]!, timeoutMs: 10_000 });
  /**
   * A session that stays: hello answered, and the worker's keepalive pings answered. (A bare
   * WebSocket says nothing after the upgrade: the worker closes it after keepalive.timeout, 3 s
   * here — and 64 of them, dialled one after the other under load, took longer than that, so the
   * first had gone when the 65th came and it was let in.)
   */
  const session = async (name: string): Promise<{ destroy(): void }> => {
    const c = await HostileConnector.connect(`wss://127.0.0.1:${worker.tunnelPort}`, name, creds[name]!);
    return { destroy: () => c.close() };
  };
  const describeAnswer = (x: unknown): string => (x instanceof Error ? x.message : 'the session was accepted');

  it(`sessions_per_connector and sessions: ${SESSIONS_PER_CONNECTOR} sessions per connector name, ${SESSIONS} per worker, then 429 TOO_MANY_SESSIONS`, async () => {
    const open: Array<{ destroy(): void }> = [];
    try {
      for (let i = 0; i < SESSIONS_PER_CONNECTOR; i++) open.push(await session('s0'));
      const fourth = await dial('s0').catch((e: unknown) => e);
      expectLimit('sessions_per_connector', fourth instanceof WebSocketRefused && fourth.status === 429 && fourth.reason === 'TOO_MANY_SESSIONS',
        `session ${SESSIONS_PER_CONNECTOR + 1} of one connector name must be refused (429 TOO_MANY_SESSIONS): ${describeAnswer(fourth)}`);
      for (let n = 1; open.length < SESSIONS; n++) {
        for (let i = 0; i < SESSIONS_PER_CONNECTOR && open.length < SESSIONS; i++) open.push(await session(`s${n}`));
      }
      const over = await dial('s21').catch((e: unknown) => e);
      expectLimit('sessions', over instanceof WebSocketRefused && over.status === 429 && /holds 64 sessions/.test(over.body),
        `session ${SESSIONS + 1} of a worker must be refused (429 TOO_MANY_SESSIONS): ${describeAnswer(over)}`);
      expect(await metricValue(worker.adminPort, 'underpass_limit_refusals_total', { limit: 'sessions' })).toBe(1);
      expect(await metricValue(worker.adminPort, 'underpass_limit_refusals_total', { limit: 'sessions_per_connector' })).toBe(1);
    } finally {
      for (const s of open) s.destroy();
    }
  }, 60_000);

  /** A TCP connection from `from` that sends nothing; resolves true if the worker closed it within `ms`. */
  function closedWithin(socket: net.Socket, ms: number): Promise<boolean> {
    return within(once(socket, 'close').then(() => true), ms, false);
  }

  function silent(from: string): Promise<net.Socket> {
    return new Promise((resolve, reject) => {
      const s = net.connect({ host: '127.0.0.1', port: worker.tunnelPort, localAddress: from });
      s.on('error', () => undefined);
      s.once('connect', () => resolve(s));
      s.once('error', reject);
    });
  }

  it(`unauthenticated_per_source and unauthenticated_connections: ${UNAUTHENTICATED_PER_SOURCE} per source address, ${UNAUTHENTICATED} in all, the next closed before TLS`, async () => {
    const held: net.Socket[] = [];
    try {
      for (let i = 0; i < UNAUTHENTICATED_PER_SOURCE; i++) held.push(await silent('127.0.0.2'));
      const extra = await silent('127.0.0.2');
      expectLimit('unauthenticated_per_source', await closedWithin(extra, 2_000),
        `connection ${UNAUTHENTICATED_PER_SOURCE + 1} from one address, still in its handshake, must be closed at once`);
      expectLimit('unauthenticated_per_source', !(await closedWithin(held.at(-1)!, 300)), `connection ${UNAUTHENTICATED_PER_SOURCE} from one address must be kept`);
      for (let source = 3; held.length < UNAUTHENTICATED; source++) {
        for (let i = 0; i < UNAUTHENTICATED_PER_SOURCE && held.length < UNAUTHENTICATED; i++) held.push(await silent(`127.0.0.${source}`));
      }
      const over = await silent('127.0.0.100');
      expectLimit('unauthenticated_connections', await closedWithin(over, 2_000),
        `connection ${UNAUTHENTICATED + 1} still in its handshake must be closed at once, whatever its address`);
      expect(await metricValue(worker.adminPort, 'underpass_limit_refusals_total', { limit: 'unauthenticated_per_source' })).toBe(1);
      expect(await metricValue(worker.adminPort, 'underpass_limit_refusals_total', { limit: 'unauthenticated_connections' })).toBe(1);
      const denied = await waitFor('the audit line', () => worker.proc.audit.find((a) => a.event === 'session-denied' && a.reason === 'TOO_MANY_UNAUTHENTICATED'));
      expect(String(denied.message)).toMatch(/limit 32 per source/);
    } finally {
      for (const s of held) s.destroy();
    }
    // The worker forgets closed connections: a connector gets through again.
    await waitFor('a session again', async () => {
      const ws = await dial('s1').catch(() => undefined);
      ws?.destroy();
      return Boolean(ws);
    }, 10_000);
  }, 60_000);
});

describe('limits a connector enforces on what a worker sends (production defaults)', () => {
  let dir: string;
  let app: App;

  beforeAll(async () => {
    dir = await tempDir('underpass-limits-connector-');
    const pki = await makePki(dir);
    await pki.connector('dc1-a');
    app = await echoServer();
  }, 60_000);

  afterAll(async () => {
    await app?.close();
    await removeDir(dir);
  });

  it(`ws_frame_bytes, control_message_bytes, open_header_bytes, streams_per_session: a worker that goes past them is refused`, async () => {
    const mappings = [{ name: 'echo', protocol: 'TCP' as const, target: { side: 'Connector' as const, host: '127.0.0.1', port: app.port }, listen: { port: 1, address: '127.0.0.1' }, allowedSources: [] }];
    const fake = await fakeWorker(dir, mappings);
    const first = fake.next();
    const connector = await startConnector(dir, 'dc1-a', fake.url, { allow: [`127.0.0.1:${app.port}`] });
    try {
      const metric = (limit: string) => metricValue(connector.adminPort, 'underpass_limit_refusals_total', { limit });
      let s = await first;

      // open_header_bytes: 8 KiB is read and answered (the mapping is served), 8 KiB + 1 resets the stream.
      const ok = s.session.open();
      ok.on('error', () => undefined);
      ok.write(openHeaderOf(OPEN_HEADER_MAX, 'echo'));
      const answer = await readOpenResponse(ok, 10_000).catch((e: Error) => e);
      expectLimit('open_header_bytes', !(answer instanceof Error) && answer.ok, `the connector must answer an 8 KiB open header: ${JSON.stringify(answer)}`);
      ok.destroy();
      const big = watchedChannel(s.session);
      big.channel.write(openHeaderOf(OPEN_HEADER_MAX + 1, 'echo').subarray(0, 100));
      expectLimit('open_header_bytes', await within(big.reset, 10_000, false), 'the connector must reset a stream whose open header is 8 KiB + 1');
      await waitFor('the connector to count it', async () => (await metric('open_header_bytes')) >= 1);

      // streams_per_session: the connector's control stream and 16,383 of ours; the next is reset.
      const opened: Array<{ reset: Promise<boolean> }> = [];
      for (let i = 1; i < STREAMS_PER_SESSION; i++) {
        opened.push(watchedChannel(s.session));
        if (i % 1_000 === 0) await new Promise((r) => setImmediate(r));
      }
      const over = watchedChannel(s.session);
      expectLimit('streams_per_session', await within(over.reset, 10_000, false), `stream ${STREAMS_PER_SESSION + 1} towards a connector must be reset`);
      expectLimit('streams_per_session', !(await within(opened.at(-1)!.reset, 500, false)), `stream ${STREAMS_PER_SESSION} towards a connector must be accepted`);

      // control_message_bytes: a config of 1 MiB + 1 is refused by its length.
      const prefix = Buffer.alloc(4);
      prefix.writeUInt32BE(CONTROL_MESSAGE_MAX + 1);
      const next = fake.next();
      s.session.close(); // a fresh session for what follows
      s = await next;
      // Stream 1 is the connector's control stream: a raw yamux frame on it, past the control channel's encoder.
      const after = fake.next(); // the connector drops the session and comes back
      s.ws.write(yamux.data(1, prefix));
      await waitFor('the connector to refuse the message', () => connector.proc.logs.includes('control message of 1048577 bytes exceeds the 1048576-byte limit'), 10_000);
      await waitFor('the connector to count it', async () => (await metric('control_message_bytes')) >= 1);

      // ws_frame_bytes: a frame of 16 MiB + 1 closes the connection with 1009.
      const last = await after;
      last.ws.socket.write(encodeFrameHeader(Opcode.Binary, WS_MAX_FRAME + 1, false));
      await waitFor('the connector to close it', () => last.session.isClosed, 10_000);
      await waitFor('the connector to say why', () => /frame of 16777217 bytes exceeds the 16777216-byte limit/.test(connector.proc.logs), 5_000).catch(() => undefined);
      expectLimit('ws_frame_bytes', (await metric('ws_frame_bytes')) >= 1, 'the connector must refuse (and count) a frame of 16 MiB + 1');
    } finally {
      await connector.proc.stop();
      fake.close();
    }
  }, 120_000);
});

/**
 * stream_buffer_bytes, at its smallest setting (8Mi) so that a few streams reach it: the default
 * (32 MiB, pinned below) takes four times the traffic, each stream first filling the ~4 MB the
 * kernel's socket buffers take before a target that never reads. Set in the `limits:` section, it
 * also shows that the field reaches the sessions of both.
 */
describe('stream_buffer_bytes: what a session holds for targets that do not read (limits.streamBufferBytes: 8Mi)', () => {
  let dir: string;
  let pki: Pki;
  /** A target that accepts and never reads. */
  let sink: App;
  const limit = 8 * MiB;

  beforeAll(async () => {
    dir = await tempDir('underpass-limits-buffer-');
    pki = await makePki(dir);
    await Promise.all([pki.connector('filler'), pki.connector('dc1-a')]);
    sink = await tcpServer((socket) => {
      socket.on('error', () => undefined);
      socket.pause();
    });
  }, 60_000);

  afterAll(async () => {
    await sink?.close();
    await removeDir(dir);
  });

  it(`the default is ${STREAM_BUFFER_BYTES} bytes`, async () => {
    const { DEFAULT_LIMITS } = await import('../../tunnel/limits.js');
    expect(DEFAULT_LIMITS.streamBufferBytes).toBe(STREAM_BUFFER_BYTES);
  });

  /** Fills streams one after another until the far end resets one; the streams filled and whether it did. */
  async function fillUntilReset(fill: () => Promise<{ reset: boolean }>, closed: () => boolean): Promise<{ streams: number; reset: boolean }> {
    for (let i = 1; i <= 40 && !closed(); i++) if ((await fill()).reset) return { streams: i, reset: true };
    return { streams: 40, reset: false };
  }

  it('a worker resets the stream that would hold more, counts it, audits it LIMIT_EXCEEDED, and keeps the session', async () => {
    const worker = await startWorker(dir, {
      limits: { streamBufferBytes: '8Mi' },
      mappings: [{ name: 'sink', target: { side: 'Cluster', host: '127.0.0.1', port: sink.port }, listen: { port: 1, address: '127.0.0.1' } }],
    });
    const c = await HostileConnector.connect(worker.url, 'filler', await credsOf(dir, 'filler'));
    try {
      const r = await fillUntilReset(() => c.fillStream('sink'), () => c.session.isClosed);
      expectLimit('stream_buffer_bytes', r.reset, `the worker must reset a stream once its session holds more than 8 MiB for targets that do not read (filled ${r.streams} streams)`);
      expect(await metricValue(worker.adminPort, 'underpass_limit_refusals_total', { limit: 'stream_buffer_bytes' })).toBeGreaterThanOrEqual(1);
      expect(await metricValue(worker.adminPort, 'underpass_stream_buffer_bytes')).toBeLessThanOrEqual(limit);
      const line = await waitFor('the audit line', () => worker.proc.streams({ connector: 'filler', reason: 'LIMIT_EXCEEDED' })[0]);
      expect(line).toMatchObject({ outcome: 'failed', mapping: 'sink' });
      expect(String(line.message)).toMatch(/not yet taken by their targets or clients, over the 8388608-byte limit/);
      expect(c.session.isClosed).toBe(false);
    } finally {
      c.close();
      await worker.proc.stop();
    }
  }, 120_000);

  it('a connector does the same against a worker that fills streams towards a target of its side', async () => {
    const mappings = [{ name: 'sink', protocol: 'TCP' as const, target: { side: 'Connector' as const, host: '127.0.0.1', port: sink.port }, listen: { port: 1, address: '127.0.0.1' }, allowedSources: [] }];
    const fake = await fakeWorker(dir, mappings);
    const first = fake.next();
    const connector = await startConnector(dir, 'dc1-a', fake.url, { allow: [`127.0.0.1:${sink.port}`], limits: { streamBufferBytes: '8Mi' } });
    try {
      const s = await first;
      const r = await fillUntilReset(() => fillStream(s.session, s.ws, 'sink'), () => s.session.isClosed);
      expectLimit('stream_buffer_bytes', r.reset, `the connector must reset a stream once its session holds more than 8 MiB for targets that do not read (filled ${r.streams} streams)`);
      expect(await metricValue(connector.adminPort, 'underpass_limit_refusals_total', { limit: 'stream_buffer_bytes' })).toBeGreaterThanOrEqual(1);
      expect(await metricValue(connector.adminPort, 'underpass_stream_buffer_bytes')).toBeLessThanOrEqual(limit);
      await waitFor('the audit line', () => connector.proc.streams({ reason: 'LIMIT_EXCEEDED' })[0]);
      expect(s.session.isClosed).toBe(false);
    } finally {
      await connector.proc.stop();
      fake.close();
    }
  }, 120_000);
});
