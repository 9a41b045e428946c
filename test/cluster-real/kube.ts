/**
 * Helpers of the real-cluster tests (test/cluster-real): restricted namespaces, testbox pods,
 * Helm and the underpass CLI against the local cluster, the Underpass image, waiting, pod
 * snapshots, and what to print when a step fails (pods, events, logs).
 */
import fs from 'node:fs';
import path from 'node:path';
import { type CommandResult, REPO_ROOT, run } from '../cluster/testenv.js';
import type { LocalCluster } from './cluster.js';

/** The securityContext the `restricted` Pod Security Standard asks of every container. */
export const RESTRICTED_CONTAINER = {
  allowPrivilegeEscalation: false,
  readOnlyRootFilesystem: true,
  runAsNonRoot: true,
  capabilities: { drop: ['ALL'] },
  seccompProfile: { type: 'RuntimeDefault' },
};

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * A pod running the cluster's testbox image (`serve ...` or `sleep`) that meets the restricted
 * standard. A serving pod gets a readiness probe on its HTTP port.
 */
export function testboxPod(cluster: LocalCluster, ns: string, name: string, args: string[], labels: Record<string, string> = {}): object {
  const serving = args[0] === 'serve';
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: ns, labels: { app: name, ...labels } },
    spec: {
      automountServiceAccountToken: false,
      terminationGracePeriodSeconds: 1,
      securityContext: { runAsNonRoot: true, seccompProfile: { type: 'RuntimeDefault' } },
      containers: [{
        name: 'main',
        image: cluster.testboxImage,
        imagePullPolicy: 'Never',
        args,
        ...(serving ? { readinessProbe: { httpGet: { path: '/healthz', port: 8080 }, periodSeconds: 1 } } : {}),
        resources: { requests: { cpu: '10m', memory: '16Mi' }, limits: { memory: '64Mi' } },
        securityContext: RESTRICTED_CONTAINER,
      }],
    },
  };
}

/** A ClusterIP Service in front of the pods labelled app=<app>. */
export function service(ns: string, name: string, app: string, ports: { name: string; port: number; targetPort?: number }[]): object {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name, namespace: ns },
    spec: { selector: { app }, ports: ports.map((p) => ({ name: p.name, port: p.port, targetPort: p.targetPort ?? p.port, protocol: 'TCP' })) },
  };
}

export function list(items: object[]): string {
  return JSON.stringify({ apiVersion: 'v1', kind: 'List', items });
}

/** Polls `check` (true, or a value other than undefined/false, ends it) every `everyMs` until `timeoutMs`. */
export async function waitFor<T>(what: string, check: () => Promise<T | undefined | false>, timeoutMs = 60_000, everyMs = 250): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v !== undefined && v !== false) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${(last as Error).message ?? String(last)}` : ''}`);
    }
    await sleep(everyMs);
  }
}

/** Creates a namespace that enforces the restricted Pod Security Standard and waits for its default ServiceAccount. */
export async function restrictedNamespace(cluster: LocalCluster, ns: string, labels: Record<string, string> = {}): Promise<void> {
  const obj = {
    apiVersion: 'v1',
    kind: 'Namespace',
    metadata: {
      name: ns,
      labels: {
        'pod-security.kubernetes.io/enforce': 'restricted',
        'pod-security.kubernetes.io/enforce-version': 'latest',
        'pod-security.kubernetes.io/warn': 'restricted',
        ...labels,
      },
    },
  };
  await cluster.kubectlOk(['apply', '-f', '-'], { input: JSON.stringify(obj) });
  await waitFor(`the default ServiceAccount of ${ns}`, async () => (await cluster.kubectl(['get', 'serviceaccount', 'default', '-n', ns])).code === 0, 30_000, 200);
}

/** Deletes namespaces and waits until they are gone (their pods included). */
export async function deleteNamespaces(cluster: LocalCluster, namespaces: string[], timeoutMs = 120_000): Promise<void> {
  if (namespaces.length === 0) return;
  await cluster.kubectl(['delete', 'namespace', '--ignore-not-found', '--wait=false', ...namespaces]);
  try {
    await waitFor(`namespaces ${namespaces.join(', ')} to be deleted`, async () => {
      const r = await cluster.kubectl(['get', 'namespace', ...namespaces, '-o', 'name', '--ignore-not-found']);
      return r.code === 0 && r.stdout.trim() === '';
    }, timeoutMs, 500);
  } catch (err) {
    // Say what holds them: the namespace controller lists remaining objects and finalizers in its conditions.
    const held: string[] = [];
    for (const ns of namespaces) {
      const r = await cluster.kubectl(['get', 'namespace', ns, '--ignore-not-found', '-o', 'jsonpath={range .status.conditions[?(@.status=="True")]}{.message}; {end}']);
      if (r.stdout.trim() !== '') held.push(`${ns}: ${r.stdout.trim()}`);
    }
    throw new Error(`${(err as Error).message}; what holds them: ${held.join(' | ') || 'nothing reported'}`);
  }
}

/**
 * Removes what a scenario installed, in the order that leaves nothing behind: connector chart
 * releases, every TunnelConnection of `tunnelNamespace` while the operator still runs (its
 * finalizer needs it), the operator release in underpass-system, then the namespaces. Also used
 * before a scenario, to clear what an interrupted run left.
 */
export async function removeScenario(cluster: LocalCluster, o: { connectors: Array<{ release: string; namespace: string }>; tunnelNamespace: string; namespaces: string[] }): Promise<void> {
  for (const c of o.connectors) await helm(cluster, ['uninstall', c.release, '-n', c.namespace, '--wait']);
  if ((await cluster.kubectl(['get', 'namespace', o.tunnelNamespace])).code === 0) {
    await cluster.kubectl(['delete', 'tunnelconnection', '--all', '-n', o.tunnelNamespace, '--wait', '--timeout=60s'], { timeoutMs: 90_000 });
  }
  await helm(cluster, ['uninstall', 'underpass-operator', '-n', 'underpass-system', '--wait']);
  await deleteNamespaces(cluster, o.namespaces);
}

/** Runs the pinned helm against the local cluster, with a private cache and config. */
export function helm(cluster: LocalCluster, args: string[], timeoutMs = 240_000): Promise<CommandResult> {
  const home = path.join(REPO_ROOT, 'node_modules', '.cache', 'underpass-helm');
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    KUBECONFIG: cluster.kubeconfig,
    HELM_CACHE_HOME: `${home}/cache`,
    HELM_CONFIG_HOME: `${home}/config`,
    HELM_DATA_HOME: `${home}/data`,
  };
  return run(path.join(cluster.bin, 'helm'), args, { env, timeoutMs });
}

export async function helmOk(cluster: LocalCluster, args: string[], timeoutMs?: number): Promise<string> {
  const r = await helm(cluster, args, timeoutMs);
  if (r.code !== 0) throw new Error(`helm ${args.join(' ')} exited ${r.code}:\n${r.stderr}${r.stdout}`);
  return r.stdout;
}

/** Runs bin/underpass (the compiled product, make build) with the cluster's kubeconfig. */
export async function underpassOk(cluster: LocalCluster, args: string[], opts: { input?: string } = {}): Promise<CommandResult> {
  const r = await run(path.join(REPO_ROOT, 'bin', 'underpass'), args, { env: { ...process.env, KUBECONFIG: cluster.kubeconfig }, timeoutMs: 60_000, ...opts });
  if (r.code !== 0) throw new Error(`underpass ${args.join(' ')} exited ${r.code}:\n${r.stderr}${r.stdout}`);
  return r;
}

let imageRef: string | undefined;

/**
 * The Underpass image (image/build.sh: cached by the hash of its inputs, seconds when `make image`
 * ran before) imported into the cluster's containerd; resolves with its reference. Once per process.
 */
export async function underpassImage(cluster: LocalCluster): Promise<string> {
  if (imageRef) return imageRef;
  const built = await run('bash', [path.join(REPO_ROOT, 'image', 'build.sh')], { timeoutMs: 15 * 60_000 });
  if (built.code !== 0) throw new Error(`image/build.sh failed (exit ${built.code}):\n${built.stderr.split('\n').slice(-30).join('\n')}`);
  const archive = built.stdout.trim().split('\n').pop()!;
  const names = await cluster.importImage(archive);
  const version = (JSON.parse(fs.readFileSync(path.join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string }).version;
  imageRef = names.find((n) => n.endsWith(`:${version}`)) ?? names[0];
  if (!imageRef) throw new Error(`${archive} imported no image`);
  return imageRef;
}

interface PodJson {
  metadata: { name: string; namespace: string; uid: string; deletionTimestamp?: string };
  spec: { containers: { name: string; image: string }[] };
  status: {
    phase?: string;
    podIP?: string;
    conditions?: { type: string; status: string }[];
    containerStatuses?: { name: string; ready: boolean; restartCount: number; state?: Record<string, unknown> }[];
  };
}

export async function pods(cluster: LocalCluster, ns: string, selector?: string): Promise<PodJson[]> {
  const out = await cluster.kubectlOk(['get', 'pods', '-n', ns, ...(selector ? ['-l', selector] : []), '-o', 'json']);
  return (JSON.parse(out) as { items: PodJson[] }).items;
}

export function isReady(p: PodJson): boolean {
  return p.status.phase === 'Running' && !p.metadata.deletionTimestamp &&
    (p.status.conditions ?? []).some((c) => c.type === 'Ready' && c.status === 'True');
}

/** Waits until `count` pods match `selector` in `ns` and every one of them is Ready; resolves with them. */
export function waitForReadyPods(cluster: LocalCluster, ns: string, selector: string, count: number, timeoutMs = 180_000): Promise<PodJson[]> {
  return waitFor(`${count} Ready pods ${selector} in ${ns}`, async () => {
    const ps = (await pods(cluster, ns, selector)).filter((p) => !p.metadata.deletionTimestamp);
    return ps.length === count && ps.every(isReady) ? ps : undefined;
  }, timeoutMs, 500);
}

/** Pod identity and restarts: name → "uid restarts=N" (compared before and after a change). */
export async function podSnapshot(cluster: LocalCluster, namespaces: string[]): Promise<Record<string, string>> {
  const snap: Record<string, string> = {};
  for (const ns of namespaces) {
    for (const p of await pods(cluster, ns)) {
      if (p.metadata.deletionTimestamp) continue;
      const restarts = (p.status.containerStatuses ?? []).reduce((n, c) => n + c.restartCount, 0);
      snap[`${ns}/${p.metadata.name}`] = `${p.metadata.uid} restarts=${restarts}`;
    }
  }
  return snap;
}

/** Runs testbox in a pod (kubectl exec); resolves with the whole result. */
export function execTestbox(cluster: LocalCluster, ns: string, pod: string, args: string[], timeoutMs = 60_000): Promise<CommandResult> {
  return cluster.kubectl(['exec', '-n', ns, pod, '--', '/testbox', ...args], { timeoutMs });
}

export async function execTestboxOk(cluster: LocalCluster, ns: string, pod: string, args: string[], timeoutMs = 60_000): Promise<string> {
  const r = await execTestbox(cluster, ns, pod, args, timeoutMs);
  if (r.code !== 0) throw new Error(`testbox ${args.join(' ')} in ${ns}/${pod} exited ${r.code}:\n${r.stderr}${r.stdout}`);
  return r.stdout;
}

/**
 * What a failed step prints: every pod of `namespaces` (wide), the events, and for each pod not
 * Ready (and each listed in `alwaysLogs`) its containers' logs, current and previous.
 */
export async function diagnose(cluster: LocalCluster, namespaces: string[], alwaysLogs: string[] = []): Promise<string> {
  const out: string[] = [];
  const section = async (title: string, args: string[]): Promise<void> => {
    const r = await cluster.kubectl(args, { timeoutMs: 20_000 });
    out.push(`----- ${title} -----\n${(r.stdout + r.stderr).trimEnd()}`);
  };
  const nodes = await cluster.kubectl(['get', 'nodes', '-o', 'wide'], { timeoutMs: 20_000 });
  out.push(`----- nodes -----\n${(nodes.stdout + nodes.stderr).trimEnd()}`);
  for (const ns of namespaces) {
    if ((await cluster.kubectl(['get', 'namespace', ns])).code !== 0) continue;
    await section(`pods, services in ${ns}`, ['get', 'pods,services,endpointslices,networkpolicies,deployments', '-n', ns, '-o', 'wide']);
    const ours = await cluster.kubectl(['get', 'tunnelconnections,applicationmappings', '-n', ns, '-o', 'yaml'], { timeoutMs: 20_000 });
    if (ours.code === 0 && /kind: (TunnelConnection|ApplicationMapping)/.test(ours.stdout)) out.push(`----- Underpass objects in ${ns} -----\n${ours.stdout.trimEnd()}`);
    await section(`events in ${ns}`, ['get', 'events', '-n', ns, '--sort-by=.lastTimestamp']);
    let list: PodJson[] = [];
    try {
      list = await pods(cluster, ns);
    } catch {
      continue;
    }
    for (const p of list) {
      const key = `${ns}/${p.metadata.name}`;
      if (isReady(p) && !alwaysLogs.some((a) => key.startsWith(a))) continue;
      await section(`describe pod ${key}`, ['describe', 'pod', '-n', ns, p.metadata.name]);
      for (const c of p.spec.containers) {
        await section(`logs ${key} ${c.name}`, ['logs', '-n', ns, p.metadata.name, '-c', c.name, '--tail=60']);
        if ((p.status.containerStatuses ?? []).some((s) => s.name === c.name && s.restartCount > 0)) {
          await section(`previous logs ${key} ${c.name}`, ['logs', '-n', ns, p.metadata.name, '-c', c.name, '--previous', '--tail=60']);
        }
      }
    }
  }
  return out.join('\n');
}

/**
 * Runs one step of a test; when it fails, the error carries diagnose()'s report of `namespaces`
 * (also written to stderr), so a red test in CI says what the cluster looked like.
 */
export async function step<T>(cluster: LocalCluster, namespaces: string[] | (() => string[]), fn: () => Promise<T>, alwaysLogs: string[] = []): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    const nss = typeof namespaces === 'function' ? namespaces() : namespaces;
    let report = '';
    try {
      report = await diagnose(cluster, nss, alwaysLogs);
    } catch (e) {
      report = `(diagnose failed: ${(e as Error).message})`;
    }
    process.stderr.write(`\n===== cluster state after the failure =====\n${report}\n`);
    const e = err instanceof Error ? err : new Error(String(err));
    e.message += `\n\n===== cluster state after the failure (also on stderr) =====\n${report}`;
    throw e;
  }
}
