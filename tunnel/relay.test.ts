import { afterEach, describe, test, expect } from '@jest/globals';
import { createHash, randomBytes } from 'node:crypto';
import net from 'node:net';
import { once } from 'node:events';
import type { Duplex } from 'node:stream';
import { duplexPair } from './testing/duplex-pair.js';
import type { Channel } from './mux/channel.js';
import type { MuxConfig } from './mux/config.js';
import { Session } from './mux/session.js';
import type { MuxStream } from './mux/stream.js';
import { encodeJsonFrame } from './frames.js';
import { Relay, type RelayResult } from './relay.js';

/** A loopback TCP connection: `inner` is the end the relay gets, `outer` plays the application. */
async function tcpPair(): Promise<{ inner: net.Socket; outer: net.Socket; close(): void }> {
  const server = net.createServer({ allowHalfOpen: true });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as net.AddressInfo).port;
  const accepted = once(server, 'connection') as Promise<[net.Socket]>;
  const outer = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
  const [inner] = await accepted;
  await once(outer, 'connect');
  return { inner, outer, close: () => server.close() };
}

const sessions: Session[] = [];
afterEach(() => {
  for (const s of sessions.splice(0)) s.close();
});

/** A channel for the relay and, through a real session pair, its far end as a Duplex. */
async function channelPair(highWaterMark?: number, config: Partial<MuxConfig> = {}): Promise<{ channel: Channel; far: MuxStream; session: Session }> {
  const [a, b] = duplexPair(highWaterMark ? { highWaterMark } : {});
  const client = new Session(a, { client: true, config: { keepaliveIntervalMs: 0, ...config } });
  const server = new Session(b, { client: false, config: { keepaliveIntervalMs: 0 } });
  sessions.push(client, server);
  const accepted = once(server, 'stream') as Promise<[MuxStream]>;
  const channel = client.openChannel();
  channel.write(Buffer.from('hi')); // the far end sees the stream only when a frame arrives
  const [far] = await accepted;
  far.on('error', () => undefined);
  const [hi] = (await once(far, 'data')) as [Buffer];
  expect(hi.toString()).toBe('hi');
  return { channel, far, session: client };
}

function collect(s: Duplex): Promise<Buffer> {
  const parts: Buffer[] = [];
  s.on('data', (c: Buffer) => parts.push(c));
  return new Promise((resolve, reject) => {
    s.on('end', () => resolve(Buffer.concat(parts)));
    s.on('error', reject);
  });
}

function runRelay(socket: net.Socket, channel: Channel): Promise<RelayResult> {
  const r = new Relay(socket);
  r.attachChannel(channel);
  return new Promise((resolve) => r.run(resolve));
}

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

describe('relay of a dialled socket (reads into the shared buffer, Relay.socketOptions)', () => {
  test('carries a target\'s bytes, those sent before the relay ran included, intact both ways', async () => {
    const server = net.createServer({ allowHalfOpen: true });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const accepted = once(server, 'connection') as Promise<[net.Socket]>;
    const dialled = net.connect({ port: (server.address() as net.AddressInfo).port, host: '127.0.0.1', allowHalfOpen: true, ...Relay.socketOptions });
    const [target] = await accepted;
    await once(dialled, 'connect');
    const banner = randomBytes(3000);
    const bulk = randomBytes(5 * 1024 * 1024 + 11);
    target.write(banner); // a greeting before anything was relayed: read, kept, and sent first
    const r = new Relay(dialled);
    await new Promise((resolve) => setTimeout(resolve, 50));
    const { channel, far } = await channelPair();
    r.attachChannel(channel);
    const done = new Promise<RelayResult>((resolve) => r.run(resolve));
    const gotFar = collect(far);
    target.end(bulk);
    const up = randomBytes(100_000);
    const gotTarget = collect(target);
    far.end(up);
    expect(sha(await gotFar)).toBe(sha(Buffer.concat([banner, bulk])));
    expect(sha(await gotTarget)).toBe(sha(up));
    target.destroy();
    expect(await done).toEqual({ bytesFromSocket: banner.length + bulk.length, bytesToSocket: up.length });
    server.close();
  });
});

describe('relay', () => {
  test('carries bytes both ways with half-close and reports the totals', async () => {
    const { inner, outer, close } = await tcpPair();
    const { channel, far } = await channelPair();
    const done = runRelay(inner, channel);
    const up = randomBytes(3 * 1024 * 1024);
    const down = randomBytes(2 * 1024 * 1024 + 7);
    const gotFar = collect(far);
    const gotOuter = collect(outer);
    outer.end(up);
    // The client half-closed; the response still flows back in full.
    expect(sha(await gotFar)).toBe(sha(up));
    far.end(down);
    expect(sha(await gotOuter)).toBe(sha(down));
    outer.destroy();
    const result: RelayResult = await done;
    expect(result).toEqual({ bytesFromSocket: up.length, bytesToSocket: down.length });
    expect(channel.state).toBe('closed');
    close();
  });

  test('a paused application stops the far writer within the socket buffer and one window (backpressure)', async () => {
    const { inner, outer, close } = await tcpPair();
    const { channel, far } = await channelPair();
    void runRelay(inner, channel);
    outer.pause();
    const chunk = Buffer.alloc(64 * 1024, 1);
    const limit = 256 * 1024 * 1024;
    let offered = 0;
    // Offer data until the far side's writes stop completing for a while: the relay must have
    // stopped giving credit once the socket (and the kernel's loopback buffers) filled up.
    while (offered < limit) {
      offered += chunk.length;
      if (!far.write(chunk)) {
        const drained = await Promise.race([once(far, 'drain').then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 500))]);
        if (!drained) break;
      }
    }
    expect(offered).toBeLessThan(limit);
    // Resuming the application drains everything.
    const got = collect(outer);
    outer.resume();
    far.end();
    expect((await got).length).toBe(offered);
    close();
  });

  test('a reset from the tunnel side resets the socket and is reported', async () => {
    const { inner, outer, close } = await tcpPair();
    const { channel, far } = await channelPair();
    const done = runRelay(inner, channel);
    const outerError = once(outer, 'error');
    far.destroy();
    const [err] = (await outerError) as [NodeJS.ErrnoException];
    expect(err.code).toBe('ECONNRESET');
    const result = await done;
    expect(result.error?.message).toMatch(/stream 1 was reset by the peer/);
    close();
  });

  test('an error on the socket resets the channel', async () => {
    const { inner, outer, close } = await tcpPair();
    const { channel, far } = await channelPair();
    const done = runRelay(inner, channel);
    const farClosed = new Promise((resolve) => far.once('close', resolve));
    outer.resetAndDestroy();
    await farClosed;
    const result = await done;
    expect(result.error).toBeDefined();
    expect(channel.state).toBe('reset');
    close();
  });

  test('pipe before run carries the first bytes early; unpipe stops them', async () => {
    const { inner, outer, close } = await tcpPair();
    const { channel, far } = await channelPair();
    const r = new Relay(inner);
    r.attachChannel(channel);
    r.pipe();
    outer.write('early');
    const [first] = (await once(far, 'data')) as [Buffer];
    expect(first.toString()).toBe('early');
    r.unpipe();
    outer.write('held');
    await new Promise((res) => setTimeout(res, 100));
    expect(far.readableLength).toBe(0);
    // Running resumes the socket: the held bytes arrive now.
    const done = new Promise<RelayResult>((resolve) => r.run(resolve));
    const [held] = (await once(far, 'data')) as [Buffer];
    expect(held.toString()).toBe('held');
    outer.end();
    far.end();
    await once(outer, 'end').catch(() => undefined);
    outer.destroy();
    expect((await done).bytesFromSocket).toBe(9);
    close();
  });

  test('a socket that ended while a first channel was tried ends the next one too (after what was written to it)', async () => {
    const { inner, outer, close } = await tcpPair();
    const first = await channelPair();
    const r = new Relay(inner);
    r.attachChannel(first.channel);
    r.pipe();
    const firstEnded = collect(first.far);
    outer.end(); // the client half-closes before any answer came
    expect((await firstEnded).length).toBe(0);
    r.unpipe();
    first.channel.reset(); // that carrier failed before it answered
    const second = await channelPair();
    r.attachChannel(second.channel);
    second.channel.write(Buffer.from('request'));
    const got = collect(second.far);
    r.pipe();
    expect((await got).toString()).toBe('request');
    outer.destroy();
    close();
  });

  test('a socket that closed before the relay ran still ends it, and resets the channel', async () => {
    const { inner, outer, close } = await tcpPair();
    const { channel, far } = await channelPair();
    const r = new Relay(inner);
    r.attachChannel(channel);
    const farClosed = new Promise((resolve) => far.once('close', resolve));
    outer.resetAndDestroy();
    await new Promise((resolve) => inner.once('close', resolve));
    const result = await new Promise<RelayResult>((resolve) => r.run(resolve));
    expect(result.error).toBeDefined();
    await farClosed;
    expect(channel.state).toBe('reset');
    close();
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

describe('relay: the open header', () => {
  const readHeader = (r: Relay, timeoutMs = 5_000): Promise<{ value: unknown; err: Error | undefined }> =>
    new Promise((resolve) => r.readHeader(timeoutMs, 'test header', (value, err) => resolve({ value, err })));

  test('delivers the header and keeps the bytes after it (one write, or byte by byte) until run', async () => {
    for (const split of [false, true]) {
      const { inner, outer, close } = await tcpPair();
      const { channel, far } = await channelPair();
      const r = new Relay(inner);
      r.attachChannel(channel);
      const header = readHeader(r);
      const frame = Buffer.concat([encodeJsonFrame({ mapping: 'db', n: 1 }, 2), Buffer.from('pipelined')]);
      if (split) for (const b of frame) far.write(Buffer.from([b]));
      else far.write(frame);
      const { value, err } = await header;
      expect(err).toBeUndefined();
      expect(value).toEqual({ mapping: 'db', n: 1 });
      const got = collect(outer);
      const done = new Promise<RelayResult>((resolve) => r.run(resolve));
      far.end();
      expect((await got).toString()).toBe('pipelined');
      outer.end();
      expect((await done).bytesToSocket).toBe(9);
      close();
    }
  });

  test('refuses a header whose length is over OPEN_HEADER_MAX as soon as the length arrives (ERR_OPEN_HEADER_TOO_LARGE)', async () => {
    const { channel, far } = await channelPair();
    const r = new Relay();
    r.attachChannel(channel);
    const header = readHeader(r);
    far.write(Buffer.from([0x20, 0x01])); // 8,193 bytes announced, none sent
    const { err } = await header;
    expect(err).toMatchObject({ code: 'ERR_OPEN_HEADER_TOO_LARGE', message: 'test header of 8193 bytes exceeds the 8192-byte limit' });
  });

  test('holds partial headers and early data against the session\'s open buffer budget, and gives it back once the relay runs or is dropped', async () => {
    const { channel, far, session } = await channelPair(undefined, { openBufferBytes: 10_000 });
    const r = new Relay();
    r.attachChannel(channel);
    const header = readHeader(r);
    const body = Buffer.alloc(4_096, 0x20); // JSON and trailing whitespace
    body.write('{"pad":""}');
    far.write(Buffer.concat([Buffer.from([0x10, 0x00]), body.subarray(0, 1)])); // a 4,096-byte header, 1 byte of it
    await until(() => session.openBytesHeld === 4_096);
    far.write(Buffer.concat([body.subarray(1), Buffer.alloc(5_000, 0x65)])); // the header's end, and 5,000 early bytes
    const { err } = await header;
    expect(err).toBeUndefined();
    await until(() => session.openBytesHeld === 5_000); // the header's bytes given back, the early data held
    far.write(Buffer.alloc(6_000, 0x65)); // more early data than the budget has left: the stream is dropped
    await until(() => channel.isReset);
    expect(r.error).toMatchObject({ code: 'ERR_OPEN_BUFFER_LIMIT' });
    expect(session.openBytesHeld).toBe(0);
  });

  test('a partial header that does not fit the budget fails with ERR_OPEN_BUFFER_LIMIT', async () => {
    const { channel, far, session } = await channelPair(undefined, { openBufferBytes: 8_192 });
    expect(session.holdOpenBytes(4_000)).toBe(true); // other streams hold part of it
    const r = new Relay();
    r.attachChannel(channel);
    const header = readHeader(r);
    far.write(Buffer.from([0x20, 0x00, 0x7b])); // 8,192 declared
    const { err } = await header;
    expect(err).toMatchObject({ code: 'ERR_OPEN_BUFFER_LIMIT' });
    expect(session.openBytesHeld).toBe(4_000);
  });

  test('fails with ERR_FRAME_JSON on a header that is not JSON', async () => {
    const { channel, far } = await channelPair();
    const r = new Relay();
    r.attachChannel(channel);
    const header = readHeader(r);
    far.write(Buffer.concat([Buffer.from([0, 3]), Buffer.from('{{{')]));
    const { err } = await header;
    expect(err).toMatchObject({ code: 'ERR_FRAME_JSON' });
    expect(err?.message).toMatch(/test header is not valid JSON/);
  });

  test('fails with ERR_OPEN_EOF when the peer ends before the header is complete', async () => {
    const { channel, far } = await channelPair();
    const r = new Relay();
    r.attachChannel(channel);
    const header = readHeader(r);
    far.end(Buffer.from([0, 40, 0x7b]));
    const { err } = await header;
    expect(err).toMatchObject({ code: 'ERR_OPEN_EOF' });
    expect(err?.message).toMatch(/stream ended before the test header/);
  });

  test('fails with the reset when the peer resets, and with ERR_OPEN_TIMEOUT when nothing comes', async () => {
    const a = await channelPair();
    const r1 = new Relay();
    r1.attachChannel(a.channel);
    const reset = readHeader(r1);
    a.far.destroy();
    expect((await reset).err).toMatchObject({ code: 'ERR_STREAM_RESET' });

    const b = await channelPair();
    const r2 = new Relay();
    r2.attachChannel(b.channel);
    const { err } = await readHeader(r2, 50);
    expect(err).toMatchObject({ code: 'ERR_OPEN_TIMEOUT' });
    expect(err?.message).toBe('no test header within 50 ms');
  });

  test('discard after a refusal drops what follows and still gives the peer credit', async () => {
    const { channel, far } = await channelPair();
    const r = new Relay();
    r.attachChannel(channel);
    const header = readHeader(r);
    far.write(encodeJsonFrame({ mapping: 'x' }, 2));
    await header;
    r.discard();
    // Far more than the initial window: only credit from the discarding side lets it all through.
    const big = Buffer.alloc(4 * 1024 * 1024, 3);
    await new Promise<void>((resolve, reject) => far.end(big, () => resolve()).once('error', reject));
    channel.end();
    await once(far, 'end').catch(() => undefined);
    far.resume();
    expect(channel.bytesRead).toBe(big.length + 2 + Buffer.byteLength('{"mapping":"x"}'));
  });
});
