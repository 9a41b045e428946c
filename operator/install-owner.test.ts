/**
 * What the operator creates in its own namespace — the leader Lease, the report TLS Secret (and
 * the leader EndpointSlice, leader-endpoint.test.ts) — is owned by the report Service, so it goes
 * when the install goes: `helm uninstall` deletes the Service and the garbage collector the rest.
 * Against a real kube-apiserver with the garbage collector running (test/env). Without the
 * owner, test/cluster-real/tunnel.test.ts found both left behind after `helm uninstall`.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { silentLogger } from '../tunnel/log.js';
import { startTestEnv, TESTENV_START_TIMEOUT_MS, type TestEnv } from '../test/cluster/testenv.js';
import { Kube, loadKubeConfig } from './kube.js';
import { LeaderElector } from './leader.js';
import { reportServiceOwner } from './leader-endpoint.js';
import { ensureOperatorTls } from './operator-pki.js';

const NS = 'underpass-system';
const SERVICE = 'underpass-operator';

let env: TestEnv;
let kube: Kube;

beforeAll(async () => {
  env = await startTestEnv();
  await env.kubectlOk(['create', 'namespace', NS]);
  kube = new Kube(loadKubeConfig(env.kubeconfig));
}, TESTENV_START_TIMEOUT_MS);

afterAll(async () => {
  await env?.stop();
}, 60_000);

async function gone(kind: string, name: string, timeoutMs = 30_000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if ((await env.kubectl(['get', kind, name, '-n', NS])).code !== 0) return true;
    await new Promise((r) => setTimeout(r, 250));
  }
  return false;
}

describe('objects in the operator namespace, owned by the report Service', () => {
  it('finds no owner while the Service does not exist', async () => {
    expect(await reportServiceOwner(kube, NS, SERVICE)).toBeUndefined();
  });

  it('creates the Lease and the report TLS Secret owned by the Service, and both go when it is deleted', async () => {
    await env.kubectlOk(['create', 'service', 'clusterip', SERVICE, '-n', NS, '--tcp=8443:8443']);
    const owner = await reportServiceOwner(kube, NS, SERVICE);
    const uid = (await env.kubectlOk(['get', 'service', SERVICE, '-n', NS, '-o', 'jsonpath={.metadata.uid}'])).trim();
    expect(owner).toEqual({ apiVersion: 'v1', kind: 'Service', name: SERVICE, uid });

    await ensureOperatorTls({ kube, namespace: NS, secretName: 'underpass-operator-report-tls', sans: [`${SERVICE}.${NS}.svc`], logger: silentLogger(), owner: owner! });
    const abort = new AbortController();
    let leading!: () => void;
    const led = new Promise<void>((r) => { leading = r; });
    const elector = new LeaderElector({
      kube, namespace: NS, name: SERVICE, identity: 'replica-a', logger: silentLogger(), owner: owner!,
      onStartedLeading: () => leading(), onStoppedLeading: () => undefined,
    });
    const running = elector.run(abort.signal);
    await led;
    abort.abort();
    await running;

    const ownersOf = async (kind: string, name: string): Promise<unknown> =>
      JSON.parse(await env.kubectlOk(['get', kind, name, '-n', NS, '-o', 'jsonpath={.metadata.ownerReferences}']));
    expect(await ownersOf('lease', SERVICE)).toEqual([owner]);
    expect(await ownersOf('secret', 'underpass-operator-report-tls')).toEqual([owner]);

    await env.kubectlOk(['delete', 'service', SERVICE, '-n', NS]);
    expect(await gone('lease', SERVICE)).toBe(true);
    expect(await gone('secret', 'underpass-operator-report-tls')).toBe(true);
  }, 60_000);
});
