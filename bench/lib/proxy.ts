/**
 * A TCP proxy that forwards one byte per write and yields to the event loop
 * between bytes, so the far side's reads end at arbitrary points inside
 * frame headers and payloads.
 */
import net, { type Socket } from 'node:net';

function trickle(from: Socket, to: Socket): void {
  const queue: Buffer[] = [];
  let pumping = false;
  let ended = false;
  const pump = async (): Promise<void> => {
    pumping = true;
    while (queue.length > 0) {
      const chunk = queue.shift()!;
      for (let i = 0; i < chunk.length && !to.destroyed; i++) {
        to.write(chunk.subarray(i, i + 1));
        await new Promise((resolve) => setImmediate(resolve));
      }
    }
    pumping = false;
    if (ended) to.end();
  };
  from.on('data', (chunk: Buffer) => {
    queue.push(chunk);
    if (!pumping) void pump();
  });
  from.on('end', () => {
    ended = true;
    if (!pumping) to.end();
  });
}

/** Listens on a loopback port; each connection is forwarded byte by byte to `targetPort`. */
export function startTrickleProxy(targetPort: number): Promise<number> {
  const server = net.createServer({ noDelay: true }, (down) => {
    const up = net.connect({ port: targetPort, host: '127.0.0.1', noDelay: true });
    const closeBoth = (): void => {
      down.destroy();
      up.destroy();
      server.close();
    };
    for (const s of [down, up]) {
      s.on('error', closeBoth);
      s.on('close', closeBoth);
    }
    trickle(down, up);
    trickle(up, down);
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve((server.address() as net.AddressInfo).port)));
}
