/**
 * The WebSocket upgrade as a worker receives it: raw bytes on a socket — an
 * HTTP request (valid, mutated or random) and then frames — through Node's
 * HTTP parser, `acceptWebSocket` and the `WebSocketStream` it returns
 * (tunnel/transport/websocket.ts). Most inputs go to a plain-TCP server that
 * does what the worker does after authentication; a share goes to the real
 * `TunnelServer` (worker/tunnel-server.ts) over mutual TLS with a connector
 * certificate of the connection.
 *
 * Properties: every connection ends once the client has sent its bytes and
 * half-closed (no hang); an answer is 101 with the right Sec-WebSocket-Accept
 * or a refusal status (4xx, with X-Underpass-Reason from the TunnelServer),
 * never 5xx; a valid upgrade is accepted; the accepted stream ends with a
 * coded error (ERR_WS_PROTOCOL, ERR_WS_CLOSED) or cleanly; nothing throws on
 * the server.
 */
import fc from 'fast-check';
import { once } from 'node:events';
import http, { type IncomingMessage } from 'node:http';
import net, { type AddressInfo, type Socket } from 'node:net';
import tls from 'node:tls';
import { setTimeout as sleep } from 'node:timers/promises';
import { UnderpassError } from '../../../tunnel/errors.js';
import { silentLogger } from '../../../tunnel/log.js';
import { createCA, issueConnectorCert, issueWorkerCert, loadCA, type PemKeyPair } from '../../../tunnel/pki.js';
import { acceptKey, acceptWebSocket, WebSocketStream } from '../../../tunnel/transport/websocket.js';
import { encodeClosePayload, Opcode } from '../../../tunnel/transport/ws-frame.js';
import { TunnelServer, TUNNEL_PATH } from '../../../worker/tunnel-server.js';
import { anyText } from '../arbitraries.js';
import { cutsArb, mutated, randomBytes, split, type Cuts } from '../bytes.js';
import { assert, assertEqual, coded } from '../expect.js';
import { parsingAsync, type FuzzTarget } from '../harness.js';
import { encodeWsFrame } from './ws-frame.js';

const STREAM_CODES = ['ERR_WS_PROTOCOL', 'ERR_WS_CLOSED', 'ERR_WS_OUTPUT_LIMIT', 'ERR_WS_UNREAD_OUTPUT'];
/** No input may keep a connection open longer than this after the client half-closed. */
const SETTLE_MS = 5_000;

interface Request {
  method: string;
  path: string;
  version: string;
  headers: Array<[string, string]>;
  key: string;
}

const keyArb = fc.oneof({ weight: 4, arbitrary: fc.uint8Array({ minLength: 16, maxLength: 16 }).map((b) => Buffer.from(b).toString('base64')) },
  fc.constantFrom('', 'short', 'AAAAAAAAAAAAAAAAAAAAAA', 'AAAAAAAAAAAAAAAAAAAAAA=', 'AAAAAAAAAAAAAAAAAAAAAA==\r\nX: y', '!!!!!!!!!!!!!!!!!!!!!!=='));

const requestArb: fc.Arbitrary<Request> = fc.record({
  method: fc.oneof({ weight: 6, arbitrary: fc.constant('GET') }, fc.constantFrom('POST', 'get', 'CONNECT', 'OPTIONS', 'G ET', '')),
  path: fc.oneof({ weight: 6, arbitrary: fc.constant(TUNNEL_PATH) }, fc.constantFrom('/', '/v1/tunnel?x=1', '/v1/tunnel/', '*', 'http://h/v1/tunnel', `/${'a'.repeat(9000)}`), anyText(20)),
  version: fc.oneof({ weight: 6, arbitrary: fc.constant('HTTP/1.1') }, fc.constantFrom('HTTP/1.0', 'HTTP/2', 'HTTP/1.1 ', '')),
  headers: fc.array(fc.tuple(fc.constantFrom('Upgrade', 'Connection', 'Sec-WebSocket-Version', 'Sec-WebSocket-Key', 'Host', 'Content-Length', 'Transfer-Encoding', 'X-Any'),
    fc.oneof(fc.constantFrom('websocket', 'WebSocket', 'Upgrade', 'keep-alive, Upgrade', '13', '8', '0', '5', 'chunked', ''), anyText(12))), { maxLength: 3 }),
  key: keyArb,
});

/** The request with the headers a connector sends, then the extra (possibly conflicting) ones. */
function encodeRequest(r: Request): Buffer {
  const lines = [`${r.method} ${r.path} ${r.version}`, 'Host: 127.0.0.1', 'Connection: Upgrade', 'Upgrade: websocket', 'Sec-WebSocket-Version: 13', `Sec-WebSocket-Key: ${r.key}`,
    ...r.headers.map(([k, v]) => `${k}: ${v}`)];
  return Buffer.from(`${lines.join('\r\n')}\r\n\r\n`, 'latin1');
}

const validRequest = (r: Request): boolean => r.method === 'GET' && r.path === TUNNEL_PATH && r.version === 'HTTP/1.1' && r.headers.length === 0
  && /^[A-Za-z0-9+/]{21}[AQgw]==$/.test(r.key);

/** What a client sends after its request: masked frames, including a ping and a close. */
const framesArb = fc.array(fc.oneof(
  fc.uint8Array({ maxLength: 100 }).map((payload) => encodeWsFrame({ opcode: Opcode.Binary, fin: true, rsv: 0, mask: new Uint8Array(4), payload, form: 'minimal' })),
  fc.uint8Array({ maxLength: 20 }).map((payload) => encodeWsFrame({ opcode: Opcode.Ping, fin: true, rsv: 0, mask: new Uint8Array([1, 2, 3, 4]), payload, form: 'minimal' })),
  fc.constant(encodeWsFrame({ opcode: Opcode.Close, fin: true, rsv: 0, mask: new Uint8Array(4), payload: encodeClosePayload(1000), form: 'minimal' })),
  randomBytes(64),
), { maxLength: 4 }).map((frames) => Buffer.concat(frames));

const inputArb = fc.oneof(
  { weight: 4, arbitrary: fc.tuple(requestArb, framesArb).map(([r, f]) => ({ request: r, bytes: Buffer.concat([encodeRequest(r), f]) })) },
  { weight: 3, arbitrary: fc.tuple(requestArb, framesArb).chain(([r, f]) => mutated(fc.constant(Buffer.concat([encodeRequest(r), f]))).map((bytes) => ({ request: undefined, bytes }))) },
  { weight: 1, arbitrary: randomBytes(1024).map((bytes) => ({ request: undefined, bytes })) },
);

interface Input {
  request: Request | undefined;
  bytes: Buffer;
}

/** What happened on the server side during one input. */
class ServerSide {
  open = 0;
  accepted = 0;
  violations: unknown[] = [];

  watch(socket: Socket): void {
    this.open++;
    socket.once('close', () => this.open--);
  }

  stream(ws: WebSocketStream): void {
    this.accepted++;
    ws.on('data', () => undefined);
    ws.on('error', (err) => {
      try {
        coded(err, [UnderpassError], STREAM_CODES);
      } catch (bad) {
        this.violations.push(bad);
      }
    });
  }

  async settled(): Promise<void> {
    const deadline = Date.now() + SETTLE_MS;
    while (this.open > 0) {
      if (Date.now() > deadline) throw new Error(`a server socket was still open ${SETTLE_MS} ms after the client half-closed`);
      await sleep(5);
    }
    if (this.violations.length > 0) throw this.violations[0];
  }
}

let side = new ServerSide();
let plain: http.Server | undefined;
let plainPort = 0;
let tunnel: { server: TunnelServer; port: number; connector: PemKeyPair; ca: string; denials: string[] } | undefined;

function startPlain(): Promise<void> {
  // What the worker's TunnelServer does after authentication, over plain TCP.
  plain = http.createServer((_req, res) => {
    res.writeHead(404, { connection: 'close' });
    res.end();
  });
  plain.on('connection', (s: Socket) => side.watch(s));
  plain.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => {
    socket.on('error', () => undefined);
    const accepted = acceptWebSocket(req, socket, head);
    if (accepted instanceof WebSocketStream) return side.stream(accepted);
    socket.end(`HTTP/1.1 ${accepted.status} Refused\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
    socket.destroySoon();
  });
  plain.on('clientError', (_err, socket: Socket) => socket.destroy());
  plain.listen(0, '127.0.0.1');
  return once(plain, 'listening').then(() => {
    plainPort = (plain!.address() as AddressInfo).port;
  });
}

async function startTunnel(): Promise<void> {
  const connection = { namespace: 'fuzz', name: 'dc1' };
  const caPems = await createCA({ connection });
  const ca = await loadCA(caPems.certPem, caPems.keyPem);
  const worker = await issueWorkerCert(ca, { sans: ['127.0.0.1'] });
  const connector = await issueConnectorCert(ca, { connector: 'site-a' });
  const denials: string[] = [];
  const server = new TunnelServer({
    connection,
    tls: { cert: Buffer.from(worker.certPem), key: Buffer.from(worker.keyPem), ca: Buffer.from(caPems.certPem), fingerprint: 'fuzz' },
    logger: silentLogger(),
    accepting: () => true,
    limits: { sessions: 1 << 20, sessionsPerConnector: 1 << 20, unauthenticatedConnections: 1 << 20, unauthenticatedPerSource: 1 << 20 },
    onConnector: (c) => side.stream(c.stream),
    onDenied: (d) => denials.push(d.reason),
  });
  const port = (await server.listen({ host: '127.0.0.1', port: 0 })).port;
  tunnel = { server, port, connector, ca: caPems.certPem, denials };
}

/** Sends the pieces, half-closes, and returns everything the server answered. */
async function exchange(socket: Socket, pieces: readonly Buffer[]): Promise<Buffer> {
  const got: Buffer[] = [];
  socket.on('data', (d: Buffer) => got.push(d));
  socket.on('error', () => undefined);
  const closed = once(socket, 'close');
  for (const p of pieces) {
    if (socket.destroyed) break;
    socket.write(p);
  }
  socket.end();
  const timer = setTimeout(() => socket.destroy(new Error('hang')), SETTLE_MS);
  await closed;
  clearTimeout(timer);
  return Buffer.concat(got);
}

/** Checks the answer; returns its status (0: the connection closed without one). */
function checkAnswer(answer: Buffer, input: Input, tunnelServer: boolean): number {
  const head = answer.subarray(0, answer.indexOf('\r\n\r\n') + 4).toString('latin1');
  if (answer.length === 0) return 0;
  const m = /^HTTP\/1\.1 (\d{3}) /.exec(head);
  assert(m !== null, `the answer is not HTTP: ${JSON.stringify(answer.subarray(0, 80).toString('latin1'))}`);
  const status = Number(m[1]);
  assert(status === 101 || (status >= 400 && status < 500), `answered ${status}`);
  if (status === 101) {
    // The key as the server read it (a generated key may carry a line break that starts another header).
    const key = /^Sec-WebSocket-Key:[ \t]*(.*?)[ \t]*\r?$/im.exec(input.bytes.toString('latin1'))?.[1];
    const accept = /^Sec-WebSocket-Accept: (.*?)\r?$/im.exec(head)?.[1];
    assert(key !== undefined && accept !== undefined, '101 without a key and an accept');
    if (input.request) assertEqual(accept, acceptKey(key), 'Sec-WebSocket-Accept');
  } else if (tunnelServer && status !== 404 && status !== 426) {
    // 404 and 426 also answer plain requests (no upgrade asked), without a reason header.
    assert(/^X-Underpass-Reason: [A-Z_]+\r?$/m.test(head), `a refusal without X-Underpass-Reason: ${JSON.stringify(head.slice(0, 200))}`);
  }
  return status;
}

async function viaPlain(input: Input, cuts: Cuts): Promise<void> {
  side = new ServerSide();
  const socket = net.connect(plainPort, '127.0.0.1');
  await once(socket, 'connect');
  const answer = await exchange(socket, split(input.bytes, cuts));
  await side.settled();
  const status = checkAnswer(answer, input, false);
  if (input.request && validRequest(input.request)) assertEqual(status, 101, 'a valid upgrade');
}

async function viaTunnelServer(input: Input, cuts: Cuts): Promise<void> {
  side = new ServerSide();
  const t = tunnel!;
  const socket = tls.connect({ host: '127.0.0.1', port: t.port, ca: t.ca, cert: t.connector.certPem, key: t.connector.keyPem, servername: undefined });
  await once(socket, 'secureConnect');
  const answer = await exchange(socket, split(input.bytes, cuts));
  await sleep(5); // the server closes its TLS socket right after ours
  const status = checkAnswer(answer, input, true);
  if (input.request && validRequest(input.request)) assertEqual(status, 101, 'a valid upgrade from a connector of the connection');
  if (side.violations.length > 0) throw side.violations[0];
}

export const wsUpgradeTarget: FuzzTarget = {
  name: 'ws-upgrade',
  parser: 'Node HTTP parser + tunnel/transport/websocket.ts acceptWebSocket/WebSocketStream; worker/tunnel-server.ts over mTLS',
  maxHeapGrowth: 32 << 20,
  async setup() {
    await startPlain();
    await startTunnel();
  },
  async teardown() {
    plain?.closeAllConnections();
    plain?.close();
    tunnel?.server.closeAll();
    await tunnel?.server.stopAccepting();
    plain = undefined;
    tunnel = undefined;
  },
  properties: [
    {
      name: 'plain server',
      weight: 19,
      async: true,
      arbitrary: fc.tuple(inputArb, cutsArb),
      check: ([input, cuts]: [Input, Cuts]) => parsingAsync(() => viaPlain(input, cuts)),
    },
    {
      name: 'tunnel server (mTLS)',
      weight: 1,
      async: true,
      arbitrary: fc.tuple(inputArb, cutsArb),
      check: ([input, cuts]: [Input, Cuts]) => parsingAsync(() => viaTunnelServer(input, cuts)),
    },
  ],
};
