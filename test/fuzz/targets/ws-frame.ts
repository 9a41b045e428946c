/**
 * The WebSocket frame decoder (tunnel/transport/ws-frame.ts FrameDecoder) on
 * both ends: the server expects masked frames, the client unmasked ones.
 * Frames come masked with a random key, the zero key or not at all; with the
 * 7-bit, 16-bit and 64-bit length forms (also non-minimal ones); fragmented,
 * with control frames in between. Properties: the binary bytes and control
 * frames come out as they went in; only WebSocketProtocolError (ERR_WS_PROTOCOL
 * with close code 1002, 1003 or 1009) is thrown; cut anywhere, the same bytes
 * give the same result; nothing of a frame over maxFrame is handed on.
 */
import fc from 'fast-check';
import { encodeClosePayload, encodeFrameHeader, FrameDecoder, Opcode, WebSocketProtocolError } from '../../../tunnel/transport/ws-frame.js';
import { MAX_FRAME } from '../../../tunnel/transport/websocket.js';
import { cutsArb, edgeLengths, mutated, randomBytes, split, type Cuts } from '../bytes.js';
import { assert, assertEqual, attempt, type SeenError } from '../expect.js';
import { parsing, type FuzzTarget } from '../harness.js';


type LengthForm = 'minimal' | '16' | '64';

interface WsFrame {
  opcode: number;
  fin: boolean;
  rsv: number;
  /** undefined: unmasked; four bytes (possibly all zero): masked with that key. */
  mask: Uint8Array | undefined;
  payload: Uint8Array;
  form: LengthForm;
}

/** Any frame, as some implementation might send it (RFC 6455 section 5.2). */
export function encodeWsFrame(f: WsFrame): Buffer {
  const len = f.payload.length;
  const ext = f.form === '64' || len > 0xffff ? 8 : f.form === '16' || len >= 126 ? 2 : 0;
  const head = Buffer.alloc(2 + ext + (f.mask ? 4 : 0));
  head[0] = (f.fin ? 0x80 : 0) | (f.rsv << 4) | f.opcode;
  head[1] = (f.mask ? 0x80 : 0) | (ext === 0 ? len : ext === 2 ? 126 : 127);
  if (ext === 2) head.writeUInt16BE(len, 2);
  if (ext === 8) head.writeBigUInt64BE(BigInt(len), 2);
  let body = Buffer.from(f.payload);
  if (f.mask) {
    head.set(f.mask, 2 + ext);
    body = Buffer.from(body.map((b, i) => b ^ f.mask![i & 3]!));
  }
  return Buffer.concat([head, body]);
}

const maskArb = (masked: boolean): fc.Arbitrary<Uint8Array | undefined> => (masked
  ? fc.oneof(fc.constant(new Uint8Array(4)), fc.uint8Array({ minLength: 4, maxLength: 4 }))
  : fc.constant(undefined));
const formArb: fc.Arbitrary<LengthForm> = fc.oneof({ weight: 4, arbitrary: fc.constant('minimal' as const) }, fc.constantFrom('16' as const, '64' as const));
const payloadArb = fc.oneof(
  { weight: 4, arbitrary: fc.uint8Array({ maxLength: 130 }) },
  { weight: 1, arbitrary: fc.oneof(fc.integer({ min: 120, max: 4_000 }), fc.integer({ min: 65_530, max: 65_540 })).map((n) => new Uint8Array(n).fill(n & 0xff)) },
);

type Event = { data: Buffer } | { ping: Buffer } | { pong: Buffer } | { close: [number, string] };

interface Message {
  frames: WsFrame[];
  /** What the decoder should report for these frames. */
  events: Event[];
}

/** One binary message in 1–4 fragments, control frames between them; or one control frame. */
function messageArb(masked: boolean): fc.Arbitrary<Message> {
  const control = fc.record({
    opcode: fc.constantFrom(Opcode.Ping, Opcode.Pong),
    payload: fc.uint8Array({ maxLength: 125 }),
    mask: maskArb(masked),
  }).map(({ opcode, payload, mask }): Message => ({
    frames: [{ opcode, fin: true, rsv: 0, mask, payload, form: 'minimal' }],
    events: [opcode === Opcode.Ping ? { ping: Buffer.from(payload) } : { pong: Buffer.from(payload) }],
  }));
  const binary = fc.record({
    parts: fc.array(fc.tuple(payloadArb, formArb, maskArb(masked)), { minLength: 1, maxLength: 4 }),
    between: fc.array(control, { maxLength: 3 }),
  }).map(({ parts, between }): Message => {
    const frames: WsFrame[] = [];
    const events: Event[] = [];
    parts.forEach(([payload, form, mask], i) => {
      frames.push({ opcode: i === 0 ? Opcode.Binary : Opcode.Continuation, fin: i === parts.length - 1, rsv: 0, mask, payload, form });
      if (payload.length > 0) events.push({ data: Buffer.from(payload) });
      const c = between[i];
      if (c && i < parts.length - 1) {
        frames.push(...c.frames);
        events.push(...c.events);
      }
    });
    return { frames, events };
  });
  return fc.oneof({ weight: 3, arbitrary: binary }, { weight: 1, arbitrary: control });
}

const closeArb = (masked: boolean): fc.Arbitrary<Message> => fc.record({
  code: fc.option(fc.integer({ min: 1000, max: 4999 }), { nil: undefined }),
  reason: fc.string({ maxLength: 40 }),
  mask: maskArb(masked),
}).map(({ code, reason, mask }) => {
  const payload = code === undefined ? Buffer.alloc(0) : encodeClosePayload(code, reason);
  const text = payload.subarray(2).toString('utf8');
  return { frames: [{ opcode: Opcode.Close, fin: true, rsv: 0, mask, payload, form: 'minimal' as const }], events: [{ close: [code ?? 1005, text] as [number, string] }] };
});

function streamArb(masked: boolean): fc.Arbitrary<Message> {
  return fc.tuple(fc.array(messageArb(masked), { maxLength: 6 }), fc.option(closeArb(masked), { nil: undefined }))
    .map(([messages, close]) => {
      const all = close ? [...messages, close] : messages;
      return { frames: all.flatMap((m) => m.frames), events: all.flatMap((m) => m.events) };
    });
}

interface Outcome {
  events: Event[];
  error: (SeenError & { closeCode: number }) | undefined;
}

/** Decodes `pieces`; consecutive data events are joined (frame and chunk boundaries mean nothing). */
export function decodeWs(pieces: readonly Buffer[], expectMasked: boolean, maxFrame: number, log = true): Outcome {
  // Data pieces are joined once at the end: joining per chunk would make the harness quadratic.
  const events: Array<Event | { parts: Buffer[] }> = [];
  const decoder = new FrameDecoder({
    onData(chunk) {
      assert(chunk.length > 0, 'an empty data chunk was handed on');
      if (!log) return;
      const last = events.at(-1);
      if (last && 'parts' in last) last.parts.push(Buffer.from(chunk));
      else events.push({ parts: [Buffer.from(chunk)] });
    },
    onPing: (p) => void events.push({ ping: Buffer.from(p) }),
    onPong: (p) => void events.push({ pong: Buffer.from(p) }),
    onClose: (code, reason) => void events.push({ close: [code, reason] }),
  }, { expectMasked, maxFrame });
  let closeCode = 0;
  const error = attempt(() => {
    try {
      for (const p of pieces) decoder.push(p);
    } catch (err) {
      if (err instanceof WebSocketProtocolError) closeCode = err.closeCode;
      throw err;
    }
  }, [WebSocketProtocolError], ['ERR_WS_PROTOCOL']);
  if (error) assert([1002, 1003, 1009].includes(closeCode), `close code ${closeCode} is not 1002, 1003 or 1009`);
  const out = events.map((e): Event => ('parts' in e ? { data: Buffer.concat(e.parts) } : e));
  for (const e of out) {
    if ('ping' in e || 'pong' in e) assert(('ping' in e ? e.ping : e.pong).length <= 125, 'a control payload over 125 bytes');
  }
  return { events: out, error: error && { ...error, closeCode } };
}

function splitInvariant(bytes: Buffer, cuts: Cuts, expectMasked: boolean, maxFrame: number): Outcome {
  const pieces = split(bytes, cuts);
  parsing(() => decodeWs(pieces, expectMasked, maxFrame, false));
  const whole = decodeWs([bytes], expectMasked, maxFrame);
  assertEqual(decodeWs(pieces, expectMasked, maxFrame), whole, 'the same bytes cut differently decoded differently');
  return whole;
}

const sideArb = fc.boolean(); // true: the server (expects masked frames)
const maxFrameArb = fc.oneof({ weight: 3, arbitrary: fc.constant(MAX_FRAME) }, fc.constantFrom(0, 1, 125, 126, 1000, 0xffff, 0x10000));
const validBytes = sideArb.chain((masked) => streamArb(masked).map((s) => Buffer.concat(s.frames.map(encodeWsFrame))));

export const wsFrameTarget: FuzzTarget = {
  name: 'ws-frame',
  parser: 'tunnel/transport/ws-frame.ts FrameDecoder.push',
  maxHeapGrowth: 32 << 20,
  properties: [
    {
      name: 'round-trip',
      arbitrary: sideArb.chain((masked) => fc.tuple(fc.constant(masked), streamArb(masked), cutsArb)),
      check([masked, stream, cuts]: [boolean, Message, Cuts]) {
        const out = splitInvariant(Buffer.concat(stream.frames.map(encodeWsFrame)), cuts, masked, MAX_FRAME);
        assertEqual(out.error, undefined, 'valid frames were refused');
        const expected: Event[] = [];
        for (const e of stream.events) {
          const last = expected.at(-1);
          if ('data' in e && last && 'data' in last) last.data = Buffer.concat([last.data, e.data]);
          else expected.push('data' in e ? { data: Buffer.from(e.data) } : e);
        }
        assertEqual(out.events, expected, 'decode(encode(frames))');
      },
    },
    {
      name: 'our encoder',
      // What our own sender writes: encodeFrameHeader (FIN, minimal length, zero mask from the client).
      arbitrary: fc.tuple(fc.boolean(), fc.array(payloadArb, { maxLength: 4 }), cutsArb),
      check([client, payloads, cuts]: [boolean, Uint8Array[], Cuts]) {
        const bytes = Buffer.concat(payloads.flatMap((p) => [encodeFrameHeader(Opcode.Binary, p.length, client), p]));
        const out = splitInvariant(bytes, cuts, client, MAX_FRAME);
        assertEqual(out.error, undefined, 'our own frames were refused');
        const data = Buffer.concat(payloads);
        assertEqual(out.events, data.length > 0 ? [{ data }] : [], 'the bytes we sent');
      },
    },
    {
      name: 'mutated',
      weight: 2,
      arbitrary: fc.tuple(mutated(validBytes, edgeLengths(MAX_FRAME, 125)), cutsArb, sideArb, maxFrameArb),
      check: ([bytes, cuts, masked, maxFrame]: [Buffer, Cuts, boolean, number]) => void splitInvariant(bytes, cuts, masked, maxFrame),
    },
    {
      name: 'random bytes',
      arbitrary: fc.tuple(randomBytes(), cutsArb, sideArb, maxFrameArb),
      check: ([bytes, cuts, masked, maxFrame]: [Buffer, Cuts, boolean, number]) => void splitInvariant(bytes, cuts, masked, maxFrame),
    },
    {
      name: 'frame limit',
      // A frame over maxFrame is refused (1009) before any of its payload is handed on, whatever its length form.
      arbitrary: fc.tuple(fc.constantFrom(0, 1, 125, 126, 0xffff, 0x10000, MAX_FRAME), fc.constantFrom(1, 2, 126, 0x10000, MAX_FRAME - 1, MAX_FRAME + 1, 2 ** 31, 2 ** 32 - 1, 2 ** 53 - 1),
        formArb, sideArb, cutsArb),
      check([maxFrame, over, form, masked, cuts]: [number, number, LengthForm, boolean, Cuts]) {
        const length = maxFrame + over;
        const ext = form === '64' || length > 0xffff ? 8 : 2;
        const head = Buffer.alloc(2 + ext + (masked ? 4 : 0));
        head[0] = 0x80 | Opcode.Binary;
        head[1] = (masked ? 0x80 : 0) | (ext === 2 ? 126 : 127);
        if (ext === 2) head.writeUInt16BE(length, 2);
        else head.writeBigUInt64BE(BigInt(length), 2);
        const out = splitInvariant(Buffer.concat([head, Buffer.alloc(Math.min(length, 200), 7)]), cuts, masked, maxFrame);
        if (length < 126 || (ext === 2 && length > 0xffff)) return;
        assertEqual(out.error?.closeCode, 1009, `a ${length}-byte frame with maxFrame ${maxFrame}`);
        assertEqual(out.events, [], 'payload of a refused frame');
      },
    },
  ],
};
