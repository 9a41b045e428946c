/**
 * Addresses a connector never dials on a wide rule's say-so: the connector
 * host itself (loopback, and the unspecified address, which dials the local
 * host) and link-local blocks, where cloud metadata services answer with the
 * host's credentials. A mapping author in the cluster must not reach them
 * through `allowAll`, a name rule, or a block such as 0.0.0.0/0; only an allow
 * rule that names the address as an IP literal opens one (tunnel/policy.ts).
 *
 * IPv4-mapped IPv6 forms (::ffff:127.0.0.1) are the same addresses: the block
 * list matches them against the IPv4 blocks.
 */
import net from 'node:net';
import { ipFamily } from './cidr.js';

export interface GuardedBlock {
  address: string;
  prefix: number;
  family: 'ipv4' | 'ipv6';
  /** What an address of the block is, for messages: "target 127.0.0.1:5432 is <what>". */
  what: string;
  /**
   * local: the dialling host itself (loopback, unspecified); link-local: the link, where cloud
   * metadata services answer; metadata: a cloud metadata address outside link-local. A worker
   * may be told to allow local targets (a stand-alone worker whose config file is the only source
   * of mappings), never the other two.
   */
  kind: 'local' | 'link-local' | 'metadata';
}

export const GUARDED_BLOCKS: readonly GuardedBlock[] = [
  { address: '0.0.0.0', prefix: 8, family: 'ipv4', what: 'in 0.0.0.0/8, which dials the connector host itself', kind: 'local' },
  { address: '127.0.0.0', prefix: 8, family: 'ipv4', what: 'a loopback address', kind: 'local' },
  { address: '169.254.0.0', prefix: 16, family: 'ipv4', what: 'a link-local address (cloud metadata answers at 169.254.169.254)', kind: 'link-local' },
  { address: '100.100.100.200', prefix: 32, family: 'ipv4', what: 'a cloud metadata address', kind: 'metadata' },
  { address: '::', prefix: 128, family: 'ipv6', what: 'the unspecified address, which dials the connector host itself', kind: 'local' },
  { address: '::1', prefix: 128, family: 'ipv6', what: 'a loopback address', kind: 'local' },
  { address: 'fe80::', prefix: 10, family: 'ipv6', what: 'a link-local address', kind: 'link-local' },
  { address: 'fd00:ec2::254', prefix: 128, family: 'ipv6', what: 'a cloud metadata address', kind: 'metadata' },
  // NAT64 (RFC 6052) spellings of 127.0.0.0/8 and 169.254.0.0/16.
  { address: '64:ff9b::7f00:0', prefix: 104, family: 'ipv6', what: 'a loopback address (NAT64)', kind: 'local' },
  { address: '64:ff9b::a9fe:0', prefix: 112, family: 'ipv6', what: 'a link-local address (NAT64)', kind: 'link-local' },
];

// One list answers "is it guarded?" in one check (BlockList.check from a string costs a few µs:
// it builds a SocketAddress); the per-block lists only name the block, for a guarded address.
const any = new net.BlockList();
const lists = GUARDED_BLOCKS.map((b) => {
  any.addSubnet(b.address, b.prefix, b.family);
  const list = new net.BlockList();
  list.addSubnet(b.address, b.prefix, b.family);
  return { list, block: b };
});

/** What guarded address `ip` is ("a loopback address", …), or undefined when it is not one (or not an IP). */
export function guardedAddress(ip: string): string | undefined {
  return guardedBlock(ip)?.what;
}

/** The guarded block `ip` lies in, or undefined when it is not guarded (or not an IP). */
export function guardedBlock(ip: string): GuardedBlock | undefined {
  const family = ipFamily(ip);
  if (family === 0) return undefined;
  const type = family === 4 ? 'ipv4' : 'ipv6';
  if (!any.check(ip, type)) return undefined;
  return lists.find(({ list }) => list.check(ip, type))?.block;
}
