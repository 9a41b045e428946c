/** The worker's counters for the operator channel (on the worker's registry, next to the tunnel's). */
import { Counter, type Registry } from 'prom-client';
import type { ReportDropped } from '../tunnel/operator-channel.js';

export type ExchangeResult = 'accepted' | 'report-refused' | 'failed';

function counter<L extends string>(registry: Registry, name: string, help: string, labelNames: L[]): Counter<L> {
  return (registry.getSingleMetric(name) as Counter<L> | undefined) ?? new Counter({ name, help, labelNames, registers: [registry] });
}

export class ReportMetrics {
  readonly #exchanges: Counter<'result'>;
  readonly #dropped: Counter<'part'>;

  constructor(registry: Registry) {
    this.#exchanges = counter(registry, 'underpass_operator_reports_total',
      'Reports sent to the operator, by result: accepted, report-refused (answer applied, report not recorded) or failed (no usable answer).', ['result']);
    this.#dropped = counter(registry, 'underpass_operator_report_dropped_total',
      'Entries left out of reports to fit the operator channel limits, by part (sessions, unavailableMappings, listenerFailures, messages).', ['part']);
  }

  exchanged(result: ExchangeResult): void {
    this.#exchanges.inc({ result });
  }

  dropped(d: ReportDropped): void {
    for (const [part, n] of Object.entries(d)) if (n) this.#dropped.inc({ part }, n);
  }
}
