/**
 * RBAC is pinned: the rules the operator chart grants (ClusterRole, Role) and what workers get
 * (a ServiceAccount without a token, no rules) are compared with a reviewed golden file, so a
 * rule that grows (pods, pods/exec, secrets in more verbs…) fails here until someone reviews it.
 * And the permissions the operator checks at start-up (operator/permissions.ts) are exactly the
 * chart's, so the two cannot drift apart.
 */
import { describe, expect, it } from '@jest/globals';
import fs from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import * as desired from '../../operator/desired.js';
import { accessChecks, describeResource } from '../../operator/permissions.js';
import type { TunnelConnection } from '../../operator/types.js';
import { REPO_ROOT } from '../cluster/testenv.js';
import { helmOk, NAMESPACE, OPERATOR_CHART, RELEASE, splitDocs, type RenderedDoc } from './render.js';

const GOLDEN = path.join(REPO_ROOT, 'test', 'charts', 'golden', 'rbac.yaml');
const GOLDEN_REL = path.relative(REPO_ROOT, GOLDEN);
const UPDATE = 'UNDERPASS_UPDATE_GOLDEN=1 npm test -- test/charts/rbac';

interface Rule { apiGroups: string[]; resources: string[]; resourceNames?: string[]; verbs: string[] }

/** One line per rule, as a reviewer reads it: `apps deployments: get list watch`. */
function ruleLine(r: Rule): string {
  const group = r.apiGroups.map((g) => (g === '' ? 'core' : g)).join(',');
  const names = r.resourceNames ? ` [${r.resourceNames.join(',')}]` : '';
  return `${group} ${r.resources.join(',')}${names}: ${r.verbs.join(' ')}`;
}

async function render(set: string[] = []): Promise<RenderedDoc[]> {
  return splitDocs(await helmOk(['template', RELEASE, OPERATOR_CHART, '--namespace', NAMESPACE, '--skip-tests', ...set.flatMap((s) => ['--set', s])]));
}

/** Roles with their rules and who is bound to them, from rendered chart documents. */
function summarize(docs: RenderedDoc[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  const where = (d: RenderedDoc): string => (d.obj.metadata.namespace ? `${d.obj.metadata.namespace}/${d.name}` : d.name);
  for (const d of docs.filter((x) => x.kind === 'ClusterRole' || x.kind === 'Role')) {
    out[`${d.kind} ${where(d)}`] = (d.obj.rules as Rule[]).map(ruleLine);
  }
  out['bindings'] = docs.filter((x) => x.kind === 'ClusterRoleBinding' || x.kind === 'RoleBinding').map((d) =>
    `${d.kind} ${where(d)}: ${d.obj.roleRef.kind} ${d.obj.roleRef.name} to ${(d.obj.subjects as Array<{ kind: string; namespace?: string; name: string }>).map((s) => `${s.kind} ${s.namespace ? `${s.namespace}/` : ''}${s.name}`).join(', ')}`);
  return out;
}

function workerSummary(): Record<string, unknown> {
  const tc = {
    apiVersion: 'underpass.dev/v1alpha1', kind: 'TunnelConnection', metadata: { name: 'dc1', namespace: 'team-a', uid: 'u' },
    spec: { replicas: 2, endpoint: { service: { type: 'ClusterIP', port: 443 } }, certificates: { duration: '720h', renewBefore: '240h' }, worker: { drainTimeout: '30s' } },
  } as TunnelConnection;
  const sa = desired.serviceAccount(tc);
  const pod = desired.deployment(tc, [], { workerImage: 'x' }).spec!.template.spec!;
  return {
    serviceAccount: { name: sa.metadata!.name, automountServiceAccountToken: sa.automountServiceAccountToken },
    podAutomountServiceAccountToken: pod.automountServiceAccountToken,
    serviceAccountName: pod.serviceAccountName,
    // The operator creates no Role or binding for workers (it has no rbac.authorization.k8s.io rule at all).
    rules: [],
  };
}

async function actual(): Promise<Record<string, unknown>> {
  return {
    operator: summarize(await render()),
    'operator with watchNamespace=team-a': summarize(await render(['watchNamespace=team-a'])),
    worker: workerSummary(),
  };
}

/** Lines only in a, for the failure message. */
function linesOnly(a: Record<string, unknown>, b: Record<string, unknown>): string[] {
  const flat = (o: Record<string, unknown>, prefix = ''): string[] => Object.entries(o).flatMap(([k, v]) =>
    Array.isArray(v) ? v.map((x) => `${prefix}${k}: ${JSON.stringify(x)}`) : v && typeof v === 'object' ? flat(v as Record<string, unknown>, `${prefix}${k} / `) : [`${prefix}${k}: ${JSON.stringify(v)}`]);
  const other = new Set(flat(b));
  return flat(a).filter((l) => !other.has(l));
}

const HEADER = `# Reviewed RBAC of the operator (as charts/underpass-operator grants it) and of the workers.
# test/charts/rbac.test.ts compares what the chart and operator/desired.ts produce with this file.
# A change here widens or narrows what Underpass may do in every cluster it runs in: review it
# (least privilege: no "*", no pods, no pods/exec, no RBAC objects), then regenerate with
#   ${UPDATE}
`;

describe('RBAC golden file', () => {
  it(`the operator's ClusterRole and Role and the workers' ServiceAccount are exactly ${GOLDEN_REL}`, async () => {
    const have = await actual();
    if (process.env['UNDERPASS_UPDATE_GOLDEN'] === '1') fs.writeFileSync(GOLDEN, HEADER + YAML.stringify(have, { lineWidth: 0 }));
    const golden = YAML.parse(fs.readFileSync(GOLDEN, 'utf8')) as Record<string, unknown>;
    const added = linesOnly(have, golden);
    const removed = linesOnly(golden, have);
    if (added.length + removed.length > 0) {
      throw new Error(`RBAC changed: review the change and update ${GOLDEN_REL} (${UPDATE}).\n`
        + `${added.map((l) => `  granted now, not in the golden file: ${l}`).join('\n')}\n${removed.map((l) => `  in the golden file, not granted now: ${l}`).join('\n')}`);
    }
    expect(have).toEqual(golden);
  });

  it('grants no "*", no pods and no RBAC objects, whatever the golden file says', async () => {
    const rules = (await render()).filter((d) => d.kind === 'ClusterRole' || d.kind === 'Role').flatMap((d) => d.obj.rules as Rule[]);
    for (const r of rules) {
      expect(r.verbs).not.toContain('*');
      expect(r.resources).not.toContain('*');
      expect(r.apiGroups).not.toContain('*');
      expect(r.apiGroups).not.toContain('rbac.authorization.k8s.io');
      expect(r.resources.filter((x) => x === 'pods' || x.startsWith('pods/'))).toEqual([]);
    }
  });
});

describe('what the operator checks at start-up', () => {
  /** `verb resource[.group][ name]` for every verb a role grants. */
  const granted = (rules: Rule[]): string[] => rules.flatMap((r) => r.apiGroups.flatMap((group) => r.resources.flatMap((full) => {
    const [resource, subresource] = full.split('/') as [string, string | undefined];
    return (r.resourceNames ?? [undefined]).flatMap((name) => r.verbs.map((verb) =>
      `${verb} ${describeResource({ group, resource, ...(subresource ? { subresource } : {}), ...(name ? { name } : {}) })}`));
  }))).sort();

  it('is exactly what the chart grants: cluster-wide in the ClusterRole, in each namespace in its Roles (its own; default for the API server)', async () => {
    const docs = await render();
    const clusterRole = docs.find((d) => d.kind === 'ClusterRole')!.obj.rules as Rule[];
    const roles = (ns: string): Rule[] => docs.filter((d) => d.kind === 'Role' && d.obj.metadata.namespace === ns).flatMap((d) => d.obj.rules as Rule[]);
    const checks = accessChecks({ own: NAMESPACE, routes: true, reportService: RELEASE });
    const checked = (namespace: string | undefined): string[] => checks.filter((c) => c.namespace === namespace)
      .map((c) => `${c.verb} ${describeResource(c)}`).sort();
    expect(checked(undefined)).toEqual(granted(clusterRole));
    expect(checked(NAMESPACE)).toEqual(granted(roles(NAMESPACE)));
    expect(checked('default')).toEqual(granted(roles('default')));
    expect(checks.every((c) => [undefined, NAMESPACE, 'default'].includes(c.namespace))).toBe(true);
  });
});
