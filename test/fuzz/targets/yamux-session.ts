/**
 * A whole yamux session (tunnel/mux/session.ts) fed what a hostile peer sends:
 * sequences of frames on a few stream ids (opens, data, window updates,
 * FIN/RST, pings, GoAway), mutated sequences and random bytes, pushed through
 * its transport in random pieces, as client or server, with small limits.
 * The streams it accepts are consumed at once, never, or reset.
 *
 * Properties: the session never lets an exception out of its transport's
 * 'data' handler; when it closes, the reason is a coded protocol error of the
 * peer's making, never ERR_MUX_INTERNAL (a frame handler that threw something
 * else: a bug); no stream is handed more than its receive window; it answers
 * with at most a bounded multiple of what it read (no amplification).
 */
import fc from 'fast-check';
import { Duplex } from 'node:stream';
import { setImmediate as tick } from 'node:timers/promises';
import { UnderpassError } from '../../../tunnel/errors.js';
import type { Channel } from '../../../tunnel/mux/channel.js';
import { encodeHeader, Flag, FrameType } from '../../../tunnel/mux/frame.js';
import { Session } from '../../../tunnel/mux/session.js';
import { cutsArb, mutated, randomBytes, split, type Cuts } from '../bytes.js';
import { assert, coded } from '../expect.js';
import { parsingAsync, type FuzzTarget } from '../harness.js';

/** Codes a session may close with because of what the peer sent (or because our transport ended). */
const CLOSE_CODES = [
  'ERR_MUX_BAD_VERSION', 'ERR_MUX_BAD_TYPE', 'ERR_MUX_BAD_STREAM', 'ERR_MUX_DUPLICATE_STREAM', 'ERR_MUX_WINDOW_EXCEEDED',
  'ERR_MUX_PEER_PROTOCOL_ERROR', 'ERR_MUX_PEER_INTERNAL_ERROR', 'ERR_MUX_EOF', 'ERR_MUX_SESSION_CLOSED', 'ERR_MUX_PEER_NOT_READING',
];

type Consumer = 'consume' | 'hold' | 'reset';

interface PeerFrame {
  type: FrameType;
  flags: number;
  streamId: number;
  length: number;
  payload?: Uint8Array;
}

const flagsArb = fc.oneof(fc.constantFrom(0, Flag.SYN, Flag.ACK, Flag.FIN, Flag.RST, Flag.SYN | Flag.FIN, Flag.ACK | Flag.FIN, Flag.SYN | Flag.RST), fc.nat({ max: 15 }));
const idArb = fc.oneof({ weight: 6, arbitrary: fc.integer({ min: 1, max: 8 }) }, fc.constantFrom(0, 0x7fffffff, 0xffffffff));
const peerFrameArb: fc.Arbitrary<PeerFrame> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ type: fc.constant(FrameType.Data), flags: flagsArb, streamId: idArb, length: fc.constant(0), payload: fc.uint8Array({ maxLength: 200 }) }) },
  { weight: 3, arbitrary: fc.record({ type: fc.constant(FrameType.WindowUpdate), flags: flagsArb, streamId: idArb, length: fc.oneof(fc.nat({ max: 1 << 20 }), fc.constantFrom(0, 0x7fffffff, 0xffffffff)) }) },
  { weight: 1, arbitrary: fc.record({ type: fc.constant(FrameType.Ping), flags: fc.constantFrom(Flag.SYN, Flag.ACK, 0), streamId: fc.constant(0), length: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ type: fc.constant(FrameType.GoAway), flags: fc.constant(0), streamId: fc.constant(0), length: fc.constantFrom(0, 1, 2, 7) }) },
  // A Data frame that claims more than it carries, or more than any window.
  { weight: 1, arbitrary: fc.record({ type: fc.constant(FrameType.Data), flags: flagsArb, streamId: idArb, length: fc.constantFrom(1, 256 * 1024, 256 * 1024 + 1, 4 << 20, 0xffffffff) }) },
);

function encodePeer(frames: readonly PeerFrame[]): Buffer {
  return Buffer.concat(frames.flatMap((f) => (f.payload
    ? [encodeHeader(f.type, f.flags, f.streamId, f.payload.length), f.payload]
    : [encodeHeader(f.type, f.flags, f.streamId, f.length)])));
}

const framesArb = fc.array(peerFrameArb, { minLength: 1, maxLength: 24 });
const setupArb = fc.record({
  client: fc.boolean(),
  consumer: fc.constantFrom<Consumer>('consume', 'hold', 'reset'),
  maxStreams: fc.constantFrom(1, 2, 4, 64),
});

interface Setup {
  client: boolean;
  consumer: Consumer;
  maxStreams: number;
}

/** Runs a session over a transport that takes everything it writes; returns nothing, throws on a broken property. */
export async function runSession(pieces: readonly Buffer[], setup: Setup): Promise<void> {
  let written = 0;
  let read = 0;
  let violation: unknown;
  const transport = new Duplex({ read() {}, write(c: Buffer, _e, cb) { written += c.length; cb(); } });
  const session = new Session(transport, {
    client: setup.client,
    config: { keepaliveIntervalMs: 0, keepaliveTimeoutMs: 0, maxStreams: setup.maxStreams },
  });
  const received = new Map<Channel, number>();
  session.on('channel', (channel: Channel) => {
    received.set(channel, 0);
    channel.attach({
      onData(chunk) {
        const total = received.get(channel)! + chunk.length;
        received.set(channel, total);
        if (setup.consumer === 'consume') channel.consumed(chunk.length);
        else if (total > session.config.maxStreamWindow) violation ??= new Error(`stream ${channel.id} was handed ${total} unconsumed bytes (window ${session.config.maxStreamWindow})`);
      },
      onEnd() {},
      onAbort() {},
      onWritable() {},
    });
    if (setup.consumer === 'reset') channel.reset();
  });
  session.on('limit', () => undefined);
  for (const p of pieces) {
    if (session.isClosed) break;
    read += p.length;
    transport.push(p);
    await tick();
  }
  if (violation) throw violation;
  const err = session.closeError;
  if (err) {
    assert(err instanceof UnderpassError, `the session closed with ${String(err)}`);
    coded(err, [UnderpassError], CLOSE_CODES);
  }
  // Pings are answered and refused opens reset, each with one 12-byte frame per 12-byte frame read;
  // window grants and a GoAway add a little. Anything near 2× would be amplification.
  assert(written <= read * 2 + 1024, `wrote ${written} bytes after reading ${read}`);
  session.close();
  transport.destroy();
  await tick();
}

export const yamuxSessionTarget: FuzzTarget = {
  name: 'yamux-session',
  parser: 'tunnel/mux/session.ts Session (frames from a hostile peer)',
  maxHeapGrowth: 32 << 20,
  properties: [
    {
      name: 'frame sequences',
      weight: 3,
      async: true,
      arbitrary: fc.tuple(framesArb, cutsArb, setupArb),
      check: ([frames, cuts, setup]: [PeerFrame[], Cuts, Setup]) => parsingAsync(() => runSession(split(encodePeer(frames), cuts), setup)),
    },
    {
      name: 'mutated',
      weight: 2,
      async: true,
      arbitrary: fc.tuple(mutated(framesArb.map(encodePeer)), cutsArb, setupArb),
      check: ([bytes, cuts, setup]: [Buffer, Cuts, Setup]) => parsingAsync(() => runSession(split(bytes, cuts), setup)),
    },
    {
      name: 'random bytes',
      async: true,
      arbitrary: fc.tuple(randomBytes(), cutsArb, setupArb),
      check: ([bytes, cuts, setup]: [Buffer, Cuts, Setup]) => parsingAsync(() => runSession(split(bytes, cuts), setup)),
    },
  ],
};
