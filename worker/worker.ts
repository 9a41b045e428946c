/**
 * The cluster end of a tunnel connection: accepts connectors on WSS, listens
 * for Connector-side mappings, dials Cluster-side targets for streams the
 * connectors open, reports health and status, and drains on shutdown. With
 * `operator` configured it also reports to the operator, and the mapping set
 * comes from the operator's answers (the file's mappings only start it up).
 */
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import { AdminServer } from '../tunnel/admin.js';
import type { AuditLog } from '../tunnel/audit.js';
import { formatHostPort } from '../tunnel/address.js';
import { errorMessage, UnderpassError } from '../tunnel/errors.js';
import { MappingListeners } from '../tunnel/listeners.js';
import { diffMappings, isEmptyDiff } from '../tunnel/mapping-diff.js';
import type { Mapping } from '../tunnel/mapping.js';
import type { WorkerReport } from '../operator/reports.js';
import { TunnelMetrics } from '../tunnel/metrics.js';
import { certificateInfo } from '../tunnel/pki.js';
import { carryClient, serveStream, sourceAllowed, type FlowEnv, type Resolution } from '../tunnel/stream-flow.js';
import type { OpenRequest } from '../tunnel/open.js';
import { readTlsFiles, TlsFileWatcher, type TlsMaterial } from '../tunnel/transport/tls-files.js';
import { VERSION } from '../tunnel/version.js';
import { findWorkerMappingProblem, type WorkerConfig } from './config.js';
import { ConfigWatcher } from './config-watcher.js';
import { ConnectorSession } from './connector-session.js';
import { OperatorReporter } from './reporter.js';
import { SessionRegistry } from './session-registry.js';
import { TunnelServer, type AcceptedConnector, type Denial } from './tunnel-server.js';

/** Command-line values that replace the file's, now and on every reload. */
export type WorkerOverrides = Partial<Pick<WorkerConfig, 'listen' | 'admin' | 'instance'>>;

export interface WorkerDeps {
  overrides?: WorkerOverrides;
  logger: Logger;
  audit: AuditLog;
  metrics?: TunnelMetrics;
  /** How often TLS files are checked for renewal. */
  tlsReloadIntervalMs?: number;
  /** How often the config file is checked for changes (0 = never). */
  configReloadIntervalMs?: number;
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
  #mappings = new Map<string, Mapping>();
  #revision = 0;
  #server: TunnelServer | undefined;
  #admin: AdminServer | undefined;
  #tlsWatcher: TlsFileWatcher | undefined;
  #configWatcher: ConfigWatcher | undefined;
  #reporter: OperatorReporter | undefined;
  /** Connector-side mappings whose listener could not be opened, from the last apply. */
  #listenerFailures: Array<{ mapping: string; message: string }> = [];
  #ignoredFileMappingsLogged = false;
  #draining = false;
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
    this.#registry = new SessionRegistry(config.instance);
    this.#env = { connection: this.#connection, audit: this.#audit, metrics: this.metrics, log: this.#log };
    this.#listeners = new MappingListeners({
      logger: this.#log,
      where: 'worker',
      onConnection: (mapping, socket) => void carryClient(this.#env, mapping, socket, this.#registry.candidates(mapping.name), {
        self: { connector: '', worker: config.instance },
        explainNoCarrier: () => this.#registry.whyNot(mapping.name),
      }),
    });
  }

  async start(): Promise<WorkerAddresses> {
    const tls = await readTlsFiles(this.#config.tls);
    this.#recordCertificate(tls);
    this.#server = new TunnelServer({
      connection: this.#config.connection,
      tls,
      logger: this.#log,
      accepting: () => !this.#draining,
      onConnector: (c) => this.#onConnector(c),
      onDenied: (d) => this.#onDenied(d),
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
    const results = await this.#listeners.apply(next.filter((m) => m.target.side === 'Connector'));
    this.#listenerFailures = results.filter((r) => !r.ok).map((r) => ({ mapping: r.name, message: truncate(errorMessage(r.error)) }));
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

  notReadyReason(): string | undefined {
    if (this.#draining) return 'draining';
    if (this.#registry.readyCount === 0) return 'no connector session is established';
    return undefined;
  }

  status(): unknown {
    return {
      connection: this.#connection,
      worker: { instance: this.#config.instance, version: VERSION },
      ready: this.notReadyReason() === undefined,
      draining: this.#draining,
      revision: this.#revision,
      connectors: this.#registry.all.filter((s) => s.ready).map((s) => ({
        name: s.connector,
        session: s.id,
        since: s.since.toISOString(),
        version: s.version,
        address: s.peer,
        hostname: s.hostname,
        streams: s.mux.streamCount - 1,
        unavailableMappings: [...s.unavailable.values()],
      })),
      mappings: this.mappings.map((m) => ({
        name: m.name,
        side: m.target.side,
        target: formatHostPort(m.target),
        listen: formatHostPort({ host: m.listen.address, port: m.listen.port }),
      })),
      listenerFailures: this.#listenerFailures,
    };
  }

  /** What the operator gets (operator/reports.ts validates it; free text is truncated to fit). */
  report(): WorkerReport {
    return {
      instance: this.#config.instance,
      version: VERSION,
      ready: this.notReadyReason() === undefined,
      draining: this.#draining,
      connectors: this.#registry.all.filter((s) => s.ready).map((s) => ({
        name: s.connector,
        session: s.id,
        since: s.since.toISOString(),
        version: s.version,
        address: s.peer,
        unavailableMappings: [...s.unavailable.values()].map((u) => ({ ...u, ...(u.message ? { message: truncate(u.message) } : {}) })),
      })),
      listenerFailures: this.#listenerFailures,
    };
  }

  /**
   * Graceful stop: refuse new connectors and clients, GoAway to every
   * connector, let open streams finish up to `deadlineMs`, then close.
   */
  stop(deadlineMs = this.#config.drainTimeoutMs): Promise<void> {
    this.#stopped ??= this.#stop(deadlineMs);
    return this.#stopped;
  }

  async #stop(deadlineMs: number): Promise<void> {
    this.#draining = true;
    this.#reporter?.trigger(); // the operator learns at once that this worker is going away
    const sessions = this.#registry.all;
    this.#log.info({ sessions: sessions.length, deadlineMs }, `draining: ${sessions.length} connector session(s), up to ${deadlineMs} ms for open streams`);
    this.#tlsWatcher?.stop();
    this.#configWatcher?.stop();
    const serverClosed = this.#server?.stopAccepting();
    await this.#listeners.close();
    await Promise.all(sessions.map((s) => s.drain(deadlineMs)));
    this.#server?.closeAll();
    // A peer that never answers the close must not hold the exit.
    await Promise.race([serverClosed, new Promise((r) => setTimeout(r, 2_000).unref())]);
    await this.#reporter?.stop({ finalReport: true });
    await this.#admin?.close();
    this.#log.info('worker stopped');
  }

  async #reloadConfig(next: WorkerConfig): Promise<void> {
    const fixed: Array<keyof WorkerConfig> = ['connection', 'listen', 'tls', 'admin', 'instance', 'audit', 'operator'];
    const needRestart = fixed.filter((k) => JSON.stringify(next[k]) !== JSON.stringify(this.#config[k]));
    if (needRestart.length > 0) {
      this.#log.warn({ fields: needRestart }, `config file changed ${needRestart.join(', ')}; those take effect after a restart (mappings apply now)`);
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
      onDesired: (d) => this.#applyDesired(d.mappings),
      logger: this.#log,
    });
    this.#reporter.start();
  }

  /** A mapping set from the operator: checked against this worker's own ports, ignored while draining. */
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

  #onConnector(accepted: AcceptedConnector): void {
    const session = new ConnectorSession(accepted, {
      connection: this.#connection,
      instance: this.#config.instance,
      mux: { keepaliveIntervalMs: this.#config.keepalive.intervalMs, keepaliveTimeoutMs: this.#config.keepalive.timeoutMs },
      logger: this.#log,
    });
    this.#registry.add(session);
    session.mux.on('rtt', (ms) => this.metrics.keepaliveRtt.set({ peer: session.connector }, ms / 1000));
    session.on('ready', () => {
      this.metrics.sessions.inc({ role: 'worker' });
      session.sendConfig(this.#configMessage());
      this.#reporter?.trigger();
      this.#log.info({ connector: session.connector, peer: session.peer, session: session.id, version: session.version },
        `connector "${session.connector}" connected from ${session.peer} (version ${session.version})`);
      this.#audit.write({ event: 'session-opened', connection: this.#connection, connector: session.connector, worker: this.#config.instance, peer: session.peer, session: session.id });
    });
    session.on('mapping-status', (entries) => {
      this.#reporter?.trigger();
      for (const e of entries.filter((x) => x.state !== 'Ready')) {
        this.#log.warn({ connector: session.connector, mapping: e.name, state: e.state, reason: e.reason },
          `connector "${session.connector}" cannot serve mapping "${e.name}": ${e.state}${e.reason ? ` (${e.reason})` : ''}${e.message ? `: ${e.message}` : ''}`);
      }
    });
    session.on('stream', (stream) => {
      void serveStream(this.#env, { connector: session.connector, worker: this.#config.instance }, stream, (req) => this.#resolveClusterTarget(req));
    });
    session.on('close', (err) => {
      const wasReady = this.#registry.all.includes(session) && session.version !== '';
      this.#registry.remove(session);
      if (!wasReady) return;
      this.#reporter?.trigger();
      this.metrics.sessions.dec({ role: 'worker' });
      const durationMs = Date.now() - session.since.getTime();
      this.#log.info({ connector: session.connector, session: session.id, err: err?.message },
        `connector "${session.connector}" disconnected${err ? `: ${err.message}` : ''}`);
      this.#audit.write({
        event: 'session-closed', connection: this.#connection, connector: session.connector, worker: this.#config.instance,
        peer: session.peer, session: session.id, durationMs, ...(err ? { reason: (err as { code?: string }).code ?? 'ERROR', message: err.message } : {}),
      });
    });
  }

  #resolveClusterTarget(req: OpenRequest): Resolution {
    const mapping = this.#mappings.get(req.mapping);
    if (!mapping) return { ok: false, code: 'UNKNOWN_MAPPING', message: `this worker has no mapping "${req.mapping}"` };
    if (mapping.target.side !== 'Cluster') {
      return { ok: false, code: 'WRONG_SIDE', message: `mapping "${mapping.name}" targets the Connector side; the worker does not dial it`, mapping };
    }
    if (this.#draining) return { ok: false, code: 'SHUTTING_DOWN', message: 'this worker is draining', mapping };
    const sourceHost = req.source.startsWith('[') ? req.source.slice(1, req.source.indexOf(']')) : req.source.split(':')[0];
    if (!sourceAllowed(mapping, sourceHost)) {
      return { ok: false, code: 'SOURCE_NOT_ALLOWED', message: `${req.source} is outside allowedSources of mapping "${mapping.name}"`, mapping };
    }
    return { ok: true, mapping, dial: mapping.target, target: formatHostPort(mapping.target) };
  }

  #onDenied(d: Denial): void {
    this.metrics.handshakeFailures.inc({ reason: d.reason });
    this.#log.warn({ peer: d.peer, reason: d.reason, status: d.status }, `refused tunnel connection from ${d.peer}: ${d.message}`);
    this.#audit.write({ event: 'session-denied', connection: this.#connection, worker: this.#config.instance, peer: d.peer, reason: d.reason, message: d.message });
  }

  #reloadTls(m: TlsMaterial): void {
    this.#server?.reloadTls(m); // throws on a cert/key mismatch; the watcher retries
    this.#recordCertificate(m);
    this.#log.info('reloaded TLS certificate; new connector handshakes use it, established sessions continue');
  }

  #recordCertificate(m: TlsMaterial): void {
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

/** Free text in reports stays within what the operator accepts (MAX_MESSAGE_CHARS there). */
const MAX_REPORTED_MESSAGE = 512;

function truncate(message: string): string {
  return message.length <= MAX_REPORTED_MESSAGE ? message : `${message.slice(0, MAX_REPORTED_MESSAGE - 1)}…`;
}
