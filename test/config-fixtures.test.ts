/**
 * Every file in test/fixtures/config/valid must load; every file in invalid/
 * must fail with a ConfigError. An invalid file's first line says how:
 *   # expect: <field path> | <substring of the message>
 * where the field path is "-" for errors about the whole file (YAML syntax,
 * empty file). worker-* files load as worker configs, connector-* as connector.
 */
import { describe, it, expect } from '@jest/globals';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ConfigError } from '../tunnel/errors.js';
import { loadWorkerConfig } from '../worker/config.js';
import { loadConnectorConfig } from '../connector/config.js';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures', 'config');

function fixtures(folder: 'valid' | 'invalid'): string[] {
  return readdirSync(path.join(root, folder)).filter((f) => f.endsWith('.yaml')).sort();
}

function load(file: string): Promise<unknown> {
  const name = path.basename(file);
  if (name.startsWith('worker-')) return loadWorkerConfig(file);
  if (name.startsWith('connector-')) return loadConnectorConfig(file);
  throw new Error(`${name}: fixture names start with worker- or connector-`);
}

function expectation(file: string): { field: string | undefined; message: string } {
  const first = readFileSync(file, 'utf8').split('\n')[0]!;
  const match = /^# expect: (\S+) \| (.+)$/.exec(first);
  if (!match) throw new Error(`${path.basename(file)}: first line must be "# expect: <field> | <message>"`);
  return { field: match[1] === '-' ? undefined : match[1], message: match[2]! };
}

describe('config fixtures', () => {
  it('has enough of each kind', () => {
    expect(fixtures('valid').length).toBeGreaterThanOrEqual(6);
    expect(fixtures('invalid').length).toBeGreaterThanOrEqual(20);
  });

  it.each(fixtures('valid'))('valid/%s loads', async (name) => {
    await expect(load(path.join(root, 'valid', name))).resolves.toBeDefined();
  });

  it.each(fixtures('invalid'))('invalid/%s is refused with the expected field and message', async (name) => {
    const file = path.join(root, 'invalid', name);
    const want = expectation(file);
    const err = await load(file).then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigError);
    const configError = err as ConfigError;
    expect({ field: configError.field, file: configError.file }).toEqual({ field: want.field, file });
    expect(configError.message).toContain(want.message);
    expect(configError.message).toContain(name);
  });
});
