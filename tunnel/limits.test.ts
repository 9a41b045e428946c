import { describe, expect, it } from '@jest/globals';
import { z } from 'zod';
import {
  capText, connectorLimitsSchema, CONTROL_MESSAGE_MAX, COPIED_TEXT_MAX, DEFAULT_LIMITS, muxLimits, OPEN_HEADER_MAX, parseByteSize, workerLimitsSchema, WS_MAX_FRAME,
} from './limits.js';

describe('parseByteSize', () => {
  it.each([
    [0, 0],
    [4096, 4096],
    ['4096', 4096],
    ['512Ki', 512 * 1024],
    ['8Mi', 8 * 1024 * 1024],
    ['1Gi', 1024 ** 3],
  ])('reads %p as %p bytes', (input, bytes) => {
    expect(parseByteSize(input)).toBe(bytes);
  });

  it.each([['8MB'], ['1.5Mi'], ['-1'], [-1], [1.5], ['Mi'], ['8 Mi']])('refuses %p', (input) => {
    expect(() => parseByteSize(input)).toThrow(/is not a size/);
  });
});

describe('the limits: section', () => {
  const worker = (raw: unknown) => workerLimitsSchema.safeParse(raw);
  const firstIssue = (r: z.ZodSafeParseResult<unknown>): string => (r.success ? 'ok' : `${r.error.issues[0]!.path.join('.')}: ${r.error.issues[0]!.message}`);

  it('gives every default when absent', () => {
    expect(workerLimitsSchema.parse(undefined)).toEqual(DEFAULT_LIMITS);
    expect(connectorLimitsSchema.parse(undefined)).toEqual(DEFAULT_LIMITS);
  });

  it('reads sizes and counts, keeping the defaults of what it does not name', () => {
    expect(workerLimitsSchema.parse({ openBufferBytes: '4Mi', sessions: 8 })).toEqual({ ...DEFAULT_LIMITS, openBufferBytes: 4 << 20, sessions: 8 });
  });

  it.each([
    ['an unknown field', { streams: 10 }, /unknown field \(expected one of: streamsPerSession, openBufferBytes, unreadOutputBytes, streamBufferBytes, sessionsPerConnector, sessions, unauthenticatedConnections, unauthenticatedPerSource\)/],
    ['one stream per session (the control stream takes it)', { streamsPerSession: 1 }, /^streamsPerSession: must be between 2 and 65536/],
    ['an open buffer smaller than one open header', { openBufferBytes: '4Ki' }, /^openBufferBytes: must be at least 8Ki/],
    ['an unread-output limit below 1 MiB', { unreadOutputBytes: 65536 }, /^unreadOutputBytes: must be at least 1Mi/],
    ['a stream buffer below the session window', { streamBufferBytes: '4Mi' }, /^streamBufferBytes: must be at least 8Mi \(the session window\)/],
    ['a size that is not one', { openBufferBytes: '8MB' }, /^openBufferBytes: "8MB" is not a size/],
    ['more sessions per connector than in total', { sessions: 2 }, /^sessionsPerConnector: must not be more than sessions \(2\)/],
    ['more unauthenticated connections per source than in total', { unauthenticatedConnections: 10 }, /^unauthenticatedPerSource: must not be more than unauthenticatedConnections \(10\)/],
  ])('refuses %s', (_what, raw, message) => {
    expect(firstIssue(worker(raw))).toMatch(message);
  });

  it('a connector has no worker-only limits', () => {
    const r = connectorLimitsSchema.safeParse({ sessions: 3 });
    expect(firstIssue(r)).toMatch(/unknown field \(expected one of: streamsPerSession, openBufferBytes, unreadOutputBytes, streamBufferBytes\)/);
  });

  it('gives the multiplexer its share', () => {
    expect(muxLimits(DEFAULT_LIMITS)).toEqual({ maxStreams: 16_384, openBufferBytes: 8 << 20, unreadOutputBytes: 16 << 20, streamBufferBytes: 32 << 20 });
  });
});

describe('capText', () => {
  it.each([
    ['short', 10, 'short'],
    ['x'.repeat(10), 10, 'x'.repeat(10)],
    ['x'.repeat(16_000), 10, `${'x'.repeat(10)}…(15990 more characters)`],
  ])('caps %#', (text, max, want) => {
    expect(capText(text, max)).toBe(want);
  });
});

describe('the production limits (a reviewed table: change docs/security.md with any of them)', () => {
  it('keeps the defaults documented in docs/security.md', () => {
    expect(DEFAULT_LIMITS).toEqual({
      streamsPerSession: 16_384,
      openBufferBytes: 8 * 1024 * 1024,
      unreadOutputBytes: 16 * 1024 * 1024,
      streamBufferBytes: 32 * 1024 * 1024,
      sessionsPerConnector: 3,
      sessions: 64,
      unauthenticatedConnections: 256,
      unauthenticatedPerSource: 32,
    });
    expect({ WS_MAX_FRAME, CONTROL_MESSAGE_MAX, OPEN_HEADER_MAX, COPIED_TEXT_MAX }).toEqual({
      WS_MAX_FRAME: 16 * 1024 * 1024, CONTROL_MESSAGE_MAX: 1024 * 1024, OPEN_HEADER_MAX: 8 * 1024, COPIED_TEXT_MAX: 256,
    });
  });
});
