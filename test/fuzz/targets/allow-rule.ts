/**
 * The connector's allow rules (tunnel/policy.ts): `parseAllowRule`,
 * `formatAllowRule` and the `DialPolicy` built from them. Inputs: rules built from every
 * form of the grammar (IPv4, [IPv6], CIDR blocks, names, *.wildcards; one
 * port, ranges, *), mutated rules, random text; targets to check them against.
 *
 * Properties: parse refuses only with ConfigError; an accepted rule prints
 * canonically (format ∘ parse is idempotent, parse ∘ format is the identity);
 * `DialPolicy` never throws, lets nothing through outside every rule's port
 * range (unless allowAll), and dials a guarded address only when an IP rule
 * names it.
 */
import fc from 'fast-check';
import { ConfigError } from '../../../tunnel/errors.js';
import { guardedAddress } from '../../../tunnel/guarded-addresses.js';
import { AllowList, DialPolicy, formatAllowRule, parseAllowRule, type AllowRule } from '../../../tunnel/policy.js';
import { anyText, hostArb } from '../arbitraries.js';
import { mutated } from '../bytes.js';
import { assert, assertEqual, attempt } from '../expect.js';
import { parsing, type FuzzTarget } from '../harness.js';

const portText = fc.oneof(
  fc.integer({ min: 0, max: 70000 }).map(String),
  fc.tuple(fc.integer({ min: 0, max: 70000 }), fc.integer({ min: 0, max: 70000 })).map(([a, b]) => `${a}-${b}`),
  fc.constantFrom('*', '', '00080', '1-', '-1', '65535', '65536', '1 ', ' 1', '0x50', '1e3', '99999'),
);

const targetText = fc.oneof(
  fc.ipV4(),
  fc.ipV6().map((ip) => `[${ip}]`),
  fc.tuple(fc.ipV4(), fc.nat({ max: 33 })).map(([ip, n]) => `${ip}/${n}`),
  fc.tuple(fc.ipV6(), fc.nat({ max: 129 })).map(([ip, n]) => `[${ip}/${n}]`),
  fc.domain(),
  fc.domain().map((d) => `*.${d}`),
  fc.constantFrom('*', '*.', '[::1', '::1', 'DB.Internal.', 'a*b.example', '*.*.example', '0.0.0.0/0', '[::/0]', '[::ffff:10.0.0.0/104]', '[10.0.0.1]', '169.254.169.254'),
);

const ruleText = fc.tuple(targetText, portText).map(([t, p]) => `${t}:${p}`);
const anyRule = fc.oneof(
  { weight: 3, arbitrary: ruleText },
  { weight: 2, arbitrary: mutated(ruleText.map((s) => Buffer.from(s))).map((b) => b.toString('latin1')) },
  { weight: 1, arbitrary: anyText(40) },
);

function parse(s: string): AllowRule | undefined {
  let rule: AllowRule | undefined;
  attempt(() => (rule = parseAllowRule(s)), [ConfigError], ['ERR_CONFIG']);
  return rule;
}

const targetArb = fc.record({
  host: hostArb,
  port: fc.oneof(fc.integer({ min: 1, max: 65535 }), fc.constantFrom(0, 65536, -1, 1.5)),
  address: fc.option(fc.oneof(fc.ipV4(), fc.ipV6(), fc.constantFrom('::ffff:10.0.0.1', 'not-an-ip')), { nil: undefined }),
}, { requiredKeys: ['host', 'port'] });

export const allowRuleTarget: FuzzTarget = {
  name: 'allow-rule',
  parser: 'tunnel/policy.ts parseAllowRule, formatAllowRule, DialPolicy',
  maxHeapGrowth: 8 << 20,
  properties: [
    {
      name: 'parse and print',
      weight: 3,
      arbitrary: anyRule,
      check(s: string) {
        const rule = parsing(() => parse(s));
        if (!rule) return;
        const printed = formatAllowRule(rule);
        const again = parse(printed);
        assertEqual(again, rule, `parse(format(parse(${JSON.stringify(s)})))`);
        assertEqual(formatAllowRule(again!), printed, 'the printed form is canonical');
      },
    },
    {
      name: 'dial policy',
      weight: 2,
      arbitrary: fc.tuple(fc.array(anyRule, { maxLength: 4 }), fc.boolean(), fc.array(targetArb, { minLength: 1, maxLength: 4 })),
      check([texts, allowAll, targets]: [string[], boolean, Array<{ host: string; port: number; address?: string }>]) {
        const rules = texts.map(parse).filter((r): r is AllowRule => r !== undefined);
        const policy = new DialPolicy(new AllowList(rules), { allowAll });
        for (const t of targets) {
          const pre = parsing(() => policy.precheck(t.host, t.port));
          assertEqual(policy.precheck(t.host, t.port), pre, 'the same target twice (memo)');
          const inSomeRange = rules.some((r) => t.port >= r.ports.from && t.port <= r.ports.to);
          if (pre.verdict !== 'deny') assert(allowAll || inSomeRange, `port ${t.port} outside every rule's range was let through`);
          if (pre.verdict === 'dial') assert(guardedAddress(t.host) === undefined || policy.allow.namesAddress(t.host, t.port), `guarded ${t.host} dialled without an IP rule naming it`);
          if (pre.verdict === 'resolve' && t.address !== undefined) {
            const d = policy.checkResolved(t.host, t.port, t.address);
            if (d.ok) assert(guardedAddress(d.address) === undefined || policy.allow.namesAddress(d.address, t.port), `guarded ${d.address} dialled after resolution`);
          }
        }
      },
    },
  ],
};
