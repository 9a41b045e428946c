/**
 * The value parsers behind every mapping a peer sends (control `config`
 * messages, operator answers) and every config file: addresses
 * (tunnel/address.ts), IPs and CIDR blocks (tunnel/cidr.ts), durations
 * (tunnel/duration.ts). The schemas call them through `parsedString`, which
 * turns any exception into a validation issue; so a crash in them would hide
 * as a confusing message. Here they are called directly.
 *
 * Properties: they refuse only with ConfigError; what they accept prints
 * canonically and parses back to itself.
 */
import fc from 'fast-check';
import { formatHostPort, normaliseHost, parseHostPort } from '../../../tunnel/address.js';
import { formatCidr, normaliseIp, parseCidr } from '../../../tunnel/cidr.js';
import { formatDuration, parseDuration } from '../../../tunnel/duration.js';
import { ConfigError } from '../../../tunnel/errors.js';
import { anyText, cidrArb, hostArb } from '../arbitraries.js';
import { mutated } from '../bytes.js';
import { assertEqual, attempt } from '../expect.js';
import { parsing, type FuzzTarget } from '../harness.js';

function accepted<T>(fn: () => T): T | undefined {
  let value: T | undefined;
  attempt(() => (value = fn()), [ConfigError], ['ERR_CONFIG']);
  return value;
}

const text = (arb: fc.Arbitrary<string>) => fc.oneof(
  { weight: 3, arbitrary: arb },
  { weight: 2, arbitrary: mutated(arb.map((s) => Buffer.from(s))).map((b) => b.toString('latin1')) },
  { weight: 1, arbitrary: anyText(40) },
);

const hostPortText = text(fc.oneof(
  fc.tuple(hostArb, fc.integer({ min: 0, max: 70000 })).map(([h, p]) => (h.includes(':') && !h.startsWith('[') ? `[${h}]:${p}` : `${h}:${p}`)),
  fc.constantFrom(':8443', '[::1]:8443', '::1:8443', 'localhost:', ':', '[]:1', '[::1]', '0.0.0.0:0'),
));

const durationText = text(fc.oneof(
  fc.tuple(fc.nat({ max: 1000 }), fc.constantFrom('h', 'm', 's', 'ms', '')).map(([n, u]) => `${n}${u}`),
  fc.constantFrom('1h30m', '1.5s', '0', '596h', '597h', '1m1m', '30m1h', '.5s', '1.0001s', '1e3s', '-1s', '9007199254740993ms', '1h0.5ms'),
));

export const valuesTarget: FuzzTarget = {
  name: 'values',
  parser: 'tunnel/address.ts, tunnel/cidr.ts, tunnel/duration.ts (mapping and config values)',
  maxHeapGrowth: 8 << 20,
  properties: [
    {
      name: 'host:port',
      arbitrary: hostPortText,
      check(s: string) {
        const hp = parsing(() => accepted(() => parseHostPort(s)));
        if (hp) assertEqual(accepted(() => parseHostPort(formatHostPort(hp))), hp, 'parse(format(hostPort))');
      },
    },
    {
      name: 'host',
      arbitrary: text(hostArb),
      check(s: string) {
        const host = parsing(() => accepted(() => normaliseHost(s)));
        if (host !== undefined) assertEqual(accepted(() => normaliseHost(host)), host, 'normaliseHost is idempotent');
      },
    },
    {
      name: 'ip and cidr',
      arbitrary: text(cidrArb),
      check(s: string) {
        const c = parsing(() => accepted(() => parseCidr(s)));
        if (c) assertEqual(accepted(() => formatCidr(parseCidr(formatCidr(c)))), formatCidr(c), 'the printed block parses back to itself');
        const ip = accepted(() => normaliseIp(s));
        if (ip !== undefined) assertEqual(accepted(() => normaliseIp(ip)), ip, 'normaliseIp is idempotent');
      },
    },
    {
      name: 'duration',
      arbitrary: fc.oneof(durationText, fc.oneof(fc.integer(), fc.double(), fc.constantFrom(2 ** 31, 2 ** 53, -0, Number.NaN, Infinity))),
      check(v: string | number) {
        const ms = parsing(() => accepted(() => parseDuration(v)));
        // -0 and 0 are the same duration.
        if (ms !== undefined && ms <= 2 ** 31) assertEqual(accepted(() => parseDuration(formatDuration(ms))), ms === 0 ? 0 : ms, 'parse(format(ms))');
      },
    },
  ],
};
