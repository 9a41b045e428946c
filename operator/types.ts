/** The custom resources as the operator reads them (see crds/ for the schema with descriptions). */
import type * as k8s from '@kubernetes/client-node';
import type { Condition } from './conditions.js';

export type ServiceType = 'ClusterIP' | 'NodePort' | 'LoadBalancer';

export interface TunnelConnectionSpec {
  replicas: number;
  endpoint: {
    service: { type: ServiceType; port: number; nodePort?: number; annotations?: Record<string, string>; loadBalancerSourceRanges?: string[] };
    hosts?: string[];
    route?: { enabled?: boolean; host?: string };
  };
  certificates: { duration: string; renewBefore: string; caDuration?: string };
  worker: {
    image?: string;
    resources?: k8s.V1ResourceRequirements;
    nodeSelector?: Record<string, string>;
    tolerations?: k8s.V1Toleration[];
    drainTimeout: string;
  };
  connectors?: string[];
}

export interface ConnectorStatus {
  name: string;
  worker: string;
  since: string;
  version: string;
  address: string;
}

export interface TunnelConnectionStatus {
  observedGeneration?: number;
  conditions?: Condition[];
  readyConnectors?: number;
  connectors?: ConnectorStatus[];
  workers?: { desired: number; ready: number };
  endpoint?: string;
  certificate?: { notAfter: string; renewalTime: string };
}

export interface TunnelConnection extends k8s.KubernetesObject {
  metadata: k8s.V1ObjectMeta & { name: string; namespace: string };
  spec: TunnelConnectionSpec;
  status?: TunnelConnectionStatus;
}

export interface ApplicationMappingSpec {
  connection: string;
  target: { side: 'Connector' | 'Cluster'; host: string; port: number };
  listen: { port: number; address?: string };
  protocol?: 'TCP' | 'UDP';
  allowedSources?: string[];
  allowedNamespaces?: AllowedNamespaces;
  description?: string;
}

/** Namespaces whose pods may reach a Connector-side mapping's listener (the NetworkPolicy); crds/ has the rules. */
export interface AllowedNamespaces {
  names?: string[];
  selector?: k8s.V1LabelSelector;
}

export interface ApplicationMappingStatus {
  observedGeneration?: number;
  conditions?: Condition[];
  endpoint?: string;
}

export interface ApplicationMapping extends k8s.KubernetesObject {
  metadata: k8s.V1ObjectMeta & { name: string; namespace: string };
  spec: ApplicationMappingSpec;
  status?: ApplicationMappingStatus;
}

export interface TunnelConnectorSpec {
  connection: string;
  connector: string;
  enrollment?: { requestId?: string; ttl?: string };
  revoked?: boolean;
}

export interface TunnelConnectorStatus {
  enrollment?: { requestId?: string; tokenSecret?: string; tokenId?: string; expiresAt?: string; usedTokenId?: string; usedAt?: string; refused?: string };
  certificate?: { serial?: string; notAfter?: string };
  conditions?: Condition[];
  sessionCount?: number;
  sessions?: Array<{ worker: string; since?: string; address?: string; serial?: string }>;
  version?: string;
  host?: string;
  lastSeen?: string;
  revokedAt?: string;
}

export interface TunnelConnector extends k8s.KubernetesObject {
  metadata: k8s.V1ObjectMeta & { name: string; namespace: string };
  spec: TunnelConnectorSpec;
  status?: TunnelConnectorStatus;
}

export const TUNNEL_CONNECTORS = 'tunnelconnectors';
export const TUNNEL_CONNECTIONS = 'tunnelconnections';
export const APPLICATION_MAPPINGS = 'applicationmappings';
