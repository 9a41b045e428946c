/**
 * The cluster end of a tunnel connection: accepts connectors on WSS, listens
 * for Connector-side mappings, dials Cluster-side targets for streams the
 * connectors open, reports health and status, and drains on shutdown. With
 * `operator` configured it also reports to the operator, and the mapping set
 * comes from the operator's answers (the file's mappings only start it up).
 */
import dns from 'node:dns/promises';
import type { AddressInfo } from 'node:net';
import { performance } from 'node:perf_hooks';
import type { Logger } from 'pino';
import { AdminServer } from '../tunnel/admin.js';
import type { AuditLog } from '../tunnel/audit.js';
import { formatHostPort } from '../tunnel/address.js';
import { ipFamily } from '../tunnel/cidr.js';
import { errorMessage, UnderpassError } from '../tunnel/errors.js';
import { MappingListeners } from '../tunnel/listeners.js';
import { diffMappings, isEmptyDiff } from '../tunnel/mapping-diff.js';
import { boundTo, type Mapping } from '../tunnel/mapping.js';
import { reportText, type SignAnswer, type SignRequest, type WorkerReport } from '../tunnel/operator-channel.js';
import { TunnelMetrics } from '../tunnel/metrics.js';
import { caId, certificateInfo, issuerIdIn, pemCertificates } from '../tunnel/pki.js';
import { carryClient, sourceAllowed, type FlowEnv, type Resolution } from '../tunnel/stream-flow.js';
import type { OpenRequest } from '../tunnel/open.js';
import { readTlsFiles, TlsFileWatcher, type TlsMaterial } from '../tunnel/transport/tls-files.js';
import { VERSION } from '../tunnel/version.js';
import { muxLimits } from '../tunnel/limits.js';
import { sleep } from '../tunnel/backoff.js';
import { closeWhenQuiet } from '../tunnel/drain-listeners.js';
import { AdmissionGate, admissionOfConfig } from './admission-gate.js';
import { ClusterTargetGuard } from './cluster-target-guard.js';
import { findWorkerMappingProblem, type WorkerConfig } from './config.js';
import { ConfigWatcher } from './config-watcher.js';
import { ConnectorSession } from './connector-session.js';
import { ReportMetrics } from './report-metrics.js';
import { OperatorReporter, type AppliedAnswer } from './reporter.js';
import { RenewalForwarder } from './renewals.js';
import { EnrollmentEndpoint } from './enrollment-endpoint.js';
import { sessionDenied, wireSession, type SessionHost } from './session-events.js';
import { SessionExpiry } from './session-expiry.js';
import { SessionRegistry } from './session-registry.js';
import { statusDocument, workerReport, type ListenerFailure, type WorkerSnapshot } from './status.js';
import { TunnelServer, type AcceptedConnector } from './tunnel-server.js';
import { MeshMetrics } from './mesh-metrics.js';
import { WorkerSet } from './worker-set.js';

/**
 * After telling `mesh` connectors `draining`, the least time before GoAway (or twice
 * the slowest round trip, if longer): a stream a connector opened before it heard
 * `draining` is still accepted, not refused by the GoAway crossing it.
 */
export const PEER_GRACE_MS = 250;

/** Command-line values that replace the file's, now and on every reload. */
export type WorkerOverrides = Partial<Pick<WorkerConfig, 'listen' | 'admin' | 'instance' | 'bindAddress'>>;

export interface WorkerDeps {
  overrides?: WorkerOverrides;
  logger: Logger;
  audit: AuditLog;
  metrics?: TunnelMetrics;
  /** How often TLS files are checked for renewal. */
  tlsReloadIntervalMs?: number;
  /** How often the config file is checked for changes (0 = never). */
  configReloadIntervalMs?: number;
  /**
   * Addresses never dialled on top of the config's clusterTargets.refuse: main passes the
   * KUBERNETES_SERVICE_HOST of the pod (the API server's ClusterIP).
   */
  refuseTargets?: string[];
  /** How a Cluster-side target name becomes the one address checked and dialled (default: the system resolver, first address). */
  lookup?: (host: string) => Promise<string>;
}

async function systemLookup(host: string): Promise<string> {
  return (await dns.lookup(host)).address;
}

export interface WorkerAddresses {
  tunnel: AddressInfo;
  admin?: AddressInfo;
}

export class Worker {
  readonly #config: WorkerConfig;
  readonly #log: Logger;
  readonly #audit: AuditLog;
  readonly metrics: TunnelMetrics;
  readonly #connection: string;
  readonly #registry: SessionRegistry;
  readonly #listeners: MappingListeners;
  readonly #env: FlowEnv;
  readonly #sessionHost: SessionHost;
  readonly #admission: AdmissionGate;
  readonly #reportMetrics: ReportMetrics;
  readonly #workerSet: WorkerSet;
  readonly #meshMetrics: MeshMetrics;
  /** Aborted by a second stop request with deadline 0: skip what is left of the drain delay. */
  readonly #hurry = new AbortController();
  readonly #lookup: (host: string) => Promise<string>;
  readonly #refuseTargets: readonly string[];
  #targetGuard: ClusterTargetGuard;
  readonly #renewals: RenewalForwarder;
  readonly #enrollment: EnrollmentEndpoint;
  readonly #expiry: SessionExpiry;
  /** The CA certificates in tls.ca, pushed to connectors (they change while the CA rotates). */
  #trustPem: string | undefined;
  /** What the operator hears about them: CA ids, and the one that issued this worker's certificate. */
  #trustIds: { cas: string[]; issuer: string | undefined } | undefined;
  /** The last reason a built report did not validate (logged once per reason). */
  #reportProblem: string | undefined;
  #mappings = new Map<string, Mapping>();
  #revision = 0;
  #server: TunnelServer | undefined;
  #admin: AdminServer | undefined;
  #tlsWatcher: TlsFileWatcher | undefined;
  #configWatcher: ConfigWatcher | undefined;
  #reporter: OperatorReporter | undefined;
  /** Connector-side mappings whose listener could not be opened, from the last apply. */
  #listenerFailures: ListenerFailure[] = [];
  #ignoredFileMappingsLogged = false;
  #draining = false;
  /** GoAway sent (or being sent) to every session: no new stream is taken. */
  #goingAway = false;
  #stopped: Promise<void> | undefined;
  readonly #tlsReloadIntervalMs: number;
  readonly #configReloadIntervalMs: number;
  readonly #overrides: WorkerOverrides;

  constructor(config: WorkerConfig, deps: WorkerDeps) {
    this.#config = config;
    this.#connection = `${config.connection.namespace}/${config.connection.name}`;
    this.#log = deps.logger.child({ connection: this.#connection, worker: config.instance });
    this.#audit = deps.audit;
    this.metrics = deps.metrics ?? new TunnelMetrics('worker');
    this.#tlsReloadIntervalMs = deps.tlsReloadIntervalMs ?? 10_000;
    this.#configReloadIntervalMs = deps.configReloadIntervalMs ?? 1_000;
    this.#overrides = deps.overrides ?? {};
    this.#lookup = deps.lookup ?? systemLookup;
    this.#refuseTargets = deps.refuseTargets ?? [];
    this.#targetGuard = this.#guardFor(config);
    this.#registry = new SessionRegistry(config.instance);
    this.#workerSet = new WorkerSet(config.instance);
    this.#meshMetrics = new MeshMetrics(this.metrics.registry);
    this.#admission = new AdmissionGate({
      connection: this.#connection, instance: config.instance, initial: admissionOfConfig(config),
      log: this.#log, audit: this.#audit, registry: this.metrics.registry,
    });
    this.#reportMetrics = new ReportMetrics(this.metrics.registry);
    this.#expiry = new SessionExpiry({ registry: this.metrics.registry });
    this.#enrollment = new EnrollmentEndpoint({
      connection: this.#connection, instance: config.instance, log: this.#log, audit: this.#audit,
      trust: () => this.#trustPem,
      enroll: config.operator ? (req) => (this.#reporter ? this.#reporter.enroll(req) : Promise.reject(new UnderpassError('NOT_READY', 'this worker is not connected to the operator yet'))) : undefined,
      limitHit: (limit) => this.metrics.limitHit(limit),
    });
    this.#renewals = new RenewalForwarder({
      connection: this.#connection, instance: config.instance, log: this.#log, audit: this.#audit,
      sign: config.operator ? (req) => this.#signer(req) : undefined,
    });
    this.#env = { connection: this.#connection, audit: this.#audit, metrics: this.metrics, log: this.#log };
    this.#sessionHost = {
      connection: this.#connection,
      instance: config.instance,
      log: this.#log,
      audit: this.#audit,
      metrics: this.metrics,
      registry: this.#registry,
      env: this.#env,
      configMessage: () => this.#configMessage(),
      trustMessage: () => (this.#trustPem ? { type: 'trust' as const, ca: this.#trustPem } : undefined),
      renew: (session, msg) => this.#renewals.handle(session, msg),
      reportChanged: () => this.#reporter?.trigger(),
      resolveClusterTarget: (req) => this.#resolveClusterTarget(req),
    };
    this.#listeners = new MappingListeners({
      logger: this.#log,
      where: 'worker',
      onConnection: (mapping, socket) => carryClient(this.#env, mapping, socket, this.#registry.candidates(mapping.name), {
        self: { connector: '', worker: config.instance },
        explainNoCarrier: () => this.#registry.whyNot(mapping.name),
      }),
    });
  }

  async start(): Promise<WorkerAddresses> {
    const tls = await readTlsFiles(this.#config.tls);
    this.#recordCertificate(tls);
    this.#trustPem = tls.ca.toString();
    this.#server = new TunnelServer({
      connection: this.#config.connection,
      tls,
      logger: this.#log,
      accepting: () => !this.#draining,
      limits: this.#config.limits,
      onConnector: (c) => this.#onConnector(c),
      onDenied: (d) => sessionDenied(this.#sessionHost, d),
      admit: (c) => this.#admission.check(c),
      mesh: {
        instance: this.#config.instance,
        workers: () => this.#workerSet.list,
        onAlreadyConnected: () => this.#meshMetrics.alreadyConnected.inc(),
      },
      onRequest: (req, res) => this.#enrollment.handle(req, res),
    });
    const tunnel = await this.#server.listen(this.#config.listen);
    this.#tlsWatcher = new TlsFileWatcher(this.#config.tls, tls, this.#tlsReloadIntervalMs, (m) => this.#reloadTls(m), (err) =>
      this.#log.warn({ err: errorMessage(err) }, `TLS files changed but cannot be used yet: ${errorMessage(err)}`));
    await this.applyMappings(this.#config.mappings);
    if (this.#configReloadIntervalMs > 0) {
      this.#configWatcher = new ConfigWatcher({
        file: this.#config.file,
        intervalMs: this.#configReloadIntervalMs,
        onChange: (next) => this.#reloadConfig({ ...next, ...this.#overrides }),
        onInvalid: (message) => {
          this.#log.error({ file: this.#config.file }, `config file changed but is invalid; keeping the running config: ${message}`);
          this.#audit.write({ event: 'config-rejected', connection: this.#connection, message });
        },
      });
      await this.#configWatcher.prime();
    }
    let admin: AddressInfo | undefined;
    if (this.#config.admin) {
      this.#admin = new AdminServer({ registry: this.metrics.registry, notReadyReason: () => this.notReadyReason(), status: () => this.status() }, this.#log);
      admin = await this.#admin.listen(this.#config.admin);
    }
    this.#startReporter();
    this.#log.info({ listen: formatHostPort({ host: tunnel.address, port: tunnel.port }), version: VERSION },
      `worker ${this.#config.instance} of connection ${this.#connection} accepting connectors on wss://${formatHostPort({ host: tunnel.address, port: tunnel.port })}/v1/tunnel`);
    return { tunnel, ...(admin ? { admin } : {}) };
  }

  get mappings(): Mapping[] {
    return [...this.#mappings.values()];
  }

  /** Address of a Connector-side mapping's listener (tests use port 0). */
  listenerAddress(mapping: string): AddressInfo | undefined {
    return this.#listeners.address(mapping);
  }

  /**
   * Hot reload: applies only the difference. Listeners of unchanged mappings
   * and established streams are untouched; connectors get the new set.
   */
  async applyMappings(next: readonly Mapping[]): Promise<void> {
    const diff = diffMappings([...this.#mappings.values()], next);
    if (isEmptyDiff(diff) && this.#revision > 0) return;
    this.#mappings = new Map(next.map((m) => [m.name, m]));
    this.#revision++;
    const results = await this.#listeners.apply(next.filter((m) => m.target.side === 'Connector').map((m) => boundTo(m, this.#config.bindAddress)));
    this.#listenerFailures = results.filter((r) => !r.ok).map((r) => ({ mapping: r.name, message: reportText(errorMessage(r.error)) }));
    for (const s of this.#registry.all) if (s.ready) s.sendConfig(this.#configMessage());
    this.#reporter?.trigger();
    this.#audit.write({
      event: 'config-applied',
      connection: this.#connection,
      revision: this.#revision,
      added: diff.added.map((m) => m.name),
      removed: diff.removed.map((m) => m.name),
      changed: diff.changed.map((c) => c.after.name),
    });
  }

  /** Ready = can serve: at least one connector session can carry new streams (docs/ha.md). */
  notReadyReason(): string | undefined {
    if (this.#draining) return 'draining';
    if (this.#registry.usableCount === 0) {
      return this.#registry.readyCount === 0 ? 'no connector session is established' : 'every connector session is going away';
    }
    return undefined;
  }

  /** The live workers of the connection as this worker announces them. */
  get workers(): readonly string[] {
    return this.#workerSet.list;
  }

  /** The admin endpoint's /status document. */
  status(): unknown {
    return statusDocument(this.#snapshot());
  }

  /** What the operator gets: always within the channel's limits (what did not fit is counted). */
  report(): WorkerReport {
    const built = workerReport(this.#snapshot());
    this.#reportMetrics.dropped(built.dropped);
    if (built.problem !== this.#reportProblem) {
      this.#reportProblem = built.problem;
      if (built.problem) this.#log.error({ problem: built.problem }, `the report did not fit the operator channel's schema (${built.problem}); sending it without the detail that failed`);
    }
    return built.report;
  }

  /**
   * Graceful stop (docs/ha.md, Drain): not ready at once, `draining` to
   * `mesh` connectors, new connectors refused (503 DRAINING); listeners stay
   * open for `drainDelay` while load balancers stop sending clients here; then
   * listeners close, GoAway to every connector, open streams get up to
   * `deadlineMs` to finish. A second call with deadline 0 skips what is left
   * of the delay.
   */
  stop(deadlineMs = this.#config.drainTimeoutMs): Promise<void> {
    if (deadlineMs === 0) this.#hurry.abort();
    this.#stopped ??= this.#stop(deadlineMs);
    return this.#stopped;
  }

  async #stop(deadlineMs: number): Promise<void> {
    this.#draining = true;
    this.#workerSet.drain();
    const told = this.#registry.all.filter((s) => s.tellDraining());
    const toldAt = Date.now();
    const drainStart = { startedAt: performance.now(), acceptedAtStart: this.#listeners.accepted };
    this.#reporter?.trigger(); // the operator learns at once that this worker is going away
    const delayMs = this.#hurry.signal.aborted ? 0 : this.#config.drainDelayMs;
    this.#log.info({ sessions: this.#registry.all.length, delayMs, deadlineMs },
      `draining: not ready; listeners close in ${delayMs} ms (longer while clients still arrive, at most ${2 * delayMs} ms), then ${this.#registry.all.length} connector session(s) get GoAway and up to ${deadlineMs} ms for open streams`);
    this.#tlsWatcher?.stop();
    this.#configWatcher?.stop();
    await closeWhenQuiet(this.#listeners, { ...drainStart, delayMs, signal: this.#hurry.signal }, this.metrics, this.#log);
    const serverClosed = this.#server?.stopAccepting();
    if (told.length > 0) {
      const grace = Math.max(PEER_GRACE_MS, 2 * Math.max(...told.map((s) => s.rttMs)));
      await sleep(toldAt + grace - Date.now(), this.#hurry.signal);
    }
    const sessions = this.#registry.all;
    this.#goingAway = true;
    await Promise.all(sessions.map((s) => s.drain(deadlineMs)));
    this.#server?.closeAll();
    // A peer that never answers the close must not hold the exit.
    await Promise.race([serverClosed, new Promise((r) => setTimeout(r, 2_000).unref())]);
    await this.#reporter?.stop({ finalReport: true });
    await this.#admin?.close();
    this.#log.info('worker stopped');
  }

  async #reloadConfig(next: WorkerConfig): Promise<void> {
    const fixed: Array<keyof WorkerConfig> = ['connection', 'listen', 'tls', 'admin', 'instance', 'audit', 'operator', 'bindAddress'];
    const needRestart = fixed.filter((k) => JSON.stringify(next[k]) !== JSON.stringify(this.#config[k]));
    if (needRestart.length > 0) {
      this.#log.warn({ fields: needRestart }, `config file changed ${needRestart.join(', ')}; those take effect after a restart (mappings apply now)`);
    }
    // Revocations in the file apply whatever else the operator says (worker/admission-gate.ts).
    this.#admission.fromFile(admissionOfConfig(next), this.#registry.all);
    // Which targets may be dialled applies at once, also under an operator (which writes it).
    if (JSON.stringify(next.clusterTargets) !== JSON.stringify(this.#targetGuard.rules)) {
      this.#targetGuard = this.#guardFor(next);
      this.#log.info({ clusterTargets: next.clusterTargets }, 'config file changed clusterTargets; Cluster-side dials follow it now');
    }
    if (this.#reporter) {
      if (!this.#ignoredFileMappingsLogged) {
        this.#ignoredFileMappingsLogged = true;
        this.#log.info({ file: next.file, operator: this.#config.operator?.url.href },
          'config file changed; its mappings are not applied: mappings come from the operator channel (the file only gives the start-up set)');
      }
      return;
    }
    this.#log.info({ file: next.file }, 'config file changed; applying mappings');
    await this.applyMappings(next.mappings);
  }

  #startReporter(): void {
    const operator = this.#config.operator;
    if (!operator) return;
    this.#reporter = new OperatorReporter({
      url: operator.url,
      caFile: operator.ca,
      tls: this.#config.tls,
      connection: this.#config.connection,
      intervalMs: operator.intervalMs,
      report: () => this.report(),
      onAnswer: (a) => this.#applyAnswer(a),
      onResult: (r) => this.#reportMetrics.exchanged(r),
      logger: this.#log,
    });
    this.#reporter.start();
  }

  /**
   * An operator answer: the admission list first (it also holds while
   * draining: a removed connector loses its sessions whatever else happens),
   * then the mapping set, checked against this worker's own ports and ignored
   * while draining.
   */
  async #applyAnswer(answer: AppliedAnswer): Promise<void> {
    if (answer.admission) this.#admission.fromOperator(answer.admission, this.#registry.all);
    if (answer.workers && !this.#draining) this.#applyWorkers(answer.workers);
    if (answer.mappings) await this.#applyDesired(answer.mappings);
  }

  /** The operator's worker set: `mesh` connectors hear of every change at once. */
  #applyWorkers(workers: readonly string[]): void {
    if (!this.#workerSet.apply(workers)) return;
    const list = this.#workerSet.list;
    this.#log.info({ workers: list }, `workers of this connection: ${list.join(', ')}`);
    for (const s of this.#registry.all) s.announceWorkers(list);
  }

  async #applyDesired(mappings: Mapping[]): Promise<void> {
    if (this.#draining) return;
    const problem = findWorkerMappingProblem(mappings, this.#config);
    if (problem) {
      const at = problem.path.map((p) => (typeof p === 'number' ? `[${p}]` : `.${p}`)).join('');
      throw new UnderpassError('ERR_OPERATOR_MAPPINGS', `mappings${at}: ${problem.message}`);
    }
    await this.applyMappings(mappings);
  }

  #configMessage() {
    return { type: 'config' as const, revision: this.#revision, mappings: this.mappings };
  }

  #snapshot(): WorkerSnapshot {
    return {
      connection: this.#connection,
      instance: this.#config.instance,
      notReadyReason: this.notReadyReason(),
      draining: this.#draining,
      revision: this.#revision,
      workers: this.#workerSet.list,
      sessions: this.#registry.all,
      mappings: this.mappings,
      listenerFailures: this.#listenerFailures,
      ...(this.#trustIds ? { trust: this.#trustIds } : {}),
    };
  }

  #onConnector(accepted: AcceptedConnector): void {
    const session = new ConnectorSession(accepted, {
      connection: this.#connection,
      instance: this.#config.instance,
      mux: { keepaliveIntervalMs: this.#config.keepalive.intervalMs, keepaliveTimeoutMs: this.#config.keepalive.timeoutMs, ...muxLimits(this.#config.limits) },
      logger: this.#log,
      workers: () => this.#workerSet.list,
    });
    this.#registry.add(session);
    wireSession(this.#sessionHost, session);
    this.#expiry.watch(session, accepted.certificateNotAfter);
  }

  #guardFor(config: WorkerConfig): ClusterTargetGuard {
    return new ClusterTargetGuard({ loopback: config.clusterTargets.loopback, refuse: [...config.clusterTargets.refuse, ...this.#refuseTargets] });
  }

  /**
   * A stream a connector opens for a Cluster-side mapping: the mapping's own
   * checks, then the target's address (resolved here, once) against the
   * guard; the address checked is the address dialled.
   */
  #resolveClusterTarget(req: OpenRequest): Resolution | Promise<Resolution> {
    const mapping = this.#mappings.get(req.mapping);
    if (!mapping) return { ok: false, code: 'UNKNOWN_MAPPING', message: `this worker has no mapping "${req.mapping}"` };
    if (mapping.target.side !== 'Cluster') {
      return { ok: false, code: 'WRONG_SIDE', message: `mapping "${mapping.name}" targets the Connector side; the worker does not dial it`, mapping };
    }
    // A draining worker still carries what connectors open until its GoAway: they open here when
    // they have no other worker, or before they have heard `draining` (docs/ha.md, Drain).
    if (this.#goingAway) return { ok: false, code: 'SHUTTING_DOWN', message: 'this worker is shutting down', mapping };
    const sourceHost = req.source.startsWith('[') ? req.source.slice(1, req.source.indexOf(']')) : req.source.split(':')[0];
    if (!sourceAllowed(mapping, sourceHost)) {
      return { ok: false, code: 'SOURCE_NOT_ALLOWED', message: `${req.source} is outside allowedSources of mapping "${mapping.name}"`, mapping };
    }
    const { host, port } = mapping.target;
    // An IP target is checked as it stands (no lookup, no promise); a name is resolved once.
    if (ipFamily(host) !== 0) return this.#checkedDial(mapping, host, this.#targetGuard);
    const guard = this.#targetGuard;
    return this.#lookup(host).then(
      (address) => this.#checkedDial(mapping, address, guard),
      (err: unknown): Resolution => ({ ok: false, code: 'DIAL_FAILED', message: `cannot resolve ${formatHostPort({ host, port })}: ${errorMessage(err)}`, mapping }),
    );
  }

  /** The address checked is the address dialled (no second lookup that could answer differently). */
  #checkedDial(mapping: Mapping, address: string, guard: ClusterTargetGuard): Resolution {
    const refused = guard.whyNot(address, mapping.target.host, mapping.target.port);
    if (refused) return { ok: false, code: 'NOT_ALLOWED', message: refused, mapping };
    return { ok: true, mapping, dial: { host: address, port: mapping.target.port }, target: formatHostPort(mapping.target) };
  }

  /** The reporter exists once started; a renewal before that is told to retry. */
  #signer(req: SignRequest): Promise<SignAnswer> {
    if (!this.#reporter) return Promise.reject(new UnderpassError('NOT_READY', 'this worker is not reporting to the operator yet; retry shortly'));
    return this.#reporter.sign(req);
  }

  #reloadTls(m: TlsMaterial): void {
    this.#server?.reloadTls(m); // throws on a cert/key mismatch; the watcher retries
    this.#recordCertificate(m);
    const trust = m.ca.toString();
    if (trust !== this.#trustPem) {
      this.#trustPem = trust;
      for (const s of this.#registry.all) s.sendControl({ type: 'trust', ca: trust });
      this.#reporter?.trigger(); // the operator waits for this while the connection's CA rotates
    }
    this.#log.info('reloaded TLS certificate; new connector handshakes use it, established sessions continue');
  }

  #recordCertificate(m: TlsMaterial): void {
    try {
      const cas = pemCertificates(m.ca.toString());
      this.#trustIds = { cas: cas.map(caId), issuer: issuerIdIn(m.cert, cas) };
    } catch (err) {
      this.#log.warn({ err: errorMessage(err) }, 'cannot read the CA certificates in tls.ca');
    }
    try {
      const info = certificateInfo(m.cert.toString());
      this.metrics.certExpiry.set({ certificate: 'worker' }, info.notAfter.getTime() / 1000);
      const ca = certificateInfo(m.ca.toString());
      this.metrics.certExpiry.set({ certificate: 'ca' }, ca.notAfter.getTime() / 1000);
    } catch (err) {
      this.#log.warn({ err: errorMessage(err) }, 'cannot read certificate expiry');
    }
  }
}
