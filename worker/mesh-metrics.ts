/**
 * The worker's mesh counters (docs/ha.md, docs/metrics.md). Registered once per
 * registry, so several workers in one process (tests) share them.
 */
import { Counter, type Registry } from 'prom-client';

export class MeshMetrics {
  /** Upgrades answered 409 ALREADY_CONNECTED: a connector searching for the workers it misses landed here again. */
  readonly alreadyConnected: Counter;

  constructor(registry: Registry) {
    const name = 'underpass_mesh_already_connected_total';
    this.alreadyConnected = (registry.getSingleMetric(name) as Counter | undefined) ?? new Counter({
      name,
      help: 'Connector upgrades answered 409 ALREADY_CONNECTED: the connector already holds a session with this worker and is searching the others (docs/ha.md).',
      registers: [registry],
    });
  }
}
