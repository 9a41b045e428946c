/**
 * The Kubernetes API server's addresses, which no Cluster-side target may
 * have: the `kubernetes` Service's ClusterIPs and the addresses of its
 * EndpointSlice `kubernetes` (both in `default`, kept by the API server
 * itself). Read at start and every minute (two GETs, granted by a Role in
 * `default` for these two names only; a cache of every Service and
 * EndpointSlice would cost far more); a change requeues every connection, so
 * mapping verdicts, worker configs and NetworkPolicies follow it.
 */
import type { Logger } from 'pino';
import { ipFamily, normaliseIp } from '../tunnel/cidr.js';
import { sleep } from '../tunnel/backoff.js';
import { apiErrorMessage, isNotFound, type Kube } from './kube.js';

export const API_SERVER_NAMESPACE = 'default';
export const API_SERVER_NAME = 'kubernetes';
const REFRESH_MS = 60_000;

export interface ApiServerAddressesOptions {
  kube: Kube;
  logger: Logger;
  /** Called when the set of addresses changed (also on the first successful read). */
  onChange: (addresses: readonly string[]) => void;
  intervalMs?: number;
}

export class ApiServerAddresses {
  readonly #o: ApiServerAddressesOptions;
  #addresses: readonly string[] = [];
  #lastError: string | undefined;

  constructor(o: ApiServerAddressesOptions) {
    this.#o = o;
  }

  /** Sorted, canonical IPs; [] until the first read succeeded. */
  get addresses(): readonly string[] {
    return this.#addresses;
  }

  /** Reads every interval until `signal` aborts (the first read is refresh(), awaited at start-up). */
  async run(signal: AbortSignal): Promise<void> {
    for (;;) {
      await sleep(this.#o.intervalMs ?? REFRESH_MS, signal);
      if (signal.aborted) return;
      await this.refresh();
    }
  }

  /** One read; on failure the last known addresses stay, and the error is logged once until it changes. */
  async refresh(): Promise<void> {
    let next: string[];
    try {
      next = await this.#read();
    } catch (err) {
      const message = apiErrorMessage(err);
      if (message !== this.#lastError) {
        this.#o.logger.warn({ err: message }, `cannot read the Kubernetes API server's addresses (Service and EndpointSlice ${API_SERVER_NAMESPACE}/${API_SERVER_NAME}): ${message}; Cluster-side targets are still refused by name, and workers refuse the KUBERNETES_SERVICE_HOST of their pod`);
      }
      this.#lastError = message;
      return;
    }
    this.#lastError = undefined;
    if (next.join() === this.#addresses.join()) return;
    this.#addresses = next;
    this.#o.logger.info({ addresses: next }, `Kubernetes API server addresses: ${next.join(', ')} (never Cluster-side targets)`);
    this.#o.onChange(next);
  }

  async #read(): Promise<string[]> {
    const { core, discovery } = this.#o.kube;
    const svc = await core.readNamespacedService({ name: API_SERVER_NAME, namespace: API_SERVER_NAMESPACE });
    const ips = [...(svc.spec?.clusterIPs ?? []), ...(svc.spec?.clusterIP ? [svc.spec.clusterIP] : [])];
    try {
      const slice = await discovery.readNamespacedEndpointSlice({ name: API_SERVER_NAME, namespace: API_SERVER_NAMESPACE });
      for (const e of slice.endpoints ?? []) ips.push(...e.addresses);
    } catch (err) {
      // A cluster whose API server does not publish the slice still has the Service's ClusterIP.
      if (!isNotFound(err)) throw err;
    }
    return [...new Set(ips.filter((ip) => ipFamily(ip) !== 0).map(normaliseIp))].sort();
  }
}
