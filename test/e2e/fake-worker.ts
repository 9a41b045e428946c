/**
 * A worker built by hand from the library, for tests of what a *connector*
 * refuses: it presents any certificate, pushes any mapping set, ignores the
 * connector's mapping-status, and asks for whatever stream a test wants. It
 * trusts the CA it is given for client certificates, so when a connector
 * refuses it, the refusal is the connector's own.
 */
import { once } from 'node:events';
import https from 'node:https';
import type net from 'node:net';
import type { Duplex } from 'node:stream';
import { WebSocketServer } from 'ws';
import { ControlChannel, PROTOCOL_VERSION, type ControlMessage } from '../../tunnel/control.js';
import type { Mapping } from '../../tunnel/mapping.js';
import { Session } from '../../tunnel/mux/session.js';
import { readOpenResponse, writeOpenRequest, type OpenResponse } from '../../tunnel/open.js';
import { WebSocketDuplex } from '../../tunnel/testing/ws-duplex.js';

export interface FakeWorkerOptions {
  cert: Buffer | string;
  key: Buffer | string;
  /** The CA connector certificates must chain to. */
  ca: Buffer | string;
  mappings?: Mapping[];
  connection?: string;
  /**
   * Called right after the welcome and the config are sent, in the same tick, with the socket
   * corked: whatever it writes (a stream it opens) reaches the connector in the same read as the
   * welcome, as a busy connector reads a worker that opened a stream at once.
   */
  onWelcome?: (session: Session) => void;
}

export interface Attached {
  session: Session;
  /** mapping-status messages from the connector, in order. */
  statuses: Array<Extract<ControlMessage, { type: 'mapping-status' }>>;
}

export interface FakeWorker {
  url: string;
  /** TCP connections accepted (each connector attempt is one). */
  readonly connections: number;
  /** HTTP upgrade requests received (a connector that refused the worker sends none). */
  readonly upgrades: number;
  /** The first connector session, after hello → welcome → config. */
  attached: Promise<Attached>;
  close(): Promise<void>;
}

export async function startFakeWorker(o: FakeWorkerOptions): Promise<FakeWorker> {
  const server = https.createServer({ cert: o.cert, key: o.key, ca: o.ca, requestCert: true, rejectUnauthorized: true });
  const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false });
  let connections = 0;
  let upgrades = 0;
  server.on('connection', () => connections++);
  server.on('tlsClientError', () => undefined);
  server.on('upgrade', (req, socket, head) => {
    upgrades++;
    wss.handleUpgrade(req, socket, head, (ws) => wss.emit('connection', ws, socket));
  });
  const attached = new Promise<Attached>((resolve) => {
    wss.once('connection', (ws, socket: Duplex) => {
      const session = new Session(new WebSocketDuplex(ws), { client: false });
      let control: ControlChannel | undefined;
      session.on('stream', (first: Duplex) => {
        if (control) return void first.destroy();
        control = new ControlChannel(first);
        control.on('error', () => undefined);
        const statuses: Attached['statuses'] = [];
        control.on('message', (m) => {
          if (m.type === 'mapping-status') statuses.push(m);
        });
        const c = control;
        void c.expect('hello', 5_000).then(() => {
          if (o.onWelcome) socket.cork();
          c.send({ type: 'welcome', protocol: PROTOCOL_VERSION, connection: o.connection ?? 'team-a/dc1', worker: { instance: 'fake-worker', version: 'test' }, session: 'fake' });
          c.send({ type: 'config', revision: 1, mappings: o.mappings ?? [] });
          if (o.onWelcome) {
            o.onWelcome(session);
            process.nextTick(() => socket.uncork());
          }
          resolve({ session, statuses });
        });
      });
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as net.AddressInfo).port;
  return {
    url: `wss://127.0.0.1:${port}`,
    get connections() {
      return connections;
    },
    get upgrades() {
      return upgrades;
    },
    attached,
    async close() {
      for (const ws of wss.clients) ws.terminate();
      wss.close();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** Opens a stream on `session` and asks for `mapping`, as a worker's carryClient would. */
export async function askFor(session: Session, mapping: string, source = '198.51.100.7:4242'): Promise<{ stream: Duplex; response: OpenResponse }> {
  const stream = session.open();
  stream.on('error', () => undefined);
  writeOpenRequest(stream, { mapping, source });
  return { stream, response: await readOpenResponse(stream, 5_000) };
}

/** A mapping as the worker pushes it (every field filled). */
export function mappingOf(name: string, side: Mapping['target']['side'], host: string, port: number, listen: { port: number; address?: string } = { port: 1 }): Mapping {
  return {
    name, protocol: 'TCP', target: { side, host, port },
    listen: { port: listen.port, address: listen.address ?? '127.0.0.1' }, allowedSources: [],
  };
}
