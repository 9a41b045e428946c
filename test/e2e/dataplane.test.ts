import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { randomBytes, createHash } from 'node:crypto';
import {
  bulkEcho, echoServer, exchange, freePort, getJson, makePki, removeDir, startConnector, startWorker, tcpServer, tempDir, waitFor,
  type App, type ConnectorSetup, type WorkerSetup,
} from './harness.js';

/** One worker, one connector, an echo app on each side, a mapping each way. */
describe('data plane end to end (real processes, loopback)', () => {
  let dir: string;
  let worker: WorkerSetup;
  let connector: ConnectorSetup;
  let privateApp: App;
  let clusterApp: App;
  let halfCloseApp: App;
  const ports = { toPrivate: 0, toCluster: 0, halfClose: 0 };

  beforeAll(async () => {
    dir = await tempDir();
    const pki = await makePki(dir);
    await pki.connector('dc1-a');
    privateApp = await echoServer();
    clusterApp = await echoServer();
    // Reads the whole request (until the client's FIN), then answers with a large response.
    halfCloseApp = await tcpServer((socket) => {
      const hash = createHash('sha256');
      let n = 0;
      socket.on('data', (d: Buffer) => {
        n += d.length;
        hash.update(d);
      });
      socket.on('end', () => socket.end(Buffer.concat([Buffer.from(`${n} ${hash.digest('hex')}\n`), Buffer.alloc(4 << 20, 7)])));
      socket.on('error', () => undefined);
    });
    ports.toPrivate = await freePort();
    ports.toCluster = await freePort();
    ports.halfClose = await freePort();
    worker = await startWorker(dir, {
      mappings: [
        { name: 'private-echo', target: { side: 'Connector', host: '127.0.0.1', port: privateApp.port }, listen: { port: ports.toPrivate, address: '127.0.0.1' } },
        { name: 'cluster-echo', target: { side: 'Cluster', host: '127.0.0.1', port: clusterApp.port }, listen: { port: ports.toCluster, address: '127.0.0.1' } },
        { name: 'half-close', target: { side: 'Connector', host: '127.0.0.1', port: halfCloseApp.port }, listen: { port: ports.halfClose, address: '127.0.0.1' } },
      ],
    });
    connector = await startConnector(dir, 'dc1-a', worker.url, {
      allow: [`127.0.0.1:${privateApp.port}`, `127.0.0.1:${halfCloseApp.port}`],
      bind: [`127.0.0.1:${ports.toCluster}`],
    });
    await waitFor('connector listener for cluster-echo', async () => (await exchange(ports.toCluster, 'x')).received.toString() === 'x');
  }, 60_000);

  afterAll(async () => {
    await connector?.proc.stop();
    await worker?.proc.stop();
    await Promise.all([privateApp, clusterApp, halfCloseApp].map((a) => a?.close()));
    await removeDir(dir);
  });

  it('carries a connection from the cluster side to an app in the private network', async () => {
    const r = await exchange(ports.toPrivate, 'to the private side');
    expect(r.error).toBeUndefined();
    expect(r.received.toString()).toBe('to the private side');
  });

  it('carries a connection from the private network to an app on the cluster side', async () => {
    const r = await exchange(ports.toCluster, 'to the cluster side');
    expect(r.error).toBeUndefined();
    expect(r.received.toString()).toBe('to the cluster side');
  });

  it('moves 1 GiB each way intact through a Connector-side mapping (sha256)', async () => {
    const r = await bulkEcho(ports.toPrivate, 1 << 30);
    expect(r.error).toBeUndefined();
    expect(r.receivedBytes).toBe(1 << 30);
    expect(r.received).toBe(r.sent);
  }, 240_000);

  it('moves 256 MiB each way intact through a Cluster-side mapping (sha256)', async () => {
    const r = await bulkEcho(ports.toCluster, 256 << 20);
    expect(r.error).toBeUndefined();
    expect(r.received).toBe(r.sent);
  }, 120_000);

  it('keeps 200 concurrent streams apart', async () => {
    const results = await Promise.all(Array.from({ length: 200 }, async (_, i) => {
      const data = randomBytes(32 * 1024 + i);
      const r = await exchange(i % 2 ? ports.toPrivate : ports.toCluster, data, '127.0.0.1', 60_000);
      return !r.error && r.received.equals(data);
    }));
    expect(results.filter((ok) => !ok)).toHaveLength(0);
  }, 90_000);

  it('half-closes: the client shuts its write side and still reads the whole response', async () => {
    const request = randomBytes(3 << 20);
    const r = await exchange(ports.halfClose, request, '127.0.0.1', 30_000);
    expect(r.error).toBeUndefined();
    const firstLine = r.received.subarray(0, r.received.indexOf(10)).toString();
    expect(firstLine).toBe(`${request.length} ${createHash('sha256').update(request).digest('hex')}`);
    expect(r.received.length).toBe(firstLine.length + 1 + (4 << 20));
  }, 60_000);

  it('writes one audit line per stream on both ends, with bytes each way', async () => {
    const data = randomBytes(10_000);
    await exchange(ports.toPrivate, data);
    const match = (a: Record<string, unknown>): boolean => a.mapping === 'private-echo' && a.bytesIn === 10_000 && a.bytesOut === 10_000;
    const w = await waitFor('worker audit line', () => worker.proc.streams().find(match));
    const c = await waitFor('connector audit line', () => connector.proc.streams().find(match));
    for (const line of [w, c]) {
      expect(line).toMatchObject({ connection: 'team-a/dc1', connector: 'dc1-a', outcome: 'closed', side: 'Connector' });
      expect(typeof line.time).toBe('string');
      expect(typeof line.durationMs).toBe('number');
      expect(line.client).toMatch(/^127\.0\.0\.1:\d+$/);
    }
    expect(c.target).toBe(`127.0.0.1:${privateApp.port}`);
  });

  it('reports the connector in the worker status and readiness', async () => {
    const status = await getJson<{ ready: boolean; connectors: Array<{ name: string; version: string }> }>(`http://127.0.0.1:${worker.adminPort}/status`);
    expect(status.ready).toBe(true);
    expect(status.connectors.map((c) => c.name)).toEqual(['dc1-a']);
    const metrics = await (await fetch(`http://127.0.0.1:${worker.adminPort}/metrics`)).text();
    expect(metrics).toMatch(/underpass_sessions\{role="worker"\} 1/);
    expect(metrics).toMatch(/underpass_streams_total\{mapping="private-echo",outcome="closed"/);
    // Keepalive (1 s in the harness) reports round trips per peer on both ends.
    const rtt = /underpass_keepalive_rtt_seconds\{peer="[^"]+",role="(worker|connector)"\} [0-9.e-]+/;
    await waitFor('worker keepalive rtt', async () => rtt.test(await (await fetch(`http://127.0.0.1:${worker.adminPort}/metrics`)).text()), 5_000);
    await waitFor('connector keepalive rtt', async () => rtt.test(await (await fetch(`http://127.0.0.1:${connector.adminPort}/metrics`)).text()), 5_000);
  });
});
