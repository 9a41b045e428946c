/**
 * A connector cannot freeze its worker's mapping set (issue 15, finding 3).
 * Before: a hello or mapping-status without limits went into the worker's
 * report, the operator refused the report, and the worker never applied the
 * operator's answers again, so a mapping deleted in the cluster stayed live.
 * Here a real worker reports to a real ReportServer; hand-rolled connectors
 * (built from the library's own pieces) send what a misbehaving connector
 * would; then a mapping is deleted through the operator and must disappear.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from '@jest/globals';
import { once } from 'node:events';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import WebSocket from 'ws';
import YAML from 'yaml';
import { ReportServer, type DesiredWorkerState } from '../operator/report-server.js';
import { ReportStore } from '../operator/report-store.js';
import { echoServer, freePort, makePki, removeDir, sleep, tempDir, waitFor, type App } from '../test/e2e/harness.js';
import { AuditLog } from '../tunnel/audit.js';
import { ControlChannel, PROTOCOL_VERSION, type ControlMessage } from '../tunnel/control.js';
import { silentLogger } from '../tunnel/log.js';
import type { Mapping } from '../tunnel/mapping.js';
import { Session } from '../tunnel/mux/session.js';
import type { PemKeyPair } from '../tunnel/pki.js';
import { createSelfSignedCA, issueServingCert, loadSigningCA } from '../tunnel/pki-generic.js';
import { WebSocketDuplex } from '../tunnel/testing/ws-duplex.js';
import { loadWorkerConfig } from './config.js';
import { Worker } from './worker.js';

const KEY = 'team-a/dc1';
const INTERVAL_MS = 200;

interface HandRolled {
  ws: WebSocket;
  session: Session;
  control: ControlChannel;
  /** Messages the worker sent on the control channel. */
  received: ControlMessage[];
  /** Resolves with the handshake's outcome: 'welcome', or the code of the worker's error message. */
  handshake: Promise<string>;
}

describe("a connector cannot freeze its worker's mapping set (real worker, real report server)", () => {
  let dir: string;
  let app: App;
  let operator: ReportServer;
  const store = new ReportStore();
  let worker: Worker;
  let desired: DesiredWorkerState;
  /** Client TLS files by connector name. */
  const tls = new Map<string, { cert: Buffer; key: Buffer; ca: Buffer }>();
  const NAMES = ['rogue', 'rogue-1', 'rogue-2', 'rogue-3'];
  let tunnelUrl: string;
  const ports = { keep: 0, gone: 0 };
  const open: HandRolled[] = [];

  const mapping = (name: string, port: number): Mapping => ({
    name, protocol: 'TCP', target: { side: 'Connector', host: '127.0.0.1', port: app.port }, listen: { port, address: '127.0.0.1' }, allowedSources: [],
  });
  const both = (): DesiredWorkerState => ({ mappings: [mapping('keep', ports.keep), mapping('gone', ports.gone)], admission: {} });
  const live = () => store.live(KEY, 5_000).find((r) => r.instance === 'w0');

  function connect(hello: Record<string, unknown> = {}, name = 'rogue'): Promise<HandRolled> {
    const ws = new WebSocket(`${tunnelUrl}/v1/tunnel`, { ...tls.get(name)!, perMessageDeflate: false, maxPayload: 64 << 20 });
    return once(ws, 'open').then(() => {
      const session = new Session(new WebSocketDuplex(ws), { client: true });
      const control = new ControlChannel(session.open());
      control.on('error', () => undefined);
      const received: ControlMessage[] = [];
      const handshake = new Promise<string>((resolve) => {
        control.on('message', (m) => {
          received.push(m);
          if (m.type === 'welcome') resolve('welcome');
          if (m.type === 'error') resolve(m.code);
        });
        control.on('close', () => resolve('closed'));
      });
      control.send({ type: 'hello', protocol: PROTOCOL_VERSION, connector: name, version: 'test', capabilities: ['tcp'], ...hello } as ControlMessage);
      const h = { ws, session, control, received, handshake };
      open.push(h);
      return h;
    });
  }

  /** What the cases share: after the connector did its worst, a deletion through the operator must apply. */
  async function expectDeletionApplies(): Promise<number> {
    await sleep(INTERVAL_MS * 3); // a few reports carry whatever the connector sent
    const deletedAt = Date.now();
    desired = { mappings: [mapping('keep', ports.keep)], admission: {} };
    await waitFor('the deleted mapping to leave the worker', () => worker.listenerAddress('gone') === undefined && !worker.mappings.some((m) => m.name === 'gone'), 3_000);
    return Date.now() - deletedAt;
  }

  beforeAll(async () => {
    dir = await tempDir('underpass-report-limits-');
    const pki = await makePki(dir);
    for (const name of NAMES) {
      await pki.connector(name);
      tls.set(name, {
        cert: await readFile(path.join(dir, `connector-${name}.crt`)), key: await readFile(path.join(dir, `connector-${name}.key`)), ca: await readFile(path.join(dir, 'ca.crt')),
      });
    }
    const opCa = await createSelfSignedCA({ commonName: 'underpass-operator-ca', validityDays: 10 });
    const serving: PemKeyPair = await issueServingCert(await loadSigningCA(opCa.certPem, opCa.keyPem), { commonName: 'operator', sans: ['127.0.0.1'], validityDays: 1 });
    await writeFile(path.join(dir, 'operator-ca.crt'), opCa.certPem);
    app = await echoServer();
    ports.keep = await freePort();
    ports.gone = await freePort();
    desired = both();
    operator = new ReportServer({
      tls: { cert: serving.certPem, key: serving.keyPem }, logger: silentLogger(), store,
      caFor: (c) => (`${c.namespace}/${c.name}` === KEY ? pki.ca.certificate.toString('pem') : undefined),
      desiredFor: () => desired,
    });
    const operatorPort = (await operator.listen({ host: '127.0.0.1', port: 0 })).port;
    const tunnelPort = await freePort();
    tunnelUrl = `wss://127.0.0.1:${tunnelPort}`;
    await writeFile(path.join(dir, 'worker.yaml'), YAML.stringify({
      connection: KEY, instance: 'w0', listen: `127.0.0.1:${tunnelPort}`,
      tls: { cert: 'worker.crt', key: 'worker.key', ca: 'ca.crt' },
      keepalive: { interval: '1s', timeout: '3s' },
      operator: { url: `https://127.0.0.1:${operatorPort}`, ca: 'operator-ca.crt', interval: `${INTERVAL_MS}ms` },
    }));
    worker = new Worker(await loadWorkerConfig(path.join(dir, 'worker.yaml')), { logger: silentLogger(), audit: new AuditLog(new PassThrough().resume()) });
    await worker.start();
    await waitFor('both mappings from the operator', () => worker.listenerAddress('gone') && worker.listenerAddress('keep'), 5_000);
  }, 30_000);

  afterEach(async () => {
    for (const h of open.splice(0)) h.ws.terminate();
    desired = both();
    await waitFor('the mapping back for the next case', () => worker.listenerAddress('gone'), 5_000);
    await waitFor('the rogue sessions gone', () => (live()?.connectors.length ?? 0) === 0, 5_000);
  });

  afterAll(async () => {
    await worker?.stop(0);
    await operator?.close();
    await app?.close();
    await removeDir(dir);
  });

  it('a hello with a 65-character version is refused at the handshake, naming the field, and a deletion still applies', async () => {
    const h = await connect({ version: 'v'.repeat(65) });
    const outcome = await h.handshake;
    const ms = await expectDeletionApplies();
    expect(outcome).toBe('ERR_CONTROL_INVALID');
    expect(h.received.find((m) => m.type === 'error')).toMatchObject({ code: 'ERR_CONTROL_INVALID', field: 'version' });
    expect(ms).toBeLessThan(3_000);
  }, 20_000);

  it.each<[string, () => Array<{ name: string; state: 'Refused' | 'Failed'; reason?: string; message?: string }>]>([
    ['1,500 entries', () => Array.from({ length: 1500 }, (_, i) => ({ name: `m-${i}`, state: 'Refused' }))],
    ['a 200-character reason', () => [{ name: 'gone', state: 'Failed', reason: 'R'.repeat(200) }]],
    ['a 5,000-character message', () => [{ name: 'gone', state: 'Failed', reason: 'ListenFailed', message: 'x'.repeat(5_000) }]],
  ])('a mapping-status with %s is refused as a whole, the session stays, and a deletion still applies', async (_name, entries) => {
    const h = await connect();
    expect(await h.handshake).toBe('welcome');
    h.control.send({ type: 'mapping-status', revision: 1, mappings: entries() } as ControlMessage);
    const ms = await expectDeletionApplies();
    expect(ms).toBeLessThan(3_000);
    expect(live()?.connectors).toEqual([expect.objectContaining({ name: 'rogue', unavailableMappings: [] })]);
  }, 20_000);

  it('four connectors reporting 1,000 refused mappings with 900-character messages each fit one report, which the operator records', async () => {
    const sessions = await Promise.all(NAMES.map((name) => connect({}, name)));
    for (const h of sessions) expect(await h.handshake).toBe('welcome');
    const status = Array.from({ length: 1000 }, (_, i) => ({ name: `m-${i}`, state: 'Refused' as const, reason: 'NotAllowed', message: 'x'.repeat(900) })); // under MAX_CONTROL_MESSAGE in all
    for (const h of sessions) h.control.send({ type: 'mapping-status', revision: 1, mappings: status });
    const held = () => (worker.status() as { connectors: Array<{ unavailableMappings: unknown[] }> }).connectors;
    await waitFor('the worker to hold all four statuses', () => held().length === 4 && held().every((c) => c.unavailableMappings.length === 1000), 5_000);
    const ms = await expectDeletionApplies();
    expect(ms).toBeLessThan(3_000);
    // The operator recorded a report that accounts for every entry: 1024 kept, the rest counted.
    const report = await waitFor('a recorded report of all 4000 entries', () => live()?.dropped?.unavailableMappings === 4000 - 1024 && live(), 3_000);
    expect(report.connectors).toHaveLength(4);
    expect(report.dropped?.messages).toBeGreaterThan(0);
    expect(report.connectors.reduce((n, c) => n + c.unavailableMappings.length, 0)).toBe(1024);
  }, 20_000);
});
