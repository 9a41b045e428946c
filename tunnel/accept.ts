/**
 * Accepted sockets that read into the relay's shared buffer (`onread`), as dialled sockets do, at
 * the least cost per connection.
 *
 * Why `onread`: from Node 24 on, sockets that read by Node's default allocation churn a fresh read
 * buffer per read when two of them read in one process (docs/benchmarks.md, "Node versions"): a
 * worker — its tunnel socket plus the accepted client sockets of Connector-side mappings — then
 * spends a large share of its CPU in the garbage collector (7 % of its samples against 0.5 % in the
 * connector, whose dialled sockets already use `onread`) and moved half as many bytes as on Node 20
 * in the same run. Node offers `onread` only to sockets it creates for `net.connect`, not to the
 * ones a `net.Server` accepts.
 *
 * How (`acceptInto`, the direct path): once the server listens, its listening handle's
 * `onconnection` — the callback libuv calls with each accepted connection's handle, which Node's
 * `net.Server` sets (lib/net.js) — is replaced by one that makes a single `net.Socket` with `handle`
 * and `onread`, paused: the constructor call Node's own makes for every accepted connection, plus
 * `onread`. TCP_NODELAY and keep-alive are set once on the listening socket, which Linux copies to
 * every socket it accepts, instead of five `setsockopt` calls per connection. Per accepted
 * connection that saves a second `net.Socket` and its destruction and those calls: about a tenth
 * of the worker's CPU per connection in the connection-rate row (docs/benchmarks.md).
 *
 * `onconnection`, `handle` and `_handle` are not documented API, so both paths check what they
 * rely on and fall back, saying so once (`acceptProblem`): to `adoptAccepted` (the accepted socket's
 * handle moved into a new socket with `onread`) and, if that fails too, to the accepted socket as
 * it is (default reads). The test suite checks on the pinned Node that the direct path is taken,
 * that its sockets read through `onread`, and that they carry TCP_NODELAY and keep-alive
 * (tunnel/accept.test.ts), so a Node upgrade that changes any of it fails there.
 */
import net from 'node:net';

export type OnRead = { buffer: Buffer; callback: (nread: number) => boolean };
interface WithHandle { _handle: unknown }

let broken: string | undefined;

/** Why adoption is off on this runtime (after a failed attempt), or undefined. */
export function adoptionProblem(): string | undefined {
  return broken;
}

/**
 * A socket on the accepted connection's handle that reads through `onread`, created paused (the
 * relay's `pipe` resumes it), or the accepted socket itself when that cannot be done. The accepted
 * socket must come from a server with `pauseOnConnect: true` and no reads yet.
 */
export function adoptAccepted(accepted: net.Socket, onread: OnRead, allowHalfOpen: boolean): net.Socket {
  if (broken !== undefined) return accepted;
  const shell = accepted as unknown as WithHandle;
  const handle = shell._handle;
  if (handle === null || handle === undefined || typeof (handle as { readStart?: unknown }).readStart !== 'function') {
    broken = 'the accepted socket has no stream handle';
    return accepted;
  }
  let adopted: net.Socket;
  try {
    adopted = new net.Socket({ handle, onread, allowHalfOpen, readable: true, writable: true, pauseOnCreate: true } as unknown as net.SocketConstructorOpts);
  } catch (err) {
    broken = `net.Socket({ handle, onread }) failed: ${(err as Error).message}`;
    return accepted;
  }
  if ((adopted as unknown as WithHandle)._handle !== handle) {
    broken = 'net.Socket ignored the handle option';
    adopted.destroy();
    return accepted;
  }
  // The shell no longer owns the handle: destroying it closes nothing but itself (and counts the
  // connection off the server, which no longer waits for it on close).
  shell._handle = null;
  accepted.destroy();
  return adopted;
}

/** TCP_NODELAY and keep-alive on every accepted socket; keep-alive probes start after this idle time. */
export const ACCEPTED_KEEPALIVE_MS = 30_000;

/** How a listener hands over accepted connections (acceptInto). */
export type AcceptPath = 'direct' | 'adopted';

interface ListenHandle {
  onconnection?: unknown;
  setNoDelay?: (enable: boolean) => number;
  setKeepAlive?: (enable: boolean, seconds: number) => number;
}

let directProblem: string | undefined;

/** Why the direct accept path is not used on this runtime (after a failed attempt), or undefined. */
export function acceptProblem(): string | undefined {
  return directProblem ?? broken;
}

/**
 * Hands every connection `server` accepts to `onSocket` as a paused socket that reads through
 * `onread`, with TCP_NODELAY and keep-alive (ACCEPTED_KEEPALIVE_MS) on. Call it once the server
 * listens; the server must have been created with `pauseOnConnect: true` and the same
 * `allowHalfOpen`. Its sockets are not counted by the server: `close()` stops accepting and does not
 * wait for them. Returns the path taken: `direct` (one socket per connection, options inherited
 * from the listening socket) or `adopted` (the fallback: the server's 'connection' event, the socket
 * adopted by `adoptAccepted`, options set per socket). If the direct path fails on a connection, the
 * server moves to the fallback for that connection and every later one, and `onProblem` says why.
 */
export function acceptInto(server: net.Server, onread: OnRead, allowHalfOpen: boolean, onSocket: (socket: net.Socket) => void, onProblem?: (problem: string) => void): AcceptPath {
  const adoptEach = (accepted: net.Socket): void => {
    const socket = adoptAccepted(accepted, onread, allowHalfOpen);
    socket.setNoDelay(true);
    socket.setKeepAlive(true, ACCEPTED_KEEPALIVE_MS);
    onSocket(socket);
  };
  const listening = (server as unknown as { _handle: ListenHandle | null })._handle;
  const original = listening?.onconnection;
  if (directProblem === undefined) {
    if (!listening || typeof original !== 'function') directProblem = 'the listening server has no onconnection callback';
    else if (typeof listening.setNoDelay !== 'function' || typeof listening.setKeepAlive !== 'function') directProblem = 'the listening handle cannot set socket options';
  }
  if (directProblem !== undefined || !listening || typeof original !== 'function') {
    server.on('connection', adoptEach);
    return 'adopted';
  }
  const nodeAccept = original as (this: unknown, err: number, handle: unknown) => void;
  // Linux copies these from the listening socket to each accepted one; elsewhere each socket gets its own.
  const inherited = process.platform === 'linux'
    && listening.setNoDelay!(true) === 0
    && listening.setKeepAlive!(true, Math.floor(ACCEPTED_KEEPALIVE_MS / 1000)) === 0;
  listening.onconnection = function onconnection(this: unknown, err: number, handle: unknown): void {
    if (err) {
      nodeAccept.call(this, err, handle);
      return;
    }
    let socket: net.Socket | undefined;
    let problem: string | undefined;
    try {
      socket = new net.Socket({ handle, onread, allowHalfOpen, readable: true, writable: true, pauseOnCreate: true } as unknown as net.SocketConstructorOpts);
      if ((socket as unknown as WithHandle)._handle !== handle) problem = 'net.Socket ignored the handle option';
    } catch (e) {
      problem = `net.Socket({ handle, onread }) failed: ${(e as Error).message}`;
    }
    if (problem !== undefined || socket === undefined) {
      // Node's own accept takes this connection and every later one.
      directProblem = problem;
      listening.onconnection = nodeAccept;
      server.on('connection', adoptEach);
      onProblem?.(problem ?? 'no socket');
      nodeAccept.call(this, 0, handle);
      return;
    }
    if (!inherited) {
      socket.setNoDelay(true);
      socket.setKeepAlive(true, ACCEPTED_KEEPALIVE_MS);
    }
    onSocket(socket);
  };
  return 'direct';
}
