/**
 * Every permission the operator uses, and a start-up check that asks the API
 * server (SelfSubjectAccessReview) whether it has them: RBAC that lacks one is
 * reported at once with the missing verbs, instead of as a reconcile failure
 * when a TunnelConnection first needs it. The list mirrors the chart's
 * ClusterRole and Role (test/charts/rbac.test.ts checks they agree, and the
 * golden files pin both).
 */
import type * as k8s from '@kubernetes/client-node';
import type { Kube } from './kube.js';
import { API_SERVER_NAME, API_SERVER_NAMESPACE } from './api-server.js';
import { sliceName } from './leader-endpoint.js';
import { problemOf, forbidden, type Problem, type Request } from './problems.js';

export interface Permission {
  group: string;
  resources: readonly string[];
  verbs: readonly string[];
  /**
   * 'watched': where TunnelConnections are watched (all namespaces or --namespace); 'own': the
   * operator's namespace; 'apiServer': `default`, where the API server's Service and EndpointSlice are.
   */
  scope: 'watched' | 'own' | 'apiServer';
  /** Only checked where the OpenShift Route API exists. */
  routesOnly?: boolean;
  /** Only checked when the leader publishes the report endpoint (--report-service). */
  reportServiceOnly?: boolean;
  /** Granted for one object only: the report Service, its EndpointSlice, or the API server's Service and EndpointSlice. */
  resourceName?: 'reportService' | 'reportSlice' | 'apiServer';
}

const OBJECT_VERBS = ['get', 'list', 'watch', 'create', 'patch', 'delete'] as const;

export const PERMISSIONS: readonly Permission[] = [
  { group: 'underpass.dev', resources: ['tunnelconnections', 'applicationmappings'], verbs: ['get', 'list', 'watch', 'patch'], scope: 'watched' },
  { group: 'underpass.dev', resources: ['tunnelconnections/status', 'applicationmappings/status'], verbs: ['get', 'update', 'patch'], scope: 'watched' },
  { group: 'underpass.dev', resources: ['tunnelconnectors'], verbs: ['get', 'list', 'watch', 'patch'], scope: 'watched' },
  { group: 'underpass.dev', resources: ['tunnelconnectors/status'], verbs: ['get', 'update'], scope: 'watched' },
  { group: 'apps', resources: ['deployments'], verbs: OBJECT_VERBS, scope: 'watched' },
  { group: '', resources: ['services', 'configmaps', 'serviceaccounts'], verbs: OBJECT_VERBS, scope: 'watched' },
  // Tenant namespaces: the worker Secret, written by name (connection CAs are never there).
  { group: '', resources: ['secrets'], verbs: ['get', 'create', 'update', 'delete'], scope: 'watched' },
  { group: 'networking.k8s.io', resources: ['networkpolicies'], verbs: OBJECT_VERBS, scope: 'watched' },
  { group: '', resources: ['events'], verbs: ['create', 'patch'], scope: 'watched' },
  { group: 'route.openshift.io', resources: ['routes', 'routes/custom-host'], verbs: OBJECT_VERBS, scope: 'watched', routesOnly: true },
  { group: 'coordination.k8s.io', resources: ['leases'], verbs: ['get', 'create', 'update'], scope: 'own' },
  { group: '', resources: ['secrets'], verbs: ['get', 'list', 'watch', 'create', 'update', 'delete'], scope: 'own' },
  { group: '', resources: ['services'], verbs: ['get'], scope: 'own', reportServiceOnly: true, resourceName: 'reportService' },
  { group: 'discovery.k8s.io', resources: ['endpointslices'], verbs: ['create'], scope: 'own', reportServiceOnly: true },
  { group: 'discovery.k8s.io', resources: ['endpointslices'], verbs: ['get', 'update'], scope: 'own', reportServiceOnly: true, resourceName: 'reportSlice' },
  // The API server's addresses, never Cluster-side targets (operator/api-server.ts).
  { group: '', resources: ['services'], verbs: ['get'], scope: 'apiServer', resourceName: 'apiServer' },
  { group: 'discovery.k8s.io', resources: ['endpointslices'], verbs: ['get'], scope: 'apiServer', resourceName: 'apiServer' },
];

export interface CheckScope {
  /** --namespace, or undefined for all namespaces. */
  watched?: string;
  /** The operator's namespace (--pod-namespace). */
  own: string;
  routes: boolean;
  /** The report Service the leader points at itself (--report-service), if any. */
  reportService?: string;
}

export interface AccessCheck {
  group: string;
  resource: string;
  subresource?: string;
  verb: string;
  namespace?: string;
  name?: string;
}

/** The single checks (one per verb and resource) for this operator's configuration. */
export function accessChecks(scope: CheckScope): AccessCheck[] {
  const checks: AccessCheck[] = [];
  for (const p of PERMISSIONS) {
    if ((p.routesOnly && !scope.routes) || (p.reportServiceOnly && !scope.reportService)) continue;
    const namespace = p.scope === 'own' ? scope.own : p.scope === 'apiServer' ? API_SERVER_NAMESPACE : scope.watched;
    const name = p.resourceName === 'reportService' ? scope.reportService
      : p.resourceName === 'reportSlice' ? sliceName(scope.reportService!)
        : p.resourceName === 'apiServer' ? API_SERVER_NAME : undefined;
    for (const full of p.resources) {
      const [resource, subresource] = full.split('/') as [string, string | undefined];
      for (const verb of p.verbs) {
        checks.push({ group: p.group, resource, verb, ...(subresource ? { subresource } : {}), ...(namespace ? { namespace } : {}), ...(name ? { name } : {}) });
      }
    }
  }
  return checks;
}

export function describeResource(c: { group: string; resource: string; subresource?: string; name?: string }): string {
  return `${c.resource}${c.subresource ? `/${c.subresource}` : ''}${c.group ? `.${c.group}` : ''}${c.name ? ` ${c.name}` : ''}`;
}

/**
 * Asks the API server about every check; the problem names each denied one.
 * A failing review request itself becomes the problem (the API may be down).
 */
export async function checkPermissions(kube: Kube, checks: readonly AccessCheck[]): Promise<Problem | undefined> {
  let denied: AccessCheck[];
  try {
    const answers = await Promise.all(checks.map((c) => kube.authorization.createSelfSubjectAccessReview({ body: review(c) })));
    denied = checks.filter((_, i) => answers[i]!.status?.allowed !== true);
  } catch (err) {
    return problemOf(err, { verb: 'create', resource: 'selfsubjectaccessreviews.authorization.k8s.io' });
  }
  if (denied.length === 0) return undefined;
  return forbidden(denied.map((c): Request => ({ verb: c.verb, resource: describeResource(c), ...(c.namespace ? { namespace: c.namespace } : {}) })));
}

function review(c: AccessCheck): k8s.V1SelfSubjectAccessReview {
  return {
    apiVersion: 'authorization.k8s.io/v1',
    kind: 'SelfSubjectAccessReview',
    spec: {
      resourceAttributes: {
        group: c.group, resource: c.resource, verb: c.verb,
        ...(c.subresource ? { subresource: c.subresource } : {}), ...(c.namespace ? { namespace: c.namespace } : {}), ...(c.name ? { name: c.name } : {}),
      },
    },
  };
}
