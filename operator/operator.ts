/**
 * The operator process: informers on both CRDs and on what it owns (handlers
 * only enqueue), a per-key work queue that runs only while this replica holds
 * the leader Lease, the worker report channel (leader only; the leader points
 * the report Service's EndpointSlice at itself), and an admin endpoint whose
 * /readyz is "caches synced and nothing wrong" on leader and standby alike.
 * Start-up never gives up: a missing namespace, missing CRDs or RBAC that
 * forbids what it needs are retried, logged once with the fix, and named by
 * /readyz until they are fixed.
 */
import type { AddressInfo } from 'node:net';
import http from 'node:http';
import * as k8s from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { formatHostPort, type HostPort } from '../tunnel/address.js';
import { Backoff, sleep } from '../tunnel/backoff.js';
import { errorMessage } from '../tunnel/errors.js';
import { closeNow } from '../tunnel/listen.js';
import { ApiServerAddresses } from './api-server.js';
import { Applier } from './apply.js';
import type { ClusterTargetPolicy } from './cluster-targets.js';
import { TunnelController, type Caches } from './controller.js';
import { DEFAULT_WORKER_NETWORK, OPERATOR_POD_SELECTOR, type WorkerEgress, type WorkerNetwork } from './desired.js';
import { EventRecorder } from './events.js';
import { Informer } from './informer.js';
import { apiErrorMessage, GROUP, Kube, keyOf, refOf, VERSION } from './kube.js';
import { LeaderElector } from './leader.js';
import { publishLeaderEndpoint, reportServiceOwner } from './leader-endpoint.js';
import { OperatorMetrics } from './metrics.js';
import { CA_SECRET_SELECTOR, connectionOfCASecret } from './connection-ca.js';
import { MANAGED_BY } from './names.js';
import { ensureOperatorTls } from './operator-pki.js';
import { accessChecks, checkPermissions } from './permissions.js';
import { PROBLEM_CODES, ProblemBoard, problemOf, RBAC_FIX, type Request } from './problems.js';
import { WorkQueue } from './queue.js';
import { ReportServer } from './report-server.js';
import { ReportStore } from './report-store.js';
import { APPLICATION_MAPPINGS, TUNNEL_CONNECTIONS, TUNNEL_CONNECTORS, type ApplicationMapping, type TunnelConnection, type TunnelConnector } from './types.js';
import type { OverridePolicy } from './worker-overrides.js';

function kindOfKey(key: string): string {
  return key.startsWith('tc:') ? 'TunnelConnection' : key.startsWith('tcn:') ? 'TunnelConnector' : 'ApplicationMapping';
}

export interface OperatorOptions {
  kc: k8s.KubeConfig;
  logger: Logger;
  /** Watch one namespace only (Role-scoped RBAC); undefined = all namespaces. */
  namespace?: string;
  identity: string;
  lease: { namespace: string; name: string; durationMs?: number; renewDeadlineMs?: number; renewIntervalMs?: number; retryIntervalMs?: number };
  workerImage: string;
  admin: HostPort;
  /**
   * The worker report channel; without it workers only get mappings through their ConfigMap.
   * `endpoint`: the selector-less Service in front of the replicas and this pod's address, which
   * the leader writes into the Service's EndpointSlice (unset outside a cluster).
   */
  report?: {
    listen: HostPort; url: string; secretNamespace: string; secretName: string; sans: string[];
    endpoint?: { service: string; ip: string; pod?: string };
  };
  reportMaxAgeMs?: number;
  reportGraceMs?: number;
  /** How often a connection's worker Secret is read back to repair drift (default 5 min). */
  pkiDriftCheckMs?: number;
  /** Delays between start-up retries (report TLS, permission check); default 1 s growing to 30 s. */
  retry?: { initialMs: number; maxMs: number };
  /** Where Cluster-side targets may be (--cluster-target-*); default: the mapping's namespace only. */
  clusterTargets?: ClusterTargetPolicy;
  /**
   * The worker NetworkPolicy (--metrics-namespace-selector, --worker-egress, --worker-dns-*):
   * who besides the operator's namespace reaches the admin port, and egress (false: unrestricted).
   * Default: desired.DEFAULT_WORKER_NETWORK's.
   */
  workerNetwork?: { metricsNamespaces?: k8s.V1LabelSelector; egress: false | Pick<WorkerEgress, 'dns'> };
  /** Which spec.worker settings are honoured (--worker-overrides, --worker-image-prefix); default resources only. */
  overrides?: OverridePolicy;
}

export class Operator {
  readonly kube: Kube;
  readonly store = new ReportStore({ maxInstances: (key) => this.#controller?.reportInstanceLimit(refOf(key)) ?? 1 });
  readonly metrics = new OperatorMetrics(this.store);
  readonly problems: ProblemBoard;
  readonly #o: OperatorOptions;
  readonly #log: Logger;
  readonly #caches: Caches;
  readonly #queue: WorkQueue;
  readonly #abort = new AbortController();
  #controller: TunnelController | undefined;
  #elector: LeaderElector | undefined;
  #electing: Promise<void> | undefined;
  #starting: Promise<void> | undefined;
  /** Aborted when this replica stops leading: ends what only a leader does. */
  #term: AbortController | undefined;
  #reportServer: ReportServer | undefined;
  #admin: http.Server | undefined;
  #synced = false;
  readonly #amConnection = new Map<string, string>();
  readonly #apiServer: ApiServerAddresses;
  #apiServerRun: Promise<void> | undefined;

  constructor(o: OperatorOptions) {
    this.#o = o;
    this.#log = o.logger;
    this.problems = new ProblemBoard(o.logger, () => {
      for (const code of PROBLEM_CODES) this.metrics.problems.set({ code }, this.problems.count(code));
    });
    this.kube = new Kube(o.kc);
    this.kube.onWrite((verb, resource) => this.metrics.apiWrites.inc({ verb, resource }));
    this.#caches = this.#makeCaches();
    this.#queue = new WorkQueue({
      process: (key) => this.#process(key),
      onError: (key, err, retryInMs) => {
        this.metrics.reconcileErrors.inc({ kind: kindOfKey(key) });
        const fix = /^403 /.test(apiErrorMessage(err)) ? ` (${RBAC_FIX})` : '';
        this.#log.warn({ key, err: apiErrorMessage(err), retryInMs }, `reconcile ${key.slice(3)} failed: ${apiErrorMessage(err)}${fix}; retrying in ${retryInMs} ms`);
      },
    });
    this.#apiServer = new ApiServerAddresses({
      kube: this.kube,
      logger: o.logger,
      onChange: () => { for (const tc of this.#caches.tcs.list()) this.#queue.add(`tc:${keyOf(tc.metadata)}`); },
    });
    this.store.on('report', (connection: string) => this.#queue.add(`tc:${connection}`));
    this.store.on('evicted', (_connection: string, reason: string) => this.metrics.reportStoreEvictions.inc({ reason }));
  }

  get isLeader(): boolean {
    return this.#elector?.isLeader ?? false;
  }

  get reportAddress(): AddressInfo | undefined {
    return this.#reportAddress;
  }

  #reportAddress: AddressInfo | undefined;

  /**
   * Opens the admin endpoint and starts everything else in the background:
   * it resolves at once, while /readyz says what start-up still waits for.
   */
  async start(): Promise<{ admin: AddressInfo }> {
    const admin = await this.#startAdmin();
    this.#starting = this.#startUp().catch((err: unknown) => {
      this.#log.error({ err: errorMessage(err) }, `operator start-up failed: ${errorMessage(err)}`);
    });
    return { admin };
  }

  async #startUp(): Promise<void> {
    const signal = this.#abort.signal;
    // The informers start first, so missing CRDs or forbidden lists are reported while the rest waits.
    const caches = Object.values(this.#caches);
    await Promise.all(caches.map((c) => c.start()));
    const routes = await this.#hasRoutes();
    void this.#checkPermissions(routes, signal);
    // Before the first reconcile: worker configs and NetworkPolicies name these addresses, and a
    // restarted operator must write what the previous one wrote (no churn).
    await this.#apiServer.refresh();
    this.#apiServerRun = this.#apiServer.run(signal);
    const report = this.#o.report;
    // What the operator creates in its own namespace hangs on the report Service (see leader-endpoint.ts).
    const service = report?.endpoint?.service;
    const owner = report && service
      ? await this.#retry('report-service', { verb: 'get', resource: 'services', namespace: report.secretNamespace },
        () => reportServiceOwner(this.kube, report.secretNamespace, service), signal)
      : undefined;
    const channel = report
      ? await this.#retry('report-tls', { verb: 'get/create/update', resource: 'secrets', namespace: report.secretNamespace }, () => this.#prepareReportTls(owner), signal)
      : undefined;
    if (signal.aborted) return;
    this.#controller = new TunnelController({
      kube: this.kube,
      applier: new Applier(this.kube),
      caches: this.#caches,
      reports: this.store,
      events: new EventRecorder(this.kube, this.#log, this.#o.identity),
      logger: this.#log,
      options: {
        workerImage: this.#o.workerImage,
        ...(channel && this.#o.report ? { channel: { url: this.#o.report.url, caPem: channel.caPem } } : {}),
        routes,
        reportMaxAgeMs: this.#o.reportMaxAgeMs ?? 15_000,
        reportGraceMs: this.#o.reportGraceMs ?? 10_000,
        ...(this.#o.clusterTargets ? { clusterTargets: this.#o.clusterTargets } : {}),
        ...(this.#o.overrides ? { overrides: this.#o.overrides } : {}),
        workerNetwork: this.#workerNetwork(),
        apiServer: () => this.#apiServer.addresses,
        pkiNamespace: this.#o.lease.namespace,
        ...(this.#o.pkiDriftCheckMs !== undefined ? { pkiDriftCheckMs: this.#o.pkiDriftCheckMs } : {}),
      },
    });
    await Promise.race([Promise.all(caches.map((c) => c.synced())), new Promise((resolve) => signal.addEventListener('abort', resolve, { once: true }))]);
    if (signal.aborted) return;
    this.#synced = true;
    this.#log.info({ namespace: this.#o.namespace ?? '(all)', identity: this.#o.identity }, 'caches synced; waiting for leadership');
    this.#elector = new LeaderElector({
      kube: this.kube,
      namespace: this.#o.lease.namespace,
      name: this.#o.lease.name,
      identity: this.#o.identity,
      ...(this.#o.lease.durationMs ? { leaseDurationMs: this.#o.lease.durationMs } : {}),
      ...(this.#o.lease.renewDeadlineMs ? { renewDeadlineMs: this.#o.lease.renewDeadlineMs } : {}),
      ...(this.#o.lease.renewIntervalMs ? { renewIntervalMs: this.#o.lease.renewIntervalMs } : {}),
      ...(this.#o.lease.retryIntervalMs ? { retryIntervalMs: this.#o.lease.retryIntervalMs } : {}),
      logger: this.#log,
      onStartedLeading: () => void this.#lead(channel),
      onStoppedLeading: () => void this.#follow(),
      onProblem: (p) => this.problems.set('lease', p),
      ...(owner && this.#o.lease.namespace === report?.secretNamespace ? { owner } : {}),
    });
    this.#electing = this.#elector.run(signal);
  }

  /** The worker NetworkPolicy's settings: the operator's namespace and report port, and the flags'. */
  #workerNetwork(): Omit<WorkerNetwork, 'apiServer'> {
    const o = this.#o.workerNetwork;
    const egress = o ? o.egress : DEFAULT_WORKER_NETWORK.egress!;
    const metricsNamespaces = o ? o.metricsNamespaces : DEFAULT_WORKER_NETWORK.metricsNamespaces;
    return {
      operatorNamespace: this.#o.lease.namespace,
      ...(metricsNamespaces ? { metricsNamespaces } : {}),
      ...(egress ? { egress: { dns: egress.dns, ...(this.#o.report ? { report: { podSelector: OPERATOR_POD_SELECTOR, port: this.#o.report.listen.port } } : {}) } } : {}),
    };
  }

  /** Runs `step` until it succeeds (or the operator stops), its failures on the problem board. */
  async #retry<T>(source: string, req: Request, step: () => Promise<T>, signal: AbortSignal): Promise<T | undefined> {
    const backoff = new Backoff(this.#o.retry ?? { initialMs: 1_000, maxMs: 30_000 });
    while (!signal.aborted) {
      try {
        const result = await step();
        this.problems.set(source, undefined);
        return result;
      } catch (err) {
        this.problems.set(source, problemOf(err, req));
        await sleep(backoff.next(), signal);
      }
    }
    return undefined;
  }

  /** Asks the API server whether every permission is granted; again with backoff until they are. */
  async #checkPermissions(routes: boolean, signal: AbortSignal): Promise<void> {
    const checks = accessChecks({
      ...(this.#o.namespace ? { watched: this.#o.namespace } : {}),
      own: this.#o.lease.namespace,
      routes,
      ...(this.#o.report?.endpoint ? { reportService: this.#o.report.endpoint.service } : {}),
    });
    const backoff = new Backoff(this.#o.retry ?? { initialMs: 1_000, maxMs: 30_000 });
    while (!signal.aborted) {
      const problem = await checkPermissions(this.kube, checks);
      this.problems.set('permissions', problem);
      if (!problem) return;
      await sleep(backoff.next(), signal);
    }
  }

  /** Resolves when nothing is queued or being reconciled (tests). */
  idle(): Promise<void> {
    return this.#queue.idle();
  }

  async stop(): Promise<void> {
    this.#abort.abort();
    await this.#starting;
    await this.#apiServerRun;
    await this.#electing;
    await this.#queue.stop();
    await this.#reportServer?.close();
    await Promise.all(Object.values(this.#caches).map((c) => c.stop()));
    if (this.#admin) await closeNow(this.#admin);
    this.#log.info('operator stopped');
  }

  async #lead(channel: { caPem: string; certPem: string; keyPem: string } | undefined): Promise<void> {
    this.metrics.leader.set(1);
    if (channel && this.#o.report && this.#controller) {
      const controller = this.#controller;
      this.#reportServer = new ReportServer({
        tls: { cert: channel.certPem, key: channel.keyPem },
        logger: this.#log,
        store: this.store,
        caFor: (c) => controller.caPem(c),
        desiredFor: (c) => controller.desiredState(c),
        signFor: (c, req) => controller.signConnector(c, req),
        enrollFor: (c, req) => controller.records.enroll(c, req),
        maxInFlight: (key) => controller.reportInstanceLimit(refOf(key)),
        metrics: {
          reports: this.metrics.workerReports,
          refusals: this.metrics.reportRefusals,
        },
      });
      try {
        this.#reportAddress = await this.#reportServer.listen(this.#o.report.listen);
      } catch (err) {
        this.#log.error({ err: errorMessage(err) }, `cannot open the worker report endpoint on ${formatHostPort(this.#o.report.listen)}: ${errorMessage(err)}`);
      }
      const endpoint = this.#o.report.endpoint;
      if (endpoint) {
        this.#term = new AbortController();
        void this.#publishEndpoint(endpoint, AbortSignal.any([this.#abort.signal, this.#term.signal]));
      }
    }
    for (const tc of this.#caches.tcs.list()) this.#queue.add(`tc:${keyOf(tc.metadata)}`);
    for (const am of this.#caches.ams.list()) this.#queue.add(`am:${keyOf(am.metadata)}`);
    for (const tcn of this.#caches.tcns.list()) this.#queue.add(`tcn:${keyOf(tcn.metadata)}`);
    this.#queue.start();
  }

  /** Points the report Service at this replica; retried while it leads. */
  async #publishEndpoint(endpoint: { service: string; ip: string; pod?: string }, signal: AbortSignal): Promise<void> {
    const report = this.#o.report!;
    const published = { namespace: report.secretNamespace, service: endpoint.service, ip: endpoint.ip, port: report.listen.port, ...(endpoint.pod ? { pod: endpoint.pod } : {}) };
    const req = { verb: 'get/create/update', resource: 'endpointslices.discovery.k8s.io', namespace: published.namespace };
    const done = await this.#retry('report-endpoint', req, async () => {
      await publishLeaderEndpoint(this.kube, published);
      return true;
    }, signal);
    if (done) this.#log.info({ service: endpoint.service, ip: endpoint.ip }, `report Service ${published.namespace}/${endpoint.service} now points at this replica (${endpoint.ip})`);
  }

  async #follow(): Promise<void> {
    this.#term?.abort();
    this.problems.withdraw('report-endpoint', 'no longer the leader');
    this.metrics.leader.set(0);
    await this.#queue.stop();
    await this.#reportServer?.close();
    this.#reportServer = undefined;
    this.#reportAddress = undefined;
  }

  async #process(key: string): Promise<ReturnType<TunnelController['reconcileConnection']> extends Promise<infer R> ? R : never> {
    const controller = this.#controller!;
    const [prefix, rest] = [key.slice(0, key.indexOf(':')), key.slice(key.indexOf(':') + 1)];
    const kind = kindOfKey(key);
    const end = this.metrics.reconcileSeconds.startTimer({ kind });
    this.metrics.queueDepth.set(this.#queue.depth);
    try {
      const ref = refOf(rest);
      const result = prefix === 'tc' ? await controller.reconcileConnection(ref)
        : prefix === 'tcn' ? await controller.records.reconcile(ref)
          : await controller.reconcileOrphanMapping(ref);
      end({ result: 'ok' });
      return result;
    } catch (err) {
      end({ result: 'error' });
      throw err;
    }
  }

  #makeCaches(): Caches {
    const o = this.#o;
    const kc = o.kc;
    const ns = o.namespace;
    const log = this.#log;
    const owned = `app.kubernetes.io/managed-by=${MANAGED_BY}`;
    const own = o.lease.namespace;
    const enqueueOwner = (obj: k8s.KubernetesObject): void => {
      const conn = obj.metadata?.labels?.['underpass.dev/connection'];
      if (conn && obj.metadata?.namespace) this.#queue.add(`tc:${obj.metadata.namespace}/${conn}`);
    };
    const path = (prefix: string, plural: string): string => (ns ? `${prefix}/namespaces/${ns}/${plural}` : `${prefix}/${plural}`);
    const custom = (plural: string) => () => (ns
      ? this.kube.custom.listNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: ns, plural })
      : this.kube.custom.listClusterCustomObject({ group: GROUP, version: VERSION, plural })) as Promise<k8s.KubernetesListObject<never>>;
    // `resource` is plural.group: the informer's name and what a problem names (a failed list of ours = CRD missing).
    const mk = <T extends k8s.KubernetesObject>(resource: string, p: string, list: () => Promise<k8s.KubernetesListObject<T>>, onChange: (o: T, kind: 'add' | 'update' | 'delete') => void, labelSelector?: string, inNamespace = ns) => {
      const req: Request = { verb: 'list/watch', resource, ...(inNamespace ? { namespace: inNamespace } : {}), crd: resource.endsWith(`.${GROUP}`) };
      const report = (err: unknown): void => this.problems.set(`informer:${resource}`, err === undefined ? undefined : problemOf(err, req));
      return new Informer<T>({ kc, path: p, list, onChange, logger: log, name: resource, report, ...(labelSelector ? { labelSelector } : {}) });
    };
    const core = this.kube.core;
    return {
      tcs: mk<TunnelConnection>(`${TUNNEL_CONNECTIONS}.${GROUP}`, path(`/apis/${GROUP}/${VERSION}`, TUNNEL_CONNECTIONS), custom(TUNNEL_CONNECTIONS), (tc, kind) => {
        this.#queue.add(`tc:${keyOf(tc.metadata)}`);
        if (kind === 'delete') for (const am of this.#caches.ams.list(tc.metadata.namespace)) if (am.spec.connection === tc.metadata.name) this.#queue.add(`am:${keyOf(am.metadata)}`);
        for (const tcn of this.#caches.tcns.list(tc.metadata.namespace)) if (tcn.spec.connection === tc.metadata.name) this.#queue.add(`tcn:${keyOf(tcn.metadata)}`);
      }),
      tcns: mk<TunnelConnector>(`${TUNNEL_CONNECTORS}.${GROUP}`, path(`/apis/${GROUP}/${VERSION}`, TUNNEL_CONNECTORS), custom(TUNNEL_CONNECTORS), (tcn) => {
        this.#queue.add(`tcn:${keyOf(tcn.metadata)}`);
      }),
      ams: mk<ApplicationMapping>(`${APPLICATION_MAPPINGS}.${GROUP}`, path(`/apis/${GROUP}/${VERSION}`, APPLICATION_MAPPINGS), custom(APPLICATION_MAPPINGS), (am, kind) => {
        const key = keyOf(am.metadata);
        const previous = this.#amConnection.get(key);
        if (previous && previous !== am.spec.connection) this.#queue.add(`tc:${am.metadata.namespace}/${previous}`);
        if (kind === 'delete') this.#amConnection.delete(key);
        else this.#amConnection.set(key, am.spec.connection);
        this.#queue.add(`tc:${am.metadata.namespace}/${am.spec.connection}`);
        if (kind !== 'delete') this.#queue.add(`am:${key}`);
      }),
      deployments: mk('deployments.apps', path('/apis/apps/v1', 'deployments'), () => (ns ? this.kube.apps.listNamespacedDeployment({ namespace: ns, labelSelector: owned }) : this.kube.apps.listDeploymentForAllNamespaces({ labelSelector: owned })), enqueueOwner, owned),
      services: mk('services', path('/api/v1', 'services'), () => (ns ? core.listNamespacedService({ namespace: ns, labelSelector: owned }) : core.listServiceForAllNamespaces({ labelSelector: owned })), enqueueOwner, owned),
      configMaps: mk('configmaps', path('/api/v1', 'configmaps'), () => (ns ? core.listNamespacedConfigMap({ namespace: ns, labelSelector: owned }) : core.listConfigMapForAllNamespaces({ labelSelector: owned })), enqueueOwner, owned),
      // Only the operator's own namespace: tenant Secrets are written by name, never listed or watched.
      caSecrets: mk('secrets', `/api/v1/namespaces/${own}/secrets`, () => core.listNamespacedSecret({ namespace: own, labelSelector: CA_SECRET_SELECTOR }), (s: k8s.V1Secret) => {
        const c = connectionOfCASecret(s);
        if (c) this.#queue.add(`tc:${c.namespace}/${c.name}`);
      }, CA_SECRET_SELECTOR, own),
      serviceAccounts: mk('serviceaccounts', path('/api/v1', 'serviceaccounts'), () => (ns ? core.listNamespacedServiceAccount({ namespace: ns, labelSelector: owned }) : core.listServiceAccountForAllNamespaces({ labelSelector: owned })), enqueueOwner, owned),
      networkPolicies: mk('networkpolicies.networking.k8s.io', path('/apis/networking.k8s.io/v1', 'networkpolicies'), () => (ns ? this.kube.networking.listNamespacedNetworkPolicy({ namespace: ns, labelSelector: owned }) : this.kube.networking.listNetworkPolicyForAllNamespaces({ labelSelector: owned })), enqueueOwner, owned),
      podDisruptionBudgets: mk('poddisruptionbudgets.policy', path('/apis/policy/v1', 'poddisruptionbudgets'), () => (ns ? this.kube.policy.listNamespacedPodDisruptionBudget({ namespace: ns, labelSelector: owned }) : this.kube.policy.listPodDisruptionBudgetForAllNamespaces({ labelSelector: owned })), enqueueOwner, owned),
    };
  }

  async #hasRoutes(): Promise<boolean> {
    try {
      const groups = await this.kube.apis.getAPIVersions();
      const found = groups.groups.some((g) => g.name === 'route.openshift.io');
      this.#log.info(found ? 'OpenShift Route API found: workers get a passthrough Route' : 'no OpenShift Route API: not creating Routes');
      return found;
    } catch (err) {
      this.#log.warn({ err: apiErrorMessage(err) }, 'API discovery failed; not creating Routes');
      return false;
    }
  }

  async #prepareReportTls(owner: k8s.V1OwnerReference | undefined): Promise<{ caPem: string; certPem: string; keyPem: string }> {
    const r = this.#o.report!;
    const host = new URL(r.url).hostname.replace(/^\[|\]$/g, '');
    return ensureOperatorTls({
      kube: this.kube, namespace: r.secretNamespace, secretName: r.secretName, sans: [...new Set([host, ...r.sans])], logger: this.#log,
      ...(owner ? { owner } : {}),
    });
  }

  /**
   * Ready: caches synced and no problem on the board, leader or standby (a
   * standby is ready to take over; the report Service reaches only the leader
   * through its EndpointSlice). Not ready: every problem, each with its fix.
   */
  readiness(): { ready: boolean; text: string } {
    const problems = this.problems.list.map((p) => p.message);
    if (problems.length > 0) return { ready: false, text: `not ready: ${problems.join('; ')}` };
    if (!this.#synced) return { ready: false, text: 'not ready: caches not synced yet' };
    return { ready: true, text: `ready (${this.isLeader ? 'leader' : 'standby'})` };
  }

  async #startAdmin(): Promise<AddressInfo> {
    this.#admin = http.createServer((req, res) => {
      const p = (req.url ?? '/').split('?')[0];
      if (p === '/healthz') return void res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
      if (p === '/readyz') {
        const why = this.readiness();
        return void res.writeHead(why.ready ? 200 : 503, { 'content-type': 'text/plain' }).end(`${why.text}\n`);
      }
      if (p === '/metrics') {
        void this.metrics.registry.metrics().then((body) => res.writeHead(200, { 'content-type': this.metrics.registry.contentType }).end(body));
        return;
      }
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found; try /healthz, /readyz, /metrics\n');
    });
    await new Promise<void>((resolve, reject) => {
      this.#admin!.once('error', reject);
      this.#admin!.listen(this.#o.admin.port, this.#o.admin.host, () => resolve());
    });
    const a = this.#admin.address() as AddressInfo;
    this.#log.info(`operator admin endpoint on http://${formatHostPort({ host: a.address, port: a.port })} (/healthz, /readyz, /metrics)`);
    return a;
  }
}
