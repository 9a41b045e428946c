/**
 * The worker's config file (docs/configuration.md has the reference):
 *
 *   connection: team-a/dc1
 *   listen: "127.0.0.1:8443"
 *   tls: {cert: worker.crt, key: worker.key, ca: ca.crt}
 *   mappings: [...]
 *   operator: {url: "https://underpass-operator.underpass-system.svc:9443", ca: operator-ca.crt}
 *   connectors: [site-a, site-b]     # optional: only these connectors may attach
 *   revoked: {serials: [5A0C…], connectors: [site-c]}   # optional: refused whatever else admits them
 *   clusterTargets: {loopback: false, refuse: [10.96.0.1]}   # optional: see cluster-target-guard.ts
 *
 * Parsed once into a WorkerConfig; unknown fields at any level are errors.
 */
import os from 'node:os';
import { z } from 'zod';
import { MAX_ADMITTED_CONNECTORS, MAX_REVOKED_SERIALS, normalizeSerial } from '../tunnel/admission.js';
import { CONTROL_LIMITS } from '../tunnel/control.js';
import { ConfigError, errorMessage } from '../tunnel/errors.js';
import { isDns1123Label, parseConnectionId as parseIdentityConnectionId } from '../tunnel/identity.js';
import { formatHostPort, listenersOverlap, type HostPort } from '../tunnel/address.js';
import { findMappingProblem, mappingSchema, type Mapping, type MappingProblem } from '../tunnel/mapping.js';
import {
  auditSchema, checkReadableFiles, checkTlsFiles, durationSchema, hostPortSchema, keepaliveSchema, loadYamlFile, logSchema,
  parseConfig, parsedString, resolveFrom, resolveTlsFiles, strictObject, tlsSchema, type LogLevel,
} from '../tunnel/config-load.js';
import { workerLimitsSchema, type Limits } from '../tunnel/limits.js';
import { formatCidr, parseCidr } from '../tunnel/cidr.js';
import type { ClusterTargetRules } from './cluster-target-guard.js';

export interface TlsFiles {
  cert: string;
  key: string;
  ca: string;
}

export interface WorkerConfig {
  file: string;
  connection: { namespace: string; name: string };
  instance: string;
  listen: HostPort;
  tls: TlsFiles;
  admin?: HostPort;
  mappings: Mapping[];
  keepalive: { intervalMs: number; timeoutMs: number };
  /** On SIGTERM: how long listeners stay open (readiness already false) before GoAway (docs/ha.md). */
  drainDelayMs: number;
  drainTimeoutMs: number;
  log: { level: LogLevel };
  audit?: { file: string };
  /** The operator channel (docs/operator-channel.md): when set, mappings come from the operator. */
  operator?: { url: URL; ca: string; intervalMs: number };
  /**
   * Connector names that may attach (tunnel/admission.ts); undefined = any
   * connector with a valid certificate, [] = none. With `operator`, only the
   * start-up list: the operator's answers replace it.
   */
  connectors?: string[];
  /**
   * Certificates (by serial) and connector names refused whatever else admits
   * them (revocation). The operator writes them with `connectors`, so a worker
   * enforces them from start-up; its answers add to them, never remove.
   */
  revoked?: { serials: string[]; connectors: string[] };
  /** What a peer may cost (tunnel/limits.ts, docs/security.md). */
  limits: Limits;
  /** `--bind-address`: Connector-side listeners on 0.0.0.0 or :: bind this address instead (several workers on one host). */
  bindAddress?: string;
  /** What Cluster-side mappings may dial (worker/cluster-target-guard.ts). */
  clusterTargets: ClusterTargetRules;
}

/** "team-a/dc1" → {namespace: "team-a", name: "dc1"}. */
export function parseConnectionId(s: string): { namespace: string; name: string } {
  try {
    return parseIdentityConnectionId(s);
  } catch (err) {
    throw new ConfigError(`"${s}" is not a connection id (expected "<namespace>/<name>", e.g. team-a/dc1): ${errorMessage(err)}`);
  }
}

/** The operator's report endpoint: https only, no credentials, query or fragment. */
export function parseOperatorUrl(s: string): URL {
  let url: URL;
  try {
    url = new URL(s);
  } catch {
    throw new ConfigError(`"${s}" is not a URL (expected e.g. https://underpass-operator.underpass-system.svc:9443)`);
  }
  // Checked first and not echoed: the text holds a secret.
  if (url.username || url.password) throw new ConfigError('must not carry credentials (user:password@); the worker authenticates with its certificate');
  if (url.protocol !== 'https:') throw new ConfigError(`"${s}": must be an https:// URL (the channel uses mutual TLS)`);
  if (url.search || url.hash) throw new ConfigError(`"${s}": must not have a query or fragment`);
  return url;
}

const MIN_REPORT_INTERVAL_MS = 100;

const operatorSchema = strictObject({
  url: parsedString(parseOperatorUrl),
  ca: z.string().min(1, 'must not be empty'),
  interval: durationSchema.default(2000)
    .refine((ms) => ms >= MIN_REPORT_INTERVAL_MS, `must be at least ${MIN_REPORT_INTERVAL_MS}ms`),
});

/** Addresses the operator (or a person) forbids Cluster-side dials to; the API server's are a handful. */
export const MAX_REFUSED_TARGETS = 64;

const clusterTargetsSchema = strictObject({
  // Default: allowed only when the file is the only source of mappings (no operator:); see parseWorkerConfig.
  loopback: z.boolean().optional(),
  refuse: z.array(parsedString((s) => formatCidr(parseCidr(s))))
    .max(MAX_REFUSED_TARGETS, `must have at most ${MAX_REFUSED_TARGETS} entries`).default([])
    .transform((list) => [...new Set(list)]),
});

const instanceSchema = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$/,
  'must be 1 to 253 letters, digits, ".", "_" or "-", starting with a letter or digit');

const workerSchema = strictObject({
  connection: parsedString(parseConnectionId),
  instance: instanceSchema.optional(),
  listen: hostPortSchema,
  tls: tlsSchema,
  admin: hostPortSchema.optional(),
  mappings: z.array(mappingSchema).max(CONTROL_LIMITS.mappings, `must have at most ${CONTROL_LIMITS.mappings} entries`).default([]),
  connectors: z.array(z.string().refine(isDns1123Label, 'must be a connector name (a DNS-1123 label such as site-a)'))
    .max(MAX_ADMITTED_CONNECTORS, `must have at most ${MAX_ADMITTED_CONNECTORS} entries`)
    .refine((list) => new Set(list).size === list.length, 'must not name a connector twice')
    .optional(),
  revoked: strictObject({
    serials: z.array(z.string().regex(/^[0-9A-Fa-f]{1,64}$/, 'must be a certificate serial number in hex'))
      .max(MAX_REVOKED_SERIALS, `must have at most ${MAX_REVOKED_SERIALS} entries`).default([]),
    connectors: z.array(z.string().refine(isDns1123Label, 'must be a connector name (a DNS-1123 label such as site-a)'))
      .max(MAX_ADMITTED_CONNECTORS, `must have at most ${MAX_ADMITTED_CONNECTORS} entries`).default([]),
  }).optional(),
  keepalive: keepaliveSchema,
  drainDelay: durationSchema.default(0),
  drainTimeout: durationSchema.default(30_000),
  log: logSchema,
  audit: auditSchema.optional(),
  operator: operatorSchema.optional(),
  limits: workerLimitsSchema,
  clusterTargets: clusterTargetsSchema.optional(),
}).superRefine((c, ctx) => {
  const problem = findWorkerMappingProblem(c.mappings, c);
  if (problem) ctx.addIssue({ code: 'custom', path: ['mappings', ...problem.path], message: problem.message });
  if (c.admin && listenersOverlap(c.admin, c.listen)) {
    ctx.addIssue({ code: 'custom', path: ['admin'], message: `conflicts with listen (${formatHostPort(c.listen)})` });
  }
});

/**
 * The first problem of a mapping set on this worker: a duplicate name, two
 * listeners colliding, or a Connector-side listener (which runs on the worker
 * itself) on the worker's tunnel or admin address. For the config file and
 * for mapping sets that arrive from the operator.
 */
export function findWorkerMappingProblem(
  mappings: readonly Mapping[],
  worker: { listen: HostPort; admin?: HostPort | undefined },
): MappingProblem | undefined {
  const problem = findMappingProblem(mappings);
  if (problem) return problem;
  for (const [i, m] of mappings.entries()) {
    const own = { host: m.listen.address, port: m.listen.port };
    const clash = m.target.side === 'Connector'
      && ([['listen', worker.listen], ['admin', worker.admin]] as const).find(([, hp]) => hp && listenersOverlap(own, hp));
    if (clash) {
      return {
        path: [i, 'listen', 'port'],
        message: `listener ${formatHostPort(own)} conflicts with the worker's ${clash[0]} address (${formatHostPort(clash[1]!)})`,
      };
    }
  }
  return undefined;
}

export function parseWorkerConfig(raw: unknown, file: string): WorkerConfig {
  const c = parseConfig(workerSchema, raw, file);
  const config: WorkerConfig = {
    file,
    connection: c.connection,
    instance: c.instance ?? os.hostname(),
    listen: c.listen,
    tls: resolveTlsFiles(file, c.tls),
    mappings: c.mappings,
    keepalive: c.keepalive,
    drainDelayMs: c.drainDelay,
    drainTimeoutMs: c.drainTimeout,
    log: c.log,
    limits: c.limits,
    // Mappings from an operator are written by tenants: their loopback is the worker pod itself.
    clusterTargets: { loopback: c.clusterTargets?.loopback ?? !c.operator, refuse: c.clusterTargets?.refuse ?? [] },
  };
  if (c.admin) config.admin = c.admin;
  if (c.audit) config.audit = { file: resolveFrom(file, c.audit.file) };
  if (c.operator) config.operator = { url: c.operator.url, ca: resolveFrom(file, c.operator.ca), intervalMs: c.operator.interval };
  if (c.connectors) config.connectors = c.connectors;
  if (c.revoked) config.revoked = { serials: c.revoked.serials.map(normalizeSerial), connectors: c.revoked.connectors };
  return config;
}

export async function loadWorkerConfig(file: string): Promise<WorkerConfig> {
  const config = parseWorkerConfig(loadYamlFile(file), file);
  await checkTlsFiles(file, config.tls);
  if (config.operator) await checkReadableFiles(file, [['operator.ca', config.operator.ca]]);
  return config;
}
