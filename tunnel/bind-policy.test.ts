import { describe, it, expect } from '@jest/globals';
import { ConfigError } from './errors.js';
import { BindList, parseBindRule } from './bind-policy.js';
import { formatAllowRule } from './policy.js';

describe('parseBindRule', () => {
  it.each([
    ['127.0.0.1:15432'], ['[::1]:8000-8100'], ['10.1.0.0/16:*'], ['0.0.0.0:15432'], ['[::]:*'],
  ])('reads and writes back %s', (text) => {
    expect(formatAllowRule(parseBindRule(text))).toBe(text);
  });

  it.each([
    ['a name', 'localhost:15432', 'bind rule "localhost:15432": a listener binds an IP address; use an address or block such as 127.0.0.1:15432'],
    ['a wildcard name', '*.corp.example:80', 'a listener binds an IP address'],
    ['a missing port', '127.0.0.1', 'bind rule "127.0.0.1": missing port'],
    ['port 0', '127.0.0.1:0', 'between 1 and 65535'],
    ['a block with host bits', '10.0.0.1/8:80', 'host bits set'],
  ])('refuses %s', (_name, text, message) => {
    expect(() => parseBindRule(text)).toThrow(ConfigError);
    expect(() => parseBindRule(text)).toThrow(message);
  });
});

describe('BindList.permits', () => {
  const list = new BindList(['127.0.0.1:15432', '[::1]:8000-8100', '10.1.0.0/16:*', '0.0.0.0:9000', '0.0.0.0/0:7000'].map(parseBindRule));

  it.each<[string, string, number, boolean]>([
    ['the named address and port', '127.0.0.1', 15432, true],
    ['the named address, another port', '127.0.0.1', 15433, false],
    ['another loopback address', '127.0.0.2', 15432, false],
    ['its IPv4-mapped form', '::ffff:127.0.0.1', 15432, true],
    ['IPv6 loopback in the range', '::1', 8100, true],
    ['IPv6 loopback past the range', '::1', 8101, false],
    ['an address in the block, any port', '10.1.255.255', 1, true],
    ['just outside the block', '10.2.0.0', 1, false],
    ['every interface where a rule names 0.0.0.0', '0.0.0.0', 9000, true],
    ['every interface on another port', '0.0.0.0', 9001, false],
    ['every interface under 0.0.0.0/0: a block never opens the wildcard', '0.0.0.0', 7000, false],
    ['one address under 0.0.0.0/0', '192.0.2.1', 7000, true],
    ['the IPv6 wildcard, which no rule names', '::', 9000, false],
    ['not an IP', 'localhost', 15432, false],
  ])('%s (%s:%s) → %s', (_name, address, port, want) => {
    expect(list.permits(address, port)).toBe(want);
  });

  it('permits nothing when empty (the default)', () => {
    expect(new BindList([]).permits('127.0.0.1', 15432)).toBe(false);
  });
});
