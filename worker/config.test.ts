import { describe, it, expect } from '@jest/globals';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ConfigError } from '../tunnel/errors.js';
import { DEFAULT_LIMITS } from '../tunnel/limits.js';
import type { Mapping } from '../tunnel/mapping.js';
import { findWorkerMappingProblem, loadWorkerConfig, parseConnectionId, parseWorkerConfig } from './config.js';

const fixtures = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'test', 'fixtures', 'config');
const FILE = '/etc/underpass/worker.yaml';
const minimal = { connection: 'team-a/dc1', listen: '127.0.0.1:8443', tls: { cert: 'worker.crt', key: 'worker.key', ca: 'ca.crt' } };

function refusal(raw: unknown): ConfigError {
  try {
    parseWorkerConfig(raw, FILE);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return err as ConfigError;
  }
  throw new Error('expected a ConfigError');
}

describe('parseWorkerConfig', () => {
  it('fills every default', () => {
    expect(parseWorkerConfig(minimal, FILE)).toEqual({
      file: FILE,
      connection: { namespace: 'team-a', name: 'dc1' },
      instance: os.hostname(),
      listen: { host: '127.0.0.1', port: 8443 },
      tls: { cert: '/etc/underpass/worker.crt', key: '/etc/underpass/worker.key', ca: '/etc/underpass/ca.crt' },
      mappings: [],
      keepalive: { intervalMs: 5000, timeoutMs: 10000 },
      drainDelayMs: 0,
      drainTimeoutMs: 30000,
      log: { level: 'info' },
      limits: DEFAULT_LIMITS,
      // The file is the only source of mappings: its author owns the host, loopback included.
      clusterTargets: { loopback: true, refuse: [] },
    });
  });

  it('reads revoked serials in one spelling (uppercase, no leading zeros), as the admission list compares them', () => {
    const config = parseWorkerConfig({ ...minimal, revoked: { serials: ['0b7e', '5A0C'] } }, FILE);
    expect(config.revoked).toEqual({ serials: ['B7E', '5A0C'], connectors: [] });
  });

  it('reads every optional field', () => {
    const config = parseWorkerConfig({
      ...minimal,
      instance: 'worker-0',
      admin: '[::1]:9090',
      keepalive: { interval: '1s', timeout: '3s' },
      drainDelay: '5s',
      drainTimeout: '1m',
      log: { level: 'trace' },
      audit: { file: 'audit/audit.jsonl' },
      tls: { cert: '/pki/w.crt', key: '/pki/w.key', ca: '../ca.crt' },
      mappings: [{ name: 'db', target: { side: 'Connector', host: 'db.internal', port: 5432 }, listen: { port: 15432 } }],
    }, FILE);
    expect(config).toMatchObject({
      instance: 'worker-0',
      admin: { host: '::1', port: 9090 },
      keepalive: { intervalMs: 1000, timeoutMs: 3000 },
      drainDelayMs: 5000,
      drainTimeoutMs: 60000,
      log: { level: 'trace' },
      audit: { file: '/etc/underpass/audit/audit.jsonl' },
      tls: { cert: '/pki/w.crt', key: '/pki/w.key', ca: '/etc/ca.crt' },
    });
    expect(config.mappings).toHaveLength(1);
    expect(config.mappings[0]!.listen.address).toBe('0.0.0.0');
  });

  it.each([
    ['an unknown field', { ...minimal, mapping: [] }, 'mapping', 'unknown field'],
    ['a missing listen', { connection: 'a/b', tls: minimal.tls }, 'listen', 'is required'],
    ['a bad instance', { ...minimal, instance: 'has space' }, 'instance', 'must be 1 to 253'],
    ['an admin address on the tunnel port', { ...minimal, admin: '0.0.0.0:8443' }, 'admin', 'conflicts with listen'],
    ['an admin address on another port', { ...minimal, admin: '127.0.0.1:8443' }, 'admin', 'conflicts with listen'],
    ['a mapping listener on the admin port', {
      ...minimal, admin: '127.0.0.1:9090',
      mappings: [{ name: 'db', target: { side: 'Connector', host: 'x', port: 1 }, listen: { port: 9090, address: '127.0.0.1' } }],
    }, 'mappings[0].listen.port', "conflicts with the worker's admin address"],
  ])('refuses %s', (_name, raw, field, message) => {
    const err = refusal(raw);
    expect(err.field).toBe(field);
    expect(err.message).toContain(message);
    expect(err.file).toBe(FILE);
  });

  it('lets a Cluster-side listener use the worker port: it listens on the connector', () => {
    const raw = { ...minimal, mappings: [{ name: 'api', target: { side: 'Cluster', host: 'x', port: 1 }, listen: { port: 8443 } }] };
    expect(() => parseWorkerConfig(raw, FILE)).not.toThrow();
  });

  it('refuses an empty document', () => {
    expect(refusal(undefined).message).toBe(`${FILE}: the file is empty`);
  });
});

describe('the operator section', () => {
  const operator = { url: 'https://underpass-operator.underpass-system.svc:9443', ca: 'operator-ca.crt' };

  it('resolves the CA next to the file and defaults the interval to 2s', () => {
    const config = parseWorkerConfig({ ...minimal, operator }, FILE);
    expect(config.operator).toEqual({ url: new URL(operator.url), ca: '/etc/underpass/operator-ca.crt', intervalMs: 2000 });
  });

  it('refuses loopback Cluster-side targets by default: tenants write the mappings', () => {
    expect(parseWorkerConfig({ ...minimal, operator }, FILE).clusterTargets).toEqual({ loopback: false, refuse: [] });
    expect(parseWorkerConfig({ ...minimal, operator, clusterTargets: { loopback: true } }, FILE).clusterTargets.loopback).toBe(true);
  });

  it('reads an interval', () => {
    expect(parseWorkerConfig({ ...minimal, operator: { ...operator, interval: '500ms' } }, FILE).operator?.intervalMs).toBe(500);
  });

  it.each([
    ['plain http', { ...operator, url: 'http://op:9443' }, 'operator.url', 'must be an https:// URL'],
    ['a wss URL', { ...operator, url: 'wss://op:9443' }, 'operator.url', 'must be an https:// URL'],
    ['a query', { ...operator, url: 'https://op:9443/?x=1' }, 'operator.url', 'must not have a query'],
    ['not a URL', { ...operator, url: 'op:9443' }, 'operator.url', 'must be an https:// URL'],
    ['an empty ca', { ...operator, ca: '' }, 'operator.ca', 'must not be empty'],
    ['a zero interval', { ...operator, interval: '0' }, 'operator.interval', 'must be at least 100ms'],
  ])('refuses %s', (_name, section, field, message) => {
    const err = refusal({ ...minimal, operator: section });
    expect(err.field).toBe(field);
    expect(err.message).toContain(message);
  });

  it('refuses credentials in the URL without repeating them', () => {
    const err = refusal({ ...minimal, operator: { ...operator, url: 'https://admin:hunter2@op:9443' } });
    expect(err.field).toBe('operator.url');
    expect(err.message).not.toContain('hunter2');
  });
});

describe('findWorkerMappingProblem', () => {
  const worker = { listen: { host: '0.0.0.0', port: 8443 }, admin: { host: '127.0.0.1', port: 9090 } };
  const m = (name: string, side: 'Connector' | 'Cluster', port: number): Mapping => ({
    name, protocol: 'TCP', target: { side, host: 'x', port: 1 }, listen: { port, address: '0.0.0.0' }, allowedSources: [],
  });

  it.each([
    ['a valid set', [m('a', 'Connector', 15432), m('b', 'Cluster', 8443)], undefined],
    ['a duplicate name', [m('a', 'Connector', 1), m('a', 'Cluster', 2)], 'duplicate mapping name'],
    ['a listener on the tunnel port', [m('a', 'Connector', 8443)], "conflicts with the worker's listen address"],
    ['a listener on the admin port', [m('a', 'Connector', 9090)], "conflicts with the worker's admin address"],
  ])('judges %s', (_name, mappings, problem) => {
    const found = findWorkerMappingProblem(mappings, worker);
    if (problem === undefined) expect(found).toBeUndefined();
    else expect(found?.message).toContain(problem);
  });
});

describe('parseConnectionId', () => {
  it.each([['team-a/dc1', { namespace: 'team-a', name: 'dc1' }], ['a/b', { namespace: 'a', name: 'b' }]])('reads %s', (s, want) => {
    expect(parseConnectionId(s)).toEqual(want);
  });

  it.each([['dc1'], ['a/b/c'], ['/dc1'], ['team-a/'], ['Team/dc1'], ['team_a/dc1']])('refuses %s', (s) => {
    expect(() => parseConnectionId(s)).toThrow('is not a connection id');
  });
});

describe('loadWorkerConfig', () => {
  it('loads the documented example with absolute TLS paths', async () => {
    const config = await loadWorkerConfig(path.join(fixtures, 'valid', 'worker-documented.yaml'));
    expect(config.tls.ca).toBe(path.join(fixtures, 'tls', 'ca.crt'));
    expect(config.mappings.map((m) => m.name)).toEqual(['db', 'api']);
    expect(config.mappings[0]!.allowedSources).toEqual(['127.0.0.0/8']);
  });

  it('names a missing config file', async () => {
    const file = path.join(fixtures, 'no-such-worker.yaml');
    await expect(loadWorkerConfig(file)).rejects.toMatchObject({ file, message: expect.stringContaining('no such file') });
  });
});
