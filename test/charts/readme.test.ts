/** Each chart's README lists every value of its values.yaml, and nothing that is not one. */
import { describe, expect, it } from '@jest/globals';
import fs from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import { CONNECTOR_CHART, OPERATOR_CHART } from './render.js';

/** Values documented as one row although they are maps. */
const WHOLE = new Set(['resources']);

function valuePaths(v: unknown, prefix = ''): string[] {
  if (v && typeof v === 'object' && !Array.isArray(v) && Object.keys(v).length > 0 && !WHOLE.has(prefix)) {
    return Object.entries(v).flatMap(([k, x]) => valuePaths(x, prefix ? `${prefix}.${k}` : k));
  }
  return [prefix];
}

describe('chart READMEs', () => {
  it.each([OPERATOR_CHART, CONNECTOR_CHART].map((c) => [path.basename(c), c]))('%s/README.md has a row for each value, and no other', (_name, chart) => {
    const values = valuePaths(YAML.parse(fs.readFileSync(path.join(chart, 'values.yaml'), 'utf8')));
    const readme = fs.readFileSync(path.join(chart, 'README.md'), 'utf8');
    const rows = [...readme.matchAll(/^\| `([^`]+)` \|/gm)].map((m) => m[1]!);
    expect(rows.filter((r) => !values.includes(r))).toEqual([]);
    expect(values.filter((v) => !rows.includes(v))).toEqual([]);
  });
});
