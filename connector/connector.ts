/**
 * The private-network end. Dials every configured worker URL, serves the
 * streams workers open for Connector-side mappings (only when the mapping
 * names the target *and* the local allow-list permits it), and listens on this
 * host for Cluster-side mappings. Never accepts inbound tunnel connections.
 */
import dns from 'node:dns/promises';
import net from 'node:net';
import type { Logger } from 'pino';
import { AdminServer } from '../tunnel/admin.js';
import type { AuditLog } from '../tunnel/audit.js';
import { formatHostPort } from '../tunnel/address.js';
import type { ConfigMessage, MappingStatusEntry } from '../tunnel/control.js';
import { errorMessage } from '../tunnel/errors.js';
import { MappingListeners } from '../tunnel/listeners.js';
import type { Mapping } from '../tunnel/mapping.js';
import { muxLimits } from '../tunnel/limits.js';
import { TunnelMetrics } from '../tunnel/metrics.js';
import type { OpenRequest } from '../tunnel/open.js';
import { certificateInfo } from '../tunnel/pki.js';
import { carryClient, serveStream, type Carrier, type FlowEnv, type Resolution } from '../tunnel/stream-flow.js';
import type { TlsMaterial } from '../tunnel/transport/tls-files.js';
import { VERSION } from '../tunnel/version.js';
import type { ConnectorConfig } from './config.js';
import { WorkerLink } from './link.js';

export interface ConnectorDeps {
  logger: Logger;
  audit: AuditLog;
  metrics?: TunnelMetrics;
}

export class Connector {
  readonly #config: ConnectorConfig;
  readonly #log: Logger;
  readonly #audit: AuditLog;
  readonly metrics: TunnelMetrics;
  readonly #links: WorkerLink[];
  readonly #listeners: MappingListeners;
  readonly #abort = new AbortController();
  #mappings = new Map<string, Mapping>();
  #revision = -1;
  #connection = '';
  #next = 0;
  #admin: AdminServer | undefined;
  #runs: Promise<void>[] = [];
  #stopped: Promise<void> | undefined;

  constructor(config: ConnectorConfig, deps: ConnectorDeps) {
    this.#config = config;
    this.#log = deps.logger.child({ connector: config.name });
    this.#audit = deps.audit;
    this.metrics = deps.metrics ?? new TunnelMetrics('connector');
    this.#listeners = new MappingListeners({
      logger: this.#log,
      where: 'connector',
      onConnection: (mapping, socket) => carryClient(this.#env(), mapping, socket, this.#candidates(), { self: { connector: config.name, worker: '' } }),
    });
    this.#links = config.workers.map((url) => {
      const link = new WorkerLink(url, {
        name: config.name,
        tls: config.tls,
        mux: { keepaliveIntervalMs: config.keepalive.intervalMs, keepaliveTimeoutMs: config.keepalive.timeoutMs, ...muxLimits(config.limits) },
        reconnect: config.reconnect,
        logger: this.#log,
        metrics: this.metrics,
        onTls: (m) => this.#recordCertificate(m),
      });
      link.on('up', (welcome) => {
        this.#connection = welcome.connection;
        this.metrics.sessions.inc({ role: 'connector' });
        this.#audit.write({ event: 'session-opened', connection: welcome.connection, connector: config.name, worker: welcome.worker.instance, peer: url.host, session: welcome.session });
      });
      link.on('down', (err) => {
        this.metrics.sessions.dec({ role: 'connector' });
        this.#audit.write({
          event: 'session-closed', connection: this.#connection, connector: config.name, peer: url.host,
          ...(err ? { reason: (err as { code?: string }).code ?? 'ERROR', message: err.message } : {}),
        });
      });
      link.on('config', (msg) => void this.#applyConfig(link, msg));
      link.on('stream', (channel) => {
        serveStream(this.#env(), { connector: config.name, worker: link.welcome?.worker.instance ?? url.host }, channel, (req) => this.#resolveTarget(req));
      });
      return link;
    });
  }

  async start(): Promise<{ admin?: net.AddressInfo }> {
    const c = this.#config;
    if (c.allow) {
      this.#log.info({ allow: c.allowRules }, `local allow-list: ${c.allowRules?.join(', ') || '(empty: nothing may be dialled)'}`);
    } else {
      this.#log.warn('no local allow-list (`allow`): this connector dials whatever targets the worker\'s mappings name; set `allow` to restrict it');
    }
    let admin: net.AddressInfo | undefined;
    if (c.admin) {
      this.#admin = new AdminServer({ registry: this.metrics.registry, notReadyReason: () => this.notReadyReason(), status: () => this.status() }, this.#log);
      admin = await this.#admin.listen(c.admin);
    }
    this.#log.info({ workers: c.workers.map((u) => u.href), version: VERSION }, `connector "${c.name}" starting; dialling ${c.workers.map((u) => u.href).join(', ')}`);
    this.#runs = this.#links.map((l) => l.run(this.#abort.signal));
    return admin ? { admin } : {};
  }

  notReadyReason(): string | undefined {
    if (this.#abort.signal.aborted) return 'stopping';
    if (!this.#links.some((l) => l.session)) return `not connected to any worker (${this.#links.map((l) => l.lastError ?? 'connecting').join('; ')})`;
    return undefined;
  }

  listenerAddress(mapping: string): net.AddressInfo | undefined {
    return this.#listeners.address(mapping);
  }

  /** Resolves once `n` worker sessions are up (tests, demo). */
  connectedCount(): number {
    return this.#links.filter((l) => l.session).length;
  }

  get revision(): number {
    return this.#revision;
  }

  status(): unknown {
    return {
      connector: this.#config.name,
      version: VERSION,
      connection: this.#connection,
      ready: this.notReadyReason() === undefined,
      workers: this.#links.map((l) => ({
        url: l.url.href,
        connected: Boolean(l.session),
        worker: l.welcome?.worker.instance,
        session: l.welcome?.session,
        lastError: l.lastError,
      })),
      allow: this.#config.allowRules ?? null,
      mappings: [...this.#mappings.values()].map((m) => ({ name: m.name, side: m.target.side, target: formatHostPort(m.target) })),
    };
  }

  /** SIGTERM path: stop listening, GoAway to workers, let streams finish up to the deadline. */
  stop(deadlineMs = this.#config.drainTimeoutMs): Promise<void> {
    this.#stopped ??= this.#stop(deadlineMs);
    return this.#stopped;
  }

  async #stop(deadlineMs: number): Promise<void> {
    this.#log.info({ deadlineMs }, `draining: up to ${deadlineMs} ms for open streams`);
    this.#abort.abort();
    await this.#listeners.close();
    await Promise.all(this.#links.map((l) => l.drain(deadlineMs)));
    await Promise.all(this.#runs);
    await this.#admin?.close();
    this.#log.info('connector stopped');
  }

  #env(): FlowEnv {
    return { connection: this.#connection, audit: this.#audit, metrics: this.metrics, log: this.#log };
  }

  *#candidates(): Generator<Carrier> {
    const n = this.#links.length;
    const start = this.#next++ % n;
    for (let i = 0; i < n; i++) {
      const link = this.#links[(start + i) % n]!;
      const session = link.session;
      if (session) yield { session, connector: this.#config.name, worker: link.welcome?.worker.instance ?? link.url.host };
    }
  }

  /** A config from any worker replaces the mapping set (all workers of a connection push the same one). */
  async #applyConfig(link: WorkerLink, msg: ConfigMessage): Promise<void> {
    this.#mappings = new Map(msg.mappings.map((m) => [m.name, m]));
    this.#revision = msg.revision;
    const listenResults = await this.#listeners.apply(msg.mappings.filter((m) => m.target.side === 'Cluster'));
    const statuses: MappingStatusEntry[] = [];
    for (const r of listenResults) {
      statuses.push(r.ok ? { name: r.name, state: 'Ready' } : { name: r.name, state: 'Failed', reason: 'ListenFailed', message: errorMessage(r.error) });
    }
    for (const m of msg.mappings.filter((x) => x.target.side === 'Connector')) statuses.push(await this.#checkPolicy(m));
    for (const s of statuses.filter((x) => x.state !== 'Ready')) {
      this.#log.warn({ mapping: s.name, state: s.state, reason: s.reason }, `mapping "${s.name}" ${s.state.toLowerCase()}: ${s.message}`);
    }
    link.sendMappingStatus(msg.revision, statuses);
    this.#log.info({ revision: msg.revision, mappings: msg.mappings.length }, `applied mapping set revision ${msg.revision} (${msg.mappings.length} mapping(s))`);
  }

  async #checkPolicy(m: Mapping): Promise<MappingStatusEntry> {
    const allow = this.#config.allow;
    if (!allow) return { name: m.name, state: 'Ready' };
    const target = formatHostPort(m.target);
    if (allow.permits({ host: m.target.host, port: m.target.port })) return { name: m.name, state: 'Ready' };
    let addresses: string[] = [];
    if (net.isIP(m.target.host) === 0) {
      try {
        addresses = (await dns.lookup(m.target.host, { all: true })).map((a) => a.address);
      } catch (err) {
        return { name: m.name, state: 'Failed', reason: 'ResolveFailed', message: `cannot resolve ${m.target.host}: ${errorMessage(err)}` };
      }
    }
    if (addresses.length > 0 && addresses.every((address) => allow.permits({ host: m.target.host, port: m.target.port, address }))) {
      return { name: m.name, state: 'Ready' };
    }
    return { name: m.name, state: 'Refused', reason: 'NotAllowed', message: `target ${target} is outside this connector's allow list` };
  }

  async #resolveTarget(req: OpenRequest): Promise<Resolution> {
    const mapping = this.#mappings.get(req.mapping);
    if (!mapping) return { ok: false, code: 'UNKNOWN_MAPPING', message: `connector "${this.#config.name}" has no mapping "${req.mapping}"` };
    if (mapping.target.side !== 'Connector') {
      return { ok: false, code: 'WRONG_SIDE', message: `mapping "${mapping.name}" targets the Cluster side; the connector does not dial it`, mapping };
    }
    if (this.#abort.signal.aborted) return { ok: false, code: 'SHUTTING_DOWN', message: 'this connector is stopping', mapping };
    const { host, port } = mapping.target;
    let address = host;
    if (net.isIP(host) === 0) {
      try {
        address = (await dns.lookup(host)).address;
      } catch (err) {
        return { ok: false, code: 'DIAL_FAILED', message: `cannot resolve ${host}: ${errorMessage(err)}`, mapping };
      }
    }
    const target = address === host ? formatHostPort(mapping.target) : `${formatHostPort(mapping.target)} (${address})`;
    const allow = this.#config.allow;
    if (allow && !allow.permits({ host, port, address })) {
      return { ok: false, code: 'NOT_ALLOWED', message: `target ${target} is outside this connector's allow list`, mapping };
    }
    // Dial the address we checked, not the name again (no DNS rebinding between check and dial).
    return { ok: true, mapping, dial: { host: address, port }, target };
  }

  #recordCertificate(m: TlsMaterial): void {
    try {
      this.metrics.certExpiry.set({ certificate: 'connector' }, certificateInfo(m.cert.toString()).notAfter.getTime() / 1000);
    } catch (err) {
      this.#log.warn({ err: errorMessage(err) }, 'cannot read certificate expiry');
    }
  }
}
