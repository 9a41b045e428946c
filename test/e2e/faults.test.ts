/**
 * Failures of the processes themselves: kill -9 of either end, two connectors
 * and the loss of one, SIGTERM drain, a frozen worker (SIGSTOP) caught by
 * keepalives. Real worker and connector processes over loopback.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import {
  echoServer, exchange, freePort, getJson, makePki, metricValue, removeDir, sleep, startConnector, startWorker, tcpProbe, tempDir, waitFor, waitHttp,
  type App, type ConnectorSetup, type WorkerSetup,
} from './harness.js';

/**
 * Streams `size` bytes to an echo mapping; calls `onProgress` as echoed bytes come back. `client`
 * is the address the worker sees (its audit line names it).
 */
function echoTransfer(port: number, size: number, onProgress: (received: number) => void): Promise<{ receivedBytes: number; error?: NodeJS.ErrnoException; client: string }> {
  return new Promise((resolve) => {
    const socket = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    let client = '';
    const block = randomBytes(1 << 20);
    let sent = 0;
    let receivedBytes = 0;
    let error: NodeJS.ErrnoException | undefined;
    const pump = (): void => {
      while (sent < size && !socket.destroyed) {
        sent += block.length;
        if (!socket.write(block)) return void socket.once('drain', pump);
      }
      if (!socket.destroyed) socket.end();
    };
    socket.on('connect', () => {
      client = `${socket.localAddress}:${socket.localPort}`;
      pump();
    });
    socket.on('data', (d: Buffer) => {
      receivedBytes += d.length;
      onProgress(receivedBytes);
    });
    socket.on('error', (err) => (error ??= err));
    socket.on('close', () => resolve({ receivedBytes, client, ...(error ? { error } : {}) }));
  });
}

/**
 * A client that writes `chunks` pieces `gapMs` apart — the last one only once `last` resolves —
 * then half-closes and reads the echo.
 */
function slowExchange(port: number, chunks: Buffer[], gapMs: number, last: Promise<void>): Promise<{ received: Buffer; error?: Error }> {
  return new Promise((resolve) => {
    const socket = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    const parts: Buffer[] = [];
    let error: Error | undefined;
    socket.on('data', (d: Buffer) => parts.push(d));
    socket.on('error', (err) => (error ??= err));
    socket.on('close', () => resolve({ received: Buffer.concat(parts), ...(error ? { error } : {}) }));
    socket.on('connect', async () => {
      for (const [i, chunk] of chunks.entries()) {
        if (i === chunks.length - 1) await last;
        if (socket.destroyed) return;
        socket.write(chunk);
        await sleep(gapMs);
      }
      socket.end();
    });
  });
}

async function readyz(port: number): Promise<{ status: number; body: string }> {
  const res = await fetch(`http://127.0.0.1:${port}/readyz`);
  return { status: res.status, body: await res.text() };
}

describe('faults: one worker, one connector (kill -9, restart, SIGSTOP, SIGTERM)', () => {
  let dir: string;
  let app: App;
  let worker: WorkerSetup;
  let connector: ConnectorSetup;
  let mappings: unknown[];
  let echoPort: number;
  const allow = (): string[] => [`127.0.0.1:${app.port}`];

  /** Brings back whatever an earlier test left dead, so each test starts from a working tunnel. */
  async function ensureUp(): Promise<void> {
    if (!worker.proc.alive) worker = await startWorker(dir, { tunnelPort: worker.tunnelPort, mappings });
    if (!connector.proc.alive) connector = await startConnector(dir, 'dc1-a', worker.url, { allow: allow() });
    await waitHttp(`http://127.0.0.1:${worker.adminPort}/readyz`, worker.proc, 10_000);
  }

  beforeAll(async () => {
    dir = await tempDir('underpass-faults-');
    const pki = await makePki(dir);
    await pki.connector('dc1-a');
    app = await echoServer();
    echoPort = await freePort();
    mappings = [{ name: 'echo', target: { side: 'Connector', host: '127.0.0.1', port: app.port }, listen: { port: echoPort, address: '127.0.0.1' } }];
    worker = await startWorker(dir, { mappings });
    connector = await startConnector(dir, 'dc1-a', worker.url, { allow: allow() });
    await waitHttp(`http://127.0.0.1:${worker.adminPort}/readyz`, worker.proc);
  }, 30_000);

  afterAll(async () => {
    if (worker?.proc.child.signalCode === 'SIGSTOP' || worker?.proc.alive) worker.proc.child.kill('SIGCONT');
    await connector?.proc.stop('SIGKILL');
    await worker?.proc.stop('SIGKILL');
    await app?.close();
    await removeDir(dir);
  });

  it('kill -9 of the connector mid-transfer ends the client with an error; the worker stays up, unready, and a restarted connector serves new streams', async () => {
    await ensureUp();
    const size = 1 << 30;
    let killed = false;
    const result = await echoTransfer(echoPort, size, (received) => {
      if (!killed && received >= 8 << 20) {
        killed = true;
        connector.proc.child.kill('SIGKILL');
      }
    });
    expect(killed).toBe(true);
    expect(result.receivedBytes).toBeLessThan(size);
    // Reset (the worker resets the client socket when the stream dies), never a clean end. The
    // error is what tells them apart, not the absence of 'end': a Node client that still has
    // unread bytes when the RST arrives is told 'end' first (libuv reports the hang-up as EOF after
    // a partial read) and gets the error on its next write — as this busy client did now and then
    // under load (a plain Node client against a server that resets: 168 times in 200).
    expect(result.error?.code ?? 'a clean end').toMatch(/^(ECONNRESET|EPIPE)$/);
    expect(await connector.proc.exited).toBeNull();

    expect(worker.proc.alive).toBe(true);
    expect((await fetch(`http://127.0.0.1:${worker.adminPort}/healthz`)).status).toBe(200);
    const ready = await waitFor('worker /readyz 503', async () => {
      const r = await readyz(worker.adminPort);
      return r.status === 503 && r;
    });
    expect(ready.body).toMatch(/no connector/);
    // This client's line (another process that connects to the port by mistake must not be taken for it).
    const line = await waitFor('worker audit line of the broken stream', () => worker.proc.streams({ mapping: 'echo', client: result.client })[0]);
    expect(line).toMatchObject({ outcome: 'failed', reason: 'ABORTED', connector: 'dc1-a' });
    await waitFor('session-closed audit line', () => worker.proc.audit.find((a) => a.event === 'session-closed' && a.connector === 'dc1-a'));

    connector = await startConnector(dir, 'dc1-a', worker.url, { allow: allow() });
    await waitHttp(`http://127.0.0.1:${worker.adminPort}/readyz`, worker.proc, 10_000);
    const data = randomBytes(64 * 1024);
    const r = await exchange(echoPort, data);
    expect(r.error).toBeUndefined();
    expect(r.received.equals(data)).toBe(true);
  }, 30_000);

  it('kill -9 of the worker and a restart on the same port: the connector reconnects by itself and new streams work', async () => {
    await ensureUp();
    const first = worker;
    first.proc.child.kill('SIGKILL');
    await first.proc.exited;
    await waitFor('the connector to notice', async () => (await readyz(connector.adminPort)).status === 503, 5_000);
    await sleep(300); // let it fail a reconnect attempt or two against the closed port
    expect(connector.proc.alive).toBe(true);

    worker = await startWorker(dir, { tunnelPort: first.tunnelPort, mappings });
    const started = Date.now();
    await waitHttp(`http://127.0.0.1:${worker.adminPort}/readyz`, worker.proc, 10_000);
    expect(Date.now() - started).toBeLessThan(5_000); // maxDelay is 1 s in the harness
    await waitHttp(`http://127.0.0.1:${connector.adminPort}/readyz`, connector.proc, 5_000);
    const data = randomBytes(16 * 1024);
    const r = await exchange(echoPort, data);
    expect(r.error).toBeUndefined();
    expect(r.received.equals(data)).toBe(true);
    expect(await metricValue(connector.adminPort, 'underpass_reconnects_total')).toBeGreaterThan(0);
    // Audit lines wait up to 10 ms before they are written.
    await waitFor('two session-opened audit lines', () => connector.proc.audit.filter((a) => a.event === 'session-opened').length === 2);
    expect(connector.proc.audit.filter((a) => a.event === 'session-opened')).toHaveLength(2);
  }, 30_000);

  it('a frozen worker (SIGSTOP) is detected by keepalive within 15 s; after SIGCONT the connector is back', async () => {
    await ensureUp();
    await waitHttp(`http://127.0.0.1:${connector.adminPort}/readyz`, connector.proc, 5_000);
    const logsBefore = connector.proc.logs.length;
    const stopped = Date.now();
    worker.proc.child.kill('SIGSTOP');
    try {
      const r = await waitFor('connector /readyz 503', async () => {
        const x = await readyz(connector.adminPort);
        return x.status === 503 && x;
      }, 15_000);
      const detectedMs = Date.now() - stopped;
      expect(detectedMs).toBeLessThan(15_000);
      expect(detectedMs).toBeGreaterThanOrEqual(1_000); // by the 3 s keepalive timeout (counted from the last inbound frame), not by anything sooner
      // Seen once (Node 24, 1 run in 10, not again in 20 more): the connector's session had ended with
      // "transport failed: read ECONNRESET" instead. Say what the connector logged, for the next diagnosis.
      if (!/considered dead|keepalive/i.test(r.body)) throw new Error(`connector /readyz says "${r.body.trim()}", not the keepalive timeout; its log since SIGSTOP: ${connector.proc.logs.slice(logsBefore).slice(-3000)}`);
      expect(connector.proc.logs.slice(logsBefore)).toMatch(/nothing received from the peer for \d+ ms; the connection is considered dead/);
    } finally {
      worker.proc.child.kill('SIGCONT');
    }
    await waitHttp(`http://127.0.0.1:${connector.adminPort}/readyz`, connector.proc, 15_000);
    const r = await exchange(echoPort, 'after the thaw');
    expect(r.received.toString()).toBe('after the thaw');
  }, 40_000);

  it('SIGTERM to the worker drains: an in-flight slow stream completes intact, new clients are refused, exit 0 within drainTimeout', async () => {
    await ensureUp();
    const chunks = Array.from({ length: 10 }, () => randomBytes(1000));
    // The stream's last chunk waits for the checks below: under load they may take longer than
    // the stream's ~1 s, and the worker would have drained and exited before they ran.
    let checked!: () => void;
    const inFlight = slowExchange(echoPort, chunks, 100, new Promise<void>((r) => (checked = r)));
    await waitFor('the slow stream to be open on the worker', async () =>
      (await metricValue(worker.adminPort, 'underpass_streams_open', { mapping: 'echo' })) === 1, 2_000);
    const signalled = Date.now();
    worker.proc.child.kill('SIGTERM');
    await waitFor('the worker to log that it is draining', () => worker.proc.logs.includes('draining'), 2_000);

    const during = await tcpProbe('127.0.0.1', echoPort);
    expect(during).toBe('refused');
    const tunnelDuring = await tcpProbe('127.0.0.1', worker.tunnelPort);
    expect(tunnelDuring).toBe('refused');
    expect(worker.proc.alive).toBe(true); // still draining: the slow stream has not finished
    checked();

    const r = await inFlight;
    expect(r.error).toBeUndefined();
    expect(r.received.equals(Buffer.concat(chunks))).toBe(true);
    expect(await worker.proc.exited).toBe(0);
    expect(Date.now() - signalled).toBeLessThan(5_000); // drainTimeout in the harness config
    const line = worker.proc.streams({ mapping: 'echo' }).at(-1);
    expect(line).toMatchObject({ outcome: 'closed', bytesIn: 10_000, bytesOut: 10_000 });
  }, 30_000);
});

describe('faults: two connectors on one connection', () => {
  let dir: string;
  let app: App;
  let worker: WorkerSetup;
  let a: ConnectorSetup;
  let b: ConnectorSetup;
  let echoPort: number;

  beforeAll(async () => {
    dir = await tempDir('underpass-faults2-');
    const pki = await makePki(dir);
    await Promise.all([pki.connector('dc1-a'), pki.connector('dc1-b')]);
    app = await echoServer();
    echoPort = await freePort();
    worker = await startWorker(dir, {
      mappings: [{ name: 'echo', target: { side: 'Connector', host: '127.0.0.1', port: app.port }, listen: { port: echoPort, address: '127.0.0.1' } }],
    });
    const allow = [`127.0.0.1:${app.port}`];
    [a, b] = await Promise.all([startConnector(dir, 'dc1-a', worker.url, { allow }), startConnector(dir, 'dc1-b', worker.url, { allow })]);
    await waitFor('both connectors in /status', async () =>
      (await getJson<{ connectors: unknown[] }>(`http://127.0.0.1:${worker.adminPort}/status`)).connectors.length === 2);
  }, 30_000);

  afterAll(async () => {
    await Promise.all([a?.proc.stop('SIGKILL'), b?.proc.stop('SIGKILL')]);
    await worker?.proc.stop();
    await app?.close();
    await removeDir(dir);
  });

  it('spreads streams over both connectors, and after kill -9 of one the next 20 streams (opened together at once) all succeed without waiting for keepalive', async () => {
    for (let i = 0; i < 20; i++) {
      const data = randomBytes(512);
      expect((await exchange(echoPort, data)).received.equals(data)).toBe(true);
    }
    const lines = await waitFor('20 audit lines', () => {
      const l = worker.proc.streams({ mapping: 'echo', outcome: 'closed' });
      return l.length >= 20 && l;
    });
    const byConnector = new Map<unknown, number>();
    for (const l of lines) byConnector.set(l.connector, (byConnector.get(l.connector) ?? 0) + 1);
    expect([...byConnector.keys()].sort()).toEqual(['dc1-a', 'dc1-b']);
    expect(Math.min(...byConnector.values())).toBeGreaterThanOrEqual(5);

    b.proc.child.kill('SIGKILL');
    await b.proc.exited; // its sockets are gone; the worker may not have noticed yet
    const durations: number[] = [];
    const failures: string[] = [];
    await Promise.all(Array.from({ length: 20 }, async (_, i) => {
      const data = randomBytes(512);
      const started = Date.now();
      const r = await exchange(echoPort, data, '127.0.0.1', 2_500);
      durations.push(Date.now() - started);
      if (r.error || !r.received.equals(data)) failures.push(`stream ${i}: ${r.error?.message ?? `${r.received.length} bytes back`}`);
    }));
    expect(failures).toEqual([]);
    // The keepalive timeout is 3 s: no stream may have waited for it.
    expect(Math.max(...durations)).toBeLessThan(1_000);
    expect(a.proc.alive).toBe(true);
    await waitFor('dc1-b gone from /status', async () =>
      (await getJson<{ connectors: Array<{ name: string }> }>(`http://127.0.0.1:${worker.adminPort}/status`)).connectors.map((c) => c.name).join() === 'dc1-a');
  }, 30_000);
});
