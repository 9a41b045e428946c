/**
 * The target applications, in a child process of their own (so their event
 * loop is not the client's): a TCP echo server, a bulk source/sink, and a tiny
 * HTTP server. Run as `node apps.js --serve`; it prints one JSON line with the
 * ports. `startApps()` starts it from the bench.
 *
 * Bulk protocol (client first): 'U' then bytes until the client's FIN, answered
 * with the u64 byte count; or 'D' + u64 size, answered with that many bytes
 * and a FIN.
 */
import { constants as cryptoConstants } from 'node:crypto';
import { once } from 'node:events';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Child, valueFromLog } from './common.js';

export interface Apps {
  echo: number;
  bulk: number;
  http: number;
  pid: number;
  stop(): Promise<void>;
}

async function listen(server: net.Server): Promise<number> {
  server.listen({ port: 0, host: '127.0.0.1', backlog: 4096 });
  await once(server, 'listening');
  return (server.address() as net.AddressInfo).port;
}

async function serve(): Promise<void> {
  const echo = net.createServer({ allowHalfOpen: true, noDelay: true }, (s) => {
    s.on('error', () => undefined);
    s.pipe(s);
  });
  const block = Buffer.alloc(256 * 1024, 0x5a);
  const bulk = net.createServer({ allowHalfOpen: true, noDelay: true }, (s) => {
    s.on('error', () => undefined);
    let head = Buffer.alloc(0);
    const onHead = (d: Buffer): void => {
      head = Buffer.concat([head, d]);
      if (head[0] === 0x55 /* U */) {
        s.off('data', onHead);
        let count = head.length - 1;
        s.on('data', (c: Buffer) => (count += c.length));
        s.on('end', () => {
          const reply = Buffer.alloc(8);
          reply.writeBigUInt64BE(BigInt(count));
          s.end(reply);
        });
      } else if (head[0] === 0x44 /* D */ && head.length >= 9) {
        s.off('data', onHead);
        s.resume();
        let left = Number(head.readBigUInt64BE(1));
        const pump = (): void => {
          while (left > 0) {
            const n = Math.min(left, block.length);
            left -= n;
            if (!s.write(n === block.length ? block : block.subarray(0, n))) return void s.once('drain', pump);
          }
          s.end();
        };
        pump();
      } else if (head.length > 0 && head[0] !== 0x44) {
        s.destroy();
      }
    };
    s.on('data', onHead);
  });
  const body = Buffer.from('hello from the benchmark target\n');
  const web = http.createServer({ keepAliveTimeout: 60_000 }, (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': body.length });
    res.end(body);
  });
  const ports = { echo: await listen(echo), bulk: await listen(bulk), http: await listen(web) };
  process.stdout.write(`${JSON.stringify(ports)}\n`);
  process.on('SIGTERM', () => process.exit(0));
}

/**
 * The floor under an idle connector session: a bare Node TLS server with the worker's
 * certificate that requires client certificates and holds connections open, nothing else
 * (no WebSocket, multiplexer or control channel), with the worker's TLS settings and Node options. Run as
 * `node apps.js --tls-floor DIR`.
 */
async function tlsFloorServer(dir: string): Promise<void> {
  const { readFileSync } = await import('node:fs');
  const tls = await import('node:tls');
  const server = tls.createServer({
    cert: readFileSync(path.join(dir, 'worker.crt')),
    key: readFileSync(path.join(dir, 'worker.key')),
    ca: readFileSync(path.join(dir, 'ca.crt')),
    requestCert: true,
    rejectUnauthorized: true,
    minVersion: 'TLSv1.2',
    // The worker's own TLS settings (worker/tunnel-server.ts), so the floor compares like with like.
    secureOptions: cryptoConstants.SSL_OP_NO_TICKET,
  }, (s) => s.on('error', () => undefined));
  process.stdout.write(`${JSON.stringify({ tls: await listen(server) })}\n`);
  process.on('SIGTERM', () => process.exit(0));
}

/** Starts the bare TLS server of `tlsFloorServer` in a child process, with the worker's Node options. */
export async function startTlsFloor(certDir: string, logDir: string, nodeArgs: string[]): Promise<{ port: number; pid: number; stop(): Promise<void> }> {
  const self = fileURLToPath(import.meta.url);
  const file = path.join(logDir, 'tls-floor.log');
  const child = new Child('bare TLS server', process.execPath, [...nodeArgs, self, '--tls-floor', certDir], file);
  const port = await valueFromLog(file, 'the bare TLS server', child, (line) => line.tls as number | undefined);
  return { port, pid: child.pid, stop: () => child.stop() };
}

/** Starts the target apps in a child process. */
export async function startApps(logDir: string): Promise<Apps> {
  const self = fileURLToPath(import.meta.url);
  const portsFile = path.join(logDir, 'apps.log');
  const child = new Child('apps', process.execPath, [self, '--serve'], portsFile);
  const ports = await valueFromLog(portsFile, 'the target apps', child, (line) => line as { echo: number; bulk: number; http: number });
  return { ...ports, pid: child.pid, stop: () => child.stop() };
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const floor = process.argv.indexOf('--tls-floor');
  if (floor > 0) void tlsFloorServer(process.argv[floor + 1]!);
  else if (process.argv.includes('--serve')) void serve();
}
