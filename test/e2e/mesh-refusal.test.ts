/**
 * The mesh's cheap refusal at a real worker (docs/ha.md): a connector that
 * names the worker among those it holds gets 409 ALREADY_CONNECTED with the
 * worker's instance and set, after authentication and before any session;
 * it is counted, not audited. And a connector configured with two URLs of two
 * operator-less workers holds both (each URL's loop dials until it reaches a
 * worker), as before the mesh.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { connectWebSocket, WebSocketRefused, WebSocketStream } from '../../tunnel/transport/websocket.js';
import { getJson, makePki, metricValue, removeDir, startConnector, startWorker, tempDir, waitFor, type WorkerSetup } from './harness.js';

describe('mesh refusals at the worker', () => {
  let dir: string;
  let w1: WorkerSetup;
  let w2: WorkerSetup;

  beforeAll(async () => {
    dir = await tempDir('underpass-mesh-refusal-');
    await (await makePki(dir)).connector('dc1-a');
    [w1, w2] = await Promise.all([startWorker(dir, { instance: 'w1' }, 'w1.yaml'), startWorker(dir, { instance: 'w2' }, 'w2.yaml')]);
  }, 30_000);

  afterAll(async () => {
    await Promise.all([w1?.proc.stop(), w2?.proc.stop()]);
    await removeDir(dir);
  });

  async function dial(w: WorkerSetup, headers: Record<string, string>, certDir = dir): Promise<WebSocketStream | WebSocketRefused> {
    const [cert, key, ca] = await Promise.all([
      readFile(path.join(certDir, 'connector-dc1-a.crt')), readFile(path.join(certDir, 'connector-dc1-a.key')), readFile(path.join(dir, 'ca.crt')),
    ]);
    try {
      return await connectWebSocket(new URL(`${w.url}/v1/tunnel`), { cert: cert!, key: key!, ca: ca!, timeoutMs: 5_000, headers, checkServerIdentity: () => undefined });
    } catch (err) {
      if (err instanceof WebSocketRefused) return err;
      throw err;
    }
  }

  it.each([
    ['its own name alone', 'w1'],
    ['its name among others, with spaces', 'w0, w1 ,w9'],
  ])('answers 409 ALREADY_CONNECTED to a connector naming it (%s), with its instance and set', async (_name, have) => {
    const before = await metricValue(w1.adminPort, 'underpass_mesh_already_connected_total');
    const r = await dial(w1, { 'X-Underpass-Have-Workers': have });
    expect(r).toBeInstanceOf(WebSocketRefused);
    const refused = r as WebSocketRefused;
    expect({ status: refused.status, reason: refused.reason, worker: refused.headers['x-underpass-worker'], workers: refused.headers['x-underpass-workers'] })
      .toEqual({ status: 409, reason: 'ALREADY_CONNECTED', worker: 'w1', workers: 'w1' });
    expect(await metricValue(w1.adminPort, 'underpass_mesh_already_connected_total')).toBe(before + 1);
    expect(w1.proc.audit.filter((a) => a.event === 'session-denied')).toEqual([]);
  });

  it('accepts a connector that names only other workers', async () => {
    const r = await dial(w1, { 'X-Underpass-Have-Workers': 'w2,w3' });
    expect(r).toBeInstanceOf(WebSocketStream);
    (r as WebSocketStream).destroy();
  });

  it('authenticates first: a connector certificate of another connection gets 403, not the instance name', async () => {
    const other = await tempDir('underpass-mesh-other-');
    try {
      await (await makePki(other, { connection: 'team-b/dc9' })).connector('dc1-a');
      const r = await dial(w2, { 'X-Underpass-Have-Workers': 'w2' }, other);
      expect(r).toBeInstanceOf(WebSocketRefused);
      expect({ status: (r as WebSocketRefused).status, worker: (r as WebSocketRefused).headers['x-underpass-worker'] }).toEqual({ status: 403, worker: undefined });
    } finally {
      await removeDir(other);
    }
  });

  it('a connector with two URLs of two operator-less workers holds a session with each', async () => {
    const [x1, x2] = await Promise.all([startWorker(dir, { instance: 'x1' }, 'x1.yaml'), startWorker(dir, { instance: 'x2' }, 'x2.yaml')]);
    const c = await startConnector(dir, 'dc1-a', [x1.url, x2.url], { allow: ['127.0.0.1:1'] });
    try {
      await waitFor('sessions with x1 and x2', async () => {
        const s = await getJson<{ workers: Array<{ worker: string; connected: boolean }> }>(`http://127.0.0.1:${c.adminPort}/status`);
        return JSON.stringify(s.workers.filter((w) => w.connected).map((w) => w.worker).sort()) === '["x1","x2"]';
      }, 10_000);
    } finally {
      await c.proc.stop('SIGKILL');
      await Promise.all([x1.proc.stop(), x2.proc.stop()]);
    }
  }, 30_000);
});
