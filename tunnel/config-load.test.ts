import { describe, it, expect, beforeAll, afterAll } from '@jest/globals';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { z } from 'zod';
import { ConfigError } from './errors.js';
import {
  checkReadableFiles, durationSchema, formatPath, keepaliveSchema, loadYamlFile, parseConfig, portSchema,
  resolveFrom, strictObject, zodToConfigError,
} from './config-load.js';

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'underpass-config-load-'));
});
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

function write(name: string, text: string): string {
  const file = path.join(dir, name);
  writeFileSync(file, text);
  return file;
}

function thrown(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return err as ConfigError;
  }
  throw new Error('expected a ConfigError');
}

describe('loadYamlFile', () => {
  it('parses a YAML mapping', () => {
    expect(loadYamlFile(write('ok.yaml', 'a: 1\nb: [x, "y"]\nhost: 127.0.0.1\n'))).toEqual({ a: 1, b: ['x', 'y'], host: '127.0.0.1' });
  });

  it('gives null for a file with only comments', () => {
    expect(loadYamlFile(write('empty.yaml', '# nothing\n'))).toBeNull();
  });

  it.each([
    ['a syntax error with its line', 'a: 1\nb: [1, 2\nc: 3\n', 'invalid YAML at line 3, column 1'],
    ['a duplicate key', 'a: 1\na: 2\n', 'Map keys must be unique'],
    ['several documents', 'a: 1\n---\nb: 2\n', 'invalid YAML'],
  ])('refuses %s', (_name, text, message) => {
    const file = write('bad.yaml', text);
    const err = thrown(() => loadYamlFile(file));
    expect(err.file).toBe(file);
    expect(err.field).toBeUndefined();
    expect(err.message).toContain(message);
  });

  // Found by fuzzing (test/fuzz/targets/config.ts): the yaml library throws a plain ReferenceError
  // from toJS() for these, which escaped as a crash instead of a ConfigError naming the file.
  it.each([
    ['an alias without an anchor', 'listen: *typo\n', 'invalid YAML at line 1, column 9: Unresolved alias'],
    ['an alias bomb (exponential expansion)', `a: &a [x, x, x, x, x, x, x, x, x]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
`, 'invalid YAML: Excessive alias count'],
  ])('refuses %s with a ConfigError, not a crash', (_name, text, message) => {
    const file = write('alias.yaml', text);
    const err = thrown(() => loadYamlFile(file));
    expect(err.file).toBe(file);
    expect(err.message).toContain(message);
  });

  it('names a missing file', () => {
    const file = path.join(dir, 'missing.yaml');
    expect(thrown(() => loadYamlFile(file)).message).toBe(`${file}: cannot read the config file: no such file`);
  });
});

describe('zodToConfigError', () => {
  const schema = strictObject({
    port: portSchema,
    name: z.string().optional(),
    tls: strictObject({ cert: z.string(), key: z.string() }).optional(),
    list: z.array(strictObject({ side: z.enum(['Connector', 'Cluster']) })).optional(),
    timeout: durationSchema.optional(),
    keepalive: keepaliveSchema,
  });

  it.each([
    ['a missing field', {}, 'port', 'is required'],
    ['a port out of range', { port: 70000 }, 'port', 'must be between 1 and 65535'],
    ['a fractional port', { port: 1.5 }, 'port', 'must be a whole number between 1 and 65535'],
    ['a wrong type', { port: 1, name: 5 }, 'name', 'must be a string (got number 5)'],
    ['an object where a string belongs', { port: 1, name: { a: 1 } }, 'name', 'must be a string (got an object)'],
    ['an unknown top-level field', { port: 1, nmae: 'x' }, 'nmae', 'unknown field (expected one of: port, name, tls, list, timeout, keepalive)'],
    ['an unknown field that explains a missing one', { port: 1, tls: { crt: 'a', key: 'b' } }, 'tls.crt', 'unknown field (expected one of: cert, key)'],
    ['a bad enum value in a list', { port: 1, list: [{ side: 'Connector' }, { side: 'x' }] }, 'list[1].side', 'must be one of: Connector, Cluster'],
    ['a bad duration', { port: 1, timeout: true }, 'timeout', 'must be a duration like "30s" or "500ms", or a number of milliseconds'],
    ['a timeout not above the interval', { port: 1, keepalive: { interval: '10s', timeout: '5s' } }, 'keepalive.timeout', 'must be greater than interval (10s)'],
    // Found by fuzzing: an empty key gave an error that named no field at all.
    ['an unknown field with an empty name', { port: 1, '': 'x' }, '[""]', 'unknown field (expected one of: port, name, tls, list, timeout, keepalive)'],
    ['an unknown nested field with a space in its name', { port: 1, tls: { cert: 'a', key: 'b', 'c d': 1 } }, 'tls["c d"]', 'unknown field (expected one of: cert, key)'],
  ])('describes %s', (_name, raw, field, message) => {
    const result = schema.safeParse(raw, { reportInput: true });
    expect(result.success).toBe(false);
    const err = zodToConfigError('/etc/underpass/x.yaml', result.error!);
    expect(err.field).toBe(field);
    expect(err.problem).toBe(message);
    expect(err.message).toBe(`/etc/underpass/x.yaml: field "${field}": ${message}`);
  });

  it('says "is required" without reportInput too', () => {
    const result = schema.safeParse({});
    expect(zodToConfigError('f', result.error!).problem).toBe('is required');
  });

  it('leaves the field out for the whole document', () => {
    const err = zodToConfigError('f', schema.safeParse([]).error!);
    expect(err.field).toBeUndefined();
    expect(err.message).toBe('f: must be an object (a YAML mapping of fields)');
  });

  it.each([
    [['mappings', 0, 'target', 'port'], 'mappings[0].target.port'],
    [['worker', 2], 'worker[2]'],
    [[], ''],
    [[0, 'a'], '[0].a'],
    [[''], '[""]'],
    [['tls', 'a.b'], 'tls["a.b"]'],
    [['a', 'b-c_d'], 'a.b-c_d'],
  ])('formats the path %j as %s', (segments, want) => {
    expect(formatPath(segments)).toBe(want);
  });
});

describe('parseConfig', () => {
  const schema = strictObject({ a: z.number() });

  it('refuses an empty file', () => {
    expect(thrown(() => parseConfig(schema, null, 'f.yaml')).message).toBe('f.yaml: the file is empty');
  });

  it('returns the parsed value', () => {
    expect(parseConfig(schema, { a: 1 }, 'f.yaml')).toEqual({ a: 1 });
  });
});

describe('keepaliveSchema', () => {
  it.each([
    ['nothing', undefined, { intervalMs: 5000, timeoutMs: 10000 }],
    ['an empty object', {}, { intervalMs: 5000, timeoutMs: 10000 }],
    ['only an interval: timeout is twice it', { interval: '15s' }, { intervalMs: 15000, timeoutMs: 30000 }],
    ['only a timeout', { timeout: '1m' }, { intervalMs: 5000, timeoutMs: 60000 }],
    ['both', { interval: 1000, timeout: '2.5s' }, { intervalMs: 1000, timeoutMs: 2500 }],
  ])('reads %s', (_name, raw, want) => {
    expect(keepaliveSchema.parse(raw)).toEqual(want);
  });
});

describe('files', () => {
  it('resolves relative paths against the config file folder', () => {
    expect(resolveFrom('/etc/underpass/worker.yaml', 'tls/ca.crt')).toBe('/etc/underpass/tls/ca.crt');
    expect(resolveFrom('/etc/underpass/worker.yaml', '/abs/ca.crt')).toBe('/abs/ca.crt');
  });

  it('names the field of a missing or non-regular file', async () => {
    const ok = write('ok.pem', 'x');
    await expect(checkReadableFiles('c.yaml', [['tls.cert', ok]])).resolves.toBeUndefined();
    await expect(checkReadableFiles('c.yaml', [['tls.cert', ok], ['tls.key', path.join(dir, 'nope')]]))
      .rejects.toMatchObject({ field: 'tls.key', file: 'c.yaml', problem: expect.stringContaining('file does not exist') });
    await expect(checkReadableFiles('c.yaml', [['tls.ca', dir]]))
      .rejects.toMatchObject({ field: 'tls.ca', problem: expect.stringContaining('is not a regular file') });
  });
});
