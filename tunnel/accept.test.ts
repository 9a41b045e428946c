import { describe, expect, it } from '@jest/globals';
import net from 'node:net';
import { once } from 'node:events';
import { execFileSync } from 'node:child_process';
import { ACCEPTED_KEEPALIVE_MS, acceptInto, acceptProblem, adoptAccepted, adoptionProblem } from './accept.js';

describe('adoptAccepted (accepted sockets reading through onread)', () => {
  it('moves an accepted connection onto a socket that reads into the given buffer, both ways, half-close included, on this Node', async () => {
    const buffer = Buffer.alloc(1024);
    const got: string[] = [];
    let adopted: net.Socket | undefined;
    const server = net.createServer({ pauseOnConnect: true, allowHalfOpen: true }, (accepted) => {
      adopted = adoptAccepted(accepted, { buffer, callback: (n) => { got.push(buffer.subarray(0, n).toString()); return true; } }, true);
      adopted.resume(); // created paused, as the relay's pipe() resumes it
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const client = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
    await once(client, 'connect');
    client.write('hello');
    await new Promise<void>((resolve, reject) => {
      const deadline = setTimeout(() => reject(new Error(`read ${JSON.stringify(got)}`)), 5_000);
      const poll = setInterval(() => { if (got.join('') === 'hello') { clearTimeout(deadline); clearInterval(poll); resolve(); } }, 5);
    });
    expect(adoptionProblem()).toBeUndefined();
    expect(adopted).toBeDefined();
    expect(adopted!.remoteAddress).toBe('127.0.0.1');
    // Writes go out on the same connection; the client's end arrives as 'end' with the socket still writable.
    const back = once(client, 'data');
    adopted!.write('world');
    expect(String((await back)[0])).toBe('world');
    const ended = once(adopted!, 'end');
    client.end();
    await ended;
    adopted!.end('bye');
    const [last] = await once(client, 'data');
    expect(String(last)).toBe('bye');
    // The server no longer counts the connection: close() resolves while it is still open elsewhere.
    await new Promise<void>((r) => server.close(() => r()));
    client.destroy();
  });
});

/**
 * A socket option of one of this process's sockets, read from outside by python3 (pidfd_getfd, Linux
 * 5.6+): Node itself cannot read socket options back.
 */
function socketOptions(fd: number): { nodelay: number; keepalive: number; keepidle: number } {
  const script = [
    'import ctypes, json, os, socket, sys',
    'libc = ctypes.CDLL(None, use_errno=True)',
    'pidfd = os.pidfd_open(int(sys.argv[1]))',
    'n = libc.syscall(438, pidfd, int(sys.argv[2]), 0)',
    'assert n >= 0, os.strerror(ctypes.get_errno())',
    's = socket.socket(fileno=n)',
    'print(json.dumps({"nodelay": s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY), "keepalive": s.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE), "keepidle": s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE)}))',
    's.close()',
  ].join('\n');
  return JSON.parse(execFileSync('python3', ['-c', script, String(process.pid), String(fd)], { encoding: 'utf8' })) as { nodelay: number; keepalive: number; keepidle: number };
}

function fdOf(socket: net.Socket): number {
  const fd = (socket as unknown as { _handle: { fd: number } })._handle.fd;
  expect(fd).toBeGreaterThan(2);
  return fd;
}

async function listening(): Promise<{ server: net.Server; port: number }> {
  const server = net.createServer({ pauseOnConnect: true, allowHalfOpen: true });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { server, port: (server.address() as net.AddressInfo).port };
}

describe('acceptInto (one socket per accepted connection, options from the listening socket)', () => {
  it('takes the direct path on this Node: one paused socket reading into the given buffer, both ways, half-close included, not counted by the server', async () => {
    const buffer = Buffer.alloc(1024);
    const got: string[] = [];
    const { server, port } = await listening();
    const sockets: net.Socket[] = [];
    let connectionEvents = 0;
    server.on('connection', () => connectionEvents++);
    const path = acceptInto(server, { buffer, callback: (n) => { got.push(buffer.subarray(0, n).toString()); return true; } }, true, (s) => sockets.push(s));
    expect(path).toBe('direct');
    const client = net.connect(port, '127.0.0.1');
    await once(client, 'connect');
    client.write('hello');
    await until(() => sockets.length === 1);
    const socket = sockets[0]!;
    // Paused until the relay resumes it: nothing read yet.
    await new Promise((r) => setTimeout(r, 50));
    expect(got).toEqual([]);
    socket.resume();
    await until(() => got.join('') === 'hello');
    expect(socket.remoteAddress).toBe('127.0.0.1');
    expect(socket.remotePort).toBe(client.localPort);
    const back = once(client, 'data');
    socket.write('world');
    expect(String((await back)[0])).toBe('world');
    const ended = once(socket, 'end');
    client.end();
    await ended;
    socket.end('bye');
    const [last] = await once(client, 'data');
    expect(String(last)).toBe('bye');
    expect(connectionEvents).toBe(0);
    expect(acceptProblem()).toBeUndefined();
    await new Promise<void>((r) => server.close(() => r()));
    client.destroy();
  });

  it('gives every accepted socket TCP_NODELAY and keep-alive after 30 s idle (read back from the kernel)', async () => {
    const { server, port } = await listening();
    const sockets: net.Socket[] = [];
    expect(acceptInto(server, { buffer: Buffer.alloc(64), callback: () => true }, true, (s) => sockets.push(s))).toBe('direct');
    const clients = [net.connect(port, '127.0.0.1'), net.connect(port, '127.0.0.1')];
    await until(() => sockets.length === 2);
    for (const s of sockets) expect(socketOptions(fdOf(s))).toEqual({ nodelay: 1, keepalive: 1, keepidle: ACCEPTED_KEEPALIVE_MS / 1000 });
    // The client's own socket, dialled without either option, reads back as off: the check can fail.
    expect(socketOptions(fdOf(clients[0]!))).toMatchObject({ nodelay: 0, keepalive: 0 });
    for (const c of clients) c.destroy();
    for (const s of sockets) s.destroy();
    await new Promise<void>((r) => server.close(() => r()));
  });

  // Last in this file: it switches the direct path off for the rest of the module's life.
  it('falls back to adoption, options set per socket, when the listening handle is not what it expects', async () => {
    const { server, port } = await listening();
    const handle = (server as unknown as { _handle: { onconnection: unknown } })._handle;
    const nodeAccept = handle.onconnection;
    handle.onconnection = undefined;
    const sockets: net.Socket[] = [];
    expect(acceptInto(server, { buffer: Buffer.alloc(64), callback: () => true }, true, (s) => sockets.push(s))).toBe('adopted');
    expect(acceptProblem()).toBe('the listening server has no onconnection callback');
    handle.onconnection = nodeAccept;
    const client = net.connect(port, '127.0.0.1');
    await until(() => sockets.length === 1);
    expect(socketOptions(fdOf(sockets[0]!))).toEqual({ nodelay: 1, keepalive: 1, keepidle: ACCEPTED_KEEPALIVE_MS / 1000 });
    client.destroy();
    sockets[0]!.destroy();
    await new Promise<void>((r) => server.close(() => r()));
  });
});

async function until(cond: () => boolean, ms = 5_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error('timed out waiting');
    await new Promise((r) => setTimeout(r, 5));
  }
}
