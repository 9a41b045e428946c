import { describe, it, expect } from '@jest/globals';
import { admissionFromList, admissionRefusal, sameAdmission, type Admission } from './admission.js';

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
  ])('sameAdmission: %s', (_name, a, b, same) => {
    expect(sameAdmission(a, b)).toBe(same);
  });
});
