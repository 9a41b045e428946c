/**
 * The connection's PKI as Secrets: `<tc>-ca` (created once, never rotated
 * silently) and `<tc>-worker-tls` (kubernetes.io/tls + ca.crt), reissued
 * when missing, when the names connectors dial change, when signed by
 * another CA, or within `renewBefore` of expiry. Workers re-read the mounted
 * files, so renewal never restarts a pod or drops a session.
 */
import type * as k8s from '@kubernetes/client-node';
import { parseDuration } from '../tunnel/duration.js';
import { UnderpassError } from '../tunnel/errors.js';
import { certificateInfo, createCA, issueWorkerCert, loadCA, type CertificateAuthority } from '../tunnel/pki.js';
import { ownerReference } from './desired.js';
import type { Kube } from './kube.js';
import { namesFor, ownedLabels } from './names.js';
import type { TunnelConnection } from './types.js';

export interface PkiResult {
  caPem: string;
  notAfter: Date;
  renewalTime: Date;
  /** What happened this pass (for Events). */
  action: 'none' | 'ca-created' | 'issued' | 'renewed' | 'reissued';
  reason?: string;
}

export function workerSans(tc: TunnelConnection, extra: string[] = []): string[] {
  const svc = namesFor(tc.metadata.name).tunnelService;
  const ns = tc.metadata.namespace;
  const names = [svc, `${svc}.${ns}`, `${svc}.${ns}.svc`, `${svc}.${ns}.svc.cluster.local`, ...(tc.spec.endpoint.hosts ?? []), ...extra];
  if (tc.spec.endpoint.route?.host) names.push(tc.spec.endpoint.route.host);
  return [...new Set(names.map((n) => n.toLowerCase()))].sort();
}

const b64 = (s: string): string => Buffer.from(s).toString('base64');
const unb64 = (s: string | undefined): string => (s ? Buffer.from(s, 'base64').toString('utf8') : '');

export async function ensurePki(
  kube: Kube,
  tc: TunnelConnection,
  secrets: { ca: k8s.V1Secret | undefined; workerTls: k8s.V1Secret | undefined },
  sans: string[],
  now: Date,
): Promise<PkiResult> {
  const names = namesFor(tc.metadata.name);
  const ns = tc.metadata.namespace;
  const connection = { namespace: ns, name: tc.metadata.name };
  let action: PkiResult['action'] = 'none';
  let reason: string | undefined;

  let ca: CertificateAuthority;
  let caPem: string;
  if (!secrets.ca) {
    const created = await createCA({ connection, now });
    caPem = created.certPem;
    ca = await loadCA(created.certPem, created.keyPem);
    await kube.write('create', 'secrets', () => kube.core.createNamespacedSecret({
      namespace: ns,
      body: {
        apiVersion: 'v1', kind: 'Secret', type: 'Opaque',
        metadata: { name: names.caSecret, namespace: ns, labels: ownedLabels(tc.metadata.name), ownerReferences: [ownerReference(tc)] },
        data: { 'ca.crt': b64(created.certPem), 'ca.key': b64(created.keyPem) },
      },
    }));
    action = 'ca-created';
  } else {
    caPem = unb64(secrets.ca.data?.['ca.crt']);
    try {
      ca = await loadCA(caPem, unb64(secrets.ca.data?.['ca.key']));
    } catch (err) {
      throw new UnderpassError('ERR_CA_INVALID', `Secret ${ns}/${names.caSecret} does not hold a usable CA for this connection: ${(err as Error).message}`, { cause: err });
    }
  }

  const duration = parseDuration(tc.spec.certificates.duration, 'spec.certificates.duration');
  const renewBefore = parseDuration(tc.spec.certificates.renewBefore, 'spec.certificates.renewBefore');
  const existing = unb64(secrets.workerTls?.data?.['tls.crt']);
  let needs: string | undefined;
  if (!existing) needs = 'missing';
  else {
    try {
      const info = certificateInfo(existing);
      const have = [...info.dnsNames, ...info.ips].map((n) => n.toLowerCase()).sort();
      if (unb64(secrets.workerTls?.data?.['ca.crt']) !== caPem) needs = 'signed by another CA';
      else if (have.join(',') !== sans.join(',')) needs = `names changed (${sans.join(', ')})`;
      else if (now.getTime() >= info.notAfter.getTime() - renewBefore) needs = `expires ${info.notAfter.toISOString()}`;
      else if (info.notAfter.getTime() - info.notBefore.getTime() > duration + 10 * 60_000) needs = 'duration shortened';
      else return { caPem, notAfter: info.notAfter, renewalTime: new Date(info.notAfter.getTime() - renewBefore), action };
    } catch {
      needs = 'unreadable';
    }
  }

  const issued = await issueWorkerCert(ca, { sans, now, notAfter: new Date(now.getTime() + duration) });
  const body: k8s.V1Secret = {
    apiVersion: 'v1', kind: 'Secret', type: 'kubernetes.io/tls',
    metadata: { name: names.workerTlsSecret, namespace: ns, labels: ownedLabels(tc.metadata.name), ownerReferences: [ownerReference(tc)] },
    data: { 'tls.crt': b64(issued.certPem), 'tls.key': b64(issued.keyPem), 'ca.crt': b64(caPem) },
  };
  if (secrets.workerTls) {
    body.metadata!.resourceVersion = secrets.workerTls.metadata?.resourceVersion;
    await kube.write('update', 'secrets', () => kube.core.replaceNamespacedSecret({ name: names.workerTlsSecret, namespace: ns, body }));
    action = needs === 'missing' ? 'issued' : needs?.startsWith('expires') ? 'renewed' : 'reissued';
  } else {
    await kube.write('create', 'secrets', () => kube.core.createNamespacedSecret({ namespace: ns, body }));
    if (action === 'none') action = 'issued';
  }
  reason = needs;
  const info = certificateInfo(issued.certPem);
  return { caPem, notAfter: info.notAfter, renewalTime: new Date(info.notAfter.getTime() - renewBefore), action, ...(reason ? { reason } : {}) };
}
