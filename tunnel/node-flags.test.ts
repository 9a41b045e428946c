import { describe, expect, test } from '@jest/globals';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { nodeFlagsOf } from './node-flags.js';

const here = path.dirname(fileURLToPath(import.meta.url));

describe('nodeFlagsOf', () => {
  test('reads the flags bin/underpass runs Node with', () => {
    expect(nodeFlagsOf(path.join(here, '..', 'bin', 'underpass'))).toEqual(['--min-semi-space-size=16', '--max-semi-space-size=16']);
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
