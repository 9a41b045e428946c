/**
 * Crashes the fuzzers found in files another team member owns, not fixed yet.
 * Each has a failing regression test in fixed-bugs.test.ts (`it.failing`):
 * when its owner fixes it, that test passes, Jest reports the `it.failing` as
 * an error, and the entry here and the marker there are removed together.
 *
 * Until then the fuzz targets count an input that hits one of these as a
 * known bug (the table's "known" column), not as a crash, so that `make test`
 * stays green and every other crash still fails it. A matcher is specific: the
 * error's class and the function it came from.
 */
export interface KnownBug {
  id: string;
  /** File and owner (docs: notes/TEAM.md). */
  where: string;
  what: string;
  matches(err: unknown): boolean;
}

/** `err` was thrown from `file` (one of its first frames; the stack is source-mapped to .ts under Jest). */
// Kept for the next entry: match a bug by the file it is thrown from.
export const thrownFrom = (err: unknown, file: RegExp): boolean => {
  // Not `instanceof Error`: errors made by Node's own modules come from another realm under Jest.
  const stack = (err as { stack?: unknown } | null)?.stack;
  return typeof stack === 'string' && stack.split('\n').slice(1, 8).some((line) => file.test(line));
};

export const KNOWN_BUGS: readonly KnownBug[] = [];

/** The known bug `err` is, if any. */
export function knownBug(err: unknown): KnownBug | undefined {
  return KNOWN_BUGS.find((b) => b.matches(err));
}
