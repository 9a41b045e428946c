/**
 * The connector's local allow-list: which targets it agrees to dial, whatever
 * the worker's mappings say. Nothing is dialled unless a rule permits it (no
 * list, or an empty one, dials nothing), or the config opts in with
 * `allowAll: true`.
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
 * How a target is decided (DialPolicy):
 *  - a mapping that names an IP literal is matched by IP and CIDR rules;
 *  - a mapping that names a host is matched by name and wildcard rules only,
 *    on the name alone, before any DNS lookup: a name no rule permits is never
 *    resolved (the mapping author learns nothing about private DNS, and no
 *    query leaves for a name the owner did not list). A permitted name is
 *    resolved once and that address is dialled (no rebinding between check and
 *    dial);
 *  - guarded addresses (tunnel/guarded-addresses.ts: loopback, link-local,
 *    metadata), whether named by the mapping or resolved from a name, are
 *    dialled only when an IP rule names that very address: a wide block,
 *    a name rule or allowAll never opens them.
 */
import { ConfigError } from './errors.js';
import { formatHostPort, isDnsName } from './address.js';
import { CidrSet, formatCidr, ipFamily, normaliseIp, parseCidr, unmapIpv4 } from './cidr.js';
import { guardedAddress } from './guarded-addresses.js';

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

const ANY_PORT: PortRange = { from: 1, to: 65535 };
const FORMS = 'expected <ip|cidr|name|*.domain>:<port|from-to|*>, e.g. 10.0.0.0/8:443 or [::1]:5432';

export function parseAllowRule(s: string, what = 'allow rule'): AllowRule {
  const fail = (problem: string): never => {
    throw new ConfigError(`${what} "${s}": ${problem}`);
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

const ONLY_LITERAL = '; only an allow rule naming it as an IP literal opens it';

/** Answers a DialPolicy remembers (host × port) before it starts over. */
const MEMO_LIMIT = 1024;

interface CompiledRule {
  rule: AllowRule;
  test: (host: string) => boolean;
}

/** A parsed allow-list: which names and which addresses its rules permit. */
export class AllowList {
  readonly rules: readonly AllowRule[];
  readonly #names: CompiledRule[];
  readonly #addresses: CompiledRule[];

  constructor(rules: AllowRule[]) {
    this.rules = [...rules];
    const compiled = rules.map((rule) => ({ rule, test: compile(rule) }));
    this.#names = compiled.filter(({ rule }) => rule.kind === 'host' || rule.kind === 'wildcard');
    this.#addresses = compiled.filter(({ rule }) => rule.kind === 'ip' || rule.kind === 'cidr');
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

  /** A name or wildcard rule permits this DNS name on this port (decided on the name alone). */
  permitsName(name: string, port: number): boolean {
    const host = canonicalName(name);
    return this.#names.some(({ rule, test }) => inPorts(rule, port) && test(host));
  }

  /** An IP or CIDR rule permits this address on this port. Guarded addresses are not special here (see DialPolicy). */
  permitsAddress(ip: string, port: number): boolean {
    if (ipFamily(ip) === 0) return false;
    const address = unmapIpv4(ip);
    return this.#addresses.some(({ rule, test }) => inPorts(rule, port) && test(address));
  }

  /** An IP rule names exactly this address, on this port: the only kind of rule that opens a guarded address. */
  namesAddress(ip: string, port: number): boolean {
    if (ipFamily(ip) === 0) return false;
    const address = unmapIpv4(ip);
    return this.#addresses.some(({ rule }) => rule.kind === 'ip' && inPorts(rule, port) && unmapIpv4(rule.match) === address);
  }

  describe(): string[] {
    return this.rules.map(formatAllowRule);
  }
}

/** What to do with a mapping's target before any DNS lookup. */
export type Precheck =
  | { verdict: 'dial'; address: string }
  | { verdict: 'resolve' }
  | { verdict: 'deny'; message: string; rule: string };

export type DialDecision =
  | { ok: true; address: string }
  | { ok: false; reason: 'NotAllowed' | 'ResolveFailed'; message: string; /** The allow rule that would permit it. */ rule?: string };

/** Resolves a host name to the one address that will be dialled. */
export type Lookup = (host: string) => Promise<string>;

/**
 * The connector's decision for one target: its allow-list, `allowAll`, and the
 * guarded addresses. Pure apart from the injected lookup.
 */
export class DialPolicy {
  readonly allow: AllowList;
  readonly allowAll: boolean;
  readonly #memo = new Map<string, Precheck>();
  readonly #guardedMemo = new Map<string, string>();

  constructor(allow: AllowList, opts: { allowAll?: boolean } = {}) {
    this.allow = allow;
    this.allowAll = opts.allowAll ?? false;
  }

  /** Decided without DNS. A name the rules do not permit is denied here, so it is never looked up. */
  precheck(host: string, port: number): Precheck {
    // The same few targets are checked on every dial: remember the answers (the rules never change;
    // a new list is a new DialPolicy). Bounded: cleared when it holds MEMO_LIMIT answers.
    const key = `${host}\0${port}`;
    const known = this.#memo.get(key);
    if (known) return known;
    const answer = this.#decideBeforeLookup(host, port);
    if (this.#memo.size >= MEMO_LIMIT) this.#memo.clear();
    this.#memo.set(key, answer);
    return answer;
  }

  /** For a name precheck let through: may the address it resolved to be dialled? */
  checkResolved(host: string, port: number, address: string): DialDecision {
    if (ipFamily(address) === 0) return { ok: false, reason: 'ResolveFailed', message: `${host} resolved to ${JSON.stringify(address)}, not an IP address` };
    const guarded = this.#guarded(address);
    if (guarded && !this.allow.namesAddress(address, port)) {
      const rule = formatHostPort({ host: unmapIpv4(address), port });
      return { ok: false, reason: 'NotAllowed', rule, message: `target ${formatHostPort({ host, port })} resolves to ${address}, ${guarded}${ONLY_LITERAL}` };
    }
    return { ok: true, address };
  }

  /** The whole decision: precheck, then (for a permitted name) one lookup and the check of its address. */
  async decide(host: string, port: number, lookup: Lookup): Promise<DialDecision> {
    const pre = this.precheck(host, port);
    if (pre.verdict === 'deny') return { ok: false, reason: 'NotAllowed', message: pre.message, rule: pre.rule };
    if (pre.verdict === 'dial') return { ok: true, address: pre.address };
    let address: string;
    try {
      address = await lookup(host);
    } catch (err) {
      return { ok: false, reason: 'ResolveFailed', message: `cannot resolve ${host}: ${(err as Error).message}` };
    }
    return this.checkResolved(host, port, address);
  }

  /** guardedAddress, remembered per address: names resolve to the same few addresses on every stream. */
  #guarded(address: string): string | undefined {
    const known = this.#guardedMemo.get(address);
    if (known !== undefined) return known || undefined;
    const answer = guardedAddress(address);
    if (this.#guardedMemo.size >= MEMO_LIMIT) this.#guardedMemo.clear();
    this.#guardedMemo.set(address, answer ?? '');
    return answer;
  }

  #decideBeforeLookup(host: string, port: number): Precheck {
    const target = formatHostPort({ host, port });
    if (ipFamily(host) === 0) {
      if (this.allowAll || this.allow.permitsName(host, port)) return { verdict: 'resolve' };
      return { verdict: 'deny', rule: target, message: `target ${target} is not on this connector's allow list` };
    }
    const wide = this.allowAll || this.allow.permitsAddress(host, port);
    const guarded = guardedAddress(host);
    if (guarded && this.allow.namesAddress(host, port)) return { verdict: 'dial', address: host };
    // A guarded address that a wide rule (or allowAll) would have let through: say why it did not.
    if (guarded && wide) {
      return { verdict: 'deny', rule: formatHostPort({ host: unmapIpv4(host), port }), message: `target ${target} is ${guarded}${ONLY_LITERAL}` };
    }
    if (wide) return { verdict: 'dial', address: host };
    return { verdict: 'deny', rule: target, message: `target ${target} is not on this connector's allow list` };
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

/** A test of a canonical name (name rules) or an unmapped IP (IP and CIDR rules). */
function compile(rule: AllowRule): (host: string) => boolean {
  switch (rule.kind) {
    case 'host':
      return (host) => host === rule.match;
    case 'wildcard': {
      const suffix = rule.match.slice(1); // ".corp.example"
      return (host) => host.length > suffix.length && host.endsWith(suffix);
    }
    case 'ip': {
      const ip = unmapIpv4(rule.match);
      return (address) => address === ip;
    }
    case 'cidr': {
      const set = new CidrSet([rule.match]);
      return (address) => set.contains(address);
    }
  }
}

function inPorts(rule: AllowRule, port: number): boolean {
  return port >= rule.ports.from && port <= rule.ports.to;
}

function canonicalName(name: string): string {
  return name.toLowerCase().replace(/\.$/, '');
}
