/**
 * Underpass as a contender: a real `underpass worker` and `underpass connector`
 * (bin/underpass, separate processes, mTLS WebSocket on loopback) with one
 * Connector-side mapping: the worker listens on the forward port and the
 * connector dials the target. Audit lines (stdout) and logs (stderr) go to
 * files, as a deployment would ship them, not to a pipe we would have to drain.
 *
 * The processes run bin/underpass through a symlink in the temp dir, so their
 * command lines name neither "underpass" nor bin/: on a shared machine, someone
 * else's `pkill -f underpass` must not end a 10-minute soak half-way.
 *
 * UNDERPASS_BENCH_NODE_ARGS adds Node options to both processes, e.g.
 * "--cpu-prof --cpu-prof-dir=/tmp/prof" to profile them during a measurement.
 * UNDERPASS_BENCH_NODE names the Node binary that runs them (and the bare Node
 * forwarders), to compare Node versions; the benchmark's own clients and target
 * apps stay on the Node that runs the benchmark.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import tls from 'node:tls';
import path from 'node:path';
import YAML from 'yaml';
import { createCA, issueConnectorCert, issueWorkerCert, loadCA, writePemFiles, type CertificateAuthority } from '../../tunnel/pki.js';
import { nodeFlagsOf } from '../../tunnel/node-flags.js';
import { VERSION } from '../../tunnel/version.js';
import { BIN, Child, freePort, listening, run, waitUntil, type Contender, type Forward } from './common.js';

export interface UnderpassPki {
  dir: string;
  ca: CertificateAuthority;
  /** Issues connector-NAME.crt/.key into dir; returns their paths. */
  connector(name: string): Promise<{ cert: string; key: string; ca: string }>;
}

/** The CLI entry for spawned processes: a symlink to bin/underpass in `dir` (Node follows it to dist/). */
function entry(dir: string): string {
  const link = path.join(dir, 'tb-entry');
  if (!existsSync(link)) symlinkSync(BIN, link);
  return link;
}

export async function makePki(dir: string): Promise<UnderpassPki> {
  mkdirSync(dir, { recursive: true });
  const caPem = await createCA({ connection: { namespace: 'bench', name: 'tunnel' } });
  const ca = await loadCA(caPem.certPem, caPem.keyPem);
  const worker = await issueWorkerCert(ca, { sans: ['127.0.0.1', 'localhost'] });
  await writePemFiles(dir, { 'ca.crt': caPem.certPem, 'worker.crt': worker.certPem, 'worker.key': worker.keyPem }, { force: true });
  return {
    dir,
    ca,
    async connector(name) {
      const c = await issueConnectorCert(ca, { connector: name });
      await writePemFiles(dir, { [`connector-${name}.crt`]: c.certPem, [`connector-${name}.key`]: c.keyPem }, { force: true });
      return { cert: path.join(dir, `connector-${name}.crt`), key: path.join(dir, `connector-${name}.key`), ca: path.join(dir, 'ca.crt') };
    },
  };
}

export interface RunningWorker {
  child: Child;
  tunnelPort: number;
  adminPort: number;
  url: string;
}

let seq = 0;

/** Starts a worker; with `targetPort`, one Connector-side mapping "bench" listening on `listenPort`. */
export async function startWorker(pki: UnderpassPki, opts: { targetPort?: number; listenPort?: number; tunnelPort?: number; wait?: boolean } = {}): Promise<RunningWorker> {
  const n = ++seq;
  const tunnelPort = opts.tunnelPort ?? (await freePort());
  const adminPort = await freePort();
  const mappings = opts.targetPort && opts.listenPort
    ? [{ name: 'bench', target: { side: 'Connector', host: '127.0.0.1', port: opts.targetPort }, listen: { port: opts.listenPort, address: '127.0.0.1' } }]
    : [];
  const file = path.join(pki.dir, `worker-${n}.yaml`);
  writeFileSync(file, YAML.stringify({
    connection: 'bench/tunnel',
    instance: `bench-worker-${n}`,
    listen: `127.0.0.1:${tunnelPort}`,
    tls: { cert: 'worker.crt', key: 'worker.key', ca: 'ca.crt' },
    admin: `127.0.0.1:${adminPort}`,
    mappings,
    // The idle-sessions measurement holds 1,000 connector sessions on one worker (default limit 64).
    limits: { sessions: 10_000 },
  }));
  const child = new Child('underpass worker', forwarderNode(), [...nodeArgs(), entry(pki.dir), 'worker', '--config', file], path.join(pki.dir, `worker-${n}.log`));
  const worker = { child, tunnelPort, adminPort, url: `wss://127.0.0.1:${tunnelPort}` };
  if (opts.wait !== false) await waitWorker(worker);
  return worker;
}

async function waitWorker(w: RunningWorker): Promise<void> {
  await waitUntil('the worker admin endpoint', () => httpOk(`http://127.0.0.1:${w.adminPort}/healthz`), 20_000, w.child);
  await waitUntil('the worker tunnel port', () => listening(w.tunnelPort), 10_000, w.child);
}

/** Starts a connector (it retries every 100 ms until the worker is up); `wait` for its readiness. */
export async function startConnector(pki: UnderpassPki, workerUrl: string, name = 'bench', wait = true): Promise<{ child: Child; adminPort: number }> {
  await pki.connector(name);
  const adminPort = await freePort();
  const file = path.join(pki.dir, `connector-${name}-${++seq}.yaml`);
  writeFileSync(file, YAML.stringify({
    name,
    worker: workerUrl,
    tls: { cert: `connector-${name}.crt`, key: `connector-${name}.key`, ca: 'ca.crt' },
    allow: ['127.0.0.1:*'],
    admin: `127.0.0.1:${adminPort}`,
    reconnect: { initialDelay: '100ms', maxDelay: '200ms' },
  }));
  const child = new Child('underpass connector', forwarderNode(), [...nodeArgs(), entry(pki.dir), 'connector', '--config', file], path.join(pki.dir, `connector-${name}-${seq}.log`));
  if (wait) await waitUntil('the connector to be ready', () => httpOk(`http://127.0.0.1:${adminPort}/readyz`), 20_000, child);
  return { child, adminPort };
}

/** The Node binary that runs the forwarders: UNDERPASS_BENCH_NODE, or the one running the benchmark. */
export function forwarderNode(): string {
  return process.env.UNDERPASS_BENCH_NODE || process.execPath;
}

/** The version of forwarderNode() (`v26.12.1`); throws, naming UNDERPASS_BENCH_NODE, when it does not run. */
export function forwarderNodeVersion(): string {
  const bin = forwarderNode();
  if (bin === process.execPath) return process.version;
  const v = run(bin, ['--version']).trim();
  if (!/^v\d+\./.test(v)) throw new Error(`UNDERPASS_BENCH_NODE=${bin} is not a Node binary that runs here: \`${bin} --version\` printed ${JSON.stringify(v.slice(0, 200))}`);
  return v;
}

/**
 * bin/underpass's own Node flags (its first line, as the CLI and the image run it), then
 * UNDERPASS_BENCH_NODE_ARGS — less those of its flags that forwarderNode() refuses (Node 20 has no
 * --scavenger-max-new-space-capacity-mb: its default is already the value we set), so that the
 * same code can be compared on an older Node; droppedNodeFlags() names them.
 */
export function nodeArgs(): string[] {
  return [...nodeFlagsOf(BIN).filter((f) => !droppedNodeFlags().includes(f)), ...extraNodeArgs()];
}

let dropped: string[] | undefined;

/** The flags of bin/underpass's first line that forwarderNode() refuses (`node FLAG -e 0` fails). */
export function droppedNodeFlags(): string[] {
  return (dropped ??= nodeFlagsOf(BIN).filter((f) => spawnSync(forwarderNode(), [f, '-e', '0'], { stdio: 'ignore', timeout: 10_000 }).status !== 0));
}

function extraNodeArgs(): string[] {
  return (process.env.UNDERPASS_BENCH_NODE_ARGS ?? '').split(/\s+/).filter(Boolean);
}

/** The TLS version and cipher suite a connector negotiates with the worker. */
async function negotiated(pki: UnderpassPki, port: number): Promise<string> {
  const files = await pki.connector('tls-probe');
  return new Promise((resolve) => {
    const s = tls.connect({ host: '127.0.0.1', port, cert: readFileSync(files.cert), key: readFileSync(files.key), ca: readFileSync(files.ca), servername: 'localhost' }, () => {
      const c = s.getCipher();
      resolve(`${s.getProtocol() ?? '?'} ${c.standardName ?? c.name}`);
      s.destroy();
    });
    s.on('error', (err) => resolve(`unknown (${err.message})`));
  });
}

export async function underpassContender(dir: string): Promise<Contender> {
  const pki = await makePki(path.join(dir, 'tb'));
  const running = new Set<Child>();
  const info: Record<string, string> = { version: VERSION, transport: 'yamux over WebSocket over mutual TLS' };
  info['node options'] = nodeArgs().join(' ') + (droppedNodeFlags().length ? ` (not ${droppedNodeFlags().join(' ')}: ${forwarderNodeVersion()} refuses it)` : '');
  return {
    id: 'underpass',
    label: 'Underpass',
    info,
    async forward(targetPort: number): Promise<Forward> {
      const listenPort = await freePort();
      // Both processes start at once; the connector retries until the worker listens.
      const worker = await startWorker(pki, { targetPort, listenPort, tunnelPort: await freePort(), wait: false });
      const connector = await startConnector(pki, worker.url, 'bench', false);
      running.add(worker.child).add(connector.child);
      await waitWorker(worker);
      await waitUntil('the connector to be ready', () => httpOk(`http://127.0.0.1:${connector.adminPort}/readyz`), 20_000, connector.child);
      // The connector has the mapping once the worker's config arrived.
      await waitUntil('the connector to receive the mapping', async () => {
        const status = await httpJson(`http://127.0.0.1:${connector.adminPort}/status`) as { mappings?: Array<{ name: string }> } | undefined;
        return Boolean(status?.mappings?.some((m) => m.name === 'bench'));
      }, 10_000, connector.child);
      await waitUntil('the mapping listener', () => listening(listenPort), 10_000, worker.child);
      if (!info.tls) info.tls = await negotiated(pki, worker.tunnelPort);
      return {
        port: listenPort,
        roles: { worker: worker.child.pid, connector: connector.child.pid },
        adminPorts: { worker: worker.adminPort, connector: connector.adminPort },
        stop: async () => {
          running.delete(worker.child);
          running.delete(connector.child);
          await Promise.all([connector.child.stop(), worker.child.stop()]);
        },
      };
    },
    async close() {
      await Promise.all([...running].map((c) => c.stop()));
    },
  };
}

export async function httpOk(url: string): Promise<boolean> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(2_000) });
    await res.arrayBuffer();
    return res.ok;
  } catch {
    return false;
  }
}

export async function httpJson(url: string): Promise<unknown> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(2_000) });
    return res.ok ? await res.json() : undefined;
  } catch {
    return undefined;
  }
}

/** Sum of one metric over all its series from an admin /metrics endpoint. */
export async function metric(adminPort: number, name: string): Promise<number> {
  const res = await fetch(`http://127.0.0.1:${adminPort}/metrics`, { signal: AbortSignal.timeout(5_000) });
  let total = 0;
  for (const line of (await res.text()).split('\n')) {
    const m = /^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (m && m[1] === name) total += Number(m[3]);
  }
  return total;
}
