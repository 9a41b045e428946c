/**
 * `underpass connector install`: a connector as a hardened systemd service on
 * a VM or bare host (connector/systemd-unit.ts renders it). Writes the unit,
 * the config and the token file, creates the service user when missing, and
 * prints the systemctl commands; it starts nothing itself. With --root, writes
 * under that directory instead of / (packaging, tests).
 */
import { execFile } from 'node:child_process';
import { chown, mkdir, realpath, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { Command } from 'commander';
import { parseWorkerUrl } from '../connector/config.js';
import { installPaths, renderInstalledConfig, renderUnit, unitName, type InstallPlan } from '../connector/systemd-unit.js';
import { readToken } from '../tunnel/enrollment-token.js';
import { ConfigError, errorMessage } from '../tunnel/errors.js';
import { parseBindRule } from '../tunnel/bind-policy.js';
import { parseAllowRule } from '../tunnel/policy.js';
import { parseConnectorName } from '../tunnel/identity.js';

const run = promisify(execFile);

interface InstallFlags {
  tokenFile: string;
  worker: string[];
  allow?: string[];
  bind?: string[];
  name?: string;
  user: string;
  admin: string;
  exec?: string;
  root?: string;
  createUser: boolean;
}

const collect = (v: string, prev: string[] | undefined): string[] => [...(prev ?? []), v];

export function registerInstallCommand(connector: Command, stderr: (line: string) => void = (l) => void process.stderr.write(`${l}\n`)): Command {
  return connector.command('install')
    .description('install a connector as a hardened systemd service (own user, state in StateDirectory, enrolls with a token, renews by itself)')
    .requiredOption('--token-file <file>', 'one-time enrollment token (underpass connector token); copied next to the config, used once')
    .requiredOption('--worker <url>', 'wss:// URL of a worker (repeat for several)', collect)
    .option('--allow <rule>', 'allow rule (repeat); none: the connector dials nothing', collect)
    .option('--bind <rule>', 'bind rule (repeat); none: it opens no listener', collect)
    .option('--name <name>', 'connector name (default: the one the token enrolls)')
    .option('--user <user>', 'the service user', 'underpass')
    .option('--admin <host:port>', 'admin endpoint (health, metrics)', '127.0.0.1:9091')
    .option('--exec <path>', 'the underpass executable the unit runs (default: this one)')
    .option('--root <dir>', 'write under this directory instead of / (packaging, tests)')
    .option('--no-create-user', 'do not create the service user (it must exist)')
    .addHelpText('after', `
Writes /etc/systemd/system/underpass-connector-<name>.service, /etc/underpass/<name>/connector.yaml and
/etc/underpass/<name>/token; the connector keeps its key and certificate in /var/lib/underpass/<name>
(StateDirectory). Then:
  systemctl daemon-reload && systemctl enable --now underpass-connector-<name>`)
    .action(async (flags: InstallFlags) => {
      const plan = await planOf(flags);
      const root = flags.root ? path.resolve(flags.root) : '/';
      const paths = installPaths(plan.name);
      const at = (p: string): string => path.join(root, p);
      const token = await readTokenFile(flags.tokenFile);
      if (flags.createUser && !flags.root) await ensureUser(plan.user, stderr);
      await mkdir(path.dirname(at(paths.unit)), { recursive: true });
      await mkdir(at(paths.configDir), { recursive: true, mode: 0o755 });
      await writeFile(at(paths.unit), renderUnit(plan), { mode: 0o644 });
      await writeFile(at(paths.config), renderInstalledConfig(plan), { mode: 0o644 });
      await writeFile(at(paths.token), `${token}\n`, { mode: 0o640 });
      if (!flags.root) await chownToGroup(at(paths.token), plan.user, stderr);
      stderr(`wrote ${at(paths.unit)}`);
      stderr(`wrote ${at(paths.config)} (review allow and bind)`);
      stderr(`wrote ${at(paths.token)} (mode 0640, group ${plan.user}; used once at the first start)`);
      stderr(`start it: systemctl daemon-reload && systemctl enable --now ${unitName(plan.name)}`);
    });
}

async function planOf(flags: InstallFlags): Promise<InstallPlan> {
  const token = await readTokenFile(flags.tokenFile);
  let claims;
  try {
    claims = readToken(token);
  } catch (err) {
    throw new ConfigError(errorMessage(err), { field: '--token-file' }, { cause: err });
  }
  const name = flags.name ?? claims.connector;
  try {
    parseConnectorName(name);
  } catch (err) {
    throw new ConfigError(errorMessage(err), { field: '--name' });
  }
  if (name !== claims.connector) throw new ConfigError(`the token enrolls connector "${claims.connector}", not "${name}"`, { field: '--name' });
  if (!/^[a-z_][a-z0-9_-]{0,31}$/.test(flags.user)) throw new ConfigError('must be a user name such as underpass', { field: '--user' });
  const check = (field: string, values: string[] | undefined, parse: (s: string) => unknown): string[] => (values ?? []).map((v) => {
    try {
      parse(v);
      return v;
    } catch (err) {
      throw new ConfigError(`${JSON.stringify(v)}: ${errorMessage(err)}`, { field });
    }
  });
  const workers = check('--worker', flags.worker, parseWorkerUrl);
  const exec = flags.exec ?? await realpath(process.argv[1] ?? 'underpass').catch(() => 'underpass');
  return { name, exec, user: flags.user, workers, allow: check('--allow', flags.allow, parseAllowRule), bind: check('--bind', flags.bind, parseBindRule), admin: flags.admin };
}

async function readTokenFile(file: string): Promise<string> {
  const { readFile } = await import('node:fs/promises');
  try {
    return (await readFile(file, 'utf8')).trim();
  } catch (err) {
    throw new ConfigError(`cannot read ${file}: ${errorMessage(err)}`, { field: '--token-file' });
  }
}

async function ensureUser(user: string, stderr: (l: string) => void): Promise<void> {
  try {
    await run('id', ['-u', user]);
    return;
  } catch {
    // not there yet
  }
  await run('useradd', ['--system', '--no-create-home', '--home-dir', '/nonexistent', '--shell', '/usr/sbin/nologin', user]);
  stderr(`created system user ${user} (no home, no login shell)`);
}

async function chownToGroup(file: string, user: string, stderr: (l: string) => void): Promise<void> {
  try {
    const gid = Number((await run('id', ['-g', user])).stdout.trim());
    await chown(file, 0, gid);
  } catch (err) {
    stderr(`warning: cannot give ${file} to group ${user} (${errorMessage(err)}); the service may not read the token`);
  }
}
