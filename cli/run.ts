/**
 * `underpass worker` and `underpass connector`: load and validate the config
 * file once (exit 2 naming file and field when invalid), run until SIGTERM or
 * SIGINT, then drain. A second signal stops at once.
 */
import type { Command } from 'commander';
import { isIP } from 'node:net';
import { loadConnectorConfig } from '../connector/config.js';
import { Connector } from '../connector/connector.js';
import { AuditLog } from '../tunnel/audit.js';
import { ConfigError } from '../tunnel/errors.js';
import { createLogger, type Logger } from '../tunnel/log.js';
import { LOG_LEVELS } from '../tunnel/config-load.js';
import { loadWorkerConfig } from '../worker/config.js';
import { Worker, type WorkerOverrides } from '../worker/worker.js';
import { parseHostPort } from '../tunnel/address.js';

interface RunFlags {
  config: string;
  logLevel?: string;
  listen?: string;
  admin?: string;
  instance?: string;
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
      };
      const config = { ...(await loadWorkerConfig(flags.config)), ...overrides };
      const logger = createLogger('worker', { level: level(flags, config.log.level) });
      const audit = AuditLog.open(config.audit?.file);
      const worker = new Worker(config, { logger, audit, overrides, refuseTargets: apiServerFromEnv() });
      await worker.start();
      await untilSignal(worker, config.drainTimeoutMs, logger);
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
    .requiredOption('--config <file>', 'connector config file (YAML); see docs/configuration.md')
    .option('--log-level <level>', `override log.level (${LOG_LEVELS.join(', ')})`)
    .addHelpText('after', `
The connector only dials out; it needs no inbound port. It dials only the targets its \`allow\` list permits
and listens only where its \`bind\` list permits (without them: nothing; \`allowAll: true\` opts in to any
target but loopback, link-local and metadata addresses). Mappings outside them are refused, reported to the
worker, and logged with the rule to add. It reconnects with jittered exponential backoff (capped by reconnect.maxDelay, default 30s).
"underpass connector --config F" is short for "underpass connector run --config F".

Example:
  $ underpass pki connector --dir ./pki --name dc1-a
  $ underpass connector --config ./connector.yaml`)
    .action(async (flags: RunFlags) => {
      const config = await loadConnectorConfig(flags.config);
      const logger = createLogger('connector', { level: level(flags, config.log.level) });
      const audit = AuditLog.open(config.audit?.file);
      const connector = new Connector(config, { logger, audit });
      await connector.start();
      await untilSignal(connector, config.drainTimeoutMs, logger);
      await audit.close();
    });
  return { connector: connectorCommand };
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
