/**
 * A draining worker keeps accepting the Cluster-side streams connectors open until its GoAway
 * (docs/ha.md, Drain): a connector opens streams on a draining worker's link when it has no other,
 * and any connector may open one in the moment before it hears `draining`. Refusing them
 * (`SHUTTING_DOWN`) reset the client's connection: one such reset failed CI's mesh test once.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import {
  echoServer, exchange, freePort, getJson, makePki, removeDir, startConnector, startWorker, tempDir, waitFor,
  type App, type ConnectorSetup, type WorkerSetup,
} from './harness.js';

describe('a draining worker and Cluster-side streams', () => {
  let dir: string;
  let app: App;
  let port: number;
  let worker: WorkerSetup;
  let connector: ConnectorSetup;

  beforeAll(async () => {
    dir = await tempDir('underpass-drain-cs-');
    const pki = await makePki(dir);
    await pki.connector('dc1-a');
    app = await echoServer();
    port = await freePort();
    worker = await startWorker(dir, {
      drainDelay: '3s',
      drainTimeout: '10s',
      mappings: [{ name: 'cluster-echo', target: { side: 'Cluster', host: '127.0.0.1', port: app.port }, listen: { port, address: '127.0.0.1' } }],
    });
    connector = await startConnector(dir, 'dc1-a', worker.url, { bind: [`127.0.0.1:${port}`] });
    await waitFor('the connector listener', async () => (await exchange(port, 'x')).received.toString() === 'x');
  }, 60_000);

  afterAll(async () => {
    await connector?.proc.stop('SIGKILL');
    await worker?.proc.stop('SIGKILL');
    await app?.close();
    await removeDir(dir);
  });

  it('carries a new Cluster-side connection through its only worker while that worker drains', async () => {
    worker.proc.child.kill('SIGTERM');
    await waitFor('the connector to hear `draining`', async () => {
      const s = await getJson<{ workers: Array<{ draining: boolean }> }>(`http://127.0.0.1:${connector.adminPort}/status`);
      return s.workers.length === 1 && s.workers[0]!.draining;
    }, 2_000);
    const r = await exchange(port, 'during the drain');
    expect({ error: r.error?.message, received: r.received.toString() }).toEqual({ error: undefined, received: 'during the drain' });
    expect(await worker.proc.exited).toBe(0);
    const refused = worker.proc.streams({ mapping: 'cluster-echo' }).filter((l) => l.outcome !== 'closed');
    expect(refused).toEqual([]);
  }, 30_000);
});
