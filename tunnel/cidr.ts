/**
 * IP addresses and CIDR blocks.
 *
 * Accepted CIDR forms:
 *   10.0.0.0/8        IPv4 network
 *   fd00::/8          IPv6 network
 *   10.1.2.3          bare IPv4 address = 10.1.2.3/32
 *   ::1               bare IPv6 address = ::1/128
 *
 * A block whose address has host bits set ("10.0.0.1/8") is refused, with the
 * network it probably meant in the message: in an allow-list a typo must not
 * silently widen or narrow who gets in. Zone ids ("fe80::1%eth0") are refused.
 * Output is canonical: IPv6 per RFC 5952 (lowercase, shortest form).
 */
import net from 'node:net';
import { ConfigError } from './errors.js';

export interface Cidr {
  address: string;
  prefix: number;
  family: 4 | 6;
}

/** Canonical text of an IP literal; throws a ConfigError when `s` is not one. */
export function normaliseIp(s: string): string {
  const family = ipFamily(s);
  if (family === 0) throw new ConfigError(`"${s}" is not an IP address`);
  return formatIp(ipToBytes(s, family));
}

/** 4 or 6 for an IP literal without zone id, 0 otherwise. */
export function ipFamily(s: string): 0 | 4 | 6 {
  if (s.includes('%')) return 0;
  const family = net.isIP(s);
  return family === 4 || family === 6 ? family : 0;
}

/** "::ffff:1.2.3.4" → "1.2.3.4"; any other IP is returned canonical. */
export function unmapIpv4(ip: string): string {
  const canonical = normaliseIp(ip);
  const match = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(canonical);
  return match ? match[1]! : canonical;
}

export function parseCidr(s: string): Cidr {
  const slash = s.indexOf('/');
  const addressText = slash < 0 ? s : s.slice(0, slash);
  const family = ipFamily(addressText);
  if (family === 0) {
    throw new ConfigError(`"${s}" is not a CIDR block (expected e.g. 10.0.0.0/8, fd00::/8 or a bare IP address)`);
  }
  const bits = family === 4 ? 32 : 128;
  let prefix = bits;
  if (slash >= 0) {
    const prefixText = s.slice(slash + 1);
    if (!/^\d{1,3}$/.test(prefixText) || Number(prefixText) > bits) {
      throw new ConfigError(`"${s}" has an invalid prefix length (expected 0 to ${bits})`);
    }
    prefix = Number(prefixText);
  }
  const bytes = ipToBytes(addressText, family);
  const network = maskBytes(bytes, prefix);
  if (!network.every((b, i) => b === bytes[i])) {
    const suggestion = `${formatIp(network)}/${prefix}`;
    throw new ConfigError(`"${s}" has host bits set (did you mean ${suggestion}, or ${formatIp(bytes)}/${bits} for one host?)`);
  }
  return { address: formatIp(bytes), prefix, family };
}

export function formatCidr(c: Cidr): string {
  return `${c.address}/${c.prefix}`;
}

/** A set of CIDR blocks; IPv4-mapped IPv6 addresses match IPv4 blocks and vice versa. */
export class CidrSet {
  readonly cidrs: readonly string[];
  #blocks = new net.BlockList();

  constructor(cidrs: string[]) {
    const parsed = cidrs.map(parseCidr);
    for (const c of parsed) this.#blocks.addSubnet(c.address, c.prefix, c.family === 4 ? 'ipv4' : 'ipv6');
    this.cidrs = [...new Set(parsed.map(formatCidr))];
  }

  get empty(): boolean {
    return this.cidrs.length === 0;
  }

  /** False for anything that is not an IP literal. */
  contains(ip: string): boolean {
    const family = ipFamily(ip);
    if (family === 0) return false;
    return this.#blocks.check(ip, family === 4 ? 'ipv4' : 'ipv6');
  }
}

function ipToBytes(s: string, family: 4 | 6): number[] {
  if (family === 4) return s.split('.').map(Number);
  let text = s.toLowerCase();
  const tail: number[] = [];
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (v4) {
    const [a, b, c, d] = v4[1]!.split('.').map(Number) as [number, number, number, number];
    tail.push((a << 8) | b, (c << 8) | d);
    text = text.slice(0, -v4[1]!.length);
    if (text.endsWith(':') && !text.endsWith('::')) text = text.slice(0, -1);
  }
  const want = 8 - tail.length;
  const [head, rest] = text.includes('::') ? text.split('::') as [string, string] : [text, undefined];
  const headGroups = head ? head.split(':') : [];
  const restGroups = rest ? rest.split(':') : [];
  const zeros = rest === undefined ? 0 : want - headGroups.length - restGroups.length;
  const groups = [...headGroups, ...Array<string>(zeros).fill('0'), ...restGroups].map((g) => parseInt(g, 16));
  return [...groups, ...tail].flatMap((g) => [g >> 8, g & 0xff]);
}

function formatIp(bytes: number[]): string {
  if (bytes.length === 4) return bytes.join('.');
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((bytes[i]! << 8) | bytes[i + 1]!);
  if (groups.slice(0, 5).every((g) => g === 0) && groups[5] === 0xffff) {
    return `::ffff:${bytes.slice(12).join('.')}`;
  }
  // RFC 5952: compress the longest run (first on ties) of two or more zero groups.
  let bestStart = -1;
  let bestLength = 1;
  for (let i = 0; i < 8;) {
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLength) [bestStart, bestLength] = [i, j - i];
    i = j === i ? i + 1 : j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLength).join(':')}`;
}

function maskBytes(bytes: number[], prefix: number): number[] {
  return bytes.map((b, i) => {
    const keep = Math.max(0, Math.min(8, prefix - i * 8));
    return b & ((0xff << (8 - keep)) & 0xff);
  });
}
