/**
 * The multiplexer's per-stream cost in isolation: two Sessions in one process over an in-memory
 * pair (no sockets, no TLS, no WebSocket), 8 streams in flight, each opened, 64 bytes echoed,
 * half-closed both ways; optionally with the stream-open request and response of tunnel/open.ts,
 * or (`--channel`) through the plain channel API the relay uses instead of the Duplex adapter.
 * Prints streams per second and the process's CPU per stream (both ends together). Compare with
 * the connection-rate row's CPU per connection (docs/benchmarks.md): what the code costs when it
 * runs alone and hot, against what it costs inside the worker and connector.
 *
 *   node dist/bench/stream-open-micro.js [--streams N] [--open | --channel]
 */
import type { Channel, ChannelSink } from '../tunnel/mux/channel.js';
import { Session } from '../tunnel/mux/session.js';
import type { MuxStream } from '../tunnel/mux/stream.js';
import { readOpenRequest, readOpenResponse, writeOpenRequest, writeOpenResponse } from '../tunnel/open.js';
import { duplexPair } from '../tunnel/testing/duplex-pair.js';

const HELP = `usage: node dist/bench/stream-open-micro.js [--streams N] [--open | --channel]
  --streams N   timed streams (default 20000; a sixth as many first, untimed)
  --open        also the stream-open request and response (JSON, validated), through the Duplex
  --channel     the plain channels (tunnel/mux/channel.ts) the relay uses, no Duplex at either end`;

function fail(msg: string): never {
  process.stderr.write(`stream-open-micro: ${msg}\n${HELP}\n`);
  process.exit(2);
}

const PAYLOAD = Buffer.alloc(64, 0x61);

/** Opens one stream, echoes 64 bytes through it and resolves when it has closed at both ends. */
function oneStream(client: Session, withOpen: boolean): Promise<void> {
  return new Promise((resolve, reject) => {
    const s = client.open();
    s.on('error', reject);
    s.on('close', resolve);
    let got = 0;
    const echoed = (d: Buffer): void => {
      got += d.length;
      if (got >= PAYLOAD.length) s.end();
    };
    if (!withOpen) {
      s.on('data', echoed);
      s.write(PAYLOAD);
      return;
    }
    writeOpenRequest(s, { mapping: 'bench', source: '127.0.0.1:50000' });
    s.write(PAYLOAD);
    readOpenResponse(s).then((res) => {
      if (!res.ok) throw new Error(`refused: ${res.message}`);
      s.on('data', echoed);
      s.resume();
    }).catch(reject);
  });
}

/** The client end over the channel API: resolves when the echo came back and both sides ended. */
function oneChannel(client: Session): Promise<void> {
  return new Promise((resolve, reject) => {
    const ch = client.openChannel();
    let got = 0;
    const sink: ChannelSink = {
      onData(d) {
        got += d.length;
        ch.consumed(d.length);
        if (got >= PAYLOAD.length) ch.end();
      },
      onEnd: resolve,
      onAbort: reject,
      onWritable() {},
    };
    ch.attach(sink);
    ch.write(PAYLOAD);
  });
}

/** The server end over the channel API: echoes, and ends when the peer ended. */
function echoChannel(ch: Channel): void {
  ch.attach({
    onData(d) {
      ch.write(Buffer.from(d));
      ch.consumed(d.length);
    },
    onEnd: () => ch.end(),
    onAbort() {},
    onWritable() {},
  });
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  let streams = 20_000;
  let withOpen = false;
  let withChannel = false;
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--help' || argv[i] === '-h') {
      console.log(HELP);
      return;
    }
    if (argv[i] === '--open') withOpen = true;
    else if (argv[i] === '--channel') withChannel = true;
    else if (argv[i] === '--streams') {
      streams = Number(argv[++i]);
      if (!Number.isInteger(streams) || streams < 8 || streams > 10_000_000) fail('--streams: a whole number from 8 to 10,000,000');
    } else fail(`unknown option ${argv[i]}`);
  }
  if (withOpen && withChannel) fail('--open and --channel measure different paths: give one');
  const [a, b] = duplexPair();
  const client = new Session(a, { client: true });
  const server = new Session(b, { client: false });
  if (withChannel) server.on('channel', echoChannel);
  else server.on('stream', (s: MuxStream) => {
    s.on('error', () => s.destroy());
    const echo = (): void => {
      s.on('data', (d: Buffer) => s.write(d));
      s.on('end', () => s.end());
    };
    if (!withOpen) return echo();
    readOpenRequest(s).then(() => {
      writeOpenResponse(s, { ok: true });
      echo();
      s.resume();
    }, () => s.destroy());
  });
  const run = async (n: number): Promise<void> => {
    let started = 0;
    await Promise.all(Array.from({ length: 8 }, async () => {
      while (started < n) {
        started++;
        await (withChannel ? oneChannel(client) : oneStream(client, withOpen));
      }
    }));
  };
  await run(Math.ceil(streams / 6));
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  await run(streams);
  const ms = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  console.log(`${withChannel ? 'multiplexer channels' : withOpen ? 'multiplexer + open request/response' : 'multiplexer only'}: ${streams} streams, ${(streams / ms * 1000).toFixed(0)} streams/s, ${((cpu.user + cpu.system) / streams).toFixed(1)} µs CPU per stream (both ends, one process)`);
  client.close();
  server.close();
}

main().catch((err) => {
  process.stderr.write(`stream-open-micro: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
