import { describe, expect, it } from '@jest/globals';
import { randomBytes } from 'node:crypto';
import { encodeClosePayload, encodeControlFrame, encodeFrameHeader, FrameDecoder, Opcode, type FrameSink } from './ws-frame.js';

interface Seen { data: Buffer[]; pings: string[]; pongs: string[]; closes: Array<[number, string]> }

function decoder(expectMasked: boolean, maxFrame = 1 << 20): { d: FrameDecoder; seen: Seen } {
  const seen: Seen = { data: [], pings: [], pongs: [], closes: [] };
  const sink: FrameSink = {
    onData: (c) => seen.data.push(Buffer.from(c)),
    onPing: (p) => seen.pings.push(p.toString()),
    onPong: (p) => seen.pongs.push(p.toString()),
    onClose: (code, reason) => seen.closes.push([code, reason]),
  };
  return { d: new FrameDecoder(sink, { expectMasked, maxFrame }), seen };
}

/** A frame as another implementation would send it: optional random mask. */
function frame(opcode: number, payload: Buffer, opts: { fin?: boolean; mask?: Buffer; rsv?: number } = {}): Buffer {
  const len = payload.length;
  const ext = len < 126 ? 0 : len <= 0xffff ? 2 : 8;
  const head = Buffer.alloc(2 + ext + (opts.mask ? 4 : 0));
  head[0] = (opts.fin === false ? 0 : 0x80) | (opts.rsv ?? 0) | opcode;
  head[1] = (opts.mask ? 0x80 : 0) | (ext === 0 ? len : ext === 2 ? 126 : 127);
  if (ext === 2) head.writeUInt16BE(len, 2);
  if (ext === 8) head.writeBigUInt64BE(BigInt(len), 2);
  let body = payload;
  if (opts.mask) {
    opts.mask.copy(head, 2 + ext);
    body = Buffer.from(payload.map((b, i) => b ^ opts.mask![i & 3]!));
  }
  return Buffer.concat([head, body]);
}

describe('WebSocket frame header', () => {
  it.each([0, 1, 125, 126, 65535, 65536, 5_000_000])('encodes a %i-byte binary frame the way RFC 6455 says', (n) => {
    const payload = randomBytes(n);
    const ours = Buffer.concat([encodeFrameHeader(Opcode.Binary, n, false), payload]);
    expect(ours.equals(frame(Opcode.Binary, payload))).toBe(true);
  });

  it('masks client frames with the all-zero key', () => {
    const h = encodeFrameHeader(Opcode.Binary, 10, true);
    expect(h.toString('hex')).toBe('828a00000000');
  });
});

describe('FrameDecoder', () => {
  const payload = randomBytes(70_000);
  const mask = Buffer.from([0x12, 0x34, 0x56, 0x78]);
  const wire = Buffer.concat([
    frame(Opcode.Binary, payload.subarray(0, 30_000), { fin: false, mask }),
    frame(Opcode.Ping, Buffer.from('are you there'), { mask }),
    frame(Opcode.Continuation, payload.subarray(30_000), { mask }),
    frame(Opcode.Binary, Buffer.alloc(0), { mask }),
    frame(Opcode.Close, encodeClosePayload(1000, 'bye'), { mask }),
  ]);

  it.each([1, 2, 3, 7, 13, 64, wire.length])('gives the same result when input arrives in %i-byte pieces (random mask undone)', (n) => {
    const { d, seen } = decoder(true);
    for (let i = 0; i < wire.length; i += n) d.push(wire.subarray(i, i + n));
    expect(Buffer.concat(seen.data).equals(payload)).toBe(true);
    expect(seen.pings).toEqual(['are you there']);
    expect(seen.closes).toEqual([[1000, 'bye']]);
  });

  it.each([
    ['a text frame', frame(Opcode.Text, Buffer.from('hi'), { mask: Buffer.alloc(4, 1) }), true, 1003],
    ['reserved bits', frame(Opcode.Binary, Buffer.from('x'), { mask: Buffer.alloc(4, 1), rsv: 0x40 }), true, 1002],
    ['an unmasked frame from a client', frame(Opcode.Binary, Buffer.from('x')), true, 1002],
    ['a masked frame from a server', frame(Opcode.Binary, Buffer.from('x'), { mask: Buffer.alloc(4, 1) }), false, 1002],
    ['a fragmented ping', frame(Opcode.Ping, Buffer.from('x'), { fin: false }), false, 1002],
    ['a 126-byte ping', frame(Opcode.Ping, Buffer.alloc(126)), false, 1002],
    ['a continuation without a message', frame(Opcode.Continuation, Buffer.from('x')), false, 1002],
    ['a reserved opcode', frame(0x3, Buffer.from('x')), false, 1002],
    ['a frame over the limit', frame(Opcode.Binary, Buffer.alloc(2000)), false, 1009],
  ])('refuses %s with close code %i', (_name, bytes, expectMasked, code) => {
    const { d } = decoder(expectMasked, 1000);
    expect(() => d.push(bytes)).toThrow(expect.objectContaining({ code: 'ERR_WS_PROTOCOL', closeCode: code }));
  });

  it('round-trips control frames it encodes', () => {
    const { d, seen } = decoder(false);
    d.push(encodeControlFrame(Opcode.Pong, Buffer.from('p'), false));
    d.push(encodeControlFrame(Opcode.Close, encodeClosePayload(4001, 'why'), false));
    expect(seen.pongs).toEqual(['p']);
    expect(seen.closes).toEqual([[4001, 'why']]);
  });
});
