/** The install manifests and the docs' examples are accepted by a real API server. */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import path from 'node:path';
import { installCrds } from './operator-fixtures.js';
import { REPO_ROOT, startTestEnv, type TestEnv } from './testenv.js';

let env: TestEnv;
beforeAll(async () => {
  env = await startTestEnv();
  await installCrds(env);
}, 180_000);
afterAll(async () => env?.stop());

describe('install manifests', () => {
  it('applies operator/rbac and operator/deploy (real objects, strict validation)', async () => {
    await env.kubectlOk(['apply', '--validate=strict', '-f', path.join(REPO_ROOT, 'operator/deploy/operator.yaml')]);
    await env.kubectlOk(['apply', '--validate=strict', '-f', path.join(REPO_ROOT, 'operator/rbac/rbac.yaml')]);
    const dep = JSON.parse(await env.kubectlOk(['get', 'deployment', 'underpass-operator', '-n', 'underpass-system', '-o', 'json']));
    expect(dep.spec.template.spec.serviceAccountName).toBe('underpass-operator');
    const role = JSON.parse(await env.kubectlOk(['get', 'clusterrole', 'underpass-operator', '-o', 'json']));
    for (const rule of role.rules) {
      expect(rule.verbs).not.toContain('*');
      expect(rule.resources).not.toContain('*');
    }
  });
});
