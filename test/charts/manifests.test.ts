/**
 * One source: operator/deploy/, operator/rbac/ and the chart's crds/ are generated
 * (test/charts/render.ts) and must equal what is committed. UNDERPASS_UPDATE_MANIFESTS=1
 * (what `make manifests` sets) writes them instead.
 */
import { describe, expect, it } from '@jest/globals';
import fs from 'node:fs';
import path from 'node:path';
import { REPO_ROOT } from '../cluster/testenv.js';
import { generatedFiles, REGENERATE } from './render.js';

const update = process.env['UNDERPASS_UPDATE_MANIFESTS'] === '1';

describe('generated install manifests', () => {
  it('operator/deploy, operator/rbac and the chart\'s CRDs match charts/underpass-operator and crds/', async () => {
    const files = await generatedFiles();
    expect([...files.keys()].sort()).toEqual([
      'charts/underpass-operator/crds/underpass.dev_applicationmappings.yaml',
      'charts/underpass-operator/crds/underpass.dev_tunnelconnections.yaml',
      'charts/underpass-operator/crds/underpass.dev_tunnelconnectors.yaml',
      'operator/deploy/operator.yaml',
      'operator/rbac/rbac.yaml',
    ]);
    const stale: string[] = [];
    for (const [rel, want] of files) {
      const file = path.join(REPO_ROOT, rel);
      const have = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : undefined;
      if (have === want) continue;
      if (update) fs.writeFileSync(file, want);
      else stale.push(rel);
    }
    // Nothing else may live in these folders: a stray file there would be applied too.
    for (const dir of ['operator/deploy', 'operator/rbac', 'charts/underpass-operator/crds']) {
      for (const f of fs.readdirSync(path.join(REPO_ROOT, dir))) {
        if (!files.has(`${dir}/${f}`)) stale.push(`${dir}/${f} (not generated: remove it)`);
      }
    }
    if (stale.length > 0) {
      throw new Error(`out of date with charts/underpass-operator and crds/: ${stale.join(', ')}; regenerate with \`${REGENERATE}\``);
    }
    expect(stale).toEqual([]);
  });
});
