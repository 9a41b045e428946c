/**
 * Byte-level generators shared by the targets: random bytes, mutations of a
 * valid input (bit flips, interesting bytes, truncation, insertion, deletion,
 * duplication, length fields overwritten with edge values), and ways to cut a
 * byte stream into chunks. Everything shrinks towards fewer, earlier changes.
 */
import fc from 'fast-check';

/** Values that break length checks: empty, one, the edges of each encoding, 2^31, 2^32 − 1. */
export const EDGE_LENGTHS = [0, 1, 2, 125, 126, 127, 0xff, 0x100, 0xfff, 0x1000, 0x7fff, 0x8000, 0xffff, 0x10000,
  0xfffff, 0x100000, 0x100001, 0x400000, 0x1000000, 0x1000001, 0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff] as const;

/** Edge values around a parser's own limit (limit − 1, limit, limit + 1) joined to EDGE_LENGTHS. */
export function edgeLengths(...limits: number[]): number[] {
  const around = limits.flatMap((l) => [l - 1, l, l + 1]).filter((n) => n >= 0 && n <= 0xffffffff);
  return [...new Set([...EDGE_LENGTHS, ...around])];
}

const INTERESTING_BYTES = [0x00, 0x01, 0x7e, 0x7f, 0x80, 0x81, 0xfe, 0xff, 0x22 /* " */, 0x5c /* \ */, 0x7b /* { */, 0x7d /* } */, 0x0a];

export type Mutation =
  | { kind: 'flip'; at: number; bit: number }
  | { kind: 'set'; at: number; value: number }
  | { kind: 'truncate'; at: number }
  | { kind: 'insert'; at: number; bytes: Uint8Array }
  | { kind: 'delete'; at: number; count: number }
  | { kind: 'duplicate'; at: number; count: number }
  | { kind: 'length'; at: number; width: 1 | 2 | 4 | 8; value: number };

export function mutationArb(lengthValues: readonly number[] = EDGE_LENGTHS): fc.Arbitrary<Mutation> {
  const at = fc.nat({ max: 1 << 20 });
  return fc.oneof(
    { weight: 4, arbitrary: fc.record({ kind: fc.constant('flip' as const), at, bit: fc.nat({ max: 7 }) }) },
    { weight: 2, arbitrary: fc.record({ kind: fc.constant('set' as const), at, value: fc.oneof(fc.constantFrom(...INTERESTING_BYTES), fc.nat({ max: 255 })) }) },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant('truncate' as const), at }) },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant('insert' as const), at, bytes: fc.uint8Array({ minLength: 1, maxLength: 16 }) }) },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant('delete' as const), at, count: fc.integer({ min: 1, max: 16 }) }) },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant('duplicate' as const), at, count: fc.integer({ min: 1, max: 64 }) }) },
    {
      weight: 2,
      arbitrary: fc.record({
        kind: fc.constant('length' as const), at, width: fc.constantFrom(1 as const, 2 as const, 4 as const, 8 as const),
        value: fc.constantFrom(...lengthValues),
      }),
    },
  );
}

/** Applies mutations in order; positions wrap around the current length. */
export function mutate(input: Uint8Array, mutations: readonly Mutation[]): Buffer {
  let b = Buffer.from(input);
  for (const m of mutations) {
    const pos = (n: number): number => (n % (b.length + 1));
    const idx = (n: number): number => (b.length === 0 ? -1 : n % b.length);
    switch (m.kind) {
      case 'flip': {
        const i = idx(m.at);
        if (i >= 0) b[i]! ^= 1 << m.bit;
        break;
      }
      case 'set': {
        const i = idx(m.at);
        if (i >= 0) b[i] = m.value;
        break;
      }
      case 'truncate':
        b = b.subarray(0, pos(m.at));
        break;
      case 'insert': {
        const i = pos(m.at);
        b = Buffer.concat([b.subarray(0, i), m.bytes, b.subarray(i)]);
        break;
      }
      case 'delete': {
        const i = pos(m.at);
        b = Buffer.concat([b.subarray(0, i), b.subarray(i + m.count)]);
        break;
      }
      case 'duplicate': {
        const i = pos(m.at);
        b = Buffer.concat([b.subarray(0, i + m.count), b.subarray(i)]);
        break;
      }
      case 'length': {
        if (b.length < m.width) break;
        const i = m.at % (b.length - m.width + 1);
        const v = m.value;
        if (m.width === 1) b[i] = v & 0xff;
        else if (m.width === 2) b.writeUInt16BE(v & 0xffff, i);
        else if (m.width === 4) b.writeUInt32BE(v >>> 0, i);
        else b.writeBigUInt64BE(BigInt(v), i);
        break;
      }
    }
  }
  return Buffer.from(b);
}

/** A valid input and 1–8 mutations of it. */
export function mutated(valid: fc.Arbitrary<Uint8Array>, lengthValues?: readonly number[]): fc.Arbitrary<Buffer> {
  return fc.tuple(valid, fc.array(mutationArb(lengthValues), { minLength: 1, maxLength: 8 }))
    .map(([input, ms]) => mutate(input, ms));
}

/** Random bytes, mostly short, sometimes up to `max`. */
export function randomBytes(max = 4096): fc.Arbitrary<Buffer> {
  return fc.oneof(
    { weight: 4, arbitrary: fc.uint8Array({ maxLength: 64 }) },
    { weight: 2, arbitrary: fc.uint8Array({ maxLength: 512 }) },
    { weight: 1, arbitrary: fc.uint8Array({ maxLength: max }) },
  ).map((a) => Buffer.from(a));
}

/** How to cut a byte stream: at given offsets, every n bytes (1 = byte by byte). */
export type Cuts = { kind: 'at'; offsets: number[] } | { kind: 'every'; size: number };

export const cutsArb: fc.Arbitrary<Cuts> = fc.oneof(
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('at' as const), offsets: fc.array(fc.nat({ max: 1 << 20 }), { maxLength: 12 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('every' as const), size: fc.oneof(fc.constant(1), fc.integer({ min: 1, max: 32 })) }) },
);

/** The pieces of `bytes` cut as `cuts` says (empty pieces included where two cuts coincide: a parser must accept them). */
export function split(bytes: Buffer, cuts: Cuts): Buffer[] {
  if (cuts.kind === 'every') {
    // At most 4,096 pieces: byte-by-byte over a 70 KB input costs the harness, not the parser.
    const size = Math.max(cuts.size, Math.ceil(bytes.length / 4096));
    const out: Buffer[] = [];
    for (let i = 0; i < bytes.length; i += size) out.push(bytes.subarray(i, i + size));
    return out;
  }
  const points = cuts.offsets.map((o) => o % (bytes.length + 1)).sort((a, b) => a - b);
  const out: Buffer[] = [];
  let prev = 0;
  for (const p of points) {
    out.push(bytes.subarray(prev, p));
    prev = p;
  }
  out.push(bytes.subarray(prev));
  return out;
}
