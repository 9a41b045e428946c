/** freePort (harness.ts): the ports the end-to-end tests hand to the processes they start. */
import { describe, expect, it } from '@jest/globals';
import { readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { freePort } from './harness.js';

describe('freePort', () => {
  it('never hands out a port twice, picks none the kernel hands out for port 0, and reserves each for this process', async () => {
    const ephemeralHigh = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[1]);
    const ports = [];
    for (let i = 0; i < 300; i++) ports.push(await freePort());
    expect(new Set(ports).size).toBe(ports.length);
    for (const p of ports) expect(p).toBeGreaterThan(ephemeralHigh);
    const dir = path.join(os.tmpdir(), `underpass-test-ports-${process.getuid?.() ?? 0}`);
    for (const p of ports.slice(0, 10)) expect(readFileSync(path.join(dir, String(p)), 'utf8')).toBe(String(process.pid));
  });
});
