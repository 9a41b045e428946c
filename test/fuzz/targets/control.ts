/**
 * The control channel as a session runs it: `ControlChannel` (tunnel/control.ts)
 * on a Duplex, its bytes pushed chunk by chunk. It decodes u32-length JSON
 * (tunnel/frames.ts JsonFrameDecoder) and validates each message against the
 * schemas. Properties: `send` → decode gives the message back (as the schema
 * normalises it); whatever the bytes, the channel emits only messages that
 * pass the schema and coded errors (ERR_CONTROL_INVALID for a refused message,
 * ERR_FRAME_JSON / ERR_CONTROL_TOO_LARGE, after which it closes); the same bytes
 * cut anywhere give the same messages and errors.
 * Messages before a fatal frame are delivered whether or not they share its
 * chunk (tunnel/frames.test.ts has the regression case).
 */
import fc from 'fast-check';
import { setImmediate as tick } from 'node:timers/promises';
import { Duplex } from 'node:stream';
import { ControlChannel, controlMessageSchema, MAPPING_STATES, MAX_CONTROL_MESSAGE, PROTOCOL_VERSION, type ControlMessage } from '../../../tunnel/control.js';
import { ProtocolError } from '../../../tunnel/errors.js';
import { encodeJsonFrame } from '../../../tunnel/frames.js';
import { anyText, mappingArb, nameArb } from '../arbitraries.js';
import { cutsArb, edgeLengths, mutated, randomBytes, split, type Cuts } from '../bytes.js';
import { assertEqual, coded, type SeenError } from '../expect.js';
import { parsingAsync, type FuzzTarget } from '../harness.js';

const FATAL = ['ERR_FRAME_JSON', 'ERR_CONTROL_TOO_LARGE'];
const CODES = [...FATAL, 'ERR_CONTROL_INVALID'];

type Event = { message: ControlMessage } | { error: SeenError };

interface Outcome {
  events: Event[];
  fatal: SeenError | undefined;
}

/** Feeds `pieces` to a ControlChannel on a Duplex and collects what it emits. */
export async function runControl(pieces: readonly Buffer[]): Promise<Outcome> {
  const stream = new Duplex({ read() {}, write(_c, _e, cb) { cb(); } });
  const channel = new ControlChannel(stream);
  const events: Event[] = [];
  let fatal: SeenError | undefined;
  // Listeners must not throw into the stream's 'data' handler: a violation is kept and thrown at the end.
  let violation: unknown;
  channel.on('message', (message) => {
    if (!controlMessageSchema.safeParse(message).success) violation ??= new Error(`the channel emitted a message its schema refuses: ${JSON.stringify(message)}`);
    events.push({ message });
  });
  channel.on('error', (err) => {
    try {
      const e = coded(err, [ProtocolError], CODES);
      if (FATAL.includes(e.code)) fatal ??= e;
      else events.push({ error: e });
    } catch (bad) {
      violation ??= bad;
    }
  });
  for (const p of pieces) {
    if (stream.destroyed) break;
    stream.push(p);
    await tick();
  }
  stream.destroy();
  await tick();
  if (violation) throw violation;
  return { events, fatal };
}

async function splitInvariant(bytes: Buffer, cuts: Cuts): Promise<Outcome> {
  const pieces = split(bytes, cuts);
  const measured = await parsingAsync(() => runControl(pieces));
  const whole = await runControl([bytes]);
  assertEqual(measured, whole, 'the same bytes cut differently gave different messages');
  return whole;
}

const version = fc.oneof(fc.constantFrom('0.1.0', '', 'x'.repeat(64), 'x'.repeat(65), 'a b'), anyText(70));
const count = fc.oneof(fc.nat(), fc.constantFrom(-1, 1.5, 2 ** 53, Number.MAX_SAFE_INTEGER));

const messageArb: fc.Arbitrary<unknown> = fc.oneof(
  fc.record({
    type: fc.constant('hello'), protocol: fc.oneof(fc.constant(PROTOCOL_VERSION), fc.integer()), connector: nameArb, version,
    capabilities: fc.array(fc.oneof(fc.constant('tcp'), anyText(40)), { maxLength: 20 }), hostname: anyText(260),
  }, { requiredKeys: ['type', 'protocol', 'connector', 'version', 'capabilities'] }),
  fc.record({
    type: fc.constant('welcome'), protocol: fc.integer(), connection: anyText(130),
    worker: fc.record({ instance: anyText(260), version }), session: fc.oneof(fc.uuid(), anyText(70)),
  }),
  fc.record({ type: fc.constant('config'), revision: count, mappings: fc.array(mappingArb, { maxLength: 4 }) }),
  fc.record({
    type: fc.constant('mapping-status'), revision: count,
    mappings: fc.array(fc.record({
      name: nameArb, state: fc.oneof(fc.constantFrom(...MAPPING_STATES), anyText(10)), reason: anyText(70), message: anyText(1100),
    }, { requiredKeys: ['name', 'state'] }), { maxLength: 6 }),
  }),
  fc.record({ type: fc.constant('error'), code: fc.oneof(fc.constant('ERR_PROTOCOL_VERSION'), anyText(70)), message: anyText(1100), field: anyText(130) },
    { requiredKeys: ['type', 'code', 'message'] }),
  fc.jsonValue({ maxDepth: 3 }),
);

const framesArb = fc.array(messageArb, { minLength: 1, maxLength: 5 });
const encode = (messages: readonly unknown[]): Buffer => Buffer.concat(messages.map((m) => encodeJsonFrame(m, 4)));

export const controlTarget: FuzzTarget = {
  name: 'control',
  parser: 'tunnel/control.ts ControlChannel (JsonFrameDecoder + message schemas)',
  maxHeapGrowth: 16 << 20,
  properties: [
    {
      name: 'round-trip',
      async: true,
      arbitrary: fc.tuple(framesArb, cutsArb),
      async check([messages, cuts]: [unknown[], Cuts]) {
        const out = await splitInvariant(encode(messages), cuts);
        const expected: Event[] = messages.map((m) => {
          const plain = JSON.parse(JSON.stringify(m) ?? 'null') as unknown;
          const parsed = controlMessageSchema.safeParse(plain);
          return parsed.success ? { message: parsed.data } : { error: { name: 'ProtocolError', code: 'ERR_CONTROL_INVALID', message: '' } };
        });
        // The refusal's text is the schema's; compare the codes.
        const codesOf = (events: Event[]) => events.map((e) => ('error' in e ? { error: e.error.code } : e));
        assertEqual(out.fatal, undefined, 'well-formed frames were fatal');
        assertEqual(codesOf(out.events), codesOf(expected), 'decode(encode(messages))');
      },
    },
    {
      name: 'mutated',
      weight: 2,
      async: true,
      arbitrary: fc.tuple(mutated(framesArb.map(encode), edgeLengths(MAX_CONTROL_MESSAGE)), cutsArb),
      check: async ([bytes, cuts]: [Buffer, Cuts]) => void await splitInvariant(bytes, cuts),
    },
    {
      name: 'random bytes',
      async: true,
      arbitrary: fc.tuple(randomBytes(), cutsArb),
      check: async ([bytes, cuts]: [Buffer, Cuts]) => void await splitInvariant(bytes, cuts),
    },
  ],
};
