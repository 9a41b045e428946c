/**
 * The connector mesh's decisions as pure functions (docs/ha.md): which
 * workers are wanted and missing, how long to wait between attempts while
 * searching through a load-balanced address, and when so many attempts missed
 * that the balancer, not bad luck, is the likely cause.
 */

/** Between two attempts while searching: this, ± 50 %. */
export const SEARCH_DELAY_MS = 100;
/** With nothing missing, each URL is dialled once in this long (± 50 %) to find workers nobody announced. */
export const PROBE_INTERVAL_MS = 30_000;
/** A worker that said it is draining is not looked for again for this long. */
export const LEAVING_TTL_MS = 30_000;
/** A worker missing this long, after more refusals than chance explains, makes the mesh "degraded". */
export const DEGRADED_AFTER_MS = 15_000;
/** "More refusals than chance explains": a random balancer misses this rarely. */
export const PINNED_PROBABILITY = 1e-3;

/** What one link contributes: its worker, whether it can take new streams, and the set it announced. */
export interface LinkView {
  instance: string;
  /** Open, no GoAway either way, not draining. */
  serving: boolean;
  /** Still open (serving or draining). */
  open: boolean;
  announced: readonly string[];
  /** Opened with the credentials in force (false after a renewal until it is replaced); default true. */
  current?: boolean;
}

/** Instances with a serving session opened with the credentials in force. */
export function heldOf(links: Iterable<LinkView>): Set<string> {
  const held = new Set<string>();
  for (const l of links) if (l.serving && l.current !== false) held.add(l.instance);
  return held;
}

/**
 * The union of what the open links announced, plus what is held, minus
 * workers that said they are leaving (`leaving`: instance → until when, ms).
 */
export function wantedOf(links: Iterable<LinkView>, leaving: ReadonlyMap<string, number>, now: number): Set<string> {
  const wanted = new Set<string>();
  for (const l of links) {
    if (!l.open) continue;
    for (const n of l.announced) wanted.add(n);
    if (l.serving) wanted.add(l.instance);
  }
  for (const [n, until] of leaving) if (until > now) wanted.delete(n);
  return wanted;
}

export function missingOf(wanted: ReadonlySet<string>, held: ReadonlySet<string>): string[] {
  return [...wanted].filter((n) => !held.has(n)).sort();
}

/**
 * Consecutive refused attempts after which a random balancer would have
 * reached a missing worker with probability 1 − PINNED_PROBABILITY: with
 * `held` of `wanted` workers held, an attempt misses with probability
 * held/wanted. Infinity when nothing is missing.
 */
export function pinnedAfter(wanted: number, held: number, p = PINNED_PROBABILITY): number {
  if (held >= wanted) return Infinity;
  if (held <= 0) return 3;
  return Math.max(3, Math.ceil(Math.log(p) / Math.log(held / wanted)));
}

/**
 * The wait after the `refusals`-th consecutive refused attempt: SEARCH_DELAY_MS
 * ± 50 % up to `limit` refusals, then doubling up to `maxMs` (the reconnect
 * cap), so a pinned connector does not keep a worker busy with handshakes.
 */
export function searchDelayMs(refusals: number, limit: number, maxMs: number, random: () => number = Math.random): number {
  const over = Math.max(0, refusals - limit);
  const base = Math.min(maxMs, SEARCH_DELAY_MS * 2 ** Math.min(over, 30));
  return Math.min(maxMs, Math.round(base * (0.5 + random())));
}

/** `ms` ± 50 %. */
export function jittered(ms: number, random: () => number = Math.random): number {
  return Math.round(ms * (0.5 + random()));
}
