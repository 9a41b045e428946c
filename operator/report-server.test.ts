import { describe, it, expect, beforeAll, afterAll } from '@jest/globals';
import { once } from 'node:events';
import https from 'node:https';
import net from 'node:net';
import { craftLeaf } from '../test/e2e/certs.js';
import { createCA, issueConnectorCert, issueWorkerCert, loadCA, type CertificateAuthority, type PemKeyPair } from '../tunnel/pki.js';
import { createSelfSignedCA, issueServingCert, loadSigningCA } from '../tunnel/pki-generic.js';
import { silentLogger } from '../tunnel/log.js';
import type { Mapping } from '../tunnel/mapping.js';
import { MAX_REPORT_BYTES, type WorkerReport } from '../tunnel/operator-channel.js';
import { ReportServer, type DesiredWorkerState } from './report-server.js';
import { ReportStore } from './report-store.js';

const DC1 = { namespace: 'team-a', name: 'dc1' };
const DC2 = { namespace: 'team-a', name: 'dc2' };
const DAY = 86_400_000;
const PATH = '/v1/connections/team-a/dc1/report';

const DB: Mapping = {
  name: 'db', protocol: 'TCP', target: { side: 'Connector', host: '127.0.0.1', port: 5432 },
  listen: { port: 15432, address: '127.0.0.1' }, allowedSources: [],
};
const DESIRED: DesiredWorkerState = { mappings: [DB], admission: { connectors: ['site-a'] } };

function report(overrides: Partial<WorkerReport> = {}): WorkerReport {
  return { instance: 'dc1-worker-0', version: '0.1.0', ready: false, draining: false, connectors: [], listenerFailures: [], ...overrides };
}

interface Answer {
  status: number;
  body: Record<string, unknown>;
}

let operatorCa: string;
let dc1: { caPem: string; ca: CertificateAuthority; worker: PemKeyPair; connector: PemKeyPair; expired: PemKeyPair; teamBWorker: PemKeyPair };
let dc2: { caPem: string; worker: PemKeyPair };
let store: ReportStore;
let server: ReportServer;
let port: number;
let desired: Map<string, DesiredWorkerState>;
const counted: Array<{ result?: string; reason?: string }> = [];

function post(path: string, body: string | Buffer, client?: PemKeyPair, method = 'POST', chunked = false): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = https.request({
      host: '127.0.0.1', port, path, method, ca: operatorCa, agent: false,
      ...(client ? { cert: client.certPem, key: client.keyPem } : {}),
      headers: { 'content-type': 'application/json' },
    }, (res) => {
      let text = '';
      res.on('data', (d: Buffer) => (text += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) as Record<string, unknown> }));
    });
    req.on('error', reject);
    if (!chunked) return void req.end(body);
    // No content-length: the server has to count while reading.
    const bytes = Buffer.from(body);
    req.write(bytes.subarray(0, bytes.length >> 1));
    req.end(bytes.subarray(bytes.length >> 1));
  });
}

beforeAll(async () => {
  const opCaPems = await createSelfSignedCA({ commonName: 'underpass-operator-ca', validityDays: 10 });
  operatorCa = opCaPems.certPem;
  const serving = await issueServingCert(await loadSigningCA(opCaPems.certPem, opCaPems.keyPem), { commonName: 'operator', sans: ['127.0.0.1'], validityDays: 1 });

  const dc1Pems = await createCA({ connection: DC1 });
  const ca = await loadCA(dc1Pems.certPem, dc1Pems.keyPem);
  const now = Date.now();
  dc1 = {
    caPem: dc1Pems.certPem,
    ca,
    worker: await issueWorkerCert(ca, { sans: ['localhost'] }),
    connector: await issueConnectorCert(ca, { connector: 'site-a' }),
    expired: await issueWorkerCert(ca, { sans: ['localhost'] , notBefore: new Date(now - 3 * DAY), notAfter: new Date(now - DAY) }),
    // The worker identity of a connection with the same name in another namespace, signed by dc1's CA.
    teamBWorker: await craftLeaf(ca, { uris: ['underpass://team-b/dc1/worker'] }),
  };
  const dc2Pems = await createCA({ connection: DC2 });
  dc2 = { caPem: dc2Pems.certPem, worker: await issueWorkerCert(await loadCA(dc2Pems.certPem, dc2Pems.keyPem), { sans: ['localhost'] }) };

  desired = new Map([['team-a/dc1', DESIRED]]);
  // "shared" and team-b/dc1 wrongly get dc1's CA: only the identity check (lock 2) stands between their workers and dc1's.
  const cas = new Map([['team-a/dc1', dc1.caPem], ['team-a/dc2', dc2.caPem], ['team-a/shared', dc1.caPem], ['team-b/dc1', dc1.caPem]]);
  store = new ReportStore();
  server = new ReportServer({
    tls: { cert: serving.certPem, key: serving.keyPem },
    logger: silentLogger(),
    store,
    caFor: (c) => cas.get(`${c.namespace}/${c.name}`),
    desiredFor: (c) => desired.get(`${c.namespace}/${c.name}`),
    metrics: { reports: { inc: (l) => void counted.push(l) }, refusals: { inc: (l) => void counted.push(l) } },
  });
  port = (await server.listen({ host: '127.0.0.1', port: 0 })).port;
});

afterAll(() => server?.close());

describe('ReportServer', () => {
  it('answers a worker of the connection with its mappings and admission list, and records the report', async () => {
    const events: string[] = [];
    store.on('report', (c) => events.push(c));
    const sent = report({ instance: 'w-accepted', ready: true });
    const first = await post(PATH, JSON.stringify(sent), dc1.worker);
    const second = await post(PATH, JSON.stringify(sent), dc1.worker);
    expect(first).toEqual({ status: 200, body: { mappings: [DB], admission: { connectors: ['site-a'] }, report: { accepted: true } } });
    expect(second.status).toBe(200);
    expect(events).toEqual(['team-a/dc1']);
    expect(store.live('team-a/dc1', 60_000).find((r) => r.instance === 'w-accepted')).toMatchObject(sent);
    expect(store.hasReported('team-a/dc1')).toBe(true);

    await post(PATH, JSON.stringify({ ...sent, draining: true }), dc1.worker);
    expect(events).toEqual(['team-a/dc1', 'team-a/dc1']);
  });

  it('applies a changed desired set in the next answer', async () => {
    desired.set('team-a/dc1', { mappings: [], admission: {} });
    try {
      expect(await post(PATH, JSON.stringify(report()), dc1.worker)).toMatchObject({ status: 200, body: { mappings: [], admission: {} } });
    } finally {
      desired.set('team-a/dc1', DESIRED);
    }
  });

  it.each([
    ['no client certificate', () => undefined, 401, 'NO_CLIENT_CERT'],
    ['a connector certificate of the same connection', () => dc1.connector, 403, 'WRONG_ROLE'],
    ["a worker certificate from another connection's CA", () => dc2.worker, 403, 'CERT_UNTRUSTED'],
    ['an expired worker certificate', () => dc1.expired, 403, 'CERT_EXPIRED'],
    ['a worker of another connection when both share a CA', () => dc1.worker, 403, 'WRONG_CONNECTION', 'team-a/shared'],
    ['a worker of team-b/dc1 on team-a/dc1 when both share a CA (same name, other namespace)', () => dc1.teamBWorker, 403, 'WRONG_CONNECTION', 'team-a/dc1'],
    ['a worker of team-a/dc1 on team-b/dc1 when both share a CA (same name, other namespace)', () => dc1.worker, 403, 'WRONG_CONNECTION', 'team-b/dc1'],
  ])('refuses %s', async (_name, client, status, reason, connection = 'team-a/dc1') => {
    const before = { a: store.live('team-a/dc1', 60_000).length, b: store.live('team-b/dc1', 60_000).length };
    const answer = await post(`/v1/connections/${connection}/report`, JSON.stringify(report({ instance: 'w-refused' })), client());
    expect(answer.status).toBe(status);
    expect(answer.body).toMatchObject({ reason, error: expect.any(String) });
    expect(answer.body).not.toHaveProperty('mappings');
    expect({ a: store.live('team-a/dc1', 60_000).length, b: store.live('team-b/dc1', 60_000).length }).toEqual(before);
  });

  it('refuses an unknown connection with 404', async () => {
    const answer = await post('/v1/connections/team-a/nope/report', JSON.stringify(report()), dc1.worker);
    expect(answer).toMatchObject({ status: 404, body: { reason: 'UNKNOWN_CONNECTION' } });
  });

  it.each([
    ['malformed JSON', '{"instance": ', 'INVALID_JSON', undefined],
    ['a missing field', JSON.stringify({ ...report(), ready: undefined }), 'INVALID_REPORT', 'ready'],
    ['a bad nested field', JSON.stringify(report({ connectors: [{ name: 'a' } as never] })), 'INVALID_REPORT', 'connectors[0].session'],
    ['a bad instance name', JSON.stringify(report({ instance: 'has space' })), 'INVALID_REPORT', 'instance'],
    ['a 65-character connector version', JSON.stringify(report({ instance: 'w-long', connectors: [{ name: 'site-a', session: 's1', since: '2026-01-01T00:00:00.000Z', version: 'v'.repeat(65), address: '127.0.0.1:1', unavailableMappings: [] }] })), 'INVALID_REPORT', 'connectors[0].version'],
  ])('still answers the mapping set and admission list for %s, but does not record it and names the field', async (_name, body, reason, field) => {
    const before = store.live('team-a/dc1', 60_000).length;
    const answer = await post(PATH, body, dc1.worker);
    expect(answer.status).toBe(200);
    expect(answer.body).toMatchObject({ mappings: [DB], admission: { connectors: ['site-a'] }, report: { accepted: false, reason } });
    const verdict = answer.body.report as { field?: string; message: string };
    if (field) {
      expect(verdict.field).toBe(field);
      expect(verdict.message).toContain(`field "${field}"`);
    }
    expect(store.live('team-a/dc1', 60_000)).toHaveLength(before);
    expect(counted).toContainEqual({ result: 'invalid' });
  });

  it.each([
    ['with a content-length', false],
    ['sent chunked', true],
  ])('refuses a body over MAX_REPORT_BYTES with 413 (%s)', async (_name, chunked) => {
    const answer = await post(PATH, Buffer.alloc(MAX_REPORT_BYTES + 1, 0x20), dc1.worker, 'POST', chunked);
    expect(answer).toMatchObject({ status: 413, body: { reason: 'TOO_LARGE' } });
    expect(counted).toContainEqual({ reason: 'TOO_LARGE' });
  });

  it('keeps the body limit to what a legitimate report needs (under 512 KiB, not the former 1 MiB)', () => {
    expect(MAX_REPORT_BYTES).toBeLessThan(512 << 10);
  });

  it('answers 503 while the mapping set is not known, after recording the report', async () => {
    const answer = await post('/v1/connections/team-a/dc2/report', JSON.stringify(report({ instance: 'dc2-w' })), dc2.worker);
    expect(answer).toMatchObject({ status: 503, body: { reason: 'DESIRED_UNKNOWN' } });
    expect(store.live('team-a/dc2', 60_000).map((r) => r.instance)).toEqual(['dc2-w']);
  });

  it('closes a peer stuck in its TLS handshake after 10 s, not Node\'s 120', async () => {
    const socket = net.connect(port, '127.0.0.1', () => socket.write(Buffer.from([0x16, 0x03, 0x01, 0x40, 0x00]))); // half a record
    socket.on('error', () => undefined);
    const t0 = Date.now();
    await Promise.race([once(socket, 'close'), new Promise((_, reject) => setTimeout(() => reject(new Error('held for more than 15 s')), 15_000))]);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(9_000);
  }, 20_000);

  it.each([
    ['another path', 'GET', '/v1/other', 404, 'NOT_FOUND'],
    ['a GET of the report path', 'GET', PATH, 405, 'METHOD_NOT_ALLOWED'],
  ])('refuses %s', async (_name, method, path, status, reason) => {
    const answer = await post(path, '', dc1.worker, method);
    expect(answer).toMatchObject({ status, body: { reason } });
  });
});
