/** `underpass probe`: exit 0 on a 2xx answer, 1 (with the status and body) otherwise. */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { freePort } from '../test/e2e/harness.js';
import { runCli } from './testing.js';

let server: http.Server;
let base: string;
let calls = 0;

beforeAll(async () => {
  server = http.createServer((req, res) => {
    calls++;
    if (req.url === '/readyz') return void res.writeHead(200).end('ready (leader)\n');
    if (req.url === '/later' && calls >= 3) return void res.writeHead(200).end('ready\n');
    res.writeHead(503).end('not ready: CRD tunnelconnections.underpass.dev is not installed\n');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

describe('underpass probe', () => {
  it('exits 0 and prints the answer when the endpoint is ready', async () => {
    const r = await runCli(['probe', `${base}/readyz`]);
    expect(r).toMatchObject({ code: 0, stdout: `GET ${base}/readyz: 200 ready (leader)\n` });
  });

  it.each([
    ['a 503 answer, with its reason', '/notready', /503 not ready: CRD tunnelconnections.underpass.dev is not installed/],
    ['a refused connection', 'closed', /ECONNREFUSED/],
  ])('exits 1 on %s', async (_name, target, message) => {
    const url = target === 'closed' ? `http://127.0.0.1:${await freePort()}/readyz` : `${base}${target}`;
    const r = await runCli(['probe', url, '--timeout', '2s']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(message);
  });

  it('keeps trying for --wait until the endpoint answers 2xx', async () => {
    calls = 0;
    const r = await runCli(['probe', `${base}/later`, '--wait', '10s']);
    expect(r.code).toBe(0);
    expect(calls).toBe(3);
  }, 15_000);

  it.each([
    ['a URL that is not one', 'not a url', /field "url"/],
    ['another scheme', 'ftp://example.test/', /http:\/\/ or https:\/\//],
  ])('refuses %s with exit 2', async (_name, target, message) => {
    const r = await runCli(['probe', target]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(message);
  });
});
