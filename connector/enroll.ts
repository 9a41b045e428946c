/**
 * Enrollment with a one-time token (docs/connector-lifecycle.md): a connector
 * with no certificate yet makes its own key pair and gets a certificate for it
 * from the worker's enrollment endpoint, on the same public address as the
 * tunnel. The private key never leaves this process.
 *
 * The token is a secret, so it goes only to a worker this connector can
 * verify: first the connection's CA certificates are fetched (public) and one
 * of them must match a hash pinned in the token; then the token goes over TLS
 * verified with that CA, to a certificate that names a worker of the token's
 * connection (the same checks as every session, connector/worker-identity.ts).
 */
import { X509Certificate, createPrivateKey } from 'node:crypto';
import https from 'node:https';
import type { IncomingMessage } from 'node:http';
import type { Logger } from 'pino';
import { caHash, readToken, type TokenClaims } from '../tunnel/enrollment-token.js';
import { errorCode, errorMessage, UnderpassError } from '../tunnel/errors.js';
import { identityFromCertificate } from '../tunnel/identity.js';
import { enrollAnswerSchema } from '../tunnel/operator-channel.js';
import { createKeyAndCsr } from '../tunnel/pki-csr.js';
import { pemCertificates, writePemFiles } from '../tunnel/pki.js';
import type { TlsFiles } from '../tunnel/transport/tls-files.js';
import { Backoff, sleep as sleepFor } from '../tunnel/backoff.js';
import { workerOfConnection } from './worker-identity.js';

const TIMEOUT_MS = 15_000;
const MAX_ANSWER = 128 * 1024;

/** Refusals that no other worker would answer differently: stop at the first. */
const FINAL = /^(TOKEN_|CONNECTOR_NOT_ALLOWED|CERTIFICATE_REVOKED|CONNECTOR_REVOKED|ERR_ENROLL_CA_PIN)/;

export interface EnrollOptions {
  token: string;
  workers: readonly URL[];
  /** Where the pair and the CA certificates go (tls.crt, tls.key, ca.crt). */
  files: TlsFiles;
  /** The connector's configured name: it must be the one the token enrolls. */
  name?: string;
  log: Logger;
  now?: () => Date;
  /**
   * When no worker could enroll it for a reason another attempt may change (refused, timed out,
   * busy, rate-limited, no name yet), try again after a jittered backoff from initialDelayMs up to
   * maxDelayMs, until the token would expire first. Default 1 s .. 30 s (the reconnect defaults).
   */
  retry?: { initialDelayMs: number; maxDelayMs: number };
  sleep?: (ms: number) => Promise<void>;
}

/** Enrolls and writes the files; returns the token's claims (connection, connector). */
export async function enroll(o: EnrollOptions): Promise<TokenClaims> {
  const claims = readToken(o.token);
  if (o.name !== undefined && o.name !== claims.connector) {
    throw new UnderpassError('ERR_ENROLL_NAME', `the token enrolls connector "${claims.connector}", but this connector's name is "${o.name}"`);
  }
  if (claims.expiresAt.getTime() <= (o.now?.() ?? new Date()).getTime()) {
    throw new UnderpassError('TOKEN_EXPIRED', `the token expired at ${claims.expiresAt.toISOString()}; ask for a new one (underpass connector token)`);
  }
  const { keyPem, csrPem } = await createKeyAndCsr(claims.connector);
  if (o.workers.length === 0) throw new UnderpassError('ERR_ENROLL', 'no worker URL to enroll through');
  // A connector is often started before its workers answer (installed with the cluster side, the
  // pods still starting): it waits for them, as its sessions do, instead of exiting.
  const backoff = new Backoff({ initialMs: o.retry?.initialDelayMs ?? 1_000, maxMs: o.retry?.maxDelayMs ?? 30_000 });
  const now = (): number => (o.now?.() ?? new Date()).getTime();
  for (;;) {
    let last: Error | undefined;
    for (const url of o.workers) {
      try {
        const answer = await enrollAt(url, claims, o.token, csrPem);
        checkAnswer(answer, keyPem, claims);
        await writePemFiles(dirOf(o.files), {}, {}); // the directory, mode 0700
        await writeFiles(o.files, { cert: answer.certificate, key: keyPem, ca: answer.ca });
        o.log.info({ connector: claims.connector, connection: `${claims.connection.namespace}/${claims.connection.name}`, worker: url.href, serial: new X509Certificate(answer.certificate).serialNumber },
          `enrolled as connector "${claims.connector}" of ${claims.connection.namespace}/${claims.connection.name} through ${url.href}`);
        return claims;
      } catch (err) {
        last = err as Error;
        o.log.warn({ worker: url.href, code: errorCode(err) }, `enrollment through ${url.href} failed (${errorCode(err) ?? 'ERROR'}): ${errorMessage(err)}`);
        if (FINAL.test(errorCode(err) ?? '')) throw err;
      }
    }
    const wait = backoff.next();
    if (now() + wait >= claims.expiresAt.getTime()) {
      throw new UnderpassError('TOKEN_EXPIRED', `no worker enrolled this connector before the token expired at ${claims.expiresAt.toISOString()}; ` +
        `last error: ${errorMessage(last)}; ask for a new token (underpass connector token)`, { cause: last });
    }
    o.log.info({ attempt: backoff.attempt, retryInMs: wait }, `no worker could enroll this connector yet; trying again in ${(wait / 1000).toFixed(1)} s (until the token expires at ${claims.expiresAt.toISOString()})`);
    await (o.sleep ?? sleepFor)(wait);
  }
}

async function enrollAt(wss: URL, claims: TokenClaims, token: string, csr: string): Promise<unknown> {
  // The same host and port as the tunnel (wss://), as plain HTTPS requests.
  const worker = new URL(wss.href.replace(/^wss:/, 'https:'));
  const bundle = await request(new URL('/v1/enroll/ca', worker), { method: 'GET', rejectUnauthorized: false });
  if (typeof bundle !== 'string') throw new UnderpassError('ERR_ENROLL', `${worker.href} did not answer with CA certificates`);
  const pinned = pemCertificates(bundle).filter((pem) => claims.caHashes.includes(safeHash(pem)));
  if (pinned.length === 0) {
    throw new UnderpassError('ERR_ENROLL_CA_PIN', `the CA certificates ${worker.href} serves do not match the token (sha256 pins): not this connection's worker, or a token from before a CA rotation; the token was not sent`);
  }
  const body = JSON.stringify({ token, csr });
  return request(new URL('/v1/enroll', worker), {
    method: 'POST', ca: pinned.join(''), checkServerIdentity: workerOfConnection(claims.connection), body,
  });
}

function safeHash(pem: string): string {
  try {
    return caHash(pem);
  } catch {
    return '';
  }
}

function checkAnswer(raw: unknown, keyPem: string, claims: TokenClaims): asserts raw is { certificate: string; ca: string; connector: string } {
  const answer = enrollAnswerSchema.safeParse(raw);
  if (!answer.success) throw new UnderpassError('ERR_ENROLL', 'the enrollment answer is not {certificate, ca, connector}');
  const cert = new X509Certificate(answer.data.certificate);
  if (!cert.checkPrivateKey(createPrivateKey(keyPem))) throw new UnderpassError('ERR_ENROLL', 'the certificate received is not for the key made here');
  const id = identityFromCertificate(cert, { connection: claims.connection, role: 'connector' });
  if (id.name !== claims.connector) throw new UnderpassError('ERR_ENROLL', `the certificate received names connector ${id.name}, not ${claims.connector}`);
}

function dirOf(files: TlsFiles): string {
  return files.cert.slice(0, files.cert.lastIndexOf('/')) || '.';
}

async function writeFiles(files: TlsFiles, pems: { cert: string; key: string; ca: string }): Promise<void> {
  const { replaceFile } = await import('./credentials.js');
  await replaceFile(files.key, pems.key, 0o600);
  await replaceFile(files.cert, pems.cert, 0o644);
  await replaceFile(files.ca, pems.ca, 0o644);
}

interface RequestOptions {
  method: 'GET' | 'POST';
  rejectUnauthorized?: boolean;
  ca?: string;
  checkServerIdentity?: https.RequestOptions['checkServerIdentity'];
  body?: string;
}

/** One HTTPS request; JSON answers are parsed, PEM text is returned as is, refusals throw with their reason. */
function request(url: URL, o: RequestOptions): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const req = https.request(url, {
      method: o.method, timeout: TIMEOUT_MS, minVersion: 'TLSv1.2',
      ...(o.rejectUnauthorized === false ? { rejectUnauthorized: false } : { ca: o.ca, checkServerIdentity: o.checkServerIdentity }),
      headers: o.body ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(o.body) } : {},
    }, (res) => void readAnswer(res).then(resolve, reject));
    req.on('timeout', () => req.destroy(new UnderpassError('ETIMEDOUT', `no answer from ${url.origin} within ${TIMEOUT_MS} ms`)));
    req.on('error', (err) => reject(errorCode(err)?.startsWith('ERR_WORKER') ? err : new UnderpassError(errorCode(err) ?? 'ERR_DIAL', `${url.origin}: ${err.message}`, { cause: err })));
    req.end(o.body);
  });
}

async function readAnswer(res: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of res as AsyncIterable<Buffer>) {
    size += c.length;
    if (size > MAX_ANSWER) {
      res.destroy();
      throw new UnderpassError('ERR_ENROLL', 'the answer is too large');
    }
    chunks.push(c);
  }
  const text = Buffer.concat(chunks).toString('utf8');
  if (res.statusCode === 200) {
    if ((res.headers['content-type'] ?? '').includes('json')) return JSON.parse(text) as unknown;
    return text;
  }
  let reason = `HTTP_${res.statusCode}`;
  let message = text.trim().slice(0, 300);
  try {
    const j = JSON.parse(text) as { reason?: string; error?: string };
    if (j.reason) reason = j.reason;
    if (j.error) message = j.error;
  } catch {
    // not JSON: keep the text
  }
  throw new UnderpassError(reason, `enrollment refused (${res.statusCode} ${reason}): ${message}`);
}
