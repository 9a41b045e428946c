/**
 * jpillora/chisel (built by bench/setup.sh from its Go module): `chisel server`
 * + `chisel client <server> <local>:127.0.0.1:<target>`.
 *
 *  - `chisel`: plain HTTP/WebSocket between client and server (no TLS). This
 *    flatters chisel: it still encrypts with its inner SSH connection, but
 *    saves the TLS layer Underpass always has.
 *  - `chisel-tls`: the same over mutual TLS (server --tls-cert/--tls-key/--tls-ca,
 *    client --tls-ca/--tls-cert/--tls-key), certificates from our own PKI.
 */
import { mkdirSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createCA, issueConnectorCert, issueWorkerCert, loadCA, writePemFiles } from '../../tunnel/pki.js';
import { Child, commandExists, freePort, listening, run, waitUntil, type Contender, type Forward } from './common.js';

export function chiselBinary(): string | undefined {
  const cache = process.env.UNDERPASS_TESTENV_CACHE ?? path.join(os.homedir(), '.cache/underpass-testenv');
  return commandExists(path.join(cache, 'bench-bin/chisel')) ?? commandExists('chisel');
}

export async function chiselContender(dir: string, tls: boolean): Promise<Contender | string> {
  const bin = chiselBinary();
  if (!bin) {
    const cache = process.env.UNDERPASS_TESTENV_CACHE ?? path.join(os.homedir(), '.cache/underpass-testenv');
    let why = 'not built';
    try {
      why = `the build failed: ${readFileSync(path.join(cache, 'bench-bin/chisel.failed'), 'utf8').split('\n').slice(1).join(' ').trim().slice(0, 200)}`;
    } catch {
      /* never tried */
    }
    return `chisel skipped (${why}; bench/setup.sh builds it from github.com/jpillora/chisel)`;
  }
  const d = path.join(dir, tls ? 'chisel-tls' : 'chisel');
  mkdirSync(d, { recursive: true });
  const serverArgs: string[] = [];
  const clientArgs: string[] = [];
  if (tls) {
    const caPem = await createCA({ connection: { namespace: 'bench', name: 'chisel' } });
    const ca = await loadCA(caPem.certPem, caPem.keyPem);
    const server = await issueWorkerCert(ca, { sans: ['127.0.0.1', 'localhost'] });
    const client = await issueConnectorCert(ca, { connector: 'chisel' });
    await writePemFiles(d, { 'ca.crt': caPem.certPem, 'server.crt': server.certPem, 'server.key': server.keyPem, 'client.crt': client.certPem, 'client.key': client.keyPem }, { force: true });
    serverArgs.push('--tls-cert', path.join(d, 'server.crt'), '--tls-key', path.join(d, 'server.key'), '--tls-ca', path.join(d, 'ca.crt'));
    clientArgs.push('--tls-ca', path.join(d, 'ca.crt'), '--tls-cert', path.join(d, 'client.crt'), '--tls-key', path.join(d, 'client.key'));
  }
  const port = await freePort();
  const server = new Child('chisel server', bin, ['server', '--host', '127.0.0.1', '--port', String(port), ...serverArgs], path.join(d, 'server.log'));
  await waitUntil('chisel server to listen', () => listening(port), 10_000, server);
  const version = run(bin, ['--version']).trim();
  const info: Record<string, string> = {
    version,
    transport: tls ? 'WebSocket over mutual TLS, SSH inside' : 'WebSocket over plain TCP (no TLS; flatters chisel), SSH inside',
  };
  let n = 0;
  const clients = new Set<Child>();
  return {
    id: tls ? 'chisel-tls' : 'chisel',
    label: tls ? 'chisel (mTLS)' : 'chisel (no TLS)',
    info,
    async forward(targetPort: number): Promise<Forward> {
      const local = await freePort();
      const url = `${tls ? 'https' : 'http'}://127.0.0.1:${port}`;
      const client = new Child('chisel client', bin, ['client', ...clientArgs, url, `127.0.0.1:${local}:127.0.0.1:${targetPort}`], path.join(d, `client-${++n}.log`));
      clients.add(client);
      await waitUntil(`chisel client on port ${local}`, () => listening(local) && /Connected/.test(client.tail(50)), 15_000, client);
      return {
        port: local,
        roles: { 'chisel client': client.pid, 'chisel server': server.pid },
        stop: async () => {
          clients.delete(client);
          await client.stop();
        },
      };
    },
    async close() {
      for (const c of clients) await c.stop();
      await server.stop();
    },
  };
}
