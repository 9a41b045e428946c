/**
 * Lines a peer provokes beyond the per-peer rate are summed up in one line at the end of their
 * interval (tunnel/log-limit.ts). A worker or connector stopped within that interval still writes
 * them: nothing a peer did just before a restart goes unaccounted in the audit log.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { connect as tlsConnect } from 'node:tls';
import { writeOpenRequest } from '../../tunnel/open.js';
import type { Session } from '../../tunnel/mux/session.js';
import { makePki, metricValue, removeDir, startConnector, startWorker, tempDir, waitFor, type Pki } from './harness.js';
import { credsOf, fakeWorker, HostileConnector } from './hostile.js';

/** Opens `n` streams on `session` naming a mapping nobody has; resolves once all are answered. */
async function refusedOpens(session: Session, n: number): Promise<void> {
  const answered: Array<Promise<unknown>> = [];
  for (let i = 0; i < n; i++) {
    const s = session.open();
    s.on('error', () => undefined);
    writeOpenRequest(s, { mapping: 'made-up', source: '192.0.2.1:1' });
    s.end();
    answered.push(new Promise((r) => s.once('close', r)));
    s.resume();
  }
  await Promise.all(answered);
}

describe('summary lines still pending when a process stops are written (SIGTERM)', () => {
  let dir: string;
  let pki: Pki;

  beforeAll(async () => {
    dir = await tempDir('underpass-exit-summaries-');
    pki = await makePki(dir);
    await Promise.all([pki.connector('noisy'), pki.connector('dc1-a')]);
  }, 60_000);

  afterAll(async () => {
    await removeDir(dir);
  });

  it('a worker writes the stream summary of a session and the summary of refused handshakes as it stops', async () => {
    const worker = await startWorker(dir);
    try {
      const c = await HostileConnector.connect(worker.url, 'noisy', await credsOf(dir, 'noisy'));
      // 30 refusals: 20 audited one by one (STREAM_LINES_BURST), 10 only counted until the interval ends (10 s).
      await refusedOpens(c.session, 30);
      await waitFor('30 refusals counted', async () =>
        (await metricValue(worker.adminPort, 'underpass_streams_total', { outcome: 'refused', reason: 'UNKNOWN_MAPPING' })) >= 30);
      c.close();
      // 8 handshakes without a client certificate from one address: 5 written (DENIALS_BURST), 3 counted.
      const ca = (await credsOf(dir, 'noisy')).ca;
      for (let i = 0; i < 8; i++) {
        await new Promise<void>((resolve) => {
          const s = tlsConnect({ host: '127.0.0.1', port: worker.tunnelPort, servername: 'localhost', ca }, () => {
            s.write('GET /v1/tunnel HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n');
          });
          s.on('error', () => resolve());
          s.on('close', () => resolve());
          s.resume();
        });
      }
      await waitFor('8 handshake refusals counted', async () =>
        (await metricValue(worker.adminPort, 'underpass_handshake_failures_total', { reason: 'NO_CLIENT_CERT' })) >= 8);
      expect(worker.proc.audit.filter((a) => a.event === 'stream-summary' || typeof a.count === 'number')).toEqual([]);

      expect(await worker.proc.stop('SIGTERM')).toBe(0);
      const streams = await waitFor('the stream-summary line', () => worker.proc.audit.find((a) => a.event === 'stream-summary'), 2_000);
      expect(streams).toMatchObject({ connector: 'noisy', outcome: 'refused', reason: 'UNKNOWN_MAPPING', count: 10 });
      const denied = await waitFor('the session-denied summary', () =>
        worker.proc.audit.find((a) => a.event === 'session-denied' && a.reason === 'NO_CLIENT_CERT' && typeof a.count === 'number'), 2_000);
      expect(denied.count).toBe(3);
    } finally {
      await worker.proc.stop('SIGKILL');
    }
  }, 60_000);

  it('a connector writes the stream summary of a session as it stops', async () => {
    const fake = await fakeWorker(dir, []);
    const first = fake.next();
    const connector = await startConnector(dir, 'dc1-a', fake.url, { allow: ['127.0.0.1:1'] });
    try {
      const s = await first;
      await refusedOpens(s.session, 30);
      await waitFor('30 refusals counted', async () =>
        (await metricValue(connector.adminPort, 'underpass_streams_total', { outcome: 'refused' })) >= 30);
      expect(connector.proc.audit.filter((a) => a.event === 'stream-summary')).toEqual([]);
      s.session.close();
      expect(await connector.proc.stop('SIGTERM')).toBe(0);
      const line = await waitFor('the stream-summary line', () => connector.proc.audit.find((a) => a.event === 'stream-summary'), 2_000);
      expect(line).toMatchObject({ outcome: 'refused', count: 10 });
    } finally {
      await connector.proc.stop('SIGKILL');
      fake.close();
    }
  }, 60_000);
});
