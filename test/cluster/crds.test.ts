/**
 * The CRDs in crds/ against a real kube-apiserver (test/env): they install with
 * `kubectl apply -f crds/`, `kubectl explain` shows their descriptions, every manifest in
 * docs/examples/ is really created and reads back with defaults filled in, `kubectl get`
 * prints the printer columns, the status subresource is separate from spec, and invalid
 * objects are refused by the API server with a message naming the field and the problem.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import fs from 'node:fs';
import path from 'node:path';
import { parse } from 'yaml';
import { CRD_DIR, loadCrds, type Schema } from './crd-reference.js';
import { REPO_ROOT, startTestEnv, TESTENV_START_TIMEOUT_MS, type CommandResult, type TestEnv } from './testenv.js';

const EXAMPLES_DIR = path.join(REPO_ROOT, 'docs', 'examples');
const CRD_NAMES = ['tunnelconnections.underpass.dev', 'applicationmappings.underpass.dev', 'tunnelconnectors.underpass.dev'];
const NS = 'team-a';
const BAD_NS = 'refused';

type Obj = Record<string, any>;

let env: TestEnv;
let crdApply: CommandResult;

beforeAll(async () => {
  env = await startTestEnv();
  crdApply = await env.kubectl(['apply', '-f', CRD_DIR]);
  if (crdApply.code !== 0) throw new Error(`kubectl apply -f crds/ failed:\n${crdApply.stderr}`);
  await env.waitForCrds(CRD_NAMES);
  await env.kubectlOk(['create', 'namespace', NS]);
  await env.kubectlOk(['create', 'namespace', BAD_NS]);
}, TESTENV_START_TIMEOUT_MS);

afterAll(async () => {
  await env?.stop();
}, 60_000);

const json = (text: string): Obj => JSON.parse(text) as Obj;
const squash = (s: string): string => s.replace(/\s+/g, ' ').trim();

function schemaAt(kind: string, fieldPath: string): Schema {
  const crd = loadCrds().find((c) => c.spec.names.kind === kind)!;
  let s = crd.spec.versions[0]!.schema.openAPIV3Schema;
  for (const part of fieldPath.split('.')) s = s.properties![part]!;
  return s;
}

describe('installing', () => {
  it('kubectl apply -f crds/ creates every CRD, and applying again changes nothing', async () => {
    for (const name of CRD_NAMES) expect(crdApply.stdout).toContain(`customresourcedefinition.apiextensions.k8s.io/${name} created`);
    expect(crdApply.stderr).toBe('');
    const again = await env.kubectlOk(['apply', '-f', CRD_DIR]);
    expect(again.match(/unchanged/g)).toHaveLength(CRD_NAMES.length);
  });

  it.each(CRD_NAMES)('%s is Established with its short name and category accepted', async (name) => {
    const crd = json(await env.kubectlOk(['get', 'crd', name, '-o', 'json']));
    const conds = Object.fromEntries((crd['status']['conditions'] as Obj[]).map((c) => [c['type'], c['status']]));
    expect(conds).toMatchObject({ NamesAccepted: 'True', Established: 'True' });
    expect(conds['NonStructuralSchema']).toBeUndefined();
    expect(crd['status']['acceptedNames']['shortNames']).toEqual([{ tunnelconnections: 'tc', applicationmappings: 'am', tunnelconnectors: 'tcn' }[name.split('.')[0]!]]);
    expect(crd['status']['acceptedNames']['categories']).toEqual(['underpass']);
  });
});

/**
 * `kubectl explain` reads the OpenAPI v3 document, which the API server
 * publishes for a new CRD a little after it is Established: retry until then.
 */
async function explain(field: string): Promise<string> {
  const deadline = Date.now() + 25_000;
  for (;;) {
    const r = await env.kubectl(['explain', field]);
    if (r.code === 0) return r.stdout;
    if (Date.now() > deadline || !/couldn't find resource/.test(r.stderr)) throw new Error(`kubectl explain ${field} exited ${r.code}:\n${r.stderr}`);
    await new Promise((res) => setTimeout(res, 500));
  }
}

describe('kubectl explain', () => {
  it('tunnelconnection.spec.endpoint shows the descriptions of the field and its children', async () => {
    const out = squash(await explain('tunnelconnection.spec.endpoint'));
    const endpoint = schemaAt('TunnelConnection', 'spec.endpoint');
    expect(out).toContain('KIND: TunnelConnection');
    expect(out).toContain('VERSION: v1alpha1');
    expect(out).toContain(squash(endpoint.description!));
    for (const [name, child] of Object.entries(endpoint.properties!)) {
      expect(out).toContain(`${name} <${child.type === 'array' ? '[]string' : 'Object'}>`);
      expect(out).toContain(squash(child.description!));
    }
  });

  it('applicationmapping.spec.target shows required fields and the side enum', async () => {
    const out = squash(await explain('am.spec.target'));
    expect(out).toContain('side <string> -required- enum: Connector, Cluster');
    expect(out).toContain('host <string> -required-');
    expect(out).toContain(squash(schemaAt('ApplicationMapping', 'spec.target.side').description!));
  });

  it('states defaults in the text (explain has no default column)', async () => {
    const out = squash(await explain('tc.spec.certificates'));
    expect(out).toContain('default 720h');
    expect(out).toContain('default 240h');
  });
});

describe('docs/examples', () => {
  const files = fs.readdirSync(EXAMPLES_DIR).filter((f) => f.endsWith('.yaml')).sort();
  const examples = files.map((f) => ({ file: f, obj: parse(fs.readFileSync(path.join(EXAMPLES_DIR, f), 'utf8')) as Obj }));

  it('covers a TunnelConnection, LoadBalancer and NodePort variants, and both mapping sides', () => {
    const kinds = examples.map((e) => `${e.obj['kind']}/${e.obj['spec']?.['endpoint']?.['service']?.['type'] ?? e.obj['spec']?.['target']?.['side'] ?? 'defaults'}`);
    expect(kinds.sort()).toEqual([
      'ApplicationMapping/Cluster', 'ApplicationMapping/Connector',
      'TunnelConnection/LoadBalancer', 'TunnelConnection/NodePort', 'TunnelConnection/defaults',
    ]);
    for (const e of examples) expect({ file: e.file, namespace: e.obj['metadata']['namespace'] }).toEqual({ file: e.file, namespace: undefined });
  });

  it('kubectl apply -f docs/examples/ really creates every object (strict field validation)', async () => {
    const out = await env.kubectlOk(['apply', '--validate=strict', '-n', NS, '-f', EXAMPLES_DIR]);
    for (const e of examples) {
      expect(out).toContain(`${String(e.obj['kind']).toLowerCase()}.underpass.dev/${e.obj['metadata']['name']} created`);
    }
  });

  it('reads every example back with its fields kept and the defaults filled in', async () => {
    for (const e of examples) {
      const got = json(await env.kubectlOk(['get', '-n', NS, `${e.obj['kind']}.underpass.dev`, e.obj['metadata']['name'], '-o', 'json']));
      expect({ file: e.file, spec: got['spec'] }).toMatchObject({ file: e.file, spec: e.obj['spec'] });
      expect(got['metadata']['generation']).toBe(1);
    }
    const dc1 = json(await env.kubectlOk(['get', '-n', NS, 'tc', 'dc1', '-o', 'json']));
    expect(dc1['spec']).toEqual({
      replicas: 2,
      endpoint: { service: { type: 'LoadBalancer', port: 443 }, hosts: ['tunnel.dc1.example.com'] },
      certificates: { duration: '720h', renewBefore: '240h', caDuration: '8760h' },
      worker: { drainTimeout: '30s' },
    });
    const edge = json(await env.kubectlOk(['get', '-n', NS, 'tc', 'edge', '-o', 'json']));
    expect(edge['spec']['endpoint']['service']).toEqual({ type: 'NodePort', nodePort: 30443, port: 443 });
    const db = json(await env.kubectlOk(['get', '-n', NS, 'am', 'payroll-db', '-o', 'json']));
    expect(db['spec']['protocol']).toBe('TCP');
    expect(db['spec']['listen']).toEqual({ port: 15432, address: '0.0.0.0' });
  });

  it('fills the defaults of a TunnelConnection given no spec at all', async () => {
    const out = await env.kubectlOk(['create', '-n', NS, '-f', '-', '-o', 'json'], {
      input: JSON.stringify({ apiVersion: 'underpass.dev/v1alpha1', kind: 'TunnelConnection', metadata: { name: 'bare' } }),
    });
    expect(json(out)['spec']).toEqual({
      replicas: 2,
      endpoint: { service: { type: 'LoadBalancer', port: 443 } },
      certificates: { duration: '720h', renewBefore: '240h', caDuration: '8760h' },
      worker: { drainTimeout: '30s' },
    });
    await env.kubectlOk(['delete', '-n', NS, 'tc', 'bare']);
  });
});

describe('status subresource and printer columns', () => {
  const now = '2026-11-23T12:00:00Z';
  const ready = (reason: string, message: string): Obj => ({
    type: 'Ready', status: 'True', reason, message, lastTransitionTime: now, observedGeneration: 1,
  });

  beforeAll(async () => {
    await env.kubectlOk(['apply', '-n', NS, '-f', EXAMPLES_DIR]);
    await env.kubectlOk(['patch', '-n', NS, 'tc', 'dc1', '--subresource=status', '--type=merge', '-p', JSON.stringify({
      status: {
        observedGeneration: 1,
        conditions: [ready('Ready', '2 workers ready, 2 connectors connected')],
        readyConnectors: 2,
        workers: { desired: 2, ready: 2 },
        endpoint: 'wss://tunnel.dc1.example.com:443/v1/tunnel',
        connectors: [
          { name: 'dc1-a', worker: 'dc1-worker-5d9c-abcde', since: now, version: '0.1.0', address: '198.51.100.7:40212' },
          { name: 'dc1-b', worker: 'dc1-worker-5d9c-abcde', since: now, version: '0.1.0', address: '198.51.100.8:40999' },
        ],
        certificate: { notAfter: '2026-12-23T12:00:00Z', renewalTime: '2026-12-13T12:00:00Z' },
      },
    })]);
    await env.kubectlOk(['patch', '-n', NS, 'am', 'payroll-db', '--subresource=status', '--type=merge', '-p', JSON.stringify({
      status: { observedGeneration: 1, conditions: [ready('Ready', 'listening on the dc1 workers')], endpoint: 'dc1-payroll-db.team-a.svc:15432' },
    })]);
  }, 60_000);

  const rows = (out: string): string[][] => out.trim().split('\n').map((l) => l.trim().split(/\s+/));

  it('kubectl get tc prints NAME READY CONNECTORS WORKERS AGE', async () => {
    const table = rows(await env.kubectlOk(['get', 'tc', '-n', NS]));
    expect(table[0]).toEqual(['NAME', 'READY', 'CONNECTORS', 'WORKERS', 'AGE']);
    expect(table.find((r) => r[0] === 'dc1')!.slice(0, 4)).toEqual(['dc1', 'True', '2', '2']);
    expect(table.find((r) => r[0] === 'edge')).toHaveLength(2); // name and age only: no status yet
  });

  it('kubectl get tc -o wide adds TYPE, ENDPOINT and REASON', async () => {
    const table = rows(await env.kubectlOk(['get', 'tunnelconnections', '-n', NS, '-o', 'wide']));
    expect(table[0]).toEqual(['NAME', 'READY', 'CONNECTORS', 'WORKERS', 'TYPE', 'ENDPOINT', 'REASON', 'AGE']);
    expect(table.find((r) => r[0] === 'dc1')!.slice(0, 7))
      .toEqual(['dc1', 'True', '2', '2', 'LoadBalancer', 'wss://tunnel.dc1.example.com:443/v1/tunnel', 'Ready']);
    expect(table.find((r) => r[0] === 'edge')!.slice(0, 2)).toEqual(['edge', 'NodePort']);
  });

  it('kubectl get am prints NAME CONNECTION SIDE TARGET PORT LISTEN READY AGE', async () => {
    const table = rows(await env.kubectlOk(['get', 'am', '-n', NS]));
    expect(table[0]).toEqual(['NAME', 'CONNECTION', 'SIDE', 'TARGET', 'PORT', 'LISTEN', 'READY', 'AGE']);
    expect(table.find((r) => r[0] === 'payroll-db')!.slice(0, 7)).toEqual(['payroll-db', 'dc1', 'Connector', 'db.internal', '5432', '15432', 'True']);
    expect(table.find((r) => r[0] === 'payroll-api')!.slice(0, 6))
      .toEqual(['payroll-api', 'dc1', 'Cluster', 'payroll-api.team-a.svc.cluster.local', '8080', '18080']);
  });

  it('kubectl get underpass lists both kinds (category)', async () => {
    const out = await env.kubectlOk(['get', 'underpass', '-n', NS, '-o', 'name']);
    expect(out.trim().split('\n').sort()).toEqual([
      'applicationmapping.underpass.dev/payroll-api', 'applicationmapping.underpass.dev/payroll-db',
      'tunnelconnection.underpass.dev/dc1', 'tunnelconnection.underpass.dev/dc2', 'tunnelconnection.underpass.dev/edge',
    ]);
  });

  it('keeps status and spec apart: status written through the main resource is ignored, and vice versa', async () => {
    await env.kubectlOk(['patch', '-n', NS, 'tc', 'dc1', '--type=merge', '-p', '{"status":{"readyConnectors":9}}']);
    await env.kubectlOk(['patch', '-n', NS, 'tc', 'dc1', '--subresource=status', '--type=merge', '-p', '{"spec":{"replicas":9}}']);
    const dc1 = json(await env.kubectlOk(['get', '-n', NS, 'tc', 'dc1', '-o', 'json']));
    expect(dc1['status']['readyConnectors']).toBe(2);
    expect(dc1['spec']['replicas']).toBe(2);
    expect(dc1['metadata']['generation']).toBe(1);
  });

  it('validates status too (the operator cannot write a malformed condition)', async () => {
    const r = await env.kubectl(['patch', '-n', NS, 'tc', 'dc1', '--subresource=status', '--type=merge', '-p',
      JSON.stringify({ status: { conditions: [{ ...ready('Ready', 'x'), status: 'Maybe' }] } })]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain('status.conditions[0].status: Unsupported value: "Maybe"');
  });

  it('validates updates: a patch to listen.port 0 is refused and the object is unchanged', async () => {
    const r = await env.kubectl(['patch', '-n', NS, 'am', 'payroll-db', '--type=merge', '-p', '{"spec":{"listen":{"port":0}}}']);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain('spec.listen.port: Invalid value: 0');
    const db = json(await env.kubectlOk(['get', '-n', NS, 'am', 'payroll-db', '-o', 'json']));
    expect(db['spec']['listen']['port']).toBe(15432);
  });

  it('accepts a second mapping with the same listen port: uniqueness spans objects, so the operator checks it (PortConflict)', async () => {
    const out = await env.kubectlOk(['create', '-n', NS, '-f', '-', '-o', 'name'], {
      input: JSON.stringify({
        apiVersion: 'underpass.dev/v1alpha1', kind: 'ApplicationMapping', metadata: { name: 'payroll-db-copy' },
        spec: { connection: 'dc1', target: { side: 'Connector', host: 'db2.internal', port: 5432 }, listen: { port: 15432 } },
      }),
    });
    expect(out.trim()).toBe('applicationmapping.underpass.dev/payroll-db-copy');
    await env.kubectlOk(['delete', '-n', NS, 'am', 'payroll-db-copy']);
  });
});

// ----------------------------------------------------------------------------- refusals

const tc = (spec: Obj, name = 'bad-tc'): Obj => ({ apiVersion: 'underpass.dev/v1alpha1', kind: 'TunnelConnection', metadata: { name }, spec });
const amSpec = (): Obj => ({ connection: 'dc1', target: { side: 'Connector', host: 'db.internal', port: 5432 }, listen: { port: 15432 } });
const am = (edit: (spec: Obj) => void, name = 'bad-am'): Obj => {
  const spec = amSpec();
  edit(spec);
  return { apiVersion: 'underpass.dev/v1alpha1', kind: 'ApplicationMapping', metadata: { name }, spec };
};

interface Refusal {
  what: string;
  obj: Obj;
  /** Every one of these must appear in kubectl's error output. */
  expect: string[];
  args?: string[];
}

const refusals: Refusal[] = [
  // ApplicationMapping
  { what: 'target.port 0', obj: am((s) => { s['target']['port'] = 0; }),
    expect: ['spec.target.port: Invalid value: 0', 'should be greater than or equal to 1'] },
  { what: 'listen.port 70000', obj: am((s) => { s['listen']['port'] = 70000; }),
    expect: ['spec.listen.port: Invalid value: 70000', 'should be less than or equal to 65535'] },
  { what: 'target.side "Elsewhere"', obj: am((s) => { s['target']['side'] = 'Elsewhere'; }),
    expect: ['spec.target.side: Unsupported value: "Elsewhere": supported values: "Connector", "Cluster"'] },
  { what: 'allowedSources ["10.0.0.1/33"]', obj: am((s) => { s['allowedSources'] = ['10.0.0.1/33']; }),
    expect: ['spec.allowedSources[0]', '"10.0.0.1/33" is not a CIDR such as 10.0.0.0/8'] },
  { what: 'allowedSources with a host name second', obj: am((s) => { s['allowedSources'] = ['10.0.0.0/8', 'db.internal']; }),
    expect: ['spec.allowedSources[1]', '"db.internal" is not a CIDR'] },
  { what: 'allowedSources with host bits set', obj: am((s) => { s['allowedSources'] = ['10.0.0.1/8']; }),
    expect: ['spec.allowedSources[0]', '"10.0.0.1/8" has host bits set', '10.0.0.0/8, not 10.0.0.1/8'] },
  { what: 'allowedSources duplicated', obj: am((s) => { s['allowedSources'] = ['10.0.0.0/8', '10.0.0.0/8']; }),
    expect: ['spec.allowedSources[1]: Duplicate value: "10.0.0.0/8"'] },
  { what: 'missing connection', obj: am((s) => { delete s['connection']; }),
    expect: ['spec.connection: Required value'] },
  { what: 'missing target.host', obj: am((s) => { delete s['target']['host']; }),
    expect: ['spec.target.host: Required value'] },
  { what: 'missing listen', obj: am((s) => { delete s['listen']; }),
    expect: ['spec.listen: Required value'] },
  { what: 'protocol UDP', obj: am((s) => { s['protocol'] = 'UDP'; }),
    expect: ['spec.protocol', 'UDP is not supported yet; use TCP'] },
  { what: 'protocol SCTP', obj: am((s) => { s['protocol'] = 'SCTP'; }),
    expect: ['spec.protocol: Unsupported value: "SCTP"'] },
  { what: 'target.host with a space', obj: am((s) => { s['target']['host'] = 'db internal'; }),
    expect: ['spec.target.host', '"db internal" is not a DNS name (such as db.internal) or an IP address'] },
  { what: 'target.host "300.1.1.1" (a bad IP, not a name)', obj: am((s) => { s['target']['host'] = '300.1.1.1'; }),
    expect: ['spec.target.host', '"300.1.1.1" is not a DNS name'] },
  { what: 'listen.address not an IP', obj: am((s) => { s['target']['side'] = 'Cluster'; s['listen']['address'] = 'localhost'; }),
    expect: ['spec.listen.address', '"localhost" is not an IP address'] },
  { what: 'listen.address 127.0.0.1 for a Connector-side target', obj: am((s) => { s['listen']['address'] = '127.0.0.1'; }),
    expect: ['spec.listen.address', 'must be 0.0.0.0 or :: for a Connector-side target'] },
  { what: 'connection not a valid name', obj: am((s) => { s['connection'] = 'DC1'; }),
    expect: ['spec.connection', '"DC1" is not a TunnelConnection name'] },
  { what: 'metadata.name with a dot', obj: am(() => undefined, 'payroll.db'),
    expect: ['metadata.name', 'must be a DNS-1123 label'] },
  { what: 'unknown field (--validate=strict)', obj: am((s) => { s['listen']['portt'] = 1; }), args: ['--validate=strict'],
    expect: ['strict decoding error: unknown field "spec.listen.portt"'] },
  // TunnelConnection
  { what: 'replicas 0', obj: tc({ replicas: 0 }),
    expect: ['spec.replicas: Invalid value: 0', 'should be greater than or equal to 1'] },
  { what: 'replicas 11', obj: tc({ replicas: 11 }),
    expect: ['spec.replicas: Invalid value: 11', 'should be less than or equal to 10'] },
  { what: 'renewBefore equal to duration', obj: tc({ certificates: { duration: '240h', renewBefore: '240h' } }),
    expect: ['spec.certificates.renewBefore', 'renewBefore (240h) must be shorter than duration (240h)'] },
  { what: 'renewBefore longer than the default duration', obj: tc({ certificates: { renewBefore: '1000h' } }),
    expect: ['spec.certificates.renewBefore', 'renewBefore (1000h) must be shorter than duration (720h)'] },
  { what: 'duration in days', obj: tc({ certificates: { duration: '30d' } }),
    expect: ['spec.certificates.duration', '"30d" is not a duration between 1m and 87600h'] },
  { what: 'drainTimeout over 1h', obj: tc({ worker: { drainTimeout: '2h' } }),
    expect: ['spec.worker.drainTimeout', '"2h" is not a duration of at most 1h'] },
  { what: 'service.type External', obj: tc({ endpoint: { service: { type: 'External' } } }),
    expect: ['spec.endpoint.service.type: Unsupported value: "External"', '"ClusterIP", "NodePort", "LoadBalancer"'] },
  { what: 'service.port 0', obj: tc({ endpoint: { service: { port: 0 } } }),
    expect: ['spec.endpoint.service.port: Invalid value: 0'] },
  { what: 'nodePort with type ClusterIP', obj: tc({ endpoint: { service: { type: 'ClusterIP', nodePort: 30443 } } }),
    expect: ['spec.endpoint.service.nodePort: Forbidden: nodePort can only be set when type is NodePort or LoadBalancer'] },
  { what: 'loadBalancerSourceRanges with a bad CIDR', obj: tc({ endpoint: { service: { loadBalancerSourceRanges: ['203.0.113.0/24', '203.0.113.0/40'] } } }),
    expect: ['spec.endpoint.service.loadBalancerSourceRanges[1]', '"203.0.113.0/40" is not a CIDR'] },
  { what: 'loadBalancerSourceRanges with type NodePort', obj: tc({ endpoint: { service: { type: 'NodePort', loadBalancerSourceRanges: ['203.0.113.0/24'] } } }),
    expect: ['spec.endpoint.service.loadBalancerSourceRanges: Forbidden', 'only be set when type is LoadBalancer'] },
  { what: 'hosts with a bad name', obj: tc({ endpoint: { hosts: ['tunnel example com'] } }),
    expect: ['spec.endpoint.hosts[0]', '"tunnel example com" is not a DNS name'] },
  { what: 'connectors with an upper-case name', obj: tc({ connectors: ['DC1-A'] }),
    expect: ['spec.connectors[0]', '"DC1-A" is not a connector name'] },
  { what: 'resources with a bad quantity', obj: tc({ worker: { resources: { limits: { memory: '1x' } } } }),
    expect: ['spec.worker.resources.limits[memory]', '"1x" is not a quantity'] },
  { what: 'metadata.name starting with a digit', obj: tc({}, '1dc'),
    expect: ['metadata.name', 'must start with a letter'] },
  { what: 'unknown field (--validate=strict)', obj: tc({ replica: 3 }), args: ['--validate=strict'],
    expect: ['strict decoding error: unknown field "spec.replica"'] },
];

describe('invalid objects are refused by the API server with a readable message', () => {
  it.each(refusals.map((r) => [`${r.obj['kind']}: ${r.what}`, r] as const))('%s', async (_title, r) => {
    const res = await env.kubectl(['create', '-n', BAD_NS, ...(r.args ?? []), '-f', '-'], { input: JSON.stringify(r.obj) });
    expect(res.code).not.toBe(0);
    for (const s of r.expect) expect(res.stderr).toContain(s);
    const name = String(r.obj['metadata']['name']);
    expect(res.stderr).toMatch(new RegExp(`(The ${r.obj['kind']} "${name.replace('.', '\\.')}" is invalid|cannot be handled as a ${r.obj['kind']})`));
    // the message is one the user can act on, not an internal CEL failure
    expect(res.stderr).not.toMatch(/internal error|evaluation error|no such key|no matching overload/);
  });

  it('created none of them', async () => {
    const out = await env.kubectlOk(['get', 'underpass', '-n', BAD_NS, '-o', 'name']);
    expect(out.trim()).toBe('');
  });
});
