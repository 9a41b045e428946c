import { describe, expect, it } from '@jest/globals';
import net from 'node:net';
import { once } from 'node:events';
import { adoptAccepted, adoptionProblem } from './accept.js';

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
