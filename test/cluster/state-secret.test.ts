/**
 * Replicas of one connector sharing its state Secret (the connector chart's
 * `<fullname>-state`, connector/state-secret.ts), against a real
 * kube-apiserver: a replica that has not renewed yet, saving a new trust
 * bundle, never puts its older certificate over the one another replica
 * renewed; saves that race keep the later pair too; a replica that starts
 * empty restores that pair, key and certificate matching.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { laterPair, StateSecret } from '../../connector/state-secret.js';
import { silentLogger } from '../../tunnel/log.js';
import { createCA, issueConnectorCert, loadCA, writePemFiles, type PemKeyPair } from '../../tunnel/pki.js';
import { removeDir, tempDir } from '../e2e/harness.js';
import { startTestEnv, type TestEnv } from './testenv.js';

const NS = 'peer';
const SECRET = 'site-a-state';
let env: TestEnv;
let dir: string;

const filesIn = (d: string) => ({ cert: path.join(d, 'tls.crt'), key: path.join(d, 'tls.key'), ca: path.join(d, 'ca.crt') });
const replica = (d: string) => new StateSecret({ name: SECRET, namespace: NS, kubeconfig: env.kubeconfig, files: filesIn(d), log: silentLogger() });

async function stored(): Promise<{ cert: string; key: string; ca: string }> {
  const s = JSON.parse(await env.kubectlOk(['get', 'secret', SECRET, '-n', NS, '-o', 'json'])) as { data: Record<string, string> };
  const text = (k: string) => Buffer.from(s.data[k] ?? '', 'base64').toString('utf8');
  return { cert: text('tls.crt'), key: text('tls.key'), ca: text('ca.crt') };
}

async function writeState(d: string, pair: PemKeyPair, ca: string): Promise<void> {
  await writePemFiles(d, { 'tls.crt': pair.certPem, 'tls.key': pair.keyPem, 'ca.crt': ca }, { force: true });
}

let renewed: PemKeyPair;
let older: PemKeyPair;
let caOld: string;
let bundle: string;

beforeAll(async () => {
  env = await startTestEnv();
  await env.kubectlOk(['create', 'namespace', NS]);
  await env.kubectlOk(['create', 'secret', 'generic', SECRET, '-n', NS]); // the chart creates it empty
  dir = await tempDir('underpass-state-secret-');
  const caPems = await createCA({ connection: { namespace: 'team-a', name: 'dc1' } });
  const nextCa = await createCA({ connection: { namespace: 'team-a', name: 'dc1' } });
  const ca = await loadCA(caPems.certPem, caPems.keyPem);
  caOld = caPems.certPem;
  bundle = caPems.certPem + nextCa.certPem;
  older = await issueConnectorCert(ca, { connector: 'site-a', validityHours: 24 });
  renewed = await issueConnectorCert(ca, { connector: 'site-a', validityHours: 720 });
}, 120_000);

afterAll(async () => {
  await env?.stop();
  if (dir) await removeDir(dir);
}, 60_000);

describe('a state Secret shared by replicas', () => {
  it.each([
    ['nothing stored: ours', undefined, 'renewed', 'ours'],
    ['a stored certificate that expires later: the stored one', 'renewed', 'older', 'stored'],
    ['a stored certificate that expires earlier: ours', 'older', 'renewed', 'ours'],
    ['the same certificate: ours', 'renewed', 'renewed', 'ours'],
    ['something unreadable stored: ours', 'garbage', 'older', 'ours'],
  ] as const)('laterPair: %s', (_name, s, o, expected) => {
    const pem = (k: string | undefined) => (k === 'renewed' ? renewed.certPem : k === 'older' ? older.certPem : k);
    expect(laterPair(pem(s), pem(o)!)).toBe(expected);
  });

  it('keeps the renewed pair when a replica that did not renew saves a new trust bundle, and a new replica restores it', async () => {
    const a = path.join(dir, 'a');
    const b = path.join(dir, 'b');
    await writeState(a, renewed, caOld);
    await writeState(b, older, bundle);
    await replica(a).save(); // replica a renewed
    await replica(b).save(); // replica b heard a new trust bundle, its certificate is the older one
    const s = await stored();
    expect(s.cert).toBe(renewed.certPem);
    expect(s.key).toBe(renewed.keyPem);
    expect(s.ca).toBe(bundle);

    const c = path.join(dir, 'c');
    expect(await replica(c).restore()).toBe(true);
    const cert = new X509Certificate(await readFile(filesIn(c).cert));
    expect(cert.serialNumber).toBe(new X509Certificate(renewed.certPem).serialNumber);
    // The restored key is the one of that certificate (a mixed pair would not start a session).
    expect(cert.checkPrivateKey(createPrivateKey(await readFile(filesIn(c).key)))).toBe(true);
  }, 30_000);

  it('keeps the later pair when replicas save at the same time (the resourceVersion orders them)', async () => {
    const a = path.join(dir, 'a');
    const b = path.join(dir, 'b');
    for (let round = 0; round < 5; round++) {
      await Promise.all([replica(b).save(), replica(a).save(), replica(b).save()]);
      expect((await stored()).cert).toBe(renewed.certPem);
    }
  }, 60_000);
});
