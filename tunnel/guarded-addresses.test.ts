import { describe, it, expect } from '@jest/globals';
import { guardedAddress } from './guarded-addresses.js';

describe('guardedAddress', () => {
  it.each<[string, string, string | undefined]>([
    ['the first IPv4 loopback address', '127.0.0.0', 'a loopback address'],
    ['the last IPv4 loopback address', '127.255.255.255', 'a loopback address'],
    ['just past IPv4 loopback', '128.0.0.0', undefined],
    ['just before IPv4 loopback', '126.255.255.255', undefined],
    ['an IPv4-mapped loopback address', '::ffff:127.0.0.1', 'a loopback address'],
    ['0.0.0.0, which dials this host', '0.0.0.0', 'in 0.0.0.0/8, which dials the connector host itself'],
    ['the last of 0.0.0.0/8', '0.255.255.255', 'in 0.0.0.0/8, which dials the connector host itself'],
    ['the cloud metadata address', '169.254.169.254', 'a link-local address (cloud metadata answers at 169.254.169.254)'],
    ['the first link-local address', '169.254.0.0', 'a link-local address (cloud metadata answers at 169.254.169.254)'],
    ['the last link-local address', '169.254.255.255', 'a link-local address (cloud metadata answers at 169.254.169.254)'],
    ['just past link-local', '169.255.0.0', undefined],
    ['an IPv4-mapped metadata address', '::ffff:169.254.169.254', 'a link-local address (cloud metadata answers at 169.254.169.254)'],
    ['Alibaba Cloud metadata', '100.100.100.200', 'a cloud metadata address'],
    ['its neighbour', '100.100.100.201', undefined],
    ['IPv6 loopback', '::1', 'a loopback address'],
    ['the IPv6 unspecified address', '::', 'the unspecified address, which dials the connector host itself'],
    ['::2', '::2', undefined],
    ['the first IPv6 link-local address', 'fe80::', 'a link-local address'],
    ['the last address of fe80::/10', 'febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff', 'a link-local address'],
    ['just past fe80::/10', 'fec0::', undefined],
    ['the AWS IPv6 metadata address', 'fd00:ec2::254', 'a cloud metadata address'],
    ['its neighbour', 'fd00:ec2::253', undefined],
    ['NAT64 of the metadata address', '64:ff9b::a9fe:a9fe', 'a link-local address (NAT64)'],
    ['NAT64 of loopback', '64:ff9b::7f00:1', 'a loopback address (NAT64)'],
    ['NAT64 of a public address', '64:ff9b::808:808', undefined],
    ['a private address', '10.0.0.1', undefined],
    ['a public address', '8.8.8.8', undefined],
    ['a name', 'localhost', undefined],
  ])('%s (%s) → %s', (_name, ip, want) => {
    expect(guardedAddress(ip)).toBe(want);
  });
});
