/**
 * Reconciles one TunnelConnection (and the statuses of its
 * ApplicationMappings). Idempotent and quiet: reads only from informer
 * caches, writes an object only when its desired hash changed, writes status
 * only when it changed, records Events only on transitions.
 */
import * as k8s from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { admissionFromList } from '../tunnel/admission.js';
import { CONTROL_LIMITS } from '../tunnel/control.js';
import { errorMessage } from '../tunnel/errors.js';
import type { Mapping } from '../tunnel/mapping.js';
import type { WorkerReport } from '../tunnel/operator-channel.js';
import type { Applier } from './apply.js';
import { stableHash } from './apply.js';
import { findCondition } from './conditions.js';
import * as desired from './desired.js';
import type { EventRecorder } from './events.js';
import type { Informer } from './informer.js';
import { GROUP, VERSION, type Kube, type ObjectRef } from './kube.js';
import { DEFAULT_CLUSTER_TARGET_POLICY, type ClusterTargetPolicy } from './cluster-targets.js';
import { resolveMappings, servedMappings, type MappingVerdict } from './mapping-resolution.js';
import { FINALIZER, namesFor } from './names.js';
import { ensurePki, workerSans, type PkiResult } from './pki-secrets.js';
import type { ProcessResult } from './queue.js';
import type { DesiredWorkerState } from './report-server.js';
import { instanceLimit, type ReportStore } from './report-store.js';
import { mappingStatus, tunnelConnectionStatus } from './status.js';
import { APPLICATION_MAPPINGS, TUNNEL_CONNECTIONS, type ApplicationMapping, type TunnelConnection } from './types.js';
import { DEFAULT_OVERRIDE_POLICY, effectiveWorker, withEffectiveWorker, type OverridePolicy } from './worker-overrides.js';

export interface Caches {
  tcs: Informer<TunnelConnection>;
  ams: Informer<ApplicationMapping>;
  deployments: Informer<k8s.V1Deployment>;
  services: Informer<k8s.V1Service>;
  configMaps: Informer<k8s.V1ConfigMap>;
  secrets: Informer<k8s.V1Secret>;
  serviceAccounts: Informer<k8s.V1ServiceAccount>;
  networkPolicies: Informer<k8s.V1NetworkPolicy>;
}

export interface ControllerOptions {
  workerImage: string;
  channel?: desired.OperatorChannel;
  /** Create OpenShift Routes (the route.openshift.io API exists). */
  routes: boolean;
  /** Worker reports older than this are ignored. */
  reportMaxAgeMs: number;
  /** After start-up, how long missing reports do not yet mean "no connectors". */
  reportGraceMs: number;
  /** Where Cluster-side targets may be (default: the mapping's namespace only). */
  clusterTargets?: ClusterTargetPolicy;
  /** The worker NetworkPolicy's settings besides the API server (default: desired.DEFAULT_WORKER_NETWORK's). */
  workerNetwork?: Omit<desired.WorkerNetwork, 'apiServer'>;
  /** Which spec.worker settings are honoured (default: resources only). */
  overrides?: OverridePolicy;
  /** The Kubernetes API server's addresses as last read (operator/api-server.ts); default none known. */
  apiServer?: () => readonly string[];
}

export interface ControllerDeps {
  kube: Kube;
  applier: Applier;
  caches: Caches;
  reports: ReportStore;
  events: EventRecorder;
  logger: Logger;
  options: ControllerOptions;
  now?: () => Date;
}

const RESYNC_MS = 10_000;

export class TunnelController {
  readonly #d: ControllerDeps;
  readonly #now: () => Date;
  readonly #startedAt: number;

  constructor(deps: ControllerDeps) {
    this.#d = deps;
    this.#now = deps.now ?? (() => new Date());
    this.#startedAt = this.#now().getTime();
  }

  /**
   * What the workers of `ref` must enforce (the report channel's answer): the
   * mapping set, at most CONTROL_LIMITS.mappings of it, and the admission list.
   */
  desiredState(ref: ObjectRef): DesiredWorkerState | undefined {
    const tc = this.#d.caches.tcs.get(ref.name, ref.namespace);
    if (!tc || tc.metadata.deletionTimestamp) return undefined;
    const mappings = this.#served(this.#verdicts(tc));
    if (mappings.length > CONTROL_LIMITS.mappings) {
      this.#d.logger.warn({ connection: `${ref.namespace}/${ref.name}`, mappings: mappings.length },
        `TunnelConnection ${ref.namespace}/${ref.name} has ${mappings.length} mappings; workers serve the first ${CONTROL_LIMITS.mappings}`);
    }
    return { mappings: mappings.slice(0, CONTROL_LIMITS.mappings), admission: admissionFromList(tc.spec.connectors) };
  }

  /** How many worker reports of `ref` the store keeps (and reads at once): see instanceLimit. */
  reportInstanceLimit(ref: ObjectRef): number {
    const tc = this.#d.caches.tcs.get(ref.name, ref.namespace);
    return instanceLimit(tc?.spec.replicas ?? 1);
  }

  caPem(ref: ObjectRef): string | undefined {
    const s = this.#d.caches.secrets.get(namesFor(ref.name).caSecret, ref.namespace);
    const b64 = s?.data?.['ca.crt'];
    return b64 ? Buffer.from(b64, 'base64').toString('utf8') : undefined;
  }

  async reconcileConnection(ref: ObjectRef): Promise<ProcessResult> {
    const { caches, reports } = this.#d;
    const tc = caches.tcs.get(ref.name, ref.namespace);
    if (!tc) {
      reports.forget(`${ref.namespace}/${ref.name}`);
      return;
    }
    if (tc.metadata.deletionTimestamp) return this.#finalize(tc);
    if (!tc.metadata.finalizers?.includes(FINALIZER)) {
      await this.#patchFinalizers(tc, [...(tc.metadata.finalizers ?? []), FINALIZER]);
      return; // the update event brings us back with the new object
    }
    const now = this.#now();
    const names = namesFor(tc.metadata.name);
    const ns = tc.metadata.namespace;
    const verdicts = this.#verdicts(tc);

    const tunnelSvc = caches.services.get(names.tunnelService, ns);
    const lbNames = (tunnelSvc?.status?.loadBalancer?.ingress ?? []).flatMap((i) => [i.hostname, i.ip].filter((x): x is string => Boolean(x)));
    let pki: PkiResult | undefined;
    let pkiError: string | undefined;
    try {
      pki = await ensurePki(this.#d.kube, tc, { ca: caches.secrets.get(names.caSecret, ns), workerTls: caches.secrets.get(names.workerTlsSecret, ns) }, workerSans(tc, lbNames), now);
      if (pki.action === 'renewed' || pki.action === 'reissued') {
        await this.#d.events.record(tc, 'Normal', 'CertificateRenewed', `worker certificate reissued (${pki.reason}); valid until ${pki.notAfter.toISOString()}`);
      } else if (pki.action === 'ca-created') {
        await this.#d.events.record(tc, 'Normal', 'CertificatesIssued', `created the connection CA and the worker certificate (valid until ${pki.notAfter.toISOString()})`);
      }
    } catch (err) {
      pkiError = errorMessage(err);
      this.#d.logger.error({ connection: `${ns}/${tc.metadata.name}`, err: pkiError }, `certificates: ${pkiError}`);
    }

    const overrides = effectiveWorker(tc, this.#d.options.overrides ?? DEFAULT_OVERRIDE_POLICY);
    if (overrides.ignored.length > 0) this.#d.logger.warn({ connection: `${ns}/${tc.metadata.name}`, ignored: overrides.ignored }, `TunnelConnection ${ns}/${tc.metadata.name}: ignoring ${overrides.ignored.join(', ')} (not allowed by the cluster admin)`);
    await this.#applyOwned(withEffectiveWorker(tc, overrides), verdicts);

    const live = reports.live(`${ns}/${tc.metadata.name}`, this.#d.options.reportMaxAgeMs);
    const reportsKnown = reports.hasReported(`${ns}/${tc.metadata.name}`) || now.getTime() - this.#startedAt > this.#d.options.reportGraceMs;
    const status = tunnelConnectionStatus({
      tc, verdicts, deployment: caches.deployments.get(names.deployment, ns), tunnelService: tunnelSvc, reports: live, reportsKnown,
      pki: pki ? { ok: true, notAfter: pki.notAfter, renewalTime: pki.renewalTime } : { ok: false, message: pkiError ?? 'unknown' },
      ignoredOverrides: overrides.ignored,
      now,
    });
    await this.#writeTcStatus(tc, status);
    await this.#writeMappingStatuses(tc, verdicts, live, now);

    const untilRenewal = pki ? pki.renewalTime.getTime() - now.getTime() : RESYNC_MS;
    return { requeueAfterMs: Math.max(1_000, Math.min(untilRenewal, RESYNC_MS)) };
  }

  /** An ApplicationMapping whose connection does not exist gets its status here. */
  async reconcileOrphanMapping(ref: ObjectRef): Promise<ProcessResult> {
    const am = this.#d.caches.ams.get(ref.name, ref.namespace);
    if (!am) return;
    const tc = this.#d.caches.tcs.get(am.spec.connection, ref.namespace);
    if (tc && !tc.metadata.deletionTimestamp) return; // its connection's reconcile owns the status
    await this.#writeAmStatus(am, mappingStatus(am, undefined, undefined, [], this.#now()));
  }

  #verdicts(tc: TunnelConnection): MappingVerdict[] {
    return resolveMappings(this.#d.caches.ams.list(tc.metadata.namespace).filter((am) => am.spec.connection === tc.metadata.name), {
      clusterTargets: this.#d.options.clusterTargets ?? DEFAULT_CLUSTER_TARGET_POLICY,
      apiServer: this.#apiServer(),
    });
  }

  #apiServer(): readonly string[] {
    return this.#d.options.apiServer?.() ?? [];
  }

  #served(verdicts: MappingVerdict[]): Mapping[] {
    return verdicts.filter((v) => v.mapping).map((v) => v.mapping!);
  }

  async #applyOwned(tc: TunnelConnection, verdicts: MappingVerdict[]): Promise<void> {
    const { applier, caches, options } = this.#d;
    const names = namesFor(tc.metadata.name);
    const ns = tc.metadata.namespace;
    const served = servedMappings(verdicts);
    const mappings = served.map((s) => s.mapping);
    const apiServer = this.#apiServer();
    const before = caches.deployments.get(names.deployment, ns);
    await applier.apply(desired.serviceAccount(tc), caches.serviceAccounts.get(names.serviceAccount, ns), 'serviceaccounts');
    await applier.apply(desired.configMap(tc, mappings, options.channel, apiServer), caches.configMaps.get(names.configMap, ns), 'configmaps');
    const dep = await applier.apply(desired.deployment(tc, mappings, { workerImage: options.workerImage, ...(options.channel ? { channel: options.channel } : {}) }), before, 'deployments');
    await applier.apply(desired.tunnelService(tc), caches.services.get(names.tunnelService, ns), 'services');
    const network = { ...(options.workerNetwork ?? desired.DEFAULT_WORKER_NETWORK), apiServer };
    await applier.apply(desired.networkPolicy(tc, served, network), caches.networkPolicies.get(names.networkPolicy, ns), 'networkpolicies');
    const apps = desired.appsService(tc, mappings);
    if (apps) await applier.apply(apps, caches.services.get(names.appsService, ns), 'services');
    else if (caches.services.get(names.appsService, ns)) await applier.remove({ apiVersion: 'v1', kind: 'Service', metadata: { name: names.appsService, namespace: ns } }, 'services');
    if (options.routes && tc.spec.endpoint.route?.enabled !== false) {
      const route = desired.route(tc) as { apiVersion: string; kind: string; metadata: { name: string; namespace: string } };
      try {
        await applier.apply(route as k8s.KubernetesObject, await applier.read(route), 'routes');
      } catch (err) {
        this.#d.logger.warn({ connection: `${ns}/${tc.metadata.name}`, err: errorMessage(err) }, `cannot apply Route ${ns}/${route.metadata.name}: ${errorMessage(err)}`);
      }
    }
    if (dep === 'created') await this.#d.events.record(tc, 'Normal', 'WorkersCreated', `created Deployment ${names.deployment} with ${tc.spec.replicas} worker(s)`);
    else if (dep === 'updated') await this.#d.events.record(tc, 'Normal', 'WorkersUpdated', `rolled out Deployment ${names.deployment} (${tc.spec.replicas} worker(s))`);
  }

  async #writeTcStatus(tc: TunnelConnection, status: NonNullable<TunnelConnection['status']>): Promise<void> {
    const previous = tc.status ?? {};
    if (stableHash(previous) === stableHash(status)) return;
    await this.#d.kube.write('update', 'tunnelconnections/status', () => this.#d.kube.custom.replaceNamespacedCustomObjectStatus({
      group: GROUP, version: VERSION, namespace: tc.metadata.namespace, plural: TUNNEL_CONNECTIONS, name: tc.metadata.name,
      body: { ...tc, status },
    }));
    await this.#transitionEvents(tc, previous, status);
  }

  async #transitionEvents(tc: TunnelConnection, before: NonNullable<TunnelConnection['status']>, after: NonNullable<TunnelConnection['status']>): Promise<void> {
    const key = (c: { name: string; worker: string }): string => `${c.name}@${c.worker}`;
    const was = new Map((before.connectors ?? []).map((c) => [key(c), c]));
    const now = new Map((after.connectors ?? []).map((c) => [key(c), c]));
    for (const [k, c] of now) if (!was.has(k)) await this.#d.events.record(tc, 'Normal', 'ConnectorConnected', `connector ${c.name} connected to worker ${c.worker} from ${c.address} (version ${c.version})`);
    for (const [k, c] of was) if (!now.has(k)) await this.#d.events.record(tc, 'Warning', 'ConnectorDisconnected', `connector ${c.name} is no longer connected to worker ${c.worker}`);
    const readyBefore = findCondition(before.conditions, 'Ready');
    const readyAfter = findCondition(after.conditions, 'Ready');
    if (readyAfter && readyBefore?.status !== readyAfter.status) {
      await this.#d.events.record(tc, readyAfter.status === 'True' ? 'Normal' : 'Warning', readyAfter.status === 'True' ? 'Ready' : `NotReady${readyAfter.reason}`, readyAfter.message);
    }
    const overridesAfter = findCondition(after.conditions, 'OverridesAccepted');
    if (overridesAfter?.status === 'False' && findCondition(before.conditions, 'OverridesAccepted')?.status !== 'False') {
      await this.#d.events.record(tc, 'Warning', 'OverrideIgnored', overridesAfter.message);
    }
  }

  async #writeMappingStatuses(tc: TunnelConnection, verdicts: MappingVerdict[], reports: WorkerReport[], now: Date): Promise<void> {
    for (const v of verdicts) await this.#writeAmStatus(v.am, mappingStatus(v.am, v, tc, reports, now));
  }

  async #writeAmStatus(am: ApplicationMapping, status: NonNullable<ApplicationMapping['status']>): Promise<void> {
    if (stableHash(am.status ?? {}) === stableHash(status)) return;
    await this.#d.kube.write('update', 'applicationmappings/status', () => this.#d.kube.custom.replaceNamespacedCustomObjectStatus({
      group: GROUP, version: VERSION, namespace: am.metadata.namespace, plural: APPLICATION_MAPPINGS, name: am.metadata.name,
      body: { ...am, status },
    }));
  }

  async #patchFinalizers(tc: TunnelConnection, finalizers: string[]): Promise<void> {
    await this.#d.kube.write('patch', 'tunnelconnections', () => this.#d.kube.custom.patchNamespacedCustomObject(
      { group: GROUP, version: VERSION, namespace: tc.metadata.namespace, plural: TUNNEL_CONNECTIONS, name: tc.metadata.name,
        body: { metadata: { finalizers, resourceVersion: tc.metadata.resourceVersion } } },
      k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch),
    ));
  }

  /** Deletion: remove what we created (even where no garbage collector runs), then release the finalizer. */
  async #finalize(tc: TunnelConnection): Promise<ProcessResult> {
    if (!tc.metadata.finalizers?.includes(FINALIZER)) return;
    const names = namesFor(tc.metadata.name);
    const namespace = tc.metadata.namespace;
    const owned: Array<[string, string, string, string]> = [
      ['apps/v1', 'Deployment', names.deployment, 'deployments'],
      ['v1', 'Service', names.tunnelService, 'services'],
      ['v1', 'Service', names.appsService, 'services'],
      ['networking.k8s.io/v1', 'NetworkPolicy', names.networkPolicy, 'networkpolicies'],
      ['v1', 'ConfigMap', names.configMap, 'configmaps'],
      ['v1', 'ServiceAccount', names.serviceAccount, 'serviceaccounts'],
      ['v1', 'Secret', names.workerTlsSecret, 'secrets'],
      ['v1', 'Secret', names.caSecret, 'secrets'],
    ];
    const cached: Record<string, (n: string) => unknown> = {
      deployments: (n) => this.#d.caches.deployments.get(n, namespace),
      services: (n) => this.#d.caches.services.get(n, namespace),
      networkpolicies: (n) => this.#d.caches.networkPolicies.get(n, namespace),
      configmaps: (n) => this.#d.caches.configMaps.get(n, namespace),
      serviceaccounts: (n) => this.#d.caches.serviceAccounts.get(n, namespace),
      secrets: (n) => this.#d.caches.secrets.get(n, namespace),
    };
    for (const [apiVersion, kind, name, resource] of owned) {
      if (cached[resource]!(name)) await this.#d.applier.remove({ apiVersion, kind, metadata: { name, namespace } }, resource);
    }
    if (this.#d.options.routes) await this.#d.applier.remove({ apiVersion: 'route.openshift.io/v1', kind: 'Route', metadata: { name: names.route, namespace } }, 'routes');
    this.#d.reports.forget(`${namespace}/${tc.metadata.name}`);
    await this.#patchFinalizers(tc, (tc.metadata.finalizers ?? []).filter((f) => f !== FINALIZER));
    this.#d.logger.info({ connection: `${namespace}/${tc.metadata.name}` }, `TunnelConnection ${namespace}/${tc.metadata.name} deleted: removed its workers, services and secrets`);
  }
}
