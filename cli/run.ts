/**
 * `underpass worker` and `underpass connector`: load and validate the config
 * file once (exit 2 naming file and field when invalid), run until SIGTERM or
 * SIGINT, then drain. A second signal stops at once.
 */
import net from 'node:net';
import type { Command } from 'commander';
import { X509Certificate } from 'node:crypto';
import { access, readFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { loadConnectorConfig, parseConnectorConfig, type ConnectorConfig } from '../connector/config.js';
import { enroll } from '../connector/enroll.js';
import { StateSecret } from '../connector/state-secret.js';
import { readToken } from '../tunnel/enrollment-token.js';
import { identityFromCertificate } from '../tunnel/identity.js';
import { Connector } from '../connector/connector.js';
import { AuditLog } from '../tunnel/audit.js';
import { ConfigError, errorCode } from '../tunnel/errors.js';
import { createLogger, type Logger } from '../tunnel/log.js';
import { LOG_LEVELS } from '../tunnel/config-load.js';
import { flushLineLimiters } from '../tunnel/log-limit.js';
import { loadWorkerConfig } from '../worker/config.js';
import { Worker, type WorkerOverrides } from '../worker/worker.js';
import { parseHostPort } from '../tunnel/address.js';
import { parseDuration } from '../tunnel/duration.js';

interface RunFlags {
  config?: string;
  logLevel?: string;
  listen?: string;
  admin?: string;
  instance?: string;
  bindAddress?: string;
  drainDelay?: string;
}

/**
 * The API server's ClusterIP, which the kubelet puts into every pod's environment: never a
 * Cluster-side target (the operator also writes it into clusterTargets.refuse; this holds
 * when it could not read it).
 */
function apiServerFromEnv(): string[] {
  const host = process.env['KUBERNETES_SERVICE_HOST'];
  return host && isIP(host) !== 0 ? [host] : [];
}

interface Runnable {
  stop(deadlineMs?: number): Promise<void>;
}

/** Returns the `connector` command so other subcommands (bundle) can be added to it. */
export function registerRunCommands(program: Command): { connector: Command } {
  program
    .command('worker')
    .description('run a tunnel worker: accept connectors over mutual-TLS WebSocket and serve the mappings in the config file')
    .requiredOption('--config <file>', 'worker config file (YAML); see docs/configuration.md')
    .option('--log-level <level>', `override log.level (${LOG_LEVELS.join(', ')})`)
    .option('--listen <host:port>', 'override `listen` (e.g. to run an operator-written config outside its pod)')
    .option('--admin <host:port>', 'override `admin`')
    .option('--instance <name>', 'override `instance` (default: the host name; the pod name in Kubernetes)')
    .option('--bind-address <ip>', 'Connector-side listeners on 0.0.0.0 or :: bind this address instead (several workers of one connection on one host)')
    .addHelpText('after', `
Logs are JSON lines on stderr; audit events (one per stream and per session) are JSON lines on stdout
unless audit.file is set. SIGTERM drains: new connectors and clients are refused, connectors get GoAway,
open streams get up to drainTimeout (default 30s) to finish.

Example:
  $ underpass pki init --dir ./pki --connection team-a/dc1
  $ underpass worker --config ./worker.yaml`)
    .action(async (flags: RunFlags) => {
      const overrides: WorkerOverrides = {
        ...(flags.listen ? { listen: parseHostPort(flags.listen, '--listen') } : {}),
        ...(flags.admin ? { admin: parseHostPort(flags.admin, '--admin') } : {}),
        ...(flags.instance ? { instance: flags.instance } : {}),
        ...(flags.bindAddress ? { bindAddress: bindAddress(flags.bindAddress) } : {}),
      };
      const config = { ...(await loadWorkerConfig(flags.config!)), ...overrides };
      const logger = createLogger('worker', { level: level(flags, config.log.level) });
      const audit = AuditLog.open(config.audit?.file);
      const worker = new Worker(config, { logger, audit, overrides, refuseTargets: apiServerFromEnv() });
      await worker.start();
      await untilSignal(worker, config.drainTimeoutMs, logger);
      flushLineLimiters(); // summaries of lines a peer provoked in the last interval
      await audit.close();
    });

  // `connector` has subcommands (`run`, the default, and `bundle` from cli/bundle.ts), so
  // `underpass connector --config F` and `underpass connector run --config F` are the same.
  const connectorCommand = program
    .command('connector')
    .description('run a connector (the default subcommand), or bundle a ready-to-run one from the cluster');
  connectorCommand
    .command('run', { isDefault: true })
    .description('run a connector: dial out to the workers, dial targets the mappings name and the local allow-list permits')
    .option('--config <file>', 'connector config file (YAML); see docs/configuration.md')
    .option('--token <token>', 'one-time enrollment token (underpass connector token): enroll into --state-dir if it holds no certificate yet')
    .option('--token-file <file>', 'the same, read from a file')
    .option('--worker <url>', 'wss:// URL of a worker (repeat for several); without --config', collectFlag)
    .option('--state-dir <dir>', 'where the connector keeps its key, certificate and CA (without --config; default ./underpass-state)')
    .option('--allow <rule>', 'allow rule (repeat); without --config', collectFlag)
    .option('--bind <rule>', 'bind rule (repeat); without --config', collectFlag)
    .option('--admin <host:port>', 'admin endpoint (without --config)')
    .option('--log-level <level>', `override log.level (${LOG_LEVELS.join(', ')})`)
    .option('--bind-address <ip>', 'Cluster-side listeners on 0.0.0.0 or :: bind this address instead (several connectors on one host); the bind list applies to it')
    .option('--drain-delay <duration>', 'override `drainDelay`: after SIGTERM, keep listeners open this long before draining (the connector chart sets 5s)')
    .addHelpText('after', `
The connector only dials out; it needs no inbound port. It dials only the targets its \`allow\` list permits
and listens only where its \`bind\` list permits (without them: nothing; \`allowAll: true\` opts in to any
target but loopback, link-local and metadata addresses). Mappings outside them are refused, reported to the
worker, and logged with the rule to add. It reconnects with jittered exponential backoff (capped by reconnect.maxDelay, default 30s).
"underpass connector --config F" is short for "underpass connector run --config F".

With a one-time token instead of certificate files, it makes its own key pair and enrolls through the
worker's address (the key never leaves this host), keeps everything in --state-dir (or "state:" in the
config) and renews its certificate there by itself; a restart does not enroll again.

Examples:
  $ underpass connector --token "$(cat token)" --worker wss://tunnel.example.com:443 --state-dir /var/lib/underpass --allow db.internal:5432
  $ underpass connector --config ./connector.yaml`)
    .action(async (flags: ConnectorFlags) => {
      const config = await connectorConfig(flags);
      if (flags.bindAddress) config.bindAddress = bindAddress(flags.bindAddress);
      if (flags.drainDelay !== undefined) config.drainDelayMs = parseDuration(flags.drainDelay, '--drain-delay');
      const logger = createLogger('connector', { level: level(flags, config.log.level) });
      await ensureEnrolled(config, await tokenOf(flags, config), logger);
      const audit = AuditLog.open(config.audit?.file);
      const connector = new Connector(config, { logger, audit });
      await connector.start();
      await untilSignal(connector, config.drainTimeoutMs, logger);
      flushLineLimiters(); // summaries of lines a peer provoked in the last interval
      await audit.close();
    });
  return { connector: connectorCommand };
}

function bindAddress(ip: string): string {
  if (net.isIP(ip) === 0) throw new ConfigError(`"${ip}" is not an IP address`, { field: '--bind-address' });
  return ip;
}

interface ConnectorFlags extends RunFlags {
  token?: string;
  tokenFile?: string;
  worker?: string[];
  stateDir?: string;
  allow?: string[];
  bind?: string[];
}

function collectFlag(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}

/** The config file, or one made from the flags (name from the token). */
async function connectorConfig(flags: ConnectorFlags): Promise<ConnectorConfig> {
  if (flags.config) {
    for (const f of ['worker', 'stateDir', 'allow', 'bind', 'admin'] as const) {
      if (flags[f] !== undefined) throw new ConfigError('only without --config (put it in the config file)', { field: `--${f.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}` });
    }
    return loadConnectorConfig(flags.config);
  }
  if (!flags.worker?.length) throw new ConfigError('either --config, or --worker with --token (enroll) or an enrolled --state-dir', { field: '--config' });
  const token = await tokenOf(flags, undefined);
  const raw: Record<string, unknown> = {
    worker: flags.worker,
    state: flags.stateDir ?? 'underpass-state',
    ...(flags.allow ? { allow: flags.allow } : {}),
    bind: flags.bind ?? [],
    ...(flags.admin ? { admin: flags.admin } : {}),
  };
  raw.name = token ? asFlag('--token', () => readToken(token).connector) : await nameFromState(String(raw.state));
  return parseConnectorConfig(raw, `${process.cwd()}/(flags)`);
}

async function tokenOf(flags: ConnectorFlags, config: ConnectorConfig | undefined): Promise<string | undefined> {
  if (flags.token && flags.tokenFile) throw new ConfigError('give --token or --token-file, not both', { field: '--token' });
  if (flags.token) return flags.token.trim();
  const file = flags.tokenFile ?? config?.enroll?.tokenFile;
  if (file) {
    try {
      return (await readFile(file, 'utf8')).trim();
    } catch (err) {
      throw new ConfigError(`cannot read ${file}: ${(err as Error).message}`, { field: flags.tokenFile ? '--token-file' : 'enroll.tokenFile' });
    }
  }
  return config?.enroll?.token;
}

/** The connector name in an enrolled state directory (its certificate), for a restart without the token. */
async function nameFromState(dir: string): Promise<string> {
  try {
    const id = identityFromCertificate(new X509Certificate(await readFile(`${dir}/tls.crt`)), { role: 'connector' });
    return id.name ?? '';
  } catch (err) {
    throw new ConfigError(`${dir} holds no enrolled certificate (${(err as Error).message}); pass --token to enroll`, { field: '--state-dir' });
  }
}

/** With a state directory: enroll first if it holds no certificate (a restart with one does not enroll again). */
async function ensureEnrolled(config: ConnectorConfig, token: string | undefined, logger: Logger): Promise<void> {
  if (!config.state) return;
  const secret = config.stateSecret ? new StateSecret({ ...config.stateSecret, files: config.tls, log: logger }) : undefined;
  if (secret && await secret.restore()) return;
  const enrolled = await access(config.tls.cert).then(() => true, () => false);
  if (enrolled) return;
  if (!token) throw new ConfigError(`${config.state} holds no certificate yet and no enrollment token was given (--token, --token-file or enroll: in the config)`, { field: 'state' });
  try {
    await enroll({ token, workers: config.workers, files: config.tls, name: config.name, log: logger, retry: config.reconnect });
  } catch (err) {
    // Another replica of the same connector enrolled with this token first: take what it saved.
    if (!secret || !/^TOKEN_(USED|UNKNOWN)$/.test(errorCode(err) ?? '')) throw err;
    logger.info(`the token was used already (another replica?); waiting for ${secret.where} to hold the certificate`);
    for (let waited = 0; waited < 60_000; waited += 2_000) {
      if (await secret.restore()) return;
      await new Promise((r) => setTimeout(r, 2_000));
    }
    throw err;
  }
  await secret?.save();
}

function asFlag<T>(field: string, fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    throw new ConfigError((err as Error).message, { field }, { cause: err });
  }
}

function level(flags: RunFlags, fromConfig: string): string {
  if (flags.logLevel === undefined) return fromConfig;
  if (!(LOG_LEVELS as readonly string[]).includes(flags.logLevel)) {
    throw new ConfigError(`must be one of ${LOG_LEVELS.join(', ')}`, { field: '--log-level' });
  }
  return flags.logLevel;
}

function untilSignal(target: Runnable, drainMs: number, logger: Logger): Promise<void> {
  return new Promise((resolve) => {
    let signals = 0;
    const onSignal = (signal: NodeJS.Signals): void => {
      signals++;
      if (signals === 1) {
        logger.info({ signal }, `received ${signal}: draining for up to ${drainMs} ms (send it again to stop at once)`);
        void target.stop(drainMs).then(done);
      } else {
        logger.warn({ signal }, `received ${signal} again: stopping now`);
        void target.stop(0).then(done);
        done();
      }
    };
    const done = (): void => {
      process.off('SIGTERM', onSignal);
      process.off('SIGINT', onSignal);
      resolve();
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  });
}
