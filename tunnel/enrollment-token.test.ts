import { describe, expect, it } from '@jest/globals';
import { createPublicKey, generateKeyPairSync } from 'node:crypto';
import { readToken, signToken, verifyToken } from './enrollment-token.js';

const key = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
const other = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
const connection = { namespace: 'team-a', name: 'dc1' };
const base = { connection, connector: 'site-a', jti: 'j1', caHashes: ['a'.repeat(64)], ttlMs: 3_600_000 };
const NOW = new Date('2026-12-06T12:00:00Z');

describe('enrollment tokens', () => {
  it('round-trips its claims', async () => {
    const t = await signToken(key, { ...base, now: NOW });
    const c = await verifyToken(t, createPublicKey(key), connection, NOW);
    expect(c).toEqual({ connection, connector: 'site-a', jti: 'j1', caHashes: base.caHashes, expiresAt: new Date(NOW.getTime() + 3_600_000) });
    expect(readToken(t).connector).toBe('site-a');
  });

  it.each([
    ['signed by another key', async () => signToken(other, { ...base, now: NOW }), connection, 'TOKEN_INVALID'],
    ['expired', async () => signToken(key, { ...base, ttlMs: 60_000, now: new Date(NOW.getTime() - 120_000) }), connection, 'TOKEN_EXPIRED'],
    ['for the same name in another namespace', async () => signToken(key, { ...base, now: NOW }), { namespace: 'team-b', name: 'dc1' }, 'TOKEN_WRONG_CONNECTION'],
    ['with its payload edited', async () => {
      const [h, p, s] = (await signToken(key, { ...base, now: NOW })).split('.');
      const payload = JSON.parse(Buffer.from(p!, 'base64url').toString());
      payload.sub = 'underpass://team-a/dc1/connector/admin';
      return `${h}.${Buffer.from(JSON.stringify(payload)).toString('base64url')}.${s}`;
    }, connection, 'TOKEN_INVALID'],
    ['not a JWT', async () => 'garbage', connection, 'TOKEN_MALFORMED'],
    ['too long', async () => 'x'.repeat(5000), connection, 'TOKEN_MALFORMED'],
  ])('refuses a token %s', async (_name, make, conn, code) => {
    const err = await verifyToken(await make(), createPublicKey(key), conn, NOW).then(() => undefined, (e: { code: string }) => e);
    expect(err?.code).toBe(code);
  });
});
