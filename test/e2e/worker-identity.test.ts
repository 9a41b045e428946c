/**
 * Which workers a connector agrees to talk to (real connector processes). The
 * worker's certificate must chain to the connection CA, name the dialled host,
 * and carry `underpass://<ns>/<conn>/worker` of the connection in the
 * connector's own certificate. Each refused worker here trusts the connector's
 * CA, so if the connector stopped checking, the session would open: the test
 * would see an upgrade request and a ready connector.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { craftLeaf, type LeafSpec } from './certs.js';
import { startFakeWorker, type FakeWorker } from './fake-worker.js';
import { makePki, removeDir, startConnector, tempDir, waitFor, waitHttp, type Pki } from './harness.js';

const SERVER_USAGES = ['1.3.6.1.5.5.7.3.1', '1.3.6.1.5.5.7.3.2']; // serverAuth, clientAuth
const HOST_NAMES: LeafSpec = { dnsNames: ['localhost'], ips: ['127.0.0.1'], usages: SERVER_USAGES };

describe('a connector checks the worker it dialled (real processes)', () => {
  let dir: string;
  let pki: Pki;
  let ca: Buffer;
  const workers: FakeWorker[] = [];

  beforeAll(async () => {
    dir = await tempDir('underpass-worker-identity-');
    pki = await makePki(dir); // team-a/dc1
    await pki.connector('dc1-a');
    ca = await readFile(path.join(dir, 'ca.crt'));
  });

  afterAll(async () => {
    await Promise.all(workers.map((w) => w.close()));
    await removeDir(dir);
  });

  async function fakeWorker(pair: { certPem: string; keyPem: string }): Promise<FakeWorker> {
    const w = await startFakeWorker({ cert: pair.certPem, key: pair.keyPem, ca });
    workers.push(w);
    return w;
  }

  /** Starts the connector against `worker`; resolves with its logs once it logged `expected`. */
  async function refusedBy(worker: FakeWorker, expected: RegExp): Promise<string> {
    const c = await startConnector(dir, 'dc1-a', worker.url, { allow: ['127.0.0.1:1'] }, { waitReady: false });
    try {
      // Up first (its admin endpoint answers), with the harness's start-up budget: the 10 s below
      // are for the refusal, not for starting Node on a loaded machine (that took most of them once).
      await waitHttp(`http://127.0.0.1:${c.adminPort}/healthz`, c.proc, 20_000);
      await waitFor(`the connector to log ${expected}`, () => expected.test(c.proc.logs), 10_000);
      // It keeps retrying (backoff 100 ms → 1 s) and keeps refusing: give it a few attempts.
      await waitFor('three refused attempts', () => worker.connections >= 3, 10_000);
      const ready = await fetch(`http://127.0.0.1:${c.adminPort}/readyz`);
      expect(ready.status).toBe(503);
      expect(worker.upgrades).toBe(0);
      expect(c.proc.audit.filter((a) => a.event === 'session-opened')).toHaveLength(0);
      return c.proc.logs;
    } finally {
      await c.proc.stop();
    }
  }

  it.each<[string, string[], RegExp]>([
    ['of another connection, signed by the same CA', ['underpass://team-a/dc2/worker'],
      /not a worker of connection team-a\/dc1 \(expected underpass:\/\/team-a\/dc1\/worker\): peer identity underpass:\/\/team-a\/dc2\/worker belongs to connection team-a\/dc2/],
    ['of the same connection name in another namespace, signed by the same CA', ['underpass://team-b/dc1/worker'],
      /peer identity underpass:\/\/team-b\/dc1\/worker belongs to connection team-b\/dc1, not team-a\/dc1/],
    ['that names a connector of this connection', ['underpass://team-a/dc1/connector/dc1-z'], /has role connector, expected worker/],
    ['with no identity URI', [], /carries no underpass:\/\/ SAN URI/],
    ['with two identity URIs', ['underpass://team-a/dc1/worker', 'underpass://team-a/dc2/worker'], /carries 2 underpass:\/\/ SAN URIs/],
  ])('refuses a worker certificate %s (ERR_WORKER_IDENTITY), before sending its upgrade', async (_name, uris, message) => {
    const worker = await fakeWorker(await craftLeaf(pki.ca, { ...HOST_NAMES, uris }));
    const logs = await refusedBy(worker, message);
    expect(logs).toContain('"code":"ERR_WORKER_IDENTITY"');
  });

  it('refuses a worker with the right host name and identity whose certificate comes from another CA', async () => {
    const sub = path.join(dir, 'other-ca');
    await mkdir(sub, { recursive: true });
    const other = await makePki(sub); // also team-a/dc1, also localhost and 127.0.0.1: only the CA differs
    const worker = await fakeWorker({ certPem: await readFile(path.join(sub, 'worker.crt'), 'utf8'), keyPem: await readFile(path.join(sub, 'worker.key'), 'utf8') });
    expect(other.connection).toEqual(pki.connection);
    const logs = await refusedBy(worker, /the worker's certificate is not issued by the connection CA in tls.ca/);
    expect(logs).toContain('"code":"ERR_WORKER_CERT"');
  });

  it('attaches to a worker certificate of this CA that carries this connection\'s worker identity (the control case)', async () => {
    const worker = await fakeWorker(await craftLeaf(pki.ca, { ...HOST_NAMES, uris: ['underpass://team-a/dc1/worker'] }));
    const c = await startConnector(dir, 'dc1-a', worker.url, { allow: ['127.0.0.1:1'] });
    try {
      const { statuses } = await worker.attached;
      await waitFor('mapping-status', () => statuses.length > 0);
      expect(worker.upgrades).toBe(1);
    } finally {
      await c.proc.stop();
    }
  });

  it('refuses to start a session when its own certificate names another connector than its name', async () => {
    const worker = await fakeWorker(await craftLeaf(pki.ca, { ...HOST_NAMES, uris: ['underpass://team-a/dc1/worker'] }));
    await writeFile(path.join(dir, 'connector-dc1-x.crt'), await readFile(path.join(dir, 'connector-dc1-a.crt')));
    await writeFile(path.join(dir, 'connector-dc1-x.key'), await readFile(path.join(dir, 'connector-dc1-a.key')));
    const c = await startConnector(dir, 'dc1-x', worker.url, {}, { waitReady: false });
    try {
      await waitFor('the connector to log the mismatch', () => c.proc.logs.includes('tls.cert is for connector \\"dc1-a\\" (underpass://team-a/dc1/connector/dc1-a), but this connector\'s name is \\"dc1-x\\"'), 30_000); // Node's start-up included
      expect(worker.connections).toBe(0);
    } finally {
      await c.proc.stop();
    }
  });
});
