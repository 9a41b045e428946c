/**
 * HTTP requests per second through a forward to the tiny HTTP server of
 * apps.ts: wrk (`-t2 -c32 -d10s`, keep-alive) when installed, otherwise (or
 * with --quick) a Node client with 32 keep-alive connections.
 */
import { execFile } from 'node:child_process';
import http from 'node:http';
import { commandExists, withCpu, type Forward } from './common.js';

export type HttpTool = 'wrk' | 'node';

export interface HttpResult {
  perSecond: number;
  errors: number;
  latencyMs?: number;
  cpu: Record<string, number>;
}

export function httpTool(quick: boolean): HttpTool {
  return !quick && commandExists('wrk') ? 'wrk' : 'node';
}

export async function httpLoad(fwd: Forward, o: { tool: HttpTool; seconds: number; connections: number }): Promise<HttpResult> {
  const { result, cpu } = await withCpu(fwd.roles, () => (o.tool === 'wrk' ? wrk(fwd.port, o) : nodeLoad(fwd.port, o)));
  return { ...result, cpu };
}

function wrk(port: number, o: { seconds: number; connections: number }): Promise<Omit<HttpResult, 'cpu'>> {
  const args = ['-t2', `-c${o.connections}`, `-d${o.seconds}s`, `http://127.0.0.1:${port}/`];
  return new Promise((resolve, reject) => {
    execFile('wrk', args, { timeout: (o.seconds + 60) * 1000 }, (err, stdout) => {
      const rps = /Requests\/sec:\s+([\d.]+)/.exec(stdout);
      if (!rps) return reject(new Error(`wrk ${args.join(' ')}: ${err?.message ?? stdout}`));
      const lat = /Latency\s+([\d.]+)(us|ms|s)/.exec(stdout);
      const scale = { us: 1e-3, ms: 1, s: 1e3 } as const;
      const non2xx = /Non-2xx or 3xx responses:\s+(\d+)/.exec(stdout);
      const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(stdout);
      const errors = Number(non2xx?.[1] ?? 0) + (sock ? sock.slice(1).reduce((a, b) => a + Number(b), 0) : 0);
      resolve({ perSecond: Number(rps[1]), errors, ...(lat ? { latencyMs: Number(lat[1]) * scale[lat[2] as keyof typeof scale] } : {}) });
    });
  });
}

async function nodeLoad(port: number, o: { seconds: number; connections: number }): Promise<Omit<HttpResult, 'cpu'>> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: o.connections });
  const deadline = Date.now() + o.seconds * 1000;
  let done = 0;
  let errors = 0;
  const t0 = process.hrtime.bigint();
  const one = (): Promise<void> => new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/', agent }, (res) => {
      res.resume();
      res.on('end', () => {
        if (res.statusCode === 200) done++;
        else errors++;
        resolve();
      });
    });
    req.setTimeout(5_000, () => req.destroy(new Error('no response within 5 s')));
    req.on('error', () => {
      errors++;
      resolve();
    });
  });
  await Promise.all(Array.from({ length: o.connections }, async () => {
    while (Date.now() < deadline && errors < 1000) await one();
  }));
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  agent.destroy();
  return { perSecond: done / seconds, errors };
}
