/**
 * The connector's bind list: on which local addresses and ports it agrees to
 * open listeners for Cluster-side mappings. The mapping author is in the
 * cluster and the listener is on a host in the private network, so the host's
 * owner decides: without a list the connector opens no listener at all (even
 * loopback would let the cluster side squat a port that a local program
 * expects to own and receive what its clients send).
 *
 * Rules use the allow-list grammar restricted to addresses (a listener binds
 * an IP, never a name):
 *   127.0.0.1:15432         one address, one port
 *   [::1]:8000-8100         one IPv6 address, a port range
 *   10.1.0.0/16:*           any address in a block, any port
 *   0.0.0.0:15432           every IPv4 interface ("::" for every interface):
 *                           only a rule naming 0.0.0.0 or :: itself permits
 *                           them; no block, not even 0.0.0.0/0, does
 */
import { ConfigError } from './errors.js';
import { isWildcardAddress } from './address.js';
import { CidrSet, ipFamily, unmapIpv4 } from './cidr.js';
import { formatAllowRule, parseAllowRule, type AllowRule } from './policy.js';

export function parseBindRule(s: string): AllowRule {
  const rule = parseAllowRule(s, 'bind rule');
  if (rule.kind === 'host' || rule.kind === 'wildcard') {
    throw new ConfigError(`bind rule "${s}": a listener binds an IP address; use an address or block such as 127.0.0.1:${s.slice(s.lastIndexOf(':') + 1)} or 10.0.0.0/8:*`);
  }
  return rule;
}

export class BindList {
  readonly rules: readonly AllowRule[];
  readonly #tests: Array<{ rule: AllowRule; test: (address: string) => boolean }>;

  constructor(rules: AllowRule[]) {
    this.rules = [...rules];
    this.#tests = rules.map((rule) => ({ rule, test: compile(rule) }));
  }

  /** May a listener bind `address` (an IP literal) on `port`? */
  permits(address: string, port: number): boolean {
    if (ipFamily(address) === 0) return false;
    const ip = unmapIpv4(address);
    return this.#tests.some(({ rule, test }) => port >= rule.ports.from && port <= rule.ports.to && test(ip));
  }

  describe(): string[] {
    return this.rules.map(formatAllowRule);
  }
}

function compile(rule: AllowRule): (address: string) => boolean {
  if (rule.kind === 'ip') {
    const ip = unmapIpv4(rule.match);
    return (address) => address === ip;
  }
  // A block never covers the wildcard addresses: binding 0.0.0.0 opens every interface, which a
  // rule must say in so many words.
  const set = new CidrSet([rule.match]);
  return (address) => !isWildcardAddress(address) && set.contains(address);
}
