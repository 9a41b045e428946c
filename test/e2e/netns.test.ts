/**
 * The private side has no inbound path, shown with a real network namespace:
 * a veth pair is the only link between the host ("cluster") and the namespace
 * ("private network"), the namespace has no default route, and when nft or
 * iptables is installed every NEW inbound connection on the namespace's veth
 * is dropped. The connector and an app run inside the namespace; the worker
 * runs on the host. Traffic still flows, because the connector dials out.
 *
 * Needs root (CAP_NET_ADMIN) and iproute2; without them the suite is skipped
 * with the reason. Nothing is installed here: without nft/iptables only the
 * route-only part runs, and the suite name says so.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import {
  echoServer, exchange, freePort, makePki, removeDir, startConnector, startWorker, tcpProbe, tempDir, waitFor,
  type App, type ConnectorSetup, type WorkerSetup,
} from './harness.js';

const suffix = randomBytes(3).toString('hex');
const NS = `up-e2e-${suffix}`;
const HOST_IF = `upe${suffix}`;
const NS_IF = `upn${suffix}`;

function run(argv: string[]): { ok: boolean; out: string } {
  const r = spawnSync(argv[0]!, argv.slice(1), { encoding: 'utf8' });
  return { ok: r.status === 0, out: `${r.stdout ?? ''}${r.stderr ?? ''}${r.error ? r.error.message : ''}`.trim() };
}

function must(argv: string[]): string {
  const r = run(argv);
  if (!r.ok) throw new Error(`${argv.join(' ')} failed: ${r.out}`);
  return r.out;
}

const inNs = (...argv: string[]): string[] => ['ip', 'netns', 'exec', NS, ...argv];

/** tcpProbe run inside the namespace. */
function probeFromNs(host: string, port: number): string {
  const script = `const s = require('node:net').connect(${port}, '${host}'); const t = setTimeout(() => { console.log('timeout'); process.exit(); }, 1500);`
    + ` s.on('connect', () => { console.log('connected'); process.exit(); }); s.on('error', (e) => { console.log(e.code); process.exit(); });`;
  return run(inNs(process.execPath, '-e', script)).out;
}

/** Can this process create a network namespace? (root with CAP_NET_ADMIN and iproute2.) */
function netnsSupport(): { ok: true } | { ok: false; why: string } {
  const probe = `up-probe-${suffix}`;
  const add = run(['ip', 'netns', 'add', probe]);
  if (!add.ok) return { ok: false, why: `\`ip netns add\` failed (needs root/CAP_NET_ADMIN and iproute2): ${add.out || 'no output'}` };
  run(['ip', 'netns', 'del', probe]);
  return { ok: true };
}

/** The firewall tool to use inside the namespace, if one is installed (none is installed by this test). */
function firewallTool(): 'nft' | 'iptables' | undefined {
  if (run(['nft', '--version']).ok) return 'nft';
  if (run(['iptables', '--version']).ok) return 'iptables';
  return undefined;
}

/** A /30 in 10.231.X.0/24 not already on this host. */
function pickSubnet(): number {
  const used = run(['ip', '-4', '-o', 'addr', 'show']).out;
  for (let i = 0; i < 50; i++) {
    const x = 1 + Math.floor(Math.random() * 254);
    if (!used.includes(`10.231.${x}.`)) return x;
  }
  throw new Error('no free 10.231.X.0/30 subnet found');
}

const support = netnsSupport();
const firewall = support.ok ? firewallTool() : undefined;
const mode = firewall ? `route isolation + ${firewall} dropping NEW inbound on the namespace veth` : 'route isolation only (no nft or iptables installed: firewall part not run)';
if (!support.ok) console.log(`netns e2e skipped: ${support.why}`);
else if (!firewall) console.log('netns e2e: neither nft nor iptables is installed; running the route-only part');

const suite = support.ok ? describe : describe.skip;

suite(`private network in a netns (${support.ok ? mode : `skipped: ${support.why}`})`, () => {
  const x = support.ok ? pickSubnet() : 0;
  const hostIp = `10.231.${x}.1`;
  const nsIp = `10.231.${x}.2`;
  const bindAll = firewall ? '0.0.0.0' : '127.0.0.1';
  let dir: string;
  let worker: WorkerSetup;
  let connector: ConnectorSetup;
  let nsApp: ChildProcess;
  let clusterApp: App;
  let appPort: number;
  const ports = { toPrivate: 0, toCluster: 0 };
  let created = false;

  beforeAll(async () => {
    must(['ip', 'netns', 'add', NS]);
    created = true;
    must(['ip', 'link', 'add', HOST_IF, 'type', 'veth', 'peer', 'name', NS_IF]);
    must(['ip', 'link', 'set', NS_IF, 'netns', NS]);
    must(['ip', 'addr', 'add', `${hostIp}/30`, 'dev', HOST_IF]);
    must(['ip', 'link', 'set', HOST_IF, 'up']);
    must(inNs('ip', 'addr', 'add', `${nsIp}/30`, 'dev', NS_IF));
    must(inNs('ip', 'link', 'set', NS_IF, 'up'));
    must(inNs('ip', 'link', 'set', 'lo', 'up'));
    if (firewall === 'nft') {
      must(inNs('nft', 'add', 'table', 'inet', 'underpass_e2e'));
      must(inNs('nft', 'add', 'chain', 'inet', 'underpass_e2e', 'input', '{ type filter hook input priority 0; policy accept; }'));
      must(inNs('nft', 'add', 'rule', 'inet', 'underpass_e2e', 'input', 'iifname', NS_IF, 'ct', 'state', 'new', 'drop'));
    } else if (firewall === 'iptables') {
      must(inNs('iptables', '-A', 'INPUT', '-i', NS_IF, '-m', 'conntrack', '--ctstate', 'NEW', '-j', 'DROP'));
    }

    dir = await tempDir('underpass-netns-');
    const pki = await makePki(dir, { workerSans: [hostIp] });
    await pki.connector('dc1-ns');
    appPort = 20_000 + Math.floor(Math.random() * 20_000);
    // With a firewall the private app listens on every address in the namespace, so only the firewall keeps the host out;
    // without one it can only be kept out by binding loopback.
    nsApp = spawn('ip', ['netns', 'exec', NS, process.execPath, '-e',
      `const net = require('node:net'); net.createServer({ allowHalfOpen: true }, (s) => { s.on('error', () => {}); s.pipe(s); }).listen(${appPort}, '${bindAll}', () => console.log('listening'));`],
    { stdio: ['ignore', 'pipe', 'inherit'] });
    await once(nsApp.stdout!, 'data');
    clusterApp = await echoServer();
    ports.toPrivate = await freePort();
    ports.toCluster = await freePort();
    worker = await startWorker(dir, {
      listenHost: hostIp,
      mappings: [
        { name: 'private-app', target: { side: 'Connector', host: '127.0.0.1', port: appPort }, listen: { port: ports.toPrivate, address: '127.0.0.1' } },
        // The connector listens for this one inside the namespace.
        { name: 'cluster-app', target: { side: 'Cluster', host: '127.0.0.1', port: clusterApp.port }, listen: { port: ports.toCluster, address: '127.0.0.1' } },
      ],
    });
    connector = await startConnector(dir, 'dc1-ns', worker.url, { allow: [`127.0.0.1:${appPort}`], bind: [`127.0.0.1:${ports.toCluster}`] }, {
      prefix: inNs(),
      // With a firewall the admin endpoint listens on every address in the namespace, so the test can show it is unreachable anyway.
      adminHost: bindAll,
    });
  }, 60_000);

  afterAll(async () => {
    await connector?.proc.stop();
    await worker?.proc.stop();
    nsApp?.kill();
    await clusterApp?.close();
    if (created) {
      run(['ip', 'netns', 'del', NS]); // takes the namespace's veth end, and so the pair, with it
      run(['ip', 'link', 'del', HOST_IF]);
    }
    if (dir) await removeDir(dir);
  });

  it('the namespace has no default route: its only link is the /30 to the worker host', () => {
    const routes = must(inNs('ip', '-4', 'route', 'show'));
    expect(routes).not.toMatch(/default/);
    expect(routes).toContain(`10.231.${x}.0/30 dev ${NS_IF}`);
  });

  it('carries a connection from the worker listener on the host to the app inside the namespace', async () => {
    const data = randomBytes(256 * 1024);
    const r = await exchange(ports.toPrivate, data);
    expect(r.error).toBeUndefined();
    expect(r.received.equals(data)).toBe(true);
    const line = await waitFor('connector audit line', () => connector.proc.streams({ mapping: 'private-app', outcome: 'closed' })[0]);
    expect(line).toMatchObject({ target: `127.0.0.1:${appPort}`, bytesIn: data.length, bytesOut: data.length });
    const session = await waitFor('worker session-opened', () => worker.proc.audit.find((a) => a.event === 'session-opened'));
    expect(String(session.peer)).toMatch(new RegExp(`^${nsIp.replace(/\./g, '\\.')}:\\d+$`));
  });

  it('carries a connection from inside the namespace to an app on the cluster side', async () => {
    const script = `const s = require('node:net').connect(${ports.toCluster}, '127.0.0.1'); let b = ''; s.on('data', (d) => (b += d)); s.on('close', () => console.log(b)); s.end('hello from the private side');`;
    const child = spawn('ip', ['netns', 'exec', NS, process.execPath, '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    await once(child, 'exit');
    expect(out.trim()).toBe('hello from the private side');
  });

  it(`a direct TCP connect from the host into the namespace fails (app port and connector admin port${firewall ? ', dropped by the firewall' : ''})`, async () => {
    for (const port of [appPort, connector.adminPort]) {
      const outcome = await tcpProbe(nsIp, port, 1_500);
      expect({ port, outcome }).toEqual({ port, outcome: firewall ? 'timeout' : expect.not.stringMatching(/^connected$/) });
      // The same address and port answer from inside the namespace: nothing but the inbound path is missing.
      if (firewall) expect({ port, inside: probeFromNs(nsIp, port) }).toEqual({ port, inside: 'connected' });
    }
  });
});
