/**
 * The pure half of `underpass connector bundle`: from what the cluster says
 * about a connection (its TunnelConnection and ApplicationMappings) decide the
 * worker URLs, whether the connector may enroll, the explicit allow and bind
 * lists (connectors deny by default, so the bundle writes what the current
 * mappings need, for the user to review), and render the files of a
 * ready-to-run connector: connector.yaml, README.txt, or one Secret manifest.
 * No I/O here; cli/bundle.ts reads the cluster and writes the files.
 */
import YAML from 'yaml';
import { admissionFromList, admissionRefusal } from '../tunnel/admission.js';
import { ConfigError, UnderpassError } from '../tunnel/errors.js';
import { formatConnectionId, type ConnectionId } from '../tunnel/identity.js';
import { ipFamily } from '../tunnel/cidr.js';
import { parseBindRule } from '../tunnel/bind-policy.js';
import { guardedAddress } from '../tunnel/guarded-addresses.js';
import { formatAllowRule, parseAllowRule, type AllowRule } from '../tunnel/policy.js';
import { parseWorkerUrl } from './config.js';

/** The parts of a TunnelConnection the bundle reads (the API object may lack any of them). */
export interface ConnectionView {
  metadata?: { uid?: string };
  spec?: {
    endpoint?: { hosts?: string[]; service?: { port?: number } };
    connectors?: string[];
  };
  status?: { endpoint?: string };
}

/** The parts of an ApplicationMapping the bundle reads. */
export interface MappingView {
  metadata?: { name?: string };
  spec?: {
    connection?: string;
    target?: { side?: string; host?: string; port?: number };
    listen?: { port?: number; address?: string };
  };
}

/** One rule of the allow or bind list the bundle writes. */
export interface RuleSuggestion {
  rule: string;
  /** The ApplicationMappings whose targets (allow) or listeners (bind) the rule covers. */
  mappings: string[];
  /** Set when the rule opens a guarded address (loopback, link-local, metadata): said in a comment. */
  guarded?: string;
}


/** Where the connector's files live: beside connector.yaml (`--out`) or in a mounted Secret (`--secret`). */
export interface BundleLayout {
  ca: string;
  cert: string;
  key: string;
  admin: string;
}

export const DEFAULT_ADMIN = '127.0.0.1:9091';
/** In a pod the kubelet probes the admin port from outside the container. */
export const POD_ADMIN = ':9091';
export const SECRET_MOUNT_DIR = '/etc/underpass';
export const DEFAULT_SERVICE_PORT = 443;

export function bundleFileNames(name: string): { ca: string; cert: string; key: string; config: string; readme: string } {
  return { ca: 'ca.crt', cert: `connector-${name}.crt`, key: `connector-${name}.key`, config: 'connector.yaml', readme: 'README.txt' };
}

export function fileLayout(name: string): BundleLayout {
  const f = bundleFileNames(name);
  return { ca: f.ca, cert: f.cert, key: f.key, admin: DEFAULT_ADMIN };
}

export function secretLayout(mountDir = SECRET_MOUNT_DIR): BundleLayout {
  return { ca: `${mountDir}/ca.crt`, cert: `${mountDir}/tls.crt`, key: `${mountDir}/tls.key`, admin: POD_ADMIN };
}

export function secretName(connector: string): string {
  return `underpass-connector-${connector}`;
}

/**
 * Worker URLs, first that applies: the `--worker-url` flags (checked with
 * parseWorkerUrlFlags), the endpoint the operator observed (status.endpoint),
 * then wss://<spec.endpoint.hosts[0]>:<service port>.
 */
export function resolveWorkerUrls(flags: readonly string[], tc: ConnectionView, connection: ConnectionId): string[] {
  if (flags.length > 0) return [...flags];
  const observed = tc.status?.endpoint;
  if (typeof observed === 'string' && observed !== '') {
    try {
      parseWorkerUrl(observed);
    } catch (err) {
      throw noWorkerUrl(connection, `its status.endpoint ${JSON.stringify(observed)} is not usable (${(err as Error).message})`, err);
    }
    return [observed];
  }
  const host = tc.spec?.endpoint?.hosts?.[0];
  if (typeof host === 'string' && host !== '') {
    const port = tc.spec?.endpoint?.service?.port ?? DEFAULT_SERVICE_PORT;
    return [`wss://${ipFamily(host) === 6 ? `[${host}]` : host}:${port}`];
  }
  throw noWorkerUrl(connection, 'it has no status.endpoint yet and no spec.endpoint.hosts');
}

/** Checks the `--worker-url` flags as the connector will (wss only, no duplicates); returns them as given. */
export function parseWorkerUrlFlags(flags: readonly string[]): string[] {
  const seen = new Set<string>();
  return flags.map((s) => {
    let href: string;
    try {
      href = parseWorkerUrl(s).href;
    } catch (err) {
      throw new ConfigError(err instanceof ConfigError ? err.problem : String(err), { field: '--worker-url' }, { cause: err });
    }
    if (seen.has(href)) throw new ConfigError(`${s} is given twice`, { field: '--worker-url' });
    seen.add(href);
    return s;
  });
}

function noWorkerUrl(connection: ConnectionId, why: string, cause?: unknown): UnderpassError {
  return new UnderpassError(
    'ERR_BUNDLE_NO_WORKER_URL',
    `cannot tell which URL connectors of ${formatConnectionId(connection)} dial: ${why}; pass --worker-url wss://<host>:<port>`,
    { cause },
  );
}

/** Refuses a name that spec.connectors (when set; [] admits none) does not list: the workers would refuse it too. */
export function checkConnectorAllowed(name: string, tc: ConnectionView, connection: ConnectionId): void {
  const allowed = tc.spec?.connectors;
  if (!admissionRefusal(admissionFromList(allowed), { connector: name, certificateSerial: '' })) return;
  throw new ConfigError(
    `connector "${name}" is not in spec.connectors of TunnelConnection ${formatConnectionId(connection)} ` +
      `(${allowed?.length ? allowed.join(', ') : 'empty: it admits no connector'}); add it there first, or use one of those names`,
    { field: '--name' },
  );
}

/**
 * Allow rules (canonical, deduplicated, sorted) for the Connector-side targets
 * of the connection's mappings: what the connector must be allowed to dial for
 * them. Mappings of other connections, Cluster-side ones and unusable targets are skipped.
 */
export function suggestAllowRules(mappings: readonly MappingView[], connectionName: string): RuleSuggestion[] {
  return collectRules(mappings, connectionName, 'Connector', (spec) => {
    const t = spec.target;
    if (typeof t?.host !== 'string' || typeof t.port !== 'number') return [];
    const rules = [parseAllowRule(`${ipFamily(t.host) === 6 ? `[${t.host}]` : t.host}:${t.port}`)];
    // "localhost" resolves to a loopback address, which only a rule naming it opens.
    if (rules[0]!.kind === 'host' && (rules[0]!.match === 'localhost' || rules[0]!.match.endsWith('.localhost'))) {
      rules.push(parseAllowRule(`127.0.0.1:${t.port}`), parseAllowRule(`[::1]:${t.port}`));
    }
    return rules;
  });
}

/**
 * Bind rules for the listeners of the connection's Cluster-side mappings (the
 * address defaults to 0.0.0.0, as in the mapping): what the connector must be
 * allowed to open for them.
 */
export function suggestBindRules(mappings: readonly MappingView[], connectionName: string): RuleSuggestion[] {
  return collectRules(mappings, connectionName, 'Cluster', (spec) => {
    const l = spec.listen;
    if (typeof l?.port !== 'number') return [];
    const address = typeof l.address === 'string' && l.address !== '' ? l.address : '0.0.0.0';
    return [parseBindRule(`${ipFamily(address) === 6 ? `[${address}]` : address}:${l.port}`)];
  });
}

function collectRules(
  mappings: readonly MappingView[], connectionName: string, side: 'Connector' | 'Cluster',
  rulesOf: (spec: NonNullable<MappingView['spec']>) => AllowRule[],
): RuleSuggestion[] {
  const byRule = new Map<string, RuleSuggestion>();
  for (const m of mappings) {
    if (m.spec?.connection !== connectionName || m.spec.target?.side !== side) continue;
    let rules: AllowRule[];
    try {
      rules = rulesOf(m.spec);
    } catch {
      continue;
    }
    for (const rule of rules) {
      const text = formatAllowRule(rule);
      const entry = byRule.get(text) ?? { rule: text, mappings: [] };
      const guarded = side === 'Connector' && rule.kind === 'ip' ? guardedAddress(rule.match) : undefined;
      if (guarded) entry.guarded = guarded;
      entry.mappings.push(m.metadata?.name ?? '?');
      byRule.set(text, entry);
    }
  }
  return [...byRule.values()]
    .map((e) => ({ ...e, mappings: e.mappings.sort() }))
    .sort((a, b) => (a.rule < b.rule ? -1 : a.rule > b.rule ? 1 : 0));
}

export interface ConnectorFileOptions {
  name: string;
  connection: ConnectionId;
  workers: readonly string[];
  layout: BundleLayout;
  allow: readonly RuleSuggestion[];
  bind: readonly RuleSuggestion[];
  notAfter: Date;
}

/** connector.yaml: loads with loadConnectorConfig as is, with explicit allow and bind lists for the user to review. */
export function renderConnectorConfig(o: ConnectorFileOptions): string {
  const q = (s: string): string => JSON.stringify(s);
  const workers = o.workers.length === 1 ? ` ${q(o.workers[0] as string)}` : `\n${o.workers.map((w) => `  - ${q(w)}`).join('\n')}`;
  return [
    `# Connector "${o.name}" of connection ${formatConnectionId(o.connection)}, written by "underpass connector bundle".`,
    `# Its certificate expires ${o.notAfter.toISOString()}. Reference: docs/configuration.md (Connector).`,
    `name: ${q(o.name)}`,
    `worker:${workers}`,
    'tls:',
    `  cert: ${q(o.layout.cert)}`,
    `  key: ${q(o.layout.key)}`,
    `  ca: ${q(o.layout.ca)}`,
    `admin: ${q(o.layout.admin)}`,
    ...REVIEW,
    '# Connector-side targets this connector may dial (one per Connector-side mapping):',
    ...ruleList('allow', o.allow, 'db.internal:5432'),
    '# Local listeners the Cluster-side mappings may open ("0.0.0.0" is every interface):',
    ...ruleList('bind', o.bind, '127.0.0.1:18080'),
    '',
  ].join('\n');
}

const REVIEW = [
  '# REVIEW before starting: "allow" and "bind" decide, on this host, what the cluster side may',
  '# reach and open here. They list what the connection\'s ApplicationMappings asked for when this',
  '# file was written; remove what you do not want, and narrow or widen the rules (a block such as',
  '# 10.0.0.0/8:443, a wildcard such as *.corp.example:5432, a port range): docs/configuration.md,',
  '# "Allow-list rules" and "Bind rules". Mappings added later need a rule here too.',
];

function ruleList(field: 'allow' | 'bind', rules: readonly RuleSuggestion[], example: string): string[] {
  if (rules.length === 0) return [`${field}: []  # none yet; a rule looks like "${example}"`];
  const width = Math.max(...rules.map((r) => JSON.stringify(r.rule).length));
  return [
    `${field}:`,
    ...rules.map((r) => `  - ${JSON.stringify(r.rule).padEnd(width)}  # ${r.mappings.join(', ')}${r.guarded ? ` (${r.guarded}: open only because named here)` : ''}`),
  ];
}

export interface ReadmeOptions {
  name: string;
  connection: ConnectionId;
  workers: readonly string[];
  dir: string;
  identity: string;
  notAfter: Date;
  /** The flags that re-create this bundle (for renewal). */
  renewCommand: string;
}

export function renderReadme(o: ReadmeOptions): string {
  const f = bundleFileNames(o.name);
  const installDir = `/etc/underpass/${o.name}`;
  return `Underpass connector "${o.name}" of connection ${formatConnectionId(o.connection)}
${'='.repeat(40)}

Identity:  ${o.identity}
Expires:   ${o.notAfter.toISOString()}
Workers:   ${o.workers.join(', ')}

Files
  ${f.config.padEnd(22)} the connector's configuration (paths are relative to it)
  ${f.ca.padEnd(22)} the connection CA: the worker's certificate must chain to it
  ${f.cert.padEnd(22)} this connector's certificate
  ${f.key.padEnd(22)} its private key (mode 0600); anyone holding it is this connector

Start it (from this folder; it needs outbound access to the workers, no inbound port):

  underpass connector --config ${f.config}

or from anywhere:

  underpass connector --config ${o.dir}/${f.config}

Health: http://127.0.0.1:9091/readyz answers 200 once a worker session is up.

Run it as a service (systemd): copy this folder to ${installDir}, owned by a
user "underpass" (chown -R underpass: ${installDir}), then save as
/etc/systemd/system/underpass-connector-${o.name}.service:

  [Unit]
  Description=Underpass connector ${o.name} (connection ${formatConnectionId(o.connection)})
  Wants=network-online.target
  After=network-online.target

  [Service]
  User=underpass
  ExecStart=/usr/local/bin/underpass connector --config ${installDir}/${f.config}
  Restart=always
  RestartSec=5s
  # SIGTERM drains open streams for up to drainTimeout (30s by default).
  TimeoutStopSec=45s
  NoNewPrivileges=yes
  ProtectSystem=strict
  ProtectHome=yes
  PrivateTmp=yes

  [Install]
  WantedBy=multi-user.target

and: systemctl daemon-reload && systemctl enable --now underpass-connector-${o.name}
(adjust /usr/local/bin/underpass to the output of "command -v underpass").

Renew before it expires: run again with --force, then restart the connector:

  ${o.renewCommand}
`;
}

export interface SecretOptions extends Omit<ConnectorFileOptions, 'layout'> {
  namespace: string;
  caPem: string;
  certPem: string;
  keyPem: string;
  identity: string;
}

/**
 * A v1 Secret holding everything a connector pod needs, mounted at
 * /etc/underpass: ca.crt, tls.crt, tls.key and connector.yaml (which points at them).
 */
export function renderSecretManifest(o: SecretOptions): string {
  const b64 = (s: string): string => Buffer.from(s, 'utf8').toString('base64');
  const config = renderConnectorConfig({ ...o, layout: secretLayout() });
  const manifest = {
    apiVersion: 'v1',
    kind: 'Secret',
    metadata: {
      name: secretName(o.name),
      namespace: o.namespace,
      labels: { 'app.kubernetes.io/name': 'underpass-connector', 'app.kubernetes.io/instance': o.name },
      annotations: {
        'underpass.dev/connection': formatConnectionId(o.connection),
        'underpass.dev/identity': o.identity,
        'underpass.dev/not-after': o.notAfter.toISOString(),
      },
    },
    type: 'Opaque',
    data: { 'ca.crt': b64(o.caPem), 'tls.crt': b64(o.certPem), 'tls.key': b64(o.keyPem), 'connector.yaml': b64(config) },
  };
  return `# Connector ${o.name} of ${formatConnectionId(o.connection)}; holds its private key: apply it, do not commit it.\n` +
    `# Mount at ${SECRET_MOUNT_DIR} and run: underpass connector --config ${SECRET_MOUNT_DIR}/connector.yaml\n` +
    YAML.stringify(manifest, { lineWidth: 0 });
}
