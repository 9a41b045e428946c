/**
 * Everything the tunnel must refuse, and how it says so: HTTP status and
 * X-Underpass-Reason on the WSS endpoint, coded stream refusals, audit lines,
 * connector logs, config errors. Real worker and connector processes; the
 * "hand-rolled" peers are built from the library's own pieces (ws, Session,
 * ControlChannel, open header) so they speak the real protocol.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { readFile, writeFile, mkdir } from 'node:fs/promises';
import https from 'node:https';
import { connect as tlsConnect } from 'node:tls';
import net from 'node:net';
import path from 'node:path';
import type { Duplex } from 'node:stream';
import WebSocket, { WebSocketServer } from 'ws';
import YAML from 'yaml';
import { ControlChannel, PROTOCOL_VERSION, type ControlMessage } from '../../tunnel/control.js';
import type { Mapping } from '../../tunnel/mapping.js';
import { Session } from '../../tunnel/mux/session.js';
import { readOpenResponse, writeOpenRequest, type OpenResponse } from '../../tunnel/open.js';
import { WebSocketDuplex } from '../../tunnel/testing/ws-duplex.js';
import { craftLeaf, impostorConnectorCert, writeConnectorFiles } from './certs.js';
import {
  echoServer, exchange, freePort, getJson, makePki, Proc, removeDir, startConnector, startWorker, tempDir, waitFor, waitHttp,
  type App, type ConnectorSetup, type Pki, type WorkerSetup,
} from './harness.js';

interface TlsFiles {
  cert?: Buffer;
  key?: Buffer;
  ca: Buffer;
}

interface UpgradeOutcome {
  status: number;
  reason?: string;
  body: string;
}

/** One WebSocket upgrade to /v1/tunnel; the HTTP answer when it is refused (101 when it is accepted). */
function tryUpgrade(url: string, tls: TlsFiles): Promise<UpgradeOutcome> {
  return new Promise((resolve, reject) => {
    let settled = false;
    const ws = new WebSocket(`${url}/v1/tunnel`, { ...tls, perMessageDeflate: false, handshakeTimeout: 5_000 });
    ws.on('unexpected-response', (_req, res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => {
        settled = true;
        const reason = res.headers['x-underpass-reason'];
        resolve({ status: res.statusCode ?? 0, ...(reason ? { reason: String(reason) } : {}), body: body.trim() });
      });
    });
    ws.on('open', () => {
      settled = true;
      ws.terminate();
      resolve({ status: 101, body: '' });
    });
    ws.on('error', (err) => {
      if (!settled) reject(err);
    });
  });
}

/** Reads a stream to its end. */
async function readAll(stream: Duplex): Promise<Buffer> {
  const parts: Buffer[] = [];
  stream.on('data', (d: Buffer) => parts.push(d));
  stream.resume();
  await once(stream, 'end');
  return Buffer.concat(parts);
}

/** Opens a stream on `session` and asks for `mapping`, as carryClient would. */
async function askFor(session: Session, mapping: string, source = '198.51.100.7:4242'): Promise<{ stream: Duplex; response: OpenResponse }> {
  const stream = session.open();
  stream.on('error', () => undefined);
  writeOpenRequest(stream, { mapping, source });
  return { stream, response: await readOpenResponse(stream, 5_000) };
}

/** A connector built by hand from the library: WSS with a client cert, yamux client, hello → welcome. */
async function handRolledConnector(url: string, name: string, tls: Required<TlsFiles>): Promise<{ session: Session; ws: WebSocket }> {
  const ws = new WebSocket(`${url}/v1/tunnel`, { ...tls, perMessageDeflate: false });
  await once(ws, 'open');
  const session = new Session(new WebSocketDuplex(ws), { client: true });
  const control = new ControlChannel(session.open());
  control.on('error', () => undefined);
  control.send({ type: 'hello', protocol: PROTOCOL_VERSION, connector: name, version: 'test', capabilities: ['tcp'] });
  await control.expect('welcome', 5_000);
  return { session, ws };
}

function auditMatches(proc: Proc, filter: Record<string, unknown>): Array<Record<string, unknown>> {
  return proc.audit.filter((a) => Object.entries(filter).every(([k, v]) => a[k] === v));
}

describe('refusals: what the tunnel refuses and how it says so (real processes)', () => {
  let dir: string;
  let pki: Pki;
  let worker: WorkerSetup;
  let connector: ConnectorSetup;
  let privateApp: App;
  let clusterApp: App;
  let outsideApp: App;
  let closedPort: number;
  let ca: Buffer;
  const ports = { echo: 0, forbidden: 0, sources: 0, closed: 0, clusterEcho: 0, clusterSources: 0 };
  const tlsOf = async (name: string): Promise<Required<TlsFiles>> => ({
    cert: await readFile(path.join(dir, `connector-${name}.crt`)),
    key: await readFile(path.join(dir, `connector-${name}.key`)),
    ca,
  });

  beforeAll(async () => {
    dir = await tempDir('underpass-refusals-');
    pki = await makePki(dir);
    ca = await readFile(path.join(dir, 'ca.crt'));
    const day = 24 * 3_600_000;
    await Promise.all([
      pki.connector('dc1-a'),
      pki.connector('dc1-c'),
      pki.connector('dc1-h'),
      pki.connector('dc1-old', { notBefore: new Date(Date.now() - 2 * day), notAfter: new Date(Date.now() - day) }),
    ]);
    [privateApp, clusterApp, outsideApp] = await Promise.all([echoServer(), echoServer(), echoServer()]);
    closedPort = await freePort();
    for (const k of Object.keys(ports) as Array<keyof typeof ports>) ports[k] = await freePort();
    const at = (port: number) => ({ port, address: '127.0.0.1' });
    worker = await startWorker(dir, {
      mappings: [
        { name: 'echo', target: { side: 'Connector', host: '127.0.0.1', port: privateApp.port }, listen: at(ports.echo) },
        { name: 'forbidden', target: { side: 'Connector', host: '127.0.0.1', port: outsideApp.port }, listen: at(ports.forbidden) },
        { name: 'sources', target: { side: 'Connector', host: '127.0.0.1', port: privateApp.port }, listen: at(ports.sources), allowedSources: ['10.0.0.0/8'] },
        { name: 'closed', target: { side: 'Connector', host: '127.0.0.1', port: closedPort }, listen: at(ports.closed) },
        { name: 'cluster-echo', target: { side: 'Cluster', host: '127.0.0.1', port: clusterApp.port }, listen: at(ports.clusterEcho) },
        {
          name: 'cluster-sources', target: { side: 'Cluster', host: '127.0.0.1', port: clusterApp.port }, listen: at(ports.clusterSources),
          allowedSources: ['10.0.0.0/8', 'fd00::/8'],
        },
      ],
    });
    connector = await startConnector(dir, 'dc1-a', worker.url, {
      allow: [`127.0.0.1:${privateApp.port}`, `127.0.0.1:${closedPort}`],
      bind: [`127.0.0.1:${ports.clusterEcho}`, `127.0.0.1:${ports.clusterSources}`],
    });
    await waitFor('connector listener for cluster-echo', async () => (await exchange(ports.clusterEcho, 'x')).received.toString() === 'x');
  }, 60_000);

  afterAll(async () => {
    await connector?.proc.stop();
    await worker?.proc.stop();
    await Promise.all([privateApp, clusterApp, outsideApp].map((a) => a?.close()));
    await removeDir(dir);
  });

  describe('the WSS endpoint', () => {
    it('answers 401 NO_CLIENT_CERT to an upgrade without a client certificate, audits it, and stays healthy', async () => {
      const r = await tryUpgrade(worker.url, { ca });
      expect(r).toMatchObject({ status: 401, reason: 'NO_CLIENT_CERT' });
      expect(r.body).toMatch(/client certificate is required/);
      await waitFor('session-denied audit line', () => auditMatches(worker.proc, { event: 'session-denied', reason: 'NO_CLIENT_CERT' }).length > 0);
      expect((await fetch(`http://127.0.0.1:${worker.adminPort}/healthz`)).status).toBe(200);
      expect((await fetch(`http://127.0.0.1:${worker.adminPort}/readyz`)).status).toBe(200);
    });

    it('answers 403 CERT_UNTRUSTED to a certificate from another CA, and a connector holding one never becomes ready and logs why', async () => {
      const impostor = await impostorConnectorCert(pki.connection, 'dc1-a');
      const r = await tryUpgrade(worker.url, { cert: Buffer.from(impostor.certPem), key: Buffer.from(impostor.keyPem), ca });
      expect(r).toMatchObject({ status: 403, reason: 'CERT_UNTRUSTED' });
      expect(r.body).toMatch(/not issued by the CA of connection team-a\/dc1/);

      const sub = path.join(dir, 'impostor');
      await mkdir(sub, { recursive: true });
      await writeFile(path.join(sub, 'ca.crt'), ca); // it trusts the real worker; the worker must not trust it
      await writeConnectorFiles(sub, 'dc1-a', impostor);
      const c = await startConnector(sub, 'dc1-a', worker.url, {}, { waitReady: false });
      try {
        await waitFor('the connector to log the refusal', () => c.proc.logs.includes('worker refused the connection (HTTP 403 CERT_UNTRUSTED)'));
        const ready = await fetch(`http://127.0.0.1:${c.adminPort}/readyz`);
        expect(ready.status).toBe(503);
        expect(await ready.text()).toMatch(/HTTP 403 CERT_UNTRUSTED/);
        expect(auditMatches(c.proc, { event: 'session-opened' })).toHaveLength(0);
      } finally {
        await c.proc.stop();
      }
    });

    it('answers 403 WRONG_CONNECTION to a certificate of this CA that names a connector of another connection', async () => {
      const crafted = await craftLeaf(pki.ca, { commonName: 'dc9-a', uris: ['underpass://team-b/dc9/connector/dc9-a'] });
      const r = await tryUpgrade(worker.url, { cert: Buffer.from(crafted.certPem), key: Buffer.from(crafted.keyPem), ca });
      expect(r).toMatchObject({ status: 403, reason: 'WRONG_CONNECTION' });
      expect(r.body).toMatch(/is for connection team-b\/dc9, not team-a\/dc1/);
      const denied = await waitFor('session-denied audit line', () => auditMatches(worker.proc, { event: 'session-denied', reason: 'WRONG_CONNECTION' })[0]);
      expect(denied.message).toMatch(/team-b\/dc9/);
    });

    it('answers 403 WRONG_CONNECTION to a connector of the same connection name in another namespace, under a CA shared on purpose', async () => {
      // Only the identity check stands between them: the certificate chains to this worker's CA.
      const crafted = await craftLeaf(pki.ca, { commonName: 'dc1-a', uris: ['underpass://team-b/dc1/connector/dc1-a'] });
      const r = await tryUpgrade(worker.url, { cert: Buffer.from(crafted.certPem), key: Buffer.from(crafted.keyPem), ca });
      expect(r).toMatchObject({ status: 403, reason: 'WRONG_CONNECTION' });
      expect(r.body).toMatch(/is for connection team-b\/dc1, not team-a\/dc1/);
      await waitFor('session-denied audit line', () => auditMatches(worker.proc, { event: 'session-denied', reason: 'WRONG_CONNECTION' })
        .some((a) => String(a.message).includes('team-b/dc1,')));
    });

    it('answers 403 to a certificate of this CA that names no connector (no identity URI, two URIs, or the worker role)', async () => {
      const cases = [
        { uris: [], body: /carries no underpass:\/\/ SAN URI/ },
        { uris: ['underpass://team-a/dc1/connector/x', 'underpass://team-a/dc1/connector/y'], body: /carries 2 underpass:\/\/ SAN URIs/ },
        { uris: ['underpass://team-a/dc1/worker'], body: /identifies a worker, not a connector/ },
      ];
      for (const c of cases) {
        const crafted = await craftLeaf(pki.ca, { uris: c.uris });
        const r = await tryUpgrade(worker.url, { cert: Buffer.from(crafted.certPem), key: Buffer.from(crafted.keyPem), ca });
        expect(r.status).toBe(403);
        expect(r.reason).toMatch(/^(BAD_IDENTITY|WRONG_CONNECTION|WRONG_ROLE)$/);
        expect(r.body).toMatch(c.body);
      }
    });

    it('answers 403 CERT_EXPIRED to an expired connector certificate', async () => {
      const r = await tryUpgrade(worker.url, await tlsOf('dc1-old'));
      expect(r).toMatchObject({ status: 403, reason: 'CERT_EXPIRED' });
      expect(r.body).toMatch(/expired/);
    });

    it('accepts the upgrade with a valid connector certificate (the control case for the refusals above)', async () => {
      expect((await tryUpgrade(worker.url, await tlsOf('dc1-h'))).status).toBe(101);
    });

    it('resumes no TLS session: a connector that offers a ticket still goes through a full handshake with its certificate', async () => {
      const tlsFiles = await tlsOf('dc1-h');
      const connectOnce = (session?: Buffer): Promise<{ reused: boolean; ticket?: Buffer }> => new Promise((resolve, reject) => {
        let ticket: Buffer | undefined;
        let reused = false;
        const s = tlsConnect({ host: '127.0.0.1', port: worker.tunnelPort, servername: 'localhost', ...tlsFiles, ...(session ? { session } : {}) }, () => {
          reused = s.isSessionReused();
          // TLS 1.3 tickets arrive after the handshake, with the first data.
          s.write('GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
        });
        s.on('session', (t: Buffer) => (ticket ??= t));
        s.resume();
        s.on('error', reject);
        s.on('close', () => resolve({ reused, ...(ticket ? { ticket } : {}) }));
      });
      const first = await connectOnce();
      expect(first.reused).toBe(false);
      expect(first.ticket).toBeDefined(); // OpenSSL still sends (stateful) tickets ...
      const second = await connectOnce(first.ticket);
      expect(second.reused).toBe(false); // ... that the worker never honours
    });

    it('answers 426 to an HTTPS GET of /v1/tunnel without an upgrade, even with a valid client certificate', async () => {
      const tls = await tlsOf('dc1-h');
      const status = await new Promise<number>((resolve, reject) => {
        const req = https.get({ host: '127.0.0.1', port: worker.tunnelPort, path: '/v1/tunnel', ...tls }, (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        });
        req.on('error', reject);
      });
      expect(status).toBe(426);
    });

    it('closes garbage and plain-text HTTP on the tunnel port, audits TLS_HANDSHAKE, and still takes a real connector afterwards', async () => {
      const deniedBefore = auditMatches(worker.proc, { event: 'session-denied', reason: 'TLS_HANDSHAKE' }).length;
      // Garbage that cannot begin a TLS record: purely random bytes sometimes do (a first byte of
      // 0x16, or an SSLv2-style header with its high bit set and 1 in the third byte), and OpenSSL
      // then waits for the rest of a record of up to 32 KiB — this test failed that way once in a
      // fresh-clone run.
      const garbage = Buffer.concat([Buffer.from('not TLS at all\r\n'), randomBytes(4096)]);
      for (const payload of [garbage, Buffer.from('GET /v1/tunnel HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n')]) {
        const socket = net.connect(worker.tunnelPort, '127.0.0.1');
        socket.on('error', () => undefined);
        const received: Buffer[] = [];
        socket.on('data', (d: Buffer) => received.push(d));
        socket.write(payload);
        const closed = once(socket, 'close');
        await Promise.race([closed, new Promise((_, reject) => setTimeout(() => reject(new Error('the worker kept a garbage connection open')), 5_000))]);
        expect(Buffer.concat(received).toString()).not.toMatch(/^HTTP\/1\.1 101/);
      }
      await waitFor('two TLS_HANDSHAKE audit lines', () =>
        auditMatches(worker.proc, { event: 'session-denied', reason: 'TLS_HANDSHAKE' }).length >= deniedBefore + 2);
      expect(worker.proc.alive).toBe(true);
      expect((await fetch(`http://127.0.0.1:${worker.adminPort}/healthz`)).status).toBe(200);

      const c = await startConnector(dir, 'dc1-c', worker.url, { allow: [`127.0.0.1:${privateApp.port}`, `127.0.0.1:${closedPort}`] });
      try {
        await waitFor('the new connector to carry a stream', async () => {
          const data = randomBytes(1000);
          const r = await exchange(ports.echo, data);
          expect(r.received.equals(data)).toBe(true);
          return worker.proc.streams({ connector: 'dc1-c', outcome: 'closed' }).length > 0;
        });
      } finally {
        await c.proc.stop();
      }
      await waitFor('dc1-c gone from status', async () =>
        !(await getJson<{ connectors: Array<{ name: string }> }>(`http://127.0.0.1:${worker.adminPort}/status`)).connectors.some((x) => x.name === 'dc1-c'));
    });

    it('closes a peer stuck in its TLS handshake, and one that completes TLS but never sends its upgrade, within 10 s each, and audits both', async () => {
      const count = (reason: string): number => auditMatches(worker.proc, { event: 'session-denied', reason }).length;
      const before = { tls: count('TLS_HANDSHAKE'), upgrade: count('UPGRADE_TIMEOUT') };
      const closedWithin = async (socket: net.Socket, ms: number): Promise<number> => {
        const t0 = Date.now();
        socket.on('error', () => undefined);
        await Promise.race([once(socket, 'close'), new Promise((_, reject) => setTimeout(() => reject(new Error(`the worker held the socket for more than ${ms} ms`)), ms))]);
        return Date.now() - t0;
      };
      // The first five bytes of a TLS handshake record of 16 KiB, and nothing more: OpenSSL waits for the rest.
      const halfRecord = net.connect(worker.tunnelPort, '127.0.0.1', () => halfRecord.write(Buffer.from([0x16, 0x03, 0x01, 0x40, 0x00])));
      const silent = tlsConnect({ host: '127.0.0.1', port: worker.tunnelPort, servername: 'localhost', ...(await tlsOf('dc1-h')) });
      await once(silent, 'secureConnect');
      const [tlsHeld, upgradeHeld] = await Promise.all([closedWithin(halfRecord, 15_000), closedWithin(silent, 15_000)]);
      expect(tlsHeld).toBeGreaterThanOrEqual(9_000); // the timeout, not some other refusal
      expect(upgradeHeld).toBeGreaterThanOrEqual(9_000);
      await waitFor('TLS_HANDSHAKE and UPGRADE_TIMEOUT audit lines', () => count('TLS_HANDSHAKE') > before.tls && count('UPGRADE_TIMEOUT') > before.upgrade);
      expect(auditMatches(worker.proc, { event: 'session-denied', reason: 'TLS_HANDSHAKE' }).at(-1)?.message).toMatch(/timed out|timeout/i);
    }, 30_000);

    it('a connector refuses a worker whose certificate does not name the host it dialled, and no session opens', async () => {
      const sub = path.join(dir, 'misnamed');
      await mkdir(sub, { recursive: true });
      const other = await makePki(sub, { workerSans: ['other.example'] });
      await other.connector('dc1-a');
      const w = await startWorker(sub);
      try {
        const c = await startConnector(sub, 'dc1-a', w.url, {}, { waitReady: false });
        try {
          await waitFor('the connector to log the name mismatch', () => c.proc.logs.includes("the worker's certificate does not name this host"), 10_000);
          expect((await fetch(`http://127.0.0.1:${c.adminPort}/readyz`)).status).toBe(503);
          expect(auditMatches(w.proc, { event: 'session-opened' })).toHaveLength(0);
          expect(auditMatches(c.proc, { event: 'session-opened' })).toHaveLength(0);
        } finally {
          await c.proc.stop();
        }
      } finally {
        await w.proc.stop();
      }
    });
  });

  describe('streams', () => {
    it('resets a client of a mapping whose target is outside the connector allow list, shows it in /status, and keeps permitted mappings working', async () => {
      type Status = { connectors: Array<{ name: string; unavailableMappings: Array<{ name: string; state: string; reason?: string; message?: string }> }> };
      const status = await getJson<Status>(`http://127.0.0.1:${worker.adminPort}/status`);
      const mine = status.connectors.find((c) => c.name === 'dc1-a');
      expect(mine?.unavailableMappings).toEqual([
        expect.objectContaining({ name: 'forbidden', state: 'Refused', reason: 'NotAllowed', message: expect.stringMatching(/is not on this connector's allow list/) }),
      ]);
      const r = await exchange(ports.forbidden, 'should never arrive');
      expect(r.received.length).toBe(0);
      expect((r.error as NodeJS.ErrnoException | undefined)?.code ?? 'a clean end').toMatch(/^(ECONNRESET|EPIPE)$/);
      const line = await waitFor('worker audit line', () => worker.proc.streams({ mapping: 'forbidden' })[0]);
      expect(line).toMatchObject({ outcome: 'refused', bytesIn: 0, bytesOut: 0 });
      expect(outsideApp.server.listening).toBe(true);
      const ok = await exchange(ports.echo, 'still fine');
      expect(ok.received.toString()).toBe('still fine');
    });

    it('names the connector\'s refusal (NOT_ALLOWED) in the worker\'s audit line for such a client, not a missing session', async () => {
      await exchange(ports.forbidden, 'x');
      const line = await waitFor('worker audit line', () => worker.proc.streams({ mapping: 'forbidden' }).at(-1));
      expect(line.reason).toBe('NOT_ALLOWED');
      expect(String(line.message)).toMatch(/allow list/);
    });

    it('a connector refuses NOT_ALLOWED (and audits it) even when a worker that ignores mapping-status asks for a target outside its allow list', async () => {
      const sub = path.join(dir, 'fake-worker');
      await mkdir(sub, { recursive: true });
      await writeFile(path.join(sub, 'ca.crt'), ca);
      for (const f of ['connector-dc1-a.crt', 'connector-dc1-a.key']) await writeFile(path.join(sub, f), await readFile(path.join(dir, f)));
      const mappings: Mapping[] = [
        { name: 'echo', protocol: 'TCP', target: { side: 'Connector', host: '127.0.0.1', port: privateApp.port }, listen: { port: 1, address: '127.0.0.1' }, allowedSources: [] },
        { name: 'forbidden', protocol: 'TCP', target: { side: 'Connector', host: '127.0.0.1', port: outsideApp.port }, listen: { port: 2, address: '127.0.0.1' }, allowedSources: [] },
      ];
      const server = https.createServer({
        cert: await readFile(path.join(dir, 'worker.crt')), key: await readFile(path.join(dir, 'worker.key')), ca, requestCert: true, rejectUnauthorized: true,
      });
      const wss = new WebSocketServer({ server, path: '/v1/tunnel', perMessageDeflate: false });
      const attached = new Promise<{ session: Session; statuses: ControlMessage[] }>((resolve) => {
        wss.once('connection', (ws) => {
          const session = new Session(new WebSocketDuplex(ws), { client: false });
          let control: ControlChannel | undefined;
          session.on('stream', (first) => {
            if (control) return void first.destroy();
            control = new ControlChannel(first);
            control.on('error', () => undefined);
            const statuses: ControlMessage[] = [];
            control.on('message', (m) => {
              if (m.type === 'mapping-status') statuses.push(m);
            });
            const c = control;
            void c.expect('hello', 5_000).then(() => {
              c.send({ type: 'welcome', protocol: PROTOCOL_VERSION, connection: 'team-a/dc1', worker: { instance: 'fake-worker', version: 'test' }, session: 'fake' });
              c.send({ type: 'config', revision: 1, mappings });
              resolve({ session, statuses });
            });
          });
        });
      });
      server.listen(0, '127.0.0.1');
      await once(server, 'listening');
      const port = (server.address() as net.AddressInfo).port;
      const c = await startConnector(sub, 'dc1-a', `wss://127.0.0.1:${port}`, { allow: [`127.0.0.1:${privateApp.port}`] });
      try {
        const { session, statuses } = await attached;
        await waitFor('mapping-status from the connector', () => statuses.length > 0);
        const refused = await askFor(session, 'forbidden');
        expect(refused.response).toMatchObject({ ok: false, code: 'NOT_ALLOWED' });
        const audit = await waitFor('connector audit line', () => c.proc.streams({ mapping: 'forbidden' })[0]);
        expect(audit).toMatchObject({ outcome: 'refused', reason: 'NOT_ALLOWED', bytesIn: 0, bytesOut: 0 });
        expect(String(audit.message)).toContain(`127.0.0.1:${outsideApp.port}`);

        const allowed = await askFor(session, 'echo');
        expect(allowed.response).toEqual({ ok: true });
        allowed.stream.end('through a hand-rolled worker');
        expect((await readAll(allowed.stream)).toString()).toBe('through a hand-rolled worker');
        session.close();
      } finally {
        await c.proc.stop();
        wss.close();
        server.closeAllConnections();
        server.close();
      }
    });

    it('refuses UNKNOWN_MAPPING and WRONG_SIDE to a hand-rolled connector, and its other streams keep working', async () => {
      const { session, ws } = await handRolledConnector(worker.url, 'dc1-h', await tlsOf('dc1-h'));
      try {
        const before = askFor(session, 'cluster-echo');
        const unknown = await askFor(session, 'nope');
        expect(unknown.response).toMatchObject({ ok: false, code: 'UNKNOWN_MAPPING' });
        expect((unknown.response as { message: string }).message).toMatch(/"nope"/);
        const wrongSide = await askFor(session, 'echo');
        expect(wrongSide.response).toMatchObject({ ok: false, code: 'WRONG_SIDE' });

        // A stream opened before the refusals and one opened after both still carry data.
        const open = await before;
        expect(open.response).toEqual({ ok: true });
        const after = await askFor(session, 'cluster-echo');
        expect(after.response).toEqual({ ok: true });
        open.stream.end('first');
        after.stream.end('second');
        expect((await readAll(open.stream)).toString()).toBe('first');
        expect((await readAll(after.stream)).toString()).toBe('second');
        expect(session.isClosed).toBe(false);

        const lines = await waitFor('worker audit lines', () => {
          const l = worker.proc.streams({ connector: 'dc1-h', outcome: 'refused' });
          return l.length >= 2 && l;
        });
        expect(lines.map((l) => l.reason).sort()).toEqual(['UNKNOWN_MAPPING', 'WRONG_SIDE']);
      } finally {
        session.close();
        ws.terminate();
      }
    });

    it('resets a client outside allowedSources and audits SOURCE_NOT_ALLOWED', async () => {
      const r = await exchange(ports.sources, 'from loopback');
      expect(r.received.length).toBe(0);
      expect((r.error as NodeJS.ErrnoException | undefined)?.code ?? 'a clean end').toMatch(/^(ECONNRESET|EPIPE)$/);
      const line = await waitFor('worker audit line', () => worker.proc.streams({ mapping: 'sources' })[0]);
      expect(line).toMatchObject({ outcome: 'refused', reason: 'SOURCE_NOT_ALLOWED', bytesIn: 0, bytesOut: 0 });
      expect(String(line.message)).toMatch(/127\.0\.0\.1 is outside allowedSources \(10\.0\.0\.0\/8\)/);
      expect(connector.proc.streams({ mapping: 'sources' })).toHaveLength(0);
    });

    it('a connector resets a client outside allowedSources of a Cluster-side mapping itself, audits SOURCE_NOT_ALLOWED, and opens no stream', async () => {
      // The listener opens with the mapping set, in the same step as cluster-echo's (already up).
      const r = await exchange(ports.clusterSources, 'from loopback');
      expect(r.received.length).toBe(0);
      expect((r.error as NodeJS.ErrnoException | undefined)?.code ?? 'a clean end').toMatch(/^(ECONNRESET|EPIPE)$/);
      const line = await waitFor('connector audit line', () => connector.proc.streams({ mapping: 'cluster-sources', reason: 'SOURCE_NOT_ALLOWED' })[0]);
      expect(line).toMatchObject({ outcome: 'refused', client: expect.stringMatching(/^127\.0\.0\.1:\d+$/), bytesIn: 0, bytesOut: 0 });
      expect(String(line.message)).toMatch(/127\.0\.0\.1 is outside allowedSources \(10\.0\.0\.0\/8, fd00::\/8\)/);
      // The check ran before any stream was opened: the worker never heard of this client.
      const sentinel = await exchange(ports.clusterEcho, 'after');
      expect(sentinel.received.toString()).toBe('after');
      await waitFor('the sentinel stream at the worker', () => worker.proc.streams({ mapping: 'cluster-echo', connector: 'dc1-a' }).length > 0);
      expect(worker.proc.streams({ mapping: 'cluster-sources', connector: 'dc1-a' })).toHaveLength(0);
    });

    it.each([
      ['an IPv4 source outside', '198.51.100.7:4242', false],
      ['an IPv6 source outside', '[2001:db8::1]:4242', false],
      ['an IPv4-mapped source outside', '[::ffff:198.51.100.7]:4242', false],
      ['an IPv4 source inside', '10.1.2.3:4242', true],
      ['an IPv6 source inside', '[fd00::7]:4242', true],
      ['an IPv4-mapped source inside', '[::ffff:10.1.2.3]:4242', true],
    ])('the worker checks allowedSources of a Cluster-side mapping itself, for a connector that does not: %s', async (_what, source, allowed) => {
      const { session, ws } = await handRolledConnector(worker.url, 'dc1-h', await tlsOf('dc1-h'));
      try {
        const { stream, response } = await askFor(session, 'cluster-sources', source);
        if (!allowed) {
          expect(response).toMatchObject({ ok: false, code: 'SOURCE_NOT_ALLOWED', message: expect.stringContaining(`${source} is outside allowedSources of mapping "cluster-sources"`) });
          const line = await waitFor('worker audit line', () => worker.proc.streams({ mapping: 'cluster-sources', connector: 'dc1-h', client: source })[0]);
          expect(line).toMatchObject({ outcome: 'refused', reason: 'SOURCE_NOT_ALLOWED', bytesIn: 0, bytesOut: 0 });
          return;
        }
        expect(response).toEqual({ ok: true });
        stream.end('from an allowed source');
        expect((await readAll(stream)).toString()).toBe('from an allowed source');
      } finally {
        session.close();
        ws.terminate();
      }
    });

    it('ends a client with no data when the target refuses the dial, and audits DIAL_FAILED naming the target', async () => {
      const r = await exchange(ports.closed, 'nobody listens');
      expect(r.received.length).toBe(0);
      const target = `127.0.0.1:${closedPort}`;
      const w = await waitFor('worker audit line', () => worker.proc.streams({ mapping: 'closed' })[0]);
      const c = await waitFor('connector audit line', () => connector.proc.streams({ mapping: 'closed' })[0]);
      for (const line of [w, c]) {
        expect(line).toMatchObject({ outcome: 'refused', reason: 'DIAL_FAILED' });
        expect(String(line.message)).toContain(`cannot connect to ${target}`);
      }
      expect(c.target).toBe(target);
    });
  });

  describe('invalid configuration', () => {
    const base = () => ({
      connection: 'team-a/dc1',
      listen: '127.0.0.1:18443',
      tls: { cert: 'worker.crt', key: 'worker.key', ca: 'ca.crt' },
    });

    it.each([
      ['an unknown top-level field', 'unknown-field.yaml', { ...base(), mapings: [] }, /field "mapings": unknown field/],
      ['a listener port of 70000', 'port-70000.yaml',
        { ...base(), mappings: [{ name: 'db', target: { side: 'Connector', host: '127.0.0.1', port: 5432 }, listen: { port: 70000 } }] },
        /field "mappings\[0\]\.listen\.port": must be between 1 and 65535/],
    ])('exits 2 naming the file and the field for %s', async (_what, file, config, message) => {
      const full = path.join(dir, file);
      await writeFile(full, YAML.stringify(config));
      const proc = new Proc(['worker', '--config', full]);
      expect(await proc.exited).toBe(2);
      expect(proc.logs).toContain(full);
      expect(proc.logs).toMatch(message);
    });

    it('exits 2 naming a config file that does not exist', async () => {
      const missing = path.join(dir, 'no-such-worker.yaml');
      const proc = new Proc(['worker', '--config', missing]);
      expect(await proc.exited).toBe(2);
      expect(proc.logs).toContain(missing);
      expect(proc.logs).toMatch(/cannot read the config file/);
    });
  });

  it('the worker is still up and ready after all of the above', async () => {
    if (!worker.proc.alive) throw new Error(`the worker exited (${worker.proc.child.exitCode ?? worker.proc.child.signalCode}):\n${worker.proc.logs}`);
    await waitHttp(`http://127.0.0.1:${worker.adminPort}/readyz`, worker.proc, 2_000);
  });
});
