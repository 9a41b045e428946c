/**
 * The stream open header as production reads it: `Relay.readHeader` fed the
 * channel's payload chunk by chunk (tunnel/relay.ts), then `parseOpenRequest`
 * or `parseOpenResponse` (tunnel/open.ts) on the JSON it delivers. The channel
 * is a stand-in that counts credit and the open-buffer budget.
 *
 * Properties: encode → read → parse gives the header back and keeps the bytes
 * after it; whatever the bytes, the callback runs exactly once, with a value or
 * a coded error (malformed JSON, too large, ended early), and the schema
 * refuses with ERR_OPEN_INVALID only; the same bytes cut anywhere give the
 * same result and the same credit; credit never exceeds what arrived; the
 * bytes held for the stream before it relays stay within the budget.
 */
import fc from 'fast-check';
import { ProtocolError, UnderpassError } from '../../../tunnel/errors.js';
import type { Channel, ChannelSink } from '../../../tunnel/mux/channel.js';
import {
  encodeOpenRequest, encodeOpenResponse, OPEN_TIMEOUT_MS, parseOpenRequest, parseOpenResponse, REFUSAL_CODES, type OpenRequest, type OpenResponse,
} from '../../../tunnel/open.js';
import { OPEN_HEADER_MAX } from '../../../tunnel/limits.js';
import { Relay } from '../../../tunnel/relay.js';
import { cutsArb, edgeLengths, mutated, randomBytes, split, type Cuts } from '../bytes.js';
import { assert, assertEqual, attempt, coded, type SeenError } from '../expect.js';
import { parsing, type FuzzTarget } from '../harness.js';
import { keepAsView } from '../../../tunnel/views.js';

/** The open buffer budget the stand-in channel grants (a session's limits.openBufferBytes is shared by its streams). */
const BUDGET = 256 * 1024;
const HEADER_CODES = ['ERR_FRAME_JSON', 'ERR_OPEN_HEADER_TOO_LARGE', 'ERR_OPEN_EOF', 'ERR_OPEN_BUFFER_LIMIT'];

/** What the relay needs from a channel while it reads the header: credit and the open-buffer budget. */
class StandInChannel {
  sink: ChannelSink | undefined;
  credited = 0;
  held = 0;
  maxHeld = 0;
  /** The largest hold while the header was incomplete. */
  maxHeldBeforeHeader = 0;
  headerDone = false;
  resets = 0;
  attach(sink: ChannelSink): void {
    this.sink = sink;
  }
  consumed(n: number): void {
    assert(Number.isInteger(n) && n >= 0, `credit of ${n} bytes`);
    this.credited += n;
  }
  holdOpen(n: number): boolean {
    if (this.held + n > BUDGET) return false;
    this.held += n;
    this.maxHeld = Math.max(this.maxHeld, this.held);
    if (!this.headerDone) this.maxHeldBeforeHeader = Math.max(this.maxHeldBeforeHeader, this.held);
    return true;
  }
  releaseOpen(n: number): void {
    this.held -= n;
    assert(this.held >= 0, 'more open-buffer bytes given back than taken');
  }
  keepAsView(chunk: Buffer): boolean {
    return keepAsView(chunk, { held: this.held, limit: BUDGET });
  }
  reset(): void {
    this.resets++;
  }
  asChannel(): Channel {
    return this as unknown as Channel;
  }
}

type Side = 'request' | 'response';

interface Outcome {
  value: OpenRequest | OpenResponse | undefined;
  /** The reader's error (JSON, size, end of stream) or the schema's (ERR_OPEN_INVALID). */
  error: SeenError | undefined;
  /** Credit given for the header; undefined when the reader refused it. */
  credit: number | undefined;
  /** Credit once the relay dropped what it held (everything received, if it took the header). */
  creditAfterDiscard: number;
}

export function readHeader(pieces: readonly Buffer[], side: Side): Outcome {
  const channel = new StandInChannel();
  const relay = new Relay();
  relay.attachChannel(channel.asChannel());
  let calls = 0;
  let raw: unknown;
  let readError: unknown;
  relay.readHeader(OPEN_TIMEOUT_MS, `stream open ${side}`, (header, err) => {
    calls++;
    channel.headerDone = true;
    raw = header;
    readError = err;
  });
  let received = 0;
  for (const p of pieces) {
    received += p.length;
    relay.onData(p);
  }
  if (calls === 0) relay.onEnd(); // clears the header timer: the stream ended before the header
  assertEqual(calls, 1, 'header callbacks');
  const credit = channel.credited;
  assert(credit <= received, `credit for ${credit} bytes after ${received} arrived`);
  relay.discard();
  assert(channel.credited <= received, `credit for ${channel.credited} bytes after ${received} arrived (after discard)`);
  assertEqual(channel.held, 0, 'open-buffer bytes still taken after discard');
  assert(channel.maxHeld <= BUDGET, 'held beyond the budget');
  // Before the header is complete the relay holds at most the body its length declared (≤ OPEN_HEADER_MAX).
  assert(channel.maxHeldBeforeHeader <= OPEN_HEADER_MAX, `${channel.maxHeldBeforeHeader} bytes held for a header (limit ${OPEN_HEADER_MAX})`);
  let value: Outcome['value'];
  let error: SeenError | undefined;
  if (readError !== undefined) error = coded(readError, [UnderpassError], HEADER_CODES);
  else error = attempt(() => (value = side === 'request' ? parseOpenRequest(raw) : parseOpenResponse(raw)), [ProtocolError], ['ERR_OPEN_INVALID']);
  // After a refused header the relay credits what had arrived with it, so that credit depends on the cuts.
  return { value, error, credit: readError === undefined ? credit : undefined, creditAfterDiscard: channel.credited };
}

function splitInvariant(bytes: Buffer, cuts: Cuts, side: Side): Outcome {
  const pieces = split(bytes, cuts);
  const measured = parsing(() => readHeader(pieces, side));
  const whole = readHeader([bytes], side);
  assertEqual(measured, whole, 'the same bytes cut differently read differently');
  return whole;
}

// Names and sources as they come (any UTF-16, lone surrogates too), and at the schema's edges.
const text = (max: number): fc.Arbitrary<string> => fc.oneof(
  fc.string({ unit: 'binary', maxLength: 40 }),
  fc.string({ unit: 'grapheme', maxLength: 40 }),
  fc.constantFrom('', 'db', 'a'.repeat(253), 'a'.repeat(254), 'x'.repeat(max), 'x'.repeat(max + 1), '\u0000', '"\\', '\ud800'),
);
const requestArb: fc.Arbitrary<OpenRequest> = fc.record({ mapping: text(253), source: text(300) });
const responseArb: fc.Arbitrary<OpenResponse> = fc.oneof(
  fc.constant({ ok: true as const }),
  fc.record({ ok: fc.constant(false as const), code: fc.constantFrom(...REFUSAL_CODES), message: text(2000) }),
);
const earlyData = fc.uint8Array({ maxLength: 64 });
const sideArb = fc.constantFrom<Side>('request', 'response');
const validBytes = fc.tuple(fc.oneof(requestArb.map(encodeOpenRequest), responseArb.map(encodeOpenResponse)), earlyData)
  .map(([header, early]) => Buffer.concat([header, early]));

export const openHeaderTarget: FuzzTarget = {
  name: 'open-header',
  parser: 'tunnel/relay.ts Relay.readHeader + tunnel/open.ts parseOpenRequest/parseOpenResponse',
  maxHeapGrowth: 8 << 20,
  properties: [
    {
      name: 'round-trip',
      arbitrary: fc.tuple(fc.oneof(
        requestArb.map((r) => ['request', r, encodeOpenRequest(r)] as const),
        responseArb.map((r) => ['response', r, encodeOpenResponse(r)] as const),
      ), earlyData, cutsArb),
      check([[side, header, bytes], early, cuts]: [readonly [Side, OpenRequest | OpenResponse, Buffer], Uint8Array, Cuts]) {
        const out = splitInvariant(Buffer.concat([bytes, early]), cuts, side);
        // JSON keeps every string (lone surrogates are escaped); the schema decides what is valid.
        const schema = side === 'request' ? parseOpenRequest : parseOpenResponse;
        const plain = JSON.parse(JSON.stringify(header)) as unknown;
        const expected = attempt(() => void schema(plain), [ProtocolError], ['ERR_OPEN_INVALID']);
        assertEqual(out.error, expected, 'the error of decode(encode(header))');
        if (!expected) assertEqual(out.value, plain, 'decode(encode(header))');
        assertEqual(out.credit, bytes.length, 'credit for the header alone (early data waits for the relay)');
        assertEqual(out.creditAfterDiscard, bytes.length + early.length, 'credit once the early data is dropped');
      },
    },
    {
      name: 'mutated',
      weight: 2,
      arbitrary: fc.tuple(mutated(validBytes, edgeLengths(0xffff, OPEN_HEADER_MAX)), cutsArb, sideArb),
      check: ([bytes, cuts, side]: [Buffer, Cuts, Side]) => void splitInvariant(bytes, cuts, side),
    },
    {
      name: 'random bytes',
      arbitrary: fc.tuple(randomBytes(), cutsArb, sideArb),
      check: ([bytes, cuts, side]: [Buffer, Cuts, Side]) => void splitInvariant(bytes, cuts, side),
    },
    {
      name: 'size limit',
      // A length over OPEN_HEADER_MAX is refused as soon as the two length bytes are in, before any body is held.
      arbitrary: fc.tuple(fc.integer({ min: OPEN_HEADER_MAX + 1, max: 0xffff }), fc.uint8Array({ maxLength: 256 }), sideArb, cutsArb),
      check([length, body, side, cuts]: [number, Uint8Array, Side, Cuts]) {
        const prefix = Buffer.alloc(2);
        prefix.writeUInt16BE(length, 0);
        const out = splitInvariant(Buffer.concat([prefix, body]), cuts, side);
        assertEqual(out.error?.code, 'ERR_OPEN_HEADER_TOO_LARGE', `a ${length}-byte header`);
      },
    },
    {
      name: 'json values',
      // Any JSON (well-formed, so the schema is what is tested) in a well-formed frame.
      arbitrary: fc.tuple(fc.jsonValue({ maxDepth: 4 }), sideArb, cutsArb),
      check([json, side, cuts]: [unknown, Side, Cuts]) {
        const body = Buffer.from(JSON.stringify(json) ?? 'null');
        if (body.length > 0xffff) return;
        const frame = Buffer.alloc(2 + body.length);
        frame.writeUInt16BE(body.length, 0);
        body.copy(frame, 2);
        splitInvariant(frame, cuts, side);
      },
    },
  ],
};
