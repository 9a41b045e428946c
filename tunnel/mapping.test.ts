import { describe, it, expect } from '@jest/globals';
import { ConfigError } from './errors.js';
import { findMappingProblem, mappingSchema, mappingsEqual, validateMappings, type Mapping } from './mapping.js';

function mapping(overrides: Partial<Mapping> & { name: string }): Mapping {
  return {
    protocol: 'TCP',
    target: { side: 'Connector', host: '127.0.0.1', port: 5432 },
    listen: { port: 15432, address: '0.0.0.0' },
    allowedSources: [],
    ...overrides,
  };
}

describe('mappingSchema', () => {
  it('applies defaults', () => {
    expect(mappingSchema.parse({ name: 'db', target: { side: 'Connector', host: 'DB.Internal', port: 5432 }, listen: { port: 15432 } }))
      .toEqual({
        name: 'db', protocol: 'TCP', target: { side: 'Connector', host: 'db.internal', port: 5432 },
        listen: { port: 15432, address: '0.0.0.0' }, allowedSources: [],
      });
  });

  it('normalises addresses and sources', () => {
    const m = mappingSchema.parse({
      name: 'db', target: { side: 'Cluster', host: 'FD00::0:1', port: 1 }, listen: { port: 2, address: '0:0::1' },
      allowedSources: ['127.0.0.1', 'FD00::/8', '127.0.0.1/32'],
    });
    expect(m.target.host).toBe('fd00::1');
    expect(m.listen.address).toBe('::1');
    expect(m.allowedSources).toEqual(['127.0.0.1/32', 'fd00::/8']);
  });

  it('parses its own output to the same mapping (the worker sends parsed mappings to connectors)', () => {
    const once = mappingSchema.parse({
      name: 'db', target: { side: 'Connector', host: 'FD00::1', port: 5432 }, listen: { port: 15432, address: '::' },
      allowedSources: ['10.0.0.0/8', '::ffff:10.0.0.1'],
    });
    expect(mappingSchema.parse(JSON.parse(JSON.stringify(once)))).toEqual(once);
  });

  it.each([
    ['UDP', { protocol: 'UDP' }, ['protocol'], 'UDP is not supported yet'],
    ['another protocol', { protocol: 'SCTP' }, ['protocol'], 'must be "TCP"'],
    ['an uppercase name', { name: 'DB' }, ['name'], 'DNS-1123 label'],
    ['a 64-character name', { name: 'a'.repeat(64) }, ['name'], 'DNS-1123 label'],
    ['an unknown field', { weight: 3 }, [], 'unknown field (expected one of: name, protocol, target, listen, allowedSources)'],
    ['an unknown side', { target: { side: 'Local', host: 'x', port: 1 } }, ['target', 'side'], ''],
    ['a bad CIDR', { allowedSources: ['10.0.0.0/99'] }, ['allowedSources', 0], 'invalid prefix length'],
    ['a listener on a name', { listen: { port: 1, address: 'localhost' } }, ['listen', 'address'], 'is not an IP address'],
  ])('refuses %s', (_name, overrides, path, message) => {
    const raw = { name: 'db', target: { side: 'Connector', host: 'x', port: 1 }, listen: { port: 2 }, ...overrides };
    const result = mappingSchema.safeParse(raw);
    expect(result.success).toBe(false);
    expect(result.error!.issues[0]!.path).toEqual(path);
    expect(result.error!.issues[0]!.message).toContain(message);
  });
});

describe('validateMappings', () => {
  it.each<[string, Mapping[]]>([
    ['no mappings', []],
    ['distinct ports', [mapping({ name: 'a' }), mapping({ name: 'b', listen: { port: 2, address: '0.0.0.0' } })]],
    ['the same port on different addresses', [
      mapping({ name: 'a', listen: { port: 1, address: '127.0.0.1' } }),
      mapping({ name: 'b', listen: { port: 1, address: '127.0.0.2' } }),
    ]],
    ['the same port on different sides', [
      mapping({ name: 'a' }),
      mapping({ name: 'b', target: { side: 'Cluster', host: 'x', port: 1 } }),
    ]],
  ])('accepts %s', (_name, list) => {
    expect(() => validateMappings(list)).not.toThrow();
  });

  it.each<[string, Mapping[], string, string]>([
    ['a duplicate name', [mapping({ name: 'a' }), mapping({ name: 'b', listen: { port: 2, address: '0.0.0.0' } }), mapping({ name: 'a', listen: { port: 3, address: '0.0.0.0' } })],
      'mappings[2].name', 'duplicate mapping name "a" (also mappings[0])'],
    ['the same address and port', [mapping({ name: 'a' }), mapping({ name: 'b' })],
      'mappings[1].listen.port', 'conflicts with mapping "a" (mappings[0])'],
    ['0.0.0.0 after a specific address', [
      mapping({ name: 'a', listen: { port: 1, address: '127.0.0.1' } }),
      mapping({ name: 'b', listen: { port: 2, address: '127.0.0.1' } }),
      mapping({ name: 'c', listen: { port: 1, address: '0.0.0.0' } }),
    ], 'mappings[2].listen.port', 'listener 0.0.0.0:1 conflicts with mapping "a"'],
    ['a specific address after ::', [
      mapping({ name: 'a', listen: { port: 1, address: '::' } }),
      mapping({ name: 'b', listen: { port: 1, address: '10.0.0.1' } }),
    ], 'mappings[1].listen.port', 'on the worker'],
    ['two Cluster-side listeners', [
      mapping({ name: 'a', target: { side: 'Cluster', host: 'x', port: 1 } }),
      mapping({ name: 'b', target: { side: 'Cluster', host: 'y', port: 2 } }),
    ], 'mappings[1].listen.port', 'on the connector'],
  ])('refuses %s', (_name, list, field, message) => {
    let error: unknown;
    try {
      validateMappings(list);
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).field).toBe(field);
    expect((error as ConfigError).message).toContain(message);
  });

  it('reports the problem as a path relative to the list', () => {
    expect(findMappingProblem([mapping({ name: 'a' }), mapping({ name: 'a' })])?.path).toEqual([1, 'name']);
  });
});

describe('mappingsEqual', () => {
  const base = mapping({ name: 'db', allowedSources: ['10.0.0.0/8', '127.0.0.0/8'] });

  it.each<[string, Mapping, boolean]>([
    ['a copy', structuredClone(base), true],
    ['sources in another order', { ...base, allowedSources: ['127.0.0.0/8', '10.0.0.0/8'] }, true],
    ['another name', { ...base, name: 'db2' }, false],
    ['another side', { ...base, target: { ...base.target, side: 'Cluster' } }, false],
    ['another target host', { ...base, target: { ...base.target, host: 'db' } }, false],
    ['another target port', { ...base, target: { ...base.target, port: 1 } }, false],
    ['another listen port', { ...base, listen: { ...base.listen, port: 1 } }, false],
    ['another listen address', { ...base, listen: { ...base.listen, address: '127.0.0.1' } }, false],
    ['fewer sources', { ...base, allowedSources: ['10.0.0.0/8'] }, false],
    ['no sources', { ...base, allowedSources: [] }, false],
  ])('compares with %s → %s', (_name, other, want) => {
    expect(mappingsEqual(base, other)).toBe(want);
    expect(mappingsEqual(other, base)).toBe(want);
  });
});
