/**
 * The charts are the source of the plain install manifests: `make manifests`
 * renders operator/deploy/ and operator/rbac/ from charts/underpass-operator
 * at its default values (`helm template`), and copies the top-level crds/
 * (where the CRDs are written) into the chart's crds/. test/charts/manifests.test.ts
 * fails when any of them differs from what this renders.
 *
 * helm is the one test/env/build.sh builds from its Go module (pinned in test/env/lib.sh).
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { parseAllDocuments } from 'yaml';
import { REPO_ROOT, run, type CommandResult } from '../cluster/testenv.js';

export const OPERATOR_CHART = path.join(REPO_ROOT, 'charts', 'underpass-operator');
export const CONNECTOR_CHART = path.join(REPO_ROOT, 'charts', 'underpass-connector');
/** The release and namespace the plain manifests are rendered for. */
export const RELEASE = 'underpass-operator';
export const NAMESPACE = 'underpass-system';
export const REGENERATE = 'make manifests';

const RBAC_KINDS = new Set(['ServiceAccount', 'ClusterRole', 'ClusterRoleBinding', 'Role', 'RoleBinding']);

/** Where test/env/build.sh puts its binaries (helm, kubectl, ...). */
export function testenvBin(): string {
  const r = spawnSync('bash', ['-c', 'source "$1" && printf %s "$UNDERPASS_TESTENV_BIN"', '_', path.join(REPO_ROOT, 'test', 'env', 'lib.sh')], { encoding: 'utf8' });
  if (r.status !== 0 || !r.stdout) throw new Error(`cannot read UNDERPASS_TESTENV_BIN from test/env/lib.sh: ${r.stderr}`);
  return r.stdout;
}

export function helmPath(): string {
  const helm = path.join(testenvBin(), 'helm');
  if (!fs.existsSync(helm)) throw new Error(`${helm} is missing: run test/env/build.sh (make testenv-bins) first`);
  return helm;
}

/** Runs the pinned helm with a private cache and config, so nothing of the user's helm setup leaks in. */
export function helm(args: string[], opts: { input?: string } = {}): Promise<CommandResult> {
  const home = path.join(REPO_ROOT, 'node_modules', '.cache', 'underpass-helm');
  const env: NodeJS.ProcessEnv = { ...process.env, HELM_CACHE_HOME: `${home}/cache`, HELM_CONFIG_HOME: `${home}/config`, HELM_DATA_HOME: `${home}/data` };
  delete env['KUBECONFIG'];
  return run(helmPath(), args, { ...opts, env, timeoutMs: 60_000 });
}

export async function helmOk(args: string[]): Promise<string> {
  const r = await helm(args);
  if (r.code !== 0) throw new Error(`helm ${args.join(' ')} exited ${r.code}:\n${r.stderr}${r.stdout}`);
  return r.stdout;
}

/** One `---` document of helm's output, with its `# Source:` comment. */
export interface RenderedDoc {
  text: string;
  kind: string;
  name: string;
  obj: Record<string, any>;
}

export function splitDocs(rendered: string): RenderedDoc[] {
  return rendered.split(/^---\n/m).map((t) => t.trim()).filter((t) => t !== '').map((text) => {
    const docs = parseAllDocuments(text);
    const obj = (docs[0]?.toJS() ?? {}) as Record<string, any>;
    return { text, kind: String(obj['kind'] ?? ''), name: String(obj['metadata']?.['name'] ?? ''), obj };
  }).filter((d) => d.kind !== '');
}

/** The operator chart as `helm template` renders it at default values for the plain manifests (no tests, no CRDs). */
export async function renderOperatorDefaults(): Promise<RenderedDoc[]> {
  return splitDocs(await helmOk(['template', RELEASE, OPERATOR_CHART, '--namespace', NAMESPACE, '--skip-tests']));
}

/** Helm's own bookkeeping labels mean nothing in files applied with kubectl. */
function plain(text: string): string {
  return text.split('\n').filter((l) => !/^\s+(helm\.sh\/chart: .*|app\.kubernetes\.io\/managed-by: Helm)$/.test(l)).join('\n');
}

const HEADER = (what: string): string => `# GENERATED from charts/underpass-operator (helm template ${RELEASE} --namespace ${NAMESPACE}, default values)
# by \`${REGENERATE}\`; do not edit: change the chart and run \`${REGENERATE}\`.
# ${what}
`;

const NAMESPACE_DOC = `# The namespace comes first: the ServiceAccount, the Lease Role and the operator live in it.
# Its pods (the operator's) meet the "restricted" Pod Security Standard.
apiVersion: v1
kind: Namespace
metadata:
  name: ${NAMESPACE}
  labels:
    pod-security.kubernetes.io/enforce: restricted`;

/** Every generated file, by path relative to the repository, with the content it must have. */
export async function generatedFiles(): Promise<Map<string, string>> {
  const docs = await renderOperatorDefaults();
  const join = (parts: string[]): string => `${parts.map((p) => plain(p)).join('\n---\n')}\n`;
  const files = new Map<string, string>();
  files.set('operator/rbac/rbac.yaml', HEADER('Apply before operator/deploy/: kubectl apply -f crds/ -f operator/rbac/ -f operator/deploy/')
    + join([NAMESPACE_DOC, ...docs.filter((d) => RBAC_KINDS.has(d.kind)).map((d) => d.text)]));
  files.set('operator/deploy/operator.yaml', HEADER('The operator Deployment and what goes with it; needs crds/ and operator/rbac/ first.')
    + join(docs.filter((d) => !RBAC_KINDS.has(d.kind)).map((d) => d.text)));
  for (const f of fs.readdirSync(path.join(REPO_ROOT, 'crds')).filter((n) => n.endsWith('.yaml')).sort()) {
    files.set(`charts/underpass-operator/crds/${f}`, fs.readFileSync(path.join(REPO_ROOT, 'crds', f), 'utf8'));
  }
  return files;
}
