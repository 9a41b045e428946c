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

describe('CidrSet at prefix boundaries (the first and last address inside, the neighbours just outside)', () => {
  it.each<[string, string, boolean]>([
    // IPv4 /0: every IPv4 address, in either spelling, and no IPv6 address
    ['0.0.0.0/0', '0.0.0.0', true],
    ['0.0.0.0/0', '255.255.255.255', true],
    ['0.0.0.0/0', '::ffff:1.2.3.4', true],
    ['0.0.0.0/0', '::1', false],
    ['0.0.0.0/0', '2001:db8::1', false],
    // /1: each half
    ['0.0.0.0/1', '0.0.0.0', true],
    ['0.0.0.0/1', '127.255.255.255', true],
    ['0.0.0.0/1', '128.0.0.0', false],
    ['128.0.0.0/1', '128.0.0.0', true],
    ['128.0.0.0/1', '255.255.255.255', true],
    ['128.0.0.0/1', '127.255.255.255', false],
    // a prefix that ends inside a byte
    ['172.16.0.0/12', '172.16.0.0', true],
    ['172.16.0.0/12', '172.31.255.255', true],
    ['172.16.0.0/12', '172.15.255.255', false],
    ['172.16.0.0/12', '172.32.0.0', false],
    // /31 and /32
    ['10.0.0.0/31', '10.0.0.0', true],
    ['10.0.0.0/31', '10.0.0.1', true],
    ['10.0.0.0/31', '9.255.255.255', false],
    ['10.0.0.0/31', '10.0.0.2', false],
    ['10.0.0.1/32', '10.0.0.1', true],
    ['10.0.0.1/32', '10.0.0.0', false],
    ['10.0.0.1/32', '10.0.0.2', false],
    ['255.255.255.255/32', '255.255.255.255', true],
    ['255.255.255.255/32', '255.255.255.254', false],
    // IPv6 /0 is every address, IPv4 ones included (they are ::ffff:0:0/96 inside it)
    ['::/0', '::', true],
    ['::/0', 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', true],
    ['::/0', '1.2.3.4', true],
    // IPv6 /1
    ['8000::/1', '8000::', true],
    ['8000::/1', 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', true],
    ['8000::/1', '7fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', false],
    ['::/1', '7fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', true],
    ['::/1', '8000::', false],
    // IPv6 /64 at a group boundary
    ['2001:db8:0:1::/64', '2001:db8:0:1::', true],
    ['2001:db8:0:1::/64', '2001:db8:0:1:ffff:ffff:ffff:ffff', true],
    ['2001:db8:0:1::/64', '2001:db8:0:0:ffff:ffff:ffff:ffff', false],
    ['2001:db8:0:1::/64', '2001:db8:0:2::', false],
    // /127 and /128
    ['2001:db8::/127', '2001:db8::', true],
    ['2001:db8::/127', '2001:db8::1', true],
    ['2001:db8::/127', '2001:db7:ffff:ffff:ffff:ffff:ffff:ffff', false],
    ['2001:db8::/127', '2001:db8::2', false],
    ['2001:db8::1/128', '2001:db8::1', true],
    ['2001:db8::1/128', '2001:db8::', false],
    ['2001:db8::1/128', '2001:db8::2', false],
    // IPv4-mapped IPv6 blocks are their IPv4 blocks, and the other way round
    ['::ffff:10.0.0.0/104', '10.0.0.0', true],
    ['::ffff:10.0.0.0/104', '10.255.255.255', true],
    ['::ffff:10.0.0.0/104', '9.255.255.255', false],
    ['::ffff:10.0.0.0/104', '11.0.0.0', false],
    ['::ffff:10.0.0.0/104', '::ffff:10.1.2.3', true],
    ['::ffff:0.0.0.0/96', '0.0.0.0', true],
    ['::ffff:0.0.0.0/96', '255.255.255.255', true],
    ['::ffff:0.0.0.0/96', '::1', false],
    ['::ffff:10.0.0.1/128', '10.0.0.1', true],
    ['::ffff:10.0.0.1/128', '10.0.0.2', false],
    ['10.0.0.0/8', '::ffff:a00:0', true], // the mapped form written in hex
    ['10.0.0.0/8', '::ffff:b00:0', false],
    ['10.0.0.0/8', '::a00:1', false], // IPv4-compatible (deprecated) is not IPv4-mapped
  ])('%s contains %s: %s', (block, ip, want) => {
    expect(new CidrSet([block]).contains(ip)).toBe(want);
  });

  it.each([
    ['128.0.0.1/1', 'did you mean 128.0.0.0/1'],
    ['10.0.0.1/31', 'did you mean 10.0.0.0/31'],
    ['8000::1/1', 'did you mean 8000::/1'],
    ['2001:db8::1/127', 'did you mean 2001:db8::/127'],
    ['0.0.0.1/0', 'did you mean 0.0.0.0/0'],
    ['::1/0', 'did you mean ::/0'],
  ])('refuses %s, one host bit past the prefix', (input, message) => {
    expect(() => parseCidr(input)).toThrow(message);
  });
});
