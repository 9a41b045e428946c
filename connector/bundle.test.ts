import { describe, it, expect } from '@jest/globals';
import YAML from 'yaml';
import { ConfigError } from '../tunnel/errors.js';
import {
  checkConnectorAllowed, fileLayout, parseWorkerUrlFlags, renderConnectorConfig, renderReadme, renderSecretManifest, resolveWorkerUrls,
  secretLayout, suggestAllowRules, suggestBindRules, type ConnectionView, type MappingView,
} from './bundle.js';
import { parseConnectorConfig } from './config.js';

const id = { namespace: 'team-a', name: 'dc1' };
const notAfter = new Date('2030-01-02T03:04:05Z');

function mapping(name: string, side: string, host: string, port: number, connection = 'dc1', listen: { port?: number; address?: string } = { port: 10000 + port }): MappingView {
  return { metadata: { name }, spec: { connection, target: { side, host, port }, listen } };
}

function thrown(fn: () => unknown): Error & { code?: string; field?: string } {
  try {
    fn();
  } catch (err) {
    return err as Error;
  }
  throw new Error('expected an error');
}

describe('resolveWorkerUrls', () => {
  const full: ConnectionView = {
    spec: { endpoint: { hosts: ['dc1.tunnel.example.com', '203.0.113.7'], service: { port: 8443 } } },
    status: { endpoint: 'wss://lb.example.com:443/v1/tunnel' },
  };

  it.each<[string, string[], ConnectionView, string[]]>([
    ['the --worker-url flags win over everything', ['wss://127.0.0.1:9443', 'wss://[::1]:9443'], full, ['wss://127.0.0.1:9443', 'wss://[::1]:9443']],
    ['status.endpoint comes next', [], full, ['wss://lb.example.com:443/v1/tunnel']],
    ['then the first spec host with the service port', [], { spec: full.spec! }, ['wss://dc1.tunnel.example.com:8443']],
    ['an IPv6 host is bracketed', [], { spec: { endpoint: { hosts: ['2001:db8::7'], service: { port: 443 } } } }, ['wss://[2001:db8::7]:443']],
    ['the service port defaults to 443', [], { spec: { endpoint: { hosts: ['t.example.com'] } } }, ['wss://t.example.com:443']],
    ['an empty status.endpoint is not an endpoint', [], { spec: full.spec!, status: { endpoint: '' } }, ['wss://dc1.tunnel.example.com:8443']],
  ])('%s', (_name, flags, tc, expected) => {
    expect(resolveWorkerUrls(flags, tc, id)).toEqual(expected);
  });

  it('without flags, status or hosts it asks for --worker-url', () => {
    const err = thrown(() => resolveWorkerUrls([], { spec: { endpoint: { service: { port: 443 } } } }, id));
    expect(err.code).toBe('ERR_BUNDLE_NO_WORKER_URL');
    expect(err.message).toBe('cannot tell which URL connectors of team-a/dc1 dial: it has no status.endpoint yet and no spec.endpoint.hosts; pass --worker-url wss://<host>:<port>');
  });

  it('an unusable status.endpoint is reported, with the same advice', () => {
    const err = thrown(() => resolveWorkerUrls([], { status: { endpoint: 'https://x.example.com' } }, id));
    expect(err.code).toBe('ERR_BUNDLE_NO_WORKER_URL');
    expect(err.message).toContain('status.endpoint "https://x.example.com" is not usable');
    expect(err.message).toContain('pass --worker-url');
  });

  it.each([
    ['ws://127.0.0.1:8443', 'plain ws is not allowed'],
    ['not a url', 'is not a URL'],
    ['wss://u:p@h.example.com', 'must not carry credentials'],
  ])('a bad --worker-url %s is a ConfigError naming the flag', (url, problem) => {
    const err = thrown(() => parseWorkerUrlFlags([url]));
    expect(err).toBeInstanceOf(ConfigError);
    expect(err.field).toBe('--worker-url');
    expect(err.message).toContain(problem);
  });

  it('good --worker-url flags come back as given', () => {
    expect(parseWorkerUrlFlags(['wss://A.example.com:8443/v1/tunnel', 'wss://[::1]:9443'])).toEqual(['wss://A.example.com:8443/v1/tunnel', 'wss://[::1]:9443']);
  });

  it('the same --worker-url twice is refused (the connector would refuse it too)', () => {
    const err = thrown(() => parseWorkerUrlFlags(['wss://A.example.com:443', 'wss://a.example.com']));
    expect(err.message).toBe('field "--worker-url": wss://a.example.com is given twice');
  });
});

describe('checkConnectorAllowed', () => {
  it.each<[string, string[] | undefined]>([
    ['no list admits any name', undefined],
    ['a listed name is admitted', ['site-b', 'site-a']],
  ])('%s', (_name, connectors) => {
    expect(() => checkConnectorAllowed('site-a', { spec: connectors ? { connectors } : {} }, id)).not.toThrow();
  });

  it('an empty list admits no name (removing the last connector must not admit every certificate)', () => {
    const err = thrown(() => checkConnectorAllowed('site-a', { spec: { connectors: [] } }, id));
    expect(err.message).toContain('empty: it admits no connector');
  });

  it('a name the list does not hold is refused on --name, listing the allowed ones', () => {
    const err = thrown(() => checkConnectorAllowed('site-c', { spec: { connectors: ['site-a', 'site-b'] } }, id));
    expect(err).toBeInstanceOf(ConfigError);
    expect(err.message).toBe('field "--name": connector "site-c" is not in spec.connectors of TunnelConnection team-a/dc1 (site-a, site-b); add it there first, or use one of those names');
  });
});

describe('suggestAllowRules', () => {
  it('lists the Connector-side targets of this connection, canonical, merged and sorted', () => {
    const rules = suggestAllowRules([
      mapping('web', 'Connector', 'Web.Internal', 8080),
      mapping('db', 'Connector', '10.0.0.5', 5432),
      mapping('db-replica', 'Connector', '10.0.0.5', 5432),
      mapping('v6', 'Connector', '2001:db8::5', 22),
      mapping('api', 'Cluster', 'api.default.svc', 443),
      mapping('other', 'Connector', '10.9.9.9', 1, 'dc2'),
      { metadata: { name: 'broken' }, spec: { connection: 'dc1', target: { side: 'Connector' } } },
    ], 'dc1');
    expect(rules).toEqual([
      { rule: '10.0.0.5:5432', mappings: ['db', 'db-replica'] },
      { rule: '[2001:db8::5]:22', mappings: ['v6'] },
      { rule: 'web.internal:8080', mappings: ['web'] },
    ]);
  });

  it('marks a rule that opens a guarded address of the connector host', () => {
    expect(suggestAllowRules([mapping('local-db', 'Connector', '127.0.0.1', 5432), mapping('imds', 'Connector', '169.254.169.254', 80)], 'dc1')).toEqual([
      { rule: '127.0.0.1:5432', mappings: ['local-db'], guarded: 'a loopback address' },
      { rule: '169.254.169.254:80', mappings: ['imds'], guarded: 'a link-local address (cloud metadata answers at 169.254.169.254)' },
    ]);
  });

  it('adds the loopback literals a localhost target resolves to (a name rule alone never opens loopback)', () => {
    expect(suggestAllowRules([mapping('local', 'Connector', 'localhost', 6379)], 'dc1')).toEqual([
      { rule: '127.0.0.1:6379', mappings: ['local'], guarded: 'a loopback address' },
      { rule: '[::1]:6379', mappings: ['local'], guarded: 'a loopback address' },
      { rule: 'localhost:6379', mappings: ['local'] },
    ]);
  });

  it('no mappings, no suggestions', () => {
    expect(suggestAllowRules([], 'dc1')).toEqual([]);
  });
});

describe('suggestBindRules', () => {
  it('lists the listeners of this connection\'s Cluster-side mappings, 0.0.0.0 when the mapping names no address', () => {
    expect(suggestBindRules([
      mapping('api', 'Cluster', 'api.default.svc', 443, 'dc1', { port: 18443 }),
      mapping('metrics', 'Cluster', 'prom.monitoring.svc', 9090, 'dc1', { port: 19090, address: '127.0.0.1' }),
      mapping('v6', 'Cluster', 'x.default.svc', 80, 'dc1', { port: 18080, address: '::1' }),
      mapping('db', 'Connector', '10.0.0.5', 5432, 'dc1', { port: 15432 }),
      mapping('other', 'Cluster', 'y.default.svc', 80, 'dc2', { port: 18081 }),
      mapping('no-port', 'Cluster', 'z.default.svc', 80, 'dc1', {}),
    ], 'dc1')).toEqual([
      { rule: '0.0.0.0:18443', mappings: ['api'] },
      { rule: '127.0.0.1:19090', mappings: ['metrics'] },
      { rule: '[::1]:18080', mappings: ['v6'] },
    ]);
  });
});

describe('renderConnectorConfig', () => {
  const allow = suggestAllowRules([mapping('db', 'Connector', '10.0.0.5', 5432), mapping('web', 'Connector', 'web.internal', 80)], 'dc1');
  const bind = suggestBindRules([mapping('api', 'Cluster', 'api.default.svc', 443, 'dc1', { port: 18443, address: '127.0.0.1' })], 'dc1');

  it.each<[string, string[], ReturnType<typeof fileLayout>]>([
    ['one worker, files beside it', ['wss://dc1.tunnel.example.com:443'], fileLayout('site-a')],
    ['several workers, files in a mounted Secret', ['wss://a.example.com:443', 'wss://[::1]:8443'], secretLayout()],
  ])('%s: loads with the connector config parser as written, with the explicit lists', (_name, workers, layout) => {
    const text = renderConnectorConfig({ name: 'site-a', connection: id, workers, layout, allow, bind, notAfter });
    const config = parseConnectorConfig(YAML.parse(text), '/b/connector.yaml');
    expect(config.name).toBe('site-a');
    expect(config.workers.map((u) => u.href)).toEqual(workers.map((w) => new URL(w).href));
    expect(config.allowRules).toEqual(['10.0.0.5:5432', 'web.internal:80']);
    expect(config.bindRules).toEqual(['127.0.0.1:18443']);
    expect(config.dial.allowAll).toBe(false);
    const abs = (p: string) => (p.startsWith('/') ? p : `/b/${p}`);
    expect(config.tls).toEqual({ cert: abs(layout.cert), key: abs(layout.key), ca: abs(layout.ca) });
  });

  it('names the mappings beside each rule and tells the reader to review the lists', () => {
    const text = renderConnectorConfig({ name: 'site-a', connection: id, workers: ['wss://h.example.com'], layout: fileLayout('site-a'), allow, bind, notAfter });
    expect(text).toContain('allow:\n  - "10.0.0.5:5432"    # db\n  - "web.internal:80"  # web\n');
    expect(text).toContain('bind:\n  - "127.0.0.1:18443"  # api\n');
    expect(text).toContain('# REVIEW before starting: "allow" and "bind" decide, on this host, what the cluster side may');
    expect(text).toContain('admin: "127.0.0.1:9091"');
    expect(text).toContain('expires 2030-01-02T03:04:05.000Z');
  });

  it('says so beside a rule that opens a guarded address', () => {
    const local = suggestAllowRules([mapping('local-db', 'Connector', '127.0.0.1', 5432)], 'dc1');
    const text = renderConnectorConfig({ name: 'site-a', connection: id, workers: ['wss://h.example.com'], layout: fileLayout('site-a'), allow: local, bind: [], notAfter });
    expect(text).toContain('  - "127.0.0.1:5432"  # local-db (a loopback address: open only because named here)');
  });

  it('without mappings writes empty lists that deny, with the form of a rule', () => {
    const text = renderConnectorConfig({ name: 'site-a', connection: id, workers: ['wss://h.example.com'], layout: fileLayout('site-a'), allow: [], bind: [], notAfter });
    expect(text).toContain('allow: []  # none yet; a rule looks like "db.internal:5432"');
    expect(text).toContain('bind: []  # none yet; a rule looks like "127.0.0.1:18080"');
    const config = parseConnectorConfig(YAML.parse(text), '/b/connector.yaml');
    expect([config.allowRules, config.bindRules, config.allowGiven]).toEqual([[], [], true]);
  });
});

describe('renderReadme', () => {
  it('gives the exact start command and a systemd unit', () => {
    const text = renderReadme({
      name: 'site-a', connection: id, workers: ['wss://h.example.com:443'], dir: '/home/me/site-a',
      identity: 'underpass://team-a/dc1/connector/site-a', notAfter, renewCommand: 'underpass connector bundle … --force',
    });
    expect(text).toContain('\n  underpass connector --config connector.yaml\n');
    expect(text).toContain('underpass connector --config /home/me/site-a/connector.yaml');
    expect(text).toContain('ExecStart=/usr/local/bin/underpass connector --config /etc/underpass/site-a/connector.yaml');
    expect(text).toContain('[Install]\n  WantedBy=multi-user.target');
    expect(text).toContain('underpass connector bundle … --force');
    expect(text).not.toContain('PRIVATE KEY');
  });
});

describe('renderSecretManifest', () => {
  it('is one v1 Secret whose connector.yaml points at the mounted keys', () => {
    const text = renderSecretManifest({
      name: 'site-a', connection: id, workers: ['wss://h.example.com:443'], allow: [], bind: [], notAfter, namespace: 'edge',
      caPem: 'CA PEM\n', certPem: 'CERT PEM\n', keyPem: 'KEY PEM\n', identity: 'underpass://team-a/dc1/connector/site-a',
    });
    const secret = YAML.parse(text) as { apiVersion: string; kind: string; type: string; metadata: { name: string; namespace: string; annotations: Record<string, string> }; data: Record<string, string> };
    expect([secret.apiVersion, secret.kind, secret.type]).toEqual(['v1', 'Secret', 'Opaque']);
    expect(secret.metadata).toMatchObject({ name: 'underpass-connector-site-a', namespace: 'edge' });
    expect(secret.metadata.annotations['underpass.dev/identity']).toBe('underpass://team-a/dc1/connector/site-a');
    const data = Object.fromEntries(Object.entries(secret.data).map(([k, v]) => [k, Buffer.from(v, 'base64').toString()]));
    expect(Object.keys(data).sort()).toEqual(['ca.crt', 'connector.yaml', 'tls.crt', 'tls.key']);
    expect([data['ca.crt'], data['tls.crt'], data['tls.key']]).toEqual(['CA PEM\n', 'CERT PEM\n', 'KEY PEM\n']);
    const config = parseConnectorConfig(YAML.parse(data['connector.yaml']!), '/etc/underpass/connector.yaml');
    expect(config.tls).toEqual({ cert: '/etc/underpass/tls.crt', key: '/etc/underpass/tls.key', ca: '/etc/underpass/ca.crt' });
    expect(config.admin).toEqual({ host: '0.0.0.0', port: 9091 });
  });
});
