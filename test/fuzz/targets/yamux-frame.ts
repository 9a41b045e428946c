/**
 * The yamux frame reader (tunnel/mux/frame.ts FrameReader), fed chunk by chunk
 * as the session feeds it. Properties: encode → decode gives the frames back;
 * whatever the bytes, the reader throws only ProtocolError ERR_MUX_*; the
 * same bytes cut anywhere give the same headers, payload and error; a Data
 * frame's payload arrives exactly once, in order, `last` on its final byte.
 */
import fc from 'fast-check';
import { ProtocolError } from '../../../tunnel/errors.js';
import { encodeHeader, Flag, FrameReader, FrameType, type FrameHeader } from '../../../tunnel/mux/frame.js';
import { cutsArb, mutated, randomBytes, split, type Cuts } from '../bytes.js';
import { assert, assertEqual, attempt, type SeenError } from '../expect.js';
import { parsing, type FuzzTarget } from '../harness.js';

const CODES = ['ERR_MUX_BAD_VERSION', 'ERR_MUX_BAD_TYPE', 'ERR_MUX_BAD_STREAM'];

interface Frame {
  type: FrameType;
  flags: number;
  streamId: number;
  /** Data: the payload; other types: the header's length field. */
  payload?: Uint8Array;
  length?: number;
}

const flagsArb = fc.oneof(fc.constant(0), fc.constantFrom(Flag.SYN, Flag.ACK, Flag.FIN, Flag.RST, Flag.SYN | Flag.FIN), fc.nat({ max: 0xffff }));
const streamArb = fc.oneof(fc.integer({ min: 1, max: 16 }), fc.constantFrom(0x7fffffff, 0x80000000, 0xffffffff), fc.integer({ min: 1, max: 0xffffffff }));
const u32 = fc.oneof(fc.constantFrom(0, 1, 0x40000, 0x7fffffff, 0x80000000, 0xffffffff), fc.nat({ max: 0xffffffff }));

export const frameArb: fc.Arbitrary<Frame> = fc.oneof(
  fc.record({ type: fc.constant(FrameType.Data), flags: flagsArb, streamId: streamArb, payload: fc.uint8Array({ maxLength: 300 }) }),
  fc.record({ type: fc.constant(FrameType.WindowUpdate), flags: flagsArb, streamId: streamArb, length: u32 }),
  fc.record({ type: fc.constant(FrameType.Ping), flags: flagsArb, streamId: fc.constant(0), length: u32 }),
  fc.record({ type: fc.constant(FrameType.GoAway), flags: fc.constant(0), streamId: fc.constant(0), length: fc.constantFrom(0, 1, 2, 0xffffffff) }),
);

export function encodeFrames(frames: readonly Frame[]): Buffer {
  return Buffer.concat(frames.flatMap((f) => f.payload
    ? [encodeHeader(f.type, f.flags, f.streamId, f.payload.length), f.payload]
    : [encodeHeader(f.type, f.flags, f.streamId, f.length ?? 0)]));
}

const framesArb = fc.array(frameArb, { maxLength: 12 });
const validBytes = framesArb.map(encodeFrames);

interface Outcome {
  frames: Array<{ header: FrameHeader; payload: Buffer }>;
  error: SeenError | undefined;
  idle: boolean;
}

/** Decodes `pieces` in order; checks the payload accounting of every frame on the way. */
export function decode(pieces: readonly Buffer[], log = true): Outcome {
  const frames: Outcome['frames'] = [];
  let parts: Buffer[] = [];
  let left = 0;
  let stream = -1;
  const reader = new FrameReader({
    onHeader(header) {
      assert(left === 0, `a header arrived while ${left} payload bytes of the last frame were still due`);
      const previous = frames.at(-1);
      if (previous) previous.payload = Buffer.concat(parts);
      frames.push({ header, payload: Buffer.alloc(0) });
      parts = [];
      if (!log) frames.length = 0;
      left = header.type === FrameType.Data ? header.length : 0;
      stream = header.streamId;
    },
    onPayload(streamId, chunk, last) {
      assert(streamId === stream, `payload for stream ${streamId} inside a frame of stream ${stream}`);
      assert(chunk.length > 0 && chunk.length <= left, `payload chunk of ${chunk.length} bytes with ${left} due`);
      left -= chunk.length;
      assert(last === (left === 0), `last=${last} with ${left} bytes still due`);
      if (log) parts.push(Buffer.from(chunk));
    },
  });
  const error = attempt(() => {
    for (const p of pieces) reader.push(p);
  }, [ProtocolError], CODES);
  // Joined once at the end: joining per chunk would make the harness quadratic.
  const last = frames.at(-1);
  if (last) last.payload = Buffer.concat(parts);
  return { frames, error, idle: error ? true : reader.idle };
}

function splitInvariant(bytes: Buffer, cuts: Cuts): Outcome {
  const pieces = split(bytes, cuts);
  parsing(() => decode(pieces, false));
  const whole = decode([bytes]);
  assertEqual(decode(pieces), whole, 'the same bytes cut differently decoded differently');
  return whole;
}

export const yamuxFrameTarget: FuzzTarget = {
  name: 'yamux-frame',
  parser: 'tunnel/mux/frame.ts FrameReader.push',
  maxHeapGrowth: 16 << 20,
  properties: [
    {
      name: 'round-trip',
      arbitrary: fc.tuple(framesArb, cutsArb),
      check([frames, cuts]: [Frame[], Cuts]) {
        const out = splitInvariant(encodeFrames(frames), cuts);
        // Frames that break the rules of the header (Ping on a stream, Data on stream 0) are refused:
        // up to the first of them, everything decodes as encoded.
        const expected = frames.map((f) => ({
          header: { version: 0, type: f.type, flags: f.flags, streamId: f.streamId, length: f.payload ? f.payload.length : f.length ?? 0 },
          payload: Buffer.from(f.payload ?? []),
        }));
        const firstBad = expected.findIndex(({ header: h }) => (h.type === FrameType.Data || h.type === FrameType.WindowUpdate) === (h.streamId === 0));
        if (firstBad < 0) {
          assertEqual(out.error, undefined, 'valid frames were refused');
          assertEqual(out.frames, expected, 'decode(encode(frames))');
          assert(out.idle, 'the reader is not idle after whole frames');
        } else {
          assertEqual(out.error?.code, 'ERR_MUX_BAD_STREAM', 'a frame on the wrong stream id');
          assertEqual(out.frames, expected.slice(0, firstBad), 'frames before the refused one');
        }
      },
    },
    {
      name: 'mutated',
      weight: 2,
      arbitrary: fc.tuple(mutated(validBytes), cutsArb),
      check: ([bytes, cuts]: [Buffer, Cuts]) => void splitInvariant(bytes, cuts),
    },
    {
      name: 'random bytes',
      arbitrary: fc.tuple(randomBytes(), cutsArb),
      check: ([bytes, cuts]: [Buffer, Cuts]) => void splitInvariant(bytes, cuts),
    },
    {
      name: 'edge lengths',
      // A header whose length field sits at the edges: the reader must wait for exactly that many payload bytes.
      arbitrary: fc.tuple(fc.constantFrom(0, 1, 0xffff, 0x10000, 2 ** 31 - 1, 2 ** 31, 2 ** 32 - 1), fc.uint8Array({ maxLength: 64 }), cutsArb),
      check([length, tail, cuts]: [number, Uint8Array, Cuts]) {
        const bytes = Buffer.concat([encodeHeader(FrameType.Data, 0, 1, length), tail]);
        const out = splitInvariant(bytes, cuts);
        assertEqual(out.frames[0]?.payload.length, Math.min(length, tail.length), 'payload handed on');
        if (length >= tail.length) {
          assertEqual(out.error, undefined, 'a Data header of any length is valid');
          assertEqual(out.frames.length, 1, 'frames');
          assertEqual(out.idle, length === tail.length, 'idle once the payload is complete');
        }
      },
    },
  ],
};
