/**
 * The private-network end. Keeps a session with every worker of the
 * connection, found through the configured URL(s) (connector/mesh.ts,
 * docs/ha.md), serves the streams workers open for Connector-side mappings
 * (only when the mapping names the target *and* the local allow-list permits
 * it), and listens on this host for Cluster-side mappings (only where the
 * local bind list permits). Never accepts inbound tunnel connections.
 */
import { X509Certificate } from 'node:crypto';
import dns from 'node:dns/promises';
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import type { Logger } from 'pino';
import { AdminServer } from '../tunnel/admin.js';
import { CarrierOrder, type CarrierSource } from '../tunnel/carrier-order.js';
import { closeWhenQuiet } from '../tunnel/drain-listeners.js';
import type { AuditLog } from '../tunnel/audit.js';
import { formatHostPort } from '../tunnel/address.js';
import type { ConfigMessage, MappingStatusEntry } from '../tunnel/control.js';
import { errorMessage, UnderpassError } from '../tunnel/errors.js';
import { MappingListeners } from '../tunnel/listeners.js';
import { boundTo, type Mapping } from '../tunnel/mapping.js';
import { muxLimits } from '../tunnel/limits.js';
import type { DialDecision, Lookup } from '../tunnel/policy.js';
import { TunnelMetrics } from '../tunnel/metrics.js';
import type { OpenRequest } from '../tunnel/open.js';
import { certificateInfo, connectionFromCA, pemCertificates } from '../tunnel/pki.js';
import { identityFromCertificate } from '../tunnel/identity.js';
import { carryClient, serveStream, type FlowEnv, type Resolution } from '../tunnel/stream-flow.js';
import type { TlsMaterial } from '../tunnel/transport/tls-files.js';
import { VERSION } from '../tunnel/version.js';
import type { ConnectorConfig } from './config.js';
import type { WorkerLink } from './link.js';
import { Mesh } from './mesh.js';
import { Credentials } from './credentials.js';
import { CertificateRenewer } from './renewer.js';
import { StateSecret } from './state-secret.js';
import { renewForTrust } from './trust-renewal.js';

export interface ConnectorDeps {
  logger: Logger;
  audit: AuditLog;
  metrics?: TunnelMetrics;
  /** How a permitted host name becomes the address dialled (default: the system resolver, first address). */
  lookup?: Lookup;
}

async function systemLookup(host: string): Promise<string> {
  return (await dns.lookup(host)).address;
}

/** How a connector orders its links for a new stream (the key is the connector's name). */
const LINK_ORDER: CarrierSource<WorkerLink, string> = {
  preferred: (link) => link.serving,
  fallback: (link) => !link.serving && link.usable && !link.retired,
  carrier: (link, connector) => ({ session: link.session, connector, worker: link.instance }),
};

export class Connector {
  readonly #config: ConnectorConfig;
  readonly #log: Logger;
  readonly #audit: AuditLog;
  readonly #lookup: Lookup;
  readonly metrics: TunnelMetrics;
  readonly #mesh: Mesh;
  readonly #credentials: Credentials;
  readonly #renewer: CertificateRenewer;
  readonly #listeners: MappingListeners;
  readonly #abort = new AbortController();
  /** The drain delay is over: sessions are being retired, streams workers still open are refused. */
  #retiring = false;
  /** Aborted by a second stop request with deadline 0: skip what is left of the drain delay. */
  readonly #hurry = new AbortController();
  #mappings = new Map<string, Mapping>();
  #revision = -1;
  #connection = '';
  #next = 0;
  #admin: AdminServer | undefined;
  #run: Promise<void> | undefined;
  #stopped: Promise<void> | undefined;

  constructor(config: ConnectorConfig, deps: ConnectorDeps) {
    this.#config = config;
    this.#log = deps.logger.child({ connector: config.name });
    this.#audit = deps.audit;
    this.#lookup = deps.lookup ?? systemLookup;
    this.metrics = deps.metrics ?? new TunnelMetrics('connector');
    this.#listeners = new MappingListeners({
      logger: this.#log,
      where: 'connector',
      onConnection: (mapping, socket) => carryClient(this.#env(), mapping, socket, this.#candidates(), { self: { connector: config.name, worker: '' } }),
    });
    this.#credentials = new Credentials(config.tls, this.#log);
    if (config.stateSecret) {
      const secret = new StateSecret({ ...config.stateSecret, files: config.tls, log: this.#log });
      this.#credentials.onPersisted = () => secret.save();
    }
    this.#mesh = new Mesh({
      urls: config.workers,
      name: config.name,
      credentials: () => this.#credentials.material(),
      mux: { keepaliveIntervalMs: config.keepalive.intervalMs, keepaliveTimeoutMs: config.keepalive.timeoutMs, ...muxLimits(config.limits) },
      reconnect: config.reconnect,
      logger: this.#log,
      metrics: this.metrics,
      onTls: (m) => this.#recordCertificate(m),
    }, this.metrics.registry);
    this.#mesh.on('up', (link) => {
      this.#connection = link.welcome.connection;
      this.metrics.sessions.inc({ role: 'connector' });
      this.#audit.write({
        event: 'session-opened', connection: link.welcome.connection, connector: config.name, worker: link.instance, peer: link.url.host, session: link.welcome.session,
      });
    });
    this.#mesh.on('down', (link, err) => {
      this.metrics.sessions.dec({ role: 'connector' });
      this.#audit.write({
        event: 'session-closed', connection: this.#connection, connector: config.name, worker: link.instance, peer: link.url.host, session: link.welcome.session,
        ...(err ? { reason: (err as { code?: string }).code ?? 'ERROR', message: err.message } : {}),
      });
    });
    this.#mesh.on('config', (link, msg) => void this.#applyConfig(link, msg));
    this.#mesh.on('trust', (_link, ca) => void this.#trust(ca));
    this.#mesh.on('stream', (link, channel) => {
      serveStream(this.#env(), { connector: config.name, worker: link.instance }, channel, (req) => this.#resolveTarget(req));
    });
    this.#renewer = new CertificateRenewer({ name: config.name, credentials: this.#credentials, mesh: this.#mesh, log: this.#log, registry: this.metrics.registry });
  }

  async start(): Promise<{ admin?: net.AddressInfo }> {
    const c = this.#config;
    this.#logPolicy();
    let admin: net.AddressInfo | undefined;
    if (c.admin) {
      this.#admin = new AdminServer({ registry: this.metrics.registry, notReadyReason: () => this.notReadyReason(), status: () => this.status() }, this.#log);
      admin = await this.#admin.listen(c.admin);
    }
    this.#log.info({ workers: c.workers.map((u) => u.href), version: VERSION }, `connector "${c.name}" starting; dialling ${c.workers.map((u) => u.href).join(', ')}`);
    this.#run = Promise.all([this.#mesh.run(this.#abort.signal), this.#renewer.run(this.#abort.signal)]).then(() => undefined);
    return admin ? { admin } : {};
  }

  notReadyReason(): string | undefined {
    if (this.#abort.signal.aborted) return 'stopping';
    if (!this.#mesh.links.some((l) => l.usable)) return `not connected to any worker (${this.#mesh.lastError ?? 'connecting'})`;
    return undefined;
  }

  listenerAddress(mapping: string): net.AddressInfo | undefined {
    return this.#listeners.address(mapping);
  }

  /** Worker sessions that take new streams (tests, demo). */
  connectedCount(): number {
    return this.#mesh.links.filter((l) => l.serving).length;
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
      workers: [
        ...this.#mesh.links.map((l) => ({
          url: l.url.href,
          connected: l.usable,
          worker: l.instance,
          session: l.welcome.session,
          since: l.since.toISOString(),
          draining: l.draining,
        })),
        // A URL through which no session is up, with why (as before the mesh, one entry per URL).
        ...this.#mesh.endpoints().filter((e) => !this.#mesh.links.some((l) => l.url === e.url))
          .map((e) => ({ url: e.url.href, connected: false, lastError: e.lastError ?? 'connecting' })),
      ],
      mesh: this.#mesh.status(),
      allow: this.#config.allowRules,
      allowAll: this.#config.dial.allowAll,
      bind: this.#config.bindRules,
      mappings: [...this.#mappings.values()].map((m) => ({ name: m.name, side: m.target.side, target: formatHostPort(m.target) })),
    };
  }

  /**
   * SIGTERM path (docs/ha.md, Drain): not ready at once, no new sessions,
   * `draining` to mesh workers (they prefer other connectors); listeners stay
   * open for `drainDelay`; then they close, every session is retired (workers
   * stop opening streams here and say so), GoAway to workers, open streams
   * finish up to the deadline. A second call with deadline 0 skips what is
   * left of the delay.
   */
  stop(deadlineMs = this.#config.drainTimeoutMs): Promise<void> {
    if (deadlineMs === 0) this.#hurry.abort();
    this.#stopped ??= this.#stop(deadlineMs);
    return this.#stopped;
  }

  async #stop(deadlineMs: number): Promise<void> {
    this.#abort.abort();
    this.#mesh.tellDraining();
    const drainStart = { startedAt: performance.now(), acceptedAtStart: this.#listeners.accepted };
    const delayMs = this.#hurry.signal.aborted ? 0 : this.#config.drainDelayMs;
    this.#log.info({ delayMs, deadlineMs }, `draining: not ready; listeners close in ${delayMs} ms (longer while clients still arrive, at most ${2 * delayMs} ms), then up to ${deadlineMs} ms for open streams`);
    await closeWhenQuiet(this.#listeners, { ...drainStart, delayMs, signal: this.#hurry.signal }, this.metrics, this.#log);
    // Every worker says it opens no more streams here (or RETIRE_ANSWER_MS passes): the GoAway crosses none.
    this.#retiring = true;
    await this.#mesh.retireAll();
    await this.#mesh.drain(deadlineMs);
    await this.#run;
    await this.#admin?.close();
    this.#log.info('connector stopped');
  }

  #env(): FlowEnv {
    return { connection: this.#connection, audit: this.#audit, metrics: this.metrics, log: this.#log };
  }

  /**
   * Links for one new stream, round-robin: serving ones first, then those of
   * draining workers (they accept streams until their GoAway); never a link we retired.
   */
  #candidates(): CarrierOrder<WorkerLink, string> {
    const links = this.#mesh.links;
    return new CarrierOrder(LINK_ORDER, links, links.length === 0 ? 0 : this.#next++ % links.length, this.#config.name);
  }

  /**
   * What this connector agrees to do, said once at start. Default deny on both lists is a breaking
   * change for configs written before it, so the log says exactly what to add.
   */
  #logPolicy(): void {
    const c = this.#config;
    if (c.dial.allowAll) {
      this.#log.warn({ allowAll: true, allow: c.allowRules }, 'allowAll: true: this connector dials any target the worker\'s mappings name, '
        + 'except loopback, link-local and metadata addresses (only an allow rule naming such an address as an IP literal opens it); '
        + 'list the targets in "allow" instead to decide here what may be reached');
    } else if (!c.allowGiven) {
      this.#log.warn(`no "allow" list in ${c.file}: this connector dials nothing, so every Connector-side mapping is refused. `
        + 'Connectors deny by default (before, one without "allow" dialled whatever the mappings named). Add one rule per target, '
        + 'e.g. allow: ["db.internal:5432", "10.0.0.5:443"]: each refused mapping is logged with the exact rule to add, and '
        + '"underpass connector bundle" writes the list for a connection\'s current mappings. Or set allowAll: true to dial whatever the mappings name');
    } else {
      this.#log.info({ allow: c.allowRules }, `local allow-list: ${c.allowRules.join(', ') || '(empty: nothing may be dialled)'}`);
    }
    this.#log.info({ bind: c.bindRules }, `local bind list: ${c.bindRules.join(', ')
      || '(empty: Cluster-side mappings open no listener on this host; add e.g. bind: ["127.0.0.1:18080"])'}`);
  }

  /** A config from any worker replaces the mapping set (all workers of a connection push the same one). */
  async #applyConfig(link: WorkerLink, msg: ConfigMessage): Promise<void> {
    this.#mappings = new Map(msg.mappings.map((m) => [m.name, m]));
    this.#revision = msg.revision;
    const statuses: MappingStatusEntry[] = [];
    /** What the owner of this host would add to permit a refused mapping (logged, not sent). */
    const fixes = new Map<string, string>();
    const bindable: Mapping[] = [];
    for (const m of msg.mappings.filter((x) => x.target.side === 'Cluster').map((x) => boundTo(x, this.#config.bindAddress))) {
      if (this.#config.bind.permits(m.listen.address, m.listen.port)) {
        bindable.push(m);
        continue;
      }
      const listen = formatHostPort({ host: m.listen.address, port: m.listen.port });
      statuses.push({ name: m.name, state: 'Refused', reason: 'BindNotAllowed', message: `listener ${listen} is not on this connector's bind list` });
      fixes.set(m.name, `to open it, add "${listen}" to bind in ${this.#config.file}`);
    }
    const listenResults = await this.#listeners.apply(bindable);
    for (const r of listenResults) {
      statuses.push(r.ok ? { name: r.name, state: 'Ready' } : { name: r.name, state: 'Failed', reason: 'ListenFailed', message: errorMessage(r.error) });
    }
    for (const m of msg.mappings.filter((x) => x.target.side === 'Connector')) {
      const decision = await this.#config.dial.decide(m.target.host, m.target.port, this.#lookup);
      statuses.push(mappingStatus(m, decision));
      if (!decision.ok && decision.rule) fixes.set(m.name, `to permit it, add "${decision.rule}" to allow in ${this.#config.file}`);
    }
    for (const s of statuses.filter((x) => x.state !== 'Ready')) {
      const fix = fixes.get(s.name);
      this.#log.warn({ mapping: s.name, state: s.state, reason: s.reason }, `mapping "${s.name}" ${s.state.toLowerCase()}: ${s.message}${fix ? `; ${fix}` : ''}`);
    }
    link.sendMappingStatus(msg.revision, statuses);
    this.#log.info({ revision: msg.revision, mappings: msg.mappings.length }, `applied mapping set revision ${msg.revision} (${msg.mappings.length} mapping(s))`);
  }

  /** Policy for one stream; synchronous unless a permitted name must be resolved. */
  #resolveTarget(req: OpenRequest): Resolution | Promise<Resolution> {
    const mapping = this.#mappings.get(req.mapping);
    if (!mapping) return { ok: false, code: 'UNKNOWN_MAPPING', message: `connector "${this.#config.name}" has no mapping "${req.mapping}"` };
    if (mapping.target.side !== 'Connector') {
      return { ok: false, code: 'WRONG_SIDE', message: `mapping "${mapping.name}" targets the Cluster side; the connector does not dial it`, mapping };
    }
    // Until the drain delay is over a worker may still open streams here (it has no other connector): serve them.
    if (this.#retiring) return { ok: false, code: 'SHUTTING_DOWN', message: 'this connector is stopping', mapping };
    const { host, port } = mapping.target;
    const pre = this.#config.dial.precheck(host, port);
    if (pre.verdict === 'deny') return { ok: false, code: 'NOT_ALLOWED', message: pre.message, mapping };
    if (pre.verdict === 'dial') return { ok: true, mapping, dial: { host: pre.address, port }, target: formatHostPort(mapping.target) };
    return this.#config.dial.decide(host, port, this.#lookup).then((d): Resolution => {
      if (!d.ok) return { ok: false, code: d.reason === 'NotAllowed' ? 'NOT_ALLOWED' : 'DIAL_FAILED', message: d.message, mapping };
      // Dial the address we checked, not the name again (no DNS rebinding between check and dial).
      return { ok: true, mapping, dial: { host: d.address, port }, target: `${formatHostPort(mapping.target)} (${d.address})` };
    });
  }

  /**
   * The CA certificates the worker says to trust (they change while the
   * connection's CA rotates). The first is the one that signs now: a
   * certificate from another is renewed at once.
   */
  async #trust(caPem: string): Promise<void> {
    try {
      // A worker of this connection may tell us the connection's CAs, and nothing else.
      const mine0 = this.#credentials.current ?? await this.#credentials.material();
      const own = identityFromCertificate(new X509Certificate(mine0.cert));
      const cas = pemCertificates(caPem);
      if (cas.length === 0) throw new UnderpassError('ERR_TRUST', 'no CA certificate in it');
      for (const pem of cas) {
        const c = connectionFromCA(pem);
        if (c.namespace !== own.namespace || c.name !== own.connection) {
          throw new UnderpassError('ERR_TRUST', `it holds a CA of connection ${c.namespace}/${c.name}, not ${own.namespace}/${own.connection}`);
        }
      }
      await this.#credentials.trust(caPem);
      const mine = this.#credentials.current;
      if (mine && renewForTrust(new X509Certificate(mine.cert), cas.map((pem) => new X509Certificate(pem)))) {
        this.#log.info('the connection\'s CA changed: renewing this connector\'s certificate now');
        this.#renewer.renewSoon();
      }
    } catch (err) {
      this.#log.warn({ err: errorMessage(err) }, `cannot use the CA certificates the worker sent: ${errorMessage(err)}`);
    }
  }

  #recordCertificate(m: TlsMaterial): void {
    try {
      this.metrics.certExpiry.set({ certificate: 'connector' }, certificateInfo(m.cert.toString()).notAfter.getTime() / 1000);
    } catch (err) {
      this.#log.warn({ err: errorMessage(err) }, 'cannot read certificate expiry');
    }
  }
}

function mappingStatus(m: Mapping, d: DialDecision): MappingStatusEntry {
  if (d.ok) return { name: m.name, state: 'Ready' };
  return d.reason === 'NotAllowed'
    ? { name: m.name, state: 'Refused', reason: 'NotAllowed', message: d.message }
    : { name: m.name, state: 'Failed', reason: 'ResolveFailed', message: d.message };
}

