import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Command } from 'commander';
import { ConfigError, errorCode, UnderpassError } from '../tunnel/errors.js';
import { formatConnectionId, parseConnectionId, parseConnectorName } from '../tunnel/identity.js';
import {
  certificateInfo, classifySan, createCA, FileExistsError, issueConnectorCert, issueWorkerCert, loadCA, writePemFiles,
} from '../tunnel/pki.js';

/**
 * `underpass pki init` and `underpass pki connector`: file-based PKI for one
 * connection (the operator does the same with Secrets). Flags are validated
 * here into typed values; every bad flag or file becomes a ConfigError that
 * names it (exit code 2 from main).
 */

export interface PkiCommandOptions {
  /** Where progress lines go; default stdout. Key material is never written here. */
  out?: (line: string) => void;
}

const DEFAULT_WORKER_SANS = ['localhost', '127.0.0.1'];

interface InitFlags {
  dir: string;
  connection: string;
  workerSan?: string[];
  days: string;
  caDays: string;
  force?: boolean;
}

interface ConnectorFlags {
  dir: string;
  name: string;
  days: string;
  force?: boolean;
}

export function registerPkiCommands(program: Command, options: PkiCommandOptions = {}): Command {
  const out = options.out ?? ((line: string) => void process.stdout.write(`${line}\n`));
  const pki = program.command('pki').description('create the certificates of one connection: its CA, a worker certificate, connector certificates');

  pki.command('init')
    .description('create a connection CA and a worker certificate signed by it')
    .requiredOption('--dir <dir>', 'directory to write ca.crt, ca.key, worker.crt and worker.key into (created if missing)')
    .requiredOption('--connection <namespace/name>', 'the connection these certificates belong to, e.g. team-a/dc1')
    .option('--worker-san <name>', 'DNS name or IP address connectors use to reach the worker; repeat for several (default: localhost and 127.0.0.1)', collect)
    .option('--days <n>', 'validity of the worker certificate in days', '30')
    .option('--ca-days <n>', 'validity of the CA certificate in days', '3650')
    .option('--force', 'overwrite existing files (a new CA invalidates every certificate the old one issued)')
    .addHelpText('after', `
Files (keys are written with mode 0600, certificates 0644):
  DIR/ca.crt, DIR/ca.key          the connection CA; keep ca.key offline or in a Secret
  DIR/worker.crt, DIR/worker.key  the worker's serving certificate

Example:
  $ underpass pki init --dir ./pki --connection team-a/dc1 \\
      --worker-san dc1.tunnel.example.com --worker-san 203.0.113.7`)
    .action(async (flags: InitFlags) => runInit(flags, out));

  pki.command('connector')
    .description('issue a connector certificate signed by the CA in --dir')
    .requiredOption('--dir <dir>', 'directory holding ca.crt and ca.key (from "pki init"); the new files go there too')
    .requiredOption('--name <name>', 'connector name, a DNS-1123 label, e.g. site-a')
    .option('--days <n>', 'validity of the connector certificate in days', '30')
    .option('--force', 'overwrite an existing certificate and key for this connector')
    .addHelpText('after', `
Writes DIR/connector-NAME.crt and DIR/connector-NAME.key (mode 0600). The
connection comes from DIR/ca.crt; the certificate is valid for that connection only.

Example:
  $ underpass pki connector --dir ./pki --name site-a`)
    .action(async (flags: ConnectorFlags) => runConnector(flags, out));

  return pki;
}

async function runInit(flags: InitFlags, out: (line: string) => void): Promise<void> {
  const connection = asConfig({ field: '--connection' }, () => parseConnectionId(flags.connection));
  const sans = flags.workerSan ?? DEFAULT_WORKER_SANS;
  asConfig({ field: '--worker-san' }, () => sans.forEach(classifySan));
  const days = parseDays(flags.days, '--days');
  const caDays = parseDays(flags.caDays, '--ca-days');

  const caPems = await createCA({ connection, validityDays: caDays });
  const ca = await loadCA(caPems.certPem, caPems.keyPem);
  const worker = await asConfigAsync({ field: '--days' }, () => issueWorkerCert(ca, { sans, validityHours: days * 24 }));
  const [caCrt, caKey, workerCrt, workerKey] = await write(flags.dir, {
    'ca.crt': caPems.certPem,
    'ca.key': caPems.keyPem,
    'worker.crt': worker.certPem,
    'worker.key': worker.keyPem,
  }, flags.force);

  const id = formatConnectionId(connection);
  out(`wrote ${caCrt}  CA certificate of connection ${id}, ${expiry(caPems.certPem)}`);
  out(`wrote ${caKey}  CA private key (mode 0600): it can mint connector certificates, keep it secret`);
  out(`wrote ${workerCrt}  worker certificate for ${sans.join(', ')}, ${expiry(worker.certPem)}`);
  out(`wrote ${workerKey}  worker private key (mode 0600)`);
}

async function runConnector(flags: ConnectorFlags, out: (line: string) => void): Promise<void> {
  const name = asConfig({ field: '--name' }, () => parseConnectorName(flags.name));
  const days = parseDays(flags.days, '--days');
  const certFile = join(flags.dir, 'ca.crt');
  const keyFile = join(flags.dir, 'ca.key');
  const certPem = await readCaFile(certFile, flags.dir);
  const keyPem = await readCaFile(keyFile, flags.dir);
  const ca = await loadCA(certPem, keyPem).catch((err: unknown) => {
    // Key problems (unreadable, wrong type, not the CA's key) are about ca.key; the rest about ca.crt.
    const file = errorCode(err)?.startsWith('ERR_PKI_KEY') ? keyFile : certFile;
    throw toConfigError(err, { file });
  });
  const issued = await asConfigAsync({ field: '--days' }, () => issueConnectorCert(ca, { connector: name, validityHours: days * 24 }));
  const [crt, key] = await write(flags.dir, {
    [`connector-${name}.crt`]: issued.certPem,
    [`connector-${name}.key`]: issued.keyPem,
  }, flags.force);

  out(`wrote ${crt}  connector certificate ${name} of connection ${formatConnectionId(ca.connection)}, ${expiry(issued.certPem)}`);
  out(`wrote ${key}  connector private key (mode 0600)`);
}

async function readCaFile(file: string, dir: string): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const problem = code === 'ENOENT'
      ? `not found; create the CA first with "underpass pki init --dir ${dir} --connection <namespace>/<name>"`
      : `cannot be read (${code ?? String(err)})`;
    throw new ConfigError(problem, { file }, { cause: err });
  }
}

async function write(dir: string, files: Record<string, string>, force = false): Promise<string[]> {
  try {
    return await writePemFiles(dir, files, { force });
  } catch (err) {
    if (err instanceof FileExistsError) {
      throw new ConfigError('already exists; pass --force to overwrite it', { file: err.file }, { cause: err });
    }
    throw err;
  }
}

function parseDays(value: string, flag: string): number {
  if (!/^[1-9][0-9]{0,5}$/.test(value)) {
    throw new ConfigError(`must be a whole number of days from 1 to 999999, got ${JSON.stringify(value)}`, { field: flag });
  }
  return Number(value);
}

function expiry(certPem: string): string {
  return `expires ${certificateInfo(certPem).notAfter.toISOString()}`;
}

function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}

/** Turns a coded validation error into a ConfigError naming the flag or file; other errors pass through. */
function asConfig<T>(where: { field?: string; file?: string }, fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    throw toConfigError(err, where);
  }
}

async function asConfigAsync<T>(where: { field?: string; file?: string }, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw toConfigError(err, where);
  }
}

function toConfigError(err: unknown, where: { field?: string; file?: string }): unknown {
  if (err instanceof UnderpassError && !(err instanceof ConfigError)) {
    return new ConfigError(err.message, where, { cause: err });
  }
  return err;
}
