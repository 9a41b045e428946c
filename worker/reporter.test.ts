import { describe, it, expect, beforeAll, afterAll } from '@jest/globals';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { pino } from 'pino';
import YAML from 'yaml';
import { parseConnectorConfig } from '../connector/config.js';
import { Connector } from '../connector/connector.js';
import { ReportServer, type DesiredWorkerState } from '../operator/report-server.js';
import { ReportStore } from '../operator/report-store.js';
import { echoServer, exchange, freePort, makePki, removeDir, sleep, tempDir, waitFor, type App } from '../test/e2e/harness.js';
import { AuditLog } from '../tunnel/audit.js';
import { silentLogger } from '../tunnel/log.js';
import type { Mapping } from '../tunnel/mapping.js';
import type { PemKeyPair } from '../tunnel/pki.js';
import { createSelfSignedCA, issueServingCert, loadSigningCA } from '../tunnel/pki-generic.js';
import { loadWorkerConfig } from './config.js';
import { Worker } from './worker.js';

const KEY = 'team-a/dc1';
const INTERVAL_MS = 200;

/** An in-process worker reporting to a real ReportServer, and a real connector attached to it. */
describe('OperatorReporter in a worker (real sockets)', () => {
  let dir: string;
  let app: App;
  let serving: PemKeyPair;
  let caPem: string;
  let operatorPort: number;
  let operator: ReportServer | undefined;
  const store = new ReportStore();
  let desired: DesiredWorkerState;
  let worker: Worker;
  let connector: Connector | undefined;
  let ports: { tunnel: number; db: number; extra: number; fromFile: number };
  let workerYaml: Record<string, unknown>;
  const logs: Array<{ msg: string; level: string }> = [];
  let startedAt = 0;
  let firstReportAt = 0;

  const mapping = (name: string, port: number): Mapping => ({
    name, protocol: 'TCP', target: { side: 'Connector', host: '127.0.0.1', port: app.port }, listen: { port, address: '127.0.0.1' }, allowedSources: [],
  });
  const live = () => store.live(KEY, 5_000).find((r) => r.instance === 'w0');
  const logged = (text: string) => logs.filter((l) => l.msg.includes(text)).length;

  async function startOperator(): Promise<void> {
    operator = new ReportServer({
      tls: { cert: serving.certPem, key: serving.keyPem },
      logger: silentLogger(),
      store,
      caFor: (c) => (`${c.namespace}/${c.name}` === KEY ? caPem : undefined),
      desiredFor: () => desired,
    });
    operatorPort = (await operator.listen({ host: '127.0.0.1', port: operatorPort ?? 0 })).port;
  }

  beforeAll(async () => {
    dir = await tempDir('underpass-reporter-');
    const pki = await makePki(dir);
    await pki.connector('site-a');
    caPem = pki.ca.certPem;
    const opCa = await createSelfSignedCA({ commonName: 'underpass-operator-ca', validityDays: 10 });
    serving = await issueServingCert(await loadSigningCA(opCa.certPem, opCa.keyPem), { commonName: 'operator', sans: ['127.0.0.1'], validityDays: 1 });
    await writeFile(path.join(dir, 'operator-ca.crt'), opCa.certPem);
    app = await echoServer();
    ports = { tunnel: await freePort(), db: await freePort(), extra: await freePort(), fromFile: await freePort() };
    desired = { mappings: [mapping('db', ports.db)], admission: {} };
    await startOperator();
    store.once('report', () => (firstReportAt = Date.now()));

    workerYaml = {
      connection: KEY,
      instance: 'w0',
      listen: `127.0.0.1:${ports.tunnel}`,
      tls: { cert: 'worker.crt', key: 'worker.key', ca: 'ca.crt' },
      keepalive: { interval: '1s', timeout: '3s' },
      mappings: [mapping('db', ports.db)],
      operator: { url: `https://127.0.0.1:${operatorPort}`, ca: 'operator-ca.crt', interval: `${INTERVAL_MS}ms` },
    };
    await writeFile(path.join(dir, 'worker.yaml'), YAML.stringify(workerYaml));
    const logger = pino({ level: 'info' }, { write: (line: string) => void logs.push(JSON.parse(line) as { msg: string; level: string }) });
    worker = new Worker(await loadWorkerConfig(path.join(dir, 'worker.yaml')), {
      logger, audit: new AuditLog(new PassThrough().resume()), configReloadIntervalMs: 100,
    });
    startedAt = Date.now();
    await worker.start();
  });

  afterAll(async () => {
    await connector?.stop(0);
    await worker?.stop(0);
    await operator?.close();
    await app?.close();
    await removeDir(dir);
  });

  it('delivers the first report within 1 s of start-up', async () => {
    await waitFor('the first report', () => live(), 1_000);
    expect(firstReportAt - startedAt).toBeLessThan(1_000);
    expect(live()).toMatchObject({ version: expect.any(String), ready: false, draining: false, connectors: [], listenerFailures: [] });
  });

  it('lists a connector within 1 s of it connecting', async () => {
    const config = parseConnectorConfig({
      name: 'site-a',
      worker: `wss://127.0.0.1:${ports.tunnel}`,
      tls: { cert: 'connector-site-a.crt', key: 'connector-site-a.key', ca: 'ca.crt' },
      allow: [`127.0.0.1:${app.port}`], // connectors dial nothing their allow list does not name
      reconnect: { initialDelay: '100ms', maxDelay: '1s' },
    }, path.join(dir, 'connector.yaml'));
    connector = new Connector(config, { logger: silentLogger(), audit: new AuditLog(new PassThrough().resume()) });
    await connector.start();
    await waitFor('the worker to see the connector', () => worker.notReadyReason() === undefined, 5_000);
    const connectedAt = Date.now();
    const reported = await waitFor('a report listing the connector', () => live()?.connectors.length === 1 && live(), 1_000);
    expect(Date.now() - connectedAt).toBeLessThan(1_000);
    expect(reported).toMatchObject({ ready: true, connectors: [{ name: 'site-a', version: expect.any(String), unavailableMappings: [] }] });
    expect((await exchange(ports.db, 'through db')).received.toString()).toBe('through db');
  });

  it('opens the listener of a mapping the operator adds within 3 s', async () => {
    const changedAt = Date.now();
    desired = { mappings: [mapping('db', ports.db), mapping('extra', ports.extra)], admission: {} };
    await waitFor('the extra listener', () => worker.listenerAddress('extra'), 3_000);
    expect(Date.now() - changedAt).toBeLessThan(3_000);
    expect(worker.mappings.map((m) => m.name).sort()).toEqual(['db', 'extra']);
    expect((await exchange(ports.extra, 'through extra')).received.toString()).toBe('through extra');
  });

  it("ignores the config file's mapping changes while the operator channel is on, and says so once", async () => {
    for (const name of ['from-file', 'from-file-2']) {
      await writeFile(path.join(dir, 'worker.yaml'), YAML.stringify({ ...workerYaml, mappings: [mapping(name, ports.fromFile)] }));
      await sleep(400);
    }
    expect(worker.listenerAddress('from-file')).toBeUndefined();
    expect(worker.listenerAddress('from-file-2')).toBeUndefined();
    expect(worker.mappings.map((m) => m.name).sort()).toEqual(['db', 'extra']);
    expect(logged('mappings come from the operator channel')).toBe(1);
  });

  it('keeps the data plane and its mappings when the operator goes away, and logs that once', async () => {
    await operator!.close();
    operator = undefined;
    await sleep(INTERVAL_MS * 5);
    expect(logged('cannot report to the operator')).toBe(1);
    expect(worker.mappings.map((m) => m.name).sort()).toEqual(['db', 'extra']);
    expect(worker.notReadyReason()).toBeUndefined();
    expect((await exchange(ports.db, 'still up')).received.toString()).toBe('still up');

    await startOperator();
    await waitFor('reporting again', () => logged('reporting to the operator again') === 1, 3_000);
  });

  it("refuses a mapping set that collides with the worker's own ports, keeping the current one", async () => {
    const before = { again: logged('reporting to the operator again'), refused: logged("cannot apply the operator's answer") };
    desired = { mappings: [mapping('db', ports.db), mapping('clash', ports.tunnel)], admission: {} };
    await sleep(INTERVAL_MS * 4);
    expect(logged("cannot apply the operator's answer") - before.refused).toBe(1);
    expect(worker.mappings.map((m) => m.name).sort()).toEqual(['db', 'extra']);
    desired = { mappings: [mapping('db', ports.db)], admission: {} };
    await waitFor('the corrected set', () => worker.mappings.length === 1, 3_000);
    await waitFor('the recovery log', () => logged('reporting to the operator again') === before.again + 1, 3_000);
  });

  it("applies the admission list of an answer whose mapping set it cannot read, cutting the connector it no longer admits", async () => {
    const attached = () => (worker.status() as { connectors: unknown[] }).connectors.length;
    const refusedBefore = logged("the operator's answer is invalid at mappings[0]");
    desired = { mappings: [{ ...mapping('db', ports.db), fromTheFuture: true } as Mapping], admission: { connectors: [] } };
    await waitFor('the connector cut', () => attached() === 0, 3_000);
    expect(worker.mappings.map((m) => m.name)).toEqual(['db']);
    expect(logged("the operator's answer is invalid at mappings[0]")).toBe(refusedBefore + 1);
    desired = { mappings: [mapping('db', ports.db)], admission: {} };
    await waitFor('the connector back', () => attached() === 1, 5_000);
  });

  it('sends a last report saying draining when the worker stops', async () => {
    await connector!.stop(0);
    connector = undefined;
    await worker.stop(500);
    expect(live()).toMatchObject({ draining: true, ready: false });
  });
});
