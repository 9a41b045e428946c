/**
 * Interop with the Go reference (github.com/hashicorp/yamux) over real TCP on
 * loopback, in both directions. The Go peer (test/interop/yamux-peer) echoes
 * every stream we open and, when asked, opens streams to us and verifies our
 * echo; see test/interop/README.md for its line protocol.
 */
import { afterEach, beforeAll, describe, expect, it } from '@jest/globals';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Session } from '../../tunnel/mux/session.js';
import type { MuxStream } from '../../tunnel/mux/stream.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
let peerBin = '';

beforeAll(() => {
  peerBin = execFileSync('bash', [path.join(HERE, 'build-peer.sh')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }).trim();
}, 300_000);

class GoPeer {
  readonly child: ChildProcess;
  readonly lines: string[] = [];
  readonly exited: Promise<number | null>;
  #waiters: Array<() => void> = [];

  constructor(args: string[]) {
    this.child = spawn(peerBin, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let buf = '';
    this.child.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        this.lines.push(buf.slice(0, i));
        buf = buf.slice(i + 1);
        for (const w of this.#waiters.splice(0)) w();
      }
    });
    this.child.stderr!.on('data', () => undefined);
    this.exited = new Promise((resolve) => this.child.once('exit', resolve));
  }

  async line(prefix: string, timeoutMs = 30_000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.lines.find((l) => l.startsWith(prefix));
      if (found) return found;
      if (Date.now() > deadline) throw new Error(`no "${prefix}" line from the Go peer; got:\n${this.lines.join('\n')}`);
      await new Promise<void>((r) => {
        this.#waiters.push(r);
        setTimeout(r, 100);
      });
    }
  }
}

const peers: GoPeer[] = [];
const sessions: Session[] = [];
afterEach(() => {
  for (const s of sessions.splice(0)) s.close();
  for (const p of peers.splice(0)) if (p.child.exitCode === null) p.child.kill();
});

function echoAll(session: Session): void {
  session.on('stream', (s) => {
    s.on('error', () => undefined);
    s.pipe(s);
  });
}

function roundTrip(stream: MuxStream, data: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    stream.on('data', (d: Buffer) => parts.push(d));
    stream.once('end', () => resolve(Buffer.concat(parts)));
    stream.once('error', reject);
    stream.end(data);
  });
}

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

async function goServer(args: string[]): Promise<{ peer: GoPeer; session: Session }> {
  const peer = new GoPeer(['-mode', 'server', '-listen', '127.0.0.1:0', ...args]);
  peers.push(peer);
  const ready = await peer.line('READY ');
  const [host, port] = ready.slice(6).split(':') as [string, string];
  const socket = net.connect({ host, port: Number(port) });
  await once(socket, 'connect');
  const session = new Session(socket, { client: true, config: { keepaliveIntervalMs: 0 } });
  sessions.push(session);
  return { peer, session };
}

async function goClient(args: string[]): Promise<{ peer: GoPeer; session: Session; server: net.Server }> {
  const server = net.createServer().listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as net.AddressInfo;
  const accepted = once(server, 'connection') as Promise<[net.Socket]>;
  const peer = new GoPeer(['-mode', 'client', '-connect', `127.0.0.1:${port}`, ...args]);
  peers.push(peer);
  const [socket] = await accepted;
  server.close();
  const session = new Session(socket, { client: false, config: { keepaliveIntervalMs: 0 } });
  sessions.push(session);
  return { peer, session, server };
}

describe('interop with hashicorp/yamux (Go reference)', () => {
  it('Go server: our streams are echoed intact, Go pings us, and Go closes cleanly when we close', async () => {
    const { peer, session } = await goServer(['-ping']);
    echoAll(session);
    const data = Array.from({ length: 20 }, () => randomBytes(1 << 20));
    const echoes = await Promise.all(data.map((d) => roundTrip(session.open(), d)));
    echoes.forEach((e, i) => expect(sha(e)).toBe(sha(data[i]!)));
    expect(await peer.line('PING-OK')).toMatch(/^PING-OK \d+$/);
    expect(await session.ping()).toBeGreaterThanOrEqual(0);
    session.close();
    expect(await peer.line('DONE')).toBe(`DONE accepted=20 echoed_bytes=${20 << 20}`);
    expect(await peer.exited).toBe(0);
  });

  it('Go client: it opens 20 streams of 1 MiB to us and verifies our echo', async () => {
    const { peer, session } = await goClient(['-open', '20', '-size', String(1 << 20), '-ping', '-stdin-exit']);
    echoAll(session);
    expect(await peer.line('OPEN-')).toBe(`OPEN-OK 20 ${1 << 20}`);
    expect(await peer.line('PING-')).toMatch(/^PING-OK/);
    // And the other way on the same session: we open to the Go client.
    const d = randomBytes(300_000);
    expect(sha(await roundTrip(session.open(), d))).toBe(sha(d));
    peer.child.stdin!.end();
    expect(await peer.exited).toBe(0);
  });

  it('moves 64 MiB on one stream each way with our 4 MiB window against its 256 KiB window', async () => {
    const { peer, session } = await goServer([]);
    const d = randomBytes(64 << 20);
    expect(sha(await roundTrip(session.open(), d))).toBe(sha(d));
    session.close();
    expect(await peer.exited).toBe(0);
  }, 60_000);

  it('half-closes: our FIN arrives, the Go side still sends its whole echo and then its FIN', async () => {
    const { peer, session } = await goServer([]);
    const s = session.open();
    const got = roundTrip(s, Buffer.from('half-close'));
    expect((await got).toString()).toBe('half-close');
    expect(s.state).toBe('closed');
    session.close();
    expect(await peer.line('DONE')).toBe('DONE accepted=1 echoed_bytes=10');
  });

  it('our RST is understood: the Go echo for that stream fails with a reset, the session lives on', async () => {
    const { peer, session } = await goServer([]);
    const victim = session.open();
    victim.on('error', () => undefined);
    victim.write(randomBytes(1000));
    await once(victim, 'data');
    victim.destroy();
    expect(await peer.line('ERROR echo')).toMatch(/reset/);
    const d = randomBytes(1000);
    expect(sha(await roundTrip(session.open(), d))).toBe(sha(d));
  });

  it('Go GoAway: we stop opening streams and say why', async () => {
    const { peer, session } = await goServer(['-goaway']);
    await peer.line('GOAWAY-SENT');
    while (!session.remoteGoneAway) await new Promise((r) => setTimeout(r, 10));
    expect(() => session.open()).toThrow(expect.objectContaining({ code: 'ERR_MUX_GOAWAY' }));
  });

  it('our GoAway: the Go client can no longer open streams to us', async () => {
    const { peer, session } = await goClient(['-open', '1', '-size', '10', '-stdin-exit']);
    session.goAway();
    await new Promise((r) => setTimeout(r, 100));
    echoAll(session);
    expect(await peer.line('OPEN-')).toMatch(/^OPEN-FAIL/);
    expect(peer.lines.join('\n')).toMatch(/not accepting|refused|reset/i);
  });
});
