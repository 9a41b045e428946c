/** The plain install manifests (generated from the operator chart) apply to a real API server as the README says. */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import path from 'node:path';
import { REPO_ROOT, startTestEnv, type TestEnv } from './testenv.js';

let env: TestEnv;
beforeAll(async () => {
  env = await startTestEnv();
}, 180_000);
afterAll(async () => env?.stop());

describe('install manifests', () => {
  it('kubectl apply -f crds/ -f operator/rbac/ -f operator/deploy/ creates everything in one go, with no warning', async () => {
    const r = await env.kubectl(['apply', '--validate=strict', '-f', path.join(REPO_ROOT, 'crds'), '-f', path.join(REPO_ROOT, 'operator/rbac'), '-f', path.join(REPO_ROOT, 'operator/deploy')]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const ns = JSON.parse(await env.kubectlOk(['get', 'namespace', 'underpass-system', '-o', 'json']));
    expect(ns.metadata.labels['pod-security.kubernetes.io/enforce']).toBe('restricted');
    const dep = JSON.parse(await env.kubectlOk(['get', 'deployment', 'underpass-operator', '-n', 'underpass-system', '-o', 'json']));
    expect(dep.spec.template.spec.serviceAccountName).toBe('underpass-operator');
    const role = JSON.parse(await env.kubectlOk(['get', 'clusterrole', 'underpass-operator', '-o', 'json']));
    for (const rule of role.rules) {
      expect(rule.verbs).not.toContain('*');
      expect(rule.resources).not.toContain('*');
    }
  });
});
