import { beforeAll, describe, expect, it } from '@jest/globals';
import { X509Certificate } from 'node:crypto';
import { createCA, issueConnectorCert, loadCA } from '../tunnel/pki.js';
import { renewForTrust } from './trust-renewal.js';

const connection = { namespace: 'ns', name: 'c' };
let oldCa: X509Certificate;
let newCa: X509Certificate;
let onOld: X509Certificate;
let onNew: X509Certificate;
let stranger: X509Certificate;

beforeAll(async () => {
  const day = 86_400_000;
  const mk = async (now: Date): Promise<{ ca: X509Certificate; leaf: X509Certificate }> => {
    const c = await createCA({ connection, now });
    const leaf = await issueConnectorCert(await loadCA(c.certPem, c.keyPem), { connector: 'site-a' });
    return { ca: new X509Certificate(c.certPem), leaf: new X509Certificate(leaf.certPem) };
  };
  const o = await mk(new Date(Date.now() - 30 * day));
  const n = await mk(new Date(Date.now() - day));
  const s = await mk(new Date(Date.now() - 2 * day));
  [oldCa, onOld, newCa, onNew, stranger] = [o.ca, o.leaf, n.ca, n.leaf, s.ca];
});

describe('renewForTrust: renew only for a newer signer, or when our issuer is gone', () => {
  it.each([
    ['stable, issued by the signer', () => onOld, () => [oldCa], false],
    ['introducing [old, next], a certificate of the old CA', () => onOld, () => [oldCa, newCa], false],
    ['retiring [new, old], a certificate of the old CA: the new CA signs now', () => onOld, () => [newCa, oldCa], true],
    ['retiring [new, old], already renewed', () => onNew, () => [newCa, oldCa], false],
    // A worker that has not picked up the switch yet: the certificate is newer than its signer.
    ['a lagging worker [old, new], already renewed', () => onNew, () => [oldCa, newCa], false],
    ['the old CA is gone [new], a certificate of the old CA', () => onOld, () => [newCa], true],
    ['no CA of the bundle issued it', () => onOld, () => [stranger], true],
    ['an empty bundle', () => onOld, () => [], false],
  ])('%s', (_what, mine, bundle, expected) => {
    expect(renewForTrust(mine(), bundle())).toBe(expected);
  });
});
