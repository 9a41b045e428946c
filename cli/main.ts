import { Command, CommanderError } from 'commander';
import { ConfigError, errorMessage } from '../tunnel/errors.js';
import { VERSION as PACKAGE_VERSION } from '../tunnel/version.js';
import { registerBundleCommand } from './bundle.js';
import { registerTokenCommand } from './token.js';
import { registerRevokeCommand } from './revoke.js';
import { registerInstallCommand } from './install.js';
import { registerDemoCommand } from './demo.js';
import { registerOperatorCommand } from './operator.js';
import { registerPkiCommands } from './pki.js';
import { registerProbeCommand } from './probe.js';
import { registerRunCommands } from './run.js';

/** Exit codes: 0 ok, 1 runtime failure, 2 invalid configuration or usage. */
export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;

export function buildProgram(): Command {
  const program = new Command('underpass')
    .description('Kubernetes-native secure tunnel: connectors dial out over mutual-TLS WebSocket; applications flow as multiplexed streams.')
    .version(PACKAGE_VERSION, '-V, --version', 'print the version (package.json\'s, also the image tag) and exit')
    .showHelpAfterError()
    .exitOverride();
  registerPkiCommands(program);
  const { connector } = registerRunCommands(program);
  registerBundleCommand(connector);
  registerTokenCommand(connector);
  registerRevokeCommand(connector);
  registerInstallCommand(connector);
  registerOperatorCommand(program);
  registerDemoCommand(program);
  registerProbeCommand(program);
  return program;
}

export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
    return typeof process.exitCode === 'number' ? process.exitCode : EXIT_OK;
  } catch (err) {
    if (err instanceof CommanderError) {
      return err.exitCode === 0 ? EXIT_OK : EXIT_USAGE;
    }
    if (err instanceof ConfigError) {
      process.stderr.write(`underpass: invalid configuration: ${err.message}\n`);
      return EXIT_USAGE;
    }
    process.stderr.write(`underpass: ${errorMessage(err)}\n`);
    return EXIT_FAILURE;
  }
}
