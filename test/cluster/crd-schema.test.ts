/**
 * Static checks of crds/*.yaml that need no API server: every field is described (so
 * `kubectl explain` teaches), defaults are stated in the descriptions (explain does not
 * print them), every CEL rule has a static message, the names and printer columns are the
 * ones the issue asks for, and docs/crds.md is generated from the current schemas.
 * What the API server does with the schemas is tested in crds.test.ts.
 */
import { describe, expect, it } from '@jest/globals';
import fs from 'node:fs';
import { CRD_REFERENCE, loadCrds, renderCrdReference, type Crd, type Schema } from './crd-reference.js';

const crds = loadCrds();
const byKind = (kind: string): Crd => {
  const crd = crds.find((c) => c.spec.names.kind === kind);
  if (!crd) throw new Error(`no CRD for ${kind} in crds/`);
  return crd;
};

/** Every schema node with its path, including list items and map values. */
function nodes(s: Schema, p: string, out: Array<[string, Schema]> = []): Array<[string, Schema]> {
  out.push([p, s]);
  for (const [k, v] of Object.entries(s.properties ?? {})) nodes(v, `${p}.${k}`, out);
  if (s.items) nodes(s.items, `${p}[]`, out);
  if (s.additionalProperties && typeof s.additionalProperties === 'object') nodes(s.additionalProperties, `${p}{}`, out);
  return out;
}

describe.each(['TunnelConnection', 'ApplicationMapping'])('%s CRD file', (kind) => {
  const crd = byKind(kind);
  const version = crd.spec.versions[0]!;
  const root = version.schema.openAPIV3Schema;

  it('is underpass.dev/v1alpha1, namespaced, served and stored, with the status subresource', () => {
    expect(crd.spec.group).toBe('underpass.dev');
    expect(crd.spec.scope).toBe('Namespaced');
    expect(crd.spec.versions).toHaveLength(1);
    expect(version).toMatchObject({ name: 'v1alpha1', served: true, storage: true, subresources: { status: {} } });
    expect(crd.metadata.name).toBe(`${crd.spec.names.plural}.underpass.dev`);
    expect(crd.file).toMatch(new RegExp(`crds/underpass\\.dev_${crd.spec.names.plural}\\.yaml$`));
    expect(crd.spec.names.categories).toEqual(['underpass']);
    expect(crd.spec.names.shortNames).toEqual([kind === 'TunnelConnection' ? 'tc' : 'am']);
  });

  it('describes every field (kubectl explain shows these)', () => {
    const missing = nodes(root, kind)
      // explain shows neither the items of a scalar list nor map values on their own
      .filter(([p, s]) => !p.endsWith('.metadata') && !p.includes('.metadata.') && !p.endsWith('{}') && !(p.endsWith('[]') && s.type !== 'object'))
      .filter(([, s]) => !s.description || s.description.trim().length < 10)
      .map(([p]) => p);
    expect(missing).toEqual([]);
  });

  it('states every default in the description, since kubectl explain does not print defaults', () => {
    const silent = nodes(root, kind)
      .filter(([, s]) => s.default !== undefined && !(typeof s.default === 'object' && Object.keys(s.default as object).length === 0))
      .filter(([, s]) => !(s.description ?? '').includes(`default ${String(s.default)}`)
        && !(s.description ?? '').includes(`${String(s.default)} (default`)
        && !(s.description ?? '').includes(`(default)`))
      .map(([p, s]) => `${p} (default ${String(s.default)})`);
    expect(silent).toEqual([]);
  });

  it('gives every CEL rule a static message (the fallback when a messageExpression fails) and a reason', () => {
    const rules = nodes(root, kind).flatMap(([p, s]) => (s['x-kubernetes-validations'] ?? []).map((r) => ({ p, ...r })));
    expect(rules.length).toBeGreaterThan(3);
    for (const r of rules) {
      expect({ at: r.p, rule: r.rule, message: typeof r.message === 'string' && r.message.length > 10 }).toEqual({ at: r.p, rule: r.rule, message: true });
      expect(r.reason).toMatch(/^FieldValue(Invalid|Forbidden|Required|Duplicate)$/);
    }
  });

  it('bounds every list, string under a CEL rule and map (CEL cost estimation needs limits)', () => {
    const unbounded = nodes(root, kind).filter(([p, s]) => {
      if (p.includes('.metadata')) return false;
      if (s.type === 'array') return s.maxItems === undefined;
      if (s.type === 'object' && s.additionalProperties) return s.maxProperties === undefined;
      return false;
    }).map(([p]) => p);
    expect(unbounded).toEqual([]);
  });

  it('has conditions in the metav1.Condition shape, as a map keyed by type', () => {
    const conditions = root.properties!['status']!.properties!['conditions']!;
    expect(conditions['x-kubernetes-list-type']).toBe('map');
    expect(conditions['x-kubernetes-list-map-keys']).toEqual(['type']);
    expect(conditions.items!.required!.sort()).toEqual(['lastTransitionTime', 'message', 'reason', 'status', 'type']);
    expect(conditions.items!.properties!['status']!.enum).toEqual(['True', 'False', 'Unknown']);
    expect(conditions.items!.properties!['lastTransitionTime']!.format).toBe('date-time');
    expect(root.properties!['status']!.properties!['observedGeneration']!.type).toBe('integer');
  });
});

describe('printer columns', () => {
  const columns = (kind: string): Record<string, string> => Object.fromEntries(
    (byKind(kind).spec.versions[0]!.additionalPrinterColumns ?? []).filter((c) => !c.priority).map((c) => [c.name, c.jsonPath]));

  it('TunnelConnection: Ready, Connectors, Workers, Age', () => {
    expect(columns('TunnelConnection')).toEqual({
      Ready: '.status.conditions[?(@.type=="Ready")].status',
      Connectors: '.status.readyConnectors',
      Workers: '.status.workers.ready',
      Age: '.metadata.creationTimestamp',
    });
  });

  it('ApplicationMapping: Connection, Side, Target, Port, Listen, Ready, Age', () => {
    expect(columns('ApplicationMapping')).toEqual({
      Connection: '.spec.connection',
      Side: '.spec.target.side',
      Target: '.spec.target.host',
      Port: '.spec.target.port',
      Listen: '.spec.listen.port',
      Ready: '.status.conditions[?(@.type=="Ready")].status',
      Age: '.metadata.creationTimestamp',
    });
  });
});

describe('docs/crds.md', () => {
  it('is generated from the current schemas', () => {
    const fresh = renderCrdReference(crds);
    if (process.env['UNDERPASS_UPDATE_DOCS'] === '1') fs.writeFileSync(CRD_REFERENCE, fresh);
    const current = fs.existsSync(CRD_REFERENCE) ? fs.readFileSync(CRD_REFERENCE, 'utf8') : '';
    if (current !== fresh) {
      throw new Error('docs/crds.md is stale; regenerate it with: UNDERPASS_UPDATE_DOCS=1 npm test -- test/cluster/crd-schema');
    }
  });

  it('lists every spec field of both kinds', () => {
    const text = renderCrdReference(crds);
    for (const f of ['spec.endpoint.service.loadBalancerSourceRanges', 'spec.certificates.renewBefore', 'spec.worker.drainTimeout',
      'spec.target.side', 'spec.listen.address', 'spec.allowedSources', 'status.readyConnectors', 'status.connectors[].since']) {
      expect(text).toContain(`\`${f}\``);
    }
  });
});
