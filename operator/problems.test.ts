/** Which problem a failed API request shows, and that the board logs each change once. */
import { describe, expect, it } from '@jest/globals';
import { ApiException } from '@kubernetes/client-node';
import { pino } from 'pino';
import { Writable } from 'node:stream';
import { UnderpassError } from '../tunnel/errors.js';
import { forbidden, ProblemBoard, problemOf, type Request } from './problems.js';

function apiError(code: number, message: string, details?: { kind: string; name: string }): ApiException<string> {
  const reason = { 403: 'Forbidden', 404: 'NotFound', 409: 'Conflict', 500: 'InternalError' }[code];
  return new ApiException(code, message, JSON.stringify({ kind: 'Status', apiVersion: 'v1', status: 'Failure', message, reason, code, ...(details ? { details } : {}) }), {});
}

const lease: Request = { verb: 'create', resource: 'leases.coordination.k8s.io', namespace: 'underpass-system' };
const tcList: Request = { verb: 'list/watch', resource: 'tunnelconnections.underpass.dev', crd: true };

describe('problemOf', () => {
  it.each([
    ['a missing namespace, whatever was asked', apiError(404, 'namespaces "underpass-system" not found', { kind: 'namespaces', name: 'underpass-system' }), lease,
      { code: 'NamespaceMissing', message: 'namespace underpass-system does not exist: create it (kubectl create namespace underpass-system) or set --pod-namespace (POD_NAMESPACE) to the namespace the operator runs in' }],
    ['a 404 on one of our CRDs: not installed', apiError(404, 'the server could not find the requested resource'), tcList,
      { code: 'CrdMissing', message: 'CRD tunnelconnections.underpass.dev is not installed: kubectl apply -f crds/ (or install the underpass-operator chart)' }],
    ['a 403: the verb, the resource, where, and the fix', apiError(403, 'leases.coordination.k8s.io is forbidden: User "op" cannot create resource "leases"'), lease,
      { code: 'Forbidden', message: 'forbidden: create leases.coordination.k8s.io in namespace underpass-system: apply operator/rbac/ or the underpass-operator chart (403 leases.coordination.k8s.io is forbidden: User "op" cannot create resource "leases")' }],
    ['a 403 inside a wrapper ({ cause })', new UnderpassError('ERR_OPERATOR_TLS', 'cannot write', { cause: apiError(403, 'secrets is forbidden') }), { verb: 'create', resource: 'secrets', namespace: 'underpass-system' },
      { code: 'Forbidden', message: 'forbidden: create secrets in namespace underpass-system: apply operator/rbac/ or the underpass-operator chart (403 secrets is forbidden)' }],
    ['any other API error, with its message', apiError(500, 'etcdserver: request timed out'), tcList,
      { code: 'ApiError', message: 'cannot list/watch tunnelconnections.underpass.dev in all namespaces: 500 etcdserver: request timed out' }],
    ['a refused connection', Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:6443'), { code: 'ECONNREFUSED' }), lease,
      { code: 'ApiError', message: 'cannot create leases.coordination.k8s.io in namespace underpass-system: connect ECONNREFUSED 127.0.0.1:6443' }],
  ])('%s', (_name, err, req, want) => {
    expect(problemOf(err, req)).toEqual(want);
  });

  it('a lost optimistic-concurrency race (409) is no problem', () => {
    expect(problemOf(apiError(409, 'the object has been modified'), lease)).toBeUndefined();
  });

  it('a 404 on a built-in resource is not taken for a missing CRD', () => {
    expect(problemOf(apiError(404, 'not found'), { verb: 'list/watch', resource: 'deployments.apps' })?.code).toBe('ApiError');
  });
});

describe('forbidden', () => {
  it('groups the denied verbs by place and resource', () => {
    expect(forbidden([
      { verb: 'create', resource: 'deployments.apps' }, { verb: 'delete', resource: 'deployments.apps' }, { verb: 'get', resource: 'services' },
      { verb: 'update', resource: 'leases.coordination.k8s.io', namespace: 'underpass-system' },
    ]).message).toBe('forbidden: create/delete deployments.apps, get services in all namespaces; update leases.coordination.k8s.io in namespace underpass-system: '
      + 'apply operator/rbac/ or the underpass-operator chart');
  });
});

describe('ProblemBoard', () => {
  function board(): { board: ProblemBoard; lines: Array<{ level: string; msg: string; source?: string }>; changes: number[] } {
    const lines: Array<{ level: string; msg: string }> = [];
    const sink = new Writable({ write(chunk: Buffer, _enc, cb) { lines.push(JSON.parse(chunk.toString())); cb(); } });
    const changes: number[] = [];
    const logger = pino({ formatters: { level: (label) => ({ level: label }) } }, sink);
    const b = new ProblemBoard(logger, () => changes.push(b.list.length));
    return { board: b, lines, changes };
  }
  const crd = { code: 'CrdMissing' as const, message: 'CRD tunnelconnections.underpass.dev is not installed: kubectl apply -f crds/' };
  const ns = { code: 'NamespaceMissing' as const, message: 'namespace x does not exist: create it' };

  it('logs a problem once at error level however often it is reported, and once more when it is resolved', async () => {
    const { board: b, lines, changes } = board();
    for (let i = 0; i < 5; i++) b.set('informer:tunnelconnections.underpass.dev', crd);
    b.set('informer:tunnelconnections.underpass.dev', undefined);
    b.set('informer:tunnelconnections.underpass.dev', undefined);
    await new Promise((r) => setImmediate(r));
    expect(lines.map((l) => [l.level, l.msg])).toEqual([['error', crd.message], ['info', `resolved: ${crd.message}`]]);
    expect(changes).toEqual([1, 0]);
  });

  it('logs again when the reason of a source changes', async () => {
    const { board: b, lines } = board();
    b.set('lease', ns);
    b.set('lease', { code: 'Forbidden', message: 'forbidden: create leases.coordination.k8s.io in namespace x: apply operator/rbac/' });
    await new Promise((r) => setImmediate(r));
    expect(lines.map((l) => l.msg)).toEqual([ns.message, 'forbidden: create leases.coordination.k8s.io in namespace x: apply operator/rbac/']);
  });

  it('withdraws a problem that no longer applies without calling it resolved', async () => {
    const { board: b, lines, changes } = board();
    b.set('report-endpoint', ns);
    b.withdraw('report-endpoint', 'no longer the leader');
    b.withdraw('report-endpoint', 'no longer the leader');
    await new Promise((r) => setImmediate(r));
    expect(lines.map((l) => [l.level, l.msg])).toEqual([['error', ns.message], ['info', `no longer the leader; no longer reported: ${ns.message}`]]);
    expect(b.list).toEqual([]);
    expect(changes).toEqual([1, 0]);
  });

  it('lists one message once even when several sources report it, and counts by code', () => {
    const { board: b } = board();
    b.set('informer:a', crd);
    b.set('informer:b', crd);
    b.set('lease', ns);
    expect(b.list).toEqual([crd, ns]);
    expect(b.count('CrdMissing')).toBe(1);
    expect(b.count('Forbidden')).toBe(0);
  });
});
