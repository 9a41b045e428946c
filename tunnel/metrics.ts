/**
 * Prometheus metrics for the worker and the connector: a registry of our own
 * (never the global one), every name prefixed `underpass_`, labels bounded
 * (mapping names, outcomes, reasons — never client addresses).
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { CONNECTOR_LIMIT_NAMES, LIMIT_NAMES, type LimitName } from './limits.js';
import { Session } from './mux/session.js';

export type Role = 'worker' | 'connector';

/**
 * One mapping label's stream counts as plain numbers: what every connection adds costs a property
 * update here, and prom-client gets the sums when scraped (each metric's `collect`). Through
 * prom-client directly, the five label-keyed updates of a connection (open, closed, finished,
 * bytes in and out) cost about 4 µs, 2–3 % of a worker's or connector's CPU per connection.
 */
class StreamCounts {
  open = 0;
  /** Pending until the next scrape: */
  bytesIn = 0;
  bytesOut = 0;
  closed = 0;
  /** Outcomes other than a clean close, by `outcome\0reason`. */
  other: Map<string, { outcome: string; reason: string; n: number }> | undefined;
}

export class TunnelMetrics {
  readonly registry = new Registry();
  readonly sessions: Gauge<'role'>;
  readonly streamsOpen: Gauge<'mapping'>;
  readonly streamsTotal: Counter<'mapping' | 'outcome' | 'reason'>;
  readonly bytes: Counter<'mapping' | 'direction'>;
  readonly dialSeconds: Histogram<'mapping' | 'result'>;
  readonly handshakeFailures: Counter<'reason'>;
  readonly reconnects: Counter<'worker'>;
  readonly keepaliveRtt: Gauge<'peer'>;
  readonly certExpiry: Gauge<'certificate'>;
  readonly limitRefusals: Counter<'limit'>;
  readonly logLinesSuppressed: Counter<'kind'>;
  readonly streamBuffer: Gauge;
  readonly drainClients: Counter<'phase'>;

  constructor(readonly role: Role, options: { defaultMetrics?: boolean } = {}) {
    const registers = [this.registry];
    this.registry.setDefaultLabels({ role });
    if (options.defaultMetrics !== false) collectDefaultMetrics({ register: this.registry, prefix: 'underpass_' });
    this.sessions = new Gauge({ name: 'underpass_sessions', help: 'Tunnel sessions currently established (worker: connectors attached; connector: workers reached).', labelNames: ['role'], registers });
    const counts = this.#streams;
    this.streamsOpen = new Gauge({
      name: 'underpass_streams_open', help: 'Application streams currently open, by mapping.', labelNames: ['mapping'], registers,
      collect() {
        for (const [mapping, c] of counts) this.set({ mapping }, c.open);
      },
    });
    this.streamsTotal = new Counter({
      name: 'underpass_streams_total', help: 'Application streams finished, by mapping, outcome (closed, refused, failed) and reason.', labelNames: ['mapping', 'outcome', 'reason'], registers,
      collect() {
        for (const [mapping, c] of counts) {
          if (c.closed > 0) this.inc({ mapping, outcome: 'closed', reason: '' }, c.closed);
          c.closed = 0;
          if (c.other === undefined) continue;
          for (const o of c.other.values()) {
            if (o.n > 0) this.inc({ mapping, outcome: o.outcome, reason: o.reason }, o.n);
            o.n = 0;
          }
        }
      },
    });
    this.bytes = new Counter({
      name: 'underpass_stream_bytes_total', help: 'Application bytes carried, by mapping and direction (in = client to target, out = target to client).', labelNames: ['mapping', 'direction'], registers,
      collect() {
        for (const [mapping, c] of counts) {
          if (c.bytesIn > 0) this.inc({ mapping, direction: 'in' }, c.bytesIn);
          if (c.bytesOut > 0) this.inc({ mapping, direction: 'out' }, c.bytesOut);
          c.bytesIn = 0;
          c.bytesOut = 0;
        }
      },
    });
    this.dialSeconds = new Histogram({
      name: 'underpass_dial_duration_seconds',
      help: 'Time to connect to a mapping target, by mapping and result.',
      labelNames: ['mapping', 'result'],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    });
    this.handshakeFailures = new Counter({ name: 'underpass_handshake_failures_total', help: 'Tunnel handshakes that failed, by reason.', labelNames: ['reason'], registers });
    this.reconnects = new Counter({ name: 'underpass_reconnects_total', help: 'Connector reconnect attempts, by worker URL.', labelNames: ['worker'], registers });
    this.keepaliveRtt = new Gauge({ name: 'underpass_keepalive_rtt_seconds', help: 'Last keepalive round-trip time, by peer (worker: connector name; connector: worker URL).', labelNames: ['peer'], registers });
    this.certExpiry = new Gauge({ name: 'underpass_certificate_expiry_timestamp_seconds', help: 'Expiry time (Unix seconds) of the certificates in use.', labelNames: ['certificate'], registers });
    this.limitRefusals = new Counter({ name: 'underpass_limit_refusals_total', help: 'Times a peer ran into a limit (docs/security.md, Limits), by limit.', labelNames: ['limit'], registers });
    this.logLinesSuppressed = new Counter({ name: 'underpass_log_lines_suppressed_total', help: 'Log and audit lines a peer provoked beyond the per-peer rate, counted instead of written (a summary line says how many), by kind.', labelNames: ['kind'], registers });
    this.streamBuffer = new Gauge({
      name: 'underpass_stream_buffer_bytes',
      help: 'Bytes the tunnel sessions hold for targets and clients that have not taken them yet, all sessions together (each session is limited to limits.streamBufferBytes).',
      registers,
      collect() {
        this.set(Session.streamBytesHeldTotal);
      },
    });
    this.drainClients = new Counter({
      name: 'underpass_drain_client_connections_total',
      help: 'Client connections accepted while draining, by phase: delay (within drainDelay) or extended (after it, while clients still arrived: load balancers slower than drainDelay).',
      labelNames: ['phase'], registers,
    });
    for (const phase of ['delay', 'extended']) this.drainClients.inc({ phase }, 0);
    // Every limit this role enforces has a series from the start, so "never hit" reads as 0.
    for (const limit of role === 'worker' ? LIMIT_NAMES : CONNECTOR_LIMIT_NAMES) this.limitRefusals.inc({ limit }, 0);
  }

  /** A stream of `mapping` (a configured name) started relaying. */
  streamOpened(mapping: string): void {
    this.#counts(mapping).open++;
  }

  /** …and stopped. */
  streamClosed(mapping: string): void {
    this.#counts(mapping).open--;
  }

  /**
   * A stream finished: `label` is a configured mapping name, "" or "(unknown)" (stream-flow.ts),
   * never a name a peer made up.
   */
  streamFinished(label: string, outcome: string, reason: string, bytesIn: number, bytesOut: number): void {
    const c = this.#counts(label);
    c.bytesIn += bytesIn;
    c.bytesOut += bytesOut;
    if (outcome === 'closed' && reason === '') {
      c.closed++;
      return;
    }
    const key = `${outcome}\0${reason}`;
    const other = (c.other ??= new Map());
    const o = other.get(key);
    if (o) o.n++;
    else other.set(key, { outcome, reason, n: 1 });
  }

  readonly #streams = new Map<string, StreamCounts>();

  #counts(label: string): StreamCounts {
    let c = this.#streams.get(label);
    if (c === undefined) this.#streams.set(label, (c = new StreamCounts()));
    return c;
  }

  /** Counts one refusal at `limit` (a name of tunnel/limits.ts; nothing else becomes a label). */
  limitHit(limit: LimitName): void {
    this.limitRefusals.inc({ limit });
  }
}
