/**
 * "Time until a new worker serves traffic" (docs/ha.md): polls a worker's
 * admin endpoint and records when it first answered, when it became ready
 * (a connector session), and when it first carried a stream.
 */
export interface WorkerTimes {
  /** Milliseconds from the start of the watch; undefined until it happened. */
  healthyMs?: number;
  readyMs?: number;
  servedMs?: number;
}

/** Sum of a metric's samples in a Prometheus text page (every label set; `outcome` filter optional). */
export function metricSum(text: string, name: string, labels: Record<string, string> = {}): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (!m || m[1] !== name) continue;
    if (Object.entries(labels).every(([k, v]) => (m[2] ?? '').includes(`${k}="${v}"`))) sum += Number(m[3]);
  }
  return sum;
}

/** Polls `admin` (http://host:port) every `pollMs` until it has served a stream or `signal` aborts. */
export async function watchWorker(admin: URL, opts: { pollMs?: number; signal?: AbortSignal } = {}): Promise<WorkerTimes> {
  const started = Date.now();
  const times: WorkerTimes = {};
  const get = async (path: string): Promise<{ ok: boolean; text: string } | undefined> => {
    try {
      const res = await fetch(new URL(path, admin), { signal: AbortSignal.timeout(1_000) });
      return { ok: res.ok, text: await res.text() };
    } catch {
      return undefined;
    }
  };
  while (!opts.signal?.aborted && times.servedMs === undefined) {
    const now = (): number => Date.now() - started;
    if (times.healthyMs === undefined && (await get('/healthz'))?.ok) times.healthyMs = now();
    if (times.healthyMs !== undefined && times.readyMs === undefined && (await get('/readyz'))?.ok) times.readyMs = now();
    if (times.readyMs !== undefined) {
      const metrics = await get('/metrics');
      if (metrics && metricSum(metrics.text, 'underpass_streams_open') + metricSum(metrics.text, 'underpass_streams_total', { outcome: 'closed' }) > 0) times.servedMs = now();
    }
    if (times.servedMs === undefined) await new Promise((r) => setTimeout(r, opts.pollMs ?? 100));
  }
  return times;
}
