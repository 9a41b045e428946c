/**
 * Durations, Go style, in milliseconds.
 *
 * Accepted forms:
 *   "500ms", "30s", "1m", "720h"     one number and a unit (ms, s, m, h)
 *   "1h30m", "1m30s500ms"            several, largest unit first, each unit once
 *   "1.5s"                           decimals, if the total is whole milliseconds
 *   "0"                              zero needs no unit
 *   1500                             a number is milliseconds
 * Negative durations are refused. formatDuration is the inverse.
 */
import { ConfigError } from './errors.js';

const UNITS: ReadonlyArray<readonly [string, number]> = [['h', 3_600_000], ['m', 60_000], ['s', 1000], ['ms', 1]];
const EXAMPLE = 'expected e.g. "30s", "500ms", "1h30m" or a number of milliseconds';

export function parseDuration(s: string | number, field?: string): number {
  if (typeof s === 'number') {
    if (!Number.isSafeInteger(s) || s < 0) {
      throw new ConfigError(`${s} is not a duration (a number must be whole, non-negative milliseconds)`, { field });
    }
    return s;
  }
  if (s === '0') return 0;
  const parts = /^(?:\d+(?:\.\d+)?(?:ms|h|m|s))+$/.test(s) ? s.match(/\d+(?:\.\d+)?(?:ms|h|m|s)/g)! : null;
  if (!parts) {
    const hint = /^\d+(\.\d+)?$/.test(s) ? 'missing unit; ' : '';
    throw new ConfigError(`"${s}" is not a duration (${hint}${EXAMPLE})`, { field });
  }
  let total = 0;
  let lastUnit = -1;
  for (const part of parts) {
    const unit = part.endsWith('ms') ? 'ms' : part.slice(-1);
    const index = UNITS.findIndex(([u]) => u === unit);
    if (index <= lastUnit) {
      throw new ConfigError(`"${s}" is not a duration (units must go from largest to smallest, each once)`, { field });
    }
    lastUnit = index;
    total += Number(part.slice(0, -unit.length)) * UNITS[index]![1];
  }
  // Decimals of a unit can land between milliseconds ("0.5ms") or on float noise ("1.1s").
  const rounded = Math.round(total);
  if (Math.abs(total - rounded) > 1e-6 || !Number.isSafeInteger(rounded)) {
    throw new ConfigError(`"${s}" is not a whole number of milliseconds`, { field });
  }
  return rounded;
}

/** 5400000 → "1h30m", 1500 → "1s500ms", 0 → "0". */
export function formatDuration(ms: number): string {
  if (ms === 0) return '0';
  let rest = ms;
  let out = '';
  for (const [unit, size] of UNITS) {
    const n = Math.floor(rest / size);
    if (n > 0) out += `${n}${unit}`;
    rest -= n * size;
  }
  return out;
}
