/**
 * The worker's config file (docs/configuration.md has the reference):
 *
 *   connection: team-a/dc1
 *   listen: "127.0.0.1:8443"
 *   tls: {cert: worker.crt, key: worker.key, ca: ca.crt}
 *   mappings: [...]
 *
 * Parsed once into a WorkerConfig; unknown fields at any level are errors.
 */
import os from 'node:os';
import { z } from 'zod';
import { ConfigError, errorMessage } from '../tunnel/errors.js';
import { parseConnectionId as parseIdentityConnectionId } from '../tunnel/identity.js';
import { formatHostPort, listenersOverlap, type HostPort } from '../tunnel/address.js';
import { findMappingProblem, mappingSchema, type Mapping } from '../tunnel/mapping.js';
import {
  auditSchema, checkTlsFiles, durationSchema, hostPortSchema, keepaliveSchema, loadYamlFile, logSchema,
  parseConfig, parsedString, resolveFrom, resolveTlsFiles, strictObject, tlsSchema, type LogLevel,
} from '../tunnel/config-load.js';

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
  drainTimeoutMs: number;
  log: { level: LogLevel };
  audit?: { file: string };
}

/** "team-a/dc1" → {namespace: "team-a", name: "dc1"}. */
export function parseConnectionId(s: string): { namespace: string; name: string } {
  try {
    return parseIdentityConnectionId(s);
  } catch (err) {
    throw new ConfigError(`"${s}" is not a connection id (expected "<namespace>/<name>", e.g. team-a/dc1): ${errorMessage(err)}`);
  }
}

const instanceSchema = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$/,
  'must be 1 to 253 letters, digits, ".", "_" or "-", starting with a letter or digit');

const workerSchema = strictObject({
  connection: parsedString(parseConnectionId),
  instance: instanceSchema.optional(),
  listen: hostPortSchema,
  tls: tlsSchema,
  admin: hostPortSchema.optional(),
  mappings: z.array(mappingSchema).default([]),
  keepalive: keepaliveSchema,
  drainTimeout: durationSchema.default(30_000),
  log: logSchema,
  audit: auditSchema.optional(),
}).superRefine((c, ctx) => {
  const mappingProblem = findMappingProblem(c.mappings);
  if (mappingProblem) ctx.addIssue({ code: 'custom', path: ['mappings', ...mappingProblem.path], message: mappingProblem.message });
  if (c.admin && listenersOverlap(c.admin, c.listen)) {
    ctx.addIssue({ code: 'custom', path: ['admin'], message: `conflicts with listen (${formatHostPort(c.listen)})` });
  }
  // Connector-side targets are served by listeners on the worker itself.
  c.mappings.forEach((m, i) => {
    const own = { host: m.listen.address, port: m.listen.port };
    const clash = m.target.side === 'Connector'
      && ([['listen', c.listen], ['admin', c.admin]] as const).find(([, hp]) => hp && listenersOverlap(own, hp));
    if (clash) {
      ctx.addIssue({
        code: 'custom', path: ['mappings', i, 'listen', 'port'],
        message: `listener ${formatHostPort(own)} conflicts with the worker's ${clash[0]} address (${formatHostPort(clash[1]!)})`,
      });
    }
  });
});

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
    drainTimeoutMs: c.drainTimeout,
    log: c.log,
  };
  if (c.admin) config.admin = c.admin;
  if (c.audit) config.audit = { file: resolveFrom(file, c.audit.file) };
  return config;
}

export async function loadWorkerConfig(file: string): Promise<WorkerConfig> {
  const config = parseWorkerConfig(loadYamlFile(file), file);
  await checkTlsFiles(file, config.tls);
  return config;
}
