/**
 * What the worker and connector config files share: reading YAML, turning
 * zod issues into one ConfigError (file, field path, human message), and the
 * schema pieces both files use (addresses, durations, TLS, log, audit).
 */
import { readFileSync } from 'node:fs';
import { access, stat } from 'node:fs/promises';
import { constants as fsConstants } from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import { z } from 'zod';
import { ConfigError, errorCode, errorMessage } from './errors.js';
import { parseHostPort, type HostPort } from './address.js';
import { formatDuration, parseDuration } from './duration.js';

/** Reads and parses one YAML document; an empty file gives null. */
export function loadYamlFile(file: string): unknown {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    const reason = errorCode(err) === 'ENOENT' ? 'no such file' : errorMessage(err);
    throw new ConfigError(`cannot read the config file: ${reason}`, { file }, { cause: err });
  }
  return parseYamlText(text, file);
}

/** Parses the text of one YAML document (`file` names it in errors); an empty document gives null. */
export function parseYamlText(text: string, file: string): unknown {
  const lineCounter = new YAML.LineCounter();
  const doc = YAML.parseDocument(text, { lineCounter });
  const err = doc.errors[0];
  if (err) {
    const at = err.linePos?.[0];
    const where = at ? `line ${at.line}, column ${at.col}: ` : '';
    const what = err.message.split('\n')[0]!.replace(/ at line \d+, column \d+:?$/, '');
    throw new ConfigError(`invalid YAML at ${where}${what}`, { file }, { cause: err });
  }
  try {
    return doc.toJS();
  } catch (cause) {
    // The yaml library resolves aliases only here, and throws a plain error for an alias without
    // an anchor or one that expands too often (a "billion laughs" document).
    const alias = unresolvedAlias(doc);
    const at = alias?.range ? lineCounter.linePos(alias.range[0]) : undefined;
    const what = errorMessage(cause).split('\n')[0]!;
    throw new ConfigError(`invalid YAML${at ? ` at line ${at.line}, column ${at.col}` : ''}: ${what}`, { file }, { cause });
  }
}

function unresolvedAlias(doc: YAML.Document): YAML.Alias | undefined {
  let found: YAML.Alias | undefined;
  YAML.visit(doc, {
    Alias(_key, node) {
      if (node.resolve(doc) === undefined) {
        found = node;
        return YAML.visit.BREAK;
      }
      return undefined;
    },
  });
  return found;
}

/** The most useful issue as a ConfigError: an unknown field first (it explains a "missing" one), else the first. */
export function zodToConfigError(file: string, err: z.ZodError): ConfigError {
  const issue = err.issues.find((i) => i.code === 'unrecognized_keys') ?? err.issues[0];
  if (!issue) return new ConfigError('invalid configuration', { file }, { cause: err });
  const segments = issue.code === 'unrecognized_keys' ? [...issue.path, issue.keys[0]!] : issue.path;
  const field = formatPath(segments);
  return new ConfigError(describeIssue(issue), { file, field: field || undefined }, { cause: err });
}

/**
 * `['mappings', 0, 'target', 'port']` → `mappings[0].target.port`. A key that is not a plain name
 * (empty, or with dots, spaces, quotes) is written as a JSON string in brackets, `tls["a b"]`, so
 * that every field can be named, an empty one too.
 */
export function formatPath(segments: ReadonlyArray<PropertyKey>): string {
  return segments.reduce<string>((out, s) => {
    if (typeof s === 'number') return `${out}[${s}]`;
    const key = String(s);
    if (!/^[A-Za-z0-9_-]+$/.test(key)) return `${out}[${JSON.stringify(key)}]`;
    return out ? `${out}.${key}` : key;
  }, '');
}

function describeIssue(issue: z.core.$ZodIssue): string {
  const custom = !issue.message.startsWith('Invalid ');
  switch (issue.code) {
    case 'invalid_type': {
      if (custom) return issue.message;
      const missing = 'input' in issue ? issue.input === undefined : issue.message.endsWith('received undefined');
      if (missing) return 'is required';
      const got = 'input' in issue ? ` (got ${describeValue(issue.input)})` : '';
      return `must be ${EXPECTED[issue.expected] ?? issue.expected}${got}`;
    }
    case 'invalid_value':
      if (custom) return issue.message;
      return issue.values.length === 1 ? `must be ${JSON.stringify(issue.values[0])}`
        : `must be one of: ${issue.values.map(String).join(', ')}`;
    case 'invalid_union': {
      // A missing field fails every branch of a union with "received undefined".
      const missing = issue.errors.every((branch) => branch.some((i) => i.code === 'invalid_type'
        && i.path.length === 0 && ('input' in i ? i.input === undefined : i.message.endsWith('received undefined'))));
      if (missing) return 'is required';
      return custom ? issue.message : 'has an invalid value';
    }
    default:
      return issue.message;
  }
}

const EXPECTED: Record<string, string> = {
  string: 'a string', number: 'a number', int: 'a whole number', boolean: 'true or false',
  object: 'an object (a YAML mapping of fields)', array: 'a list',
};

function describeValue(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'an object';
  return `${typeof v} ${JSON.stringify(v)}`;
}

/** safeParse `raw` with `schema`; any failure becomes a ConfigError naming `file`. */
export function parseConfig<S extends z.ZodType>(schema: S, raw: unknown, file: string): z.output<S> {
  if (raw === null || raw === undefined) throw new ConfigError('the file is empty', { file });
  const result = schema.safeParse(raw, { reportInput: true });
  if (!result.success) throw zodToConfigError(file, result.error);
  return result.data;
}

/** A strict object whose unknown-field issue lists the fields it knows. */
export function strictObject<T extends z.core.$ZodLooseShape>(shape: T) {
  const known = Object.keys(shape).join(', ');
  return z.strictObject(shape, {
    error: (iss) => (iss.code === 'unrecognized_keys' ? `unknown field (expected one of: ${known})` : undefined),
  });
}

/** A string schema run through a parser that throws ConfigError; its problem becomes the issue. */
export function parsedString<T>(parse: (s: string) => T) {
  return z.string().transform((s, ctx): T => {
    try {
      return parse(s);
    } catch (err) {
      ctx.addIssue({ code: 'custom', message: err instanceof ConfigError ? err.problem : errorMessage(err) });
      return z.NEVER;
    }
  });
}

export const portSchema = z.number()
  .int('must be a whole number between 1 and 65535')
  .min(1, 'must be between 1 and 65535')
  .max(65535, 'must be between 1 and 65535');

export const hostPortSchema = parsedString<HostPort>((s) => parseHostPort(s));

/** Timers above this overflow setTimeout. */
const MAX_TIMER_MS = 2 ** 31 - 1;

export const durationSchema = z.union([z.string(), z.number()], {
  error: 'must be a duration like "30s" or "500ms", or a number of milliseconds',
}).transform((v, ctx) => {
  try {
    const ms = parseDuration(v);
    if (ms > MAX_TIMER_MS) ctx.addIssue({ code: 'custom', message: 'must be at most 596h' });
    return ms;
  } catch (err) {
    ctx.addIssue({ code: 'custom', message: err instanceof ConfigError ? err.problem : errorMessage(err) });
    return z.NEVER;
  }
});

export const positiveDurationSchema = durationSchema.refine((ms) => ms > 0, 'must be greater than 0');

const pathSchema = z.string().min(1, 'must not be empty');

export const tlsSchema = strictObject({ cert: pathSchema, key: pathSchema, ca: pathSchema });

export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];
export const logSchema = strictObject({ level: z.enum(LOG_LEVELS).default('info') }).default({ level: 'info' });

export const auditSchema = strictObject({ file: pathSchema });

/** `keepalive: {interval, timeout}`; timeout defaults to twice the interval (5s / 10s). */
export const keepaliveSchema = strictObject({
  interval: positiveDurationSchema.optional(),
  timeout: positiveDurationSchema.optional(),
}).default({}).transform((k, ctx) => {
  const intervalMs = k.interval ?? 5000;
  const timeoutMs = k.timeout ?? intervalMs * 2;
  if (timeoutMs <= intervalMs) {
    ctx.addIssue({ code: 'custom', path: ['timeout'], message: `must be greater than interval (${formatDuration(intervalMs)})` });
  }
  return { intervalMs, timeoutMs };
});

/** Relative paths resolve against the folder of the config file. */
export function resolveFrom(configFile: string, p: string): string {
  return path.resolve(path.dirname(path.resolve(configFile)), p);
}

interface TlsPaths {
  cert: string;
  key: string;
  ca: string;
}

export function resolveTlsFiles(configFile: string, tls: TlsPaths): TlsPaths {
  return { cert: resolveFrom(configFile, tls.cert), key: resolveFrom(configFile, tls.key), ca: resolveFrom(configFile, tls.ca) };
}

/** The TLS files must exist and be readable; their content is checked when the TLS context is built. */
export function checkTlsFiles(configFile: string, tls: TlsPaths): Promise<void> {
  return checkReadableFiles(configFile, [['tls.cert', tls.cert], ['tls.key', tls.key], ['tls.ca', tls.ca]]);
}

/** Each [field, path] must be a readable regular file; the error names the field. */
export async function checkReadableFiles(file: string, entries: ReadonlyArray<readonly [string, string]>): Promise<void> {
  for (const [field, p] of entries) {
    try {
      if (!(await stat(p)).isFile()) throw new ConfigError(`${p} is not a regular file`, { file, field });
      await access(p, fsConstants.R_OK);
    } catch (err) {
      if (err instanceof ConfigError) throw err;
      const reason = errorCode(err) === 'ENOENT' ? 'file does not exist' : errorMessage(err);
      throw new ConfigError(`cannot read ${p}: ${reason}`, { file, field }, { cause: err });
    }
  }
}
