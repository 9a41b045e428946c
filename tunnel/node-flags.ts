/**
 * The Node flags `bin/underpass` runs with, read from its `#!/usr/bin/env -S node …` line, so
 * `underpass demo`, the tests and the benchmark start worker and connector processes exactly as
 * the CLI (and the image's ENTRYPOINT) does when they spawn `node BIN …` themselves.
 */
import { readFileSync } from 'node:fs';

export function nodeFlagsOf(bin: string): string[] {
  const first = readFileSync(bin, 'utf8').split('\n', 1)[0] ?? '';
  const m = /^#!\S*env\s+(?:-S\s+)?node((?:\s+--\S+)*)\s*$/.exec(first);
  if (!m) throw new Error(`${bin}: first line "${first}" is not "#!/usr/bin/env [-S] node [--flags]"`);
  return m[1]!.trim().split(/\s+/).filter(Boolean);
}
