/**
 * Bare Node forwarders: the least a Node program must do to forward connections, as a
 * floor under Underpass's numbers (bench/node-floor.ts, and tunnel-bench's `node-mux`).
 *
 * - `tcp`: one process that accepts a connection, dials the target and pipes both ways.
 * - `mux`: Underpass's topology without anything but the forwarding — an entry process
 *   (like the worker) that accepts application connections and a TLS server the exit
 *   dials out to; an exit process (like the connector) that dials the targets; one TLS
 *   connection between them carrying every application connection as frames of a
 *   9-byte header (type, id, length) and the bytes. Frames of one event-loop turn go out
 *   in one write, as Underpass's do. No per-stream flow control (sockets pause while the
 *   tunnel socket is full, and a full socket pauses the whole tunnel), no authentication of
 *   the exit, no policy, audit, metrics or keepalive: not a tunnel anyone should run, only
 *   the cost of the plumbing.
 */
import net from 'node:net';
import path from 'node:path';
import { readFile } from 'node:fs/promises';
import tls from 'node:tls';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Child, valueFromLog, type Contender, type Forward } from './common.js';
import { forwarderNode, makePki, nodeArgs } from './underpass.js';

const OPEN = 1;
const DATA = 2;
const FIN = 3;
const HEADER = 9;

export type BareKind = 'tcp' | 'mux';

/**
 * Frames queued during one event-loop turn, written together when it ends. While the tunnel
 * socket's buffer is full, the application sockets feeding it are paused (no per-stream windows:
 * this is the whole of the flow control).
 */
class FrameWriter {
  #queue: Buffer[] = [];
  #scheduled = false;
  readonly #paused = new Set<net.Socket>();
  constructor(private readonly out: net.Socket) {
    out.on('drain', () => {
      for (const s of this.#paused) s.resume();
      this.#paused.clear();
    });
  }

  /** Pauses `from` until the tunnel socket drains, if it is full. */
  throttle(from: net.Socket): void {
    if (!this.out.writableNeedDrain) return;
    from.pause();
    this.#paused.add(from);
  }

  send(type: number, id: number, payload?: Buffer): void {
    const h = Buffer.allocUnsafe(HEADER);
    h.writeUInt8(type, 0);
    h.writeUInt32BE(id, 1);
    h.writeUInt32BE(payload?.length ?? 0, 5);
    this.#queue.push(h);
    if (payload) this.#queue.push(payload);
    if (!this.#scheduled) {
      this.#scheduled = true;
      setImmediate(() => {
        this.#scheduled = false;
        const q = this.#queue;
        this.#queue = [];
        this.out.write(q.length === 1 ? q[0]! : Buffer.concat(q));
      });
    }
  }
}

/** Calls `onFrame` for every whole frame arriving on `from`. */
function readFrames(from: net.Socket, onFrame: (type: number, id: number, payload: Buffer) => void): void {
  let pending: Buffer = Buffer.alloc(0);
  from.on('data', (d: Buffer) => {
    let buf = pending.length ? Buffer.concat([pending, d]) : d;
    while (buf.length >= HEADER) {
      const len = buf.readUInt32BE(5);
      if (buf.length < HEADER + len) break;
      onFrame(buf.readUInt8(0), buf.readUInt32BE(1), buf.subarray(HEADER, HEADER + len));
      buf = buf.subarray(HEADER + len);
    }
    pending = buf;
  });
}

/** Forwards one application socket's bytes and end as frames of stream `id`. */
function forwardSocket(sock: net.Socket, id: number, w: FrameWriter, streams: Map<number, net.Socket>): void {
  streams.set(id, sock);
  sock.setNoDelay(true);
  sock.on('data', (d: Buffer) => {
    w.send(DATA, id, d);
    w.throttle(sock);
  });
  let ended = false;
  sock.on('end', () => {
    ended = true;
    w.send(FIN, id);
  });
  sock.on('error', () => sock.destroy());
  sock.on('close', () => {
    streams.delete(id);
    if (!ended) w.send(FIN, id); // e.g. a target that refused the connection: the peer's socket ends too
  });
}

/** Applies a DATA or FIN frame; a full application socket pauses the whole tunnel until it drains. */
function onPeerFrame(tunnel: net.Socket, streams: Map<number, net.Socket>, type: number, id: number, payload: Buffer): void {
  const s = streams.get(id);
  if (!s) return;
  if (type === FIN) s.end();
  else if (type === DATA && !s.write(payload)) {
    tunnel.pause();
    const resume = (): void => {
      s.off('drain', resume).off('close', resume);
      tunnel.resume();
    };
    s.on('drain', resume).on('close', resume);
  }
}

/** Child process: the entry side of `mux` (prints its application port once the exit is connected). */
async function entry(certDir: string): Promise<void> {
  const tunnelServer = tls.createServer({
    cert: await readFile(path.join(certDir, 'worker.crt')),
    key: await readFile(path.join(certDir, 'worker.key')),
  });
  tunnelServer.listen(0, '127.0.0.1', () => process.stdout.write(`${JSON.stringify({ tunnel: (tunnelServer.address() as net.AddressInfo).port })}\n`));
  tunnelServer.once('secureConnection', (tunnel: tls.TLSSocket) => {
    tunnel.setNoDelay(true);
    const w = new FrameWriter(tunnel);
    const streams = new Map<number, net.Socket>();
    readFrames(tunnel, (type, id, payload) => onPeerFrame(tunnel, streams, type, id, payload));
    let nextId = 1;
    const app = net.createServer({ allowHalfOpen: true }, (sock) => {
      const id = nextId++;
      w.send(OPEN, id);
      forwardSocket(sock, id, w, streams);
    });
    app.listen(0, '127.0.0.1', () => process.stdout.write(`${JSON.stringify({ app: (app.address() as net.AddressInfo).port })}\n`));
  });
}

/** Child process: the exit side of `mux`, dialling out to the entry. */
async function exit(entryPort: number, targetPort: number, certDir: string): Promise<void> {
  const tunnel = tls.connect({ port: entryPort, host: '127.0.0.1', ca: await readFile(path.join(certDir, 'ca.crt')), servername: 'localhost' });
  tunnel.setNoDelay(true);
  const w = new FrameWriter(tunnel);
  const streams = new Map<number, net.Socket>();
  readFrames(tunnel, (type, id, payload) => {
    if (type === OPEN) forwardSocket(net.connect({ port: targetPort, host: '127.0.0.1', allowHalfOpen: true }), id, w, streams);
    else onPeerFrame(tunnel, streams, type, id, payload);
  });
}

/** Child process: `tcp`, one process piping each accepted connection to a new one to the target. */
function tcpRelay(targetPort: number): void {
  const server = net.createServer({ allowHalfOpen: true }, (a) => {
    const b = net.connect({ port: targetPort, host: '127.0.0.1', allowHalfOpen: true });
    for (const s of [a, b]) {
      s.setNoDelay(true);
      s.on('error', () => (a.destroy(), b.destroy()));
    }
    a.pipe(b);
    b.pipe(a);
  });
  server.listen(0, '127.0.0.1', () => process.stdout.write(`${JSON.stringify({ app: (server.address() as net.AddressInfo).port })}\n`));
}

const appPort = (line: Record<string, unknown>): number | undefined => line.app as number | undefined;

let started = 0;

/** Starts a bare forwarder to `targetPort` with the given Node options; its processes' logs go to `logDir` (new files each time). */
export async function startBareRelay(kind: BareKind, targetPort: number, certDir: string, logDir: string, nodeOptions: string[]): Promise<Forward> {
  const self = fileURLToPath(import.meta.url);
  const seq = ++started;
  if (kind === 'tcp') {
    const file = path.join(logDir, `bare-tcp-${seq}.log`);
    const relay = new Child('bare Node TCP relay', forwarderNode(), [...nodeOptions, self, '--tcp', String(targetPort)], file);
    const port = await valueFromLog(file, 'the bare Node TCP relay', relay, appPort).catch(async (err: unknown) => {
      await relay.stop();
      throw err;
    });
    return { port, roles: { relay: relay.pid }, stop: () => relay.stop() };
  }
  const entryLog = path.join(logDir, `bare-entry-${seq}.log`);
  const entryChild = new Child('bare Node entry', forwarderNode(), [...nodeOptions, self, '--entry', certDir], entryLog);
  const children = [entryChild];
  const stop = async (): Promise<void> => {
    for (const c of children) await c.stop();
  };
  try {
    const tunnelPort = await valueFromLog(entryLog, 'the bare Node entry', entryChild, (line) => line.tunnel as number | undefined);
    children.push(new Child('bare Node exit', forwarderNode(), [...nodeOptions, self, '--exit', String(tunnelPort), String(targetPort), certDir], path.join(logDir, `bare-exit-${seq}.log`)));
    const port = await valueFromLog(entryLog, 'the bare Node exit to connect', entryChild, appPort);
    return { port, roles: { entry: entryChild.pid, exit: children[1]!.pid }, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}

/**
 * The bare `mux` as a tunnel-bench contender: the floor of Underpass's design, measured for round
 * trips and connections only (plan.ts `applies`) — without flow control per stream its bulk numbers
 * would mean nothing.
 */
export async function bareMuxContender(dir: string): Promise<Contender> {
  const pki = await makePki(path.join(dir, 'node-mux'));
  return {
    id: 'node-mux',
    label: 'bare Node mux (floor)',
    info: { what: 'Underpass\'s topology in bare Node (bench/tunnel/bare-relay.ts): one TLS connection, 9-byte frame headers, no windows, authentication, policy, audit or metrics; not a tunnel, the floor under one' },
    forward: (targetPort) => startBareRelay('mux', targetPort, pki.dir, pki.dir, nodeArgs()),
    close: async () => undefined,
  };
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const [mode, ...args] = process.argv.slice(2);
  process.on('SIGTERM', () => process.exit(0));
  if (mode === '--tcp') tcpRelay(Number(args[0]));
  else if (mode === '--entry') void entry(args[0]!);
  else if (mode === '--exit') void exit(Number(args[0]), Number(args[1]), args[2]!);
}
