import { describe, expect, it } from '@jest/globals';
import { decodeHeader, encodeHeader, Flag, FrameReader, FrameType, HEADER_SIZE, type FrameHeader } from './frame.js';

describe('yamux frame header', () => {
  it.each([
    [FrameType.Data, 0, 1, 5],
    [FrameType.WindowUpdate, Flag.SYN, 3, 262144],
    [FrameType.WindowUpdate, Flag.ACK | Flag.FIN, 2, 0],
    [FrameType.Ping, Flag.SYN, 0, 0xffffffff],
    [FrameType.GoAway, 0, 0, 2],
    [FrameType.Data, Flag.RST, 0xfffffffe, 0],
  ])('round-trips type %i flags %i stream %i length %i', (type, flags, streamId, length) => {
    const buf = encodeHeader(type, flags, streamId, length);
    expect(buf).toHaveLength(HEADER_SIZE);
    expect(decodeHeader(buf)).toEqual({ version: 0, type, flags, streamId, length });
  });

  it('matches the byte layout of the spec (big endian)', () => {
    expect(encodeHeader(FrameType.WindowUpdate, Flag.SYN, 1, 0x40000).toString('hex')).toBe('000100010000000100040000');
  });
});

describe('FrameReader', () => {
  function collect(input: Buffer, pieceSize: number): { headers: FrameHeader[]; payload: Buffer } {
    const headers: FrameHeader[] = [];
    const parts: Buffer[] = [];
    const reader = new FrameReader({
      onHeader: (h) => headers.push(h),
      onPayload: (_id, chunk) => parts.push(Buffer.from(chunk)),
    });
    for (let i = 0; i < input.length; i += pieceSize) reader.push(input.subarray(i, i + pieceSize));
    expect(reader.idle).toBe(true);
    return { headers, payload: Buffer.concat(parts) };
  }

  const payload = Buffer.from('hello, yamux world');
  const wire = Buffer.concat([
    encodeHeader(FrameType.WindowUpdate, Flag.SYN, 1, 0),
    encodeHeader(FrameType.Data, 0, 1, payload.length),
    payload,
    encodeHeader(FrameType.Ping, Flag.SYN, 0, 7),
    encodeHeader(FrameType.Data, Flag.FIN, 1, 0),
  ]);

  it.each([1, 2, 5, 11, 12, 13, 29, wire.length])('decodes the same frames when input arrives in %i-byte pieces', (n) => {
    const { headers, payload: got } = collect(wire, n);
    expect(headers.map((h) => [h.type, h.flags, h.streamId, h.length])).toEqual([
      [FrameType.WindowUpdate, Flag.SYN, 1, 0],
      [FrameType.Data, 0, 1, payload.length],
      [FrameType.Ping, Flag.SYN, 0, 7],
      [FrameType.Data, Flag.FIN, 1, 0],
    ]);
    expect(got.equals(payload)).toBe(true);
  });

  it.each([
    ['a bad version', Buffer.from('010000000000000100000000', 'hex'), 'ERR_MUX_BAD_VERSION'],
    ['an unknown type', Buffer.from('000900000000000100000000', 'hex'), 'ERR_MUX_BAD_TYPE'],
    ['a ping on a stream', encodeHeader(FrameType.Ping, Flag.SYN, 3, 0), 'ERR_MUX_BAD_STREAM'],
    ['data on stream 0', encodeHeader(FrameType.Data, 0, 0, 1), 'ERR_MUX_BAD_STREAM'],
    ['an HTTP request', Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'), 'ERR_MUX_BAD_VERSION'],
  ])('rejects %s with a coded error', (_name, bytes, code) => {
    const reader = new FrameReader({ onHeader: () => undefined, onPayload: () => undefined });
    expect(() => reader.push(bytes)).toThrow(expect.objectContaining({ code }));
  });
});
