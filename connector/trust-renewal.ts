/**
 * Whether a trust bundle a worker sent means this connector must renew its certificate now.
 *
 * During a CA rotation the bundle names the signing CA first (docs/operations.md, "Rotating a
 * connection CA"): `[old, next]` while the new CA is introduced, `[new, retiring]` once it signs.
 * Workers pick up each phase at their own moment, so for a while one worker still sends
 * `[old, new]` while another sends `[new, old]`. Renewing whenever our certificate is not issued
 * by the first CA of *some* worker's bundle made a connector holding a fresh certificate of the
 * new CA renew again on every session to a lagging worker, and every renewal replaced every session
 * (four renewals and four rounds of sessions in 1.2 s in a CI run). So: renew only when the
 * bundle's signer is newer than the CA that issued our certificate, or when no CA of the bundle
 * issued it at all (that CA is gone).
 */
import type { X509Certificate } from 'node:crypto';

export function renewForTrust(mine: X509Certificate, bundle: readonly X509Certificate[]): boolean {
  const signer = bundle[0];
  if (!signer || mine.checkIssued(signer)) return false;
  const issuer = bundle.find((ca) => mine.checkIssued(ca));
  if (!issuer) return true;
  return Date.parse(signer.validFrom) > Date.parse(issuer.validFrom);
}
