/**
 * The suite runs on the Node the product ships with: `make` puts the release image/node.sh pins
 * first on PATH (and bin/underpass children start with `env node`, so they follow). A run on
 * another Node tests something else than the image carries.
 */
import { describe, expect, it } from '@jest/globals';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const PKG = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { engines: { node: string } };
const PINNED = spawnSync('bash', [path.join(ROOT, 'image/node.sh'), '--version'], { encoding: 'utf8' }).stdout.trim();

describe('the Node the tests run on', () => {
  it("satisfies package.json's engines", () => {
    const min = /^>=(\d+)$/.exec(PKG.engines.node);
    expect(min).not.toBeNull();
    expect(Number(process.versions.node.split('.')[0])).toBeGreaterThanOrEqual(Number(min![1]));
  });

  // Run by hand (not under make), any Node the engines allow will do.
  (process.env.MAKELEVEL ? it : it.skip)('is the pinned release under make, and so is the node bin/underpass finds on PATH', () => {
    expect(process.version).toBe(`v${PINNED}`);
    const child = spawnSync('node', ['--version'], { encoding: 'utf8' });
    expect(child.stdout.trim()).toBe(`v${PINNED}`);
  });
});
