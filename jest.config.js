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
  testPathIgnorePatterns: ['/node_modules/', '/dist/'],
  // make image's staging tree holds a second package.json named underpass (and a node_modules).
  modulePathIgnorePatterns: ['<rootDir>/image/out/'],
  testTimeout: 30000,
  // Every suite stops what it started in afterAll; if a stray handle survives anyway, CI must not
  // wait for it forever.
  forceExit: true,
};
