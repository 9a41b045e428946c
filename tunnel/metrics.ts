/**
 * Prometheus metrics for the worker and the connector: a registry of our own
 * (never the global one), every name prefixed `underpass_`, labels bounded
 * (mapping names, outcomes, reasons — never client addresses).
 */
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
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

interface HistogramValue {
  metricName: string;
  labels: Record<string, string | number>;
  sharedLabels: Record<string, string>;
  value: number;
}

interface HistogramData {
  name: string;
  help: string;
  type: 'histogram';
  values: HistogramValue[];
  aggregator: 'sum';
}

/** One label set's buckets (non-cumulative; the last one is +Inf), sum and count. */
interface HistogramSeries {
  labels: Record<string, string>;
  counts: number[];
  sum: number;
  count: number;
}

/**
 * A histogram by mapping and result, kept as plain numbers and registered with the registry as a
 * prom-client metric (`get()`, the interface the registry reads every metric through; the
 * exposition is the same as prom-client's `Histogram`). Why not `Histogram` itself: every
 * observation there hashes its labels and counts into an object keyed by the bucket's bound as a
 * string, a number-to-string conversion per call — with one observation per dialled connection,
 * 2–3 % of a connector's CPU per connection in the connection-rate row.
 */
export class DialHistogram {
  readonly name: string;
  readonly help: string;
  readonly type = 'histogram';
  readonly aggregator = 'sum';
  readonly upperBounds: readonly number[];
  /** mapping → result → series */
  readonly #series = new Map<string, Map<string, HistogramSeries>>();

  constructor(config: { name: string; help: string; buckets: number[]; registers: Registry[] }) {
    this.name = config.name;
    this.help = config.help;
    this.upperBounds = [...config.buckets].sort((a, b) => a - b);
    for (const r of config.registers) r.registerMetric(this as never);
  }

  observe(mapping: string, result: string, seconds: number): void {
    if (!Number.isFinite(seconds)) return;
    let byResult = this.#series.get(mapping);
    if (byResult === undefined) this.#series.set(mapping, (byResult = new Map()));
    let s = byResult.get(result);
    if (s === undefined) byResult.set(result, (s = { labels: { mapping, result }, counts: new Array<number>(this.upperBounds.length + 1).fill(0), sum: 0, count: 0 }));
    const bounds = this.upperBounds;
    let i = 0;
    while (i < bounds.length && seconds > bounds[i]!) i++;
    s.counts[i]!++;
    s.sum += seconds;
    s.count++;
  }

  /** What the registry prints: as prom-client's Histogram gives it (`le` first, the series' labels shared). */
  getForPromString(): HistogramData {
    const values: HistogramValue[] = [];
    for (const byResult of this.#series.values()) {
      for (const s of byResult.values()) {
        let cumulative = 0;
        for (let i = 0; i <= this.upperBounds.length; i++) {
          cumulative += s.counts[i]!;
          const le = i < this.upperBounds.length ? this.upperBounds[i]! : '+Inf';
          values.push({ metricName: `${this.name}_bucket`, labels: { le }, sharedLabels: s.labels, value: cumulative });
        }
        values.push({ metricName: `${this.name}_sum`, labels: {}, sharedLabels: s.labels, value: s.sum });
        values.push({ metricName: `${this.name}_count`, labels: {}, sharedLabels: s.labels, value: s.count });
      }
    }
    return { name: this.name, help: this.help, type: 'histogram', values, aggregator: 'sum' };
  }

  /** The same values with every series' labels in each value, as prom-client's `Histogram.get()`. */
  get(): HistogramData {
    const data = this.getForPromString();
    data.values = data.values.map(({ sharedLabels, labels, ...rest }) => ({ ...rest, labels: { ...labels, ...sharedLabels }, sharedLabels: {} }));
    return data;
  }

  reset(): void {
    this.#series.clear();
  }
}

export class TunnelMetrics {
  readonly registry = new Registry();
  readonly sessions: Gauge<'role'>;
  readonly streamsOpen: Gauge<'mapping'>;
  readonly streamsTotal: Counter<'mapping' | 'outcome' | 'reason'>;
  readonly bytes: Counter<'mapping' | 'direction'>;
  readonly dialSeconds: DialHistogram;
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
    this.dialSeconds = new DialHistogram({
      name: 'underpass_dial_duration_seconds',
      help: 'Time to connect to a mapping target, by mapping and result.',
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
