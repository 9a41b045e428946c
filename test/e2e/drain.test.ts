/**
 * A worker stopping under steady load (docs/ha.md, Drain), with real worker,
 * connector and client processes and a load balancer that, like kube-proxy,
 * learns a worker is not ready a little late. With `drainDelay` the worker
 * keeps its listeners open until the balancer has stopped sending clients:
 * no new connection fails and every in-flight stream finishes. Without it
 * (the control case) the clients the balancer still sends are refused. A
 * balancer slower than `drainDelay` (a busy node's kube-proxy) still fails
 * nothing: the worker keeps its listeners open while clients keep arriving.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { LoadGenerator } from '../../cli/load-generator.js';
import { TcpBalancer } from './balancer.js';
import { note } from './measured.js';
import {
  echoServer, freePort, getJson, makePki, removeDir, startConnector, startWorker, tempDir, waitFor, waitHttp,
  type App, type ConnectorSetup, type WorkerSetup,
} from './harness.js';

/** How late the balancer acts on readiness (kube-proxy's sync takes about a second). */
const PROPAGATION_MS = 500;

describe('worker drain under load (2 workers, 1 connector, a balancer with readiness)', () => {
  let dir: string;
  let app: App;
  let listenPort: number;
  const tunnelPorts: number[] = [];
  const workers: WorkerSetup[] = [];
  let connector: ConnectorSetup;
  let apps: TcpBalancer;

  const workerConfig = (i: number, drainDelay: string): Record<string, unknown> => ({
    instance: `w${i}`,
    tunnelPort: tunnelPorts[i],
    drainDelay,
    drainTimeout: '10s',
    mappings: [{ name: 'echo', target: { side: 'Connector', host: '127.0.0.1', port: app.port }, listen: { port: listenPort, address: `127.0.0.1${i}` } }],
  });

  async function startW(i: number, drainDelay: string): Promise<void> {
    workers[i] = await startWorker(dir, workerConfig(i, drainDelay), `worker-${i}.yaml`);
    apps.remove(`w${i}`);
    apps.add({ name: `w${i}`, host: `127.0.0.1${i}`, port: listenPort, readyUrl: `http://127.0.0.1:${workers[i]!.adminPort}/readyz` });
  }

  async function bothServing(): Promise<void> {
    await waitFor('the connector on both workers', async () => {
      const s = await getJson<{ workers: Array<{ worker: string; connected: boolean; draining: boolean }> }>(`http://127.0.0.1:${connector.adminPort}/status`);
      return s.workers.filter((w) => w.connected && !w.draining).length === 2;
    }, 15_000);
    for (const w of workers.slice(1)) await waitHttp(`http://127.0.0.1:${w.adminPort}/readyz`, w.proc, 15_000);
    await waitFor('the balancer to see both ready', () => apps.eligible().length === 2, 5_000);
  }

  /** Steady load; SIGTERM to worker 1 after a second; load until it has exited and a second more. */
  async function stopUnderLoad(): Promise<ReturnType<LoadGenerator['snapshot']>> {
    const load = new LoadGenerator({ targets: [{ name: 'connector-side', host: '127.0.0.1', port: apps.port, clients: 30 }], requests: 10, intervalMs: 50 });
    load.start();
    await new Promise((r) => setTimeout(r, 1_000));
    workers[1]!.proc.child.kill('SIGTERM');
    expect(await workers[1]!.proc.exited).toBe(0);
    await new Promise((r) => setTimeout(r, 1_000));
    return load.stop();
  }

  beforeAll(async () => {
    dir = await tempDir('underpass-drain-');
    const pki = await makePki(dir);
    await pki.connector('dc1-a');
    app = await echoServer();
    listenPort = await freePort();
    tunnelPorts[1] = await freePort();
    tunnelPorts[2] = await freePort();
    apps = new TcpBalancer({ mode: 'random', backends: [], propagationMs: PROPAGATION_MS });
    await apps.listen();
    await startW(1, '0s');
    await startW(2, '0s');
    connector = await startConnector(dir, 'dc1-a', workers.slice(1).map((w) => w.url), { allow: [`127.0.0.1:${app.port}`] });
    await bothServing();
  }, 60_000);

  afterAll(async () => {
    await connector?.proc.stop('SIGKILL');
    await Promise.all(workers.slice(1).map((w) => w?.proc.stop('SIGKILL')));
    await apps?.close();
    await app?.close();
    await removeDir(dir);
  });

  it('without drainDelay (the control case): clients the balancer still sends to the stopping worker are refused', async () => {
    const s = await stopUnderLoad();
    note('SIGTERM, drainDelay 0', s);
    expect(s.total.requests).toBeGreaterThan(500);
    expect(s.total.failedNew).toBeGreaterThan(0);
  }, 40_000);

  it('with drainDelay: no new connection fails, every in-flight stream finishes, the connector hears `draining` at once', async () => {
    await startW(1, '2s');
    await bothServing();
    const load = new LoadGenerator({ targets: [{ name: 'connector-side', host: '127.0.0.1', port: apps.port, clients: 30 }], requests: 10, intervalMs: 50 });
    load.start();
    await new Promise((r) => setTimeout(r, 1_000));
    const signalled = Date.now();
    workers[1]!.proc.child.kill('SIGTERM');
    // At once: not ready, and the connector stops opening streams to it.
    await waitFor('/readyz 503 draining', async () => (await fetch(`http://127.0.0.1:${workers[1]!.adminPort}/readyz`)).status === 503, 1_000);
    await waitFor('the connector to mark w1 draining', async () => {
      const st = await getJson<{ workers: Array<{ worker: string; draining: boolean }> }>(`http://127.0.0.1:${connector.adminPort}/status`);
      return st.workers.find((w) => w.worker === 'w1')?.draining === true;
    }, 1_000);
    expect(Date.now() - signalled).toBeLessThan(1_500);
    expect(await workers[1]!.proc.exited).toBe(0);
    await new Promise((r) => setTimeout(r, 1_000));
    const s = await load.stop();
    note('SIGTERM, drainDelay 2s', s);
    expect(s.total.requests).toBeGreaterThan(500);
    expect({ failedNew: s.total.failedNew, broken: s.total.broken, failures: s.failures.slice(0, 5) }).toEqual({ failedNew: 0, broken: 0, failures: [] });
    // Streams that were open on w1 when its listeners closed finished there.
    const onW1 = workers[1]!.proc.streams({ mapping: 'echo' });
    expect(onW1.length).toBeGreaterThan(0);
    expect(onW1.filter((l) => l.outcome !== 'closed')).toEqual([]);
  }, 40_000);

  it('with a balancer slower than drainDelay: the listeners stay open while clients still arrive and close 1 s after the last; nothing fails', async () => {
    // drainDelay 3 s; the balancer acts on readiness 4 s late: clients keep coming until about 4.1 s.
    if (workers[1]!.proc.alive) await workers[1]!.proc.stop('SIGKILL'); // run alone (-t): w1 of beforeAll
    await startW(1, '3s');
    await bothServing();
    apps.propagationMs = 4_000;
    try {
      const s = await stopUnderLoad();
      note('SIGTERM, drainDelay 3s, balancer 4 s late', s);
      expect(s.total.requests).toBeGreaterThan(500);
      expect({ failedNew: s.total.failedNew, broken: s.total.broken, failures: s.failures.slice(0, 5) }).toEqual({ failedNew: 0, broken: 0, failures: [] });
      // The worker says why it stayed open longer, with the numbers (and counts the late clients).
      const line = workers[1]!.proc.logs.split('\n').find((l) => l.includes('listeners close:'));
      expect(line).toMatch(/"late":[1-9]/);
      expect(line).toMatch(/kept open \d+ ms beyond drainDelay \(3000 ms\) until no client came for 1000 ms/);
    } finally {
      apps.propagationMs = PROPAGATION_MS;
    }
  }, 40_000);
});
