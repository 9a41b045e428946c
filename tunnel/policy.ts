/**
 * The connector's local allow-list: which targets it agrees to dial, whatever
 * the worker's mappings say. A mapping's target is dialled only if some rule
 * permits it (default deny).
 *
 * Rule grammar (`<target>:<ports>`):
 *   127.0.0.1:5432          one IPv4 address
 *   [::1]:5432              one IPv6 address (brackets required)
 *   10.0.0.0/8:443          an IPv4 CIDR block
 *   [fd00::/8]:443          an IPv6 CIDR block (brackets required)
 *   db.internal:5432        one DNS name (case-insensitive, trailing dot ignored)
 *   *.corp.example:5432     any name with one or more labels before .corp.example
 *                           (not corp.example itself)
 * <ports> is one port (5432), a range (8000-8100, inclusive) or * (any port).
 *
 * Name rules match the host the mapping names; IP and CIDR rules match the
 * address that will actually be dialled (after DNS) and, when the mapping's
 * host is itself an IP literal, that too. A name rule trusts DNS: whoever
 * controls the name's records controls where it points.
 */
import { ConfigError } from './errors.js';
import { isDnsName } from './address.js';
import { CidrSet, formatCidr, ipFamily, normaliseIp, parseCidr, unmapIpv4 } from './cidr.js';

export interface PortRange {
  from: number;
  to: number;
}

export interface AllowRule {
  kind: 'ip' | 'cidr' | 'host' | 'wildcard';
  /**
   * What the rule matches, canonical: an IP ("10.0.0.1", "::1"), a CIDR block
   * ("10.0.0.0/8"), a lowercase DNS name, or a wildcard ("*.corp.example").
   */
  match: string;
  /** Inclusive; any port is 1..65535 and prints as "*". */
  ports: PortRange;
}

export interface AllowTarget {
  host: string;
  port: number;
  address?: string;
}

const ANY_PORT: PortRange = { from: 1, to: 65535 };
const FORMS = 'expected <ip|cidr|name|*.domain>:<port|from-to|*>, e.g. 10.0.0.0/8:443 or [::1]:5432';

export function parseAllowRule(s: string): AllowRule {
  const fail = (problem: string): never => {
    throw new ConfigError(`allow rule "${s}": ${problem}`);
  };
  let target: string;
  let portText: string;
  if (s.startsWith('[')) {
    const close = s.indexOf(']');
    if (close < 0 || s[close + 1] !== ':') fail(`missing "]:<port>" after the IPv6 address (${FORMS})`);
    target = s.slice(1, close);
    portText = s.slice(close + 2);
    if (ipFamily(target.split('/')[0]!) !== 6) fail('brackets must hold an IPv6 address or CIDR block');
  } else {
    const colon = s.lastIndexOf(':');
    if (colon < 0) fail(`missing port (${FORMS})`);
    target = s.slice(0, colon);
    portText = s.slice(colon + 1);
    if (target.includes(':')) fail('IPv6 addresses and blocks must be in brackets, e.g. [::1]:5432 or [fd00::/8]:443');
  }
  const ports = parsePortRange(portText, fail);
  return { ...parseRuleTarget(target, fail), ports };
}

export function formatAllowRule(r: AllowRule): string {
  const ports = r.ports.from === 1 && r.ports.to === 65535 ? '*'
    : r.ports.from === r.ports.to ? String(r.ports.from) : `${r.ports.from}-${r.ports.to}`;
  const v6 = (r.kind === 'ip' || r.kind === 'cidr') && r.match.includes(':');
  return v6 ? `[${r.match}]:${ports}` : `${r.match}:${ports}`;
}

/** Answers an AllowList remembers (targets × resolved addresses) before it starts over. */
const MEMO_LIMIT = 1024;

interface CompiledRule {
  rule: AllowRule;
  test: (target: AllowTarget) => boolean;
}

export class AllowList {
  readonly rules: readonly AllowRule[];
  #compiled: CompiledRule[];
  readonly #memo = new Map<string, boolean>();

  constructor(rules: AllowRule[]) {
    this.rules = [...rules];
    this.#compiled = rules.map((rule) => ({ rule, test: compile(rule) }));
  }

  /** Parses every rule; the error's field is the rule's index, e.g. "[2]". */
  static parse(list: string[]): AllowList {
    return new AllowList(list.map((s, i) => {
      try {
        return parseAllowRule(s);
      } catch (err) {
        if (err instanceof ConfigError) throw new ConfigError(err.problem, { field: `[${i}]` }, { cause: err });
        throw err;
      }
    }));
  }

  permits(target: AllowTarget): boolean {
    // The same few targets are checked on every dial: remember the answers (the rules never
    // change; a new list is a new AllowList). Bounded: cleared when it holds MEMO_LIMIT answers.
    const key = `${target.host}\0${target.port}\0${target.address ?? ''}`;
    const known = this.#memo.get(key);
    if (known !== undefined) return known;
    const answer = this.#compiled.some(({ rule, test }) =>
      target.port >= rule.ports.from && target.port <= rule.ports.to && test(target));
    if (this.#memo.size >= MEMO_LIMIT) this.#memo.clear();
    this.#memo.set(key, answer);
    return answer;
  }

  describe(): string[] {
    return this.rules.map(formatAllowRule);
  }
}

function parsePortRange(text: string, fail: (problem: string) => never): PortRange {
  if (text === '*') return { ...ANY_PORT };
  const match = /^(\d{1,5})(?:-(\d{1,5}))?$/.exec(text);
  if (!match) return fail(`"${text}" is not a port, a range like 8000-8100, or *`);
  const from = Number(match[1]);
  const to = match[2] === undefined ? from : Number(match[2]);
  if (from < 1 || to > 65535) fail('ports must be between 1 and 65535');
  if (from > to) fail(`port range ${text} is empty (from must not exceed to)`);
  return { from, to };
}

function parseRuleTarget(target: string, fail: (problem: string) => never): Omit<AllowRule, 'ports'> {
  if (target.includes('/')) {
    try {
      return { kind: 'cidr', match: formatCidr(parseCidr(target)) };
    } catch (err) {
      return fail(err instanceof ConfigError ? err.problem : String(err));
    }
  }
  if (ipFamily(target) !== 0) return { kind: 'ip', match: normaliseIp(target) };
  if (target === '*') return fail('"*" alone is not a rule; use 0.0.0.0/0 or [::/0] to allow every address');
  if (target.startsWith('*.')) {
    const suffix = target.slice(2);
    if (!isDnsName(suffix) || suffix.includes('*')) fail(`"${suffix}" after "*." is not a DNS name`);
    return { kind: 'wildcard', match: `*.${canonicalName(suffix)}` };
  }
  if (target.includes('*')) fail('a wildcard may only be a whole first label, as in *.corp.example');
  if (!isDnsName(target)) fail(`"${target}" is not an IP address, CIDR block or DNS name`);
  return { kind: 'host', match: canonicalName(target) };
}

function compile(rule: AllowRule): (target: AllowTarget) => boolean {
  switch (rule.kind) {
    case 'host':
      return (t) => canonicalName(t.host) === rule.match;
    case 'wildcard': {
      const suffix = rule.match.slice(1); // ".corp.example"
      return (t) => {
        const host = canonicalName(t.host);
        return host.length > suffix.length && host.endsWith(suffix);
      };
    }
    case 'ip': {
      const ip = unmapIpv4(rule.match);
      return (t) => everyDialledIp(t, (candidate) => candidate === ip);
    }
    case 'cidr': {
      const set = new CidrSet([rule.match]);
      return (t) => everyDialledIp(t, (candidate) => set.contains(candidate));
    }
  }
}

/**
 * The IPs an IP/CIDR rule must cover: the resolved address and, when the
 * mapping's host is an IP literal, the host. A name with no resolved address
 * gives nothing to check, so IP rules do not permit it.
 */
function everyDialledIp(t: AllowTarget, ok: (ip: string) => boolean): boolean {
  const candidates = [t.address, t.host].filter((v): v is string => v !== undefined && ipFamily(v) !== 0);
  if (t.address !== undefined && ipFamily(t.address) === 0) return false;
  return candidates.length > 0 && candidates.every((ip) => ok(unmapIpv4(ip)));
}

function canonicalName(name: string): string {
  return name.toLowerCase().replace(/\.$/, '');
}
