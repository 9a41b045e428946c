/**
 * A benchmark child process: one side of a muxed TCP connection, with its own
 * event loop (as in production). Driven over IPC by bench/mux-compare.ts:
 * `serve` listens and runs a scenario's server part on the first connection;
 * `dial` connects and runs the client part; `proxy` starts the byte-splitting
 * proxy. Usage: fork(peer.js, [contender]).
 */
import net, { type Socket } from 'node:net';
import { once } from 'node:events';
import { CONTENDERS, createMux, loadLibp2p, type ContenderName } from './contender.js';
import { withTimeout } from './io.js';
import { startTrickleProxy } from './proxy.js';
import { CLIENTS, SERVERS, type Result, type Scenario, type Sizes } from './workloads.js';
import { DEFAULT_MUX_CONFIG } from '../../tunnel/mux/config.js';

export interface PeerRequest {
  id: number;
  op: 'serve' | 'dial' | 'proxy';
  scenario?: Scenario;
  sizes?: Sizes;
  port?: number;
}

export type PeerReply =
  | { id: number; kind: 'port'; port: number }
  | { id: number; kind: 'result'; result: Result }
  | { id: number; kind: 'error'; message: string }
  | { id: 0; kind: 'ready' };

const contender = process.argv[2] as ContenderName;
if (!CONTENDERS.includes(contender)) throw new Error(`usage: peer.js ${CONTENDERS.join('|')}`);

function reply(message: PeerReply): void {
  process.send!(message);
}

function fail(id: number, err: unknown): void {
  reply({ id, kind: 'error', message: err instanceof Error ? `${err.name}: ${err.message}` : String(err) });
}

/** --underpass-window: that stream window, and a session window that lets two such streams run at full window. */
const underpassConfig = (sizes: Sizes): { maxStreamWindow?: number; maxSessionWindow?: number } =>
  sizes.underpassWindow ? { maxStreamWindow: sizes.underpassWindow, maxSessionWindow: Math.max(DEFAULT_MUX_CONFIG.maxSessionWindow, 2 * sizes.underpassWindow) } : {};

function serve(req: PeerRequest): void {
  const { scenario, sizes } = req as Required<PeerRequest>;
  const server = net.createServer({ noDelay: true });
  server.once('connection', (socket: Socket) => {
    server.close();
    socket.on('error', () => undefined);
    createMux(contender, socket, false, underpassConfig(sizes))
      .then((mux) => withTimeout(SERVERS[scenario]({ mux, socket, sizes }), sizes.timeoutMs, `${contender} ${scenario} server`))
      .then((result) => reply({ id: req.id, kind: 'result', result }))
      .catch((err) => fail(req.id, err));
  });
  server.listen(0, '127.0.0.1', () => reply({ id: req.id, kind: 'port', port: (server.address() as net.AddressInfo).port }));
}

async function dial(req: PeerRequest): Promise<Result> {
  const { scenario, sizes, port } = req as Required<PeerRequest>;
  const socket = net.connect({ port, host: '127.0.0.1', noDelay: true });
  socket.on('error', () => undefined);
  await once(socket, 'connect');
  const mux = await createMux(contender, socket, true, underpassConfig(sizes));
  try {
    return await withTimeout(CLIENTS[scenario]({ mux, socket, sizes }), sizes.timeoutMs, `${contender} ${scenario} client`);
  } finally {
    mux.close();
    setTimeout(() => socket.destroy(), 200).unref();
  }
}

process.on('message', (req: PeerRequest) => {
  switch (req.op) {
    case 'serve':
      return serve(req);
    case 'dial':
      return void dial(req).then(
        (result) => reply({ id: req.id, kind: 'result', result }),
        (err) => fail(req.id, err),
      );
    case 'proxy':
      return void startTrickleProxy(req.port!).then((port) => reply({ id: req.id, kind: 'port', port }));
  }
});
process.on('disconnect', () => process.exit(0));

// Load the contender's library before saying ready, so no run pays for it.
if (contender === 'libp2p') await loadLibp2p();
reply({ id: 0, kind: 'ready' });
