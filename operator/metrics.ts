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
  readonly problems: Gauge<'code'>;

  constructor() {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry, prefix: 'underpass_operator_' });
    this.reconcileSeconds = new Histogram({ name: 'underpass_operator_reconcile_duration_seconds', help: 'Reconcile duration by kind and result.', labelNames: ['kind', 'result'], buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10], registers });
    this.reconcileErrors = new Counter({ name: 'underpass_operator_reconcile_errors_total', help: 'Reconciles that failed (and were retried with backoff), by kind.', labelNames: ['kind'], registers });
    this.queueDepth = new Gauge({ name: 'underpass_operator_workqueue_depth', help: 'Keys waiting in the work queue.', registers });
    this.leader = new Gauge({ name: 'underpass_operator_leader', help: '1 while this replica holds the leader lease, else 0.', registers });
    this.apiWrites = new Counter({ name: 'underpass_operator_api_writes_total', help: 'Write requests sent to the Kubernetes API, by verb and resource.', labelNames: ['verb', 'resource'], registers });
    this.problems = new Gauge({ name: 'underpass_operator_problems', help: 'What keeps the operator from working (namespace, CRDs, RBAC, API errors), by code; /readyz names each. 0 when healthy.', labelNames: ['code'], registers });
    this.workerReports = new Counter({ name: 'underpass_operator_worker_reports_total', help: 'Worker status reports received, by result.', labelNames: ['result'], registers });
  }
}
