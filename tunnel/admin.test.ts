/**
 * The admin endpoint answers probes and scrapes from anywhere it listens, and
 * /status (peers, addresses, host names, targets) to loopback clients only.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import os from 'node:os';
import { Registry } from 'prom-client';
import { AdminServer, isLoopback } from './admin.js';
import { silentLogger } from './log.js';

describe('isLoopback', () => {
  it.each<[string, string | undefined, boolean]>([
    ['IPv4 loopback', '127.0.0.1', true],
    ['the rest of 127/8', '127.1.2.3', true],
    ['IPv6 loopback', '::1', true],
    ['IPv4-mapped loopback (a dual-stack listener)', '::ffff:127.0.0.1', true],
    ['a pod address', '10.213.0.17', false],
    ['IPv4-mapped pod address', '::ffff:10.213.0.17', false],
    ['the unspecified address', '0.0.0.0', false],
    ['a link-local address', 'fe80::1', false],
    ['a name that looks like it', '127.example.com', false],
    ['no address (a closed socket)', undefined, false],
  ])('%s (%s) → %s', (_name, address, want) => {
    expect(isLoopback(address)).toBe(want);
  });
});

/** A non-loopback IPv4 address of this host, if it has one: a client there is not on loopback. */
const external = Object.values(os.networkInterfaces()).flat().find((i) => i && i.family === 'IPv4' && !i.internal)?.address;

describe('AdminServer', () => {
  const admin = new AdminServer({ registry: new Registry(), notReadyReason: () => undefined, status: () => ({ secret: 'peer addresses' }) }, silentLogger());
  let port = 0;
  beforeAll(async () => {
    port = (await admin.listen({ host: '0.0.0.0', port: 0 })).port;
  });
  afterAll(() => admin.close());

  const get = async (host: string, path: string): Promise<{ status: number; body: string }> => {
    const res = await fetch(`http://${host}:${port}${path}`, { signal: AbortSignal.timeout(5_000) });
    return { status: res.status, body: await res.text() };
  };

  it('serves /status to a loopback client', async () => {
    const r = await get('127.0.0.1', '/status');
    expect(r.status).toBe(200);
    expect(JSON.parse(r.body)).toEqual({ secret: 'peer addresses' });
  });

  (external ? it : it.skip)(`refuses /status to a client that is not on loopback (${external ?? 'this host has no other address'}), and still answers /healthz, /readyz and /metrics there`, async () => {
    const r = await get(external!, '/status');
    expect(r.status).toBe(403);
    expect(r.body).toMatch(/served to loopback clients only \(kubectl port-forward/);
    expect(r.body).not.toContain('peer addresses');
    for (const path of ['/healthz', '/readyz', '/metrics']) expect((await get(external!, path)).status).toBe(200);
  });
});
