/**
 * Scenarios measured at the accepting side: memory per idle stream, the
 * writer of the reader probes, and a transfer through a proxy that splits the
 * byte stream into single bytes (does framing survive arbitrary reads).
 */
import { createHash, randomBytes } from 'node:crypto';
import type { BenchStream } from './contender.js';
import { bytesOf } from './contender.js';
import { counter, elapsedNs, ended, sendBytes, settledMemory, sleep } from './io.js';
import type { Ctx, Result } from './workloads.js';

const perStream = (after: number, before: number, n: number): number => Math.round((after - before) / n);

export async function idleServer({ mux, sizes }: Ctx): Promise<Result> {
  const n = sizes.idleStreams;
  const before = await settledMemory();
  const kept: BenchStream[] = [];
  let first: bigint | undefined;
  await new Promise<void>((resolve) => {
    mux.onStream((s) => {
      first ??= process.hrtime.bigint();
      s.onError(() => undefined);
      kept.push(s);
      if (kept.length === n) resolve();
    });
  });
  const acceptMs = elapsedNs(first!) / 1e6;
  const after = await settledMemory();
  kept[kept.length - 1]!.write(Buffer.from('k')); // lets the client go
  return {
    rssPerStream: perStream(after.rss, before.rss, n),
    heapPerStream: perStream(after.heapUsed, before.heapUsed, n),
    buffersPerStream: perStream(after.arrayBuffers, before.arrayBuffers, n),
    acceptMs,
  };
}

export async function idleClient({ mux, sizes }: Ctx): Promise<Result> {
  const n = sizes.idleStreams;
  await sleep(150); // the server takes its baseline first
  const before = await settledMemory();
  const t = process.hrtime.bigint();
  const streams: BenchStream[] = [];
  for (let i = 0; i < n; i++) {
    const s = await mux.open();
    s.onError(() => undefined);
    streams.push(s);
  }
  const openMs = elapsedNs(t) / 1e6;
  const released = counter(streams[n - 1]!).until(1);
  const after = await settledMemory();
  await released;
  return { openerRssPerStream: perStream(after.rss, before.rss, n), openerHeapPerStream: perStream(after.heapUsed, before.heapUsed, n), openMs };
}

/** The writer for the reader probes (reader-probes.ts): offers `pausedOffer` bytes, honouring backpressure. */
export async function pausedClient({ mux, sizes }: Ctx): Promise<Result> {
  const s = await mux.open();
  // A reset can follow a clean-looking end in the same tick (libp2p dispatches 'end' first).
  let streamError = '';
  s.onError((err) => (streamError ||= `${err.name}: ${err.message}`));
  const done = ended(s);
  done.catch(() => undefined);
  s.onData(() => undefined);
  const t = process.hrtime.bigint();
  try {
    await sendBytes(s, sizes.pausedOffer);
    s.end();
    await done;
    await new Promise((resolve) => setImmediate(resolve));
  } catch (err) {
    streamError ||= (err as Error).message;
  }
  return streamError ? { ok: false, error: streamError } : { ok: true, ms: elapsedNs(t) / 1e6 };
}

export function splitServer({ mux, socket }: Ctx): Promise<Result> {
  let reads = 0;
  socket.on('data', () => reads++);
  return new Promise((resolve) => {
    mux.onStream((s) => {
      const hash = createHash('sha256');
      let bytes = 0;
      s.onData((chunk) => {
        bytes += chunk.byteLength;
        for (const part of bytesOf(chunk)) hash.update(part);
      });
      s.onEnd(() => {
        const digest = hash.digest('hex');
        s.write(Buffer.from(digest));
        s.end();
        resolve({ bytes, socketReads: reads, meanReadBytes: socket.bytesRead / reads, digest });
      });
      s.onError((err) => resolve({ error: err.message, bytes, socketReads: reads }));
    });
  });
}

export async function splitClient({ mux, sizes }: Ctx): Promise<Result> {
  const payload = randomBytes(sizes.splitBytes);
  const digest = createHash('sha256').update(payload).digest('hex');
  const s = await mux.open();
  const reply: Uint8Array[] = [];
  s.onData((chunk) => {
    for (const part of bytesOf(chunk)) reply.push(Buffer.from(part));
  });
  const done = ended(s);
  const t = process.hrtime.bigint();
  await sendBytes(s, payload.length, payload);
  s.end();
  await done;
  const answer = Buffer.concat(reply).toString();
  return { ok: answer === digest, ms: elapsedNs(t) / 1e6, ...(answer === digest ? {} : { answer }) };
}
