/** Names and labels of everything the operator creates for one TunnelConnection. */
export const FINALIZER = 'underpass.dev/cleanup';
export const HASH_ANNOTATION = 'underpass.dev/desired-hash';
export const MANAGED_BY = 'underpass-operator';

export const TUNNEL_PORT = 8443;
export const ADMIN_PORT = 9090;
/** Ports a Connector-side mapping may not take on the worker. */
export const RESERVED_WORKER_PORTS = [TUNNEL_PORT, ADMIN_PORT];

export function namesFor(tc: string) {
  return {
    caSecret: `${tc}-ca`,
    workerTlsSecret: `${tc}-worker-tls`,
    configMap: `${tc}-worker`,
    serviceAccount: `${tc}-worker`,
    deployment: `${tc}-worker`,
    tunnelService: `${tc}-tunnel`,
    appsService: `${tc}-apps`,
    networkPolicy: `${tc}-worker`,
    podDisruptionBudget: `${tc}-worker`,
    route: `${tc}-tunnel`,
  };
}

export type OwnedNames = ReturnType<typeof namesFor>;

/** Longest TunnelConnection name whose derived names stay valid DNS labels (63 - "-worker-tls"). */
export const MAX_CONNECTION_NAME = 52;

export function selectorLabels(tc: string): Record<string, string> {
  return { 'app.kubernetes.io/name': 'underpass-worker', 'app.kubernetes.io/instance': tc };
}

export function ownedLabels(tc: string): Record<string, string> {
  return { ...selectorLabels(tc), 'app.kubernetes.io/managed-by': MANAGED_BY, 'underpass.dev/connection': tc };
}
