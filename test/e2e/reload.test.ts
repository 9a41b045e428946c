import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { once } from 'node:events';
import { writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import YAML from 'yaml';
import {
  echoServer, exchange, freePort, makePki, removeDir, startConnector, startWorker, tempDir, waitFor,
  type App, type ConnectorSetup, type WorkerSetup,
} from './harness.js';

/** Live mapping changes: the worker re-reads its config file without restarting or dropping streams. */
describe('worker config hot reload (real processes)', () => {
  let dir: string;
  let worker: WorkerSetup;
  let connector: ConnectorSetup;
  let app: App;
  let portA: number;
  let portB: number;
  let portC: number;
  const mapping = (name: string, side: 'Connector' | 'Cluster', port: number) => ({
    name, target: { side, host: '127.0.0.1', port: app.port }, listen: { port, address: '127.0.0.1' },
  });

  beforeAll(async () => {
    dir = await tempDir();
    const pki = await makePki(dir);
    await pki.connector('dc1-a');
    app = await echoServer();
    [portA, portB, portC] = [await freePort(), await freePort(), await freePort()];
    worker = await startWorker(dir, { mappings: [mapping('a', 'Connector', portA)] });
    connector = await startConnector(dir, 'dc1-a', worker.url, { allow: [`127.0.0.1:${app.port}`], bind: [`127.0.0.1:${portC}`] });
  }, 60_000);

  afterAll(async () => {
    await connector?.proc.stop();
    await worker?.proc.stop();
    await app?.close();
    await removeDir(dir);
  });

  async function rewrite(mappings: unknown[]): Promise<void> {
    const file = path.join(dir, 'worker.yaml');
    await writeFile(file, YAML.stringify({ ...worker.config, mappings }));
  }

  it('applies added mappings on both sides within 5 s while an established stream stays up', async () => {
    // A long-lived connection on mapping "a".
    const held = net.connect(portA, '127.0.0.1');
    await once(held, 'connect');
    held.write('before;');
    await once(held, 'data');

    const started = Date.now();
    await rewrite([mapping('a', 'Connector', portA), mapping('b', 'Connector', portB), mapping('c', 'Cluster', portC)]);
    await waitFor('mapping b usable', async () => (await exchange(portB, 'via b')).received.toString() === 'via b', 5_000);
    await waitFor('mapping c usable on the connector', async () => (await exchange(portC, 'via c')).received.toString() === 'via c', 5_000);
    expect(Date.now() - started).toBeLessThan(5_000);

    held.write('after');
    const [echoed] = (await once(held, 'data')) as [Buffer];
    expect(echoed.toString()).toBe('after');
    held.destroy();
    await waitFor('config-applied audit adding b', () => worker.proc.audit.some((a) => a.event === 'config-applied' && (a.added as string[]).includes('b')));
  });

  it('closes the listener of a removed mapping but lets its established stream finish', async () => {
    const held = net.connect(portB, '127.0.0.1');
    await once(held, 'connect');
    held.write('1');
    await once(held, 'data');
    await rewrite([mapping('a', 'Connector', portA)]);
    await waitFor('listener of b closed', async () => (await exchange(portB, 'x', '127.0.0.1', 1_000)).error !== undefined, 5_000);
    await waitFor('listener of c closed on the connector', async () => (await exchange(portC, 'x', '127.0.0.1', 1_000)).error !== undefined, 5_000);
    held.write('2');
    const [echoed] = (await once(held, 'data')) as [Buffer];
    expect(echoed.toString()).toBe('2');
    held.end();
  });

  it('keeps the running config when the file becomes invalid, and says why', async () => {
    await writeFile(path.join(dir, 'worker.yaml'), YAML.stringify({ ...worker.config, mappings: [{ ...mapping('a', 'Connector', 70000) }] }));
    const rejected = await waitFor('config-rejected audit', () => worker.proc.audit.find((a) => a.event === 'config-rejected'), 5_000);
    expect(String(rejected.message)).toMatch(/mappings\[0\]\.listen\.port/);
    expect((await exchange(portA, 'still')).received.toString()).toBe('still');
    await rewrite([mapping('a', 'Connector', portA)]);
  });
});
