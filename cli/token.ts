/**
 * `underpass connector token`: a one-time enrollment token for one connector
 * of one connection, the Kubernetes way: the command creates (or updates) the
 * TunnelConnector `<connection>.<name>` with a new spec.enrollment.requestId,
 * the operator answers by writing a signed token into the Secret named in
 * status.enrollment.tokenSecret, and the command prints it. So who may issue
 * tokens is plain RBAC (create/patch tunnelconnectors, get that Secret), and
 * the CA key is never read. The token goes to stdout only; stderr gets what it
 * is for and until when.
 */
import { randomUUID } from 'node:crypto';
import { Command } from 'commander';
import * as k8s from '@kubernetes/client-node';
import { apiErrorMessage, GROUP, statusCode, VERSION } from '../operator/api.js';
import type { Kube } from '../operator/kube.js';
import { recordName } from '../operator/connector-records.js';
import type { TunnelConnector } from '../operator/types.js';
import { admissionFromList, admissionRefusal } from '../tunnel/admission.js';
import { parseDuration } from '../tunnel/duration.js';
import { ConfigError, errorMessage, UnderpassError } from '../tunnel/errors.js';
import { formatConnectionId, parseConnectionId, parseConnectorName, type ConnectionId } from '../tunnel/identity.js';

interface TokenFlags {
  connection: string;
  name: string;
  ttl: string;
  kubeconfig?: string;
  wait: string;
}

export interface TokenCommandOptions {
  stdout?: (text: string) => void;
  stderr?: (line: string) => void;
}

export function registerTokenCommand(connector: Command, options: TokenCommandOptions = {}): Command {
  const out = options.stdout ?? ((t) => void process.stdout.write(t));
  const err = options.stderr ?? ((l) => void process.stderr.write(`${l}\n`));
  return connector.command('token')
    .description('issue a one-time enrollment token for a connector (through a TunnelConnector the operator answers)')
    .requiredOption('--connection <namespace/name>', 'the TunnelConnection, e.g. team-a/dc1')
    .requiredOption('--name <name>', 'connector name, a DNS-1123 label, e.g. site-a')
    .option('--ttl <duration>', 'how long the token can be used (1m to 24h)', '1h')
    .option('--wait <duration>', 'how long to wait for the operator', '30s')
    .option('--kubeconfig <file>', 'kubeconfig to use (default: $KUBECONFIG, ~/.kube/config, or the in-cluster account)')
    .addHelpText('after', `
Creates or updates the TunnelConnector <connection>.<name> in the connection's namespace and prints the
token the operator writes into its Secret <connection>.<name>-token. The token enrolls that one connector
once, before it expires; a new token replaces the previous one. Needs, in that namespace: get
tunnelconnections (the connection), create/get/patch tunnelconnectors, get that Secret.

Example:
  $ underpass connector token --connection team-a/dc1 --name site-a > site-a.token
  $ underpass connector --token-file site-a.token --worker wss://tunnel.example.com:443 --state-dir /var/lib/underpass --allow db.internal:5432`)
    .action(async (flags: TokenFlags) => {
      const connection = asFlag('--connection', () => parseConnectionId(flags.connection));
      const name = asFlag('--name', () => parseConnectorName(flags.name));
      const ttlMs = asFlag('--ttl', () => parseDuration(flags.ttl, '--ttl'));
      if (ttlMs < 60_000 || ttlMs > 24 * 3_600_000) throw new ConfigError('must be between 1m and 24h', { field: '--ttl' });
      const waitMs = asFlag('--wait', () => parseDuration(flags.wait, '--wait'));
      const { Kube, loadKubeConfig } = await import('../operator/kube.js');
      let kc: k8s.KubeConfig;
      try {
        kc = loadKubeConfig(flags.kubeconfig);
      } catch (e) {
        if (flags.kubeconfig !== undefined) throw new ConfigError(errorMessage(e), { field: '--kubeconfig' }, { cause: e });
        throw e;
      }
      const issued = await issue(new Kube(kc), connection, name, flags.ttl, waitMs);
      out(`${issued.token}\n`);
      err(`token for connector ${name} of ${formatConnectionId(connection)} (id ${issued.tokenId}), valid until ${issued.expiresAt}; it enrolls once:`);
      err(`  underpass connector --token-file <file> --worker <wss://…> --state-dir <dir> --allow <rule>…`);
    });
}

async function issue(kube: Kube, c: ConnectionId, name: string, ttl: string, waitMs: number): Promise<{ token: string; tokenId: string; expiresAt: string }> {
  const where = formatConnectionId(c);
  let tc: { spec?: { connectors?: string[] } };
  try {
    tc = await kube.custom.getNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: c.namespace, plural: 'tunnelconnections', name: c.name }) as typeof tc;
  } catch (e) {
    if (statusCode(e) === 404) throw new UnderpassError('ERR_TOKEN_NO_CONNECTION', `no TunnelConnection ${where} (${apiErrorMessage(e)}); check --connection`, { cause: e });
    throw apiError(e, `get TunnelConnection ${where}`);
  }
  const refused = admissionRefusal(admissionFromList(tc.spec?.connectors), { connector: name, certificateSerial: '' });
  if (refused) throw new ConfigError(`connector "${name}" is not in spec.connectors of TunnelConnection ${where}; add it there first`, { field: '--name' });

  const requestId = randomUUID();
  const record = recordName(c.name, name);
  const enrollment = { requestId, ttl };
  try {
    await kube.custom.createNamespacedCustomObject({
      group: GROUP, version: VERSION, namespace: c.namespace, plural: 'tunnelconnectors',
      body: { apiVersion: `${GROUP}/${VERSION}`, kind: 'TunnelConnector', metadata: { name: record, namespace: c.namespace }, spec: { connection: c.name, connector: name, enrollment } },
    });
  } catch (e) {
    if (statusCode(e) !== 409) throw apiError(e, `create TunnelConnector ${c.namespace}/${record}`);
    try {
      await kube.custom.patchNamespacedCustomObject(
        { group: GROUP, version: VERSION, namespace: c.namespace, plural: 'tunnelconnectors', name: record, body: { spec: { enrollment } } },
        k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch),
      );
    } catch (e2) {
      throw apiError(e2, `patch TunnelConnector ${c.namespace}/${record}`);
    }
  }
  const deadline = Date.now() + waitMs;
  for (;;) {
    const tcn = await kube.custom.getNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: c.namespace, plural: 'tunnelconnectors', name: record })
      .catch((e: unknown) => { throw apiError(e, `get TunnelConnector ${c.namespace}/${record}`); }) as TunnelConnector;
    const e = tcn.status?.enrollment;
    if (e?.requestId === requestId && e.refused) throw new UnderpassError('ERR_TOKEN_REFUSED', `the operator issued no token for ${c.namespace}/${record}: ${e.refused}`);
    if (e?.requestId === requestId && e.tokenSecret && e.tokenId && e.expiresAt) {
      let secret: k8s.V1Secret;
      try {
        secret = await kube.core.readNamespacedSecret({ name: e.tokenSecret, namespace: c.namespace });
      } catch (err2) {
        throw apiError(err2, `get Secret ${c.namespace}/${e.tokenSecret}`);
      }
      const token = secret.data?.['token'] ? Buffer.from(secret.data['token'], 'base64').toString() : '';
      if (!token) throw new UnderpassError('ERR_TOKEN', `Secret ${c.namespace}/${e.tokenSecret} holds no token`);
      return { token, tokenId: e.tokenId, expiresAt: e.expiresAt };
    }
    if (Date.now() > deadline) {
      throw new UnderpassError('ERR_TOKEN_TIMEOUT', `the operator did not answer TunnelConnector ${c.namespace}/${record} within ${waitMs} ms; is it running and does it watch namespace ${c.namespace}?`);
    }
    await new Promise((r) => setTimeout(r, 300));
  }
}

function apiError(e: unknown, what: string): UnderpassError {
  if (statusCode(e) === 403) {
    return new UnderpassError('ERR_TOKEN_FORBIDDEN', `not allowed to ${what}: ${apiErrorMessage(e)}; issuing tokens needs get tunnelconnections, create/get/patch tunnelconnectors and get secrets <connection>.<name>-token in the connection's namespace`, { cause: e });
  }
  return new UnderpassError('ERR_TOKEN_API', `cannot ${what}: ${apiErrorMessage(e)}`, { cause: e });
}

function asFlag<T>(field: string, fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    if (e instanceof ConfigError) throw e;
    throw new ConfigError(errorMessage(e), { field }, { cause: e });
  }
}
