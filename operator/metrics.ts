/** The operator's own Prometheus metrics (same conventions as the worker's: own registry, `underpass_` prefix). */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export class OperatorMetrics {
  readonly registry = new Registry();
  readonly reconcileSeconds: Histogram<'kind' | 'result'>;
  readonly reconcileErrors: Counter<'kind'>;
  readonly queueDepth: Gauge;
  readonly leader: Gauge;
  readonly apiWrites: Counter<'verb' | 'resource'>;
  readonly workerReports: Counter<'result'>;
  readonly reportRefusals: Counter<'reason'>;
  readonly reportStoreBytes: Gauge;
  readonly reportStoreReports: Gauge;
  readonly reportStoreEvictions: Counter<'reason'>;
  readonly problems: Gauge<'code'>;

  /** `store`: the report store whose size the gauges show at each scrape. */
  constructor(store?: { readonly bytes: number; readonly size: number }) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry, prefix: 'underpass_operator_' });
    this.reconcileSeconds = new Histogram({ name: 'underpass_operator_reconcile_duration_seconds', help: 'Reconcile duration by kind and result.', labelNames: ['kind', 'result'], buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10], registers });
    this.reconcileErrors = new Counter({ name: 'underpass_operator_reconcile_errors_total', help: 'Reconciles that failed (and were retried with backoff), by kind.', labelNames: ['kind'], registers });
    this.queueDepth = new Gauge({ name: 'underpass_operator_workqueue_depth', help: 'Keys waiting in the work queue.', registers });
    this.leader = new Gauge({ name: 'underpass_operator_leader', help: '1 while this replica holds the leader lease, else 0.', registers });
    this.apiWrites = new Counter({ name: 'underpass_operator_api_writes_total', help: 'Write requests sent to the Kubernetes API, by verb and resource.', labelNames: ['verb', 'resource'], registers });
    this.problems = new Gauge({ name: 'underpass_operator_problems', help: 'What keeps the operator from working (namespace, CRDs, RBAC, API errors), by code; /readyz names each. 0 when healthy.', labelNames: ['code'], registers });
    this.workerReports = new Counter({ name: 'underpass_operator_worker_reports_total', help: 'Worker status reports received, by result: accepted, invalid (answered but not recorded) or refused.', labelNames: ['result'], registers });
    this.reportRefusals = new Counter({ name: 'underpass_operator_report_refusals_total', help: 'Report requests refused, by reason (the code in the answer).', labelNames: ['reason'], registers });
    this.reportStoreBytes = new Gauge({
      name: 'underpass_operator_report_store_bytes', help: 'Bytes of worker reports held (their bodies as received).', registers,
      collect() {
        if (store) this.set(store.bytes);
      },
    });
    this.reportStoreReports = new Gauge({
      name: 'underpass_operator_report_store_reports', help: 'Worker reports held, over all connections.', registers,
      collect() {
        if (store) this.set(store.size);
      },
    });
    this.reportStoreEvictions = new Counter({ name: 'underpass_operator_report_store_evictions_total', help: 'Reports pushed out of the store by a limit: instances (per connection) or memory (over all).', labelNames: ['reason'], registers });
  }
}
