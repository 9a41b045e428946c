// The real-cluster suite (test/cluster-real): `make test-cluster` runs it with this config through
// test/cluster-real/run.sh, which starts the local cluster once for every file (or joins the one
// running) and stops it afterwards if it started it. The files run one after another in one
// process (in band), in the order of test/cluster-real/sequencer.cjs. One file:
//   test/cluster-real/run.sh test/cluster-real/netpol.test.ts
import base from './jest.config.js';

export default {
  ...base,
  testMatch: ['<rootDir>/test/cluster-real/**/*.test.ts'],
  testPathIgnorePatterns: ['/node_modules/', '/dist/'],
  testSequencer: '<rootDir>/test/cluster-real/sequencer.cjs',
  maxWorkers: 1,
  // Pods start, images import, Helm waits: each step names its own, longer, timeout.
  testTimeout: 120_000,
};
