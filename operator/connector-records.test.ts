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

/**
 * `issuing`: the TunnelConnector as the operator leaves it between writing a new token's Secret and
 * recording its id — spec.enrollment.requestId r2 not answered yet, status still naming r1's token.
 */
function setup(opts: { interfere?: (reads: number) => boolean; issuing?: boolean } = {}) {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const jti = randomUUID();
  let stored: TunnelConnector = {
    apiVersion: 'underpass.dev/v1alpha1', kind: 'TunnelConnector',
    metadata: { name: 'dc1.site-a', namespace: NS, resourceVersion: '1', uid: 'u1' },
    spec: { connection: 'dc1', connector: 'site-a', enrollment: { requestId: opts.issuing ? 'r2' : 'r1' } },
    status: { enrollment: { requestId: 'r1', tokenSecret: 'dc1.site-a-token', tokenId: opts.issuing ? randomUUID() : jti, expiresAt: new Date(Date.now() + 3_600_000).toISOString() } },
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
  /** The operator's second write of issuance: the new token's id recorded for request r2. */
  const recordIssued = (): void => {
    stored = structuredClone(stored);
    stored.status!.enrollment = { ...stored.status!.enrollment, requestId: 'r2', tokenId: jti };
    bump();
  };
  return { records, token, recordIssued, get stored() { return stored; }, get statusWrites() { return statusWrites; }, get reads() { return reads; } };
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

describe('enrollment while the token is still being issued', () => {
  it('waits for the token id to be recorded instead of refusing it as unknown (the connector read the Secret first)', async () => {
    const s = setup({ issuing: true });
    const token = await s.token;
    setTimeout(() => s.recordIssued(), 300);
    const answer = await s.records.enroll(connection, { token, csr: 'CSR' });
    expect(answer.connector).toBe('site-a');
    expect(s.stored.status?.enrollment?.usedTokenId).toBeDefined();
  });

  it('answers the retryable ERR_ENROLL_BUSY, not the final TOKEN_UNKNOWN, when the issuance does not finish', async () => {
    const s = setup({ issuing: true });
    const started = Date.now();
    await expect(s.records.enroll(connection, { token: await s.token, csr: 'CSR' })).rejects.toMatchObject({ code: 'ERR_ENROLL_BUSY' });
    expect(Date.now() - started).toBeGreaterThanOrEqual(1_900);
    expect(s.stored.status?.enrollment?.usedTokenId).toBeUndefined();
  });

  it('still refuses at once a token that a later issuance replaced (the request answered)', async () => {
    const s = setup({ issuing: true });
    const old = await s.token;
    s.recordIssued();
    // Issue r3 and finish it: the token of r2 is replaced for good.
    const e = s.stored.status!.enrollment!;
    s.stored.spec.enrollment = { requestId: 'r3' };
    s.stored.status!.enrollment = { ...e, requestId: 'r3', tokenId: randomUUID() };
    const started = Date.now();
    await expect(s.records.enroll(connection, { token: old, csr: 'CSR' })).rejects.toMatchObject({ code: 'TOKEN_UNKNOWN' });
    expect(Date.now() - started).toBeLessThan(500);
  });
});
