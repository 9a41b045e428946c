/**
 * The results table (absolute numbers, ratio to `ssh -L`, PASS/MISS against the
 * targets), the CPU and memory detail, and docs/benchmarks.md. The file is
 * rewritten on each full run except two parts it keeps: the soak section
 * (between <!-- soak --> and <!-- /soak -->, rewritten by `make bench-soak`)
 * and everything under <!-- analysis -->.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import type { ContenderId } from './common.js';
import type { SoakResult } from './soak.js';

export interface Target {
  text: string;
  /** ratio: Underpass ÷ ssh -L; abs: Underpass's own value. */
  kind: 'ratio' | 'abs';
  min?: number;
  max?: number;
}

export interface Row {
  label: string;
  unit: string;
  decimals: number;
  values: Partial<Record<ContenderId, number>>;
  /** Why a contender has no number in this row. */
  notes?: Partial<Record<ContenderId, string>>;
  target?: Target;
}

export interface Column {
  id: ContenderId;
  label: string;
}

export const SOAK_START = '<!-- soak -->';
export const SOAK_END = '<!-- /soak -->';
export const ANALYSIS = '<!-- analysis -->';

export function fmtNum(v: number | undefined, decimals: number): string {
  if (v === undefined || !Number.isFinite(v)) return '—';
  return v.toLocaleString('en-US', { minimumFractionDigits: decimals, maximumFractionDigits: decimals });
}

export function verdict(row: Row): string {
  const t = row.target;
  if (!t) return '';
  const u = row.values.underpass;
  if (u === undefined) return 'n/a';
  let x = u;
  if (t.kind === 'ratio') {
    const ssh = row.values.ssh;
    if (ssh === undefined || ssh <= 0) return 'n/a (no ssh -L)';
    x = u / ssh;
  }
  const ok = (t.min === undefined || x >= t.min) && (t.max === undefined || x <= t.max);
  return ok ? 'PASS' : 'MISS';
}

export function renderTable(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]): string => `| ${cells.map((c, i) => c.padEnd(widths[i]!)).join(' | ')} |`;
  return [line(header), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...rows.map(line)].join('\n');
}

/** The main table: one row per measurement, one column per contender, "value (ratio to ssh -L)". */
export function resultsTable(columns: Column[], rows: Row[]): string {
  const header = ['measurement', ...columns.map((c) => c.label), 'target (Underpass)', 'result'];
  const body = rows.map((r) => {
    const ssh = r.values.ssh;
    const cells = columns.map((c) => {
      const v = r.values[c.id];
      if (v === undefined) return r.notes?.[c.id] ? `— (${r.notes[c.id]})` : '—';
      const ratio = c.id !== 'ssh' && ssh !== undefined && ssh > 0 ? ` (${(v / ssh).toFixed(2)}×)` : '';
      return `${fmtNum(v, r.decimals)}${ratio}`;
    });
    return [`${r.label} [${r.unit}]`, ...cells, r.target?.text ?? '', verdict(r)];
  });
  return renderTable(header, body);
}

export interface CpuRow {
  contender: string;
  what: string;
  value: string;
  cpu: Record<string, number>;
  cpuPerGiB: number;
  syscallsPerMiB: number;
}

export function cpuTable(rows: CpuRow[]): string {
  return renderTable(['contender', 'transfer', 'result', 'CPU, % of one core (over the transfer)', 'forwarder CPU s/GiB', 'forwarder syscalls/MiB'], rows.map((r) => [
    r.contender, r.what, r.value,
    Object.entries(r.cpu).map(([role, pct]) => `${role} ${pct.toFixed(0)}%`).join(', '),
    r.cpuPerGiB > 0 ? r.cpuPerGiB.toFixed(2) : '—',
    r.syscallsPerMiB > 0 ? r.syscallsPerMiB.toFixed(0) : '—',
  ]));
}

export function soakSection(s: SoakResult, meta: { date: string; load: string; what: string }): string {
  const mib = (b: number): string => `${(b / 2 ** 20).toFixed(1)} MiB`;
  const verdictText = s.growthPct < 5 ? 'PASS' : 'MISS';
  return [
    SOAK_START,
    '## Soak (`make bench-soak`)',
    '',
    `Run ${meta.date}, load average before: ${meta.load}. ${meta.what} Warm-up: ${s.warmupSeconds} s.`,
    '',
    renderTable(['duration', 'RSS idle', 'RSS start', 'RSS end', 'RSS max', 'growth', 'trend', 'target', 'result', 'messages', 'connections', 'errors'], [[
      `${s.seconds} s`, mib(s.baseline), mib(s.start), mib(s.end), mib(s.max), `${s.growthPct.toFixed(1)}%`, `${s.trendPct.toFixed(1)}%`, '< 5%', verdictText,
      s.messages.toLocaleString('en-US'), s.connections.toLocaleString('en-US'), `${s.errors}${s.firstError ? ` (${s.firstError})` : ''}`,
    ]]),
    '',
    `RSS samples (worker + connector, MiB): ${s.samples.map((x) => `${x.t.toFixed(0)}s ${(x.rss / 2 ** 20).toFixed(1)}`).join(', ')}`,
    SOAK_END,
  ].join('\n');
}

/** Rewrites the whole file, keeping the soak section and the analysis from the old one. */
export function writeDocs(file: string, main: string): void {
  const old = existsSync(file) ? readFileSync(file, 'utf8') : '';
  const soak = extractSoak(old) ?? `${SOAK_START}\n## Soak (\`make bench-soak\`)\n\nNot run yet.\n${SOAK_END}`;
  const analysis = old.includes(ANALYSIS) ? old.slice(old.indexOf(ANALYSIS) + ANALYSIS.length) : '\n';
  writeFileSync(file, `${main.trimEnd()}\n\n${soak}\n\n## What limits us\n\nSee below.\n\n${ANALYSIS}${analysis}`);
}

/** Replaces only the soak section (creating the file around it when there is none). */
export function writeSoakDocs(file: string, section: string, fallbackMain: string): void {
  const old = existsSync(file) ? readFileSync(file, 'utf8') : '';
  if (old.includes(SOAK_START) && old.includes(SOAK_END)) {
    writeFileSync(file, old.slice(0, old.indexOf(SOAK_START)) + section + old.slice(old.indexOf(SOAK_END) + SOAK_END.length));
    return;
  }
  const analysis = old.includes(ANALYSIS) ? old.slice(old.indexOf(ANALYSIS) + ANALYSIS.length) : '\n';
  writeFileSync(file, `${fallbackMain.trimEnd()}\n\n${section}\n\n## What limits us\n\nSee below.\n\n${ANALYSIS}${analysis}`);
}

function extractSoak(text: string): string | undefined {
  const a = text.indexOf(SOAK_START);
  const b = text.indexOf(SOAK_END);
  return a >= 0 && b > a ? text.slice(a, b + SOAK_END.length) : undefined;
}
