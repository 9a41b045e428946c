import { describe, it, expect } from '@jest/globals';
import { ConfigError } from './errors.js';
import {
  formatHostPort, formatPeer, isDns1123Label, isDnsName, listenersOverlap, normaliseHost, parseHostPort, parsePort,
} from './address.js';

describe('parseHostPort', () => {
  it.each([
    ['an IPv4 address and port', '127.0.0.1:8443', { host: '127.0.0.1', port: 8443 }],
    ['a bracketed IPv6 address and port', '[::1]:8443', { host: '::1', port: 8443 }],
    ['a long IPv6 form, made canonical', '[0:0:0:0:0:0:0:1]:443', { host: '::1', port: 443 }],
    ['an IPv4-mapped IPv6 address', '[::FFFF:10.0.0.1]:80', { host: '::ffff:10.0.0.1', port: 80 }],
    ['a DNS name, lowercased', 'LocalHost:80', { host: 'localhost', port: 80 }],
    ['a DNS name with a trailing dot', 'db.internal.:5432', { host: 'db.internal', port: 5432 }],
    ['an empty host as every IPv4 address', ':8443', { host: '0.0.0.0', port: 8443 }],
    ['the highest port', '0.0.0.0:65535', { host: '0.0.0.0', port: 65535 }],
  ])('accepts %s', (_name, input, want) => {
    expect(parseHostPort(input)).toEqual(want);
  });

  it.each([
    ['a missing port', '127.0.0.1', 'missing port'],
    ['port 0', '127.0.0.1:0', 'must be between 1 and 65535'],
    ['port 70000', '127.0.0.1:70000', 'must be between 1 and 65535'],
    ['a non-numeric port', 'localhost:http', 'must be between 1 and 65535'],
    ['a signed port', 'localhost:+80', 'must be between 1 and 65535'],
    ['an unbracketed IPv6 address', '::1:8443', 'must be in brackets'],
    ['an IPv4 address in brackets', '[127.0.0.1]:80', 'brackets must hold an IPv6 address'],
    ['brackets without a port', '[::1]', 'missing port'],
    ['an invalid IPv4 address', '300.1.1.1:80', 'is not an IP address or DNS name'],
    ['a host with spaces', 'my host:80', 'is not an IP address or DNS name'],
    ['an IPv6 zone id', '[fe80::1%eth0]:80', 'brackets must hold an IPv6 address'],
  ])('refuses %s', (_name, input, message) => {
    expect(() => parseHostPort(input, 'listen')).toThrow(ConfigError);
    expect(() => parseHostPort(input, 'listen')).toThrow(message);
    try {
      parseHostPort(input, 'listen');
    } catch (err) {
      expect((err as ConfigError).field).toBe('listen');
    }
  });
});

describe('formatHostPort', () => {
  it.each([
    ['127.0.0.1:8443'], ['[::1]:8443'], ['localhost:80'], ['0.0.0.0:8443'], ['[fd00::10]:5432'], ['[::ffff:10.0.0.1]:80'],
  ])('round-trips %s', (text) => {
    expect(formatHostPort(parseHostPort(text))).toBe(text);
  });

  it('brackets IPv6 hosts', () => {
    expect(formatHostPort({ host: '::', port: 1 })).toBe('[::]:1');
  });
});

describe('formatPeer', () => {
  it.each([
    ['an IPv4 peer', { remoteAddress: '10.0.0.1', remotePort: 40000 }, '10.0.0.1:40000'],
    ['an IPv6 peer', { remoteAddress: '::1', remotePort: 40000 }, '[::1]:40000'],
    ['a closed socket', {}, 'unknown'],
  ])('names %s', (_name, socket, want) => {
    expect(formatPeer(socket)).toBe(want);
  });
});

describe('names', () => {
  it.each([
    ['dc1', true], ['team-a', true], ['a', true], ['a'.repeat(63), true],
    ['a'.repeat(64), false], ['-a', false], ['a-', false], ['Team', false], ['a_b', false], ['a.b', false], ['', false],
  ])('isDns1123Label(%j) is %s', (s, want) => {
    expect(isDns1123Label(s)).toBe(want);
  });

  it.each([
    ['db.internal', true], ['DB.Internal', true], ['localhost', true], ['_srv.example.com', true], ['example.com.', true],
    ['db..internal', false], ['-db.internal', false], ['300.1.1.1', false], ['10.0.0', false], ['', false], ['*.example', false],
    [`${'a'.repeat(63)}.${'b'.repeat(63)}.${'c'.repeat(63)}.${'d'.repeat(61)}`, true],
    [`${'a'.repeat(63)}.${'b'.repeat(63)}.${'c'.repeat(63)}.${'d'.repeat(62)}`, false],
  ])('isDnsName(%j) is %s', (s, want) => {
    expect(isDnsName(s)).toBe(want);
  });

  it('normalises hosts: canonical IPs, lowercase names', () => {
    expect(normaliseHost('FD00:0::1')).toBe('fd00::1');
    expect(normaliseHost('Db.Internal.')).toBe('db.internal');
  });

  it('parses ports from numbers and text', () => {
    expect(parsePort(80)).toBe(80);
    expect(parsePort('65535')).toBe(65535);
    expect(() => parsePort(1.5)).toThrow('must be between 1 and 65535');
  });
});

describe('listenersOverlap', () => {
  it.each([
    ['the same address and port', '127.0.0.1:80', '127.0.0.1:80', true],
    ['different ports', '127.0.0.1:80', '127.0.0.1:81', false],
    ['different addresses', '127.0.0.1:80', '127.0.0.2:80', false],
    ['0.0.0.0 and any address', '0.0.0.0:80', '127.0.0.2:80', true],
    [':: and any address', '[::]:80', '10.0.0.1:80', true],
    ['any address and 0.0.0.0', '[::1]:80', ':80', true],
  ])('%s → %s', (_name, a, b, want) => {
    expect(listenersOverlap(parseHostPort(a), parseHostPort(b))).toBe(want);
  });
});
