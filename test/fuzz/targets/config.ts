/**
 * The worker and connector config files: YAML text through `parseYamlText`
 * (tunnel/config-load.ts, what `loadYamlFile` does after reading the file),
 * then `parseWorkerConfig` / `parseConnectorConfig`. Inputs: the fixtures of
 * test/fixtures/config/valid, reformatted; the fixtures with their structure
 * mutated (a value replaced, a field removed, renamed or added, a list where a
 * value was) or their bytes mutated; random text.
 *
 * Properties: a valid fixture parses the same however it is formatted; every
 * other input gives a config or a ConfigError (ERR_CONFIG) and nothing else;
 * an error about a document that is a YAML mapping names its field.
 */
import fc from 'fast-check';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import YAML from 'yaml';
import { parseConnectorConfig } from '../../../connector/config.js';
import { parseYamlText } from '../../../tunnel/config-load.js';
import { ConfigError } from '../../../tunnel/errors.js';
import { parseWorkerConfig } from '../../../worker/config.js';
import { anyText, cidrArb, hostArb, portArb } from '../arbitraries.js';
import { mutated, randomBytes } from '../bytes.js';
import { assert, assertEqual, attempt, type SeenError } from '../expect.js';
import { parsing, type FuzzTarget } from '../harness.js';

type Kind = 'worker' | 'connector';

const FIXTURES = path.join(path.dirname(fileURLToPath(import.meta.url)), '../../fixtures/config/valid');
/** Where the files "are": relative TLS paths resolve against it. */
const FILE: Record<Kind, string> = { worker: '/etc/underpass/worker.yaml', connector: '/etc/underpass/connector.yaml' };

interface Fixture {
  kind: Kind;
  name: string;
  text: string;
}

function loadFixtures(): Fixture[] {
  return readdirSync(FIXTURES).filter((f) => f.endsWith('.yaml')).sort().map((name) => ({
    kind: name.startsWith('connector') ? 'connector' as const : 'worker' as const,
    name,
    text: readFileSync(path.join(FIXTURES, name), 'utf8'),
  }));
}

const fixtures = loadFixtures();
const fixtureArb = fc.constantFrom(...fixtures);

type Parsed = { config: unknown } | { error: SeenError & { field: string | undefined } };

/** The whole load path after reading the file; its result or its ConfigError. */
export function loadConfig(kind: Kind, text: string): Parsed {
  const file = FILE[kind];
  let config: unknown;
  let raw: unknown;
  let field: string | undefined;
  const error = attempt(() => {
    try {
      raw = parseYamlText(text, file);
      config = kind === 'worker' ? parseWorkerConfig(raw, file) : parseConnectorConfig(raw, file);
    } catch (err) {
      if (err instanceof ConfigError) field = err.field;
      throw err;
    }
  }, [ConfigError], ['ERR_CONFIG']);
  if (!error) return { config: JSON.parse(JSON.stringify(config)) as unknown };
  assert(error.message.startsWith(file), `the error does not name the file: ${error.message}`);
  const isMapping = raw !== null && typeof raw === 'object' && !Array.isArray(raw);
  if (isMapping) assert(field !== undefined, `an error about a YAML mapping names no field: ${error.message}`);
  return { error: { ...error, field } };
}

/** Every path to a value in `value` (objects and lists), the root first. */
function paths(value: unknown, at: Array<string | number> = []): Array<Array<string | number>> {
  const out = [at];
  if (Array.isArray(value)) value.forEach((v, i) => out.push(...paths(v, [...at, i])));
  else if (value !== null && typeof value === 'object') for (const [k, v] of Object.entries(value)) out.push(...paths(v, [...at, k]));
  return out;
}

type Edit =
  | { op: 'set'; at: number; value: unknown }
  | { op: 'delete'; at: number }
  | { op: 'rename'; at: number; name: string }
  | { op: 'add'; at: number; name: string; value: unknown }
  | { op: 'wrap'; at: number };

const scalarArb: fc.Arbitrary<unknown> = fc.oneof(
  hostArb, portArb, cidrArb, anyText(20),
  fc.constantFrom('30s', '1h30m', '0', '596h', '597h', '1.5s', '500ms', '-1s', 'wss://127.0.0.1:8443', 'ws://x', 'https://u:p@x', '10.0.0.0/8:443',
    '*.corp.example:5432', '[::1]:*', 'team-a/dc1', 'Connector', 'Cluster', 'UDP', true, null, 1e21, -0, 0.5),
  fc.jsonValue({ maxDepth: 2 }),
);

const editArb: fc.Arbitrary<Edit> = fc.oneof(
  fc.record({ op: fc.constant('set' as const), at: fc.nat(), value: scalarArb }),
  fc.record({ op: fc.constant('delete' as const), at: fc.nat() }),
  fc.record({ op: fc.constant('rename' as const), at: fc.nat(), name: fc.oneof(fc.constantFrom('tls', 'listen', 'allow', 'kind', '__proto__', 'constructor'), anyText(8)) }),
  fc.record({ op: fc.constant('add' as const), at: fc.nat(), name: fc.oneof(fc.constantFrom('extra', '__proto__', 'toString'), anyText(8)), value: scalarArb }),
  fc.record({ op: fc.constant('wrap' as const), at: fc.nat() }),
);

function applyEdits(doc: unknown, edits: readonly Edit[]): unknown {
  let root = structuredClone(doc);
  for (const e of edits) {
    const all = paths(root);
    const at = all[e.at % all.length]!;
    if (at.length === 0) {
      if (e.op === 'set') root = e.value;
      else if (e.op === 'wrap') root = [root];
      continue;
    }
    const parent = at.slice(0, -1).reduce<unknown>((v, k) => (v as Record<string | number, unknown>)[k], root) as Record<string | number, unknown>;
    const key = at.at(-1)!;
    switch (e.op) {
      case 'set': parent[key] = e.value; break;
      case 'delete': if (Array.isArray(parent)) parent.splice(key as number, 1); else delete parent[key]; break;
      case 'rename': if (!Array.isArray(parent)) { Object.defineProperty(parent, e.name, { value: parent[key], enumerable: true, writable: true, configurable: true }); delete parent[key]; } break;
      case 'add': {
        const target = parent[key];
        if (target !== null && typeof target === 'object' && !Array.isArray(target)) {
          Object.defineProperty(target, e.name, { value: e.value, enumerable: true, writable: true, configurable: true });
        }
        break;
      }
      case 'wrap': parent[key] = [parent[key]]; break;
    }
  }
  return root;
}

interface Style {
  defaultStringType: 'PLAIN' | 'QUOTE_DOUBLE' | 'QUOTE_SINGLE' | 'BLOCK_LITERAL';
  collectionStyle: 'any' | 'block' | 'flow';
  indent: number;
}

const styleArb: fc.Arbitrary<Style> = fc.record({
  defaultStringType: fc.constantFrom('PLAIN', 'QUOTE_DOUBLE', 'QUOTE_SINGLE', 'BLOCK_LITERAL'),
  collectionStyle: fc.constantFrom('any', 'block', 'flow'),
  indent: fc.integer({ min: 1, max: 8 }),
});

export const configTarget: FuzzTarget = {
  name: 'config',
  parser: 'tunnel/config-load.ts parseYamlText + worker/config.ts parseWorkerConfig + connector/config.ts parseConnectorConfig',
  maxHeapGrowth: 32 << 20,
  properties: [
    {
      name: 'valid fixtures reformatted',
      arbitrary: fc.tuple(fixtureArb, styleArb),
      check([f, style]: [Fixture, Style]) {
        const original = loadConfig(f.kind, f.text);
        assert('config' in original, `valid fixture ${f.name} does not load`);
        const text = YAML.stringify(YAML.parse(f.text), style);
        assertEqual(parsing(() => loadConfig(f.kind, text)), original, `${f.name} written with ${JSON.stringify(style)}`);
      },
    },
    {
      name: 'structure mutated',
      weight: 4,
      arbitrary: fc.tuple(fixtureArb, fc.array(editArb, { minLength: 1, maxLength: 4 }), styleArb, fc.boolean()),
      check([f, edits, style, otherKind]: [Fixture, Edit[], Style, boolean]) {
        const doc = applyEdits(YAML.parse(f.text), edits);
        const text = YAML.stringify(doc, style) ?? '';
        const kind = otherKind ? (f.kind === 'worker' ? 'connector' : 'worker') : f.kind;
        parsing(() => loadConfig(kind, text));
      },
    },
    {
      name: 'bytes mutated',
      weight: 3,
      arbitrary: fc.tuple(mutated(fixtureArb.map((f) => Buffer.from(f.text))), fc.constantFrom<Kind>('worker', 'connector')),
      check([bytes, kind]: [Buffer, Kind]) {
        parsing(() => loadConfig(kind, bytes.toString('utf8')));
      },
    },
    {
      name: 'yaml tokens inserted',
      weight: 2,
      // YAML's own syntax where a value or key was: aliases, anchors, tags, merge keys, documents, directives.
      arbitrary: fc.tuple(fixtureArb, fc.array(fc.tuple(fc.nat(), fc.constantFrom(
        '*a', '&a ', '*a\n', '&a [x, *a]', '!!binary ', '!!js/function ', '!!set ', '!!timestamp ', '!!float ', '<<: ', '<<: *a\n', '? ', '\n---\n',
        '%YAML 1.1\n', '%TAG ! tag:x,2000:\n', '\t', ': ', '- ', '|\n', '>-\n', '"', "'", '#', '{', '[', ']', '}', ',', '\u0000', '\ufeff', '\r',
      )), { minLength: 1, maxLength: 4 }), fc.boolean()),
      check([f, inserts, otherKind]: [Fixture, Array<[number, string]>, boolean]) {
        let text = f.text;
        for (const [at, token] of inserts) {
          const i = at % (text.length + 1);
          text = text.slice(0, i) + token + text.slice(i);
        }
        parsing(() => loadConfig(otherKind ? (f.kind === 'worker' ? 'connector' : 'worker') : f.kind, text));
      },
    },
    {
      name: 'random text',
      arbitrary: fc.tuple(fc.oneof(randomBytes(512).map((b) => b.toString('utf8')), anyText(200)), fc.constantFrom<Kind>('worker', 'connector')),
      check([text, kind]: [string, Kind]) {
        parsing(() => loadConfig(kind, text));
      },
    },
  ],
};
