/**
 * A connector session ends when the certificate it was authenticated with
 * expires (worker/session-expiry.ts): worker and connector processes, a
 * connector certificate that expires a few seconds after the session opens.
 * The worker closes the session with CERTIFICATE_EXPIRED (audit line, metric),
 * the connector hears why, its reconnect is refused (the TLS layer sees the
 * expired certificate), and a connector with a valid certificate stays.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { X509Certificate } from 'node:crypto';
import { issueConnectorCert, writePemFiles, type CertificateAuthority } from '../../tunnel/pki.js';
import {
  getJson, makePki, metricValue, removeDir, startConnector, startWorker, tempDir, waitFor,
  type ConnectorSetup, type WorkerSetup,
} from './harness.js';

/** Long enough for the connector to start and attach under load, short enough for a test. */
const LIFETIME_MS = 8_000;

let dir: string;
let authority: CertificateAuthority;
let worker: WorkerSetup;
const connectors: ConnectorSetup[] = [];

const attached = async (name: string): Promise<number> =>
  (await getJson<{ connectors: Array<{ name: string }> }>(`http://127.0.0.1:${worker.adminPort}/status`)).connectors.filter((c) => c.name === name).length;

beforeAll(async () => {
  dir = await tempDir('underpass-expiry-');
  const pki = await makePki(dir);
  authority = pki.ca;
  await pki.connector('site-long');
  worker = await startWorker(dir);
});

afterAll(async () => {
  await Promise.all(connectors.map((c) => c.proc.stop()));
  await worker?.proc.stop();
  if (dir) await removeDir(dir);
});

describe('session lifetime bounded by the connector certificate', () => {
  it('closes the session when the certificate expires, with CERTIFICATE_EXPIRED, and keeps a connector whose certificate is valid', async () => {
    const short = await issueConnectorCert(authority, { connector: 'site-short', notAfter: new Date(Date.now() + LIFETIME_MS) });
    await writePemFiles(dir, { 'connector-site-short.crt': short.certPem, 'connector-site-short.key': short.keyPem }, { force: true });
    const notAfter = Date.parse(new X509Certificate(short.certPem).validTo);

    connectors.push(await startConnector(dir, 'site-long', worker.url));
    const s = await startConnector(dir, 'site-short', worker.url);
    connectors.push(s);
    await waitFor('both attached', async () => (await attached('site-short')) === 1 && (await attached('site-long')) === 1, 5_000);
    expect(Date.now()).toBeLessThan(notAfter);

    const closed = await waitFor('the session-closed audit line',
      () => worker.proc.audit.find((a) => a.event === 'session-closed' && a.connector === 'site-short'), LIFETIME_MS + 5_000);
    const at = Date.now();
    process.stderr.write(`[session-expiry] session closed ${at - notAfter} ms after the certificate's notAfter\n`);
    expect(closed.reason).toBe('CERTIFICATE_EXPIRED');
    expect(String(closed.message)).toContain('site-short');
    expect(at).toBeGreaterThanOrEqual(notAfter);
    expect(await metricValue(worker.adminPort, 'underpass_sessions_expired_total')).toBe(1);
    // The connector heard why, then its reconnect is refused: its certificate has expired.
    await waitFor('the connector to hear why', () => s.proc.logs.includes('CERTIFICATE_EXPIRED'), 5_000);
    await waitFor('the reconnect refused', async () => (await getJson<{ workers: Array<{ lastError?: string }> }>(`http://127.0.0.1:${s.adminPort}/status`))
      .workers.every((w) => /expired/i.test(w.lastError ?? '')), 10_000);
    expect(await attached('site-short')).toBe(0);
    expect(await attached('site-long')).toBe(1);
  }, 40_000);
});
