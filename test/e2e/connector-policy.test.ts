/**
 * What a connector agrees to dial and to bind, whatever the worker's mappings
 * say (real connector processes). The worker here is hand-rolled
 * (fake-worker.ts): it pushes any mapping set, ignores the connector's
 * mapping-status and asks for any stream, so every refusal seen is the
 * connector's own.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { once } from 'node:events';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import type { Duplex } from 'node:stream';
import type { Mapping } from '../../tunnel/mapping.js';
import { askFor, mappingOf, startFakeWorker, type Attached, type FakeWorker } from './fake-worker.js';
import {
  freePort, makePki, removeDir, startConnector, tcpProbe, tcpServer, tempDir, waitFor, type App, type ConnectorSetup,
} from './harness.js';

interface CountingApp extends App {
  readonly accepted: number;
}

async function countingEcho(): Promise<CountingApp> {
  let accepted = 0;
  const app = await tcpServer((s) => {
    accepted++;
    s.on('error', () => undefined);
    s.pipe(s);
  });
  return Object.defineProperty(app, 'accepted', { get: () => accepted }) as CountingApp;
}

async function readAll(stream: Duplex): Promise<string> {
  const parts: Buffer[] = [];
  stream.on('data', (d: Buffer) => parts.push(d));
  stream.resume(); // readOpenResponse leaves it paused
  await once(stream, 'end');
  return Buffer.concat(parts).toString();
}

type Status = Attached['statuses'][number]['mappings'][number];

describe('what a connector dials and binds (real processes, hand-rolled worker)', () => {
  let dir: string;
  let workerTls: { cert: Buffer; key: Buffer; ca: Buffer };
  let listed: CountingApp;
  let unlisted: CountingApp;
  let viaName: CountingApp;
  const ports = { bindOk: 0, bindUnlisted: 0, bindEvery: 0 };
  const running: Array<{ worker: FakeWorker; connector?: ConnectorSetup }> = [];

  beforeAll(async () => {
    dir = await tempDir('underpass-connector-policy-');
    const pki = await makePki(dir);
    await pki.connector('dc1-a');
    const read = (f: string) => readFile(path.join(dir, f));
    workerTls = { cert: await read('worker.crt'), key: await read('worker.key'), ca: await read('ca.crt') };
    [listed, unlisted, viaName] = await Promise.all([countingEcho(), countingEcho(), countingEcho()]);
    for (const k of Object.keys(ports) as Array<keyof typeof ports>) ports[k] = await freePort();
  }, 30_000);

  afterAll(async () => {
    for (const r of running) {
      await r.connector?.proc.stop();
      await r.worker.close();
    }
    await Promise.all([listed, unlisted, viaName].map((a) => a?.close()));
    await removeDir(dir);
  });

  /** A hand-rolled worker pushing `mappings`, and a connector process with `config`; resolves once the connector reported its mapping status. */
  async function connect(mappings: Mapping[], config: Record<string, unknown>): Promise<{ connector: ConnectorSetup; attached: Attached; status: Map<string, Status> }> {
    const worker = await startFakeWorker({ ...workerTls, mappings });
    const entry: (typeof running)[number] = { worker };
    running.push(entry);
    entry.connector = await startConnector(dir, 'dc1-a', worker.url, config);
    const attached = await worker.attached;
    const report = await waitFor('mapping-status', () => attached.statuses[0]);
    return { connector: entry.connector, attached, status: new Map(report.mappings.map((m) => [m.name, m])) };
  }

  describe('with allow ["0.0.0.0/0:*", "127.0.0.1:<listed>", "localhost:<via-name>"] and bind ["127.0.0.1:<ok>", "0.0.0.0/0:<every>"]', () => {
    let connector: ConnectorSetup;
    let attached: Attached;
    let status: Map<string, Status>;

    beforeAll(async () => {
      ({ connector, attached, status } = await connect([
        mappingOf('listed', 'Connector', '127.0.0.1', listed.port),
        mappingOf('loopback-wide', 'Connector', '127.0.0.1', unlisted.port),
        mappingOf('this-host', 'Connector', '0.0.0.0', unlisted.port),
        mappingOf('mapped-loopback', 'Connector', '::ffff:127.0.0.1', unlisted.port),
        mappingOf('metadata', 'Connector', '169.254.169.254', 80),
        mappingOf('via-name', 'Connector', 'localhost', viaName.port),
        mappingOf('name-off-list', 'Connector', 'localhost', 4444),
        mappingOf('unresolvable-off-list', 'Connector', 'no-such-host.invalid', 4444),
        mappingOf('bind-ok', 'Cluster', '10.0.0.1', 80, { port: ports.bindOk, address: '127.0.0.1' }),
        mappingOf('bind-unlisted', 'Cluster', '10.0.0.1', 80, { port: ports.bindUnlisted, address: '127.0.0.1' }),
        mappingOf('bind-every-interface', 'Cluster', '10.0.0.1', 80, { port: ports.bindEvery, address: '0.0.0.0' }),
      ], {
        allow: ['0.0.0.0/0:*', `127.0.0.1:${listed.port}`, `localhost:${viaName.port}`],
        bind: [`127.0.0.1:${ports.bindOk}`, `0.0.0.0/0:${ports.bindEvery}`],
      }));
    }, 30_000);

    it('reports Ready for the loopback target its allow list names as an IP literal, and carries its streams', async () => {
      expect(status.get('listed')).toEqual({ name: 'listed', state: 'Ready' });
      const { stream, response } = await askFor(attached.session, 'listed');
      expect(response).toEqual({ ok: true });
      stream.end('named, so reachable');
      expect(await readAll(stream)).toBe('named, so reachable');
    });

    it.each([
      ['loopback on a port no rule names, under 0.0.0.0/0', 'loopback-wide', /target 127\.0\.0\.1:\d+ is a loopback address; only an allow rule naming it as an IP literal opens it/],
      ['0.0.0.0, which dials the connector host', 'this-host', /target 0\.0\.0\.0:\d+ is in 0\.0\.0\.0\/8, which dials the connector host itself/],
      ['an IPv4-mapped loopback address', 'mapped-loopback', /target \[::ffff:127\.0\.0\.1\]:\d+ is a loopback address/],
      ['the cloud metadata address', 'metadata', /target 169\.254\.169\.254:80 is a link-local address \(cloud metadata answers at 169\.254\.169\.254\)/],
      ['a name rule whose name resolves to loopback', 'via-name', /target localhost:\d+ resolves to (127\.0\.0\.1|::1), a loopback address/],
    ])('refuses %s: mapping-status Refused/NotAllowed, a stream NOT_ALLOWED and audited, and the target never sees a connection', async (_what, name, message) => {
      expect(status.get(name)).toEqual({ name, state: 'Refused', reason: 'NotAllowed', message: expect.stringMatching(message) });
      const { response } = await askFor(attached.session, name);
      expect(response).toMatchObject({ ok: false, code: 'NOT_ALLOWED', message: expect.stringMatching(message) });
      const line = await waitFor('connector audit line', () => connector.proc.streams({ mapping: name })[0]);
      expect(line).toMatchObject({ outcome: 'refused', reason: 'NOT_ALLOWED', bytesIn: 0, bytesOut: 0 });
      expect([unlisted.accepted, viaName.accepted]).toEqual([0, 0]);
    });

    it('refuses a name no rule names the same way whether or not it resolves: no DNS lookup tells them apart', async () => {
      for (const [name, host] of [['name-off-list', 'localhost'], ['unresolvable-off-list', 'no-such-host.invalid']]) {
        const message = `target ${host}:4444 is not on this connector's allow list`;
        expect(status.get(name!)).toEqual({ name, state: 'Refused', reason: 'NotAllowed', message });
        expect((await askFor(attached.session, name!)).response).toEqual({ ok: false, code: 'NOT_ALLOWED', message });
      }
    });

    it('logs, for each refused mapping, the exact rule that would permit it', () => {
      expect(connector.proc.logs).toContain(`to permit it, add \\"127.0.0.1:${unlisted.port}\\" to allow in ${path.join(dir, 'connector-dc1-a.yaml')}`);
      expect(connector.proc.logs).toContain('to permit it, add \\"169.254.169.254:80\\" to allow');
      expect(connector.proc.logs).toContain(`to open it, add \\"0.0.0.0:${ports.bindEvery}\\" to bind`);
    });

    it('opens the listener its bind list permits, and no other: 0.0.0.0 needs a rule naming it, not 0.0.0.0/0', async () => {
      expect(status.get('bind-ok')).toEqual({ name: 'bind-ok', state: 'Ready' });
      expect(status.get('bind-unlisted')).toEqual({ name: 'bind-unlisted', state: 'Refused', reason: 'BindNotAllowed', message: `listener 127.0.0.1:${ports.bindUnlisted} is not on this connector's bind list` });
      expect(status.get('bind-every-interface')).toEqual({ name: 'bind-every-interface', state: 'Refused', reason: 'BindNotAllowed', message: `listener 0.0.0.0:${ports.bindEvery} is not on this connector's bind list` });
      expect(await tcpProbe('127.0.0.1', ports.bindOk)).toBe('connected');
      expect(await tcpProbe('127.0.0.1', ports.bindUnlisted)).toBe('refused');
      expect(await tcpProbe('127.0.0.1', ports.bindEvery)).toBe('refused');
    });
  });

  it('without allow or bind dials nothing and opens no listener, and its start-up log says exactly what to add', async () => {
    const { connector, attached, status } = await connect([
      mappingOf('listed', 'Connector', '127.0.0.1', listed.port),
      mappingOf('db', 'Connector', 'db.internal', 5432),
      mappingOf('api', 'Cluster', '10.0.0.1', 80, { port: ports.bindUnlisted, address: '127.0.0.1' }),
    ], {});
    expect(status.get('listed')).toMatchObject({ state: 'Refused', reason: 'NotAllowed' });
    expect(status.get('db')).toMatchObject({ state: 'Refused', reason: 'NotAllowed', message: "target db.internal:5432 is not on this connector's allow list" });
    expect(status.get('api')).toMatchObject({ state: 'Refused', reason: 'BindNotAllowed' });
    const before = listed.accepted;
    expect((await askFor(attached.session, 'listed')).response).toMatchObject({ ok: false, code: 'NOT_ALLOWED' });
    expect(await tcpProbe('127.0.0.1', ports.bindUnlisted)).toBe('refused');
    expect(listed.accepted).toBe(before);
    const file = path.join(dir, 'connector-dc1-a.yaml');
    expect(connector.proc.logs).toContain(`no \\"allow\\" list in ${file}: this connector dials nothing`);
    expect(connector.proc.logs).toContain('e.g. allow: [\\"db.internal:5432\\", \\"10.0.0.5:443\\"]');
    expect(connector.proc.logs).toContain(`to permit it, add \\"db.internal:5432\\" to allow in ${file}`);
    expect(connector.proc.logs).toContain(`to open it, add \\"127.0.0.1:${ports.bindUnlisted}\\" to bind in ${file}`);
  });

  it('with allowAll: true dials what the mappings name but still no guarded address its allow list does not name, and warns at start', async () => {
    const { connector, attached, status } = await connect([
      mappingOf('listed', 'Connector', '127.0.0.1', listed.port),
      mappingOf('loopback', 'Connector', '127.0.0.1', unlisted.port),
      mappingOf('metadata', 'Connector', '169.254.169.254', 80),
      mappingOf('via-name', 'Connector', 'localhost', viaName.port),
    ], { allowAll: true, allow: [`127.0.0.1:${listed.port}`] });
    expect(connector.proc.logs).toMatch(/"level":"warn".*allowAll: true: this connector dials any target the worker's mappings name, except loopback, link-local and metadata addresses/);
    expect(status.get('listed')).toEqual({ name: 'listed', state: 'Ready' });
    for (const name of ['loopback', 'metadata', 'via-name']) {
      expect(status.get(name)).toMatchObject({ state: 'Refused', reason: 'NotAllowed' });
      expect((await askFor(attached.session, name)).response).toMatchObject({ ok: false, code: 'NOT_ALLOWED' });
    }
    expect([unlisted.accepted, viaName.accepted]).toEqual([0, 0]);
  });
});
