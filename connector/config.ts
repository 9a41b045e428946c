/**
 * The connector's config file (docs/configuration.md has the reference):
 *
 *   name: dc1-a
 *   worker: "wss://127.0.0.1:8443"       # or a list of URLs
 *   tls: {cert: connector-dc1-a.crt, key: connector-dc1-a.key, ca: ca.crt}
 *   allow: ["127.0.0.1:5432", "10.0.0.0/8:443", "*.corp.example:5432"]
 *   bind: ["127.0.0.1:18080"]             # listeners for Cluster-side mappings
 *
 * Or, instead of `tls`, a state directory the connector manages itself
 * (enrolled with a one-time token, renewed in place):
 *
 *   state: /var/lib/underpass              # tls.crt, tls.key, ca.crt live here
 *   enroll: {tokenFile: /etc/underpass/token}   # used only while state holds no certificate
 *
 * Parsed once into a ConnectorConfig; unknown fields at any level are errors.
 * Default deny on both lists: no `allow` dials nothing (unless `allowAll:
 * true`), no `bind` opens no listener.
 */
import { z } from 'zod';
import { ConfigError } from '../tunnel/errors.js';
import { isDns1123Label, type HostPort } from '../tunnel/address.js';
import { BindList, parseBindRule } from '../tunnel/bind-policy.js';
import { AllowList, DialPolicy, parseAllowRule, type AllowRule } from '../tunnel/policy.js';
import { formatDuration } from '../tunnel/duration.js';
import { connectorLimitsSchema, type Limits } from '../tunnel/limits.js';
import {
  auditSchema, checkTlsFiles, durationSchema, hostPortSchema, keepaliveSchema, loadYamlFile, logSchema,
  parseConfig, positiveDurationSchema, resolveFrom, resolveTlsFiles, strictObject, tlsSchema, type LogLevel,
} from '../tunnel/config-load.js';
import type { TlsFiles } from '../tunnel/transport/tls-files.js';

export interface ConnectorConfig {
  file: string;
  name: string;
  workers: URL[];
  tls: TlsFiles;
  /** The state directory, when the connector manages its certificate itself (tls points into it). */
  state?: string;
  /** How to enroll while the state directory holds no certificate. */
  enroll?: { token?: string; tokenFile?: string };
  /** In a pod: a Secret that keeps the state directory across restarts (connector/state-secret.ts). */
  stateSecret?: { name: string; namespace?: string; kubeconfig?: string };
  /** What Connector-side targets may be dialled: `allow` and `allowAll` (default: nothing). */
  dial: DialPolicy;
  /** The allow rules, canonical, for logs and /status. */
  allowRules: string[];
  /** Whether `allow` was given at all (the start-up log says what to add when it was not). */
  allowGiven: boolean;
  /** Which local addresses and ports Cluster-side listeners may bind (default: none). */
  bind: BindList;
  /** The bind rules, canonical. */
  bindRules: string[];
  admin?: HostPort;
  keepalive: { intervalMs: number; timeoutMs: number };
  reconnect: { initialDelayMs: number; maxDelayMs: number };
  drainTimeoutMs: number;
  log: { level: LogLevel };
  audit?: { file: string };
  /** What a worker may cost this connector (tunnel/limits.ts, docs/security.md). */
  limits: Limits;
}

/** A worker endpoint: wss:// only, no credentials, query or fragment. */
export function parseWorkerUrl(s: string): URL {
  let url: URL;
  try {
    url = new URL(s);
  } catch {
    throw new ConfigError(`"${s}" is not a URL (expected e.g. wss://tunnel.example.com:8443)`);
  }
  // Checked first and not echoed: the text holds a secret.
  if (url.username || url.password) throw new ConfigError('must not carry credentials (user:password@); the connector authenticates with its certificate');
  if (url.protocol === 'ws:') throw new ConfigError(`"${s}": plain ws is not allowed; the tunnel requires TLS (use wss://)`);
  if (url.protocol !== 'wss:') throw new ConfigError(`"${s}": must be a wss:// URL`);
  if (url.search || url.hash) throw new ConfigError(`"${s}": must not have a query or fragment`);
  return url;
}

const nameSchema = z.string().refine(isDns1123Label,
  'must be a DNS-1123 label: lowercase letters, digits and "-", at most 63, starting and ending with a letter or digit');

const workersSchema = z.union([z.string(), z.array(z.string())], {
  error: 'must be a wss:// URL or a list of wss:// URLs',
}).transform((value, ctx) => {
  const list = typeof value === 'string' ? [value] : value;
  if (list.length === 0) ctx.addIssue({ code: 'custom', message: 'must list at least one worker URL' });
  const seen = new Map<string, number>();
  return list.map((s, i) => {
    const path = typeof value === 'string' ? [] : [i];
    try {
      const url = parseWorkerUrl(s);
      const first = seen.get(url.href);
      if (first !== undefined) ctx.addIssue({ code: 'custom', path, message: `duplicate worker URL ${url.href} (also worker[${first}])` });
      seen.set(url.href, i);
      return url;
    } catch (err) {
      ctx.addIssue({ code: 'custom', path, message: err instanceof ConfigError ? err.problem : String(err) });
      return z.NEVER;
    }
  });
});

const reconnectSchema = strictObject({
  initialDelay: positiveDurationSchema.default(500),
  maxDelay: positiveDurationSchema.default(30_000),
}).default({ initialDelay: 500, maxDelay: 30_000 }).transform((r, ctx) => {
  if (r.maxDelay < r.initialDelay) {
    ctx.addIssue({ code: 'custom', path: ['maxDelay'], message: `must not be less than initialDelay (${formatDuration(r.initialDelay)})` });
  }
  return { initialDelayMs: r.initialDelay, maxDelayMs: r.maxDelay };
});

function rulesSchema(parse: (s: string) => AllowRule) {
  return z.array(z.string(), { error: 'must be a list of rules such as "127.0.0.1:5432"' }).transform((raw, ctx) => raw.map((s, i) => {
    try {
      return parse(s);
    } catch (err) {
      ctx.addIssue({ code: 'custom', path: [i], message: err instanceof ConfigError ? err.problem : String(err) });
      return z.NEVER;
    }
  }));
}

const connectorSchema = strictObject({
  name: nameSchema,
  worker: workersSchema,
  tls: tlsSchema.optional(),
  state: z.string().min(1, 'must be a directory').optional(),
  enroll: strictObject({ token: z.string().min(1).max(4096).optional(), tokenFile: z.string().min(1).optional() }).optional(),
  stateSecret: strictObject({
    name: z.string().min(1).max(253).regex(/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/, 'must be a Secret name'),
    namespace: nameSchema.optional(),
    kubeconfig: z.string().min(1).optional(),
  }).optional(),
  allow: rulesSchema((s) => parseAllowRule(s)).optional(),
  allowAll: z.boolean({ error: 'must be true or false' }).default(false),
  bind: rulesSchema(parseBindRule).default([]),
  admin: hostPortSchema.optional(),
  keepalive: keepaliveSchema,
  reconnect: reconnectSchema,
  drainTimeout: durationSchema.default(30_000),
  log: logSchema,
  audit: auditSchema.optional(),
  limits: connectorLimitsSchema,
});

export function parseConnectorConfig(raw: unknown, file: string): ConnectorConfig {
  const c = parseConfig(connectorSchema, raw, file);
  if (!c.tls === !c.state) {
    throw new ConfigError(c.tls ? 'give either tls (files you manage) or state (a directory the connector manages), not both'
      : 'missing: tls (certificate files) or state (a directory the connector enrolls into with a token and renews in)', { file, field: c.tls ? 'state' : 'tls' });
  }
  if (c.enroll && !c.state) throw new ConfigError('enroll needs state: the directory the enrolled certificate is kept in', { file, field: 'enroll' });
  if (c.stateSecret && !c.state) throw new ConfigError('stateSecret needs state: the directory it keeps', { file, field: 'stateSecret' });
  if (c.enroll && !c.enroll.token === !c.enroll.tokenFile) throw new ConfigError('give exactly one of token and tokenFile', { file, field: 'enroll' });
  const state = c.state ? resolveFrom(file, c.state) : undefined;
  const tls = state ? { cert: `${state}/tls.crt`, key: `${state}/tls.key`, ca: `${state}/ca.crt` } : resolveTlsFiles(file, c.tls!);
  const allow = new AllowList(c.allow ?? []);
  const bind = new BindList(c.bind);
  const config: ConnectorConfig = {
    file,
    name: c.name,
    workers: c.worker,
    tls,
    ...(state ? { state } : {}),
    ...(c.stateSecret ? { stateSecret: { name: c.stateSecret.name, ...(c.stateSecret.namespace ? { namespace: c.stateSecret.namespace } : {}), ...(c.stateSecret.kubeconfig ? { kubeconfig: resolveFrom(file, c.stateSecret.kubeconfig) } : {}) } } : {}),
    ...(c.enroll ? { enroll: { ...(c.enroll.token ? { token: c.enroll.token } : {}), ...(c.enroll.tokenFile ? { tokenFile: resolveFrom(file, c.enroll.tokenFile) } : {}) } } : {}),
    keepalive: c.keepalive,
    reconnect: c.reconnect,
    drainTimeoutMs: c.drainTimeout,
    log: c.log,
    dial: new DialPolicy(allow, { allowAll: c.allowAll }),
    allowRules: allow.describe(),
    allowGiven: c.allow !== undefined,
    bind,
    bindRules: bind.describe(),
    limits: c.limits,
  };
  if (c.admin) config.admin = c.admin;
  if (c.audit) config.audit = { file: resolveFrom(file, c.audit.file) };
  return config;
}

export async function loadConnectorConfig(file: string): Promise<ConnectorConfig> {
  const config = parseConnectorConfig(loadYamlFile(file), file);
  // A state directory may be empty until the connector enrolls.
  if (!config.state) await checkTlsFiles(file, config.tls);
  return config;
}
