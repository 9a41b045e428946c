/**
 * Accepted sockets that read into the relay's shared buffer (`onread`), as dialled sockets do.
 *
 * Why: from Node 24 on, sockets that read by Node's default allocation churn a fresh read buffer
 * per read when two of them read in one process (docs/benchmarks.md, "Node versions"): a worker —
 * its tunnel socket plus the accepted client sockets of Connector-side mappings — then spends a
 * large share of its CPU in the garbage collector (7 % of its samples against 0.5 % in the
 * connector, whose dialled sockets already use `onread`) and moved half as many bytes as on Node 20
 * in the same run. Node offers `onread` only to sockets it creates for `net.connect`, not to the
 * ones a `net.Server` accepts.
 *
 * How: the listener accepts paused (`pauseOnConnect`), and the accepted handle moves into a new
 * `net.Socket` made with `handle` and `onread` — the same constructor call Node's own `net.Server`
 * makes for every accepted connection (lib/net.js, onconnection), plus `onread`. `handle` and
 * `_handle` are not documented API, so `adoptAccepted` falls back to the accepted socket as it is
 * (default reads, and says so once) if the runtime does not behave as expected; the test suite
 * checks that the adoption works on the pinned Node (tunnel/accept.test.ts), so a Node upgrade
 * that changes it fails there.
 */
import net from 'node:net';

type OnRead = { buffer: Buffer; callback: (nread: number) => boolean };
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
