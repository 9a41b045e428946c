/**
 * ensureOperatorTls against a real kube-apiserver (test/env): creates the Secret once,
 * writes nothing when nothing changed, reissues the serving certificate for new names or
 * near expiry while keeping the CA, replaces an unusable CA, and lets racing replicas
 * agree on one Secret.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { X509Certificate } from 'node:crypto';
import { silentLogger } from '../tunnel/log.js';
import { servingSans, normaliseSans } from '../tunnel/pki-generic.js';
import { startTestEnv, TESTENV_START_TIMEOUT_MS, type TestEnv } from '../test/cluster/testenv.js';
import { Kube, loadKubeConfig, type WriteVerb } from './kube.js';
import { ensureOperatorTls, type OperatorTls, type OperatorTlsOptions } from './operator-pki.js';

const NS = 'underpass-system';
const DAY = 86_400_000;
const SANS = ['underpass-operator', 'underpass-operator.underpass-system.svc'];

let env: TestEnv;
let kube: Kube;
const writes: Array<`${WriteVerb} ${string}`> = [];

beforeAll(async () => {
  env = await startTestEnv();
  await env.kubectlOk(['create', 'namespace', NS]);
  kube = new Kube(loadKubeConfig(env.kubeconfig));
  kube.onWrite((verb, resource) => writes.push(`${verb} ${resource}`));
}, TESTENV_START_TIMEOUT_MS);

afterAll(async () => {
  await env?.stop();
}, 60_000);

function ensure(secretName: string, overrides: Partial<OperatorTlsOptions> = {}): Promise<OperatorTls> {
  return ensureOperatorTls({ kube, namespace: NS, secretName, sans: SANS, logger: silentLogger(), ...overrides });
}

async function counted<T>(run: () => Promise<T>): Promise<{ result: T; writes: string[] }> {
  const before = writes.length;
  const result = await run();
  return { result, writes: writes.slice(before) };
}

async function secretData(name: string): Promise<Record<string, string>> {
  const s = await kube.core.readNamespacedSecret({ name, namespace: NS });
  return Object.fromEntries(Object.entries(s.data ?? {}).map(([k, v]) => [k, Buffer.from(v, 'base64').toString()]));
}

describe('ensureOperatorTls', () => {
  let first: OperatorTls;

  it('creates the Secret with a CA and a serving certificate for the names', async () => {
    const { result, writes: w } = await counted(() => ensure('operator-tls'));
    first = result;
    expect(w).toEqual(['create secrets']);
    const data = await secretData('operator-tls');
    expect(Object.keys(data).sort()).toEqual(['ca.crt', 'ca.key', 'tls.crt', 'tls.key']);
    expect({ ca: data['ca.crt'], cert: data['tls.crt'], key: data['tls.key'] }).toEqual({ ca: result.caPem, cert: result.certPem, key: result.keyPem });
    const ca = new X509Certificate(result.caPem);
    const cert = new X509Certificate(result.certPem);
    expect(cert.checkIssued(ca) && cert.verify(ca.publicKey)).toBe(true);
    expect(Date.parse(ca.validTo) - Date.now()).toBeGreaterThan(3649 * DAY);
    expect(servingSans(result.certPem)).toEqual(normaliseSans(SANS));
    expect(result.renewalTime.getTime()).toBe(Date.parse(cert.validTo) - 30 * DAY);
  });

  it('writes nothing when called again with the same names', async () => {
    const { result, writes: w } = await counted(() => ensure('operator-tls'));
    expect(w).toEqual([]);
    expect(result).toEqual(first);
  });

  it('reissues only the serving certificate when the names change', async () => {
    const sans = [...SANS, '10.96.0.20'];
    const { result, writes: w } = await counted(() => ensure('operator-tls', { sans }));
    expect(w).toEqual(['update secrets']);
    expect(result.caPem).toBe(first.caPem);
    expect(result.certPem).not.toBe(first.certPem);
    expect(servingSans(result.certPem)).toEqual(normaliseSans(sans));
    first = result;
  });

  it('renews the serving certificate within 30 days of expiry, keeping the CA', async () => {
    const sans = [...SANS, '10.96.0.20'];
    const later = new Date(Date.now() + 340 * DAY);
    const { result, writes: w } = await counted(() => ensure('operator-tls', { sans, now: () => later }));
    expect(w).toEqual(['update secrets']);
    expect(result.caPem).toBe(first.caPem);
    expect(Date.parse(new X509Certificate(result.certPem).validTo)).toBeGreaterThan(later.getTime() + 364 * DAY);
  });

  it('replaces an unusable CA and its serving certificate, keeping other keys', async () => {
    await env.kubectlOk(['-n', NS, 'patch', 'secret', 'operator-tls', '--type', 'merge',
      '-p', JSON.stringify({ data: { 'ca.key': Buffer.from('garbage').toString('base64'), extra: Buffer.from('kept').toString('base64') } })]);
    const { result, writes: w } = await counted(() => ensure('operator-tls'));
    expect(w).toEqual(['update secrets']);
    expect(result.caPem).not.toBe(first.caPem);
    const data = await secretData('operator-tls');
    expect(data['extra']).toBe('kept');
    expect(data['ca.crt']).toBe(result.caPem);
  });

  it('lets two racing replicas end with the same Secret', async () => {
    const [a, b] = await Promise.all([ensure('raced-tls'), ensure('raced-tls')]);
    expect(a.caPem).toBe(b.caPem);
    expect(a.certPem).toBe(b.certPem);
    expect((await secretData('raced-tls'))['tls.crt']).toBe(a.certPem);
  });

  it('refuses an invalid name without writing', async () => {
    const { result, writes: w } = await counted(() => ensure('bad-tls', { sans: ['not a name'] }).then(() => undefined, (e: unknown) => e));
    expect(w).toEqual([]);
    expect(result).toMatchObject({ code: 'ERR_OPERATOR_TLS', message: expect.stringContaining('not a name') });
  });
});
