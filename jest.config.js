// Tests are TypeScript ESM, transpiled by swc (type-checking is `make typecheck`).
export default {
  testEnvironment: 'node',
  extensionsToTreatAsEsm: ['.ts'],
  transform: {
    '^.+\\.ts$': ['@swc/jest', {
      jsc: { target: 'es2022', parser: { syntax: 'typescript' } },
      module: { type: 'es6' },
      sourceMaps: 'inline',
    }],
  },
  moduleNameMapper: { '^(\\.{1,2}/.*)\\.js$': '$1' },
  testMatch: ['<rootDir>/{tunnel,worker,connector,operator,cli,test}/**/*.test.ts'],
  // The real-cluster suite (root, one cluster per machine) runs on its own: `make test-cluster`,
  // with jest.cluster.config.js (one cluster start for all its files, in band).
  testPathIgnorePatterns: ['/node_modules/', '/dist/', '<rootDir>/test/cluster-real/'],
  // Trees with package.json files of their own (one named underpass), not part of the module
  // graph: make image's staging tree, and the local cluster's state (make cluster) with image
  // filesystems.
  modulePathIgnorePatterns: ['<rootDir>/image/out/', '<rootDir>/.cluster/'],
  testTimeout: 30000,
  // Every suite stops what it started in afterAll; if a stray handle survives anyway, CI must not
  // wait for it forever.
  forceExit: true,
};
