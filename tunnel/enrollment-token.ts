/**
 * One-time enrollment tokens (docs/connector-lifecycle.md): a short-lived JWT
 * (ES256) the operator signs with its per-connection token key, bound to one
 * connection and one connector name, single use (its `jti` is recorded in the
 * TunnelConnector's status when issued and when used).
 *
 *   iss  underpass-operator
 *   aud  underpass://<ns>/<connection>                (the connection)
 *   sub  underpass://<ns>/<connection>/connector/<n>  (the connector it enrolls)
 *   jti  random id          iat, exp   (exp - iat = the requested ttl, at most 24 h)
 *   cah  SHA-256 (hex) of each CA certificate the connection trusts: the connector pins the
 *        worker's CA with it before it sends the token anywhere
 *
 * Whoever holds a token can enroll that one connector once, until it expires;
 * treat it like a password. It never appears in logs or audit lines (its jti may).
 */
import { createHash, X509Certificate, type KeyObject } from 'node:crypto';
import { decodeJwt, errors as joseErrors, jwtVerify, SignJWT } from 'jose';
import { UnderpassError } from './errors.js';
import { caUri, connectorUri, parseIdentityUri, type ConnectionId } from './identity.js';

export const TOKEN_ISSUER = 'underpass-operator';
export const MAX_TOKEN_TTL_MS = 24 * 3_600_000;
/** A token is a few hundred characters; the enrollment endpoint refuses longer ones. */
export const MAX_TOKEN_CHARS = 4096;

export interface TokenClaims {
  connection: ConnectionId;
  connector: string;
  jti: string;
  expiresAt: Date;
  /** SHA-256 (hex) of the CA certificates to pin. */
  caHashes: string[];
}

/** Why a token is refused: the code the connector sees and the audit line records. */
export type TokenRefusal = 'TOKEN_MALFORMED' | 'TOKEN_INVALID' | 'TOKEN_EXPIRED' | 'TOKEN_WRONG_CONNECTION' | 'TOKEN_USED' | 'TOKEN_UNKNOWN';

export class TokenError extends UnderpassError {
  constructor(code: TokenRefusal, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}

export function caHash(pem: string): string {
  return createHash('sha256').update(new X509Certificate(pem).raw).digest('hex');
}

export async function signToken(key: KeyObject, c: Omit<TokenClaims, 'expiresAt'> & { ttlMs: number; now?: Date }): Promise<string> {
  const now = Math.floor((c.now ?? new Date()).getTime() / 1000);
  return new SignJWT({ cah: c.caHashes })
    .setProtectedHeader({ alg: 'ES256', typ: 'JWT' })
    .setIssuer(TOKEN_ISSUER)
    .setAudience(caUri(c.connection))
    .setSubject(connectorUri(c.connection, c.connector))
    .setJti(c.jti)
    .setIssuedAt(now)
    .setExpirationTime(now + Math.ceil(c.ttlMs / 1000))
    .sign(key);
}

/**
 * The claims as written, without checking the signature: for the connector
 * (which cannot check it and only needs to know where to enroll and which CA
 * to pin) and for precise refusals. Never a basis for a decision on its own.
 */
export function readToken(token: string): TokenClaims {
  if (token.length > MAX_TOKEN_CHARS) throw new TokenError('TOKEN_MALFORMED', `the token is ${token.length} characters long (at most ${MAX_TOKEN_CHARS})`);
  let payload: Record<string, unknown>;
  try {
    payload = decodeJwt(token);
  } catch (err) {
    throw new TokenError('TOKEN_MALFORMED', 'not an enrollment token (a JWT from "underpass connector token")', { cause: err });
  }
  const sub = typeof payload.sub === 'string' ? payload.sub : '';
  let identity;
  try {
    identity = parseIdentityUri(sub);
  } catch (err) {
    throw new TokenError('TOKEN_MALFORMED', 'the token names no connector (sub)', { cause: err });
  }
  if (identity.role !== 'connector') throw new TokenError('TOKEN_MALFORMED', `the token's subject ${sub} is not a connector`);
  const cah = Array.isArray(payload.cah) ? payload.cah.filter((h): h is string => typeof h === 'string' && /^[0-9a-f]{64}$/.test(h)) : [];
  if (typeof payload.jti !== 'string' || typeof payload.exp !== 'number' || cah.length === 0) {
    throw new TokenError('TOKEN_MALFORMED', 'the token lacks jti, exp or cah');
  }
  return {
    connection: { namespace: identity.namespace, name: identity.connection },
    connector: identity.name,
    jti: payload.jti,
    expiresAt: new Date(payload.exp * 1000),
    caHashes: cah,
  };
}

/**
 * Checks a token for `connection` with the connection's token key: the
 * signature, the issuer, the audience (this connection), the expiry. Single
 * use is checked by the caller against the TunnelConnector's status.
 */
export async function verifyToken(token: string, key: KeyObject, connection: ConnectionId, now = new Date()): Promise<TokenClaims> {
  const claims = readToken(token);
  const expected = caUri(connection);
  if (caUri(claims.connection) !== expected) {
    throw new TokenError('TOKEN_WRONG_CONNECTION', `the token is for connection ${claims.connection.namespace}/${claims.connection.name}, not ${connection.namespace}/${connection.name}`);
  }
  try {
    await jwtVerify(token, key, { issuer: TOKEN_ISSUER, audience: expected, algorithms: ['ES256'], currentDate: now, clockTolerance: 0 });
  } catch (err) {
    if (err instanceof joseErrors.JWTExpired) throw new TokenError('TOKEN_EXPIRED', `the token expired at ${claims.expiresAt.toISOString()}; ask for a new one (underpass connector token)`, { cause: err });
    throw new TokenError('TOKEN_INVALID', 'the token\'s signature or claims do not verify (tampered, or not issued by this operator for this connection)', { cause: err });
  }
  return claims;
}
