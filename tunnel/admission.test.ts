import { describe, it, expect } from '@jest/globals';
import { admissionFromList, admissionInForce, admissionRefusal, sameAdmission, type Admission } from './admission.js';

const candidate = (connector: string) => ({ connector, certificateSerial: '4F00' });

describe('admission', () => {
  it.each<[string, Admission, string, boolean]>([
    ['no list admits any connector', {}, 'site-z', true],
    ['a listed connector is admitted', { connectors: ['site-a', 'site-b'] }, 'site-b', true],
    ['an unlisted connector is refused', { connectors: ['site-a'] }, 'site-b', false],
    ['an empty list admits none', { connectors: [] }, 'site-a', false],
  ])('%s', (_name, admission, connector, admitted) => {
    const refusal = admissionRefusal(admission, candidate(connector));
    expect(refusal === undefined).toBe(admitted);
    if (refusal) {
      expect(refusal.code).toBe('CONNECTOR_NOT_ALLOWED');
      expect(refusal.message).toContain(`"${connector}"`);
    }
  });

  it.each<[string, string[] | undefined, Admission]>([
    ['unset spec.connectors admits any', undefined, {}],
    ['an empty list stays empty (admits none)', [], { connectors: [] }],
    ['a list is deduplicated and sorted', ['b', 'a', 'b'], { connectors: ['a', 'b'] }],
  ])('admissionFromList: %s', (_name, list, expected) => {
    expect(admissionFromList(list)).toEqual(expected);
  });

  it.each<[string, Admission, Admission, boolean]>([
    ['any and any', {}, {}, true],
    ['the same names in another order', { connectors: ['a', 'b'] }, { connectors: ['b', 'a'] }, true],
    ['any and an empty list', {}, { connectors: [] }, false],
    ['one name removed', { connectors: ['a', 'b'] }, { connectors: ['a'] }, false],
    ['a serial revoked', {}, { revokedSerials: ['AB'] }, false],
    ['the same serial spelled with a leading zero, in lowercase', { revokedSerials: ['0ab'] }, { revokedSerials: ['AB'] }, true],
    ['a connector revoked by name', {}, { revokedConnectors: ['a'] }, false],
  ])('sameAdmission: %s', (_name, a, b, same) => {
    expect(sameAdmission(a, b)).toBe(same);
  });

  it.each<[string, Admission, { connector: string; certificateSerial: string }, string | undefined]>([
    ['a revoked serial, whatever its spelling', { revokedSerials: ['5A0C'] }, { connector: 'a', certificateSerial: '05a0c' }, 'CERTIFICATE_REVOKED'],
    ['a revoked serial even when the name is listed', { connectors: ['a'], revokedSerials: ['5A0C'] }, { connector: 'a', certificateSerial: '5A0C' }, 'CERTIFICATE_REVOKED'],
    ['another serial of the same connector', { revokedSerials: ['5A0C'] }, { connector: 'a', certificateSerial: '5A0D' }, undefined],
    ['a revoked name', { revokedConnectors: ['a'] }, { connector: 'a', certificateSerial: '1' }, 'CONNECTOR_REVOKED'],
  ])('revocation: %s', (_name, admission, candidate, code) => {
    expect(admissionRefusal(admission, candidate)?.code).toBe(code);
  });

  it.each<[string, Admission, Admission | undefined, Admission]>([
    ['before the first operator answer the file decides alone, revocations included',
      { connectors: ['a'], revokedSerials: ['5A0C'] }, undefined, { connectors: ['a'], revokedSerials: ['5A0C'] }],
    ['the answer says who may attach, the file\'s list no longer counts',
      { connectors: ['a'] }, { connectors: ['b'] }, { connectors: ['b'] }],
    ['an answer that admits any connector replaces the file\'s list',
      { connectors: ['a'] }, {}, {}],
    ['a serial revoked only in the file stays refused after an answer without it',
      { revokedSerials: ['5A0C'] }, { connectors: ['a'] }, { connectors: ['a'], revokedSerials: ['5A0C'] }],
    ['revocations of both are joined, spelled once',
      { revokedSerials: ['05a0c'], revokedConnectors: ['c'] }, { revokedSerials: ['5A0C', 'B7'], revokedConnectors: ['d'] },
      { revokedSerials: ['5A0C', 'B7'], revokedConnectors: ['c', 'd'] }],
  ])('admissionInForce: %s', (_name, file, operator, expected) => {
    expect(admissionInForce(file, operator)).toEqual(expected);
  });
});
