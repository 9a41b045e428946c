/**
 * `underpass demo`: a complete tunnel on this machine, no cluster needed.
 * Makes a CA and certificates in a temp folder, starts a worker and a
 * connector as real child processes, an app on each side, and sends traffic
 * through both directions. `--once` exits 0 once both directions are proven.
 */
import { nodeFlagsOf } from '../tunnel/node-flags.js';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createWriteStream } from 'node:fs';
import { mkdtemp, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Command } from 'commander';
import { createCA, issueConnectorCert, issueWorkerCert, loadCA, writePemFiles } from '../tunnel/pki.js';

const CONNECTION = { namespace: 'demo', name: 'local' };
const BIN = fileURLToPath(new URL('../../bin/underpass', import.meta.url));

interface DemoFlags {
  once?: boolean;
  dir?: string;
}

export function registerDemoCommand(program: Command): void {
  program
    .command('demo')
    .description('run a complete local tunnel (worker, connector, an app on each side) and prove traffic flows both ways')
    .option('--once', 'exit 0 after proving both directions (non-zero if either fails)')
    .option('--dir <dir>', 'folder for certificates, configs and logs (default: a new temp folder)')
    .action(async (flags: DemoFlags) => {
      process.exitCode = await runDemo(flags);
    });
}

async function runDemo(flags: DemoFlags): Promise<number> {
  const say = (line = ''): void => void process.stdout.write(`${line}\n`);
  const dir = flags.dir ?? (await mkdtemp(path.join(os.tmpdir(), 'underpass-demo-')));
  const [tunnelPort, workerAdmin, connectorAdmin, inventoryListen, reportsListen] = await freePorts(5);
  const inventory = await lineApp('inventory service (private network)');
  const reports = await lineApp('reports service (cluster)');

  const ca = await createCA({ connection: CONNECTION });
  const authority = await loadCA(ca.certPem, ca.keyPem);
  const worker = await issueWorkerCert(authority, { sans: ['localhost', '127.0.0.1'] });
  const connector = await issueConnectorCert(authority, { connector: 'demo-connector' });
  await writePemFiles(dir, {
    'ca.crt': ca.certPem, 'ca.key': ca.keyPem, 'worker.crt': worker.certPem, 'worker.key': worker.keyPem,
    'connector-demo-connector.crt': connector.certPem, 'connector-demo-connector.key': connector.keyPem,
  }, { force: true });
  await writeFile(path.join(dir, 'worker.yaml'), `# Worker of connection demo/local (see docs/configuration.md)
connection: demo/local
listen: "127.0.0.1:${tunnelPort}"
tls: {cert: worker.crt, key: worker.key, ca: ca.crt}
admin: "127.0.0.1:${workerAdmin}"
drainTimeout: 5s
audit: {file: worker-audit.log}
mappings:
  - name: inventory            # app in the private network, reached from the cluster side
    target: {side: Connector, host: 127.0.0.1, port: ${inventory.port}}
    listen: {port: ${inventoryListen}, address: 127.0.0.1}
    allowedSources: ["127.0.0.0/8"]
  - name: reports              # app in the cluster, reached from the private network
    target: {side: Cluster, host: 127.0.0.1, port: ${reports.port}}
    listen: {port: ${reportsListen}, address: 127.0.0.1}
`);
  await writeFile(path.join(dir, 'connector.yaml'), `# Connector demo-connector (see docs/configuration.md)
name: demo-connector
worker: "wss://127.0.0.1:${tunnelPort}"
tls: {cert: connector-demo-connector.crt, key: connector-demo-connector.key, ca: ca.crt}
# Connectors deny by default: "allow" lists what it may dial (the inventory app), "bind" where
# Cluster-side mappings may listen (the reports mapping's port on loopback).
allow: ["127.0.0.1:${inventory.port}"]
bind: ["127.0.0.1:${reportsListen}"]
admin: "127.0.0.1:${connectorAdmin}"
drainTimeout: 5s
audit: {file: connector-audit.log}
`);
  say(`Underpass demo — everything lives in ${dir}`);
  say(`  certificates: ca.crt, worker.crt, connector-demo-connector.crt (connection ${CONNECTION.namespace}/${CONNECTION.name})`);
  say(`  apps: inventory on 127.0.0.1:${inventory.port} (private side), reports on 127.0.0.1:${reports.port} (cluster side)`);

  const children = [start('worker', dir), start('connector', dir)];
  const stopAll = async (): Promise<void> => {
    for (const c of children) if (c.exitCode === null) c.kill('SIGTERM');
    await Promise.all(children.map((c) => (c.exitCode === null ? once(c, 'exit') : undefined)));
    inventory.server.close();
    reports.server.close();
  };
  try {
    say(`  worker:    underpass worker --config ${path.join(dir, 'worker.yaml')}  (log: worker.log)`);
    say(`  connector: underpass connector --config ${path.join(dir, 'connector.yaml')}  (log: connector.log)`);
    await waitReady(`http://127.0.0.1:${workerAdmin}/readyz`, children, 20_000);
    await waitReady(`http://127.0.0.1:${connectorAdmin}/readyz`, children, 20_000);
    await waitListening(reportsListen, 10_000);
    say('  connector connected to worker over mutual-TLS WebSocket');
    say();
    const a = await exchange(inventoryListen, 'hello from the cluster');
    say(`cluster → private:  127.0.0.1:${inventoryListen} (worker) → tunnel → connector → inventory`);
    say(`  sent "hello from the cluster", got "${a}"`);
    const b = await exchange(reportsListen, 'hello from the private network');
    say(`private → cluster:  127.0.0.1:${reportsListen} (connector) → tunnel → worker → reports`);
    say(`  sent "hello from the private network", got "${b}"`);
    const ok = a.startsWith('inventory service') && b.startsWith('reports service');
    say();
    say(ok ? 'Both directions work.' : 'A direction FAILED; see the logs above.');
    say(`Audit lines: ${path.join(dir, 'worker-audit.log')} and connector-audit.log; metrics: http://127.0.0.1:${workerAdmin}/metrics`);
    if (flags.once || !ok) return ok ? 0 : 1;
    say();
    say('Try it yourself (Ctrl-C to stop):');
    say(`  printf 'hi\\n' | nc -q1 127.0.0.1 ${inventoryListen}    # cluster side → private app`);
    say(`  printf 'hi\\n' | nc -q1 127.0.0.1 ${reportsListen}    # private side → cluster app`);
    say(`  curl -s http://127.0.0.1:${workerAdmin}/status`);
    await new Promise<void>((resolve) => {
      process.once('SIGINT', () => resolve());
      process.once('SIGTERM', () => resolve());
    });
    say('stopping…');
    return 0;
  } catch (err) {
    say(`demo failed: ${(err as Error).message}`);
    say(`logs: ${path.join(dir, 'worker.log')}, ${path.join(dir, 'connector.log')}`);
    return 1;
  } finally {
    await stopAll();
  }
}

function start(role: 'worker' | 'connector', dir: string): ChildProcess {
  const log = createWriteStream(path.join(dir, `${role}.log`));
  const child = spawn(process.execPath, [...nodeFlagsOf(BIN), BIN, role, '--config', path.join(dir, `${role}.yaml`)], { stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout!.pipe(log);
  child.stderr!.pipe(log);
  return child;
}

async function lineApp(name: string): Promise<{ server: net.Server; port: number }> {
  const server = net.createServer((socket) => {
    socket.on('error', () => undefined);
    let buf = '';
    socket.on('data', (d: Buffer) => {
      buf += d.toString();
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        socket.write(`${name}: you said "${buf.slice(0, i)}"\n`);
        buf = buf.slice(i + 1);
      }
    });
    socket.on('end', () => socket.end());
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { server, port: (server.address() as net.AddressInfo).port };
}

async function freePorts(n: number): Promise<number[]> {
  const servers = await Promise.all(Array.from({ length: n }, async () => {
    const s = net.createServer().listen(0, '127.0.0.1');
    await once(s, 'listening');
    return s;
  }));
  const ports = servers.map((s) => (s.address() as net.AddressInfo).port);
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  return ports;
}

function exchange(port: number, line: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    let got = '';
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no answer through 127.0.0.1:${port} within 5 s`));
    }, 5_000);
    socket.on('data', (d: Buffer) => (got += d.toString()));
    socket.on('error', (err) => {
      clearTimeout(timer);
      reject(new Error(`connection through 127.0.0.1:${port} failed: ${err.message}`));
    });
    socket.on('close', () => {
      clearTimeout(timer);
      resolve(got.trim());
    });
    socket.end(`${line}\n`);
  });
}

async function waitReady(url: string, children: ChildProcess[], timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() < deadline) {
    const dead = children.find((c) => c.exitCode !== null);
    if (dead) throw new Error(`a process exited early (code ${dead.exitCode})`);
    try {
      const res = await fetch(url);
      last = (await res.text()).trim();
      if (res.ok) return;
    } catch (err) {
      last = (err as Error).message;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${url} not ready after ${timeoutMs} ms: ${last}`);
}

async function waitListening(port: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, '127.0.0.1');
      s.on('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.on('error', () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`nothing listening on 127.0.0.1:${port} after ${timeoutMs} ms`);
}
