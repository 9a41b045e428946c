/**
 * The worker report endpoint is served by the leader only. Its Service has no
 * selector; the leader writes the Service's one EndpointSlice with its own pod
 * IP when it starts leading (as Patroni does for its primary). So both
 * replicas can be Ready — which a PodDisruptionBudget needs to let a node
 * drain — while reports still reach the leader. A new leader overwrites the
 * slice; it is owned by the Service, so it goes when the Service goes.
 *
 * The same Service owns the other objects the operator creates in its own
 * namespace (the leader Lease, the report TLS Secret): they belong to the
 * install, and `helm uninstall` (which deletes the Service) takes them along.
 */
import { isIP } from 'node:net';
import type * as k8s from '@kubernetes/client-node';
import { isNotFound, type Kube } from './kube.js';
import { MANAGED_BY } from './names.js';

export interface LeaderEndpoint {
  namespace: string;
  /** The selector-less Service workers dial (the host of --report-url). */
  service: string;
  /** This pod's IP (POD_IP from the downward API). */
  ip: string;
  port: number;
  /** This pod's name, for the endpoint's targetRef. */
  pod?: string;
}

export const PORT_NAME = 'report';

export function sliceName(service: string): string {
  return `${service}-leader`;
}

/**
 * An owner reference to the report Service, for what the operator creates in its own namespace;
 * undefined when the Service does not exist (nothing to hang them on). Throws other API errors.
 */
export async function reportServiceOwner(kube: Kube, namespace: string, service: string): Promise<k8s.V1OwnerReference | undefined> {
  try {
    const svc = await kube.core.readNamespacedService({ name: service, namespace });
    return svc.metadata?.uid ? { apiVersion: 'v1', kind: 'Service', name: service, uid: svc.metadata.uid } : undefined;
  } catch (err) {
    if (isNotFound(err)) return undefined;
    throw err;
  }
}

/** The EndpointSlice naming this replica as the Service's only endpoint. */
export function leaderEndpointSlice(e: LeaderEndpoint, owner: { uid: string } | undefined): k8s.V1EndpointSlice {
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: {
      name: sliceName(e.service),
      namespace: e.namespace,
      labels: {
        'kubernetes.io/service-name': e.service,
        'endpointslice.kubernetes.io/managed-by': MANAGED_BY,
        'app.kubernetes.io/managed-by': MANAGED_BY,
      },
      ...(owner ? { ownerReferences: [{ apiVersion: 'v1', kind: 'Service', name: e.service, uid: owner.uid }] } : {}),
    },
    addressType: isIP(e.ip) === 6 ? 'IPv6' : 'IPv4',
    endpoints: [{
      addresses: [e.ip],
      conditions: { ready: true },
      ...(e.pod ? { targetRef: { kind: 'Pod', name: e.pod, namespace: e.namespace } } : {}),
    }],
    ports: [{ name: PORT_NAME, port: e.port, protocol: 'TCP' }],
  };
}

/** Writes the slice (create, or replace what a previous leader wrote). Throws the API's error. */
export async function publishLeaderEndpoint(kube: Kube, e: LeaderEndpoint): Promise<void> {
  const svc = await kube.core.readNamespacedService({ name: e.service, namespace: e.namespace });
  const body = leaderEndpointSlice(e, svc.metadata?.uid ? { uid: svc.metadata.uid } : undefined);
  const name = sliceName(e.service);
  let existing: k8s.V1EndpointSlice | undefined;
  try {
    existing = await kube.discovery.readNamespacedEndpointSlice({ name, namespace: e.namespace });
  } catch (err) {
    if (!isNotFound(err)) throw err;
  }
  if (!existing) {
    await kube.write('create', 'endpointslices', () => kube.discovery.createNamespacedEndpointSlice({ namespace: e.namespace, body }));
    return;
  }
  body.metadata!.resourceVersion = existing.metadata?.resourceVersion;
  await kube.write('update', 'endpointslices', () => kube.discovery.replaceNamespacedEndpointSlice({ name, namespace: e.namespace, body }));
}
