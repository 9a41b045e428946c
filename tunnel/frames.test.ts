import { describe, expect, test } from '@jest/globals';
import { PassThrough } from 'node:stream';
import { encodeJsonFrame, JsonFrame16Reader, JsonFrameDecoder, parseJsonFrame16, readJsonFrame16 } from './frames.js';

describe('length-prefixed JSON frames', () => {
  test('a u16 frame parses once whole, and says how many bytes it took', () => {
    const frame = encodeJsonFrame({ mapping: 'db', source: '10.0.0.1:5000' }, 2);
    const buf = Buffer.concat([frame, Buffer.from('pipelined')]);
    for (let i = 0; i < frame.length; i++) expect(parseJsonFrame16(buf.subarray(0, i), 'open request')).toBeUndefined();
    expect(parseJsonFrame16(buf, 'open request')).toEqual({ value: { mapping: 'db', source: '10.0.0.1:5000' }, size: frame.length });
  });

  test('a body that is not JSON is ERR_FRAME_JSON naming what was expected', () => {
    const bad = Buffer.concat([Buffer.from([0, 3]), Buffer.from('{x]')]);
    expect(() => parseJsonFrame16(bad, 'stream open response')).toThrow(expect.objectContaining({ code: 'ERR_FRAME_JSON', message: 'stream open response is not valid JSON' }));
  });

  test('readJsonFrame16 leaves the bytes after the frame in the stream, and rejects bad JSON by name', async () => {
    const stream = new PassThrough();
    const read = readJsonFrame16(stream, 1_000, 'stream open request');
    const frame = encodeJsonFrame({ ok: true }, 2);
    stream.write(frame.subarray(0, 3));
    stream.write(Buffer.concat([frame.subarray(3), Buffer.from('rest')]));
    expect(await read).toEqual({ ok: true });
    expect(stream.read()?.toString()).toBe('rest');

    const other = new PassThrough();
    const failed = readJsonFrame16(other, 1_000, 'stream open request');
    other.write(Buffer.concat([Buffer.from([0, 2]), Buffer.from('no')]));
    await expect(failed).rejects.toMatchObject({ code: 'ERR_FRAME_JSON', message: 'stream open request is not valid JSON' });
  });

  test('a u16 frame that does not fit is refused when encoded', () => {
    expect(() => encodeJsonFrame({ s: 'x'.repeat(70_000) }, 2)).toThrow(expect.objectContaining({ code: 'ERR_FRAME_TOO_LARGE' }));
  });

  test('the u32 decoder returns every whole message and refuses one above its limit', () => {
    const d = new JsonFrameDecoder(100);
    const two = Buffer.concat([encodeJsonFrame({ a: 1 }, 4), encodeJsonFrame({ b: 2 }, 4)]);
    expect(d.push(two.subarray(0, 5))).toEqual([]);
    expect(d.push(two.subarray(5))).toEqual([{ a: 1 }, { b: 2 }]);
    expect(() => new JsonFrameDecoder(10).push(encodeJsonFrame({ long: 'x'.repeat(20) }, 4))).toThrow(expect.objectContaining({ code: 'ERR_CONTROL_TOO_LARGE' }));
  });
});

/**
 * Bytes copied while `fn` runs, by every way a reader could copy them: Buffer.concat, Buffer.from
 * of a buffer, and Buffer#copy (a spy on the platform, so it counts any implementation's work).
 */
function bytesCopiedBy(fn: () => void): number {
  let copied = 0;
  const concat = Buffer.concat;
  const from = Buffer.from;
  const copy = Buffer.prototype.copy;
  Buffer.concat = ((list: readonly Uint8Array[], total?: number) => {
    const out = concat(list, total);
    copied += out.length;
    return out;
  }) as typeof Buffer.concat;
  Buffer.from = ((value: unknown, ...rest: unknown[]) => {
    const out = (from as (...a: unknown[]) => Buffer)(value, ...rest);
    if (value instanceof Uint8Array) copied += out.length;
    return out;
  }) as typeof Buffer.from;
  Buffer.prototype.copy = function (this: Buffer, ...args: Parameters<Buffer['copy']>): number {
    const n = copy.apply(this, args);
    copied += n;
    return n;
  };
  try {
    fn();
  } finally {
    Buffer.concat = concat;
    Buffer.from = from;
    Buffer.prototype.copy = copy;
  }
  return copied;
}

describe('reassembly is linear in the bytes received (finding 6)', () => {
  test.each([
    ['a 256 KiB control message in 64-byte pieces', 4, 256 * 1024, 64],
    ['a 256 KiB control message in 1,000-byte pieces', 4, 256 * 1024, 1_000],
    ['an 8 KiB open header in 1-byte pieces', 2, 8 * 1024 - 2, 1],
  ] as const)('%s copies each byte at most once', (_what, lengthBytes, size, piece) => {
    const body = Buffer.alloc(size - lengthBytes - 2, 0x61);
    const frame = encodeJsonFrame(body.toString(), lengthBytes);
    let got: unknown;
    const copied = bytesCopiedBy(() => {
      if (lengthBytes === 4) {
        const d = new JsonFrameDecoder(1 << 20);
        for (let i = 0; i < frame.length; i += piece) for (const m of d.push(frame.subarray(i, i + piece))) got = m;
      } else {
        const r = new JsonFrame16Reader(8 * 1024, 'stream open request');
        for (let i = 0; i < frame.length && got === undefined; i += piece) got = r.push(frame.subarray(i, i + piece))?.value;
      }
    });
    expect(got).toBe(body.toString());
    expect(copied).toBeLessThanOrEqual(frame.length);
  });

  test('a control message above the limit is refused when its length arrives, before its body', () => {
    const d = new JsonFrameDecoder(1 << 20);
    const prefix = Buffer.alloc(4);
    prefix.writeUInt32BE((1 << 20) + 1);
    expect(() => d.push(prefix)).toThrow(expect.objectContaining({ code: 'ERR_CONTROL_TOO_LARGE', message: 'control message of 1048577 bytes exceeds the 1048576-byte limit' }));
  });

  test('an open header above the limit is refused when its length arrives, naming what it is', () => {
    const r = new JsonFrame16Reader(8 * 1024, 'stream open request');
    expect(r.push(Buffer.from([0x20]))).toBeUndefined();
    expect(() => r.push(Buffer.from([0x01]))).toThrow(expect.objectContaining({ code: 'ERR_OPEN_HEADER_TOO_LARGE', message: 'stream open request of 8193 bytes exceeds the 8192-byte limit' }));
  });

  test('the u16 reader hands back what follows the frame in the same chunk, and holds the declared size while incomplete', () => {
    const frame = encodeJsonFrame({ mapping: 'db', source: '10.0.0.1:5000' }, 2);
    const r = new JsonFrame16Reader(8 * 1024, 'stream open request');
    expect(r.push(frame.subarray(0, 5))).toBeUndefined();
    expect(r.held).toBe(frame.length - 2);
    const done = r.push(Buffer.concat([frame.subarray(5), Buffer.from('early')]));
    expect(done?.value).toEqual({ mapping: 'db', source: '10.0.0.1:5000' });
    expect(done?.rest.toString()).toBe('early');
    expect(r.held).toBe(0);
  });

  test('readJsonFrame16 refuses a frame above its limit', async () => {
    const stream = new PassThrough();
    const read = readJsonFrame16(stream, 1_000, 'stream open response', 100);
    stream.write(Buffer.from([0, 101]));
    await expect(read).rejects.toMatchObject({ code: 'ERR_OPEN_HEADER_TOO_LARGE' });
  });
});
