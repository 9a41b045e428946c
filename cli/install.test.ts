/**
 * `underpass connector install` writes a hardened unit that systemd itself
 * accepts (`systemd-analyze verify`, offline: PID 1 need not be systemd) and
 * a connector config that loads.
 */
import { describe, expect, it, beforeAll, afterAll } from '@jest/globals';
import { execFile } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import YAML from 'yaml';
import { parseConnectorConfig } from '../connector/config.js';
import { signToken } from '../tunnel/enrollment-token.js';
import { runCli } from './testing.js';
import { BIN } from '../test/e2e/harness.js';

const exec = promisify(execFile);
let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'underpass-install-'));
  const token = await signToken(generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey, {
    connection: { namespace: 'team-a', name: 'dc1' }, connector: 'site-a', jti: 'j', caHashes: ['a'.repeat(64)], ttlMs: 3_600_000,
  });
  await writeFile(path.join(dir, 'token'), token);
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('underpass connector install', () => {
  it('writes a unit systemd-analyze verify accepts, hardened, and a config that loads', async () => {
    const root = path.join(dir, 'root');
    const r = await runCli(['connector', 'install', '--root', root, '--no-create-user', '--token-file', path.join(dir, 'token'),
      '--worker', 'wss://tunnel.example.com:443', '--allow', 'db.internal:5432', '--exec', BIN]);
    expect([r.code, r.stderr]).toEqual([0, expect.stringContaining('systemctl daemon-reload && systemctl enable --now underpass-connector-site-a.service')]);
    const unitFile = path.join(root, 'etc/systemd/system/underpass-connector-site-a.service');
    const unit = await readFile(unitFile, 'utf8');
    for (const line of ['User=underpass', 'NoNewPrivileges=yes', 'ProtectSystem=strict', 'StateDirectory=underpass/site-a', 'Restart=on-failure', 'CapabilityBoundingSet=', 'ProtectHome=yes']) {
      expect(unit).toContain(`${line}\n`);
    }
    const verify = await exec('systemd-analyze', ['verify', unitFile]).then((x) => ({ code: 0, out: `${x.stdout}${x.stderr}` }), (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, out: `${e.stdout}${e.stderr}` }));
    // Only lines about this unit count (verify also reads the host's own units, which may not be clean).
    const ours = verify.out.split('\n').filter((l) => l.includes('underpass-connector-site-a'));
    expect({ code: verify.code, ours }).toEqual({ code: 0, ours: [] });

    const configFile = path.join(root, 'etc/underpass/site-a/connector.yaml');
    const config = parseConnectorConfig(YAML.parse(await readFile(configFile, 'utf8')), '/etc/underpass/site-a/connector.yaml');
    expect([config.name, config.state, config.tls.key, config.enroll?.tokenFile, config.allowRules]).toEqual(['site-a', '/var/lib/underpass/site-a', '/var/lib/underpass/site-a/tls.key', '/etc/underpass/site-a/token', ['db.internal:5432']]);
    expect((await stat(path.join(root, 'etc/underpass/site-a/token'))).mode & 0o777).toBe(0o640);
  });

  it('systemd-analyze verify does catch a broken unit (so the test above can fail)', async () => {
    const broken = path.join(dir, 'underpass-connector-broken.service');
    await writeFile(broken, '[Service]\nExecStart=relative/path connector\nProtectSystem=sometimes\n');
    const verify = await exec('systemd-analyze', ['verify', broken]).then((x) => `${x.stdout}${x.stderr}`, (e: { stdout: string; stderr: string }) => `${e.stdout}${e.stderr}`);
    expect(verify).toMatch(/underpass-connector-broken/);
  });

  it('refuses a name the token does not enroll (exit 2)', async () => {
    const r = await runCli(['connector', 'install', '--root', path.join(dir, 'r2'), '--no-create-user', '--token-file', path.join(dir, 'token'), '--worker', 'wss://t:443', '--name', 'other']);
    expect([r.code, r.stderr]).toEqual([2, expect.stringContaining('the token enrolls connector "site-a", not "other"')]);
  });
});
