/**
 * Generates docs/crds.md, the field reference of the CRDs in crds/, from their OpenAPI
 * schemas (descriptions, defaults, limits and x-kubernetes-validations messages), so the
 * reference cannot drift from what the API server enforces. test/cluster/crd-schema.test.ts
 * fails when docs/crds.md is stale; regenerate with
 *
 *   UNDERPASS_UPDATE_DOCS=1 npm test -- test/cluster/crd-schema
 */
import fs from 'node:fs';
import path from 'node:path';
import { parse } from 'yaml';
import { REPO_ROOT } from './testenv.js';

export const CRD_DIR = path.join(REPO_ROOT, 'crds');
export const CRD_REFERENCE = path.join(REPO_ROOT, 'docs', 'crds.md');

export interface Rule {
  rule: string;
  message?: string;
  messageExpression?: string;
  fieldPath?: string;
  reason?: string;
}

export interface Schema {
  type?: string;
  description?: string;
  default?: unknown;
  enum?: unknown[];
  format?: string;
  pattern?: string;
  minimum?: number;
  maximum?: number;
  minLength?: number;
  maxLength?: number;
  maxItems?: number;
  maxProperties?: number;
  required?: string[];
  properties?: Record<string, Schema>;
  items?: Schema;
  additionalProperties?: Schema | boolean;
  anyOf?: Schema[];
  'x-kubernetes-int-or-string'?: boolean;
  'x-kubernetes-list-type'?: string;
  'x-kubernetes-list-map-keys'?: string[];
  'x-kubernetes-validations'?: Rule[];
  'x-kubernetes-preserve-unknown-fields'?: boolean;
}

export interface PrinterColumn {
  name: string;
  type: string;
  jsonPath: string;
  description?: string;
  priority?: number;
}

export interface Crd {
  file: string;
  metadata: { name: string };
  spec: {
    group: string;
    scope: string;
    names: { kind: string; plural: string; singular: string; shortNames?: string[]; categories?: string[] };
    versions: Array<{
      name: string;
      served: boolean;
      storage: boolean;
      subresources?: Record<string, unknown>;
      additionalPrinterColumns?: PrinterColumn[];
      schema: { openAPIV3Schema: Schema };
    }>;
  };
}

/** The CRD files in crds/, sorted by name. */
export function loadCrds(): Crd[] {
  return fs.readdirSync(CRD_DIR).filter((f) => f.endsWith('.yaml')).sort().map((f) => {
    const file = path.join(CRD_DIR, f);
    return { file, ...(parse(fs.readFileSync(file, 'utf8')) as Omit<Crd, 'file'>) };
  });
}

export interface Field {
  /** e.g. "spec.endpoint.service.type", "spec.allowedSources[]", "spec.worker.nodeSelector{}" */
  path: string;
  schema: Schema;
  required: boolean;
}

/** Every field below `root` (depth first, in schema order), including list items and map values that have their own rules. */
export function walk(schema: Schema, prefix: string, required = false, out: Field[] = []): Field[] {
  if (prefix) out.push({ path: prefix, schema, required });
  for (const [name, child] of Object.entries(schema.properties ?? {})) {
    walk(child, prefix ? `${prefix}.${name}` : name, (schema.required ?? []).includes(name), out);
  }
  if (schema.items?.properties) {
    for (const [name, child] of Object.entries(schema.items.properties)) {
      walk(child, `${prefix}[].${name}`, (schema.items.required ?? []).includes(name), out);
    }
  }
  return out;
}

function typeOf(s: Schema): string {
  if (s['x-kubernetes-int-or-string']) return 'quantity';
  if (s.type === 'array') return `[]${s.items ? typeOf(s.items) : 'any'}`;
  if (s.type === 'object' && s.additionalProperties && typeof s.additionalProperties === 'object') {
    return `map[string]${typeOf(s.additionalProperties)}`;
  }
  if (s.type === 'string' && s.format) return `string (${s.format})`;
  return s.type ?? 'any';
}

function rulesText(rules: Rule[] | undefined): string[] {
  return (rules ?? []).map((r) => {
    const where = r.fieldPath ? `\`${r.fieldPath.replace(/^\./, '')}\`: ` : '';
    return `${where}${r.message ?? `rule \`${r.rule}\``}`;
  });
}

function validation(f: Field): string {
  const s = f.schema;
  const parts: string[] = [];
  if (f.required) parts.push('**required**');
  if (s.enum) parts.push(`one of ${s.enum.map((v) => `\`${String(v)}\``).join(', ')}`);
  if (s.minimum !== undefined && s.maximum !== undefined) parts.push(`${s.minimum} to ${s.maximum}`);
  else if (s.minimum !== undefined) parts.push(`at least ${s.minimum}`);
  else if (s.maximum !== undefined) parts.push(`at most ${s.maximum}`);
  if (s.minLength !== undefined) parts.push(s.minLength === 1 ? 'not empty' : `at least ${s.minLength} characters`);
  if (s.maxLength !== undefined) parts.push(`at most ${s.maxLength} characters`);
  if (s.maxItems !== undefined) parts.push(`at most ${s.maxItems} items`);
  if (s.maxProperties !== undefined) parts.push(`at most ${s.maxProperties} entries`);
  if (s['x-kubernetes-list-type'] === 'set') parts.push('no duplicates');
  if (s['x-kubernetes-list-type'] === 'map') parts.push(`keyed by ${(s['x-kubernetes-list-map-keys'] ?? []).join(' + ')}`);
  if (s.pattern) parts.push('pattern (see schema)');
  parts.push(...rulesText(s['x-kubernetes-validations']));
  if (s.items) {
    if (s.items.maxLength !== undefined) parts.push(`each at most ${s.items.maxLength} characters`);
    parts.push(...rulesText(s.items['x-kubernetes-validations']).map((t) => `each: ${t}`));
  }
  const values = s.additionalProperties;
  if (values && typeof values === 'object') parts.push(...rulesText(values['x-kubernetes-validations']).map((t) => `each value: ${t}`));
  return parts.join('; ');
}

function defaultText(s: Schema): string {
  if (s.default === undefined) return '';
  if (typeof s.default === 'object' && s.default !== null && Object.keys(s.default).length === 0) return '';
  return `\`${typeof s.default === 'string' ? s.default : JSON.stringify(s.default)}\``;
}

function cell(text: string): string {
  return text.replace(/\s+/g, ' ').replace(/\|/g, '\\|').trim();
}

function table(fields: Field[]): string[] {
  const lines = ['| field | type | default | validation | description |', '|---|---|---|---|---|'];
  for (const f of fields) {
    lines.push(`| \`${f.path}\` | ${cell(typeOf(f.schema))} | ${cell(defaultText(f.schema))} | ${cell(validation(f))} | ${cell(f.schema.description ?? '')} |`);
  }
  return lines;
}

const OPERATOR_CHECKS: Record<string, string[]> = {
  TunnelConnection: [
    '`spec.endpoint.route.enabled: true` on a cluster without the `route.openshift.io` API: Ready False.',
    '`spec.endpoint.service.nodePort` outside the cluster\'s node port range, or already taken: the Service is refused; Ready False with the API server\'s message.',
    '`spec.worker.resources` with requests above limits: the Deployment is refused; Ready False with the API server\'s message.',
  ],
  ApplicationMapping: [
    '`spec.connection` names a TunnelConnection that does not exist in the namespace: Ready False, reason `ConnectionNotFound` (CEL sees one object only).',
    '`spec.listen.port` is used by another mapping of the same connection whose target is on the same side (and the addresses overlap: `0.0.0.0`/`::` overlap every address): the mapping created later is not applied, Ready False, reason `PortConflict`, and the message names the other mapping.',
    'A Connector-side `spec.listen.port` equal to the worker\'s tunnel or admin port: Ready False, reason `PortConflict`.',
    'A connector whose local allow-list does not permit the target, or that cannot bind the listener: Ready False, reason `RefusedByConnector`.',
  ],
};

/** The whole docs/crds.md. */
export function renderCrdReference(crds: Crd[] = loadCrds()): string {
  const out: string[] = [
    '# Custom resources',
    '',
    '<!-- Generated from crds/*.yaml by test/cluster/crd-reference.ts; do not edit by hand.',
    '     Regenerate: UNDERPASS_UPDATE_DOCS=1 npm test -- test/cluster/crd-schema -->',
    '',
    'The operator is driven by three namespaced resources in the API group `underpass.dev`,',
    'version `v1alpha1` (TunnelConnector is the registration record of one connector, see',
    '[connector-lifecycle.md](connector-lifecycle.md)). Install them with `kubectl apply -f crds/`',
    '(the operator chart does this too). `kubectl explain tunnelconnection.spec` and `kubectl explain',
    'applicationmapping.spec` show the same descriptions as the tables below; examples that',
    'apply cleanly are in [`docs/examples/`](examples/) (`kubectl apply -n team-a -f',
    'docs/examples/`).',
    '',
    'Validation happens in the API server (OpenAPI schema and CEL rules), so a bad object is',
    'refused by `kubectl apply` with a message naming the field, for example:',
    '',
    '```',
    'The ApplicationMapping "payroll-db" is invalid: spec.allowedSources[0]: Invalid value: "string": "10.0.0.1/33" is not a CIDR such as 10.0.0.0/8 or fd00::/8, or a single IP address',
    '```',
    '',
    'The API server prints `Invalid value: "string"` (the type, not the value) for CEL rules;',
    'the messages therefore quote the value themselves. When a required field is missing or an',
    'enum value is unknown it also adds `some validation rules were not checked because the',
    'object was invalid`: fix the first error and apply again to see the rest. Unknown fields',
    'are refused with `kubectl apply --validate=strict` (the default of recent kubectl):',
    '`strict decoding error: unknown field "spec.foo"`.',
    '',
    'Durations are Go durations restricted to the units `h`, `m`, `s` and `ms` (for example',
    '`720h`, `1h30m`, `500ms`), each number at most 5 digits.',
  ];
  for (const crd of crds) {
    const v = crd.spec.versions.find((x) => x.storage) ?? crd.spec.versions[0]!;
    const schema = v.schema.openAPIV3Schema;
    const n = crd.spec.names;
    out.push('', `## ${n.kind}`, '', cell(schema.description ?? ''), '');
    out.push(
      '| | |', '|---|---|',
      `| API | \`${crd.spec.group}/${v.name}\`, ${crd.spec.scope.toLowerCase()} |`,
      `| names | \`${n.plural}\`, \`${n.singular}\`${(n.shortNames ?? []).map((s) => `, \`${s}\``).join('')} (category \`${(n.categories ?? []).join(', ')}\`: \`kubectl get ${(n.categories ?? [])[0] ?? n.plural}\`) |`,
      `| subresources | ${Object.keys(v.subresources ?? {}).map((s) => `\`${s}\``).join(', ') || 'none'} |`,
      `| file | \`crds/${path.basename(crd.file)}\` |`,
    );
    const cols = v.additionalPrinterColumns ?? [];
    out.push('', `\`kubectl get ${n.shortNames?.[0] ?? n.plural}\` columns (\`-o wide\` adds those of priority 1):`, '');
    out.push('| column | from | priority | meaning |', '|---|---|---|---|');
    for (const c of cols) out.push(`| ${c.name.toUpperCase()} | \`${cell(c.jsonPath)}\` | ${c.priority ?? 0} | ${cell(c.description ?? '')} |`);
    const nameRules = schema.properties?.['metadata']?.properties?.['name'];
    if (nameRules) out.push('', `**metadata.name** ${cell(rulesText(nameRules['x-kubernetes-validations']).join('; '))}.`);
    for (const part of ['spec', 'status'] as const) {
      const s = schema.properties?.[part];
      if (!s) continue;
      out.push('', `### ${n.kind} ${part}`, '', cell(s.description ?? ''), '');
      const rules = rulesText(s['x-kubernetes-validations']);
      if (rules.length) out.push(`Rules on the whole ${part}: ${cell(rules.join('; '))}.`, '');
      out.push(...table(walk(s, part).slice(1)));
    }
    const checks = OPERATOR_CHECKS[n.kind];
    if (checks?.length) {
      out.push('', `### ${n.kind}: checked by the operator, reported in status`, '',
        'These need other objects or the cluster\'s state, which a CEL rule on one object cannot see:', '');
      out.push(...checks.map((c) => `- ${c}`));
    }
  }
  out.push('');
  return out.join('\n');
}
