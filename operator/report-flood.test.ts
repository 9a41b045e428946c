/**
 * One tenant cannot exhaust the shared operator (issue 15, finding 8). Every
 * worker of a connection holds the same certificate, so whoever has it can
 * send reports under any instance name. Before: each name was kept, with
 * bodies up to 1 MiB (200 of them added 425 MiB to an operator limited to
 * 384Mi). Here a flood of the largest valid reports under 200 names must
 * leave the store within its bounds while the real workers, of that
 * connection and of another tenant's, keep getting their answers.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import https from 'node:https';
import { waitFor } from '../test/e2e/harness.js';
import { silentLogger } from '../tunnel/log.js';
import type { Mapping } from '../tunnel/mapping.js';
import { MAX_REPORT_BYTES, type WorkerReport } from '../tunnel/operator-channel.js';
import { createCA, issueWorkerCert, loadCA, type PemKeyPair } from '../tunnel/pki.js';
import { createSelfSignedCA, issueServingCert, loadSigningCA } from '../tunnel/pki-generic.js';
import { largestReport } from '../tunnel/testing/largest-report.js';
import { ReportServer, type DesiredWorkerState } from './report-server.js';
import { instanceLimit, ReportStore } from './report-store.js';

const A = { namespace: 'team-a', name: 'dc1' };
const B = { namespace: 'team-b', name: 'dc2' };
const REPLICAS = 2;
const STORE_BYTES = 4 << 20;
const DB: Mapping = {
  name: 'db', protocol: 'TCP', target: { side: 'Connector', host: '127.0.0.1', port: 5432 }, listen: { port: 15432, address: '127.0.0.1' }, allowedSources: [],
};

let operatorCa: string;
let certs: { a: PemKeyPair; b: PemKeyPair };
let store: ReportStore;
let server: ReportServer;
let port: number;
const refusals: string[] = [];

function post(connection: { namespace: string; name: string }, body: string, client: PemKeyPair, agent: https.Agent): Promise<{ status: number; body: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const req = https.request({
      host: '127.0.0.1', port, method: 'POST', path: `/v1/connections/${connection.namespace}/${connection.name}/report`,
      ca: operatorCa, cert: client.certPem, key: client.keyPem, agent, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
    }, (res) => {
      const parts: Buffer[] = [];
      res.on('data', (d: Buffer) => parts.push(d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(Buffer.concat(parts).toString()) as Record<string, unknown> }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

function small(instance: string): string {
  const r: WorkerReport = { instance, version: '0.1.0', ready: true, draining: false, connectors: [], listenerFailures: [] };
  return JSON.stringify(r);
}

/** The real workers of both tenants, reporting every 100 ms until `until` resolves; every answer they got. */
async function realWorkers(until: Promise<unknown>): Promise<Array<{ who: string; status: number; mappings: unknown }>> {
  const answers: Array<{ who: string; status: number; mappings: unknown }> = [];
  let done = false;
  void until.finally(() => (done = true));
  const loop = async (who: string, connection: typeof A, client: PemKeyPair): Promise<void> => {
    const agent = new https.Agent({ keepAlive: true, maxSockets: 1 });
    while (!done) {
      const a = await post(connection, small(who), client, agent);
      answers.push({ who, status: a.status, mappings: a.body.mappings });
      await new Promise((r) => setTimeout(r, 100));
    }
    agent.destroy();
  };
  await Promise.all([loop('dc1-real', A, certs.a), loop('dc2-real', B, certs.b)]);
  return answers;
}

beforeAll(async () => {
  const opCa = await createSelfSignedCA({ commonName: 'underpass-operator-ca', validityDays: 10 });
  operatorCa = opCa.certPem;
  const serving = await issueServingCert(await loadSigningCA(opCa.certPem, opCa.keyPem), { commonName: 'operator', sans: ['127.0.0.1'], validityDays: 1 });
  const caA = await createCA({ connection: A });
  const caB = await createCA({ connection: B });
  certs = {
    a: await issueWorkerCert(await loadCA(caA.certPem, caA.keyPem), { sans: ['localhost'] }),
    b: await issueWorkerCert(await loadCA(caB.certPem, caB.keyPem), { sans: ['localhost'] }),
  };
  const cas = new Map([['team-a/dc1', caA.certPem], ['team-b/dc2', caB.certPem]]);
  const desired: DesiredWorkerState = { mappings: [DB], admission: {} };
  store = new ReportStore({ maxInstances: () => instanceLimit(REPLICAS), maxBytes: STORE_BYTES });
  server = new ReportServer({
    tls: { cert: serving.certPem, key: serving.keyPem }, logger: silentLogger(), store,
    caFor: (c) => cas.get(`${c.namespace}/${c.name}`),
    desiredFor: () => desired,
    maxInFlight: () => instanceLimit(REPLICAS),
    metrics: { reports: { inc: () => undefined }, refusals: { inc: (l) => void refusals.push(l.reason) } },
  });
  port = (await server.listen({ host: '127.0.0.1', port: 0 })).port;
});

afterAll(() => server?.close());

describe('a flood of reports from one tenant', () => {
  it('keeps the store within its bounds while both tenants\' real workers keep getting their answers', async () => {
    const body = (i: number): string => JSON.stringify(largestReport(`flood-${i}`));
    expect(Buffer.byteLength(body(0))).toBeGreaterThan(MAX_REPORT_BYTES * 0.9);
    const flood = (async () => {
      const agents = Array.from({ length: 4 }, () => new https.Agent({ keepAlive: true, maxSockets: 1 }));
      let next = 0;
      const statuses: number[] = [];
      await Promise.all(agents.map(async (agent) => {
        while (next < 200) {
          const i = next++;
          statuses.push((await post(A, body(i), certs.a, agent)).status);
        }
        agent.destroy();
      }));
      return statuses;
    })();
    const [statuses, answers] = await Promise.all([flood, realWorkers(flood)]);

    expect(statuses.filter((s) => s === 200)).toHaveLength(200);
    expect(store.bytes).toBeLessThanOrEqual(STORE_BYTES);
    expect(store.live('team-a/dc1', 60_000).length).toBeLessThanOrEqual(instanceLimit(REPLICAS));
    for (const who of ['dc1-real', 'dc2-real']) {
      const mine = answers.filter((a) => a.who === who);
      expect(mine.length).toBeGreaterThan(0);
      expect(mine.filter((a) => a.status !== 200 || JSON.stringify(a.mappings) !== JSON.stringify([DB]))).toEqual([]);
    }
    // The other tenant's report was never pushed out: the flooding connection paid for its own flood.
    expect(store.live('team-b/dc2', 60_000).map((r) => r.instance)).toEqual(['dc2-real']);
  }, 120_000);

  it('refuses one connection\'s reports beyond its share read at once (429), and not the other tenant\'s', async () => {
    const body = Buffer.from(JSON.stringify(largestReport('burst')));
    const limit = instanceLimit(REPLICAS);
    // Requests that send half their body and hold: the server is reading all of them at once.
    const held = Array.from({ length: 3 * limit }, () => {
      let finish!: () => void;
      const answered = new Promise<number>((resolve) => {
        const req = https.request({
          host: '127.0.0.1', port, method: 'POST', path: '/v1/connections/team-a/dc1/report', ca: operatorCa, cert: certs.a.certPem, key: certs.a.keyPem,
          agent: false, headers: { 'content-type': 'application/json', 'content-length': body.length },
        }, (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        });
        req.on('error', () => resolve(-1)); // a refused request's connection closes under the rest of its body
        req.write(body.subarray(0, body.length >> 1));
        finish = () => req.end(body.subarray(body.length >> 1));
      });
      return { answered, finish: () => finish() };
    });
    // The first `limit` to arrive are being read and held; every later one is refused at once.
    await waitFor('the requests beyond the limit refused', () => refusals.filter((r) => r === 'TOO_MANY_REQUESTS').length === 2 * limit, 30_000);
    const other = await post(B, small('dc2-real'), certs.b, new https.Agent({ keepAlive: false }));
    for (const h of held) h.finish();
    const statuses = await Promise.all(held.map((h) => h.answered));
    expect(other.status).toBe(200);
    expect(statuses.filter((s) => s === 200)).toHaveLength(limit);
    expect(statuses.filter((s) => s === 429)).toHaveLength(2 * limit);
    expect(refusals.filter((r) => r === 'TOO_MANY_REQUESTS')).toHaveLength(2 * limit);
  }, 60_000);
});
