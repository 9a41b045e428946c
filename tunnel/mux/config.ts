/**
 * Multiplexer settings. `DEFAULT_MUX_CONFIG` is tuned for the tunnel (large
 * windows for full speed on one stream); `verifyMuxConfig` rejects nonsense
 * before a session starts, like hashicorp/yamux's VerifyConfig. The limits on
 * what a peer may cost come from tunnel/limits.ts.
 */
import { UnderpassError } from '../errors.js';
import { DEFAULT_LIMITS } from '../limits.js';
import { INITIAL_WINDOW } from './frame.js';

export interface MuxConfig {
  /** Receive window granted to the peer per stream; also the bound on buffered bytes per stream. */
  maxStreamWindow: number;
  /**
   * Receive credit shared by the streams that are receiving at the same time: each gets
   * `maxSessionWindow / receivers`, at least the protocol's initial 256 KiB and at most
   * `maxStreamWindow`. One stream runs with the full per-stream window; eight bulk streams do not
   * hold eight of them in flight (which costs memory and, in Node, full garbage collections).
   */
  maxSessionWindow: number;
  /** Largest Data frame we send. */
  maxFrameSize: number;
  /** Each end sends a Ping this often, busy or idle, and measures the round trip (0 = no keepalive). */
  keepaliveIntervalMs: number;
  /** Close the session when nothing at all arrived for this long. */
  keepaliveTimeoutMs: number;
  /** Streams open at once, both directions together (limits.streamsPerSession); a SYN beyond it is reset. */
  maxStreams: number;
  /** Bytes queued for the transport before stream writers are held back. */
  writeQueueHighWater: number;
  /** Bytes the session's streams may hold before they relay: open headers and early data (limits.openBufferBytes). */
  openBufferBytes: number;
  /** Bytes written and not yet read by the peer past which the session stops reading (limits.unreadOutputBytes). */
  unreadOutputBytes: number;
  /**
   * Bytes the session's streams may hold that the peer sent and their consumers have not taken yet
   * (limits.streamBufferBytes): past it, a stream that keeps more is reset; past half of it, new
   * streams get no window above the initial one and grants shrink to it.
   */
  streamBufferBytes: number;
}

export const DEFAULT_MUX_CONFIG: Readonly<MuxConfig> = Object.freeze({
  maxStreamWindow: 4 * 1024 * 1024,
  maxSessionWindow: 8 * 1024 * 1024,
  maxFrameSize: 256 * 1024,
  keepaliveIntervalMs: 5_000,
  keepaliveTimeoutMs: 10_000,
  maxStreams: DEFAULT_LIMITS.streamsPerSession,
  writeQueueHighWater: 1024 * 1024,
  openBufferBytes: DEFAULT_LIMITS.openBufferBytes,
  unreadOutputBytes: DEFAULT_LIMITS.unreadOutputBytes,
  streamBufferBytes: DEFAULT_LIMITS.streamBufferBytes,
});

export function muxConfig(overrides: Partial<MuxConfig> = {}): MuxConfig {
  const config = { ...DEFAULT_MUX_CONFIG, ...overrides };
  verifyMuxConfig(config);
  return config;
}

export function verifyMuxConfig(c: MuxConfig): void {
  const fail = (field: string, problem: string): never => {
    throw new UnderpassError('ERR_MUX_CONFIG', `mux config ${field}: ${problem}`);
  };
  if (!Number.isInteger(c.maxStreamWindow) || c.maxStreamWindow < INITIAL_WINDOW) fail('maxStreamWindow', `must be an integer ≥ ${INITIAL_WINDOW}`);
  if (c.maxStreamWindow > 0x7fffffff) fail('maxStreamWindow', 'must fit in 31 bits');
  if (!Number.isInteger(c.maxSessionWindow) || c.maxSessionWindow < c.maxStreamWindow) fail('maxSessionWindow', 'must be an integer ≥ maxStreamWindow');
  if (!Number.isInteger(c.maxFrameSize) || c.maxFrameSize < 1024) fail('maxFrameSize', 'must be an integer ≥ 1024');
  if (c.keepaliveIntervalMs < 0) fail('keepaliveIntervalMs', 'must be ≥ 0');
  if (c.keepaliveIntervalMs > 0 && c.keepaliveTimeoutMs <= c.keepaliveIntervalMs) fail('keepaliveTimeoutMs', 'must be greater than keepaliveIntervalMs');
  if (!Number.isInteger(c.maxStreams) || c.maxStreams < 1) fail('maxStreams', 'must be a positive integer');
  if (c.writeQueueHighWater < 1) fail('writeQueueHighWater', 'must be positive');
  if (!Number.isInteger(c.openBufferBytes) || c.openBufferBytes < 1) fail('openBufferBytes', 'must be a positive integer');
  if (!Number.isInteger(c.unreadOutputBytes) || c.unreadOutputBytes < 1) fail('unreadOutputBytes', 'must be a positive integer');
  if (!Number.isInteger(c.streamBufferBytes) || c.streamBufferBytes < 1) fail('streamBufferBytes', 'must be a positive integer');
}
