/**
 * The header that starts every data stream: the opener names the mapping (and
 * the client address, for audit); the acceptor answers ok or a coded refusal
 * before any application byte flows. Wire: u16 length + JSON, each way.
 */
import type { Duplex } from 'node:stream';
import { z } from 'zod';
import { ProtocolError } from './errors.js';
import { encodeJsonFrame, readJsonFrame16 } from './frames.js';
import { OPEN_HEADER_MAX } from './limits.js';

/** Why a stream was refused; stable strings, used in audit lines and metrics. */
export const REFUSAL_CODES = [
  'UNKNOWN_MAPPING',      // no mapping of that name on the accepting side
  'WRONG_SIDE',           // the mapping's target is not on the accepting side
  'NOT_ALLOWED',          // this side's policy refuses the target (connector allow-list; worker: guarded/API server address)
  'SOURCE_NOT_ALLOWED',   // the client address is outside allowedSources
  'DIAL_FAILED',          // the target did not accept the connection
  'NO_SESSION',           // no tunnel session to carry the stream
  'SHUTTING_DOWN',        // the accepting side is draining
  'BAD_REQUEST',          // malformed open header
  'LIMIT_EXCEEDED',       // a limit of tunnel/limits.ts (open header size, the session's open buffer budget); never sent on the wire
] as const;
export type RefusalCode = (typeof REFUSAL_CODES)[number];

export interface OpenRequest {
  mapping: string;
  /** host:port of the client that connected to the listener. */
  source: string;
}

export type OpenResponse = { ok: true } | { ok: false; code: RefusalCode; message: string };

const requestSchema = z.object({ mapping: z.string().min(1).max(253), source: z.string().max(300) });
const responseSchema = z.union([
  z.object({ ok: z.literal(true) }),
  z.object({ ok: z.literal(false), code: z.enum(REFUSAL_CODES), message: z.string().max(2000) }),
]);

export const OPEN_TIMEOUT_MS = 15_000;

export function encodeOpenRequest(req: OpenRequest): Buffer {
  return encodeJsonFrame(req, 2);
}

export function encodeOpenResponse(res: OpenResponse): Buffer {
  return encodeJsonFrame(res, 2);
}

/** Validates a decoded open request; throws a ProtocolError (ERR_OPEN_INVALID) naming what is wrong. */
export function parseOpenRequest(raw: unknown): OpenRequest {
  const parsed = requestSchema.safeParse(raw);
  if (!parsed.success) throw new ProtocolError('ERR_OPEN_INVALID', `malformed stream open request: ${parsed.error.issues[0]?.message}`);
  return parsed.data;
}

/** Validates a decoded open response; throws a ProtocolError (ERR_OPEN_INVALID) naming what is wrong. */
export function parseOpenResponse(raw: unknown): OpenResponse {
  const parsed = responseSchema.safeParse(raw);
  if (!parsed.success) throw new ProtocolError('ERR_OPEN_INVALID', `malformed stream open response: ${parsed.error.issues[0]?.message}`);
  return parsed.data as OpenResponse;
}

// The same on a Duplex (a MuxStream): for tools and tests that speak the protocol by hand.

export function writeOpenRequest(stream: Duplex, req: OpenRequest): void {
  stream.write(encodeOpenRequest(req));
}

export function writeOpenResponse(stream: Duplex, res: OpenResponse): void {
  stream.write(encodeOpenResponse(res));
}

export async function readOpenRequest(stream: Duplex, timeoutMs = OPEN_TIMEOUT_MS): Promise<OpenRequest> {
  return parseOpenRequest(await readJsonFrame16(stream, timeoutMs, 'stream open request', OPEN_HEADER_MAX));
}

export async function readOpenResponse(stream: Duplex, timeoutMs = OPEN_TIMEOUT_MS): Promise<OpenResponse> {
  return parseOpenResponse(await readJsonFrame16(stream, timeoutMs, 'stream open response', OPEN_HEADER_MAX));
}

/** A refusal as an Error, so callers can throw it through one path. */
export class StreamRefused extends Error {
  readonly code: RefusalCode;
  constructor(code: RefusalCode, message: string) {
    super(message);
    this.name = 'StreamRefused';
    this.code = code;
  }
}
