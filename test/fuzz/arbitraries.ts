/**
 * Generators of the values peers send inside JSON: mapping fields, names,
 * free text. Each mixes valid values, values at a limit's edge and junk, so
 * that both the accepting and the refusing paths of a schema are exercised.
 */
import fc from 'fast-check';

/** Any string: UTF-16 with lone surrogates, full graphemes, ASCII, and some that look like what is expected. */
export function anyText(maxLength = 40): fc.Arbitrary<string> {
  return fc.oneof(
    fc.string({ unit: 'binary', maxLength }),
    fc.string({ unit: 'grapheme', maxLength }),
    fc.string({ maxLength }),
  );
}

/** A string of exactly `n` characters (for limits: n, n + 1). */
export const repeated = (n: number, c = 'a'): string => c.repeat(n);

export const dnsLabel: fc.Arbitrary<string> = fc.oneof(
  fc.stringMatching(/^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/),
  fc.constantFrom('db', 'site-a', 'a', repeated(63), repeated(64), 'A', '-a', 'a-', '', 'a.b', 'a_b'),
);

/** Names as a peer might send them: mostly labels, sometimes anything. */
export const nameArb: fc.Arbitrary<string> = fc.oneof({ weight: 4, arbitrary: dnsLabel }, { weight: 1, arbitrary: anyText(70) });

export const hostArb: fc.Arbitrary<string> = fc.oneof(
  fc.ipV4(), fc.ipV6(), fc.domain(), fc.ipV4Extended(),
  fc.constantFrom('localhost', '::ffff:10.0.0.1', '[::1]', '0:0::1', 'fe80::1%eth0', '300.1.1.1', 'a..b', 'x.', '.', '', '169.254.169.254', '*'),
  anyText(30),
);

export const portArb: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 4, arbitrary: fc.integer({ min: 1, max: 65535 }) },
  { weight: 1, arbitrary: fc.constantFrom(0, -1, 65536, 1.5, Number.MAX_SAFE_INTEGER, 2 ** 31, '80', null) },
);

export const cidrArb: fc.Arbitrary<string> = fc.oneof(
  fc.tuple(fc.ipV4(), fc.nat({ max: 33 })).map(([ip, n]) => `${ip}/${n}`),
  fc.tuple(fc.ipV6(), fc.nat({ max: 129 })).map(([ip, n]) => `${ip}/${n}`),
  fc.ipV4(), fc.ipV6(),
  fc.constantFrom('10.0.0.0/8', '10.0.0.1/8', '0.0.0.0/0', '::/0', '/8', '10.0.0.0/', '10.0.0.0/08', '::ffff:10.0.0.0/104', '1.2.3.4/-1'),
  anyText(20),
);

/** A mapping object as the control channel or an operator answer carries it (valid or not). */
export const mappingArb: fc.Arbitrary<Record<string, unknown>> = fc.record({
  name: nameArb,
  protocol: fc.constantFrom('TCP', 'UDP', 'tcp'),
  target: fc.record({ side: fc.constantFrom('Connector', 'Cluster', 'connector', ''), host: hostArb, port: portArb }, { requiredKeys: ['side', 'host', 'port'] }),
  listen: fc.record({ port: portArb, address: fc.oneof(fc.ipV4(), fc.ipV6(), fc.constantFrom('0.0.0.0', '::', 'localhost', '')) }, { requiredKeys: ['port'] }),
  allowedSources: fc.array(cidrArb, { maxLength: 4 }),
  extra: fc.jsonValue({ maxDepth: 1 }),
}, { requiredKeys: ['name', 'target', 'listen'] });
