/**
 * The connector's dial policy through its public path (a worker pushes
 * mappings and asks for streams), with the name resolver injected and counted:
 * a name its allow list does not permit is never looked up, whatever it would
 * resolve to; a permitted name is looked up and the address it got is checked
 * and dialled. Real sockets and TLS; a hand-rolled worker.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { AuditLog } from '../tunnel/audit.js';
import { silentLogger } from '../tunnel/log.js';
import { askFor, mappingOf, startFakeWorker, type Attached, type FakeWorker } from '../test/e2e/fake-worker.js';
import { echoServer, makePki, removeDir, tempDir, waitFor, type App } from '../test/e2e/harness.js';
import { parseConnectorConfig } from './config.js';
import { Connector } from './connector.js';

describe('Connector dial policy with a counting resolver', () => {
  let dir: string;
  let worker: FakeWorker;
  let connector: Connector;
  let app: App;
  let attached: Attached;
  const asked: string[] = [];
  /** What each name "resolves" to: db.internal to the echo app on loopback, which its IP rule names. */
  const answers = new Map<string, string>();

  beforeAll(async () => {
    dir = await tempDir('underpass-connector-lookup-');
    const pki = await makePki(dir);
    await pki.connector('dc1-a');
    app = await echoServer();
    answers.set('db.internal', '127.0.0.1');
    answers.set('imds.corp.example', '169.254.169.254');
    answers.set('secret.corp.example', '10.0.0.9'); // would resolve, if anyone asked
    const read = (f: string) => readFile(path.join(dir, f));
    worker = await startFakeWorker({
      cert: await read('worker.crt'), key: await read('worker.key'), ca: await read('ca.crt'),
      mappings: [
        mappingOf('db', 'Connector', 'db.internal', app.port),
        mappingOf('imds', 'Connector', 'imds.corp.example', 80),
        mappingOf('secret', 'Connector', 'secret.corp.example', app.port),
        mappingOf('missing', 'Connector', 'no-such-host.invalid', app.port),
        mappingOf('literal', 'Connector', '10.0.0.9', app.port),
      ],
    });
    const config = parseConnectorConfig({
      name: 'dc1-a',
      worker: worker.url,
      tls: { cert: 'connector-dc1-a.crt', key: 'connector-dc1-a.key', ca: 'ca.crt' },
      // Names: only db.internal and imds.corp.example. Addresses: the app on loopback, and 10/8 (which
      // would cover secret.corp.example's address: IP rules never make a name resolvable).
      allow: [`db.internal:${app.port}`, 'imds.corp.example:80', `127.0.0.1:${app.port}`, '10.0.0.0/8:*'],
      reconnect: { initialDelay: '100ms', maxDelay: '1s' },
    }, path.join(dir, 'connector.yaml'));
    connector = new Connector(config, {
      logger: silentLogger(),
      audit: new AuditLog(new PassThrough().resume()),
      lookup: async (host) => {
        asked.push(host);
        const address = answers.get(host);
        if (!address) throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${host}`), { code: 'ENOTFOUND' });
        return address;
      },
    });
    await connector.start();
    attached = await worker.attached;
    await waitFor('mapping-status', () => attached.statuses.length > 0);
  }, 30_000);

  afterAll(async () => {
    await connector?.stop(1_000);
    await worker?.close();
    await app?.close();
    await removeDir(dir);
  });

  it('looked up only the names its allow list permits while deciding the mapping status', () => {
    expect([...asked].sort()).toEqual(['db.internal', 'imds.corp.example']);
    const status = new Map(attached.statuses[0]!.mappings.map((m) => [m.name, m]));
    expect(status.get('db')).toEqual({ name: 'db', state: 'Ready' });
    expect(status.get('literal')).toEqual({ name: 'literal', state: 'Ready' });
    expect(status.get('secret')).toEqual({ name: 'secret', state: 'Refused', reason: 'NotAllowed', message: `target secret.corp.example:${app.port} is not on this connector's allow list` });
    expect(status.get('missing')).toEqual({ name: 'missing', state: 'Refused', reason: 'NotAllowed', message: `target no-such-host.invalid:${app.port} is not on this connector's allow list` });
    expect(status.get('imds')).toMatchObject({ state: 'Refused', reason: 'NotAllowed', message: expect.stringContaining('resolves to 169.254.169.254, a link-local address') });
  });

  it.each(['secret', 'missing'])('refuses a stream for "%s" NOT_ALLOWED without a lookup', async (mapping) => {
    const before = asked.length;
    const { response } = await askFor(attached.session, mapping);
    expect(response).toMatchObject({ ok: false, code: 'NOT_ALLOWED', message: expect.stringMatching(/is not on this connector's allow list$/) });
    expect(asked.length).toBe(before);
  });

  it('looks up a permitted name once per stream, and dials the address it got', async () => {
    const before = asked.length;
    const { stream, response } = await askFor(attached.session, 'db');
    expect(response).toEqual({ ok: true });
    expect(asked.slice(before)).toEqual(['db.internal']);
    const parts: Buffer[] = [];
    stream.on('data', (d: Buffer) => parts.push(d));
    stream.resume();
    stream.end('via the looked-up address');
    await new Promise((resolve) => stream.once('end', resolve));
    expect(Buffer.concat(parts).toString()).toBe('via the looked-up address');
  });

  it('refuses a permitted name whose address is guarded, after its one lookup', async () => {
    const before = asked.length;
    const { response } = await askFor(attached.session, 'imds');
    expect(response).toMatchObject({ ok: false, code: 'NOT_ALLOWED', message: expect.stringContaining('resolves to 169.254.169.254') });
    expect(asked.slice(before)).toEqual(['imds.corp.example']);
  });
});
