/**
 * Every limit on what a peer may cost a worker or a connector, with its default, in one place
 * (docs/security.md, "Limits", is this table in prose). A peer is anyone who can reach the tunnel
 * port (before authentication) or holds a certificate of the connection (after it): each of its
 * bytes is treated as hostile, and each limit below bounds the memory, CPU or output it can cause.
 *
 * Two kinds:
 *  - fixed protocol limits (frame, control message and open header sizes): both ends must agree,
 *    so they are constants, not configuration;
 *  - per-process limits (`Limits`): defaults sized so that one connector cannot push a worker
 *    with a 512 MiB memory limit out of memory, configurable in the `limits:` section of the
 *    worker and connector files (the connector takes the ones that apply to it).
 *
 * Every refusal at a limit is counted in `underpass_limit_refusals_total{limit}` with the
 * `limit` names of LIMIT_NAMES (tunnel/metrics.ts).
 */
import { z } from 'zod';
import { MAX_CONTROL_MESSAGE } from './control.js';
import { strictObject } from './config-load.js';
import type { MuxConfig } from './mux/config.js';

const KiB = 1024;
const MiB = 1024 * KiB;

/** Largest WebSocket frame accepted (RFC 6455 length); larger ones close the connection with 1009. */
export const WS_MAX_FRAME = 16 * MiB;
/** Largest control message (u32 length + JSON); larger ones close the session (ERR_CONTROL_TOO_LARGE). */
export const CONTROL_MESSAGE_MAX = MAX_CONTROL_MESSAGE;
/**
 * Largest stream open header, request or response (u16 length + JSON). A request is under 700
 * bytes (mapping ≤ 253, source ≤ 300 characters); a refusal carries a message of up to 2,000
 * characters (up to 6,000 bytes of UTF-8). Larger ones reset the stream (BAD_REQUEST).
 */
export const OPEN_HEADER_MAX = 8 * KiB;
/** Longest peer-supplied text copied into a log or audit line (a URL, a name, a message). */
export const COPIED_TEXT_MAX = 256;
/** Enrollment requests (POST /v1/enroll on the tunnel port, unauthenticated): body size, per source and minute, at once. */
export const ENROLL_BODY_MAX = 16 * KiB;
export const ENROLL_PER_SOURCE_PER_MINUTE = 10;
export const ENROLL_IN_FLIGHT = 8;

/** The per-process limits (see DEFAULT_LIMITS for what each bounds). */
export interface Limits {
  /** Streams open at once on one session, each direction's opens counted together (the control stream included). */
  streamsPerSession: number;
  /** Bytes a session holds for its streams before they relay: partial open headers and the early data behind them. */
  openBufferBytes: number;
  /** Bytes written to a peer and not yet read by it, past which we stop reading from that peer. */
  unreadOutputBytes: number;
  /**
   * Bytes a session's streams hold that the peer sent and this side has not handed on yet (its
   * target or client does not read): past it, a stream that keeps more is reset.
   */
  streamBufferBytes: number;
  /** Worker: sessions of one connector name at once. */
  sessionsPerConnector: number;
  /** Worker: sessions at once, all connectors of the connection together. */
  sessions: number;
  /** Worker: connections to the tunnel port whose TLS handshake and upgrade have not finished yet. */
  unauthenticatedConnections: number;
  /** Worker: the same, from one source address. */
  unauthenticatedPerSource: number;
}

export const DEFAULT_LIMITS: Readonly<Limits> = Object.freeze({
  // An idle stream costs ~4 KiB at each end with its relay and socket (docs/benchmarks.md): 16,384
  // cost ~64 MiB, and the benchmark's 10,000 idle streams on one session fit.
  streamsPerSession: 16_384,
  // 32 streams sending their whole initial window (256 KiB) before the dial answers.
  openBufferBytes: 8 * MiB,
  // Far above what flow control lets a session queue while its peer reads (1 MiB of transport
  // buffer plus one 64 KiB read per busy stream), so an honest peer is never paused.
  unreadOutputBytes: 16 * MiB,
  // Four session windows (8 MiB, tunnel/mux/config.ts): what honest streams hold when their targets
  // stall stays below it (one bulk stream at most its 4 MiB window, concurrent ones share the
  // session window), while three sessions of one connector cost at most 96 MiB of stream data.
  streamBufferBytes: 32 * MiB,
  // A reconnect can overlap a session that has not timed out yet (and that one may flap once more).
  // Three sessions of 16,384 idle streams plus their buffers stay under ~300 MiB.
  sessionsPerConnector: 3,
  sessions: 64,
  unauthenticatedConnections: 256,
  unauthenticatedPerSource: 32,
});

/** The `limit` label of underpass_limit_refusals_total: one per limit, snake_case. */
export const LIMIT_NAMES = [
  'ws_frame_bytes',
  'control_message_bytes',
  'open_header_bytes',
  'streams_per_session',
  'open_buffer_bytes',
  'unread_output_bytes',
  'stream_buffer_bytes',
  'ping_replies',
  'sessions_per_connector',
  'sessions',
  'unauthenticated_connections',
  'unauthenticated_per_source',
  'enroll_body_bytes',
  'enroll_per_source',
  'enroll_in_flight',
] as const;
export type LimitName = (typeof LIMIT_NAMES)[number];

/** The limits a connector enforces (the worker enforces all of LIMIT_NAMES). */
export const CONNECTOR_LIMIT_NAMES: readonly LimitName[] = [
  'ws_frame_bytes', 'control_message_bytes', 'open_header_bytes', 'streams_per_session', 'open_buffer_bytes', 'unread_output_bytes',
  'stream_buffer_bytes', 'ping_replies',
];

/** Error codes that mean "a peer hit this limit", for counting a limit where only the error is seen. */
export const LIMIT_OF_ERROR_CODE: Readonly<Record<string, LimitName>> = Object.freeze({
  ERR_CONTROL_TOO_LARGE: 'control_message_bytes',
});

/**
 * `text` as it may be copied into a log or audit line: at most `max` characters, the rest
 * replaced by a note of how much was cut (a peer chooses URLs, names and messages).
 */
export function capText(text: string, max = COPIED_TEXT_MAX): string {
  if (text.length <= max) return text;
  return `${text.slice(0, max)}…(${text.length - max} more characters)`;
}

// ---- the `limits:` section of the config files -------------------------------------------

const SIZE_UNITS: Record<string, number> = { '': 1, Ki: KiB, Mi: MiB, Gi: 1024 * MiB };

/** A byte size: a whole number of bytes, or a string with a binary suffix ("8Mi", "512Ki"). */
export function parseByteSize(v: number | string): number {
  if (typeof v === 'number') {
    if (!Number.isSafeInteger(v) || v < 0) throw new Error(`${v} is not a size (a number must be whole, non-negative bytes)`);
    return v;
  }
  const m = /^(\d+)(Ki|Mi|Gi)?$/.exec(v);
  if (!m) throw new Error(`"${v}" is not a size (expected a number of bytes, or e.g. "512Ki", "8Mi", "1Gi")`);
  const n = Number(m[1]) * SIZE_UNITS[m[2] ?? '']!;
  if (!Number.isSafeInteger(n)) throw new Error(`"${v}" is too large`);
  return n;
}

const sizeSchema = (min: number, minText: string) => z.union([z.number(), z.string()], {
  error: 'must be a size: a number of bytes, or e.g. "512Ki", "8Mi"',
}).transform((v, ctx) => {
  try {
    const n = parseByteSize(v);
    if (n < min) ctx.addIssue({ code: 'custom', message: `must be at least ${minText}` });
    return n;
  } catch (err) {
    ctx.addIssue({ code: 'custom', message: (err as Error).message });
    return z.NEVER;
  }
});

const countSchema = (min: number, max: number) => z.number()
  .int(`must be a whole number between ${min} and ${max}`)
  .min(min, `must be between ${min} and ${max}`)
  .max(max, `must be between ${min} and ${max}`);

const sessionLimitShape = {
  // The control stream and at least one connection; above 65,536 a session's stream table is the risk.
  streamsPerSession: countSchema(2, 65_536).optional(),
  // At least one whole open header.
  openBufferBytes: sizeSchema(OPEN_HEADER_MAX, '8Ki (one open header)').optional(),
  // Below the transport's own 1 MiB write buffer an honest busy session would stop reading.
  unreadOutputBytes: sizeSchema(MiB, '1Mi').optional(),
  // At least the session window: below it, honest concurrent transfers to a slow target would be reset.
  streamBufferBytes: sizeSchema(8 * MiB, '8Mi (the session window)').optional(),
};

/** `limits:` of the connector file: the limits of its sessions. */
export const connectorLimitsSchema = strictObject(sessionLimitShape).default({}).transform((l): Limits => ({ ...DEFAULT_LIMITS, ...defined(l) }));

/** `limits:` of the worker file: its sessions' limits and the tunnel port's. */
export const workerLimitsSchema = strictObject({
  ...sessionLimitShape,
  sessionsPerConnector: countSchema(1, 100_000).optional(),
  sessions: countSchema(1, 100_000).optional(),
  unauthenticatedConnections: countSchema(1, 100_000).optional(),
  unauthenticatedPerSource: countSchema(1, 100_000).optional(),
}).default({}).transform((l, ctx): Limits => {
  const limits = { ...DEFAULT_LIMITS, ...defined(l) };
  if (limits.sessionsPerConnector > limits.sessions) {
    ctx.addIssue({ code: 'custom', path: ['sessionsPerConnector'], message: `must not be more than sessions (${limits.sessions})` });
  }
  if (limits.unauthenticatedPerSource > limits.unauthenticatedConnections) {
    ctx.addIssue({ code: 'custom', path: ['unauthenticatedPerSource'], message: `must not be more than unauthenticatedConnections (${limits.unauthenticatedConnections})` });
  }
  return limits;
});

/** The multiplexer settings that enforce a process's session limits. */
export function muxLimits(l: Limits): Pick<MuxConfig, 'maxStreams' | 'openBufferBytes' | 'unreadOutputBytes' | 'streamBufferBytes'> {
  return { maxStreams: l.streamsPerSession, openBufferBytes: l.openBufferBytes, unreadOutputBytes: l.unreadOutputBytes, streamBufferBytes: l.streamBufferBytes };
}

function defined<T extends object>(o: T): Partial<Limits> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<Limits>;
}
