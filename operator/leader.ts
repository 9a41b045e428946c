/**
 * Leader election on a coordination.k8s.io/v1 Lease (client-go's algorithm):
 * acquire when the lease is free or expired, renew every `renewIntervalMs`,
 * and give up leadership as soon as renewals have failed for
 * `renewDeadlineMs` — before anyone else may take the expired lease — so two
 * replicas never both act as leader. Writes use optimistic concurrency
 * (resourceVersion), so a race for the lease has one winner. Why the lease
 * cannot be read or written (no namespace, RBAC) goes to `onProblem`, and is
 * cleared there once a request succeeds.
 */
import type * as k8s from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { sleep } from '../tunnel/backoff.js';
import { apiErrorMessage, isNotFound, type Kube } from './kube.js';
import { problemOf, type Problem } from './problems.js';

export interface LeaderOptions {
  kube: Kube;
  namespace: string;
  name: string;
  identity: string;
  leaseDurationMs?: number;
  renewDeadlineMs?: number;
  renewIntervalMs?: number;
  retryIntervalMs?: number;
  logger: Logger;
  onStartedLeading: () => void;
  onStoppedLeading: () => void;
  /** Why the last lease request failed (undefined: it worked, or only lost a race). */
  onProblem?: (problem: Problem | undefined) => void;
  /** Owner of the Lease when this replica creates it (the report Service: uninstalling removes it). */
  owner?: k8s.V1OwnerReference;
  now?: () => Date;
}

/** MicroTime as the API server wants it: RFC 3339 with exactly six fractional digits. */
export function microTime(d: Date): string {
  return d.toISOString().replace(/\.(\d{3})Z$/, '.$1000Z');
}

export class LeaderElector {
  readonly #o: Required<Omit<LeaderOptions, 'now' | 'onProblem' | 'owner'>> & { now: () => Date; onProblem: (problem: Problem | undefined) => void; owner?: k8s.V1OwnerReference };
  #leader = false;
  #lastRenew = 0;

  constructor(opts: LeaderOptions) {
    this.#o = {
      leaseDurationMs: 15_000,
      renewDeadlineMs: 10_000,
      renewIntervalMs: 2_000,
      retryIntervalMs: 2_000,
      now: () => new Date(),
      onProblem: () => undefined,
      ...opts,
    };
  }

  get isLeader(): boolean {
    return this.#leader;
  }

  async run(signal: AbortSignal): Promise<void> {
    const o = this.#o;
    while (!signal.aborted) {
      const ok = await this.#tryAcquireOrRenew();
      const now = o.now().getTime();
      if (ok) {
        this.#lastRenew = now;
        if (!this.#leader) {
          this.#leader = true;
          o.logger.info({ lease: `${o.namespace}/${o.name}`, identity: o.identity }, `became leader (lease ${o.namespace}/${o.name})`);
          o.onStartedLeading();
        }
      } else if (this.#leader && now - this.#lastRenew >= o.renewDeadlineMs) {
        this.#leader = false;
        o.logger.warn({ lease: `${o.namespace}/${o.name}` }, `lost leadership: could not renew the lease for ${o.renewDeadlineMs} ms`);
        o.onStoppedLeading();
      }
      await sleep(this.#leader ? o.renewIntervalMs : o.retryIntervalMs, signal);
    }
    if (this.#leader) {
      this.#leader = false;
      o.onStoppedLeading();
      await this.#release();
    }
  }

  async #tryAcquireOrRenew(): Promise<boolean> {
    const o = this.#o;
    const now = o.now();
    let lease: k8s.V1Lease;
    try {
      lease = await o.kube.coordination.readNamespacedLease({ name: o.name, namespace: o.namespace });
    } catch (err) {
      if (!isNotFound(err)) {
        o.logger.debug({ err: apiErrorMessage(err) }, 'cannot read the leader lease');
        o.onProblem(problemOf(err, this.#request('get')));
        return false;
      }
      return this.#write('create', {
        apiVersion: 'coordination.k8s.io/v1',
        kind: 'Lease',
        metadata: { name: o.name, namespace: o.namespace, ...(o.owner ? { ownerReferences: [o.owner] } : {}) },
        spec: this.#spec(now, now, 0),
      });
    }
    const spec = lease.spec ?? {};
    const holder = spec.holderIdentity ?? '';
    const renewed = spec.renewTime ? new Date(spec.renewTime as unknown as string).getTime() : 0;
    const duration = (spec.leaseDurationSeconds ?? 15) * 1000;
    const mine = holder === o.identity;
    if (!mine && holder !== '' && renewed + duration > now.getTime()) {
      o.onProblem(undefined); // held by someone else: this replica is a healthy standby
      return false;
    }
    const acquired = mine && spec.acquireTime ? new Date(spec.acquireTime as unknown as string) : now;
    const transitions = (spec.leaseTransitions ?? 0) + (mine ? 0 : 1);
    return this.#write('replace', { ...lease, spec: this.#spec(acquired, now, transitions) });
  }

  #spec(acquired: Date, renewed: Date, transitions: number): k8s.V1LeaseSpec {
    // The generated client would serialise Dates with millisecond precision, which MicroTime rejects.
    return {
      holderIdentity: this.#o.identity,
      leaseDurationSeconds: Math.ceil(this.#o.leaseDurationMs / 1000),
      acquireTime: microTime(acquired) as unknown as Date,
      renewTime: microTime(renewed) as unknown as Date,
      leaseTransitions: transitions,
    };
  }

  async #write(verb: 'create' | 'replace', body: k8s.V1Lease): Promise<boolean> {
    const o = this.#o;
    try {
      if (verb === 'create') await o.kube.write('create', 'leases', () => o.kube.coordination.createNamespacedLease({ namespace: o.namespace, body }));
      else await o.kube.write('update', 'leases', () => o.kube.coordination.replaceNamespacedLease({ name: o.name, namespace: o.namespace, body }));
      o.onProblem(undefined);
      return true;
    } catch (err) {
      o.logger.debug({ err: apiErrorMessage(err) }, `lease ${verb} failed (another replica won or the API is unreachable)`);
      o.onProblem(problemOf(err, this.#request(verb === 'replace' ? 'update' : 'create')));
      return false;
    }
  }

  #request(verb: string): { verb: string; resource: string; namespace: string } {
    return { verb, resource: 'leases.coordination.k8s.io', namespace: this.#o.namespace };
  }

  /** On a clean shutdown, hand the lease over at once instead of letting it expire. */
  async #release(): Promise<void> {
    const o = this.#o;
    try {
      const lease = await o.kube.coordination.readNamespacedLease({ name: o.name, namespace: o.namespace });
      if (lease.spec?.holderIdentity !== o.identity) return;
      await o.kube.write('update', 'leases', () => o.kube.coordination.replaceNamespacedLease({
        name: o.name, namespace: o.namespace,
        body: { ...lease, spec: { ...lease.spec, holderIdentity: '', leaseDurationSeconds: 1 } },
      }));
      o.logger.info('released the leader lease');
    } catch (err) {
      o.logger.warn({ err: apiErrorMessage(err) }, 'could not release the leader lease; it will expire');
    }
  }
}
