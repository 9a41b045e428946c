/**
 * `underpass loadtest`: measure what rollouts and pod loss do to users
 * (docs/ha.md). It ships in the image so it runs from a pod as well as here:
 *
 *   underpass loadtest echo --listen 0.0.0.0:7000       the target: echoes every byte
 *   underpass loadtest run --target connector-side=dc1-apps.team-a.svc:15432,50 \
 *                          --target cluster-side=127.0.0.1:19000,10 --duration 60s
 *   underpass loadtest watch --admin http://10.0.0.7:9090   when a worker became ready and first carried a stream
 *
 * `run` prints a line per second on stderr and the summary (JSON) on stdout:
 * connections, round trips, failed new connections, broken in-flight streams.
 */
import net from 'node:net';
import type { Command } from 'commander';
import { parseHostPort } from '../tunnel/address.js';
import { parseDuration } from '../tunnel/duration.js';
import { ConfigError } from '../tunnel/errors.js';
import { LoadGenerator, type LoadTarget } from './load-generator.js';
import { watchWorker } from './worker-watch.js';

interface RunFlags {
  target: string[];
  duration: string;
  requests: string;
  interval: string;
  size: string;
  timeout: string;
  failOnErrors?: boolean;
}

/** "name=host:port[,clients]" */
export function parseTarget(s: string): LoadTarget {
  const m = /^([a-z0-9][a-z0-9-]*)=([^,]+)(?:,(\d+))?$/.exec(s);
  if (!m) throw new ConfigError(`"${s}" is not name=host:port[,clients] (e.g. connector-side=dc1-apps.team-a.svc:15432,50)`, { field: '--target' });
  const { host, port } = parseHostPort(m[2]!, '--target');
  const clients = m[3] === undefined ? 10 : Number(m[3]);
  if (clients < 1 || clients > 10_000) throw new ConfigError(`clients must be 1 to 10000 in "${s}"`, { field: '--target' });
  return { name: m[1]!, host, port, clients };
}

function count(s: string, field: string, min: number, max: number): number {
  const n = Number(s);
  if (!Number.isInteger(n) || n < min || n > max) throw new ConfigError(`must be a whole number from ${min} to ${max}`, { field });
  return n;
}

export function registerLoadtestCommand(program: Command): void {
  const loadtest = program.command('loadtest').description('measure a tunnel under steady request/response load (docs/ha.md)');
  loadtest
    .command('echo')
    .description('run an echo server: the target of a load test')
    .requiredOption('--listen <host:port>', 'where to listen, e.g. 0.0.0.0:7000')
    .action(async (flags: { listen: string }) => {
      const at = parseHostPort(flags.listen, '--listen');
      const server = net.createServer({ allowHalfOpen: true }, (socket) => {
        socket.on('error', () => undefined);
        socket.pipe(socket);
      });
      await new Promise<void>((resolve, reject) => server.once('error', reject).listen(at.port, at.host, resolve));
      process.stderr.write(`echo server on ${flags.listen}\n`);
      await new Promise<void>((resolve) => {
        process.once('SIGTERM', resolve);
        process.once('SIGINT', resolve);
      });
      server.close();
    });
  loadtest
    .command('run')
    .description('open connections through each target, do round trips, count failures')
    .option('--target <name=host:port[,clients]>', 'a mapping endpoint and its clients (default 10); repeat for each', (v: string, acc: string[]) => [...acc, v], [])
    .option('--duration <duration>', 'how long to keep starting connections', '60s')
    .option('--requests <n>', 'round trips per connection', '20')
    .option('--interval <duration>', 'pause between round trips', '50ms')
    .option('--size <bytes>', 'bytes per request (at least 8)', '64')
    .option('--timeout <duration>', 'connect and each round trip', '5s')
    .option('--fail-on-errors', 'exit 1 when any connection failed')
    .action(async (flags: RunFlags) => {
      if (flags.target.length === 0) throw new ConfigError('give at least one --target', { field: '--target' });
      const gen = new LoadGenerator({
        targets: flags.target.map(parseTarget),
        requests: count(flags.requests, '--requests', 1, 1_000_000),
        intervalMs: parseDuration(flags.interval, '--interval'),
        size: count(flags.size, '--size', 8, 1 << 20),
        timeoutMs: parseDuration(flags.timeout, '--timeout'),
      });
      const durationMs = parseDuration(flags.duration, '--duration');
      gen.start();
      const ticker = setInterval(() => {
        const s = gen.snapshot();
        process.stderr.write(`${Math.round(s.durationMs / 1000)}s: ${s.total.connections} connections, ${s.total.requests} round trips, `
          + `${s.total.failedNew} failed new, ${s.total.broken} broken\n`);
      }, 1_000);
      await new Promise((r) => setTimeout(r, durationMs));
      clearInterval(ticker);
      const summary = await gen.stop();
      process.stdout.write(`${JSON.stringify(summary, null, 2)}\n`);
      if (flags.failOnErrors && summary.total.failedNew + summary.total.broken > 0) process.exitCode = 1;
    });
  loadtest
    .command('watch')
    .description('poll a worker admin endpoint: when it answered, became ready, first carried a stream (JSON, ms from the start)')
    .requiredOption('--admin <url>', 'the worker admin endpoint, e.g. http://10.0.0.7:9090')
    .option('--timeout <duration>', 'give up after this long', '120s')
    .action(async (flags: { admin: string; timeout: string }) => {
      let admin: URL;
      try {
        admin = new URL(flags.admin);
      } catch {
        throw new ConfigError(`"${flags.admin}" is not a URL`, { field: '--admin' });
      }
      const times = await watchWorker(admin, { signal: AbortSignal.timeout(parseDuration(flags.timeout, '--timeout')) });
      process.stdout.write(`${JSON.stringify({ admin: admin.href, ...times })}\n`);
      if (times.servedMs === undefined) process.exitCode = 1;
    });
}
