/**
 * A connector stopping (docs/ha.md, Drain), with real worker, connector and
 * client processes. On SIGTERM it tells the worker `draining` at once: the
 * worker prefers the other connector for new streams, and still uses this one
 * when it has no other, until the drain delay is over and the connector
 * retires its sessions (`retire`/`retired`, as after a certificate renewal)
 * before GoAway.
 */
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { LoadGenerator } from '../../cli/load-generator.js';
import { note } from './measured.js';
import {
  echoServer, freePort, getJson, makePki, removeDir, startConnector, startWorker, tempDir, waitFor,
  type App, type ConnectorSetup, type WorkerSetup,
} from './harness.js';

interface WorkerStatus {
  ready: boolean;
  connectors: Array<{ name: string; draining: boolean; retired: boolean }>;
}

/** One connection through the worker's listener: a line out, the same line back. */
function roundTrip(port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    const timer = setTimeout(() => socket.destroy(new Error('no echo within 3 s')), 3_000);
    let got = '';
    socket.on('connect', () => socket.write('ping\n'));
    socket.on('data', (d) => {
      got += d.toString();
      if (got === 'ping\n') socket.end();
    });
    socket.on('close', () => {
      clearTimeout(timer);
      if (got === 'ping\n') resolve();
      else reject(new Error(`the connection closed after ${JSON.stringify(got)}`));
    });
    socket.on('error', () => undefined);
  });
}

describe('connector drain (1 worker, 2 connectors with drainDelay 2s)', () => {
  let dir: string;
  let app: App;
  let listenPort: number;
  let worker: WorkerSetup;
  const connectors: Record<string, ConnectorSetup> = {};

  const status = (): Promise<WorkerStatus> => getJson<WorkerStatus>(`http://127.0.0.1:${worker.adminPort}/status`);

  beforeAll(async () => {
    dir = await tempDir('underpass-connector-drain-');
    const pki = await makePki(dir);
    await pki.connector('dc1-a');
    await pki.connector('dc1-b');
    app = await echoServer();
    listenPort = await freePort();
    worker = await startWorker(dir, {
      instance: 'w1',
      mappings: [{ name: 'echo', target: { side: 'Connector', host: '127.0.0.1', port: app.port }, listen: { port: listenPort, address: '127.0.0.1' } }],
    });
    for (const name of ['dc1-a', 'dc1-b']) {
      connectors[name] = await startConnector(dir, name, worker.url, { allow: [`127.0.0.1:${app.port}`], drainDelay: '2s' });
    }
    await waitFor('both connectors on the worker', async () => (await status()).connectors.length === 2, 15_000);
  }, 60_000);

  afterAll(async () => {
    await Promise.all(Object.values(connectors).map((c) => c.proc.stop('SIGKILL')));
    await worker?.proc.stop('SIGKILL');
    await app?.close();
    await removeDir(dir);
  });

  it('with another connector: the worker hears `draining` at once and no client fails', async () => {
    const load = new LoadGenerator({ targets: [{ name: 'connector-side', host: '127.0.0.1', port: listenPort, clients: 20 }], requests: 10, intervalMs: 50 });
    load.start();
    await new Promise((r) => setTimeout(r, 1_000));
    const signalled = Date.now();
    connectors['dc1-a']!.proc.child.kill('SIGTERM');
    await waitFor('the worker to mark dc1-a draining', async () => (await status()).connectors.find((c) => c.name === 'dc1-a')?.draining === true, 1_000);
    expect(Date.now() - signalled).toBeLessThan(1_500);
    expect(await connectors['dc1-a']!.proc.exited).toBe(0);
    const s = await load.stop();
    note('connector SIGTERM, drainDelay 2s, another connector', s);
    expect(s.total.requests).toBeGreaterThan(200);
    expect({ failedNew: s.total.failedNew, broken: s.total.broken, failures: s.failures.slice(0, 5) }).toEqual({ failedNew: 0, broken: 0, failures: [] });
  }, 40_000);

  it('the only connector: during its drain delay the worker still carries new clients through it', async () => {
    const b = connectors['dc1-b']!;
    b.proc.child.kill('SIGTERM');
    await waitFor('the worker to mark dc1-b draining', async () => (await status()).connectors.find((c) => c.name === 'dc1-b')?.draining === true, 1_000);
    // Draining, not retired: the worker still counts it and uses it (better carried than refused).
    const during = await status();
    expect(during.connectors.find((c) => c.name === 'dc1-b')).toMatchObject({ draining: true, retired: false });
    expect(during.ready).toBe(true);
    for (let i = 0; i < 5; i++) await roundTrip(listenPort);
    expect(await b.proc.exited).toBe(0);
  }, 20_000);
});
