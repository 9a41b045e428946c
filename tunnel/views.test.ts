import { describe, expect, it } from '@jest/globals';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import * as tls from 'node:tls';
import { createSelfSignedCA, issueServingCert, loadSigningCA } from './pki-generic.js';
import { FULL_PIN_RATIO, keepAsView, MAX_PIN_RATIO } from './views.js';

describe('keepAsView (how much memory a kept view may pin)', () => {
  it('keeps whole buffers and large views, copies small views', () => {
    const slab = Buffer.allocUnsafe(65_536);
    expect(keepAsView(Buffer.alloc(10))).toBe(true);
    expect(keepAsView(slab.subarray(0, 16_384 - 26))).toBe(true); // a full TLS record's payload
    expect(keepAsView(slab.subarray(100, 100 + Math.ceil(65_536 / MAX_PIN_RATIO)))).toBe(true);
    expect(keepAsView(slab.subarray(100, 100 + Math.floor(65_536 / MAX_PIN_RATIO) - 1))).toBe(false);
    expect(keepAsView(slab.subarray(0, 64))).toBe(false);
  });

  it('allows 5x only while the session holds at most a quarter of its stream buffer budget, 2x beyond', () => {
    const slab = Buffer.allocUnsafe(65_536);
    const record = slab.subarray(0, 16_384 - 26);
    expect(keepAsView(record, { held: 8 << 20, limit: 32 << 20 })).toBe(true);
    expect(keepAsView(record, { held: (8 << 20) + 1, limit: 32 << 20 })).toBe(false);
    expect(keepAsView(slab.subarray(0, 65_536 / FULL_PIN_RATIO), { held: 30 << 20, limit: 32 << 20 })).toBe(true);
  });

  // What MAX_PIN_RATIO is sized for: on this Node, full TLS records arrive as views a kept one of
  // which must not be copied (a Node that changes how it delivers them shows here).
  it('keeps the full records a TLS socket delivers on this Node as views', async () => {
    const NOW = new Date();
    const caPems = await createSelfSignedCA({ commonName: 'views-test', now: NOW, validityDays: 1 });
    const serving = await issueServingCert(await loadSigningCA(caPems.certPem, caPems.keyPem), { commonName: 'localhost', sans: ['127.0.0.1'], now: NOW, validityDays: 1 });
    const server = tls.createServer({ cert: serving.certPem, key: serving.keyPem }, (s) => s.end(Buffer.alloc(256 * 1024, 7)));
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    try {
      const chunks: Buffer[] = [];
      const client = tls.connect({ host: '127.0.0.1', port: (server.address() as AddressInfo).port, ca: caPems.certPem, servername: '127.0.0.1' });
      client.on('data', (c: Buffer) => chunks.push(c));
      await once(client, 'end');
      client.destroy();
      const full = chunks.filter((c) => c.length === 16_384);
      expect(full.length).toBeGreaterThan(8);
      const copied = full.filter((c) => !keepAsView(c.subarray(26))).map((c) => `${c.length}@${c.byteOffset}/${c.buffer.byteLength}`);
      expect(copied).toEqual([]);
    } finally {
      server.close();
    }
  });
});
