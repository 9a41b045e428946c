import { describe, expect, test } from '@jest/globals';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { nodeFlagsOf } from './node-flags.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const BIN = path.join(here, '..', 'bin', 'underpass');

/**
 * What a relaying process does to V8 per GiB carried: a fresh buffer per socket read (Node 24's
 * 64 KiB TLS read slab, or our copy of a read that had to wait), only the last few alive. Prints
 * the garbage collections it caused by kind.
 */
const READ_BUFFER_CHURN = `
import { PerformanceObserver, constants } from 'node:perf_hooks';
const gcs = { major: 0, minor: 0 };
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) {
    if (e.detail.kind === constants.NODE_PERFORMANCE_GC_MAJOR) gcs.major++;
    else if (e.detail.kind === constants.NODE_PERFORMANCE_GC_MINOR) gcs.minor++;
  }
}).observe({ entryTypes: ['gc'] });
const live = new Array(16);
let reads = 0;
await new Promise((resolve) => {
  (function turn() {
    for (let i = 0; i < 64; i++, reads++) live[reads % live.length] = Buffer.allocUnsafeSlow(64 * 1024);
    if (reads * 64 * 1024 >= 2 ** 30) resolve();
    else setImmediate(turn);
  })();
});
await new Promise((resolve) => setTimeout(resolve, 50));
console.log(JSON.stringify(gcs));
`;

describe('nodeFlagsOf', () => {
  test('reads the flags bin/underpass runs Node with', () => {
    expect(nodeFlagsOf(BIN)).toEqual(['--min-semi-space-size=16', '--max-semi-space-size=16', '--scavenger-max-new-space-capacity-mb=8']);
  });

  test('a plain node shebang has no flags; anything else is refused by name', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'node-flags-'));
    try {
      writeFileSync(path.join(dir, 'plain'), '#!/usr/bin/env node\n');
      expect(nodeFlagsOf(path.join(dir, 'plain'))).toEqual([]);
      writeFileSync(path.join(dir, 'bad'), '#!/bin/sh\n');
      expect(() => nodeFlagsOf(path.join(dir, 'bad'))).toThrow(/bad: first line "#!\/bin\/sh" is not/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("bin/underpass's Node flags", () => {
  // Without --scavenger-max-new-space-capacity-mb=8, Node 24 ran 13-14 mark-compacts over this GiB
  // (V8 scavenges for buffers only at twice its default semi-space, 128 MiB, and its 64 MiB
  // external-memory limit starts a full collection first); with it, one — Node 20's behaviour.
  test('a GiB of read buffers is collected by scavenges, not by full mark-compacts', () => {
    const out = execFileSync(process.execPath, [...nodeFlagsOf(BIN), '--input-type=module', '-e', READ_BUFFER_CHURN], { encoding: 'utf8', timeout: 20_000 });
    const gcs = JSON.parse(out) as { major: number; minor: number };
    expect(gcs.major).toBeLessThanOrEqual(2);
    expect(gcs.minor).toBeGreaterThanOrEqual(16);
  });
});
