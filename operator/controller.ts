/**
 * Reconciles one TunnelConnection (and the statuses of its
 * ApplicationMappings). Idempotent and quiet: reads only from informer
 * caches, writes an object only when its desired hash changed, writes status
 * only when it changed, records Events only on transitions.
 */
import * as k8s from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { admissionFromList, admissionRefusal, MAX_ADMITTED_CONNECTORS, type Admission } from '../tunnel/admission.js';
import { CONTROL_LIMITS } from '../tunnel/control.js';
import { errorMessage, UnderpassError } from '../tunnel/errors.js';
import type { Mapping } from '../tunnel/mapping.js';
import type { SignAnswer, SignRequest, WorkerReport } from '../tunnel/operator-channel.js';
import type { Applier } from './apply.js';
import { stableHash } from './apply.js';
import { findCondition } from './conditions.js';
import * as desired from './desired.js';
import type { EventRecorder } from './events.js';
import type { Informer } from './informer.js';
import { GROUP, isConflict, VERSION, type Kube, type ObjectRef } from './kube.js';
import { DEFAULT_CLUSTER_TARGET_POLICY, type ClusterTargetPolicy } from './cluster-targets.js';
import { connectorRecordStatus } from './connector-status.js';
import { resolveMappings, servedMappings, type MappingVerdict } from './mapping-resolution.js';
import { FINALIZER, namesFor } from './names.js';
import { ConnectionPki, workerSans, type PkiResult } from './pki-secrets.js';
import type { ProcessResult } from './queue.js';
import type { DesiredWorkerState } from './report-server.js';
import { instanceLimit, type ReportStore } from './report-store.js';
import { mappingStatus, tunnelConnectionState } from './status.js';
import { APPLICATION_MAPPINGS, TUNNEL_CONNECTIONS, TUNNEL_CONNECTORS, type ApplicationMapping, type TunnelConnection, type TunnelConnector } from './types.js';
import { ConnectorRecords } from './connector-records.js';
import { DEFAULT_OVERRIDE_POLICY, effectiveWorker, withEffectiveWorker, type OverridePolicy } from './worker-overrides.js';

export interface Caches {
  tcs: Informer<TunnelConnection>;
  ams: Informer<ApplicationMapping>;
  tcns: Informer<TunnelConnector>;
  deployments: Informer<k8s.V1Deployment>;
  services: Informer<k8s.V1Service>;
  configMaps: Informer<k8s.V1ConfigMap>;
  /** Connection CA Secrets, in the operator's own namespace only (operator/connection-ca.ts). */
  caSecrets: Informer<k8s.V1Secret>;
  serviceAccounts: Informer<k8s.V1ServiceAccount>;
  networkPolicies: Informer<k8s.V1NetworkPolicy>;
  podDisruptionBudgets: Informer<k8s.V1PodDisruptionBudget>;
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
  /** Workers heard from within this long make the announced worker set (default WORKER_SET_MAX_AGE_MS). */
  workerSetMaxAgeMs?: number;
  /** Where Cluster-side targets may be (default: the mapping's namespace only). */
  clusterTargets?: ClusterTargetPolicy;
  /** The worker NetworkPolicy's settings besides the API server (default: desired.DEFAULT_WORKER_NETWORK's). */
  workerNetwork?: Omit<desired.WorkerNetwork, 'apiServer'>;
  /** Which spec.worker settings are honoured (default: resources only). */
  overrides?: OverridePolicy;
  /** The Kubernetes API server's addresses as last read (operator/api-server.ts); default none known. */
  apiServer?: () => readonly string[];
  /** The operator's namespace: connection CAs live there, never in tenant namespaces. */
  pkiNamespace: string;
  /** How often the worker Secret is read back for drift (default DRIFT_CHECK_MS). */
  pkiDriftCheckMs?: number;
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
/** Three report intervals (2 s): a worker that stopped reporting leaves the announced set after this long (docs/ha.md). */
export const WORKER_SET_MAX_AGE_MS = 6_000;

export class TunnelController {
  readonly #d: ControllerDeps;
  readonly #now: () => Date;
  readonly #startedAt: number;
  readonly #pki: ConnectionPki;
  readonly records: ConnectorRecords;

  constructor(deps: ControllerDeps) {
    this.#d = deps;
    this.#now = deps.now ?? (() => new Date());
    this.#startedAt = this.#now().getTime();
    const namespace = deps.options.pkiNamespace;
    this.#pki = new ConnectionPki({ kube: deps.kube, namespace, caSecret: (name) => deps.caches.caSecrets.get(name, namespace),
      ...(deps.options.pkiDriftCheckMs !== undefined ? { driftCheckMs: deps.options.pkiDriftCheckMs } : {}) });
    this.records = new ConnectorRecords({
      kube: deps.kube, pki: this.#pki, connectors: deps.caches.tcns, events: deps.events, logger: deps.logger, now: this.#now,
      connection: (namespace, name) => deps.caches.tcs.get(name, namespace),
    });
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
    const workers = this.#d.reports.instances(`${ref.namespace}/${ref.name}`, this.#d.options.workerSetMaxAgeMs ?? WORKER_SET_MAX_AGE_MS).slice(0, CONTROL_LIMITS.workers);
    return { mappings: mappings.slice(0, CONTROL_LIMITS.mappings), admission: this.#admission(tc), workers };
  }

  /** spec.connectors, and what is revoked: certificates by serial, connectors whose TunnelConnector says so. */
  #admission(tc: TunnelConnection): Admission {
    const revokedConnectors = this.#d.caches.tcns.list(tc.metadata.namespace)
      .filter((t) => t.spec.connection === tc.metadata.name && t.spec.revoked === true).map((t) => t.spec.connector).sort();
    const revokedSerials = this.#pki.revokedSerials(tc, this.#now());
    return {
      ...admissionFromList(tc.spec.connectors),
      ...(revokedSerials.length > 0 ? { revokedSerials } : {}),
      ...(revokedConnectors.length > 0 ? { revokedConnectors: revokedConnectors.slice(0, MAX_ADMITTED_CONNECTORS) } : {}),
    };
  }

  /**
   * A connector's certificate request, forwarded by a worker of `ref` for the
   * connector its session authenticated (renewal). Refused when the
   * connection is gone or does not admit the connector.
   */
  async signConnector(ref: ObjectRef, req: SignRequest): Promise<SignAnswer> {
    const tc = this.#d.caches.tcs.get(ref.name, ref.namespace);
    const where = `${ref.namespace}/${ref.name}`;
    if (!tc || tc.metadata.deletionTimestamp) throw new UnderpassError('ERR_CONNECTION_GONE', `connection ${where} is being deleted or does not exist`);
    const refusal = admissionRefusal(this.#admission(tc), { connector: req.connector, certificateSerial: req.certificateSerial });
    if (refusal) {
      this.#d.logger.warn({ connection: where, connector: req.connector, reason: refusal.code }, `refused to renew the certificate of connector ${req.connector} of ${where}: ${refusal.message}`);
      throw new UnderpassError(refusal.code, refusal.message);
    }
    const signed = await this.#pki.signConnector(tc, req.connector, req.csr, this.#now());
    await this.records.recordCertificate(ref.namespace, ref.name, req.connector, signed).catch((err: unknown) =>
      this.#d.logger.warn({ connection: where, connector: req.connector, err: errorMessage(err) }, `cannot record the renewed certificate in TunnelConnector ${ref.namespace}/${ref.name}.${req.connector}: ${errorMessage(err)}`));
    this.#d.logger.info({ connection: where, connector: req.connector, previousSerial: req.certificateSerial, serial: signed.serial, notAfter: signed.notAfter },
      `renewed the certificate of connector ${req.connector} of ${where}: serial ${signed.serial}, valid until ${signed.notAfter.toISOString()}`);
    return { certificate: signed.certificate, ca: signed.ca };
  }

  /** How many worker reports of `ref` the store keeps (and reads at once): see instanceLimit. */
  reportInstanceLimit(ref: ObjectRef): number {
    const tc = this.#d.caches.tcs.get(ref.name, ref.namespace);
    return instanceLimit(tc?.spec.replicas ?? 1);
  }

  caPem(ref: ObjectRef): string | undefined {
    const tc = this.#d.caches.tcs.get(ref.name, ref.namespace);
    return tc ? this.#pki.caPem(tc) : undefined;
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
      pki = await this.#pki.ensure(tc, workerSans(tc, lbNames), now, reports.live(`${ns}/${tc.metadata.name}`, this.#d.options.reportMaxAgeMs));
      if (pki.rotation) {
        const reason = { start: 'CARotationStarted', switch: 'CARotationSwitched', finish: 'CARotationCompleted' }[pki.rotation.step];
        const what = {
          start: 'created a new connection CA; workers and connectors now trust the old and the new one',
          switch: 'the new CA signs now: worker certificates are reissued and connectors renew theirs; the old CA is still trusted',
          finish: 'the old CA is no longer trusted; the rotation is complete',
        }[pki.rotation.step];
        await this.#d.events.record(tc, 'Normal', reason, `${what} (${pki.rotation.why})`);
      }
      if (pki.action === 'ca-adopted') {
        await this.#d.events.record(tc, 'Normal', 'CAMigrated',
          `moved the connection CA out of Secret ${ns}/${names.caSecret} (now deleted) into the operator's namespace; the worker certificate was reissued`);
      } else if (pki.action === 'renewed' || pki.action === 'reissued') {
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
    const { status, recheckMs } = tunnelConnectionState({
      tc, verdicts, deployment: caches.deployments.get(names.deployment, ns), tunnelService: tunnelSvc, reports: live, reportsKnown,
      workerSetMaxAgeMs: this.#d.options.workerSetMaxAgeMs ?? WORKER_SET_MAX_AGE_MS,
      pki: pki ? { ok: true, notAfter: pki.notAfter, renewalTime: pki.renewalTime } : { ok: false, message: pkiError ?? 'unknown' },
      ignoredOverrides: overrides.ignored,
      now,
    });
    await this.#writeTcStatus(tc, status);
    await this.#writeMappingStatuses(tc, verdicts, live, now);
    await this.#writeConnectorRecords(tc, reportsKnown ? live : undefined, now);

    const untilRenewal = pki ? pki.renewalTime.getTime() - now.getTime() : RESYNC_MS;
    // While the CA rotates, look again soon: each phase ends on what workers report.
    const cap = pki?.rotating ? 2_000 : RESYNC_MS;
    return { requeueAfterMs: Math.max(1_000, Math.min(untilRenewal, cap, recheckMs ?? RESYNC_MS)) };
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
    // The admission list (revocations included) goes into the ConfigMap too: enforced from a worker's start.
    await applier.apply(desired.configMap(tc, mappings, options.channel, apiServer, this.#admission(tc)), caches.configMaps.get(names.configMap, ns), 'configmaps');
    const dep = await applier.apply(desired.deployment(tc, mappings, { workerImage: options.workerImage, ...(options.channel ? { channel: options.channel } : {}) }), before, 'deployments');
    await applier.apply(desired.tunnelService(tc), caches.services.get(names.tunnelService, ns), 'services');
    const network = { ...(options.workerNetwork ?? desired.DEFAULT_WORKER_NETWORK), apiServer };
    await applier.apply(desired.networkPolicy(tc, served, network), caches.networkPolicies.get(names.networkPolicy, ns), 'networkpolicies');
    const pdb = desired.podDisruptionBudget(tc);
    if (pdb) await applier.apply(pdb, caches.podDisruptionBudgets.get(names.podDisruptionBudget, ns), 'poddisruptionbudgets');
    else if (caches.podDisruptionBudgets.get(names.podDisruptionBudget, ns)) {
      await applier.remove({ apiVersion: 'policy/v1', kind: 'PodDisruptionBudget', metadata: { name: names.podDisruptionBudget, namespace: ns } }, 'poddisruptionbudgets');
    }
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
    const degradedBefore = findCondition(before.conditions, 'Degraded');
    const degradedAfter = findCondition(after.conditions, 'Degraded');
    if (degradedAfter && degradedBefore?.status !== degradedAfter.status && (degradedBefore || degradedAfter.status === 'True')) {
      if (degradedAfter.status === 'True') await this.#d.events.record(tc, 'Warning', 'MeshDegraded', degradedAfter.message);
      else await this.#d.events.record(tc, 'Normal', 'MeshComplete', degradedAfter.message);
    }
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

  /** Each TunnelConnector of `tc` follows what the workers report (its sessions, Connected). */
  async #writeConnectorRecords(tc: TunnelConnection, reports: WorkerReport[] | undefined, now: Date): Promise<void> {
    if (!reports) return; // just started: no report yet is not "disconnected"
    for (const tcn of this.#d.caches.tcns.list(tc.metadata.namespace)) {
      if (tcn.spec.connection !== tc.metadata.name || tcn.metadata.deletionTimestamp) continue;
      const next = connectorRecordStatus(tcn, reports, now);
      if (stableHash(tcn.status ?? {}) === stableHash(next)) continue;
      const wasConnected = findCondition(tcn.status?.conditions, 'Connected')?.status === 'True';
      const isConnected = findCondition(next.conditions, 'Connected')?.status === 'True';
      try {
        await this.#d.kube.write('update', 'tunnelconnectors/status', () => this.#d.kube.custom.replaceNamespacedCustomObjectStatus({
          group: GROUP, version: VERSION, namespace: tcn.metadata.namespace, plural: TUNNEL_CONNECTORS, name: tcn.metadata.name, body: { ...tcn, status: next },
        }));
      } catch (err) {
        // A conflict: the record changed meanwhile (enrollment, renewal); its update event brings the next pass.
        if (isConflict(err)) continue;
        throw err;
      }
      if (wasConnected !== isConnected) {
        await this.#d.events.record(tcn, isConnected ? 'Normal' : 'Warning', isConnected ? 'Connected' : 'Disconnected',
          isConnected ? `connector ${tcn.spec.connector} connected (${next.sessionCount} session(s))` : `connector ${tcn.spec.connector} has no session any more`);
      }
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
      ['policy/v1', 'PodDisruptionBudget', names.podDisruptionBudget, 'poddisruptionbudgets'],
      ['v1', 'ConfigMap', names.configMap, 'configmaps'],
      ['v1', 'ServiceAccount', names.serviceAccount, 'serviceaccounts'],
    ];
    const cached: Record<string, (n: string) => unknown> = {
      deployments: (n) => this.#d.caches.deployments.get(n, namespace),
      services: (n) => this.#d.caches.services.get(n, namespace),
      networkpolicies: (n) => this.#d.caches.networkPolicies.get(n, namespace),
      poddisruptionbudgets: (n) => this.#d.caches.podDisruptionBudgets.get(n, namespace),
      configmaps: (n) => this.#d.caches.configMaps.get(n, namespace),
      serviceaccounts: (n) => this.#d.caches.serviceAccounts.get(n, namespace),
    };
    for (const [apiVersion, kind, name, resource] of owned) {
      if (cached[resource]!(name)) await this.#d.applier.remove({ apiVersion, kind, metadata: { name, namespace } }, resource);
    }
    if (this.#d.options.routes) await this.#d.applier.remove({ apiVersion: 'route.openshift.io/v1', kind: 'Route', metadata: { name: names.route, namespace } }, 'routes');
    await this.records.releaseAll(tc);
    await this.#pki.remove(tc);
    this.#d.reports.forget(`${namespace}/${tc.metadata.name}`);
    await this.#patchFinalizers(tc, (tc.metadata.finalizers ?? []).filter((f) => f !== FINALIZER));
    this.#d.logger.info({ connection: `${namespace}/${tc.metadata.name}` }, `TunnelConnection ${namespace}/${tc.metadata.name} deleted: removed its workers, services and secrets`);
  }
}
