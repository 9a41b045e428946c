/**
 * Runs every fuzz target (test/fuzz/targets/) with one seed and prints what it
 * counted. `make test` runs a short pass (FUZZ_RUNS inputs per target, 2,000 by
 * default, fixed seed); `make fuzz` runs 100,000 per target with a fresh seed
 * and prints the table. docs/fuzzing.md says how to replay a failure.
 */
import { afterAll, describe, it } from '@jest/globals';
import { formatTable, fuzzSettings, runTarget, selected, type TargetStats } from './harness.js';
import { TARGETS } from './targets/index.js';

const settings = fuzzSettings();
const stats: TargetStats[] = [];

describe(`fuzz targets (seed ${settings.seed}, ${settings.runs} inputs each)`, () => {
  for (const target of TARGETS) {
    const run = selected(settings, target.name) ? it : it.skip;
    // Jest's timeout only backs up the watchdog (FUZZ_HANG_MS), which names the input.
    run(`${target.name} (${target.parser}): only coded errors, no hang, bounded memory`, async () => {
      stats.push(await runTarget(target, settings));
    }, 120_000 + settings.runs * 20);
  }

  afterAll(() => {
    if (stats.length === 0) return;
    process.stdout.write(`\nfuzz: seed ${settings.seed} (replay: FUZZ_SEED=${settings.seed})\n${formatTable(stats)}\n`);
  });
});
