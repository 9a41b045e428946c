/**
 * When a draining process closes its listeners (docs/ha.md, Drain). `drainDelay` is a guess of how
 * long load balancers (every node's kube-proxy, a cloud LB) take to stop sending clients after
 * readiness turns false. A guess that is too short refuses the clients that still arrive, so the
 * listeners also wait for the evidence: after the delay they stay open while clients keep coming,
 * and close once none has arrived for `QUIET_MS` — never later than a second `drainDelay` (the pod's
 * termination grace period has room for it). With `drainDelay` 0 nothing waits (outside
 * Kubernetes nothing balances in front of the process unless its operator says so).
 */
import { performance } from 'node:perf_hooks';
import type { Logger } from 'pino';
import { sleep } from './backoff.js';
import type { TunnelMetrics } from './metrics.js';

/** No client for this long after the drain delay: balancers have stopped sending them. */
export const QUIET_MS = 1_000;

/** What a listener set tells about client arrivals (tunnel/listeners.ts). */
export interface ArrivalSource {
  /** Client connections accepted so far. */
  readonly accepted: number;
  /** When the last one was accepted (`performance.now()` ms), or undefined. */
  readonly lastAcceptAt: number | undefined;
}

export interface DrainArrivals {
  /** Client connections accepted since draining began. */
  arrived: number;
  /** Of those, how many came after `drainDelay` (in the extension). */
  late: number;
  /** The last one's arrival, ms after draining began (undefined: none came). */
  lastAfterMs: number | undefined;
  /** How long the listeners stayed open beyond `drainDelay`. */
  extendedMs: number;
  /** The extension ended at its bound while clients were still arriving. */
  boundReached: boolean;
}

export interface WaitForQuietOptions {
  /** `performance.now()` when draining began. */
  startedAt: number;
  /** The accepted count when draining began. */
  acceptedAtStart: number;
  delayMs: number;
  /** Skips what is left (a second SIGTERM, `stop(0)`). */
  signal?: AbortSignal;
  now?: () => number;
  wait?: (ms: number, signal?: AbortSignal) => Promise<void>;
}

/**
 * Resolves when the listeners may close: `delayMs` after `startedAt`, and then once no client has
 * arrived for QUIET_MS, at most `delayMs` later. Says what arrived meanwhile.
 */
export async function waitForQuiet(source: ArrivalSource, o: WaitForQuietOptions): Promise<DrainArrivals> {
  const now = o.now ?? (() => performance.now());
  const wait = o.wait ?? sleep;
  const delayEnd = o.startedAt + o.delayMs;
  const bound = delayEnd + o.delayMs;
  await wait(Math.max(0, delayEnd - now()), o.signal);
  const acceptedAtDelayEnd = source.accepted;
  let boundReached = false;
  while (o.delayMs > 0 && !o.signal?.aborted) {
    const last = source.lastAcceptAt;
    const t = now();
    if (last === undefined || last < o.startedAt || t - last >= QUIET_MS) break;
    if (t >= bound) {
      boundReached = true;
      break;
    }
    await wait(Math.min(last + QUIET_MS, bound) - t, o.signal);
  }
  const end = now();
  const last = source.lastAcceptAt;
  return {
    arrived: source.accepted - o.acceptedAtStart,
    late: source.accepted - acceptedAtDelayEnd,
    lastAfterMs: last !== undefined && last >= o.startedAt && source.accepted > o.acceptedAtStart ? Math.round(last - o.startedAt) : undefined,
    extendedMs: Math.max(0, Math.round(end - delayEnd)),
    boundReached,
  };
}

/** The log line that explains a drain's listener phase (the same words in the worker and the connector). */
export function describeArrivals(a: DrainArrivals, delayMs: number): string {
  const when = a.lastAfterMs === undefined ? 'no client arrived while draining' :
    `${a.arrived} client connection(s) arrived while draining, the last ${a.lastAfterMs} ms after draining began`;
  if (a.extendedMs === 0 || a.late === 0) return `listeners close: ${when}`;
  const why = a.boundReached ?
    `clients were still arriving ${delayMs} ms after drainDelay ended (the bound): raise drainDelay above how long your load balancers take to stop sending clients` :
    `kept open ${a.extendedMs} ms beyond drainDelay (${delayMs} ms) until no client came for ${QUIET_MS} ms: load balancers took longer than drainDelay to stop sending clients`;
  return `listeners close: ${when}; ${why}`;
}

/**
 * The listener phase of a drain: waits as waitForQuiet says, closes the listeners, counts the
 * clients that arrived (underpass_drain_client_connections_total) and logs what happened, as a
 * warning when clients were still arriving after drainDelay.
 */
export async function closeWhenQuiet(
  listeners: ArrivalSource & { close(): Promise<void> },
  o: WaitForQuietOptions,
  metrics: TunnelMetrics,
  log: Logger,
): Promise<DrainArrivals> {
  const a = await waitForQuiet(listeners, o);
  await listeners.close();
  metrics.drainClients.inc({ phase: 'delay' }, a.arrived - a.late);
  metrics.drainClients.inc({ phase: 'extended' }, a.late);
  const fields = { arrived: a.arrived, late: a.late, lastAfterMs: a.lastAfterMs, extendedMs: a.extendedMs, drainDelayMs: o.delayMs };
  if (a.late > 0) log.warn(fields, describeArrivals(a, o.delayMs));
  else log.info(fields, describeArrivals(a, o.delayMs));
  return a;
}
