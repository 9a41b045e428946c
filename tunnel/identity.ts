import type { X509Certificate } from 'node:crypto';
import type { PeerCertificate } from 'node:tls';
import { UnderpassError } from './errors.js';

/**
 * Who is who in Underpass. Every certificate names exactly one connection, and
 * leaf certificates name exactly one role within it, as a SAN URI:
 *
 *   underpass://<namespace>/<connection>                      the connection's CA
 *   underpass://<namespace>/<connection>/worker               a worker of the connection
 *   underpass://<namespace>/<connection>/connector/<name>     one connector of the connection
 *
 * A connection id is written `<namespace>/<connection>`. Every part is a
 * DNS-1123 label, so the forms above need no escaping and have exactly one
 * spelling: parsing accepts only that spelling (no case folding, no
 * percent-decoding, no trailing slash), so two strings name the same identity
 * if and only if they are equal.
 */

export interface ConnectionId {
  namespace: string;
  name: string;
}

export type IdentityRole = 'ca' | 'worker' | 'connector';

export type Identity =
  | { namespace: string; connection: string; role: 'ca' | 'worker'; name?: undefined }
  | { namespace: string; connection: string; role: 'connector'; name: string };

export const IDENTITY_SCHEME = 'underpass:';

const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const LABEL_RULE = 'must be a DNS-1123 label: 1-63 lowercase letters, digits or "-", starting and ending with a letter or digit';

/** Why `value` is not a DNS-1123 label, or undefined if it is one. */
export function dns1123LabelProblem(value: string): string | undefined {
  if (value.length === 0) return `is empty; it ${LABEL_RULE}`;
  if (value.length > 63) return `is ${value.length} characters long; it ${LABEL_RULE}`;
  if (!DNS1123_LABEL.test(value)) return LABEL_RULE;
  return undefined;
}

export function isDns1123Label(value: string): boolean {
  return dns1123LabelProblem(value) === undefined;
}

function checkPart(code: string, what: string, part: string, input = part): void {
  const problem = dns1123LabelProblem(part);
  if (problem) {
    const context = input === part ? '' : ` in ${JSON.stringify(input)}`;
    throw new UnderpassError(code, `${what} ${JSON.stringify(part)}${context} ${problem}`);
  }
}

/** Parses `<namespace>/<name>`; the error names the part that is wrong. */
export function parseConnectionId(value: string): ConnectionId {
  const parts = value.split('/');
  if (parts.length !== 2) {
    throw new UnderpassError(
      'ERR_CONNECTION_ID_INVALID',
      `connection id ${JSON.stringify(value)} must have the form <namespace>/<name>, e.g. "team-a/dc1"`,
    );
  }
  const [namespace, name] = parts as [string, string];
  checkPart('ERR_CONNECTION_ID_INVALID', 'namespace', namespace, value);
  checkPart('ERR_CONNECTION_ID_INVALID', 'connection name', name, value);
  return { namespace, name };
}

export function formatConnectionId(id: ConnectionId): string {
  checkPart('ERR_CONNECTION_ID_INVALID', 'namespace', id.namespace);
  checkPart('ERR_CONNECTION_ID_INVALID', 'connection name', id.name);
  return `${id.namespace}/${id.name}`;
}

/** Checks a connector name (a DNS-1123 label) and returns it unchanged. */
export function parseConnectorName(value: string): string {
  checkPart('ERR_CONNECTOR_NAME_INVALID', 'connector name', value);
  return value;
}

export function caUri(connection: ConnectionId): string {
  return `underpass://${formatConnectionId(connection)}`;
}

export function workerUri(connection: ConnectionId): string {
  return `${caUri(connection)}/worker`;
}

export function connectorUri(connection: ConnectionId, connector: string): string {
  return `${caUri(connection)}/connector/${parseConnectorName(connector)}`;
}

export function formatIdentityUri(identity: Identity): string {
  const connection = connectionOf(identity);
  switch (identity.role) {
    case 'ca':
      return caUri(connection);
    case 'worker':
      return workerUri(connection);
    case 'connector':
      return connectorUri(connection, identity.name);
  }
}

export function connectionOf(identity: Identity): ConnectionId {
  return { namespace: identity.namespace, name: identity.connection };
}

export function sameConnection(a: ConnectionId, b: ConnectionId): boolean {
  return a.namespace === b.namespace && a.name === b.name;
}

/** True for any URI in the underpass scheme (valid or not): such a URI claims an identity. */
export function isIdentityUri(uri: string): boolean {
  return uri.slice(0, IDENTITY_SCHEME.length).toLowerCase() === IDENTITY_SCHEME;
}

/** Parses one of the three canonical identity URI forms (see the header comment). */
export function parseIdentityUri(uri: string): Identity {
  const invalid = (why: string) =>
    new UnderpassError('ERR_IDENTITY_INVALID', `identity URI ${JSON.stringify(uri)} ${why}`);
  const prefix = `${IDENTITY_SCHEME}//`;
  if (!uri.startsWith(prefix)) {
    throw invalid('must start with "underpass://"');
  }
  const parts = uri.slice(prefix.length).split('/');
  const [namespace, connection, role, name] = parts as [string, string, string | undefined, string | undefined];
  const shapeOk =
    (parts.length === 2) || (parts.length === 3 && role === 'worker') || (parts.length === 4 && role === 'connector');
  if (!shapeOk) {
    throw invalid(
      'must be underpass://<namespace>/<connection>, underpass://<namespace>/<connection>/worker ' +
        'or underpass://<namespace>/<connection>/connector/<name>',
    );
  }
  for (const [what, part] of [['namespace', namespace], ['connection', connection], ['connector name', name]] as const) {
    if (part === undefined) continue;
    const problem = dns1123LabelProblem(part);
    if (problem) throw invalid(`has ${what} ${JSON.stringify(part)} that ${problem}`);
  }
  if (role === 'connector') return { namespace, connection, role, name: name as string };
  return { namespace, connection, role: role === 'worker' ? 'worker' : 'ca' };
}

export interface IdentityExpectation {
  connection?: ConnectionId;
  role?: IdentityRole;
}

/**
 * The single underpass identity in a TLS peer certificate, read from Node's
 * `subjectaltname` string. A certificate with no underpass URI, or with more
 * than one, identifies nobody. With `expect`, the identity must also belong to
 * that connection and/or have that role (ERR_IDENTITY_MISMATCH): the CA check
 * already binds a certificate to one connection; this is the second lock.
 */
export function identityFromPeerCertificate(cert: PeerCertificate, expect: IdentityExpectation = {}): Identity {
  if (!cert || Object.keys(cert).length === 0) {
    throw new UnderpassError('ERR_IDENTITY_MISSING', 'the peer presented no certificate');
  }
  const uris = subjectAltNames(cert.subjectaltname ?? '')
    .filter((entry) => entry.type === 'URI' && isIdentityUri(entry.value))
    .map((entry) => entry.value);
  if (uris.length === 0) {
    throw new UnderpassError('ERR_IDENTITY_MISSING', `the peer certificate (${describe(cert)}) carries no underpass:// SAN URI`);
  }
  if (uris.length > 1) {
    throw new UnderpassError(
      'ERR_IDENTITY_AMBIGUOUS',
      `the peer certificate (${describe(cert)}) carries ${uris.length} underpass:// SAN URIs (${uris.join(', ')}); exactly one is allowed`,
    );
  }
  const identity = parseIdentityUri(uris[0] as string);
  checkExpectation(identity, expect);
  return identity;
}

/**
 * The identity in a certificate we hold ourselves (e.g. the connector's own
 * tls.cert, which names the connection whose workers it may talk to), by the
 * same rules as a peer's.
 */
export function identityFromCertificate(cert: X509Certificate, expect: IdentityExpectation = {}): Identity {
  const cn = /^CN=(.*)$/m.exec(cert.subject)?.[1];
  const view = { subjectaltname: cert.subjectAltName ?? '', subject: { CN: cn ?? '' }, serialNumber: cert.serialNumber };
  return identityFromPeerCertificate(view as unknown as PeerCertificate, expect);
}

function checkExpectation(identity: Identity, expect: IdentityExpectation): void {
  const uri = formatIdentityUri(identity);
  if (expect.connection && !sameConnection(connectionOf(identity), expect.connection)) {
    throw new UnderpassError(
      'ERR_IDENTITY_MISMATCH',
      `peer identity ${uri} belongs to connection ${formatConnectionId(connectionOf(identity))}, not ${formatConnectionId(expect.connection)}`,
    );
  }
  if (expect.role && identity.role !== expect.role) {
    throw new UnderpassError('ERR_IDENTITY_MISMATCH', `peer identity ${uri} has role ${identity.role}, expected ${expect.role}`);
  }
}

function describe(cert: PeerCertificate): string {
  const cn = cert.subject?.CN;
  return `subject CN=${Array.isArray(cn) ? cn.join('+') : (cn ?? '')}, serial ${cert.serialNumber ?? '?'}`;
}

export interface SubjectAltName {
  type: string;
  value: string;
}

/**
 * Splits Node's `subjectaltname` text (`DNS:a, URI:b, IP Address:127.0.0.1`).
 * Since Node 17 a value that contains a separator or quote is written as a JSON
 * string (`URI:"a, b"`), so quoted values are decoded rather than split.
 */
export function subjectAltNames(text: string): SubjectAltName[] {
  const names: SubjectAltName[] = [];
  let i = 0;
  while (i < text.length) {
    const colon = text.indexOf(':', i);
    if (colon < 0) break;
    const type = text.slice(i, colon);
    let value: string;
    let end: number;
    if (text[colon + 1] === '"') {
      end = closingQuote(text, colon + 1);
      value = quotedValue(text, colon + 1, end);
      end += 1;
    } else {
      const sep = text.indexOf(', ', colon + 1);
      end = sep < 0 ? text.length : sep;
      value = text.slice(colon + 1, end);
    }
    names.push({ type, value });
    i = end + 2; // skip ", "
  }
  return names;
}

/** Node writes a SAN value holding a quote, comma or control character as a JSON string. */
function quotedValue(text: string, open: number, close: number): string {
  try {
    return JSON.parse(text.slice(open, close + 1)) as string;
  } catch (err) {
    throw new UnderpassError('ERR_IDENTITY_INVALID', `malformed subjectaltname text: a quoted value that is not a JSON string at offset ${open}`, { cause: err });
  }
}

function closingQuote(text: string, open: number): number {
  for (let j = open + 1; j < text.length; j++) {
    if (text[j] === '\\') j++;
    else if (text[j] === '"') return j;
  }
  throw new UnderpassError('ERR_IDENTITY_INVALID', `malformed subjectaltname text: unterminated quoted value in ${JSON.stringify(text)}`);
}
