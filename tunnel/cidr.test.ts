import { describe, it, expect } from '@jest/globals';
import { ConfigError } from './errors.js';
import { CidrSet, formatCidr, normaliseIp, parseCidr, unmapIpv4 } from './cidr.js';

describe('parseCidr', () => {
  it.each([
    ['an IPv4 network', '10.0.0.0/8', { address: '10.0.0.0', prefix: 8, family: 4 }],
    ['an IPv4 host block', '192.168.1.7/32', { address: '192.168.1.7', prefix: 32, family: 4 }],
    ['everything IPv4', '0.0.0.0/0', { address: '0.0.0.0', prefix: 0, family: 4 }],
    ['a bare IPv4 address as /32', '127.0.0.1', { address: '127.0.0.1', prefix: 32, family: 4 }],
    ['an IPv6 network', 'fd00::/8', { address: 'fd00::', prefix: 8, family: 6 }],
    ['an uppercase, long IPv6 network', 'FD00:0000:0:0::/16', { address: 'fd00::', prefix: 16, family: 6 }],
    ['a bare IPv6 address as /128', '::1', { address: '::1', prefix: 128, family: 6 }],
    ['everything IPv6', '::/0', { address: '::', prefix: 0, family: 6 }],
    ['an IPv4-mapped block', '::ffff:10.0.0.0/104', { address: '::ffff:10.0.0.0', prefix: 104, family: 6 }],
    ['a prefix that ends inside a byte', '172.16.0.0/12', { address: '172.16.0.0', prefix: 12, family: 4 }],
  ])('accepts %s', (_name, input, want) => {
    expect(parseCidr(input)).toEqual(want);
  });

  it.each([
    ['IPv4 host bits', '10.0.0.1/8', 'did you mean 10.0.0.0/8'],
    ['IPv4 host bits inside a byte', '172.17.0.0/12', 'did you mean 172.16.0.0/12'],
    ['IPv6 host bits', 'fd00::1/8', 'did you mean fd00::/8'],
    ['an IPv4 prefix above 32', '10.0.0.0/33', 'invalid prefix length (expected 0 to 32)'],
    ['an IPv6 prefix above 128', '::/129', 'invalid prefix length (expected 0 to 128)'],
    ['an empty prefix', '10.0.0.0/', 'invalid prefix length'],
    ['a negative prefix', '10.0.0.0/-1', 'invalid prefix length'],
    ['a name', 'db.internal/8', 'is not a CIDR block'],
    ['a short IPv4 address', '10.0.0/8', 'is not a CIDR block'],
    ['leading zeros', '010.0.0.0/8', 'is not a CIDR block'],
    ['a zone id', 'fe80::1%eth0/64', 'is not a CIDR block'],
    ['nothing', '', 'is not a CIDR block'],
  ])('refuses %s', (_name, input, message) => {
    expect(() => parseCidr(input)).toThrow(ConfigError);
    expect(() => parseCidr(input)).toThrow(message);
  });

  it.each([['10.0.0.0/8'], ['fd00::/8'], ['::1/128'], ['1:2:3:4:5:6:7:8/128'], ['2001:db8::/32'], ['::ffff:10.0.0.0/104']])(
    'round-trips %s', (text) => {
      expect(formatCidr(parseCidr(text))).toBe(text);
    });
});

describe('normaliseIp', () => {
  it.each([
    ['0:0:0:0:0:0:0:1', '::1'],
    ['2001:DB8:0:0:1:0:0:1', '2001:db8::1:0:0:1'], // the first of two equal zero runs is compressed
    ['2001:db8:0:1:1:1:1:1', '2001:db8:0:1:1:1:1:1'], // a single zero group is not compressed
    ['1::', '1::'],
    ['::', '::'],
    ['::ffff:7f00:1', '::ffff:127.0.0.1'],
    ['::1.2.3.4', '::102:304'],
    ['10.0.0.1', '10.0.0.1'],
  ])('writes %s as %s', (input, want) => {
    expect(normaliseIp(input)).toBe(want);
  });

  it('unmaps IPv4-mapped IPv6 addresses', () => {
    expect(unmapIpv4('::ffff:127.0.0.1')).toBe('127.0.0.1');
    expect(unmapIpv4('::1')).toBe('::1');
  });
});

describe('CidrSet', () => {
  const set = new CidrSet(['127.0.0.0/8', '10.1.0.0/16', 'fd00::/8', '192.168.1.7']);

  it.each([
    ['an IPv4 address inside a block', '127.0.0.1', true],
    ['the last address of a block', '10.1.255.255', true],
    ['an IPv4 address just outside a block', '10.2.0.0', false],
    ['a bare-address rule', '192.168.1.7', true],
    ['its neighbour', '192.168.1.8', false],
    ['an IPv6 address inside a block', 'fd12:3456::1', true],
    ['an IPv6 address outside', 'fe80::1', false],
    ['an IPv4-mapped IPv6 address, as IPv4', '::ffff:127.0.0.1', true],
    ['an IPv4-mapped IPv6 address outside', '::ffff:8.8.8.8', false],
    ['a name', 'localhost', false],
    ['garbage', 'not-an-ip', false],
  ])('contains %s: %s', (_name, ip, want) => {
    expect(set.contains(ip)).toBe(want);
  });

  it('matches plain IPv4 against an IPv4-mapped IPv6 block', () => {
    expect(new CidrSet(['::ffff:10.0.0.0/104']).contains('10.9.8.7')).toBe(true);
  });

  it('is empty without blocks and lists normalised, de-duplicated blocks', () => {
    expect(new CidrSet([]).empty).toBe(true);
    const s = new CidrSet(['10.0.0.1', '10.0.0.1/32', 'FD00::/8']);
    expect(s.empty).toBe(false);
    expect(s.cidrs).toEqual(['10.0.0.1/32', 'fd00::/8']);
  });

  it('refuses an invalid block', () => {
    expect(() => new CidrSet(['10.0.0.0/8', 'nope'])).toThrow(ConfigError);
  });
});
