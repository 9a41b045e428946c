import { describe, it, expect } from '@jest/globals';
import { ConfigError } from './errors.js';
import { AllowList, DialPolicy, formatAllowRule, parseAllowRule, type AllowRule, type Lookup, type Precheck } from './policy.js';

describe('parseAllowRule', () => {
  it.each<[string, string, AllowRule]>([
    ['one IPv4 address', '127.0.0.1:5432', { kind: 'ip', match: '127.0.0.1', ports: { from: 5432, to: 5432 } }],
    ['one IPv6 address', '[::1]:5432', { kind: 'ip', match: '::1', ports: { from: 5432, to: 5432 } }],
    ['an IPv4 block', '10.0.0.0/8:443', { kind: 'cidr', match: '10.0.0.0/8', ports: { from: 443, to: 443 } }],
    ['an IPv6 block', '[fd00::/8]:443', { kind: 'cidr', match: 'fd00::/8', ports: { from: 443, to: 443 } }],
    ['a DNS name', 'db.internal:5432', { kind: 'host', match: 'db.internal', ports: { from: 5432, to: 5432 } }],
    ['a wildcard', '*.corp.example:5432', { kind: 'wildcard', match: '*.corp.example', ports: { from: 5432, to: 5432 } }],
    ['any port', 'db.internal:*', { kind: 'host', match: 'db.internal', ports: { from: 1, to: 65535 } }],
    ['a port range', '10.0.0.0/8:8000-8100', { kind: 'cidr', match: '10.0.0.0/8', ports: { from: 8000, to: 8100 } }],
  ])('reads %s', (_name, text, want) => {
    expect(parseAllowRule(text)).toEqual(want);
  });

  it.each([
    ['127.0.0.1:5432'], ['[::1]:5432'], ['10.0.0.0/8:443'], ['[fd00::/8]:443'], ['db.internal:5432'],
    ['*.corp.example:5432'], ['db.internal:*'], ['web.internal:8000-8100'], ['10.0.0.1/32:1-1024'], ['[::ffff:10.0.0.1]:80'],
  ])('round-trips %s', (text) => {
    expect(formatAllowRule(parseAllowRule(text))).toBe(text);
  });

  it.each([
    ['an uppercase name', 'DB.Internal.:5432', 'db.internal:5432'],
    ['a long IPv6 form', '[0:0::1]:22', '[::1]:22'],
    ['a one-port range', 'db:5432-5432', 'db:5432'],
    ['the full range', 'db:1-65535', 'db:*'],
    ['an uppercase wildcard', '*.CORP.example:1', '*.corp.example:1'],
  ])('writes %s canonically', (_name, text, want) => {
    expect(formatAllowRule(parseAllowRule(text))).toBe(want);
  });

  it.each([
    ['a missing port', 'db.internal', 'missing port'],
    ['an empty port', 'db.internal:', 'is not a port'],
    ['port 0', 'db.internal:0', 'between 1 and 65535'],
    ['port 70000', 'db.internal:70000', 'between 1 and 65535'],
    ['a reversed range', 'db:8100-8000', 'is empty'],
    ['an open range', 'db:8000-', 'is not a port'],
    ['an unbracketed IPv6 address', '::1:5432', 'must be in brackets'],
    ['an unbracketed IPv6 block', 'fd00::/8:443', 'must be in brackets'],
    ['IPv4 in brackets', '[10.0.0.1]:80', 'brackets must hold an IPv6'],
    ['unclosed brackets', '[::1:80', 'missing "]:<port>"'],
    ['a block with host bits', '10.0.0.1/8:443', 'host bits set'],
    ['a bad prefix', '10.0.0.0/40:443', 'invalid prefix length'],
    ['a bare star', '*:443', 'use 0.0.0.0/0'],
    ['a wildcard inside a name', 'db.*.example:5432', 'whole first label'],
    ['a partial wildcard label', 'db*.example:5432', 'whole first label'],
    ['two wildcards', '*.*.example:5432', 'is not a DNS name'],
    ['a bad name', 'db..internal:5432', 'is not an IP address, CIDR block or DNS name'],
    ['a bad IPv4 address', '300.1.1.1:80', 'is not an IP address, CIDR block or DNS name'],
    ['nothing', '', 'missing port'],
  ])('refuses %s', (_name, text, message) => {
    expect(() => parseAllowRule(text)).toThrow(ConfigError);
    expect(() => parseAllowRule(text)).toThrow(message);
  });
});

describe('DialPolicy', () => {
  const policy = new DialPolicy(AllowList.parse([
    '127.0.0.1:5432',
    '[::1]:5432',
    '10.0.0.0/8:443',
    '[fd00::/8]:443',
    'db.internal:5432',
    '*.corp.example:5432',
    'web.internal:8000-8100',
    'jump.internal:*',
    '0.0.0.0/0:9000',
    '169.254.169.254:80',
  ]));
  const dial = (address: string): Precheck => ({ verdict: 'dial', address });
  const resolve: Precheck = { verdict: 'resolve' };
  const deny = expect.objectContaining({ verdict: 'deny' }) as unknown as Precheck;

  it.each<[string, string, number, Precheck]>([
    // IP literals: IP and CIDR rules
    ['an allowed IPv4 literal', '127.0.0.1', 5432, dial('127.0.0.1')],
    ['an allowed IPv4 literal on another port', '127.0.0.1', 5433, deny],
    ['another IPv4 literal', '10.255.0.1', 5432, deny],
    ['an allowed IPv6 literal', '::1', 5432, dial('::1')],
    ['an IPv4-mapped form of an allowed address', '::ffff:127.0.0.1', 5432, dial('::ffff:127.0.0.1')],
    ['an address inside an allowed block', '10.20.30.40', 443, dial('10.20.30.40')],
    ['an address inside an allowed block, wrong port', '10.20.30.40', 80, deny],
    ['an address outside the blocks', '11.0.0.1', 443, deny],
    ['an IPv6 address inside an allowed block', 'fd12::5', 443, dial('fd12::5')],
    // names: name and wildcard rules, decided on the name alone
    ['an allowed name', 'db.internal', 5432, resolve],
    ['an allowed name in another case, with a trailing dot', 'DB.Internal.', 5432, resolve],
    ['an allowed name on another port', 'db.internal', 5433, deny],
    ['a subdomain of an allowed name', 'x.db.internal', 5432, deny],
    ['one label under a wildcard', 'pg.corp.example', 5432, resolve],
    ['several labels under a wildcard', 'a.b.corp.example', 5432, resolve],
    ['the wildcard apex', 'corp.example', 5432, deny],
    ['a name that only ends with the same text', 'evilcorp.example', 5432, deny],
    ['a name that a block would cover once resolved: never resolved', 'app.example', 443, deny],
    ['a name on the port of 0.0.0.0/0: IP rules never permit names', 'app.example', 9000, deny],
    // port ranges
    ['the first port of a range', 'web.internal', 8000, resolve],
    ['the last port of a range', 'web.internal', 8100, resolve],
    ['just below a range', 'web.internal', 7999, deny],
    ['just above a range', 'web.internal', 8101, deny],
    ['any port of a * rule', 'jump.internal', 22, resolve],
    ['the highest port of a * rule', 'jump.internal', 65535, resolve],
    // guarded addresses: only an IP rule naming the very address opens one
    ['a public address through 0.0.0.0/0', '8.8.8.8', 9000, dial('8.8.8.8')],
    ['loopback through 0.0.0.0/0', '127.0.0.2', 9000, deny],
    ['metadata through 0.0.0.0/0', '169.254.169.254', 9000, deny],
    ['metadata named as an IP literal, its port', '169.254.169.254', 80, dial('169.254.169.254')],
    ['metadata named as an IP literal, another port', '169.254.169.254', 81, deny],
    ['another link-local address through 0.0.0.0/0', '169.254.1.1', 9000, deny],
    ['the unspecified address (dials this host) through 0.0.0.0/0', '0.0.0.0', 9000, deny],
    ['an IPv4-mapped metadata address through 0.0.0.0/0', '::ffff:169.254.169.254', 9000, deny],
  ])('%s (%s:%s)', (_name, host, port, want) => {
    expect(policy.precheck(host, port)).toEqual(want);
  });

  it('answers the same when asked again, across its bound of remembered answers', () => {
    const fresh = new DialPolicy(AllowList.parse(['10.0.0.0/8:443', 'db.internal:5432']));
    const cases: Array<[string, number, Precheck['verdict']]> = [
      ['10.1.2.3', 443, 'dial'], ['192.168.0.1', 443, 'deny'], ['10.1.2.3', 444, 'deny'], ['db.internal', 5432, 'resolve'], ['db.internal', 5433, 'deny'],
    ];
    for (let round = 0; round < 3; round++) {
      for (const [host, port, want] of round === 1 ? [...cases].reverse() : cases) expect(fresh.precheck(host, port).verdict).toBe(want);
    }
    for (let i = 0; i < 3000; i++) expect(fresh.precheck(`10.0.${i >> 8}.${i & 255}`, 443).verdict).toBe('dial');
    for (const [host, port, want] of cases) expect(fresh.precheck(host, port).verdict).toBe(want);
  });

  it('denies everything when the list is empty, and says which rule would permit it', () => {
    const empty = new DialPolicy(new AllowList([]));
    expect(empty.precheck('10.0.0.5', 5432)).toEqual({ verdict: 'deny', rule: '10.0.0.5:5432', message: "target 10.0.0.5:5432 is not on this connector's allow list" });
    expect(empty.precheck('db.internal', 5432)).toEqual({ verdict: 'deny', rule: 'db.internal:5432', message: "target db.internal:5432 is not on this connector's allow list" });
    expect(empty.precheck('fd00::5', 22)).toMatchObject({ verdict: 'deny', rule: '[fd00::5]:22' });
  });

  it.each<[string, string, number]>([
    ['IPv4 loopback', '127.0.0.1', 5432],
    ['IPv6 loopback', '::1', 5432],
    ['the IPv4 metadata address', '169.254.169.254', 80],
    ['an IPv6 link-local address', 'fe80::1', 22],
    ['the AWS IPv6 metadata address', 'fd00:ec2::254', 80],
    ['0.0.0.0, which dials this host', '0.0.0.0', 80],
  ])('allowAll dials anything but %s', (_name, host, port) => {
    const all = new DialPolicy(new AllowList([]), { allowAll: true });
    expect(all.precheck('203.0.113.7', port)).toEqual(dial('203.0.113.7'));
    expect(all.precheck('any.name.example', port)).toEqual(resolve);
    expect(all.precheck(host, port)).toMatchObject({ verdict: 'deny', message: expect.stringMatching(/only an allow rule naming it as an IP literal opens it/) });
    const opened = new DialPolicy(AllowList.parse([host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`]), { allowAll: true });
    expect(opened.precheck(host, port)).toEqual(dial(host));
  });

  describe('decide: one lookup, only for a permitted name, and the looked-up address is checked', () => {
    const counting = (answer: string | Error) => {
      const asked: string[] = [];
      const lookup: Lookup = async (host) => {
        asked.push(host);
        if (answer instanceof Error) throw answer;
        return answer;
      };
      return { asked, lookup };
    };
    const strict = new DialPolicy(AllowList.parse(['db.internal:5432', '10.0.0.0/8:*', '127.0.0.1:5432']));

    it('never looks up a name the list does not permit, whatever the name would resolve to', async () => {
      const { asked, lookup } = counting('10.1.2.3');
      for (const name of ['localhost', 'secret.corp.example', 'no-such-host.invalid']) {
        expect(await strict.decide(name, 5432, lookup)).toEqual({ ok: false, reason: 'NotAllowed', rule: `${name}:5432`, message: `target ${name}:5432 is not on this connector's allow list` });
      }
      expect(asked).toEqual([]);
    });

    it('never looks up an IP literal', async () => {
      const { asked, lookup } = counting('192.0.2.1');
      expect(await strict.decide('10.9.9.9', 22, lookup)).toEqual({ ok: true, address: '10.9.9.9' });
      expect(asked).toEqual([]);
    });

    it('looks up a permitted name once and dials the address it got', async () => {
      const { asked, lookup } = counting('192.0.2.10');
      expect(await strict.decide('db.internal', 5432, lookup)).toEqual({ ok: true, address: '192.0.2.10' });
      expect(asked).toEqual(['db.internal']);
    });

    it.each([
      ['loopback', '127.0.0.2', 'a loopback address'],
      ['the metadata address', '169.254.169.254', 'a link-local address (cloud metadata answers at 169.254.169.254)'],
      ['an IPv4-mapped loopback address', '::ffff:127.0.0.9', 'a loopback address'],
      ['IPv6 link-local', 'fe80::abcd', 'a link-local address'],
    ])('refuses a permitted name that resolves to %s', async (_name, address, kind) => {
      const d = await strict.decide('db.internal', 5432, counting(address).lookup);
      expect(d).toMatchObject({ ok: false, reason: 'NotAllowed' });
      expect(d.ok || d.message).toContain(`resolves to ${address}, ${kind}`);
    });

    it('lets a permitted name resolve to a guarded address that an IP rule names', async () => {
      expect(await strict.decide('db.internal', 5432, counting('127.0.0.1').lookup)).toEqual({ ok: true, address: '127.0.0.1' });
      expect(await strict.decide('db.internal', 5432, counting('::ffff:127.0.0.1').lookup)).toEqual({ ok: true, address: '::ffff:127.0.0.1' });
    });

    it('reports a failed lookup of a permitted name as ResolveFailed', async () => {
      expect(await strict.decide('db.internal', 5432, counting(new Error('getaddrinfo ENOTFOUND db.internal')).lookup))
        .toEqual({ ok: false, reason: 'ResolveFailed', message: 'cannot resolve db.internal: getaddrinfo ENOTFOUND db.internal' });
    });
  });
});

describe('AllowList', () => {
  it('describes itself as canonical rules', () => {
    expect(AllowList.parse(['DB.internal:1-65535', '[0::1]:22']).describe()).toEqual(['db.internal:*', '[::1]:22']);
  });

  it('names the bad rule by index', () => {
    expect(() => AllowList.parse(['127.0.0.1:5432', 'nope'])).toThrow(expect.objectContaining({ field: '[1]' }));
  });

  it('lets an IP rule, not a block, name an address exactly (IPv4-mapped forms are the same address)', () => {
    const list = AllowList.parse(['127.0.0.1:5432', '127.0.0.0/8:*']);
    expect(list.namesAddress('127.0.0.1', 5432)).toBe(true);
    expect(list.namesAddress('::ffff:127.0.0.1', 5432)).toBe(true);
    expect(list.namesAddress('127.0.0.2', 5432)).toBe(false);
    expect(list.permitsAddress('127.0.0.2', 5432)).toBe(true);
  });
});
