/**
 * Which workers a connector talks to. The worker's certificate must chain to
 * the connection CA in tls.ca (Node checks that), name the host the connector
 * dialled (Node's checkServerIdentity, kept), and carry the worker identity of
 * the connection named in the connector's own certificate:
 * `underpass://<ns>/<conn>/worker`. The last check matters when a CA is shared
 * by several connections (on purpose, or a misconfigured trust bundle): a
 * worker of another connection, or of the same connection name in another
 * namespace, is refused before a byte of the tunnel protocol is sent.
 */
import { X509Certificate } from 'node:crypto';
import { checkServerIdentity, type PeerCertificate } from 'node:tls';
import { UnderpassError } from '../tunnel/errors.js';
import {
  connectionOf, formatConnectionId, formatIdentityUri, identityFromCertificate, identityFromPeerCertificate, workerUri, type ConnectionId,
} from '../tunnel/identity.js';

export type ServerIdentityCheck = (host: string, cert: PeerCertificate) => Error | undefined;

/**
 * Reads the connector's own certificate (it must name a connector called `name`) and returns the
 * check for the worker's certificate in the TLS handshake.
 */
export function workerIdentityCheck(ownCertPem: Buffer, name: string): ServerIdentityCheck {
  let own;
  try {
    own = identityFromCertificate(new X509Certificate(ownCertPem), { role: 'connector' });
  } catch (err) {
    throw new UnderpassError('ERR_CONNECTOR_CERT', `tls.cert does not identify a connector: ${(err as Error).message}`, { cause: err });
  }
  if (own.name !== name) {
    throw new UnderpassError('ERR_CONNECTOR_CERT', `tls.cert is for connector "${own.name}" (${formatIdentityUri(own)}), but this connector's name is "${name}"`);
  }
  return workerOfConnection(connectionOf(own));
}

/** The same check for a connector that has no certificate yet (enrollment: the connection comes from its token). */
export function workerOfConnection(connection: ConnectionId): ServerIdentityCheck {
  const expected = workerUri(connection);
  return (host, cert) => {
    const hostProblem = checkServerIdentity(host, cert);
    if (hostProblem) return hostProblem;
    try {
      identityFromPeerCertificate(cert, { connection, role: 'worker' });
      return undefined;
    } catch (err) {
      return new UnderpassError('ERR_WORKER_IDENTITY',
        `the worker's certificate is not a worker of connection ${formatConnectionId(connection)} (expected ${expected}): ${(err as Error).message}`, { cause: err });
    }
  };
}
