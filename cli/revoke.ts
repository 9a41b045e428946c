/**
 * `underpass connector revoke`: cut a connector off in seconds (docs/connector-lifecycle.md).
 * Sets spec.revoked on its TunnelConnector `<connection>.<name>` (creating one
 * for a connector that has none, e.g. one made by `connector bundle`); the
 * operator then refuses every certificate it issued to it by serial, and
 * every worker closes its sessions at its next report (about 2 s).
 */
import { Command } from 'commander';
import * as k8s from '@kubernetes/client-node';
import { apiErrorMessage, GROUP, statusCode, VERSION } from '../operator/api.js';
import { recordName } from '../operator/connector-records.js';
import { ConfigError, errorMessage, UnderpassError } from '../tunnel/errors.js';
import { formatConnectionId, parseConnectionId, parseConnectorName } from '../tunnel/identity.js';

interface RevokeFlags {
  connection: string;
  name: string;
  kubeconfig?: string;
}

export function registerRevokeCommand(connector: Command, stderr: (line: string) => void = (l) => void process.stderr.write(`${l}\n`)): Command {
  return connector.command('revoke')
    .description('revoke a connector: its sessions are cut on every worker within seconds and its certificates refused by serial')
    .requiredOption('--connection <namespace/name>', 'the TunnelConnection, e.g. team-a/dc1')
    .requiredOption('--name <name>', 'connector name')
    .option('--kubeconfig <file>', 'kubeconfig to use (default: $KUBECONFIG, ~/.kube/config, or the in-cluster account)')
    .addHelpText('after', `
Sets spec.revoked: true on the TunnelConnector <connection>.<name> (creates it when there is none).
To let the name enroll again later: kubectl delete tunnelconnector <connection>.<name> (its
certificates stay refused until they expire), then underpass connector token.`)
    .action(async (flags: RevokeFlags) => {
      let connection;
      let name;
      try {
        connection = parseConnectionId(flags.connection);
      } catch (err) {
        throw new ConfigError(errorMessage(err), { field: '--connection' }, { cause: err });
      }
      try {
        name = parseConnectorName(flags.name);
      } catch (err) {
        throw new ConfigError(errorMessage(err), { field: '--name' }, { cause: err });
      }
      const { Kube, loadKubeConfig } = await import('../operator/kube.js');
      const kube = new Kube(loadKubeConfig(flags.kubeconfig));
      const record = recordName(connection.name, name);
      const target = { group: GROUP, version: VERSION, namespace: connection.namespace, plural: 'tunnelconnectors', name: record };
      try {
        await kube.custom.patchNamespacedCustomObject({ ...target, body: { spec: { revoked: true } } }, k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch));
      } catch (err) {
        if (statusCode(err) !== 404) throw new UnderpassError('ERR_REVOKE', `cannot patch TunnelConnector ${connection.namespace}/${record}: ${apiErrorMessage(err)}`, { cause: err });
        try {
          await kube.custom.createNamespacedCustomObject({
            group: GROUP, version: VERSION, namespace: connection.namespace, plural: 'tunnelconnectors',
            body: { apiVersion: `${GROUP}/${VERSION}`, kind: 'TunnelConnector', metadata: { name: record, namespace: connection.namespace }, spec: { connection: connection.name, connector: name, revoked: true } },
          });
        } catch (err2) {
          throw new UnderpassError('ERR_REVOKE', `cannot create TunnelConnector ${connection.namespace}/${record}: ${apiErrorMessage(err2)}`, { cause: err2 });
        }
      }
      stderr(`revoked connector ${name} of ${formatConnectionId(connection)} (TunnelConnector ${connection.namespace}/${record}, spec.revoked: true); workers cut its sessions within seconds`);
    });
}
