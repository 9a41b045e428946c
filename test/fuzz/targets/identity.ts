/**
 * Identities from certificates (tunnel/identity.ts): `parseIdentityUri`, and
 * `identityFromPeerCertificate`, which splits Node's `subjectaltname` text
 * (`subjectAltNames`) and requires exactly one underpass:// URI. Inputs:
 * canonical URIs (round trip), mutated URIs, random text; SAN lists written
 * the way Node writes them (values with `,` `"` `\` `'` or control characters
 * as JSON strings); and, for a share of inputs, real certificates whose SAN
 * URIs hold arbitrary text, read back through Node's X509Certificate.
 *
 * Properties: format(parse(u)) = u and parse(format(id)) = id; only
 * UnderpassError with an ERR_IDENTITY_* code is thrown; a SAN list written as
 * Node writes it splits back into the same names.
 */
import fc from 'fast-check';
import * as x509 from '@peculiar/x509';
import { X509Certificate, webcrypto } from 'node:crypto';
import type { PeerCertificate } from 'node:tls';
import { UnderpassError } from '../../../tunnel/errors.js';
import {
  formatIdentityUri, identityFromPeerCertificate, parseIdentityUri, subjectAltNames, type Identity, type SubjectAltName,
} from '../../../tunnel/identity.js';
import { anyText, dnsLabel } from '../arbitraries.js';
import { mutated } from '../bytes.js';
import { assert, assertEqual, attempt } from '../expect.js';
import { parsing, parsingAsync, type FuzzTarget } from '../harness.js';

const CODES = ['ERR_IDENTITY_INVALID', 'ERR_IDENTITY_MISSING', 'ERR_IDENTITY_AMBIGUOUS', 'ERR_IDENTITY_MISMATCH', 'ERR_CONNECTION_ID_INVALID', 'ERR_CONNECTOR_NAME_INVALID'];

const label = fc.stringMatching(/^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/);
const identityArb: fc.Arbitrary<Identity> = fc.oneof(
  fc.record({ namespace: label, connection: label, role: fc.constantFrom('ca' as const, 'worker' as const) }),
  fc.record({ namespace: label, connection: label, role: fc.constant('connector' as const), name: label }),
);

const uriArb: fc.Arbitrary<string> = fc.oneof(
  identityArb.map(formatIdentityUri),
  mutated(identityArb.map((id) => Buffer.from(formatIdentityUri(id)))).map((b) => b.toString('latin1')),
  fc.tuple(fc.constantFrom('underpass://', 'UNDERPASS://', 'underpass:', 'underpass:///', 'https://'), fc.array(fc.oneof(dnsLabel, anyText(10)), { maxLength: 5 }))
    .map(([scheme, parts]) => scheme + parts.join('/')),
  anyText(60),
);

/** A SAN value as Node prints it: JSON-quoted when it holds a separator, a quote, a backslash or a control character. */
function nodeValue(value: string): string {
  // eslint-disable-next-line no-control-regex
  return /[,"\\'\x00-\x1f\x7f]/.test(value) ? JSON.stringify(value) : value;
}

const sanArb: fc.Arbitrary<SubjectAltName> = fc.record({
  type: fc.constantFrom('DNS', 'URI', 'IP Address', 'email', 'othername'),
  value: fc.oneof(uriArb, anyText(30)).filter((v) => !/[\ud800-\udfff]/.test(v)),
});

function identityOf(subjectaltname: string): Identity | undefined {
  let identity: Identity | undefined;
  const cert = { subjectaltname, subject: { CN: 'fuzz' }, serialNumber: '01' } as unknown as PeerCertificate;
  attempt(() => (identity = identityFromPeerCertificate(cert)), [UnderpassError], CODES);
  return identity;
}

const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
let keys: webcrypto.CryptoKeyPair | undefined;

/** Node's subjectaltname text of a real certificate with these names. */
async function realCertificateSans(names: Array<{ type: 'url' | 'dns'; value: string }>): Promise<string> {
  x509.cryptoProvider.set(webcrypto);
  keys ??= await webcrypto.subtle.generateKey(ALG, false, ['sign', 'verify']) as webcrypto.CryptoKeyPair;
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: '01', name: 'CN=fuzz', notBefore: new Date(0), notAfter: new Date(86_400_000), keys, signingAlgorithm: ALG,
    extensions: [new x509.SubjectAlternativeNameExtension(names)],
  });
  return new X509Certificate(Buffer.from(cert.rawData)).subjectAltName ?? '';
}

export const identityTarget: FuzzTarget = {
  name: 'identity',
  parser: 'tunnel/identity.ts parseIdentityUri, subjectAltNames, identityFromPeerCertificate',
  maxHeapGrowth: 8 << 20,
  properties: [
    {
      name: 'round-trip',
      arbitrary: identityArb,
      check(id: Identity) {
        const uri = formatIdentityUri(id);
        assertEqual(parsing(() => parseIdentityUri(uri)), id, 'parse(format(identity))');
        assertEqual(identityOf(`DNS:x.example, URI:${uri}, IP Address:127.0.0.1`), id, 'the identity in a SAN list');
      },
    },
    {
      name: 'uris',
      weight: 3,
      arbitrary: uriArb,
      check(uri: string) {
        let id: Identity | undefined;
        parsing(() => attempt(() => (id = parseIdentityUri(uri)), [UnderpassError], ['ERR_IDENTITY_INVALID']));
        if (id) assertEqual(formatIdentityUri(id), uri, 'an accepted URI is canonical');
      },
    },
    {
      name: 'san lists',
      weight: 3,
      arbitrary: fc.array(sanArb, { maxLength: 5 }),
      check(names: SubjectAltName[]) {
        const text = names.map((n) => `${n.type}:${nodeValue(n.value)}`).join(', ');
        assertEqual(parsing(() => subjectAltNames(text)), names, 'subjectAltNames(text as Node writes it)');
        identityOf(text);
      },
    },
    {
      name: 'san text',
      weight: 2,
      // Text Node never writes (a quote left open, a bad escape): still refused with a coded error.
      arbitrary: fc.oneof(
        anyText(80),
        fc.array(sanArb, { maxLength: 4 }).chain((names) => mutated(fc.constant(Buffer.from(names.map((n) => `${n.type}:${nodeValue(n.value)}`).join(', ')))))
          .map((b) => b.toString('utf8')),
      ),
      check(text: string) {
        parsing(() => identityOf(text));
      },
    },
    {
      name: 'real certificates',
      weight: 0.2,
      async: true,
      arbitrary: fc.array(fc.record({
        type: fc.constantFrom('url' as const, 'dns' as const),
        // IA5String: ASCII only, control characters included.
        value: fc.oneof(uriArb, fc.string({ unit: fc.integer({ min: 0, max: 0x7f }).map((c) => String.fromCharCode(c)), maxLength: 40 }))
          .filter((v) => /^[\x00-\x7f]*$/.test(v)),
      }), { minLength: 1, maxLength: 3 }),
      async check(names: Array<{ type: 'url' | 'dns'; value: string }>) {
        const text = await parsingAsync(() => realCertificateSans(names));
        const expected = names.map((n) => ({ type: n.type === 'url' ? 'URI' : 'DNS', value: n.value }));
        assertEqual(subjectAltNames(text), expected, `Node's text ${JSON.stringify(text)} split`);
        const uris = names.filter((n) => n.type === 'url' && n.value.toLowerCase().startsWith('underpass:'));
        const id = identityOf(text);
        if (id) assert(uris.length === 1 && formatIdentityUri(id) === uris[0]!.value, 'an identity from a certificate without exactly that one URI');
      },
    },
  ],
};
