import { describe, it, expect } from '@jest/globals';
import { ConfigError } from './errors.js';
import { AllowList, formatAllowRule, parseAllowRule, type AllowRule } from './policy.js';

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

describe('AllowList.permits', () => {
  const list = AllowList.parse([
    '127.0.0.1:5432',
    '[::1]:5432',
    '10.0.0.0/8:443',
    '[fd00::/8]:443',
    'db.internal:5432',
    '*.corp.example:5432',
    'web.internal:8000-8100',
    'jump.internal:*',
  ]);

  it.each([
    // IP rules
    ['an allowed IPv4 literal', { host: '127.0.0.1', port: 5432 }, true],
    ['an allowed IPv4 literal on another port', { host: '127.0.0.1', port: 5433 }, false],
    ['another IPv4 literal', { host: '127.0.0.2', port: 5432 }, false],
    ['an allowed IPv6 literal in a long form', { host: '0:0::1', port: 5432 }, true],
    ['an IPv4-mapped form of an allowed address', { host: '::ffff:127.0.0.1', port: 5432 }, true],
    ['a name resolved to an allowed address', { host: 'pg.local', port: 5432, address: '127.0.0.1' }, true],
    ['a name resolved to an IPv4-mapped allowed address', { host: 'pg.local', port: 5432, address: '::ffff:127.0.0.1' }, true],
    ['an IP literal whose dialled address differs', { host: '127.0.0.1', port: 5432, address: '127.0.0.9' }, false],
    // CIDR rules
    ['an address inside an allowed block', { host: '10.20.30.40', port: 443 }, true],
    ['an address inside an allowed block, wrong port', { host: '10.20.30.40', port: 80 }, false],
    ['an address outside the blocks', { host: '11.0.0.1', port: 443 }, false],
    ['an IPv6 address inside an allowed block', { host: 'fd12::5', port: 443 }, true],
    ['a hostname target without a resolved address', { host: 'app.example', port: 443 }, false],
    ['a hostname target resolved inside a block', { host: 'app.example', port: 443, address: '10.1.2.3' }, true],
    ['a hostname target resolved outside the blocks', { host: 'app.example', port: 443, address: '192.168.0.1' }, false],
    ['a hostname target with a resolved address that is not an IP', { host: 'app.example', port: 443, address: 'x' }, false],
    // name rules
    ['an allowed name', { host: 'db.internal', port: 5432 }, true],
    ['an allowed name in another case, with a trailing dot', { host: 'DB.Internal.', port: 5432 }, true],
    ['an allowed name wherever it resolves', { host: 'db.internal', port: 5432, address: '203.0.113.9' }, true],
    ['an allowed name on another port', { host: 'db.internal', port: 5433 }, false],
    ['a subdomain of an allowed name', { host: 'x.db.internal', port: 5432 }, false],
    // wildcard rules
    ['one label under a wildcard', { host: 'pg.corp.example', port: 5432 }, true],
    ['several labels under a wildcard', { host: 'a.b.corp.example', port: 5432 }, true],
    ['the wildcard apex', { host: 'corp.example', port: 5432 }, false],
    ['a name that only ends with the same text', { host: 'evilcorp.example', port: 5432 }, false],
    ['a name under a wildcard on another port', { host: 'pg.corp.example', port: 443 }, false],
    // port ranges
    ['the first port of a range', { host: 'web.internal', port: 8000 }, true],
    ['the last port of a range', { host: 'web.internal', port: 8100 }, true],
    ['just below a range', { host: 'web.internal', port: 7999 }, false],
    ['just above a range', { host: 'web.internal', port: 8101 }, false],
    ['any port of a * rule', { host: 'jump.internal', port: 22 }, true],
    ['the highest port of a * rule', { host: 'jump.internal', port: 65535 }, true],
  ])('%s → %s', (_name, target, want) => {
    expect(list.permits(target)).toBe(want);
  });

  it('answers the same when asked again, for each host, port and resolved address apart (remembered answers)', () => {
    const fresh = AllowList.parse(['10.0.0.0/8:443', 'db.internal:5432']);
    const cases: Array<[{ host: string; port: number; address?: string }, boolean]> = [
      [{ host: 'app.example', port: 443, address: '10.1.2.3' }, true],
      [{ host: 'app.example', port: 443, address: '192.168.0.1' }, false], // same name, another address
      [{ host: 'app.example', port: 443 }, false], // same name, unresolved
      [{ host: 'app.example', port: 444, address: '10.1.2.3' }, false], // another port
      [{ host: 'db.internal', port: 5432 }, true],
    ];
    for (let round = 0; round < 3; round++) {
      for (const [target, want] of round === 1 ? [...cases].reverse() : cases) expect(fresh.permits(target)).toBe(want);
    }
    // Past the memo's bound it starts over and still answers correctly.
    for (let i = 0; i < 3000; i++) expect(fresh.permits({ host: `h${i}.example`, port: 443, address: `10.0.${i >> 8}.${i & 255}` })).toBe(true);
    for (const [target, want] of cases) expect(fresh.permits(target)).toBe(want);
  });

  it('denies everything when empty', () => {
    expect(new AllowList([]).permits({ host: '127.0.0.1', port: 5432 })).toBe(false);
  });

  it('lets 0.0.0.0/0 cover any resolved IPv4 address but not an unresolved name', () => {
    const any = AllowList.parse(['0.0.0.0/0:*']);
    expect(any.permits({ host: 'x.example', port: 1, address: '8.8.8.8' })).toBe(true);
    expect(any.permits({ host: 'x.example', port: 1 })).toBe(false);
  });

  it('describes itself as canonical rules', () => {
    expect(AllowList.parse(['DB.internal:1-65535', '[0::1]:22']).describe()).toEqual(['db.internal:*', '[::1]:22']);
  });

  it('names the bad rule by index', () => {
    expect(() => AllowList.parse(['127.0.0.1:5432', 'nope'])).toThrow(expect.objectContaining({ field: '[1]' }));
  });
});
