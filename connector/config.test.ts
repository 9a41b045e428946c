import { describe, it, expect } from '@jest/globals';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ConfigError } from '../tunnel/errors.js';
import { DEFAULT_LIMITS } from '../tunnel/limits.js';
import { loadConnectorConfig, parseConnectorConfig, parseWorkerUrl } from './config.js';

const fixtures = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'test', 'fixtures', 'config');
const FILE = '/etc/underpass/connector.yaml';
const minimal = { name: 'dc1-a', worker: 'wss://127.0.0.1:8443', tls: { cert: 'c.crt', key: 'c.key', ca: 'ca.crt' } };

function refusal(raw: unknown): ConfigError {
  try {
    parseConnectorConfig(raw, FILE);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return err as ConfigError;
  }
  throw new Error('expected a ConfigError');
}

describe('parseConnectorConfig', () => {
  it('fills every default, and without allow or bind dials nothing and binds nothing', () => {
    const config = parseConnectorConfig(minimal, FILE);
    expect(config).toMatchObject({
      file: FILE,
      name: 'dc1-a',
      workers: [new URL('wss://127.0.0.1:8443')],
      tls: { cert: '/etc/underpass/c.crt', key: '/etc/underpass/c.key', ca: '/etc/underpass/ca.crt' },
      keepalive: { intervalMs: 5000, timeoutMs: 10000 },
      reconnect: { initialDelayMs: 500, maxDelayMs: 30000 },
      drainTimeoutMs: 30000,
      log: { level: 'info' },
      allowRules: [],
      allowGiven: false,
      bindRules: [],
      limits: DEFAULT_LIMITS,
    });
    expect(config.dial.allowAll).toBe(false);
    expect(config.dial.precheck('127.0.0.1', 5432).verdict).toBe('deny');
    expect(config.dial.precheck('db.internal', 5432).verdict).toBe('deny');
    expect(config.bind.permits('127.0.0.1', 15432)).toBe(false);
    expect(config.admin).toBeUndefined();
  });

  it('reads every optional field', () => {
    const config = parseConnectorConfig({
      ...minimal,
      worker: ['wss://a.example:8443', 'wss://[::1]:8443/v1/tunnel'],
      allow: ['127.0.0.1:5432', '*.corp.example:5432'],
      allowAll: true,
      bind: ['127.0.0.1:15432', '[::1]:*'],
      admin: '127.0.0.1:9091',
      keepalive: { interval: '2s' },
      reconnect: { initialDelay: '1s', maxDelay: '1m' },
      drainTimeout: '10s',
      log: { level: 'error' },
      audit: { file: '/var/log/audit.jsonl' },
    }, FILE);
    expect(config.workers.map(String)).toEqual(['wss://a.example:8443/', 'wss://[::1]:8443/v1/tunnel']);
    expect(config.allowRules).toEqual(['127.0.0.1:5432', '*.corp.example:5432']);
    expect(config.dial.allowAll).toBe(true);
    expect(config.dial.allow.permitsName('pg.corp.example', 5432)).toBe(true);
    expect(config.dial.allow.permitsName('corp.example', 5432)).toBe(false);
    expect(config.bindRules).toEqual(['127.0.0.1:15432', '[::1]:*']);
    expect(config.bind.permits('::1', 8080)).toBe(true);
    expect(config).toMatchObject({
      admin: { host: '127.0.0.1', port: 9091 },
      keepalive: { intervalMs: 2000, timeoutMs: 4000 },
      reconnect: { initialDelayMs: 1000, maxDelayMs: 60000 },
      drainTimeoutMs: 10000,
      log: { level: 'error' },
      audit: { file: '/var/log/audit.jsonl' },
    });
  });

  it('keeps an empty allow-list: it denies every target', () => {
    const config = parseConnectorConfig({ ...minimal, allow: [] }, FILE);
    expect(config.dial.precheck('127.0.0.1', 1).verdict).toBe('deny');
    expect(config.allowRules).toEqual([]);
    expect(config.allowGiven).toBe(true);
  });

  it.each([
    ['a ws:// URL', { ...minimal, worker: 'ws://127.0.0.1:8443' }, 'worker', 'plain ws is not allowed; the tunnel requires TLS'],
    ['a ws:// URL in a list', { ...minimal, worker: ['wss://a', 'ws://b'] }, 'worker[1]', 'plain ws is not allowed'],
    ['the same worker twice', { ...minimal, worker: ['wss://a:443', 'wss://A/'] }, 'worker[1]', 'duplicate worker URL wss://a/'],
    ['no workers', { ...minimal, worker: [] }, 'worker', 'at least one'],
    ['a bad allow rule', { ...minimal, allow: ['127.0.0.1:5432', 'db'] }, 'allow[1]', 'missing port'],
    ['allow that is not a list', { ...minimal, allow: '127.0.0.1:5432' }, 'allow', 'must be a list of rules'],
    ['allowAll that is not a boolean', { ...minimal, allowAll: 'yes' }, 'allowAll', 'must be true or false'],
    ['a name in bind', { ...minimal, bind: ['127.0.0.1:1', 'localhost:15432'] }, 'bind[1]', 'a listener binds an IP address'],
    ['bind that is not a list', { ...minimal, bind: { address: '127.0.0.1' } }, 'bind', 'must be a list of rules'],
    ['a bad name', { ...minimal, name: 'dc1.a' }, 'name', 'DNS-1123 label'],
    ['maxDelay below initialDelay', { ...minimal, reconnect: { initialDelay: '2s', maxDelay: '1s' } }, 'reconnect.maxDelay', 'must not be less than initialDelay (2s)'],
    ['a zero initialDelay', { ...minimal, reconnect: { initialDelay: 0 } }, 'reconnect.initialDelay', 'must be greater than 0'],
    ['an unknown log field', { ...minimal, log: { level: 'info', format: 'json' } }, 'log.format', 'unknown field (expected one of: level)'],
  ])('refuses %s', (_name, raw, field, message) => {
    const err = refusal(raw);
    expect(err.field).toBe(field);
    expect(err.message).toContain(message);
    expect(err.message).toContain(FILE);
  });
});

describe('parseWorkerUrl', () => {
  it.each([
    ['wss://127.0.0.1:8443', 'wss://127.0.0.1:8443/'],
    ['WSS://Tunnel.Example.com', 'wss://tunnel.example.com/'],
    ['wss://[::1]:8443/v1/tunnel', 'wss://[::1]:8443/v1/tunnel'],
  ])('accepts %s', (s, want) => {
    expect(parseWorkerUrl(s).href).toBe(want);
  });

  it.each([
    ['ws://a', 'plain ws is not allowed'],
    ['https://a', 'must be a wss:// URL'],
    ['a.example:8443', 'must be a wss:// URL'],
    ['not a url', 'is not a URL'],
    ['wss://a/?token=x', 'must not have a query or fragment'],
    ['wss://a/#x', 'must not have a query or fragment'],
  ])('refuses %s', (s, message) => {
    expect(() => parseWorkerUrl(s)).toThrow(message);
  });

  it('does not echo credentials', () => {
    expect(() => parseWorkerUrl('wss://u:hunter2@a')).toThrow('must not carry credentials');
    expect(() => parseWorkerUrl('wss://u:hunter2@a')).not.toThrow('hunter2');
  });
});

describe('loadConnectorConfig', () => {
  it('loads the documented example', async () => {
    const config = await loadConnectorConfig(path.join(fixtures, 'valid', 'connector-documented.yaml'));
    expect(config.allowRules).toEqual(['127.0.0.1:5432', '10.0.0.0/8:443', '*.corp.example:5432']);
    expect(config.bindRules).toEqual(['127.0.0.1:18080']);
    expect(config.tls.key).toBe(path.join(fixtures, 'tls', 'connector-dc1-a.key'));
  });
});
