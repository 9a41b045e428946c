/**
 * The measured scenarios, as a client part (the dialling process: opens
 * streams, takes the time) and a server part (the accepting process). Each
 * run is a fresh TCP connection and session; each warms up once on it first.
 */
import type { Socket } from 'node:net';
import type { BenchMux } from './contender.js';
import { counter, echo, elapsedNs, ended, gbits, sendBytes, sinkAndAck, sleep } from './io.js';
import { idleClient, idleServer, pausedClient, splitClient, splitServer } from './probes.js';
import { readerProbe } from './reader-probes.js';

export type Scenario = 'oneway' | 'echo' | 'concurrent' | 'rtt' | 'open' | 'idle' | 'paused' | 'unread' | 'slowread' | 'split';
export type Result = Record<string, number | string | boolean>;

export interface Sizes {
  onewayBytes: number;
  echoBytes: number;
  concurrentStreams: number;
  concurrentBytes: number;
  rttIterations: number;
  openIterations: number;
  idleStreams: number;
  pausedOffer: number;
  pausedAfter: number;
  pausedHoldMs: number;
  /** Bytes per second the slow reader consumes during the hold. */
  slowReadRate: number;
  /** A reader probe that sees no progress for this long after the hold reports a stall. */
  stallMs: number;
  splitBytes: number;
  timeoutMs: number;
  /** Overrides Underpass's maxStreamWindow (0 = its default); for explaining differences, not for the report. */
  underpassWindow: number;
}

const MiB = 1024 * 1024;

export const FULL: Sizes = {
  onewayBytes: 1024 * MiB,
  echoBytes: 256 * MiB,
  concurrentStreams: 64,
  concurrentBytes: 16 * MiB,
  rttIterations: 2000,
  openIterations: 2000,
  idleStreams: 10_000,
  pausedOffer: 256 * MiB,
  pausedAfter: 32 * MiB,
  pausedHoldMs: 2000,
  slowReadRate: 16 * MiB,
  stallMs: 5000,
  splitBytes: 1 * MiB,
  timeoutMs: 240_000,
  underpassWindow: 0,
};

export const QUICK: Sizes = {
  onewayBytes: 32 * MiB,
  echoBytes: 8 * MiB,
  concurrentStreams: 64,
  concurrentBytes: 256 * 1024,
  rttIterations: 200,
  openIterations: 200,
  idleStreams: 1000,
  pausedOffer: 32 * MiB,
  pausedAfter: 8 * MiB,
  pausedHoldMs: 300,
  slowReadRate: 16 * MiB,
  stallMs: 800,
  splitBytes: 8 * 1024,
  timeoutMs: 30_000,
  underpassWindow: 0,
};

export interface Ctx {
  mux: BenchMux;
  socket: Socket;
  sizes: Sizes;
}

type Part = (ctx: Ctx) => Promise<Result>;

/** Server parts for the plain scenarios only install a stream handler; the client measures. */
const sinkServer: Part = async ({ mux }) => {
  mux.onStream(sinkAndAck);
  return {};
};
const echoServer: Part = async ({ mux }) => {
  mux.onStream(echo);
  return {};
};

async function oneStreamOneWay(mux: BenchMux, bytes: number): Promise<void> {
  const s = await mux.open();
  const done = ended(s);
  s.onData(() => undefined);
  await sendBytes(s, bytes);
  s.end();
  await done;
}

const onewayClient: Part = async ({ mux, sizes }) => {
  await oneStreamOneWay(mux, sizes.onewayBytes / 16);
  const t = process.hrtime.bigint();
  await oneStreamOneWay(mux, sizes.onewayBytes);
  const ns = elapsedNs(t);
  return { gbits: gbits(sizes.onewayBytes, ns), ms: ns / 1e6 };
};

async function oneStreamEcho(mux: BenchMux, bytes: number): Promise<void> {
  const s = await mux.open();
  const received = counter(s);
  const done = ended(s);
  await Promise.all([sendBytes(s, bytes), received.until(bytes)]);
  s.end();
  await done;
}

const echoClient: Part = async ({ mux, sizes }) => {
  await oneStreamEcho(mux, sizes.echoBytes / 16);
  const t = process.hrtime.bigint();
  await oneStreamEcho(mux, sizes.echoBytes);
  const ns = elapsedNs(t);
  return { gbits: gbits(sizes.echoBytes, ns), ms: ns / 1e6 };
};

const concurrentClient: Part = async ({ mux, sizes }) => {
  const { concurrentStreams: n, concurrentBytes: bytes } = sizes;
  await Promise.all(Array.from({ length: n }, () => oneStreamOneWay(mux, bytes / 16)));
  const t = process.hrtime.bigint();
  await Promise.all(Array.from({ length: n }, () => oneStreamOneWay(mux, bytes)));
  const ns = elapsedNs(t);
  return { gbits: gbits(n * bytes, ns), ms: ns / 1e6 };
};

const MESSAGE = Buffer.alloc(64, 'p');

const rttClient: Part = async ({ mux, sizes }) => {
  const s = await mux.open();
  s.onError(() => undefined);
  const received = counter(s);
  let expected = 0;
  const once = async (): Promise<number> => {
    const t = process.hrtime.bigint();
    expected += MESSAGE.length;
    s.write(MESSAGE);
    await received.until(expected);
    return elapsedNs(t);
  };
  for (let i = 0; i < sizes.rttIterations / 10; i++) await once();
  const samples: number[] = [];
  for (let i = 0; i < sizes.rttIterations; i++) samples.push(await once());
  s.end();
  samples.sort((a, b) => a - b);
  const at = (q: number): number => samples[Math.min(samples.length - 1, Math.floor(q * samples.length))]! / 1e3;
  return { p50us: at(0.5), p99us: at(0.99) };
};

async function openAndRoundTrip(mux: BenchMux): Promise<void> {
  const s = await mux.open();
  const received = counter(s);
  s.onError(() => undefined);
  s.write(MESSAGE);
  await received.until(MESSAGE.length);
  s.end();
}

const openClient: Part = async ({ mux, sizes }) => {
  for (let i = 0; i < sizes.openIterations / 10; i++) await openAndRoundTrip(mux);
  await sleep(50);
  const t = process.hrtime.bigint();
  for (let i = 0; i < sizes.openIterations; i++) await openAndRoundTrip(mux);
  const ns = elapsedNs(t);
  return { perSecond: sizes.openIterations / (ns / 1e9), ms: ns / 1e6 };
};

export const SERVERS: Record<Scenario, Part> = {
  oneway: sinkServer,
  echo: echoServer,
  concurrent: sinkServer,
  rtt: echoServer,
  open: echoServer,
  idle: idleServer,
  paused: readerProbe('paused'),
  unread: readerProbe('unread'),
  slowread: readerProbe('slowread'),
  split: splitServer,
};

export const CLIENTS: Record<Scenario, Part> = {
  oneway: onewayClient,
  echo: echoClient,
  concurrent: concurrentClient,
  rtt: rttClient,
  open: openClient,
  idle: idleClient,
  paused: pausedClient,
  unread: pausedClient,
  slowread: pausedClient,
  split: splitClient,
};
