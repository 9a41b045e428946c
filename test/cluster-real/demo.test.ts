/**
 * `make cluster-demo` (test/env/cluster-demo.sh) works as the README promises: it installs the
 * operator and a connector with Helm in the local cluster, sends a request each way through the
 * tunnel and prints the commands to look at it; `--clean` removes everything it made. Runs the
 * script itself, as a user would, so a broken step fails here with the script's own message.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import path from 'node:path';
import { REPO_ROOT, run } from '../cluster/testenv.js';
import { clusterUnavailable, type LocalCluster, useCluster } from './cluster.js';

const why = await clusterUnavailable();
if (why) console.log(`make cluster-demo test skipped: ${why}`);
const suite = why ? describe.skip : describe;
const DEMO = path.join(REPO_ROOT, 'test', 'env', 'cluster-demo.sh');

suite('make cluster-demo', () => {
  let cluster: LocalCluster;
  beforeAll(async () => {
    cluster = await useCluster();
  }, 30 * 60_000);
  afterAll(async () => {
    await run('bash', [DEMO, '--clean'], { timeoutMs: 300_000 });
    await cluster?.release();
  }, 320_000);

  it('starts the operator, a connection with two workers and a connector, and carries traffic both ways', async () => {
    const r = await run('bash', [DEMO], { timeoutMs: 15 * 60_000 });
    if (r.code !== 0) throw new Error(`cluster-demo.sh exited ${r.code}:\n${r.stderr.split('\n').slice(-30).join('\n')}`);
    expect(r.stderr).toMatch(/demo-team\/client -> demo-peer\/web[\s\S]*answered: demo-peer host=web /);
    expect(r.stderr).toMatch(/demo-peer\/client -> demo-team\/web[\s\S]*answered: demo-team host=web /);
    expect(r.stdout).toMatch(/traffic went both ways/);
    const workers = await cluster.kubectlOk(['get', 'pods', '-n', 'demo-team', '-l', 'app.kubernetes.io/name=underpass-worker', '-o', 'name']);
    expect(workers.trim().split('\n')).toHaveLength(2);
  }, 16 * 60_000);

  it('removes what it made with --clean', async () => {
    const r = await run('bash', [DEMO, '--clean'], { timeoutMs: 300_000 });
    expect(r.code).toBe(0);
    for (const ns of ['demo-team', 'demo-peer', 'underpass-system']) {
      expect((await cluster.kubectl(['get', 'namespace', ns])).code).not.toBe(0);
    }
  }, 320_000);
});
