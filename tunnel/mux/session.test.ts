import { afterEach, describe, expect, it } from '@jest/globals';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { Duplex, Readable } from 'node:stream';
import { duplexPair, type PairOptions } from '../testing/duplex-pair.js';
import { encodeHeader, Flag, FrameType } from './frame.js';
import type { MuxConfig } from './config.js';
import { Session } from './session.js';
import type { MuxStream } from './stream.js';

const sessions: Session[] = [];
afterEach(() => {
  for (const s of sessions.splice(0)) s.close();
});

function pair(opts: PairOptions = {}, config: Partial<MuxConfig> = {}): { client: Session; server: Session } {
  const [a, b] = duplexPair(opts);
  const client = new Session(a, { client: true, config: { keepaliveIntervalMs: 0, ...config } });
  const server = new Session(b, { client: false, config: { keepaliveIntervalMs: 0, ...config } });
  sessions.push(client, server);
  return { client, server };
}

function echo(session: Session): void {
  session.on('stream', (s) => {
    s.on('error', () => undefined);
    s.pipe(s);
  });
}

/** Reads to EOF without destroying the stream (a for-await loop would destroy it, sending RST). */
function readAll(stream: MuxStream): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    stream.on('data', (d: Buffer) => parts.push(d));
    stream.once('end', () => resolve(Buffer.concat(parts)));
    stream.once('error', reject);
  });
}

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

describe('Session streams', () => {
  it('echoes data on a stream opened by the client', async () => {
    const { client, server } = pair();
    echo(server);
    const s = client.open();
    s.end('ping');
    expect((await readAll(s)).toString()).toBe('ping');
  });

  it('echoes data on a stream opened by the server, with even ids', async () => {
    const { client, server } = pair();
    echo(client);
    const s = server.open();
    expect(s.id % 2).toBe(0);
    s.end('from server');
    expect((await readAll(s)).toString()).toBe('from server');
  });

  it.each([1, 3, 7])('carries a full exchange when every chunk is split into %i-byte pieces', async (n) => {
    const { client, server } = pair({ splitEvery: n });
    echo(server);
    const data = randomBytes(100_000);
    const s = client.open();
    s.end(data);
    const [got, rtt] = await Promise.all([readAll(s), client.ping()]);
    expect(sha(got)).toBe(sha(data));
    expect(rtt).toBeGreaterThanOrEqual(0);
  });

  it('half-closes: the client ends its side and still reads the whole response', async () => {
    const { client, server } = pair();
    server.on('stream', async (s) => {
      const request = await readAll(s); // returns only after the client's FIN
      s.end(Buffer.concat([Buffer.from('got:'), request, randomBytes(1 << 20)]));
    });
    const s = client.open();
    s.end('question');
    const response = await readAll(s);
    expect(response.subarray(0, 12).toString()).toBe('got:question');
    expect(response.length).toBe(12 + (1 << 20));
  });

  it('keeps 200 concurrent streams apart', async () => {
    const { client, server } = pair();
    echo(server);
    const results = await Promise.all(
      Array.from({ length: 200 }, async () => {
        const data = randomBytes(20_000 + Math.floor(Math.random() * 20_000));
        const s = client.open();
        s.end(data);
        return sha(await readAll(s)) === sha(data);
      }),
    );
    expect(results.every(Boolean)).toBe(true);
    await new Promise((r) => setTimeout(r, 20));
    expect(client.streamCount).toBe(0);
    expect(server.streamCount).toBe(0);
  });

  it('resets a stream without disturbing the others', async () => {
    const { client, server } = pair();
    server.on('stream', (s) => {
      s.on('error', () => undefined);
      s.once('data', (d: Buffer) => (d.toString() === 'kill' ? s.destroy() : s.pipe(s) && s.write(d)));
    });
    const victim = client.open();
    const other = client.open();
    victim.write('kill');
    const [err] = (await once(victim, 'error')) as [Error & { code: string }];
    expect(err.code).toBe('ERR_STREAM_RESET');
    other.end('alive');
    expect((await readAll(other)).toString()).toBe('alive');
  });

  it('refuses streams with RST when nobody accepts them', async () => {
    const { client } = pair();
    const s = client.open();
    s.write('anyone?');
    const [err] = (await once(s, 'error')) as [Error & { code: string }];
    expect(err.code).toBe('ERR_STREAM_RESET');
  });

  it('refuses streams beyond maxStreams', async () => {
    const { client, server } = pair({}, { maxStreams: 2 });
    server.on('stream', (s) => s.on('error', () => undefined));
    const [a, b, c] = [client.open(), client.open(), client.open()];
    for (const s of [a, b]) s.on('error', () => undefined);
    const [err] = (await once(c, 'error')) as [Error & { code: string }];
    expect(err.code).toBe('ERR_STREAM_RESET');
  });
});

describe('Session flow control', () => {
  /** Client streams that write `chunk` as fast as their windows allow, until stopped. */
  function writers(client: Session, n: number): { streams: MuxStream[]; stop(): void } {
    const chunk = randomBytes(64 * 1024);
    let stopped = false;
    const streams = Array.from({ length: n }, () => {
      const s = client.open();
      s.on('error', () => undefined);
      const pump = (): void => {
        while (!stopped) if (!s.write(chunk)) return void s.once('drain', pump);
      };
      pump();
      return s;
    });
    return { streams, stop: () => (stopped = true) };
  }

  /** Accepts `n` streams, reads each until it consumed `bytes`, then pauses it. */
  async function readThenPause(server: Session, n: number, bytes: number): Promise<MuxStream[]> {
    const accepted: MuxStream[] = [];
    const done: Promise<void>[] = [];
    await new Promise<void>((resolve) => {
      server.on('stream', (s) => {
        s.on('error', () => undefined);
        accepted.push(s);
        done.push(new Promise<void>((consumed) => {
          let got = 0;
          const onData = (d: Buffer): void => {
            got += d.length;
            if (got < bytes) return;
            s.off('data', onData);
            s.pause();
            consumed();
          };
          s.on('data', onData);
        }));
        if (accepted.length === n) resolve();
      });
    });
    await Promise.all(done);
    return accepted;
  }

  /** Waits until the writers have filled whatever windows they were given (no growth for 200 ms), then the bytes buffered. */
  const buffered = async (streams: MuxStream[]): Promise<number> => {
    const total = (): number => streams.reduce((sum, s) => sum + s.readableLength, 0);
    let last = -1;
    for (let waited = 0; waited < 10_000 && total() !== last; waited += 200) {
      last = total();
      await new Promise((r) => setTimeout(r, 200));
    }
    return total();
  };

  it('gives one receiving stream its full maxStreamWindow', async () => {
    const { client, server } = pair({}, { maxStreamWindow: 2 << 20, maxSessionWindow: 4 << 20 });
    const w = writers(client, 1);
    const [s] = await readThenPause(server, 1, 4 << 20);
    const held = await buffered([s!]);
    w.stop();
    // More than the initial 256 KiB (the window was raised), never more than one window.
    expect(held).toBeGreaterThan(1 << 20);
    expect(held).toBeLessThanOrEqual(2 << 20);
  }, 20_000);

  it('shares maxSessionWindow among streams receiving at the same time', async () => {
    const session = 2 << 20;
    const { client, server } = pair({}, { maxStreamWindow: 2 << 20, maxSessionWindow: session });
    const w = writers(client, 8);
    // Every stream consumes several of its shares, so its last grant was sized for 8 receivers.
    const streams = await readThenPause(server, 8, 4 << 20);
    const held = await buffered(streams);
    w.stop();
    expect(held).toBeLessThanOrEqual(session);
    // Each still got at least the protocol's initial window's worth of room to work with.
    for (const s of streams) expect(s.readableLength).toBeGreaterThan(0);
  }, 30_000);

  it('gives the whole window back to a stream once the other receivers are gone', async () => {
    const { client, server } = pair({}, { maxStreamWindow: 2 << 20, maxSessionWindow: 2 << 20 });
    const first = writers(client, 4);
    const four = await readThenPause(server, 4, 1 << 20);
    first.stop();
    for (const s of [...first.streams, ...four]) s.destroy();
    await new Promise((r) => setTimeout(r, 50));
    server.removeAllListeners('stream');
    const next = writers(client, 1);
    const [s] = await readThenPause(server, 1, 4 << 20);
    const held = await buffered([s!]);
    next.stop();
    // Alone again: more than a quarter of the session window (what it would get if the four still counted).
    expect(held).toBeGreaterThan(1 << 20);
  }, 20_000);

  it('refuses a session window smaller than the stream window', () => {
    expect(() => pair({}, { maxStreamWindow: 4 << 20, maxSessionWindow: 1 << 20 })).toThrow(/maxSessionWindow: must be an integer ≥ maxStreamWindow/);
  });

  it('stops a writer at one window when the reader is paused, then delivers all 256 MiB', async () => {
    const window = 1 << 20;
    const { client, server } = pair({}, { maxStreamWindow: window });
    const accepted = once(server, 'stream') as Promise<[MuxStream]>;
    const total = 256 * 1024 * 1024;
    const chunk = randomBytes(64 * 1024);
    let offered = 0;
    const source = new Readable({
      read() {
        if (offered >= total) return void this.push(null);
        offered += chunk.length;
        this.push(chunk);
      },
    });
    const s = client.open();
    s.on('error', () => undefined);
    source.pipe(s);
    const [remote] = await accepted;
    remote.on('error', () => undefined);
    remote.pause();
    const memBefore = process.memoryUsage();
    await new Promise((r) => setTimeout(r, 300));
    // Buffered at the reader is bounded by the window; the writer is stuck.
    expect(remote.readableLength).toBeLessThanOrEqual(window);
    expect(s.bytesWritten).toBeLessThanOrEqual(window);
    const offeredWhilePaused = offered;
    await new Promise((r) => setTimeout(r, 200));
    expect(offered).toBe(offeredWhilePaused);
    const memPaused = process.memoryUsage();
    expect(memPaused.arrayBuffers - memBefore.arrayBuffers).toBeLessThan(16 * 1024 * 1024);
    let received = 0;
    remote.on('data', (d: Buffer) => (received += d.length));
    remote.resume();
    await once(remote, 'end');
    expect(received).toBe(total);
  }, 60_000);

  it('returns credit to a reader that takes a whole window with one read() (no deadlock)', async () => {
    const { client, server } = pair({}, { maxStreamWindow: 256 * 1024 });
    const total = 8 * 1024 * 1024;
    server.on('stream', (s) => {
      s.on('error', () => undefined);
      const chunk = randomBytes(64 * 1024);
      let sent = 0;
      const pump = (): void => {
        while (sent < total) {
          sent += chunk.length;
          if (!s.write(chunk)) return void s.once('drain', pump);
        }
        s.end();
      };
      pump();
    });
    const s = client.open();
    s.on('error', () => undefined);
    s.end();
    // Each time, wait until the whole window is buffered (the sender is blocked),
    // then take all of it with one read(): the credit must still come back.
    let received = 0;
    let ended = false;
    s.once('end', () => (ended = true));
    while (!ended) {
      await new Promise<void>((resolve) => {
        const check = (): void => {
          if (ended || s.readableLength >= 256 * 1024 || (s.readableEnded)) return resolve();
          setTimeout(check, 2);
        };
        check();
      });
      expect(s.readableLength).toBeLessThanOrEqual(256 * 1024);
      // The whole buffer by its size: since Node 26 a read() without one returns only the first chunk.
      const chunk = s.read(s.readableLength || undefined) as Buffer | null;
      if (chunk) received += chunk.length;
      else await new Promise((r) => setTimeout(r, 5));
      if (received >= total) {
        s.read();
        break;
      }
    }
    expect(received).toBe(total);
  }, 15_000);

  it('does not let a stream exceed its window: the session ends with a protocol error', async () => {
    const [a, b] = duplexPair();
    const server = new Session(b, { client: false, config: { keepaliveIntervalMs: 0, maxStreamWindow: 256 * 1024 } });
    server.on('stream', (s) => s.on('error', () => undefined));
    sessions.push(server);
    const fromServer: Buffer[] = [];
    a.on('data', (d: Buffer) => fromServer.push(d));
    a.write(encodeHeader(FrameType.WindowUpdate, Flag.SYN, 1, 0));
    a.write(encodeHeader(FrameType.Data, 0, 1, 300 * 1024)); // initial window is 256 KiB
    const err = await server.closed;
    expect(err).toMatchObject({ code: 'ERR_MUX_WINDOW_EXCEEDED' });
    expect(err?.message).toMatch(/window/);
    await new Promise((r) => setTimeout(r, 20));
    // After the ACK, the server told us why: GoAway with the protocol-error code.
    expect(Buffer.concat(fromServer).includes(encodeHeader(FrameType.GoAway, 0, 0, 1))).toBe(true);
  });
});

/** A transport whose writes complete only when the test releases them (a TLS socket that cannot send). */
class StallingTransport extends Duplex {
  readonly held: Array<() => void> = [];
  written = 0;
  constructor() {
    super({ writableHighWaterMark: 16 * 1024 });
  }
  override _read(): void {}
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.written += chunk.length;
    this.held.push(() => cb());
  }
  override _writev(chunks: Array<{ chunk: Buffer }>, cb: (err?: Error | null) => void): void {
    for (const c of chunks) this.written += c.chunk.length;
    this.held.push(() => cb());
  }
  release(): void {
    for (const cb of this.held.splice(0)) cb();
  }
}

describe('Session channels and a full transport', () => {
  it('tells a channel writer to stop while the transport is full and when it drained', async () => {
    const t = new StallingTransport();
    const session = new Session(t, { client: true, config: { keepaliveIntervalMs: 0 } });
    sessions.push(session);
    const channel = session.openChannel();
    const events: string[] = [];
    channel.attach({ onData() {}, onEnd() {}, onAbort: (err) => events.push(`abort ${err.message}`), onWritable: () => events.push('writable') });
    const chunk = Buffer.alloc(32 * 1024, 1);
    // Within the initial window, the writer is stopped by the transport, not by credit.
    let accepted = 0;
    while (channel.write(chunk)) {
      accepted += chunk.length;
      await new Promise((r) => setImmediate(r));
      if (accepted > 200 * 1024) break;
    }
    expect(accepted).toBeLessThan(200 * 1024);
    await new Promise((r) => setImmediate(r));
    expect(session.congested).toBe(true);
    expect(events).toEqual([]);
    // The transport sends what it holds (each completed write lets the next queued one through).
    for (let i = 0; i < 100 && t.held.length > 0; i++) {
      t.release();
      await new Promise((r) => setImmediate(r));
    }
    expect(events).toEqual(['writable']);
    expect(session.congested).toBe(false);
  });

  it("accepts a peer's stream as a channel when someone listens for 'channel', and ACKs it with the first frame back", async () => {
    const { client, server } = pair();
    const accepted: Array<{ id: number; data: string }> = [];
    server.on('channel', (ch) => {
      let data = '';
      ch.attach({
        onData: (d) => ((data += d.toString()), ch.consumed(d.length)),
        onEnd: () => {
          accepted.push({ id: ch.id, data });
          ch.write(Buffer.from(data.toUpperCase()));
          ch.end();
        },
        onAbort() {},
        onWritable() {},
      });
    });
    const s = client.open();
    s.end('hello');
    expect((await readAll(s)).toString()).toBe('HELLO');
    expect(accepted).toEqual([{ id: 1, data: 'hello' }]);
  });
});

/** A transport that records each write it is given (one entry per corked batch) and never answers. */
class RecordingTransport extends Duplex {
  readonly batches: Buffer[][] = [];
  override _read(): void {}
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.batches.push([chunk]);
    cb();
  }
  override _writev(chunks: Array<{ chunk: Buffer }>, cb: (err?: Error | null) => void): void {
    this.batches.push(chunks.map((c) => c.chunk));
    cb();
  }
}

const frameTypes = (batch: Buffer[]): number[] => batch.filter((b) => b.length === 12).map((b) => b[1]!);

describe('Session writer', () => {
  function recorded(): { session: Session; t: RecordingTransport } {
    const t = new RecordingTransport();
    const session = new Session(t, { client: true, config: { keepaliveIntervalMs: 0 } });
    sessions.push(session);
    return { session, t };
  }
  /** A stream whose error at the end of the test (the session closes under it) is expected. */
  const opened = (session: Session): MuxStream => session.open().on('error', () => undefined);

  it('writes the small frames of several callbacks in one event-loop turn as one batch', async () => {
    const { session, t } = recorded();
    // Two immediates queued together run in one check phase, each its own callback (as two socket
    // reads in one poll). Not two setTimeout(0): each takes the loop's clock when it is set, so a
    // millisecond tick between the two calls (a loaded machine) puts them in different turns.
    await new Promise<void>((resolve) => {
      setImmediate(() => opened(session).write('a'));
      setImmediate(() => {
        opened(session).write('b');
        resolve();
      });
    });
    await new Promise((r) => setTimeout(r, 20));
    expect(t.batches).toHaveLength(1);
    // Each stream: a SYN window update and a data frame with its byte.
    expect(frameTypes(t.batches[0]!)).toEqual([FrameType.WindowUpdate, FrameType.Data, FrameType.WindowUpdate, FrameType.Data]);
  });

  it('writes bulk data at once, before the event-loop turn ends', async () => {
    const { session, t } = recorded();
    const s = opened(session);
    await new Promise((r) => setTimeout(r, 20)); // the SYN goes out on its own
    let batchesAtImmediate = -1;
    setImmediate(() => (batchesAtImmediate = t.batches.length));
    s.write(Buffer.alloc(64 * 1024));
    await new Promise((r) => setTimeout(r, 20));
    expect(batchesAtImmediate).toBe(2);
    expect(t.batches[1]!.reduce((n, b) => n + b.length, 0)).toBe(12 + 64 * 1024);
  });
});

describe('Session control frames', () => {
  it.each([
    ['a bad version byte', Buffer.from('020000000000000100000000', 'hex'), 'ERR_MUX_BAD_VERSION'],
    ['an unknown frame type', Buffer.from('000700000000000100000000', 'hex'), 'ERR_MUX_BAD_TYPE'],
    ['a duplicate SYN', Buffer.concat([encodeHeader(FrameType.WindowUpdate, Flag.SYN, 1, 0), encodeHeader(FrameType.WindowUpdate, Flag.SYN, 1, 0)]), 'ERR_MUX_DUPLICATE_STREAM'],
    ['a SYN with the wrong parity', encodeHeader(FrameType.WindowUpdate, Flag.SYN, 2, 0), 'ERR_MUX_BAD_STREAM'],
    ['plain HTTP', Buffer.from('GET /v1/tunnel HTTP/1.1\r\n\r\n'), 'ERR_MUX_BAD_VERSION'],
  ])('closes the session on %s with a clear error and never throws', async (_name, bytes, code) => {
    const [a, b] = duplexPair();
    const server = new Session(b, { client: false, config: { keepaliveIntervalMs: 0 } });
    server.on('stream', (s) => s.on('error', () => undefined));
    a.on('data', () => undefined);
    a.write(bytes);
    const err = await server.closed;
    expect(err).toMatchObject({ code });
    expect(server.isClosed).toBe(true);
  });

  it('answers pings and measures the round trip', async () => {
    const { client, server } = pair();
    const [c, s] = await Promise.all([client.ping(), server.ping()]);
    expect(c).toBeGreaterThanOrEqual(0);
    expect(s).toBeGreaterThanOrEqual(0);
  });

  it('after GoAway, refuses new streams but lets open ones finish', async () => {
    const { client, server } = pair();
    echo(server);
    const open = client.open();
    open.write('before');
    await once(open, 'data');
    server.goAway();
    await once(client, 'goaway');
    expect(() => client.open()).toThrow(expect.objectContaining({ code: 'ERR_MUX_GOAWAY' }));
    open.end('after');
    expect((await readAll(open)).toString()).toBe('after');
  });

  it('drain waits for streams to finish, then closes cleanly', async () => {
    const { client, server } = pair();
    echo(server);
    const s = client.open();
    s.write('x');
    await once(s, 'data');
    const drained = server.drain(5_000);
    setTimeout(() => s.end(), 50);
    await drained;
    expect(await server.closed).toBeUndefined();
  });

  it('measures the round trip on both ends every interval, also while data flows', async () => {
    const [a, b] = duplexPair();
    const config = { keepaliveIntervalMs: 40, keepaliveTimeoutMs: 2_000 };
    const client = new Session(a, { client: true, config });
    const server = new Session(b, { client: false, config });
    sessions.push(client, server);
    echo(server);
    const rtts = { client: 0, server: 0 };
    client.on('rtt', () => rtts.client++);
    server.on('rtt', () => rtts.server++);
    // Traffic every 5 ms both ways: neither end is ever silent for an interval.
    const s = client.open();
    s.on('error', () => undefined);
    s.on('data', () => undefined);
    const traffic = setInterval(() => s.write('tick'), 5);
    await new Promise((r) => setTimeout(r, 600));
    clearInterval(traffic);
    expect(rtts.client).toBeGreaterThanOrEqual(3);
    expect(rtts.server).toBeGreaterThanOrEqual(3);
  });

  it('detects a silent peer through keepalive', async () => {
    const [a, b] = duplexPair();
    a.on('data', () => undefined); // swallows pings, never answers
    const session = new Session(b, { client: true, config: { keepaliveIntervalMs: 20, keepaliveTimeoutMs: 60 } });
    const started = Date.now();
    const err = await session.closed;
    expect(err).toMatchObject({ code: 'ERR_MUX_KEEPALIVE_TIMEOUT' });
    expect(Date.now() - started).toBeLessThan(1_000);
  });

  it('fails open streams with a coded error when the transport dies', async () => {
    const [a, b] = duplexPair();
    const client = new Session(a, { client: true, config: { keepaliveIntervalMs: 0 } });
    const server = new Session(b, { client: false, config: { keepaliveIntervalMs: 0 } });
    echo(server);
    const s = client.open();
    s.write('hello');
    await once(s, 'data');
    const failed = once(s, 'error');
    b.destroy();
    const [err] = (await failed) as [Error & { code: string }];
    expect(err.code).toBe('ERR_MUX_SESSION_CLOSED');
    expect(client.isClosed).toBe(true);
  });
});

/** Resolves once `condition` holds (checked every millisecond), or fails after `ms`. */
async function until(condition: () => boolean, ms = 5_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${ms} ms: ${condition.toString()}`);
    await new Promise((r) => setTimeout(r, 1));
  }
}

describe('Session against a peer that never reads (finding 4)', () => {
  /**
   * A session on one end of a pair whose other end is the hostile peer: the test writes raw frames
   * into it and never reads what the session answers (its readable side stays paused).
   */
  function hostile(config: Partial<MuxConfig> = {}, client = false): { session: Session; peer: Duplex; limits: string[] } {
    const [ours, peer] = duplexPair();
    peer.pause();
    const session = new Session(ours, { client, config: { keepaliveIntervalMs: 0, ...config } });
    session.on('stream', (s) => s.on('error', () => undefined));
    sessions.push(session);
    const limits: string[] = [];
    session.on('limit', (limit) => limits.push(limit));
    return { session, peer, limits };
  }

  /** Writes `frame` `n` times into `peer`, in batches, letting the session run between them. */
  async function flood(peer: Duplex, frame: (i: number) => Buffer, n: number): Promise<void> {
    for (let i = 0; i < n; i += 1_000) {
      peer.write(Buffer.concat(Array.from({ length: Math.min(1_000, n - i) }, (_, k) => frame(i + k))));
      await new Promise((r) => setImmediate(r));
    }
  }

  it.each([['a worker', false], ['a connector', true]])('%s answers pings one at a time while its output waits: 200,000 pings leave less than 256 KiB queued, and the dropped answers are counted', async (_who, client) => {
    const { session, peer, limits } = hostile({}, client);
    await flood(peer, (i) => encodeHeader(FrameType.Ping, Flag.SYN, 0, i), 200_000);
    const queued = (peer as unknown as { peer: Duplex }).peer.writableLength; // our end of the pair
    expect(queued).toBeLessThan(256 * 1024);
    expect(limits.filter((l) => l === 'ping_replies').length).toBeGreaterThan(100_000);
    expect(session.isClosed).toBe(false);
  });

  it.each([['a worker', false], ['a connector', true]])('%s stops reading a peer that leaves more than unreadOutputBytes unread, and closes it with ERR_MUX_PEER_NOT_READING after the keepalive timeout', async (_who, client) => {
    const { session, peer, limits } = hostile({ maxStreams: 1, unreadOutputBytes: 64 * 1024, keepaliveIntervalMs: 50, keepaliveTimeoutMs: 200 }, client);
    // Every SYN beyond the stream limit is answered with an RST nobody reads.
    const closed = session.closed;
    let id = client ? 0 : 1; // the peer opens streams with its own parity
    for (let i = 0; i < 50 && !session.isClosed; i++) {
      await flood(peer, () => encodeHeader(FrameType.WindowUpdate, Flag.SYN, (id += 2), 0), 2_000);
    }
    const ours = (peer as unknown as { peer: Duplex }).peer;
    expect(ours.writableLength).toBeLessThan(64 * 1024 + 2_000 * 12 + 1024);
    const err = await closed;
    expect(err).toMatchObject({ code: 'ERR_MUX_PEER_NOT_READING' });
    expect(err?.message).toMatch(/has left \d+ bytes of our output unread for \d+ ms \(limit 65536 bytes\)/);
    expect(limits).toContain('unread_output_bytes');
    expect(limits).toContain('streams_per_session');
  });

  it('reads again once the peer has read what waited', async () => {
    const [ours, peer] = duplexPair();
    const session = new Session(ours, { client: false, config: { keepaliveIntervalMs: 0, maxStreams: 1, unreadOutputBytes: 16 * 1024 } });
    sessions.push(session);
    peer.pause();
    let id = 1;
    // 144 KB of RSTs: more than the peer's own buffer (64 KiB) and the limit together.
    peer.write(Buffer.concat(Array.from({ length: 12_000 }, () => encodeHeader(FrameType.WindowUpdate, Flag.SYN, (id += 2), 0))));
    await until(() => ours.isPaused());
    const ack = encodeHeader(FrameType.Ping, Flag.ACK, 0, 777);
    let received = Buffer.alloc(0);
    peer.on('data', (d: Buffer) => (received = Buffer.concat([received, d])));
    peer.resume(); // the peer reads everything
    await until(() => !ours.isPaused());
    peer.write(encodeHeader(FrameType.Ping, Flag.SYN, 0, 777));
    await until(() => received.includes(ack)); // read and answered
  });

  it('counts a stream refused beyond the limit as a limit', async () => {
    const { client, server } = pair({}, { maxStreams: 1 });
    const limits: string[] = [];
    server.on('limit', (l, message) => limits.push(`${l}: ${message}`));
    server.on('stream', (s) => s.on('error', () => undefined));
    const [a, b] = [client.open(), client.open()];
    a.on('error', () => undefined);
    await once(b, 'error');
    expect(limits).toEqual([expect.stringMatching(/^streams_per_session: the peer opened stream 3 with 1 streams open; the limit is 1$/)]);
  });

  it('lends the open buffer budget until it is used up, and says so', () => {
    const [ours] = duplexPair();
    const session = new Session(ours, { client: false, config: { keepaliveIntervalMs: 0, openBufferBytes: 10_000 } });
    sessions.push(session);
    const limits: string[] = [];
    session.on('limit', (l) => limits.push(l));
    expect(session.holdOpenBytes(6_000)).toBe(true);
    expect(session.holdOpenBytes(5_000)).toBe(false);
    expect(session.openBytesHeld).toBe(6_000);
    session.releaseOpenBytes(6_000);
    expect(session.holdOpenBytes(10_000)).toBe(true);
    expect(limits).toEqual(['open_buffer_bytes']);
  });
});

/** The frames a session wrote to a RecordingTransport: headers decoded, Data payloads skipped. */
function sentFrames(t: RecordingTransport): Array<{ type: FrameType; flags: number; streamId: number; length: number }> {
  const bytes = Buffer.concat(t.batches.flat());
  const frames = [];
  for (let at = 0; at + 12 <= bytes.length;) {
    const h = { type: bytes[at + 1]! as FrameType, flags: bytes.readUInt16BE(at + 2), streamId: bytes.readUInt32BE(at + 4), length: bytes.readUInt32BE(at + 8) };
    frames.push(h);
    at += 12 + (h.type === FrameType.Data ? h.length : 0);
  }
  return frames;
}

describe('Session stream buffer: what its streams hold that their consumers have not taken (limits.streamBufferBytes)', () => {
  const KiB = 1024;
  const MiB = 1024 * KiB;

  /** A session fed raw frames by the test (the peer), whose streams' consumers never take anything. */
  function stalled(client: boolean, config: Partial<MuxConfig>, as: 'channel' | 'stream' = 'channel') {
    const transport = new RecordingTransport();
    const session = new Session(transport, { client, config: { keepaliveIntervalMs: 0, ...config } });
    sessions.push(session);
    const limits: string[] = [];
    session.on('limit', (l, m) => limits.push(`${l}: ${m}`));
    const aborted: string[] = [];
    if (as === 'channel') {
      session.on('channel', (ch) => ch.attach({ onData() {}, onEnd() {}, onAbort: (e) => void aborted.push(String((e as { code?: string }).code)), onWritable() {} }));
    } else {
      session.on('stream', (s) => s.on('error', (e) => aborted.push(String((e as { code?: string }).code))));
    }
    // The peer opens streams with the other parity.
    let id = client ? 0 : -1;
    const nextId = (): number => (id += 2);
    return { transport, session, limits, aborted, nextId };
  }

  const dataFrame = (id: number, n: number, flags = 0): Buffer => Buffer.concat([encodeHeader(FrameType.Data, flags, id, n), Buffer.alloc(n, 0x61)]);

  it.each([['a worker', false], ['a connector', true]])('%s holds at most the limit however many streams the peer fills with their initial 256 KiB, and resets the streams past it', async (_who, client) => {
    const limit = 4 * MiB;
    const { transport, session, limits, aborted, nextId } = stalled(client, { streamBufferBytes: limit });
    let most = 0;
    for (let i = 0; i < 64; i++) {
      // SYN and the whole initial window in one Data frame: the spec lets a peer send it before any answer.
      transport.push(dataFrame(nextId(), 256 * KiB, Flag.SYN));
      await new Promise((r) => setImmediate(r));
      most = Math.max(most, session.streamBytesHeld);
    }
    // 64 × 256 KiB = 16 MiB offered; held at most the limit plus the frame that went past it.
    expect(most).toBeLessThanOrEqual(limit + 256 * KiB);
    expect(session.streamBytesHeld).toBeLessThanOrEqual(limit);
    expect(aborted.length).toBeGreaterThanOrEqual(64 - limit / (256 * KiB));
    expect(new Set(aborted)).toEqual(new Set(['ERR_STREAM_BUFFER_LIMIT']));
    expect(sentFrames(transport).filter((f) => f.flags & Flag.RST)).toHaveLength(aborted.length);
    expect(limits[0]).toMatch(/^stream_buffer_bytes: the session's streams hold \d+ bytes not yet taken by their targets or clients, over the 4194304-byte limit; stream \d+ holds 262144 of them and is reset$/);
    expect(session.isClosed).toBe(false);
  });

  /** A few event-loop turns: the transport delivers, the session answers, its batch is flushed. */
  const settle = async (): Promise<void> => {
    for (let i = 0; i < 3; i++) await new Promise((r) => setImmediate(r));
  };

  it('raises a burst of new streams by a share of the session window each, not a full stream window each', async () => {
    const { transport, nextId } = stalled(false, {}, 'stream');
    for (let i = 0; i < 16; i++) transport.push(encodeHeader(FrameType.WindowUpdate, Flag.SYN, nextId(), 0));
    await settle();
    const raises = sentFrames(transport).filter((f) => f.flags & Flag.ACK).map((f) => f.length);
    expect(raises).toHaveLength(16);
    // The first alone gets the full 4 MiB window, as before; the burst shares 8 MiB over the streams opening.
    expect(raises[0]).toBe(4 * MiB - 256 * KiB);
    expect(raises.reduce((a, b) => a + b, 0)).toBeLessThan(24 * MiB); // 16 full raises would be 60 MiB
  });

  it('raises no new stream, and grants no more than the initial window, while the streams hold more than half the limit', async () => {
    const { transport, session, nextId } = stalled(false, { streamBufferBytes: 1 * MiB }, 'stream');
    for (let i = 0; i < 3; i++) transport.push(dataFrame(nextId(), 256 * KiB, Flag.SYN));
    await settle();
    expect(session.streamBytesHeld).toBe(768 * KiB);
    transport.batches.length = 0;
    transport.push(encodeHeader(FrameType.WindowUpdate, Flag.SYN, nextId(), 0));
    await settle();
    expect(sentFrames(transport).filter((f) => f.flags & Flag.ACK).map((f) => f.length)).toEqual([0]);
    expect(session.windowTarget(true)).toBe(256 * KiB);
  });

  it('resets streams whose readers stall past the limit, while a stream read as it arrives carries 8 MiB', async () => {
    const limit = 3 * MiB;
    const { client, server } = pair({}, { maxStreamWindow: 1 * MiB, maxSessionWindow: 2 * MiB, streamBufferBytes: limit });
    const serverErrors: string[] = [];
    const hash = createHash('sha256');
    let got = 0;
    let n = 0;
    server.on('stream', (s) => {
      s.on('error', (e) => serverErrors.push(String((e as { code?: string }).code)));
      if (n++ < 8) return; // the first eight are never read
      s.on('data', (d: Buffer) => ((got += d.length), hash.update(d)));
    });
    // Eight opened at once: their raises at open (1 MiB, 1 MiB, 683 KiB, ...) add up to more than the limit.
    const stalledStreams = Array.from({ length: 8 }, () => client.open());
    for (const s of stalledStreams) {
      s.on('error', () => undefined);
      s.write(randomBytes(2 * MiB));
    }
    const data = randomBytes(8 * MiB);
    const s = client.open();
    s.on('error', () => undefined);
    s.end(data);
    let most = 0;
    await until(() => ((most = Math.max(most, server.streamBytesHeld)), got === data.length), 15_000);
    expect(hash.digest('hex')).toBe(sha(data));
    expect(serverErrors.length).toBeGreaterThan(0);
    expect(new Set(serverErrors)).toEqual(new Set(['ERR_STREAM_BUFFER_LIMIT']));
    expect(most).toBeLessThanOrEqual(limit + 256 * KiB);
    for (const x of stalledStreams) x.destroy();
  }, 20_000);

  it('gives every byte back: after streams read to the end, destroyed with unread data, and reset by the peer, both ends hold 0', async () => {
    const { client, server } = pair();
    const kept: MuxStream[] = [];
    let n = 0;
    server.on('stream', (s) => {
      s.on('error', () => undefined);
      const kind = n++ % 3;
      if (kind === 0) s.pipe(s); // echoed to the end
      else if (kind === 1) s.once('readable', () => setTimeout(() => s.destroy(), 10)); // dropped with unread bytes
      else kept.push(s); // never read; the peer resets it
    });
    const done: Array<Promise<unknown>> = [];
    for (let i = 0; i < 30; i++) {
      const s = client.open();
      s.on('error', () => undefined);
      const size = 1 + Math.floor(Math.random() * 600 * KiB);
      if (i % 3 === 0) {
        s.end(randomBytes(size));
        done.push(readAll(s));
      } else if (i % 3 === 1) {
        s.write(randomBytes(size));
        done.push(new Promise((r) => s.once('close', r)));
        s.resume();
      } else {
        s.write(randomBytes(size));
        setTimeout(() => s.destroy(), 50);
        done.push(new Promise((r) => s.once('close', r)));
      }
    }
    await Promise.all(done);
    await until(() => server.streamCount === 0 && client.streamCount === 0, 5_000);
    expect(kept.length).toBe(10);
    expect(server.streamBytesHeld).toBe(0);
    expect(client.streamBytesHeld).toBe(0);
  }, 20_000);
});
