import { describe, expect, it } from '@jest/globals';
import { readFileSync } from 'node:fs';
import { runCli } from './testing.js';

const PACKAGE_VERSION = (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version;

describe('underpass --version', () => {
  it.each([['--version'], ['-V']])('%s prints the package.json version and exits 0', async (flag) => {
    const { code, stdout, stderr } = await runCli([flag]);
    expect({ code, stdout, stderr }).toEqual({ code: 0, stdout: `${PACKAGE_VERSION}\n`, stderr: '' });
  });

  it('is listed in the help', async () => {
    const { code, stdout } = await runCli(['--help']);
    expect(code).toBe(0);
    expect(stdout).toMatch(/-V, --version +print the version/);
  });
});
