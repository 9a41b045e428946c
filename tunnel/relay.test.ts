import { describe, test, expect } from '@jest/globals';
import { createHash, randomBytes } from 'node:crypto';
import net from 'node:net';
import { once } from 'node:events';
import type { Duplex } from 'node:stream';
import { duplexPair } from './testing/duplex-pair.js';
import { Relay, relay, type RelayResult } from './relay.js';

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

function collect(s: Duplex): Promise<Buffer> {
  const parts: Buffer[] = [];
  s.on('data', (c: Buffer) => parts.push(c));
  return new Promise((resolve, reject) => {
    s.on('end', () => resolve(Buffer.concat(parts)));
    s.on('error', reject);
  });
}

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

describe('relay', () => {
  test('carries bytes both ways with half-close and reports the totals', async () => {
    const { inner, outer, close } = await tcpPair();
    const [stream, far] = duplexPair();
    const done = relay(inner, stream);
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
    close();
  });

  test('a paused application stops the tunnel side within the buffers (backpressure)', async () => {
    const { inner, outer, close } = await tcpPair();
    const [stream, far] = duplexPair({ highWaterMark: 16 * 1024 });
    void relay(inner, stream);
    outer.pause();
    const chunk = Buffer.alloc(64 * 1024, 1);
    const limit = 256 * 1024 * 1024;
    let offered = 0;
    // Offer data until the far side's writes stop completing for a while: the relay must have
    // paused the stream once the socket (and the kernel's loopback buffers) filled up.
    while (offered < limit) {
      offered += chunk.length;
      if (!far.write(chunk)) {
        const drained = await Promise.race([once(far, 'drain').then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 500))]);
        if (!drained) break;
      }
    }
    expect(offered).toBeLessThan(limit);
    expect(stream.isPaused()).toBe(true);
    // Resuming the application drains everything.
    const got = collect(outer);
    outer.resume();
    far.end();
    expect((await got).length).toBe(offered);
    close();
  });

  test('an error on the tunnel side resets the socket and is reported', async () => {
    const { inner, outer, close } = await tcpPair();
    const [stream] = duplexPair();
    const done = relay(inner, stream);
    const outerError = once(outer, 'error');
    stream.destroy(new Error('stream reset by the peer'));
    const [err] = (await outerError) as [NodeJS.ErrnoException];
    expect(err.code).toBe('ECONNRESET');
    const result = await done;
    expect(result.error?.message).toBe('stream reset by the peer');
    close();
  });

  test('an error on the socket destroys the stream', async () => {
    const { inner, outer, close } = await tcpPair();
    const [stream, far] = duplexPair();
    const done = relay(inner, stream);
    const farClosed = once(far, 'close');
    outer.resetAndDestroy();
    await farClosed;
    const result = await done;
    expect(result.error).toBeDefined();
    expect(stream.destroyed).toBe(true);
    close();
  });

  test('pipe before run carries the first bytes early; unpipe stops them', async () => {
    const { inner, outer, close } = await tcpPair();
    const [stream, far] = duplexPair();
    const r = new Relay(inner);
    r.pipe(stream);
    outer.write('early');
    const [first] = (await once(far, 'data')) as [Buffer];
    expect(first.toString()).toBe('early');
    r.unpipe();
    outer.write('held');
    await new Promise((res) => setTimeout(res, 100));
    expect(far.readableLength).toBe(0);
    // Running resumes the socket: the held bytes arrive now.
    const done = new Promise<RelayResult>((resolve) => r.run(stream, resolve));
    const [held] = (await once(far, 'data')) as [Buffer];
    expect(held.toString()).toBe('held');
    outer.end();
    far.end();
    await once(outer, 'end').catch(() => undefined);
    outer.destroy();
    expect((await done).bytesFromSocket).toBe(9);
    close();
  });

  test('a socket that closed before the relay ran still ends it', async () => {
    const { inner, outer, close } = await tcpPair();
    const [stream] = duplexPair();
    const r = new Relay(inner);
    outer.resetAndDestroy();
    await new Promise((resolve) => inner.once('close', resolve));
    const result = await new Promise<RelayResult>((resolve) => r.run(stream, resolve));
    expect(result.error).toBeDefined();
    expect(stream.destroyed).toBe(true);
    close();
  });
});
