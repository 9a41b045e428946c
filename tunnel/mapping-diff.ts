/**
 * Pure difference between two mapping sets (rathole's calculate_events):
 * hot reload applies only what changed, so other mappings' listeners and
 * streams are never touched.
 */
import { mappingsEqual, type Mapping } from './mapping.js';

export interface MappingDiff {
  added: Mapping[];
  removed: Mapping[];
  changed: Array<{ before: Mapping; after: Mapping }>;
  unchanged: Mapping[];
}

export function diffMappings(before: readonly Mapping[], after: readonly Mapping[]): MappingDiff {
  const old = new Map(before.map((m) => [m.name, m]));
  const diff: MappingDiff = { added: [], removed: [], changed: [], unchanged: [] };
  for (const m of after) {
    const prev = old.get(m.name);
    old.delete(m.name);
    if (!prev) diff.added.push(m);
    else if (mappingsEqual(prev, m)) diff.unchanged.push(m);
    else diff.changed.push({ before: prev, after: m });
  }
  diff.removed = [...old.values()];
  return diff;
}

export function isEmptyDiff(d: MappingDiff): boolean {
  return d.added.length === 0 && d.removed.length === 0 && d.changed.length === 0;
}
