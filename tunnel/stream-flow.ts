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
 * Each ends in exactly one metrics update and, as a rule, one audit line. What
 * a tunnel peer provokes cheaply at the acceptor — streams it opens and resets,
 * refusals — is written per session at most STREAM_LINES_BURST times per reason
 * and interval; the rest are counted (underpass_log_lines_suppressed_total) and
 * summed up in one `stream-summary` audit line per interval. Metric labels are
 * only configured mapping names: a name the peer made up counts as "(unknown)".
 */
import net from 'node:net';
import type { Logger } from 'pino';
import type { AuditLog, StreamOutcome } from './audit.js';
import { formatHostPort, formatPeer, type HostPort } from './address.js';
import { CidrSet } from './cidr.js';
import { errorCode, errorMessage, ignoreError } from './errors.js';
import { capText } from './limits.js';
import { LineLimiter } from './log-limit.js';
import type { Mapping } from './mapping.js';
import type { TunnelMetrics } from './metrics.js';
import type { Session } from './mux/session.js';
import type { Channel, StreamHost } from './mux/channel.js';
import { encodeOpenRequest, encodeOpenResponse, OPEN_TIMEOUT_MS, parseOpenRequest, parseOpenResponse, type OpenRequest, type OpenResponse, type RefusalCode } from './open.js';
import { Relay } from './relay.js';

export interface FlowEnv {
  connection: string;
  audit: AuditLog;
  metrics: TunnelMetrics;
  log: Logger;
  dialTimeoutMs?: number;
  /** Injected clock for the per-peer line limits (tests). */
  now?: () => number;
}

/** Per session and refusal reason: lines written one by one per interval; the rest are summed up. */
export const STREAM_LINES_BURST = 20;
export const STREAM_LINES_INTERVAL_MS = 10_000;
/** The metric label of a mapping name the peer asked for that is not configured here. */
export const UNKNOWN_MAPPING_LABEL = '(unknown)';
/** Longest message copied into a stream's audit and log line. */
const MESSAGE_MAX = 1024;

/** Error codes of a stream dropped at a limit (tunnel/limits.ts): audited `failed` with reason LIMIT_EXCEEDED. */
const LIMIT_ERROR_CODES: ReadonlySet<string> = new Set(['ERR_OPEN_HEADER_TOO_LARGE', 'ERR_OPEN_BUFFER_LIMIT', 'ERR_STREAM_BUFFER_LIMIT']);

/** `failed` with the reason its error gives: LIMIT_EXCEEDED for a limit, `otherwise` for anything else. */
function failedReason(err: unknown, otherwise: string): string {
  return LIMIT_ERROR_CODES.has(errorCode(err) ?? '') ? 'LIMIT_EXCEEDED' : otherwise;
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

/**
 * What one connection's audit line and metrics say, filled in as the connection goes (one object
 * of one shape per connection, no copies).
 */
class Finish {
  mapping: string;
  /** The mapping's metric label: a configured name, "" (no open request read) or UNKNOWN_MAPPING_LABEL. */
  label: string;
  side: Mapping['target']['side'] | undefined;
  client: string;
  target: string | undefined;
  connector: string;
  worker: string;
  outcome: StreamOutcome = 'closed';
  reason: string | undefined = undefined;
  message: string | undefined = undefined;
  bytesIn = 0;
  bytesOut = 0;
  constructor(who: { connector: string; worker: string }, mapping: string, client: string, side?: Mapping['target']['side'], target?: string) {
    this.connector = who.connector;
    this.worker = who.worker;
    this.mapping = mapping;
    this.label = mapping;
    this.client = client;
    this.side = side;
    this.target = target;
  }

  end(outcome: StreamOutcome, reason?: string, message?: string): this {
    this.outcome = outcome;
    this.reason = reason;
    this.message = message;
    return this;
  }
}

/** The open response of every stream that opened: the same bytes each time (never written to). */
const OPEN_OK = encodeOpenResponse({ ok: true });

const sourceSets = new WeakMap<Mapping, CidrSet>();

export function sourceAllowed(mapping: Mapping, address: string | undefined): boolean {
  if (mapping.allowedSources.length === 0) return true;
  if (!address) return false;
  let set = sourceSets.get(mapping);
  if (!set) sourceSets.set(mapping, (set = new CidrSet(mapping.allowedSources)));
  return set.contains(address);
}

function record(env: FlowEnv, started: number, f: Finish, limiter?: LineLimiter): void {
  env.metrics.streamFinished(f.label, f.outcome, f.reason ?? '', f.bytesIn, f.bytesOut);
  if (f.outcome !== 'closed' && limiter && !limiter.allow(`${f.outcome}:${f.reason ?? ''}`)) {
    env.metrics.logLinesSuppressed.inc({ kind: 'stream' });
    return;
  }
  const message = f.message === undefined ? undefined : capText(f.message, MESSAGE_MAX);
  // Fixed keys in the line's order; JSON leaves the undefined ones out.
  env.audit.write({
    event: 'stream',
    connection: env.connection,
    connector: f.connector,
    worker: f.worker,
    mapping: f.mapping,
    side: f.side,
    client: f.client,
    target: f.target,
    outcome: f.outcome,
    reason: f.reason,
    message,
    bytesIn: f.bytesIn,
    bytesOut: f.bytesOut,
    durationMs: Date.now() - started,
  });
  if (f.outcome !== 'closed') {
    env.log.info({ mapping: f.mapping, client: f.client, outcome: f.outcome, reason: f.reason }, `stream for mapping "${f.mapping}" from ${f.client} ${f.outcome}${f.reason ? ` (${f.reason})` : ''}${message ? `: ${message}` : ''}`);
  }
}

const acceptorLimiters = new WeakMap<StreamHost, LineLimiter>();

/** The line limiter of the session `channel` belongs to (one per session, made with its first stream). */
function acceptorLimiter(env: FlowEnv, who: { connector: string; worker: string }, channel: Channel): LineLimiter {
  let limiter = acceptorLimiters.get(channel.host);
  if (limiter) return limiter;
  limiter = new LineLimiter({
    burst: STREAM_LINES_BURST,
    intervalMs: STREAM_LINES_INTERVAL_MS,
    maxKeys: 64,
    overflowKey: 'failed:(other)',
    ...(env.now ? { now: env.now } : {}),
    onSummary: (key, count, intervalMs) => {
      const [outcome, reason] = key.split(':') as [StreamOutcome, string];
      const message = `${count} more ${outcome} streams (${reason || 'no reason'}) opened by the peer in ${intervalMs / 1000} s, not audited one by one`;
      env.audit.write({ event: 'stream-summary', connection: env.connection, connector: who.connector, worker: who.worker, outcome, reason, count, intervalMs, message });
      env.log.warn({ connector: who.connector, worker: who.worker, outcome, reason, count }, message);
    },
  });
  acceptorLimiters.set(channel.host, limiter);
  return limiter;
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
 * `socket` comes from MappingListeners, with TCP_NODELAY and keep-alive already on (accept.ts).
 */
export function carryClient(env: FlowEnv, mapping: Mapping, socket: net.Socket, carriers: Iterable<Carrier>, opts: CarryOptions): void {
  const started = Date.now();
  const client = formatPeer(socket);
  const r = new Relay(socket);
  const f = new Finish(opts.self, mapping.name, client, mapping.target.side, formatHostPort(mapping.target));
  if (!sourceAllowed(mapping, socket.remoteAddress)) {
    socket.resetAndDestroy();
    record(env, started, f.end('refused', 'SOURCE_NOT_ALLOWED', `${socket.remoteAddress} is outside allowedSources (${mapping.allowedSources.join(', ')})`));
    return;
  }
  const candidates = carriers[Symbol.iterator]();
  let lastProblem = 'no tunnel session is established';
  let tried = 0;

  const noCarrier = (): void => {
    socket.resetAndDestroy();
    const explained = tried === 0 ? opts.explainNoCarrier?.() : undefined;
    f.connector = opts.self.connector;
    f.worker = opts.self.worker;
    record(env, started, f.end('refused', explained?.code ?? 'NO_SESSION', explained?.message ?? lastProblem));
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
    f.connector = carrier.connector;
    f.worker = carrier.worker;
    if (errorCode(err) === 'ERR_OPEN_HEADER_TOO_LARGE') env.metrics.limitHit('open_header_bytes');
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
      record(env, started, f.end('refused', response.code, capText(response.message, MESSAGE_MAX)));
      return;
    }
    if (socket.destroyed) {
      channel.reset();
      record(env, started, f.end('failed', 'CLIENT_GONE', r.error?.message ?? 'the client closed before the stream opened'));
      return;
    }
    relayed(env, started, mapping, r, f, false);
  };

  tryNext();
}

/**
 * Relays until both sides closed, then writes the audit line and metrics. `socketIsTarget`: at the
 * acceptor the socket is the target, so bytes to it came from the client.
 */
function relayed(env: FlowEnv, started: number, mapping: Mapping, r: Relay, f: Finish, socketIsTarget: boolean, limiter?: LineLimiter): void {
  env.metrics.streamOpened(mapping.name);
  r.run((result) => {
    env.metrics.streamClosed(mapping.name);
    f.bytesIn = socketIsTarget ? result.bytesToSocket : result.bytesFromSocket;
    f.bytesOut = socketIsTarget ? result.bytesFromSocket : result.bytesToSocket;
    if (result.error) f.end('failed', failedReason(result.error, 'ABORTED'), result.error.message);
    else f.end('closed');
    record(env, started, f, limiter);
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
  const f = new Finish(who, '', '');
  const limiter = acceptorLimiter(env, who, channel);

  const refuse = (code: RefusalCode, message: string): void => {
    channel.write(encodeOpenResponse({ ok: false, code, message }));
    channel.end();
    r.discard();
    record(env, started, f.end('refused', code, message), limiter);
  };

  const resolved = (resolution: Resolution): void => {
    if (resolution.mapping) f.label = resolution.mapping.name;
    if (!resolution.ok) {
      f.side = resolution.mapping?.target.side;
      refuse(resolution.code, resolution.message);
      return;
    }
    const { mapping, dial, target } = resolution;
    f.side = mapping.target.side;
    f.target = target;
    const dialStarted = performance.now();
    connect(dial, env.dialTimeoutMs ?? 10_000, (err, socket) => {
      env.metrics.dialSeconds.observe(mapping.name, err ? 'error' : 'ok', (performance.now() - dialStarted) / 1000);
      if (channel.isReset) {
        socket?.destroy();
        // Reset while dialling: by the peer, or dropped here at a limit (the open or stream buffer).
        const reason = failedReason(r.error, 'ABORTED');
        record(env, started, f.end('failed', reason, reason === 'LIMIT_EXCEEDED' ? errorMessage(r.error) : 'the stream closed while dialling'), limiter);
        return;
      }
      if (err || !socket) {
        refuse('DIAL_FAILED', `cannot connect to ${target}: ${errorMessage(err)}`);
        return;
      }
      channel.write(OPEN_OK);
      r.attachSocket(socket);
      relayed(env, started, mapping, r, f, true, limiter);
    });
  };

  r.readHeader(OPEN_TIMEOUT_MS, 'stream open request', (raw, err) => {
    let req: OpenRequest;
    try {
      if (err) throw err;
      req = parseOpenRequest(raw);
    } catch (e) {
      channel.reset();
      if (errorCode(e) === 'ERR_OPEN_HEADER_TOO_LARGE') env.metrics.limitHit('open_header_bytes');
      record(env, started, f.end('failed', failedReason(e, 'BAD_REQUEST'), errorMessage(e)), limiter);
      return;
    }
    // What the peer asked for goes to the audit line as it is (the schema bounds it); the metric
    // label stays "(unknown)" unless a configured mapping has that name (resolved above).
    f.mapping = req.mapping;
    f.label = UNKNOWN_MAPPING_LABEL;
    f.client = req.source;
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
  const socket = net.connect({ host: to.host, port: to.port, allowHalfOpen: true, noDelay: true, ...Relay.socketOptions });
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
