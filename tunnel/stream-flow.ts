/**
 * The two halves of every application connection, shared by worker and
 * connector (each plays both, for opposite mapping sides):
 *
 *  - carryClient: a client connected to our listener → check allowedSources →
 *    open a stream on a live session (round-robin candidates; a session that
 *    fails before answering is skipped) → name the mapping → wait for ok → relay.
 *  - serveStream: a stream arrived → read which mapping → policy (resolve) →
 *    dial the target → answer ok or a coded refusal → relay.
 *
 * Each ends in exactly one audit line and one metrics update.
 */
import net from 'node:net';
import type { Logger } from 'pino';
import type { AuditLog, StreamOutcome } from './audit.js';
import { formatHostPort, formatPeer, type HostPort } from './address.js';
import { CidrSet } from './cidr.js';
import { errorMessage, ignoreError } from './errors.js';
import type { Mapping } from './mapping.js';
import type { TunnelMetrics } from './metrics.js';
import type { Session } from './mux/session.js';
import type { Channel } from './mux/channel.js';
import { encodeOpenRequest, encodeOpenResponse, OPEN_TIMEOUT_MS, parseOpenRequest, parseOpenResponse, type OpenRequest, type OpenResponse, type RefusalCode } from './open.js';
import { Relay, type RelayResult } from './relay.js';

export interface FlowEnv {
  connection: string;
  audit: AuditLog;
  metrics: TunnelMetrics;
  log: Logger;
  dialTimeoutMs?: number;
}

/** A session that can carry a stream, with the identities for the audit line. */
export interface Carrier {
  session: Session;
  connector: string;
  worker: string;
}

export type Resolution =
  | { ok: true; mapping: Mapping; dial: HostPort; target: string }
  | { ok: false; code: RefusalCode; message: string; mapping?: Mapping };

interface Finish {
  mapping: string;
  side?: Mapping['target']['side'];
  client: string;
  target?: string;
  connector: string;
  worker: string;
  outcome: StreamOutcome;
  reason?: string;
  message?: string;
  bytesIn?: number;
  bytesOut?: number;
}

const sourceSets = new WeakMap<Mapping, CidrSet>();

export function sourceAllowed(mapping: Mapping, address: string | undefined): boolean {
  if (mapping.allowedSources.length === 0) return true;
  if (!address) return false;
  let set = sourceSets.get(mapping);
  if (!set) sourceSets.set(mapping, (set = new CidrSet(mapping.allowedSources)));
  return set.contains(address);
}

function record(env: FlowEnv, started: number, f: Finish): void {
  const durationMs = Date.now() - started;
  env.audit.write({
    event: 'stream',
    connection: env.connection,
    connector: f.connector,
    worker: f.worker,
    mapping: f.mapping,
    ...(f.side ? { side: f.side } : {}),
    client: f.client,
    ...(f.target ? { target: f.target } : {}),
    outcome: f.outcome,
    ...(f.reason ? { reason: f.reason } : {}),
    ...(f.message ? { message: f.message } : {}),
    bytesIn: f.bytesIn ?? 0,
    bytesOut: f.bytesOut ?? 0,
    durationMs,
  });
  env.metrics.streamsTotal.inc({ mapping: f.mapping, outcome: f.outcome, reason: f.reason ?? '' });
  if (f.bytesIn) env.metrics.bytes.inc({ mapping: f.mapping, direction: 'in' }, f.bytesIn);
  if (f.bytesOut) env.metrics.bytes.inc({ mapping: f.mapping, direction: 'out' }, f.bytesOut);
  if (f.outcome !== 'closed') {
    env.log.info({ mapping: f.mapping, client: f.client, outcome: f.outcome, reason: f.reason }, `stream for mapping "${f.mapping}" from ${f.client} ${f.outcome}${f.reason ? ` (${f.reason})` : ''}${f.message ? `: ${f.message}` : ''}`);
  }
}

export interface CarryOptions {
  /** This end's identity for audit lines before a carrier is chosen. */
  self: { connector: string; worker: string };
  /** Why no session could carry the mapping when sessions exist (e.g. every connector refused it). */
  explainNoCarrier?: () => { code: RefusalCode; message: string } | undefined;
}

/**
 * Opener side. `carriers` yields sessions in the order to try (round-robin start). Runs by
 * callbacks, not promises: an application connection is a relay, a channel and the few closures
 * of its open handshake, and nothing of it stays suspended while the connection is idle.
 */
export function carryClient(env: FlowEnv, mapping: Mapping, socket: net.Socket, carriers: Iterable<Carrier>, opts: CarryOptions): void {
  const started = Date.now();
  const client = formatPeer(socket);
  const r = new Relay(socket);
  socket.setNoDelay(true);
  const base = { mapping: mapping.name, side: mapping.target.side, client, target: formatHostPort(mapping.target), ...opts.self };
  if (!sourceAllowed(mapping, socket.remoteAddress)) {
    socket.resetAndDestroy();
    record(env, started, { ...base, outcome: 'refused', reason: 'SOURCE_NOT_ALLOWED', message: `${socket.remoteAddress} is outside allowedSources (${mapping.allowedSources.join(', ')})` });
    return;
  }
  const candidates = carriers[Symbol.iterator]();
  let lastProblem = 'no tunnel session is established';
  let tried = 0;

  const noCarrier = (): void => {
    socket.resetAndDestroy();
    const explained = tried === 0 ? opts.explainNoCarrier?.() : undefined;
    record(env, started, { ...base, outcome: 'refused', reason: explained?.code ?? 'NO_SESSION', message: explained?.message ?? lastProblem });
  };

  const tryNext = (): void => {
    for (let next = candidates.next(); !next.done; next = candidates.next()) {
      const carrier = next.value;
      tried++;
      let channel: Channel;
      try {
        channel = carrier.session.openChannel();
      } catch (err) {
        lastProblem = errorMessage(err);
        continue;
      }
      r.attachChannel(channel);
      channel.write(encodeOpenRequest({ mapping: mapping.name, source: client }));
      // Pipelining: the client's first bytes follow the open request at once instead of a round
      // trip later. The acceptor holds them until its checks and dial succeed; a refusal drops them.
      r.pipe();
      r.readHeader(OPEN_TIMEOUT_MS, 'stream open response', (raw, err) => answered(carrier, channel, raw, err));
      return;
    }
    noCarrier();
  };

  const answered = (carrier: Carrier, channel: Channel, raw: unknown, err: Error | undefined): void => {
    let response: OpenResponse | undefined;
    if (!err) {
      try {
        response = parseOpenResponse(raw);
      } catch (e) {
        err = e as Error;
      }
    }
    const who = { connector: carrier.connector, worker: carrier.worker };
    if (!response) {
      r.unpipe();
      channel.reset();
      lastProblem = errorMessage(err);
      // The session died before answering: another may carry the stream, unless client bytes were already sent.
      if ((carrier.session.isClosed || carrier.session.remoteGoneAway) && socket.bytesRead === 0) tryNext();
      else noCarrier();
      return;
    }
    if (!response.ok) {
      r.unpipe();
      r.discard();
      channel.end();
      socket.resetAndDestroy();
      record(env, started, { ...base, ...who, outcome: 'refused', reason: response.code, message: response.message });
      return;
    }
    if (socket.destroyed) {
      channel.reset();
      record(env, started, { ...base, ...who, outcome: 'failed', reason: 'CLIENT_GONE', message: r.error?.message ?? 'the client closed before the stream opened' });
      return;
    }
    relayed(env, started, mapping, r, (result) => ({ ...base, ...who, bytesIn: result.bytesFromSocket, bytesOut: result.bytesToSocket }));
  };

  tryNext();
}

/** Relays until both sides closed, then writes the audit line and metrics. */
function relayed(env: FlowEnv, started: number, mapping: Mapping, r: Relay, finish: (result: RelayResult) => Omit<Finish, 'outcome'>): void {
  env.metrics.streamsOpen.inc({ mapping: mapping.name });
  r.run((result) => {
    env.metrics.streamsOpen.dec({ mapping: mapping.name });
    record(env, started, {
      ...finish(result),
      outcome: result.error ? 'failed' : 'closed',
      ...(result.error ? { reason: 'ABORTED', message: result.error.message } : {}),
    });
  });
}

/** Acceptor side: `resolve` applies this end's policy and says what to dial. */
export function serveStream(
  env: FlowEnv,
  who: { connector: string; worker: string },
  channel: Channel,
  resolve: (req: OpenRequest) => Promise<Resolution> | Resolution,
): void {
  const started = Date.now();
  const r = new Relay();
  r.attachChannel(channel);
  let base: Pick<Finish, 'connector' | 'worker' | 'mapping' | 'client'>;

  const refuse = (code: RefusalCode, message: string, extra: Partial<Finish> = {}): void => {
    channel.write(encodeOpenResponse({ ok: false, code, message }));
    channel.end();
    r.discard();
    record(env, started, { ...base, ...extra, outcome: 'refused', reason: code, message });
  };

  const resolved = (resolution: Resolution): void => {
    if (!resolution.ok) {
      refuse(resolution.code, resolution.message, resolution.mapping ? { side: resolution.mapping.target.side } : {});
      return;
    }
    const { mapping, dial, target } = resolution;
    const dialStarted = process.hrtime.bigint();
    connect(dial, env.dialTimeoutMs ?? 10_000, (err, socket) => {
      env.metrics.dialSeconds.observe({ mapping: mapping.name, result: err ? 'error' : 'ok' }, Number(process.hrtime.bigint() - dialStarted) / 1e9);
      if (err || !socket) {
        refuse('DIAL_FAILED', `cannot connect to ${target}: ${errorMessage(err)}`, { side: mapping.target.side, target });
        return;
      }
      if (channel.isReset) {
        socket.destroy();
        record(env, started, { ...base, side: mapping.target.side, target, outcome: 'failed', reason: 'ABORTED', message: 'the stream closed while dialling' });
        return;
      }
      channel.write(encodeOpenResponse({ ok: true }));
      r.attachSocket(socket);
      relayed(env, started, mapping, r, (result) => ({
        ...base,
        side: mapping.target.side,
        target,
        // At this end the socket is the target: bytes to it came from the client.
        bytesIn: result.bytesToSocket,
        bytesOut: result.bytesFromSocket,
      }));
    });
  };

  r.readHeader(OPEN_TIMEOUT_MS, 'stream open request', (raw, err) => {
    let req: OpenRequest;
    try {
      if (err) throw err;
      req = parseOpenRequest(raw);
    } catch (e) {
      channel.reset();
      record(env, started, { ...who, mapping: '', client: '', outcome: 'failed', reason: 'BAD_REQUEST', message: errorMessage(e) });
      return;
    }
    base = { ...who, mapping: req.mapping, client: req.source };
    let resolution: Promise<Resolution> | Resolution;
    try {
      resolution = resolve(req);
    } catch (e) {
      refuse('DIAL_FAILED', errorMessage(e));
      return;
    }
    if (resolution instanceof Promise) resolution.then(resolved, (e: unknown) => refuse('DIAL_FAILED', errorMessage(e)));
    else resolved(resolution);
  });
}

function connect(to: HostPort, timeoutMs: number, cb: (err: Error | undefined, socket?: net.Socket) => void): void {
  const socket = net.connect({ host: to.host, port: to.port, allowHalfOpen: true, noDelay: true });
  const timer = setTimeout(() => {
    socket.off('error', onError);
    socket.on('error', ignoreError);
    socket.destroy();
    cb(new Error(`timed out after ${timeoutMs} ms`));
  }, timeoutMs);
  const onError = (err: Error): void => {
    clearTimeout(timer);
    socket.off('connect', onConnect);
    cb(err);
  };
  const onConnect = (): void => {
    clearTimeout(timer);
    socket.off('error', onError);
    socket.setKeepAlive(true, 30_000);
    cb(undefined, socket);
  };
  socket.once('connect', onConnect);
  socket.once('error', onError);
}
