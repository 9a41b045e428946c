/**
 * The admission list of a worker without an operator (`connectors:` in its
 * config file): an unlisted connector is refused at the WebSocket upgrade with
 * CONNECTOR_NOT_ALLOWED (audit line, metric), and editing the file cuts the
 * sessions of a connector taken off the list, then lets it back in. Real
 * sockets, an in-process worker and in-process connectors.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import WebSocket from 'ws';
import YAML from 'yaml';
import { parseConnectorConfig } from '../connector/config.js';
import { Connector } from '../connector/connector.js';
import { freePort, makePki, removeDir, tempDir, waitFor } from '../test/e2e/harness.js';
import { AuditLog } from '../tunnel/audit.js';
import { silentLogger } from '../tunnel/log.js';
import { loadWorkerConfig } from './config.js';
import { Worker } from './worker.js';

describe('admission list from the worker config file', () => {
  let dir: string;
  let worker: Worker;
  let tunnelPort: number;
  let workerYaml: Record<string, unknown>;
  const audit: Array<Record<string, unknown>> = [];
  const connectors: Connector[] = [];

  const sessionsOf = (name: string) => (worker.status() as { connectors: Array<{ name: string }> }).connectors.filter((c) => c.name === name);
  const writeList = (list: string[] | undefined) => writeFile(path.join(dir, 'worker.yaml'), YAML.stringify({ ...workerYaml, ...(list ? { connectors: list } : {}) }));

  async function startConnector(name: string): Promise<Connector> {
    const c = new Connector(parseConnectorConfig({
      name, worker: `wss://127.0.0.1:${tunnelPort}`,
      tls: { cert: `connector-${name}.crt`, key: `connector-${name}.key`, ca: 'ca.crt' },
      reconnect: { initialDelay: '100ms', maxDelay: '300ms' },
    }, path.join(dir, `connector-${name}.yaml`)), { logger: silentLogger(), audit: new AuditLog(new PassThrough().resume()) });
    connectors.push(c);
    await c.start();
    return c;
  }

  beforeAll(async () => {
    dir = await tempDir('underpass-admission-');
    const pki = await makePki(dir);
    await Promise.all([pki.connector('site-a'), pki.connector('site-b')]);
    tunnelPort = await freePort();
    workerYaml = {
      connection: 'team-a/dc1', instance: 'w0', listen: `127.0.0.1:${tunnelPort}`,
      tls: { cert: 'worker.crt', key: 'worker.key', ca: 'ca.crt' }, keepalive: { interval: '1s', timeout: '3s' },
    };
    await writeList(['site-a']);
    const out = new PassThrough();
    out.on('data', (d: Buffer) => d.toString().split('\n').filter(Boolean).forEach((l) => audit.push(JSON.parse(l) as Record<string, unknown>)));
    worker = new Worker(await loadWorkerConfig(path.join(dir, 'worker.yaml')), { logger: silentLogger(), audit: new AuditLog(out), configReloadIntervalMs: 100 });
    await worker.start();
  });

  afterAll(async () => {
    for (const c of connectors) await c.stop(0);
    await worker?.stop(0);
    await removeDir(dir);
  });

  it('admits a listed connector', async () => {
    await startConnector('site-a');
    await waitFor('site-a attached', () => sessionsOf('site-a').length === 1, 5_000);
  });

  it('refuses an unlisted connector at the upgrade with 403 CONNECTOR_NOT_ALLOWED, an audit line and a metric', async () => {
    const ws = new WebSocket(`wss://127.0.0.1:${tunnelPort}/v1/tunnel`, {
      cert: await readFile(path.join(dir, 'connector-site-b.crt')), key: await readFile(path.join(dir, 'connector-site-b.key')), ca: await readFile(path.join(dir, 'ca.crt')),
    });
    const [status, reason] = await new Promise<[number, string]>((resolve, reject) => {
      ws.on('unexpected-response', (_req, res) => resolve([res.statusCode ?? 0, String(res.headers['x-underpass-reason'])]));
      ws.on('open', () => reject(new Error('site-b was let in')));
      ws.on('error', () => undefined);
    });
    expect([status, reason]).toEqual([403, 'CONNECTOR_NOT_ALLOWED']);
    await waitFor('the audit line', () => audit.find((a) => a.event === 'session-denied' && a.reason === 'CONNECTOR_NOT_ALLOWED'), 2_000);
    expect(await worker.metrics.registry.getSingleMetricAsString('underpass_handshake_failures_total')).toMatch(/reason="CONNECTOR_NOT_ALLOWED"[^}]*} [1-9]/);
    const b = await startConnector('site-b');
    await waitFor('site-b to see the refusal', () => b.notReadyReason()?.includes('CONNECTOR_NOT_ALLOWED'), 5_000);
    expect(sessionsOf('site-b')).toHaveLength(0);
  });

  it('cuts the sessions of a connector taken off the list, and lets it back in when it is listed again', async () => {
    await writeList(['site-b']);
    await waitFor('site-a cut', () => sessionsOf('site-a').length === 0, 3_000);
    const closed = await waitFor('the session-closed audit line', () => audit.find((a) => a.event === 'session-closed' && a.connector === 'site-a'), 2_000);
    expect(closed.reason).toBe('CONNECTOR_NOT_ALLOWED');
    expect(audit.find((a) => a.event === 'admission-changed')).toMatchObject({ source: 'config file', connectors: ['site-b'] });
    expect(await worker.metrics.registry.getSingleMetricAsString('underpass_admission_sessions_closed_total')).toMatch(/ 1$/m);
    await waitFor('site-b attached', () => sessionsOf('site-b').length === 1, 5_000);

    await writeList(undefined);
    await waitFor('site-a back', () => sessionsOf('site-a').length === 1, 5_000);
    expect(sessionsOf('site-b')).toHaveLength(1);
  });
});
