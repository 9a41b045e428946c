/**
 * `underpass connector bundle`: issue a connector certificate from a
 * connection's CA (the Secret the operator keeps) and hand back a connector
 * that starts as is: files in --out, or one Secret manifest on stdout
 * (--secret). Flags become ConfigErrors naming the flag (exit 2); what the
 * cluster says (missing objects, RBAC) becomes a runtime error (exit 1).
 * Key material goes only into the files and the manifest, never to stderr.
 */
import { lstat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { Command, Option } from 'commander';
import type * as k8s from '@kubernetes/client-node';
import {
  bundleFileNames, checkConnectorAllowed, fileLayout, renderConnectorConfig, renderReadme, renderSecretManifest,
  parseWorkerUrlFlags, resolveWorkerUrls, secretName, suggestAllowRules, suggestBindRules, type ConnectionView, type MappingView, type RuleSuggestion,
} from '../connector/bundle.js';
import { apiErrorMessage, GROUP, statusCode, VERSION } from '../operator/api.js';
import type { Kube } from '../operator/kube.js';
import { caSecretName } from '../operator/connection-ca.js';
import { ConfigError, errorCode, UnderpassError } from '../tunnel/errors.js';
import { connectorUri, dns1123LabelProblem, formatConnectionId, parseConnectionId, parseConnectorName, type ConnectionId } from '../tunnel/identity.js';
import { certificateInfo, FileExistsError, issueConnectorCert, loadCA, writePemFiles, type PemKeyPair } from '../tunnel/pki.js';

export const DEFAULT_SECRET_NAMESPACE = 'underpass-connector';
const DEFAULT_DAYS = '90';

export interface BundleCommandOptions {
  /** Where the --secret manifest goes; default stdout. */
  stdout?: (text: string) => void;
  /** Where the summary goes; default stderr. Never receives key material. */
  stderr?: (line: string) => void;
}

interface BundleFlags {
  connection: string;
  name: string;
  out?: string;
  secret?: boolean;
  secretNamespace?: string;
  workerUrl?: string[];
  days: string;
  kubeconfig?: string;
  operatorNamespace: string;
  force?: boolean;
}

interface BundleRequest {
  connection: ConnectionId;
  name: string;
  target: { kind: 'dir'; dir: string; force: boolean } | { kind: 'secret'; namespace: string };
  workerUrls: string[];
  days: number;
  kubeconfig: string | undefined;
  /** Where the operator keeps connection CAs (reading them is for cluster admins). */
  operatorNamespace: string;
}

interface Io {
  stdout: (text: string) => void;
  stderr: (line: string) => void;
}

export function registerBundleCommand(connector: Command, options: BundleCommandOptions = {}): Command {
  const io: Io = {
    stdout: options.stdout ?? ((text) => void process.stdout.write(text)),
    stderr: options.stderr ?? ((line) => void process.stderr.write(`${line}\n`)),
  };
  return connector.command('bundle')
    .description('issue a connector certificate from a connection\'s CA in the cluster and write a ready-to-run connector')
    .requiredOption('--connection <namespace/name>', 'the TunnelConnection, e.g. team-a/dc1')
    .requiredOption('--name <name>', 'connector name, a DNS-1123 label, e.g. site-a')
    .option('--out <dir>', 'write ca.crt, connector-NAME.crt/.key, connector.yaml and README.txt into this directory')
    .addOption(new Option('--secret', 'print a v1 Secret manifest (ca.crt, tls.crt, tls.key, connector.yaml) to stdout instead').conflicts('out'))
    .option('--secret-namespace <namespace>', `namespace of the Secret manifest (default: ${DEFAULT_SECRET_NAMESPACE})`)
    .option('--worker-url <url>', 'wss:// URL the connector dials; repeat for several (default: the connection\'s status.endpoint, '
      + 'else wss://<first spec.endpoint.hosts>:<spec.endpoint.service.port>)', collect)
    .option('--days <n>', 'validity of the connector certificate in days', DEFAULT_DAYS)
    .option('--kubeconfig <file>', 'kubeconfig to use (default: $KUBECONFIG, ~/.kube/config, or the in-cluster account)')
    .option('--operator-namespace <ns>', 'namespace of the operator, where connection CAs are kept', 'underpass-system')
    .option('--force', 'overwrite existing files in --out')
    .addHelpText('after', `
Reads, in the connection's namespace: the TunnelConnection (get) and its ApplicationMappings (list; for
the allow and bind lists written into connector.yaml, to review); in the operator's namespace: the
connection's CA Secret (get). Only cluster admins should read that Secret: it holds the CA key. Everyone
else enrolls connectors with a one-time token ("underpass connector token"). Writes nothing to the
cluster. Key material is written only to --out (key files mode 0600) or to the --secret manifest.

Examples:
  $ underpass connector bundle --connection team-a/dc1 --name site-a --out ./site-a
  $ underpass connector --config ./site-a/connector.yaml
  $ underpass connector bundle --connection team-a/dc1 --name site-b --secret | kubectl apply -f -`)
    .action(async (flags: BundleFlags) => runBundle(parseFlags(flags), io));
}

function parseFlags(flags: BundleFlags): BundleRequest {
  const connection = asConfig('--connection', () => parseConnectionId(flags.connection));
  const name = asConfig('--name', () => parseConnectorName(flags.name));
  if (!/^[1-9][0-9]{0,5}$/.test(flags.days)) {
    throw new ConfigError(`must be a whole number of days from 1 to 999999, got ${JSON.stringify(flags.days)}`, { field: '--days' });
  }
  if (flags.secretNamespace !== undefined && !flags.secret) {
    throw new ConfigError('only applies with --secret', { field: '--secret-namespace' });
  }
  let target: BundleRequest['target'];
  if (flags.secret) {
    const namespace = flags.secretNamespace ?? DEFAULT_SECRET_NAMESPACE;
    const problem = dns1123LabelProblem(namespace);
    if (problem) throw new ConfigError(`namespace ${JSON.stringify(namespace)} ${problem}`, { field: '--secret-namespace' });
    target = { kind: 'secret', namespace };
  } else if (flags.out !== undefined && flags.out !== '') {
    target = { kind: 'dir', dir: resolve(flags.out), force: flags.force ?? false };
  } else {
    throw new ConfigError('say where the bundle goes: --out DIR writes files, --secret prints a Secret manifest', { field: '--out' });
  }
  const operatorNamespace = flags.operatorNamespace ?? 'underpass-system';
  const nsProblem = dns1123LabelProblem(operatorNamespace);
  if (nsProblem) throw new ConfigError(`namespace ${JSON.stringify(operatorNamespace)} ${nsProblem}`, { field: '--operator-namespace' });
  return {
    connection, name, target, workerUrls: parseWorkerUrlFlags(flags.workerUrl ?? []), days: Number(flags.days), kubeconfig: flags.kubeconfig, operatorNamespace,
  };
}

async function runBundle(req: BundleRequest, io: Io): Promise<void> {
  if (req.target.kind === 'dir' && !req.target.force) await refuseExisting(req.target.dir, Object.values(bundleFileNames(req.name)));
  // Loaded here, not at start-up: every other command runs without the Kubernetes client.
  const { Kube, loadKubeConfig } = await import('../operator/kube.js');
  const reader = new ConnectionReader(new Kube(kubeConfig(req.kubeconfig, loadKubeConfig)), req.connection, req.operatorNamespace);
  const tc = await reader.connection();
  // Both checks come before the CA key is read: a refused bundle never touches it.
  checkConnectorAllowed(req.name, tc, req.connection);
  const workers = resolveWorkerUrls(req.workerUrls, tc, req.connection);
  const mappings = await reader.mappings(io.stderr);
  const allow = suggestAllowRules(mappings, req.connection.name);
  const bind = suggestBindRules(mappings, req.connection.name);
  const ca = await reader.ca(tc);
  const issued = await issue(req, ca.pems, ca.where);
  const common = { name: req.name, connection: req.connection, workers, allow, bind, notAfter: issued.notAfter };
  const summary = `worker ${workers.join(', ')}; ${rulesSummary('allow', allow)}; ${rulesSummary('bind', bind)}; review both before starting it`;

  if (req.target.kind === 'secret') {
    io.stdout(renderSecretManifest({ ...common, ...issued, namespace: req.target.namespace }));
    io.stderr(issued.line);
    io.stderr(`printed Secret ${req.target.namespace}/${secretName(req.name)} (keys ca.crt, tls.crt, tls.key, connector.yaml; mount it at /etc/underpass)`);
    io.stderr(summary);
    return;
  }
  const { dir, force } = req.target;
  const f = bundleFileNames(req.name);
  await writePemFiles(dir, {
    [f.ca]: issued.caPem,
    [f.cert]: issued.certPem,
    [f.key]: issued.keyPem,
    [f.config]: renderConnectorConfig({ ...common, layout: fileLayout(req.name) }),
    [f.readme]: renderReadme({ ...common, dir, identity: issued.identity, renewCommand: renewCommand(req, dir) }),
  }, { force }).catch((err: unknown) => {
    throw err instanceof FileExistsError ? existsError(err.file, err) : err;
  });
  io.stderr(issued.line);
  io.stderr(`wrote ${join(dir, f.ca)}  CA certificate of connection ${formatConnectionId(req.connection)}`);
  io.stderr(`wrote ${join(dir, f.cert)}  connector certificate`);
  io.stderr(`wrote ${join(dir, f.key)}  its private key (mode 0600)`);
  io.stderr(`wrote ${join(dir, f.config)}  ${summary}`);
  io.stderr(`wrote ${join(dir, f.readme)}  how to run it (also as a systemd service)`);
  io.stderr(`start it with: underpass connector --config ${shellQuote(join(dir, f.config))}`);
}

interface Issued {
  caPem: string;
  certPem: string;
  keyPem: string;
  identity: string;
  notAfter: Date;
  /** The summary line (no key material). */
  line: string;
}

/** Checks that the Secret holds this connection's CA and issues the connector certificate from it. */
async function issue(req: BundleRequest, caPems: PemKeyPair, caSecret: string): Promise<Issued> {
  const id = formatConnectionId(req.connection);
  const ca = await loadCA(caPems.certPem, caPems.keyPem).catch((err: unknown) => {
    throw new UnderpassError('ERR_BUNDLE_CA_INVALID', `the CA Secret ${caSecret} holds no usable CA: ${(err as Error).message}`, { cause: err });
  });
  if (formatConnectionId(ca.connection) !== id) {
    throw new UnderpassError('ERR_BUNDLE_CA_INVALID', `the CA Secret ${caSecret} holds the CA of connection ${formatConnectionId(ca.connection)}, not ${id}`);
  }
  const leaf = await issueConnectorCert(ca, { connector: req.name, validityHours: req.days * 24 }).catch((err: unknown) => {
    throw errorCode(err) === 'ERR_PKI_VALIDITY' ? new ConfigError((err as Error).message, { field: '--days' }, { cause: err }) : err;
  });
  const identity = connectorUri(req.connection, req.name);
  const notAfter = certificateInfo(leaf.certPem).notAfter;
  const line = `issued ${identity}, expires ${notAfter.toISOString()} (signed by the CA in Secret ${caSecret})`;
  return { caPem: ca.certPem, certPem: leaf.certPem, keyPem: leaf.keyPem, identity, notAfter, line };
}

/** Reads one connection's objects; turns API failures into errors that say what was being read and what RBAC it needs. */
class ConnectionReader {
  readonly #kube: Kube;
  readonly #id: ConnectionId;
  readonly #operatorNamespace: string;

  constructor(kube: Kube, id: ConnectionId, operatorNamespace: string) {
    this.#kube = kube;
    this.#id = id;
    this.#operatorNamespace = operatorNamespace;
  }

  async connection(): Promise<ConnectionView> {
    const { namespace, name } = this.#id;
    try {
      return (await this.#kube.custom.getNamespacedCustomObject({ group: GROUP, version: VERSION, namespace, plural: 'tunnelconnections', name })) as ConnectionView;
    } catch (err) {
      if (statusCode(err) === 404) {
        throw new UnderpassError('ERR_BUNDLE_NOT_FOUND',
          `no TunnelConnection ${formatConnectionId(this.#id)} (${apiErrorMessage(err)}); check --connection and that the Underpass CRDs are installed`, { cause: err });
      }
      throw this.#apiError(err, `TunnelConnection ${formatConnectionId(this.#id)}`, 'get', 'tunnelconnections.underpass.dev');
    }
  }

  /** The namespace's ApplicationMappings; only a suggestion depends on them, so a failure is a warning. */
  async mappings(warn: (line: string) => void): Promise<MappingView[]> {
    try {
      const list = (await this.#kube.custom.listNamespacedCustomObject({
        group: GROUP, version: VERSION, namespace: this.#id.namespace, plural: 'applicationmappings',
      })) as { items?: MappingView[] };
      return list.items ?? [];
    } catch (err) {
      warn(`warning: ${this.#apiError(err, `ApplicationMappings in namespace ${this.#id.namespace}`, 'list', 'applicationmappings.underpass.dev').message}; `
        + 'connector.yaml gets empty allow and bind lists (the connector dials nothing and opens no listener until you add rules)');
      return [];
    }
  }

  /** The connection's CA, from the Secret the operator keeps in its own namespace (cluster admins only). */
  async ca(tc: ConnectionView): Promise<{ pems: PemKeyPair; where: string }> {
    const namespace = this.#operatorNamespace;
    const name = caSecretName({ metadata: { namespace: this.#id.namespace, name: this.#id.name, uid: tc.metadata?.uid ?? '' } });
    let secret: k8s.V1Secret;
    try {
      secret = await this.#kube.core.readNamespacedSecret({ name, namespace });
    } catch (err) {
      if (statusCode(err) === 404) {
        throw new UnderpassError('ERR_BUNDLE_NO_CA',
          `connection ${formatConnectionId(this.#id)} has no CA Secret ${namespace}/${name}; is the operator running (in namespace ${namespace}: --operator-namespace) and the TunnelConnection created?`, { cause: err });
      }
      if (statusCode(err) === 403) {
        throw new UnderpassError('ERR_BUNDLE_FORBIDDEN',
          `not allowed to get the CA Secret ${namespace}/${name}: ${apiErrorMessage(err)}; connection CAs are kept in the operator's namespace and only `
            + `cluster admins should read them. Enroll the connector with a one-time token instead: underpass connector token --connection ${formatConnectionId(this.#id)} --name <name>`, { cause: err });
      }
      throw this.#apiError(err, `the CA Secret ${namespace}/${name}`, 'get', 'secrets');
    }
    const field = (key: string): string => {
      const value = secret.data?.[key];
      if (!value) throw new UnderpassError('ERR_BUNDLE_CA_INVALID', `the CA Secret ${namespace}/${name} has no ${key}`);
      return Buffer.from(value, 'base64').toString('utf8');
    };
    return { pems: { certPem: field('ca.crt'), keyPem: field('ca.key') }, where: `${namespace}/${name}` };
  }

  #apiError(err: unknown, what: string, verb: string, resource: string): UnderpassError {
    const { namespace } = this.#id;
    if (statusCode(err) === 403) {
      return new UnderpassError('ERR_BUNDLE_FORBIDDEN',
        `not allowed to ${verb} ${what}: ${apiErrorMessage(err)}; it needs "${verb}" on ${resource} in namespace ${namespace} `
          + `(all it reads there: get tunnelconnections.underpass.dev ${this.#id.name}, list applicationmappings.underpass.dev [optional]; `
          + `and the connection's CA Secret in namespace ${this.#operatorNamespace})`, { cause: err });
    }
    const server = this.#kube.kc.getCurrentCluster()?.server ?? 'the Kubernetes API';
    return new UnderpassError('ERR_BUNDLE_API', `cannot ${verb} ${what} from ${server}: ${apiErrorMessage(err)}`, { cause: err });
  }
}

/** Checked before the cluster is asked (writePemFiles checks again, atomically): a refused bundle costs nothing. */
async function refuseExisting(dir: string, names: string[]): Promise<void> {
  for (const name of names) {
    const file = join(dir, name);
    const found = await lstat(file).then(() => true, (err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT' || err.code === 'ENOTDIR') return false;
      throw err;
    });
    if (found) throw existsError(file);
  }
}

function existsError(file: string, cause?: unknown): ConfigError {
  return new ConfigError('already exists; pass --force to overwrite the bundle', { file }, { cause });
}

function kubeConfig(file: string | undefined, loadKubeConfig: (file?: string) => k8s.KubeConfig): k8s.KubeConfig {
  try {
    return loadKubeConfig(file);
  } catch (err) {
    // A bad --kubeconfig is a bad flag; a bad default kubeconfig is the environment's problem.
    if (file !== undefined) throw new ConfigError((err as Error).message, { field: '--kubeconfig' }, { cause: err });
    throw err;
  }
}

function rulesSummary(field: 'allow' | 'bind', rules: readonly RuleSuggestion[]): string {
  return rules.length === 0 ? `${field}: none` : `${field}: ${rules.map((r) => r.rule).join(', ')}`;
}

function renewCommand(req: BundleRequest, dir: string): string {
  const args = ['underpass', 'connector', 'bundle', '--connection', formatConnectionId(req.connection), '--name', req.name, '--out', dir];
  for (const url of req.workerUrls) args.push('--worker-url', url);
  if (req.days !== Number(DEFAULT_DAYS)) args.push('--days', String(req.days));
  if (req.kubeconfig !== undefined) args.push('--kubeconfig', resolve(req.kubeconfig));
  args.push('--force');
  return args.map(shellQuote).join(' ');
}

function shellQuote(s: string): string {
  return /^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}

/** A coded validation error becomes a ConfigError naming the flag. */
function asConfig<T>(field: string, fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    if (err instanceof UnderpassError && !(err instanceof ConfigError)) throw new ConfigError(err.message, { field }, { cause: err });
    throw err;
  }
}
