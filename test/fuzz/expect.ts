/**
 * What a parser may throw: its documented coded error, nothing else. Any other
 * exception (a TypeError, a RangeError from a Buffer read, a SyntaxError that
 * escaped) is a crash and fails the property with the original stack.
 */
import { isDeepStrictEqual, inspect } from 'node:util';
import { noteKnownBug } from './harness.js';
import { knownBug } from './known-bugs.js';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type ErrorClass = abstract new (...args: any[]) => Error;

/** A parser error as the split-invariance and round-trip checks compare it. */
export interface SeenError {
  name: string;
  code: string;
  message: string;
}

/** Returns the error as SeenError when it is an instance of `classes` with a string code in `codes` (if given); throws otherwise. */
export function coded(err: unknown, classes: readonly ErrorClass[], codes?: readonly string[]): SeenError {
  const known = knownBug(err);
  if (known) {
    noteKnownBug(known.id);
    return { name: 'KnownBug', code: known.id, message: String((err as { message?: unknown }).message) };
  }
  const ok = classes.some((c) => err instanceof c);
  const code = (err as { code?: unknown } | null)?.code;
  if (!ok || typeof code !== 'string' || (codes && !codes.includes(code))) {
    const what = err instanceof Error ? (err.stack ?? err.message) : inspect(err);
    throw new Error(`the parser threw something other than its documented error (${classes.map((c) => c.name).join(' | ')}${codes ? ` with code ${codes.join(' | ')}` : ''}):\n${what}`);
  }
  return { name: (err as Error).name, code, message: (err as Error).message };
}

/** Runs `fn`; its coded error (checked as `coded` does) or undefined. */
export function attempt(fn: () => void, classes: readonly ErrorClass[], codes?: readonly string[]): SeenError | undefined {
  try {
    fn();
    return undefined;
  } catch (err) {
    return coded(err, classes, codes);
  }
}

/** Objects with a null prototype (fast-check's records) as plain objects, so only content is compared. */
function plain(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(plain);
  if (v === null || typeof v !== 'object' || Buffer.isBuffer(v) || ArrayBuffer.isView(v)) return v;
  const proto = Object.getPrototypeOf(v) as unknown;
  if (proto !== null && proto !== Object.prototype) return v;
  return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, plain(x)]));
}

export function assertEqual(actual: unknown, expected: unknown, what: string): void {
  if (!isDeepStrictEqual(plain(actual), plain(expected))) {
    throw new Error(`${what}:\n  got      ${inspect(actual, { depth: 6, maxArrayLength: 20, maxStringLength: 200 })}\n  expected ${inspect(expected, { depth: 6, maxArrayLength: 20, maxStringLength: 200 })}`);
  }
}

export function assert(condition: boolean, what: string): asserts condition {
  if (!condition) throw new Error(what);
}
