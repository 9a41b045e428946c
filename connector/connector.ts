/**
 * The private-network end. Dials every configured worker URL, serves the
 * streams workers open for Connector-side mappings (only when the mapping
 * names the target *and* the local allow-list permits it), and listens on this
 * host for Cluster-side mappings (only where the local bind list permits).
 * Never accepts inbound tunnel connections.
 */
import { X509Certificate } from 'node:crypto';
import dns from 'node:dns/promises';
import net from 'node:net';
import type { Logger } from 'pino';
import { AdminServer } from '../tunnel/admin.js';
import type { AuditLog } from '../tunnel/audit.js';
import { formatHostPort } from '../tunnel/address.js';
import type { ConfigMessage, MappingStatusEntry } from '../tunnel/control.js';
import { errorMessage, UnderpassError } from '../tunnel/errors.js';
import { MappingListeners } from '../tunnel/listeners.js';
import type { Mapping } from '../tunnel/mapping.js';
import { muxLimits } from '../tunnel/limits.js';
import type { DialDecision, Lookup } from '../tunnel/policy.js';
import { TunnelMetrics } from '../tunnel/metrics.js';
import type { OpenRequest } from '../tunnel/open.js';
import { certificateInfo, connectionFromCA, pemCertificates } from '../tunnel/pki.js';
import { identityFromCertificate } from '../tunnel/identity.js';
import { carryClient, serveStream, type Carrier, type FlowEnv, type Resolution } from '../tunnel/stream-flow.js';
import type { TlsMaterial } from '../tunnel/transport/tls-files.js';
import { VERSION } from '../tunnel/version.js';
import type { ConnectorConfig } from './config.js';
import { WorkerLink } from './link.js';
import { Credentials } from './credentials.js';
import { CertificateRenewer } from './renewer.js';
import { StateSecret } from './state-secret.js';

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

export class Connector {
  readonly #config: ConnectorConfig;
  readonly #log: Logger;
  readonly #audit: AuditLog;
  readonly #lookup: Lookup;
  readonly metrics: TunnelMetrics;
  readonly #links: WorkerLink[];
  readonly #credentials: Credentials;
  readonly #renewer: CertificateRenewer;
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
    this.#links = config.workers.map((url) => {
      const link = new WorkerLink(url, {
        name: config.name,
        credentials: () => this.#credentials.material(),
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
      link.on('trust', (ca) => void this.#trust(ca));
      link.on('stream', (channel) => {
        serveStream(this.#env(), { connector: config.name, worker: link.welcome?.worker.instance ?? url.host }, channel, (req) => this.#resolveTarget(req));
      });
      return link;
    });
    this.#renewer = new CertificateRenewer({ name: config.name, credentials: this.#credentials, links: this.#links, log: this.#log, registry: this.metrics.registry });
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
    this.#runs = [...this.#links.map((l) => l.run(this.#abort.signal)), this.#renewer.run(this.#abort.signal)];
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
      allow: this.#config.allowRules,
      allowAll: this.#config.dial.allowAll,
      bind: this.#config.bindRules,
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
    for (const m of msg.mappings.filter((x) => x.target.side === 'Cluster')) {
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
    if (this.#abort.signal.aborted) return { ok: false, code: 'SHUTTING_DOWN', message: 'this connector is stopping', mapping };
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
      const signer = firstCertificate(caPem);
      const mine = this.#credentials.current;
      if (signer && mine && !new X509Certificate(mine.cert).checkIssued(signer)) {
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

/** The first certificate of a PEM bundle. */
function firstCertificate(pem: string): X509Certificate | undefined {
  const m = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/.exec(pem);
  return m ? new X509Certificate(m[0]) : undefined;
}
