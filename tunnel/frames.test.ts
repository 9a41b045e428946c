import { describe, expect, test } from '@jest/globals';
import { PassThrough } from 'node:stream';
import { encodeJsonFrame, JsonFrameDecoder, parseJsonFrame16, readJsonFrame16 } from './frames.js';

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
