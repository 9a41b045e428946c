import { describe, expect, it } from '@jest/globals';
import { X509Certificate } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import { backdate, createKeyAndCsr, csrPublicKey, MAX_CSR_CHARS, signConnectorCsr } from './pki-csr.js';
import { CLOCK_SKEW_MS, createCA, loadCA } from './pki.js';
import { renewalTime } from '../connector/renewer.js';

const connection = { namespace: 'team-a', name: 'dc1' };

async function rsaCsr(): Promise<string> {
  const keys = await crypto.subtle.generateKey({ name: 'RSASSA-PKCS1-v1_5', modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]), hash: 'SHA-256' }, true, ['sign', 'verify']);
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({ name: 'CN=x', keys, signingAlgorithm: { name: 'RSASSA-PKCS1-v1_5' } });
  return csr.toString('pem');
}

describe('certificate signing requests', () => {
  it('signs a certificate for the identity it is told, whatever the request names, for the requester\'s own key', async () => {
    const ca = await loadCA(...Object.values(await createCA({ connection })) as [string, string]);
    const { keyPem, csrPem } = await createKeyAndCsr('someone-else');
    const pem = await signConnectorCsr(ca, { connector: 'site-a', csrPem, validityMs: 60_000 });
    const cert = new X509Certificate(pem);
    expect(cert.subjectAltName).toBe('URI:underpass://team-a/dc1/connector/site-a');
    expect(cert.subject).toBe('CN=site-a');
    expect(cert.checkPrivateKey((await import('node:crypto')).createPrivateKey(keyPem))).toBe(true);
    expect(cert.checkIssued(new X509Certificate(ca.certPem))).toBe(true);
    expect(cert.keyUsage).toEqual(['1.3.6.1.5.5.7.3.2']);
  });

  it.each([
    ['a request whose signature was tampered with', async () => {
      const { csrPem } = await createKeyAndCsr('site-a');
      const der = Buffer.from(csrPem.replace(/-----[^-]+-----|\s/g, ''), 'base64');
      der[der.length - 5] ^= 0xff;
      return `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString('base64')}\n-----END CERTIFICATE REQUEST-----\n`;
    }, /ERR_CSR_(SIGNATURE|INVALID)/],
    ['text that is not a request', async () => 'hello', /ERR_CSR_INVALID/],
    ['a request over the size limit', async () => 'x'.repeat(MAX_CSR_CHARS + 1), /ERR_CSR_INVALID/],
    ['an RSA key (Underpass uses P-256)', rsaCsr, /ERR_CSR_KEY/],
  ])('refuses %s', async (_name, make, code) => {
    const err = await csrPublicKey(await make()).then(() => undefined, (e: { code: string }) => e);
    expect(err?.code).toMatch(code);
  });

  it.each([
    ['a one-minute certificate starts 6 s early', 60_000, 6_000],
    ['a 30-day certificate starts the full clock skew early', 30 * 86_400_000, CLOCK_SKEW_MS],
  ])('%s', (_name, validity, expected) => {
    expect(backdate(validity)).toBe(expected);
  });

  it('renews after two thirds of notBefore..notAfter', () => {
    expect(renewalTime(0, 66_000)).toBe(44_000);
    expect(renewalTime(1_000, 30 * 86_400_000 + 1_000)).toBe(20 * 86_400_000 + 1_000);
  });

});
