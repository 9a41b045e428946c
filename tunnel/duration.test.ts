import { describe, it, expect } from '@jest/globals';
import { ConfigError } from './errors.js';
import { formatDuration, parseDuration } from './duration.js';

describe('parseDuration', () => {
  it.each([
    ['seconds', '30s', 30_000],
    ['milliseconds', '500ms', 500],
    ['minutes', '1m', 60_000],
    ['hours and minutes', '1h30m', 5_400_000],
    ['a month of hours', '720h', 2_592_000_000],
    ['every unit', '1h1m1s1ms', 3_661_001],
    ['a decimal', '1.5s', 1500],
    ['a decimal that is float noise', '1.1s', 1100],
    ['bare zero', '0', 0],
    ['zero with a unit', '0s', 0],
    ['a number as milliseconds', 1500, 1500],
    ['zero as a number', 0, 0],
  ])('reads %s: %j → %d ms', (_name, input, want) => {
    expect(parseDuration(input)).toBe(want);
  });

  it.each([
    ['a missing unit', '30', 'missing unit'],
    ['words', '30 seconds', 'is not a duration'],
    ['a negative duration', '-5s', 'is not a duration'],
    ['an unknown unit', '2d', 'is not a duration'],
    ['units out of order', '30m1h', 'largest to smallest'],
    ['a repeated unit', '1s1s', 'largest to smallest'],
    ['a fraction of a millisecond', '0.5ms', 'whole number of milliseconds'],
    ['a negative number', -1, 'non-negative'],
    ['a fractional number', 1.5, 'whole'],
    ['an empty string', '', 'is not a duration'],
    ['spaces', '1h 30m', 'is not a duration'],
  ])('refuses %s', (_name, input, message) => {
    expect(() => parseDuration(input, 'drainTimeout')).toThrow(ConfigError);
    expect(() => parseDuration(input, 'drainTimeout')).toThrow(message);
  });

  it('names the field in its error', () => {
    expect(() => parseDuration('x', 'keepalive.interval')).toThrow('field "keepalive.interval"');
  });
});

describe('formatDuration', () => {
  it.each([['0'], ['500ms'], ['30s'], ['1m'], ['1h30m'], ['720h'], ['1m30s500ms'], ['1h1ms']])('round-trips %s', (text) => {
    expect(formatDuration(parseDuration(text))).toBe(text);
  });
});
