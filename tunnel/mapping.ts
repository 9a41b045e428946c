/**
 * An application mapping: one application made reachable across the tunnel.
 * The target runs on one side; the listener is on the other (a Connector-side
 * target is served by a listener on the worker, a Cluster-side target by a
 * listener on each connector host).
 */
import { z } from 'zod';
import { ConfigError } from './errors.js';
import { formatHostPort, isDns1123Label, listenersOverlap, normaliseHost } from './address.js';
import { formatCidr, normaliseIp, parseCidr } from './cidr.js';
import { parsedString, portSchema, strictObject } from './config-load.js';

export type Side = 'Connector' | 'Cluster';

export interface Mapping {
  /** DNS-1123 label (lowercase alnum and '-', ≤63). */
  name: string;
  protocol: 'TCP';
  /** host: IP literal (canonical) or DNS name (lowercase). */
  target: { side: Side; host: string; port: number };
  /** address: IP literal, default '0.0.0.0'. */
  listen: { port: number; address: string };
  /** Normalised CIDR blocks ("127.0.0.0/8"); [] = any source. */
  allowedSources: string[];
}

export const SIDES = ['Connector', 'Cluster'] as const satisfies readonly Side[];

const nameSchema = z.string().refine(isDns1123Label,
  'must be a DNS-1123 label: lowercase letters, digits and "-", at most 63, starting and ending with a letter or digit');

const protocolSchema = z.string().default('TCP').transform((p, ctx): 'TCP' => {
  if (p !== 'TCP') {
    ctx.addIssue({ code: 'custom', message: p === 'UDP' ? 'UDP is not supported yet' : `must be "TCP" (got "${p}")` });
  }
  return 'TCP';
});

const listenAddressSchema = parsedString((s) => {
  try {
    return normaliseIp(s);
  } catch {
    throw new ConfigError(`"${s}" is not an IP address (a listener binds an IP, e.g. 0.0.0.0, 127.0.0.1 or ::)`);
  }
});

export const mappingSchema = strictObject({
  name: nameSchema,
  protocol: protocolSchema,
  target: strictObject({
    side: z.enum(SIDES),
    host: parsedString((s) => normaliseHost(s)),
    port: portSchema,
  }),
  listen: strictObject({
    port: portSchema,
    address: listenAddressSchema.default('0.0.0.0'),
  }),
  allowedSources: z.array(parsedString((s) => formatCidr(parseCidr(s)))).default([])
    .transform((list) => [...new Set(list)]),
}) satisfies z.ZodType<Mapping>;

export interface MappingProblem {
  /** Relative to the list, e.g. "[2].listen.port". */
  path: Array<string | number>;
  message: string;
}

/** The first duplicate name or listener conflict in `list`, or undefined. */
export function findMappingProblem(list: readonly Mapping[]): MappingProblem | undefined {
  for (let i = 0; i < list.length; i++) {
    const m = list[i]!;
    for (let j = 0; j < i; j++) {
      const other = list[j]!;
      if (other.name === m.name) {
        return { path: [i, 'name'], message: `duplicate mapping name "${m.name}" (also mappings[${j}])` };
      }
      const a = { host: m.listen.address, port: m.listen.port };
      const b = { host: other.listen.address, port: other.listen.port };
      if (other.target.side === m.target.side && listenersOverlap(a, b)) {
        return {
          path: [i, 'listen', 'port'],
          message: `listener ${formatHostPort(a)} conflicts with mapping "${other.name}" (mappings[${j}]) `
            + `listening on ${formatHostPort(b)} on the ${listenerSide(m.target.side)}`,
        };
      }
    }
  }
  return undefined;
}

/** Throws a ConfigError naming e.g. `mappings[2].listen.port`. */
export function validateMappings(list: Mapping[]): void {
  const problem = findMappingProblem(list);
  if (problem) {
    const field = problem.path.reduce<string>((out, s) => (typeof s === 'number' ? `${out}[${s}]` : `${out}.${s}`), 'mappings');
    throw new ConfigError(problem.message, { field });
  }
}

export function mappingsEqual(a: Mapping, b: Mapping): boolean {
  return a.name === b.name
    && a.protocol === b.protocol
    && a.target.side === b.target.side
    && a.target.host === b.target.host
    && a.target.port === b.target.port
    && a.listen.port === b.listen.port
    && a.listen.address === b.listen.address
    && sameSet(a.allowedSources, b.allowedSources);
}

/** Where a mapping's listener runs: opposite its target. */
export function listenerSide(targetSide: Side): string {
  return targetSide === 'Connector' ? 'worker' : 'connector';
}

function sameSet(a: readonly string[], b: readonly string[]): boolean {
  const left = new Set(a);
  const right = new Set(b);
  return left.size === right.size && [...left].every((x) => right.has(x));
}

/**
 * `m` with a wildcard listen address (0.0.0.0 or ::) replaced by `address`:
 * the `--bind-address` override, to run several workers (or connectors) of one
 * connection on one host, each on its own address, as pods each have their own.
 * `m` itself when there is no override or its address is specific.
 */
export function boundTo(m: Mapping, address: string | undefined): Mapping {
  if (!address || (m.listen.address !== '0.0.0.0' && m.listen.address !== '::')) return m;
  return { ...m, listen: { ...m.listen, address } };
}
