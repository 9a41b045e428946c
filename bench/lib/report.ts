/** Machine description, medians and ratios, and plain-text tables for the comparison. */
import os from 'node:os';

export function machineInfo(): string[] {
  const cpus = os.cpus();
  const load = os.loadavg().map((l) => l.toFixed(2)).join(' ');
  return [
    `date:     ${new Date().toISOString()}`,
    `cpu:      ${cpus[0]?.model ?? 'unknown'} × ${cpus.length} (available parallelism ${os.availableParallelism()})`,
    `memory:   ${(os.totalmem() / 2 ** 30).toFixed(1)} GiB`,
    `os:       ${os.type()} ${os.release()} ${os.arch()}`,
    `node:     ${process.version}`,
    `load avg: ${load} (1, 5, 15 min) at start`,
  ];
}

export function loadNow(): string {
  return os.loadavg().map((l) => l.toFixed(2)).join(' ');
}

export function median(values: number[]): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

export function fmt(value: number | string | boolean | undefined): string {
  if (value === undefined) return '—';
  if (typeof value !== 'number') return String(value);
  if (!Number.isFinite(value)) return String(value);
  const abs = Math.abs(value);
  if (abs >= 100_000) return Math.round(value).toLocaleString('en-US');
  if (abs >= 100) return value.toFixed(0);
  if (abs >= 10) return value.toFixed(1);
  return value.toFixed(2);
}

export function bytes(n: number): string {
  if (n >= 2 ** 30 && n % 2 ** 30 === 0) return `${n / 2 ** 30} GiB`;
  if (n >= 2 ** 20) return `${+(n / 2 ** 20).toFixed(1)} MiB`;
  if (n >= 1024) return `${+(n / 1024).toFixed(1)} KiB`;
  return `${n} B`;
}

/** "2.31× Underpass" style verdict; `higherIsBetter` decides the direction. */
export function verdict(a: number, b: number, higherIsBetter: boolean, aName: string, bName: string): string {
  if (!Number.isFinite(a) || !Number.isFinite(b) || a <= 0 || b <= 0) return 'n/a';
  const ratio = higherIsBetter ? a / b : b / a;
  if (Math.abs(ratio - 1) < 0.05) return 'even (<5%)';
  return ratio > 1 ? `${ratio.toFixed(2)}× ${aName}` : `${(1 / ratio).toFixed(2)}× ${bName}`;
}

/** Renders rows as a Markdown table (readable in a terminal, pasteable into docs). */
export function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]): string => `| ${cells.map((c, i) => c.padEnd(widths[i]!)).join(' | ')} |`;
  return [line(header), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...rows.map(line)].join('\n');
}
