/** Channel state and flow control against a recording host (unit test; the session tests run real pairs). */
import { describe, expect, it } from '@jest/globals';
import { Channel, type ChannelSink, type StreamHost } from './channel.js';
import { muxConfig } from './config.js';
import { decodeHeader, Flag, FrameType, INITIAL_WINDOW } from './frame.js';

interface Sent {
  type: FrameType;
  flags: number;
  length: number;
  payload?: Buffer;
}

class Host implements StreamHost {
  readonly config = muxConfig({ maxFrameSize: 64 * 1024 });
  readonly sent: Sent[] = [];
  congested = false;
  waiting: Channel[] = [];
  finished: Channel[] = [];
  sendFrame(header: Buffer, payload: Buffer | undefined, cb?: (err?: Error | null) => void): void {
    const h = decodeHeader(header);
    this.sent.push({ type: h.type, flags: h.flags, length: h.length, ...(payload ? { payload: Buffer.from(payload) } : {}) });
    cb?.();
  }
  /** Whether sendDataInPlace takes the frame; `inPlace` counts those it took. */
  acceptsInPlace = true;
  inPlace = 0;
  inPlaceDone: Array<() => void> = [];
  sendDataInPlace(_id: number, buf: Buffer, start: number, end: number, done: () => void): boolean {
    if (!this.acceptsInPlace) return false;
    this.inPlace++;
    this.inPlaceDone.push(done);
    this.sent.push({ type: FrameType.Data, flags: 0, length: end - start, payload: Buffer.from(buf.subarray(start, end)) });
    return true;
  }
  streamFinished(channel: Channel): void {
    this.finished.push(channel);
  }
  windowTarget(): number {
    return INITIAL_WINDOW;
  }
  openWindowTarget(): number {
    return INITIAL_WINDOW;
  }
  receiverCount(): void {}
  openingCount(): void {}
  readonly buffered = { held: 0, limit: 1 << 20 };
  bufferLimits: string[] = [];
  bufferLimitHit(message: string): void {
    this.bufferLimits.push(message);
  }
  waitForDrain(channel: Channel): void {
    this.waiting.push(channel);
  }
  holdOpenBytes(): boolean {
    return true;
  }
  releaseOpenBytes(): void {}
  data(): Buffer {
    return Buffer.concat(this.sent.filter((f) => f.type === FrameType.Data).map((f) => f.payload!));
  }
}

class Sink implements ChannelSink {
  readonly events: string[] = [];
  readonly chunks: Buffer[] = [];
  onData(chunk: Buffer): void {
    this.events.push(`data:${chunk.length}`);
    this.chunks.push(chunk);
  }
  onEnd(): void {
    this.events.push('end');
  }
  onAbort(err: Error): void {
    this.events.push(`abort:${(err as { code?: string }).code}`);
  }
  onWritable(): void {
    this.events.push('writable');
  }
}

function opened(): { host: Host; channel: Channel; sink: Sink } {
  const host = new Host();
  const channel = new Channel(host, 1);
  channel._announce(Flag.SYN);
  const sink = new Sink();
  channel.attach(sink);
  host.sent.length = 0;
  return { host, channel, sink };
}

describe('Channel', () => {
  it('sends up to the send window, keeps the rest, and sends it as credit comes back', () => {
    const { host, channel, sink } = opened();
    const data = Buffer.alloc(INITIAL_WINDOW + 1000, 7);
    const done: Array<Error | null | undefined> = [];
    expect(channel.write(data, (err) => done.push(err))).toBe(false);
    expect(host.data().length).toBe(INITIAL_WINDOW);
    expect(host.sent.every((f) => f.length <= 64 * 1024)).toBe(true);
    expect(done).toEqual([]); // the callback waits for the last byte
    channel._grantSend(600);
    expect(host.data().length).toBe(INITIAL_WINDOW + 600);
    expect(sink.events).toEqual([]);
    channel._grantSend(INITIAL_WINDOW);
    expect(host.data().equals(data)).toBe(true);
    expect(done).toEqual([undefined]);
    expect(sink.events).toEqual(['writable']);
  });

  it('sends the FIN after bytes that wait for credit, never before them', () => {
    const { host, channel } = opened();
    channel.write(Buffer.alloc(INITIAL_WINDOW + 10));
    let ended = false;
    channel.end(() => (ended = true));
    expect(host.sent.some((f) => f.flags & Flag.FIN)).toBe(false);
    expect(ended).toBe(false);
    channel._grantSend(10);
    const last = host.sent.at(-1)!;
    expect(last.flags & Flag.FIN).toBeTruthy();
    expect(host.sent.at(-2)!.length).toBe(10);
    expect(ended).toBe(true);
    expect(channel.state).toBe('local-closed');
  });

  it('tells the writer to wait while the transport is full, and when it drained', () => {
    const { host, channel, sink } = opened();
    host.congested = true;
    expect(channel.write(Buffer.from('x'))).toBe(false);
    expect(host.waiting).toEqual([channel]);
    host.congested = false;
    channel._drained();
    expect(sink.events).toEqual(['writable']);
  });

  it('keeps what arrives before a consumer is attached and hands it over in order', () => {
    const host = new Host();
    const channel = new Channel(host, 2);
    channel._announce(Flag.ACK);
    const view = Buffer.alloc(64 * 1024, 1).subarray(0, 5);
    channel._reserve(5);
    channel._receive(view);
    channel._applyFlags(Flag.FIN);
    view.fill(9); // the transport reuses its buffer: the kept bytes are a copy
    const sink = new Sink();
    channel.attach(sink);
    expect(sink.events).toEqual(['data:5', 'end']);
    expect([...sink.chunks[0]!]).toEqual([1, 1, 1, 1, 1]);
    expect(() => channel.attach(new Sink())).toThrow(/already has a consumer/);
  });

  it('gives credit once half the initial window was consumed, not on arrival', () => {
    const { host, channel } = opened();
    const half = INITIAL_WINDOW / 2;
    channel._reserve(half);
    channel._receive(Buffer.alloc(half));
    expect(host.sent).toEqual([]);
    expect(channel.recvWindow).toBe(INITIAL_WINDOW - half);
    channel.consumed(half - 1);
    expect(host.sent).toEqual([]);
    channel.consumed(1);
    expect(host.sent).toEqual([{ type: FrameType.WindowUpdate, flags: 0, length: half }]);
    expect(channel.recvWindow).toBe(INITIAL_WINDOW);
  });

  it('a reset sends RST once, fails the waiting write, and refuses later writes', () => {
    const { host, channel } = opened();
    const errors: Array<string | undefined> = [];
    channel.write(Buffer.alloc(INITIAL_WINDOW + 1), (err) => errors.push((err as { code?: string } | undefined)?.code));
    channel.reset();
    channel.reset();
    expect(host.sent.filter((f) => f.flags & Flag.RST)).toHaveLength(1);
    expect(errors).toEqual(['ERR_STREAM_DESTROYED']);
    expect(channel.write(Buffer.from('late'), (err) => errors.push((err as { code?: string } | undefined)?.code))).toBe(true);
    expect(errors).toEqual(['ERR_STREAM_DESTROYED', 'ERR_STREAM_RESET']);
    expect(channel.state).toBe('reset');
    expect(host.finished).toEqual([channel]);
  });

  it('a reset by the peer aborts the consumer; nothing is delivered after it', () => {
    const { channel, sink } = opened();
    channel._applyFlags(Flag.RST);
    channel._reserve(3);
    channel._receive(Buffer.from('abc'));
    channel._applyFlags(Flag.FIN);
    expect(sink.events).toEqual(['abort:ERR_STREAM_RESET']);
  });

  it('finishes once both sides sent FIN, without RST', () => {
    const { host, channel } = opened();
    channel.end();
    channel._applyFlags(Flag.FIN);
    expect(channel.state).toBe('closed');
    channel.reset();
    expect(host.sent.some((f) => f.flags & Flag.RST)).toBe(false);
    expect(host.finished).toEqual([channel]);
  });

  it('an accepted channel sends its ACK with its first frame, in the same batch', () => {
    const host = new Host();
    const channel = new Channel(host, 2);
    channel._announceLater();
    channel.attach(new Sink());
    expect(host.sent).toEqual([]);
    channel.write(Buffer.from('ok'));
    expect(host.sent.map((f) => [f.type, f.flags])).toEqual([[FrameType.WindowUpdate, Flag.ACK], [FrameType.Data, 0]]);
    channel.write(Buffer.from('more'));
    expect(host.sent.filter((f) => f.flags & Flag.ACK)).toHaveLength(1);
  });

  it('an accepted channel that only receives still acknowledges and gives credit (no stall at one window)', () => {
    const host = new Host();
    const channel = new Channel(host, 2);
    channel._announceLater();
    channel.attach(new Sink());
    channel._reserve(INITIAL_WINDOW);
    channel._receive(Buffer.alloc(INITIAL_WINDOW));
    expect(channel.recvWindow).toBe(0);
    channel.consumed(INITIAL_WINDOW);
    expect(host.sent[0]!.flags & Flag.ACK).toBeTruthy();
    expect(channel.recvWindow).toBe(INITIAL_WINDOW);
  });

  it('an accepted channel reset before it sent anything sends only the RST', () => {
    const host = new Host();
    const channel = new Channel(host, 2);
    channel._announceLater();
    channel.reset();
    expect(host.sent.map((f) => f.flags)).toEqual([Flag.RST]);
  });
  describe('writeTransient (bytes valid only during the call)', () => {
    const HEAD = 26;
    /** `n` bytes of `fill` after HEAD bytes of headroom, in a buffer that is overwritten after each call, as the shared read buffer is. */
    const shared = Buffer.alloc(HEAD + INITIAL_WINDOW + 100);
    const transient = (channel: Channel, n: number, fill: number): boolean => {
      shared.fill(fill, HEAD, HEAD + n);
      const r = channel.writeTransient(shared, HEAD, HEAD + n);
      shared.fill(0xee); // the next read
      return r;
    };

    it('sends a bulk write in place, then waits for the transport to send it on before asking for more', () => {
      const { host, channel, sink } = opened();
      expect(transient(channel, 64 * 1024, 1)).toBe(false);
      expect(host.inPlace).toBe(1);
      expect(host.data().equals(Buffer.alloc(64 * 1024, 1))).toBe(true);
      expect(sink.events).toEqual([]);
      host.inPlaceDone.shift()!();
      expect(sink.events).toEqual(['writable']);
      expect(channel.bytesWritten).toBe(64 * 1024);
    });

    it('copies what it cannot send in place: a small write, a transport that declines, a write beyond the send window — and the bytes survive the buffer\'s reuse', () => {
      const { host, channel } = opened();
      expect(transient(channel, 100, 2)).toBe(true); // small: copied, batched with the turn's frames
      host.acceptsInPlace = false;
      expect(transient(channel, 32 * 1024, 3)).toBe(true); // the transport is busy
      host.acceptsInPlace = true;
      const rest = INITIAL_WINDOW - 100 - 32 * 1024;
      expect(transient(channel, rest + 50, 4)).toBe(false); // 50 bytes wait for credit
      expect(host.inPlace).toBe(0);
      channel._grantSend(1_000);
      const expected = Buffer.concat([Buffer.alloc(100, 2), Buffer.alloc(32 * 1024, 3), Buffer.alloc(rest + 50, 4)]);
      expect(host.data().equals(expected)).toBe(true);
    });

    it('sends the pending ACK first: an accepted channel\'s first write is not in place', () => {
      const host = new Host();
      const channel = new Channel(host, 2);
      channel._announceLater();
      channel.attach(new Sink());
      transient(channel, 20 * 1024, 5);
      expect(host.inPlace).toBe(0);
      expect(host.sent.map((f) => f.type)).toEqual([FrameType.WindowUpdate, FrameType.Data]);
      transient(channel, 20 * 1024, 6);
      expect(host.inPlace).toBe(1);
    });

    it('after end or reset, sends nothing (in place or not)', () => {
      const { host, channel } = opened();
      channel.end();
      transient(channel, 20 * 1024, 7);
      channel.reset();
      transient(channel, 20 * 1024, 8);
      expect(host.inPlace).toBe(0);
      expect(host.data().length).toBe(0);
    });
  });
});

describe('Channel: what it holds counts in its session (limits.streamBufferBytes)', () => {
  const chunk = (n: number): Buffer => Buffer.alloc(n, 1);

  it.each([
    ['consumed', (c: Channel) => c.consumed(100), false],
    ['reset by its consumer', (c: Channel) => c.reset(), true],
    ['reset by the peer', (c: Channel) => c._applyFlags(Flag.RST), true],
    ['aborted with its session', (c: Channel) => c._abort(new Error('gone')), true],
  ])('counts bytes delivered and not consumed, and gives them back once %s', (_how, drop, dropped) => {
    const { host, channel } = opened();
    channel._reserve(100);
    channel._receive(chunk(100));
    expect(host.buffered.held).toBe(100);
    drop(channel);
    expect(host.buffered.held).toBe(0);
    // A consumer that credits a dropped channel late (a relay at its socket's drain or close) counts nothing twice.
    if (dropped) channel.consumed(100);
    expect(host.buffered.held).toBe(0);
  });

  it('keeps counting a cleanly finished channel until its consumer took the bytes', () => {
    const { host, channel } = opened();
    channel._reserve(100);
    channel._receive(chunk(100));
    channel.end();
    channel._applyFlags(Flag.FIN);
    expect(host.finished).toEqual([channel]);
    expect(host.buffered.held).toBe(100);
    channel.consumed(100);
    expect(host.buffered.held).toBe(0);
  });

  it('over the limit, resets the channel that keeps bytes (RST, ERR_STREAM_BUFFER_LIMIT), and not one whose consumer takes them at once', () => {
    const host = new Host();
    (host.buffered as { held: number }).held = host.buffered.limit; // the other streams hold the whole limit
    const keeper = new Channel(host, 1);
    const keeperSink = new Sink();
    keeper.attach(keeperSink);
    const taker = new Channel(host, 3);
    taker.attach({ onData: (d) => taker.consumed(d.length), onEnd() {}, onAbort() {}, onWritable() {} });
    taker._reserve(1000);
    taker._receive(chunk(1000));
    expect(taker.isReset).toBe(false);
    keeper._reserve(1000);
    keeper._receive(chunk(1000));
    expect(keeper.isReset).toBe(true);
    expect(keeperSink.events).toEqual(['data:1000', 'abort:ERR_STREAM_BUFFER_LIMIT']);
    expect(host.sent.filter((f) => f.flags & Flag.RST)).toHaveLength(1);
    expect(host.bufferLimits[0]).toMatch(/over the 1048576-byte limit; stream 1 holds 1000 of them and is reset/);
    expect(host.buffered.held).toBe(host.buffered.limit); // what it held was given back
  });
});
