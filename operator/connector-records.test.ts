/**
 * Single use of an enrollment token against the TunnelConnector's optimistic concurrency
 * (operator/connector-records.ts, enroll). The API is a fake here (a unit test): a store with a
 * resourceVersion that refuses a stale write with 409, as the API server does; the real API
 * server path is test/cluster/enrollment.test.ts and the quick start in test/cluster-real.
 *
 * The bug this pins (CI, 2026-12-07): a connector started right after its token was issued got
 * "403 TOKEN_USED: this token is being used by another request at the same time" and exited — the
 * conflict came from the operator's own status write to the same TunnelConnector, not from a
 * second use of the token.
 */
import { describe, expect, it } from '@jest/globals';
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import pino from 'pino';
import { signToken } from '../tunnel/enrollment-token.js';
import { ConnectorRecords, type RecordsDeps } from './connector-records.js';
import type { TunnelConnection, TunnelConnector } from './types.js';

const NS = 'team-a';
const connection = { namespace: NS, name: 'dc1' };

function setup(opts: { interfere?: (reads: number) => boolean } = {}) {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const jti = randomUUID();
  let stored: TunnelConnector = {
    apiVersion: 'underpass.dev/v1alpha1', kind: 'TunnelConnector',
    metadata: { name: 'dc1.site-a', namespace: NS, resourceVersion: '1', uid: 'u1' },
    spec: { connection: 'dc1', connector: 'site-a' },
    status: { enrollment: { requestId: 'r1', tokenSecret: 'dc1.site-a-token', tokenId: jti, expiresAt: new Date(Date.now() + 3_600_000).toISOString() } },
  } as unknown as TunnelConnector;
  let reads = 0;
  let statusWrites = 0;
  const bump = (): void => {
    stored = { ...stored, metadata: { ...stored.metadata, resourceVersion: String(Number(stored.metadata.resourceVersion) + 1) } };
  };
  const custom = {
    getNamespacedCustomObject: async () => {
      reads++;
      const copy = structuredClone(stored);
      // Another writer (the operator's status update) changes the object after we read it.
      if (opts.interfere?.(reads)) bump();
      return copy;
    },
    replaceNamespacedCustomObjectStatus: async ({ body }: { body: TunnelConnector }) => {
      await new Promise((r) => setImmediate(r)); // a round trip: two requests can overlap
      if (body.metadata.resourceVersion !== stored.metadata.resourceVersion) throw Object.assign(new Error('the object has been modified'), { code: 409 });
      statusWrites++;
      stored = structuredClone(body);
      bump();
      return stored;
    },
  };
  const tc = { metadata: { name: 'dc1', namespace: NS, uid: 'tc1' }, spec: {} } as unknown as TunnelConnection;
  const deps = {
    kube: { custom, write: (_verb: string, _what: string, fn: () => Promise<unknown>) => fn() },
    pki: {
      tokenPublicKey: () => publicKey,
      signConnector: async () => ({ certificate: 'CERT', ca: 'CA', serial: '01', notAfter: new Date(Date.now() + 86_400_000) }),
    },
    connectors: { get: () => undefined, list: () => [] },
    connection: () => tc,
    events: { record: async () => undefined },
    logger: pino({ level: 'silent' }),
    now: () => new Date(),
  } as unknown as RecordsDeps;
  const records = new ConnectorRecords(deps);
  const token = signToken(privateKey, { connection, connector: 'site-a', jti, ttlMs: 3_600_000, caHashes: ['a'.repeat(64)] });
  return { records, token, get stored() { return stored; }, get statusWrites() { return statusWrites; }, get reads() { return reads; } };
}

describe('enrollment token single use against concurrent writes', () => {
  it('enrolls when an unrelated write to the TunnelConnector conflicts with the "used" mark (read again, checked again)', async () => {
    const s = setup({ interfere: (reads) => reads === 1 });
    const answer = await s.records.enroll(connection, { token: await s.token, csr: 'CSR' });
    expect(answer.connector).toBe('site-a');
    expect(s.stored.status?.enrollment?.usedTokenId).toBeDefined();
  });

  it('lets exactly one of two simultaneous requests with the same token enroll; the other gets TOKEN_USED', async () => {
    const s = setup();
    const token = await s.token;
    const results = await Promise.allSettled([s.records.enroll(connection, { token, csr: 'CSR' }), s.records.enroll(connection, { token, csr: 'CSR' })]);
    expect(results.map((r) => (r.status === 'fulfilled' ? 'enrolled' : String((r.reason as { code?: string }).code))).sort()).toEqual(['TOKEN_USED', 'enrolled']);
  });

  it('refuses a token used before, without writing', async () => {
    const s = setup();
    const token = await s.token;
    await s.records.enroll(connection, { token, csr: 'CSR' });
    const writes = s.statusWrites;
    await expect(s.records.enroll(connection, { token, csr: 'CSR' })).rejects.toMatchObject({ code: 'TOKEN_USED' });
    expect(s.statusWrites).toBe(writes);
  });

  it('gives up with a retryable ERR_ENROLL_BUSY (the token still unused) when the object changes under every attempt', async () => {
    const s = setup({ interfere: () => true });
    await expect(s.records.enroll(connection, { token: await s.token, csr: 'CSR' })).rejects.toMatchObject({ code: 'ERR_ENROLL_BUSY' });
    expect(s.stored.status?.enrollment?.usedTokenId).toBeUndefined();
    expect(s.reads).toBe(5);
  });
});
