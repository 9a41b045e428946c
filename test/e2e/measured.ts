/** One line per measured event on stderr ("measured: …"); docs/ha.md quotes them. */
import type { LoadSummary } from '../../cli/load-generator.js';

export function note(label: string, s: LoadSummary, extra = ''): void {
  process.stderr.write(`measured: ${label}: ${(s.durationMs / 1000).toFixed(1)} s, ${s.total.connections} connections, ${s.total.requests} round trips, `
    + `${s.total.failedNew} failed new, ${s.total.broken} broken, p50 ${s.total.latencyMs.p50} ms, p99 ${s.total.latencyMs.p99} ms${extra ? `, ${extra}` : ''}\n`);
}

export function noteLine(line: string): void {
  process.stderr.write(`measured: ${line}\n`);
}
