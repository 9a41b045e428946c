/**
 * The operator channel's contract (docs/operator-channel.md), shared by the
 * worker (client) and the operator (server): the path, the report a worker
 * POSTs, the answer it gets, and every limit on both. The report's limits are
 * what a legitimate worker can need; the body limit is computed from them.
 *
 *   POST /v1/connections/{namespace}/{name}/report   WorkerReport (compact JSON)
 *   200  OperatorAnswer   {mappings, admission, report: {accepted, ...}}
 */
import { z } from 'zod';
import { admissionSchema, type Admission } from './admission.js';
import { codeSchema, CONTROL_LIMITS, dnsLabelSchema, MAPPING_STATES, PEM_LIMITS, versionSchema } from './control.js';
import type { ConnectionId } from './identity.js';
import { mappingSchema, type Mapping } from './mapping.js';

export function reportPath(connection: ConnectionId): string {
  return `/v1/connections/${connection.namespace}/${connection.name}/report`;
}

/** The report path; the groups are the namespace and the name (checked separately). */
export const REPORT_PATH_PATTERN = /^\/v1\/connections\/([^/]+)\/([^/]+)\/report$/;

/**
 * What one report may hold. A worker that has more leaves the rest out and
 * counts it in `dropped` (worker/status.ts), so its report always fits.
 */
export const REPORT_LIMITS = {
  /** Connector sessions: one per connector, a few more while some reconnect. */
  sessions: 256,
  /** unavailableMappings entries over all sessions (at most `mappings` in one session). */
  unavailableMappings: 1024,
  /** At most one per mapping. */
  listenerFailures: CONTROL_LIMITS.mappings,
  /** One free-text message. */
  messageChars: 256,
  /** All messages of one report together. */
  messageCharsTotal: 32_768,
  instanceChars: 253,
  sessionChars: 64,
  sinceChars: 32,
  addressChars: 64,
  /** The connector host's name as its hello said (cut: status shows it, nothing decides on it). */
  hostnameChars: 40,
  /** A certificate serial in hex (ours are 16 bytes; RFC 5280 allows 20). */
  serialChars: 40,
  /** CA certificates a worker trusts (two while the connection's CA rotates). */
  trustedCAs: 8,
} as const;

const R = REPORT_LIMITS;
const atMost = (n: number) => `must be at most ${n} characters`;
const entries = (n: number) => `must have at most ${n} entries`;

/** Free text without control characters or lone surrogates: at most 3 UTF-8 bytes per character in JSON. */
const TEXT = /^[^\p{Cc}\p{Cs}]*$/u;
export const reportTextSchema = z.string().max(R.messageChars, atMost(R.messageChars))
  .regex(TEXT, 'must not contain control characters or lone surrogates');

const reportedUnavailableSchema = z.object({
  name: dnsLabelSchema,
  state: z.enum(MAPPING_STATES),
  reason: codeSchema.optional(),
  message: reportTextSchema.optional(),
});

/** A CA id (tunnel/pki.ts caId): 16 lowercase hex digits. */
const caIdSchema = z.string().regex(/^[0-9a-f]{16}$/, 'must be a CA id (16 hex digits)');

const reportedConnectorSchema = z.object({
  name: dnsLabelSchema,
  session: z.string().min(1).max(R.sessionChars, atMost(R.sessionChars)).regex(/^[A-Za-z0-9-]+$/, 'must be letters, digits and "-"'),
  since: z.string().max(R.sinceChars, atMost(R.sinceChars)).regex(/^[0-9A-Za-z:.+-]*$/, 'must be an ISO 8601 time'),
  version: versionSchema,
  address: z.string().max(R.addressChars, atMost(R.addressChars)).regex(/^[0-9A-Za-z.:[\]%_-]*$/, 'must be host:port'),
  unavailableMappings: z.array(reportedUnavailableSchema).max(CONTROL_LIMITS.mappings, entries(CONTROL_LIMITS.mappings)),
  /** The CA that issued the certificate this session was opened with (CA rotation waits for every session to move). */
  issuer: caIdSchema.optional(),
  /** Serial (hex) of that certificate, and the connector host's name from its hello (TunnelConnector status). */
  serial: z.string().max(R.serialChars, atMost(R.serialChars)).regex(/^[0-9A-Fa-f]*$/, 'must be hex').optional(),
  hostname: z.string().max(R.hostnameChars, atMost(R.hostnameChars)).regex(/^[A-Za-z0-9._-]*$/, 'must be letters, digits, ".", "_" and "-"').optional(),
});

const countSchema = z.number().int().nonnegative().max(1e9);

/** What a worker left out of its report to stay within the limits. */
const droppedSchema = z.object({
  sessions: countSchema.optional(),
  unavailableMappings: countSchema.optional(),
  listenerFailures: countSchema.optional(),
  /** Messages shortened or left out. */
  messages: countSchema.optional(),
});

// Unknown fields are dropped, not refused: a newer worker may report more than this operator knows.
export const workerReportSchema = z.object({
  instance: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$/, 'must be 1 to 253 letters, digits, ".", "_" or "-"'),
  version: versionSchema,
  ready: z.boolean(),
  draining: z.boolean(),
  connectors: z.array(reportedConnectorSchema).max(R.sessions, entries(R.sessions)),
  listenerFailures: z.array(z.object({ mapping: dnsLabelSchema, message: reportTextSchema })).max(R.listenerFailures, entries(R.listenerFailures)),
  dropped: droppedSchema.optional(),
  /** The CAs this worker trusts now (its tls.ca), and the one that issued its own certificate. */
  trust: z.array(caIdSchema).max(R.trustedCAs, entries(R.trustedCAs)).optional(),
  issuer: caIdSchema.optional(),
}).superRefine((r, ctx) => {
  const unavailable = r.connectors.reduce((n, c) => n + c.unavailableMappings.length, 0);
  if (unavailable > R.unavailableMappings) {
    ctx.addIssue({ code: 'custom', path: ['connectors'], message: `must have at most ${R.unavailableMappings} unavailableMappings entries in all (has ${unavailable})` });
  }
  const chars = messageChars(r);
  if (chars > R.messageCharsTotal) {
    ctx.addIssue({ code: 'custom', path: ['connectors'], message: `messages must have at most ${R.messageCharsTotal} characters in all (have ${chars})` });
  }
});

export type WorkerReport = z.infer<typeof workerReportSchema>;
export type ReportedConnector = WorkerReport['connectors'][number];
export type ReportedUnavailable = ReportedConnector['unavailableMappings'][number];
export type ReportDropped = NonNullable<WorkerReport['dropped']>;

/** Free text as a report carries it: control characters and lone surrogates become spaces, then cut to messageChars. */
export function reportText(text: string): string {
  const clean = text.replace(/[\p{Cc}\p{Cs}]/gu, ' ');
  if (clean.length <= R.messageChars) return clean;
  // Never cut between the two halves of a surrogate pair: half of one is a lone surrogate.
  const end = /[\ud800-\udbff]/.test(clean[R.messageChars - 2]!) ? R.messageChars - 2 : R.messageChars - 1;
  return `${clean.slice(0, end)}…`;
}

/** Characters of all free-text messages in `r`. */
export function messageChars(r: Pick<WorkerReport, 'connectors' | 'listenerFailures'>): number {
  let n = 0;
  for (const c of r.connectors) for (const u of c.unavailableMappings) n += u.message?.length ?? 0;
  for (const f of r.listenerFailures) n += f.message.length;
  return n;
}

/**
 * The largest compact-JSON report the schema accepts, in bytes: every list and
 * string at its limit, with the widest characters each field allows (ASCII
 * fields 1 byte, `"` and `\` in versions 2, messages 3 per UTF-16 unit). A
 * body over this is not a report; 1 KiB of slack lets a newer worker add fields.
 */
function largestReportBytes(): number {
  const str = (chars: number, bytesPerChar = 1): number => 2 + chars * bytesPerChar;
  const obj = (fields: Record<string, number>): number =>
    2 + Object.entries(fields).reduce((n, [k, v]) => n + k.length + 3 + v, 0) + Object.keys(fields).length - 1;
  const arr = (count: number, item: number): number => 2 + count * item + Math.max(0, count - 1);
  const count = String(1e9).length;
  const entryNoMessage = obj({ name: str(63), state: str(7), reason: str(CONTROL_LIMITS.codeChars), message: str(0) });
  const failureNoMessage = obj({ mapping: str(63), message: str(0) });
  const sessionNoEntries = obj({
    name: str(63), session: str(R.sessionChars), since: str(R.sinceChars), version: str(CONTROL_LIMITS.versionChars, 2),
    address: str(R.addressChars), unavailableMappings: arr(0, 0), issuer: str(16), serial: str(R.serialChars), hostname: str(R.hostnameChars),
  });
  const header = obj({
    instance: str(R.instanceChars), version: str(CONTROL_LIMITS.versionChars, 2), ready: 5, draining: 5, connectors: 0, listenerFailures: 0,
    dropped: obj({ sessions: count, unavailableMappings: count, listenerFailures: count, messages: count }),
    trust: arr(R.trustedCAs, str(16)), issuer: str(16),
  });
  return header
    + arr(R.sessions, sessionNoEntries)
    + R.unavailableMappings * (entryNoMessage + 1)
    + arr(R.listenerFailures, failureNoMessage)
    + R.messageCharsTotal * 3
    + 1024;
}

/** Bodies over this are refused (413) before parsing; computed from REPORT_LIMITS (about 480 KiB). */
export const MAX_REPORT_BYTES = largestReportBytes();

/** How the operator took the report that came with a request (the answer carries the mapping set either way). */
export const reportVerdictSchema = z.object({
  accepted: z.boolean(),
  reason: codeSchema.optional(),
  /** The first refused field, e.g. "connectors[0].version". */
  field: z.string().max(256).optional(),
  message: z.string().max(CONTROL_LIMITS.messageChars).optional(),
});

export type ReportVerdict = z.infer<typeof reportVerdictSchema>;

/** The answer's mappings, checked as strictly as in a config file: a mapping the worker only half understands must not be served. */
export const answerMappingsSchema = z.array(mappingSchema).max(CONTROL_LIMITS.mappings, entries(CONTROL_LIMITS.mappings));

/**
 * The answer around its mappings. Unknown top-level fields are ignored (a
 * newer operator may send more). The mappings are checked on their own, so
 * that a mapping set this worker cannot read does not keep it from applying
 * the admission list.
 */
export const answerEnvelopeSchema = z.object({
  mappings: z.array(z.unknown()).max(CONTROL_LIMITS.mappings, entries(CONTROL_LIMITS.mappings)),
  /** Absent (an older operator): the worker keeps the admission it has. */
  admission: admissionSchema.optional(),
  report: reportVerdictSchema.optional(),
});

export interface OperatorAnswer {
  mappings: Mapping[];
  admission?: Admission;
  report?: ReportVerdict;
}

/** A larger answer is refused by the worker (1000 mappings with long allowedSources lists fit). */
export const MAX_ANSWER_BYTES = 4 << 20;

/**
 * Certificate signing through the channel (docs/connector-lifecycle.md): a
 * worker forwards a connector's renewal request for the connector its session
 * authenticated. The operator decides who it signs for from the worker's own
 * certificate (the connection) and what the worker vouches for (the connector
 * name and the serial of the certificate the session was opened with); names
 * inside the CSR are ignored.
 *
 *   POST /v1/connections/{namespace}/{name}/sign   SignRequest
 *   200  SignAnswer {certificate, ca}
 *   403  {reason: CONNECTOR_NOT_ALLOWED | CERTIFICATE_REVOKED | ...}   400 {reason: CSR_INVALID}
 */
export function signPath(connection: ConnectionId): string {
  return `/v1/connections/${connection.namespace}/${connection.name}/sign`;
}

export const SIGN_PATH_PATTERN = /^\/v1\/connections\/([^/]+)\/([^/]+)\/sign$/;

/** Body limit of a sign request (a CSR is under 1 KiB). */
export const MAX_SIGN_BYTES = 16 * 1024;

export const signRequestSchema = z.object({
  /** What the worker's session proved: the connector's name and its certificate's serial (hex). */
  connector: dnsLabelSchema,
  certificateSerial: z.string().min(1).max(64).regex(/^[0-9A-Fa-f]+$/, 'must be hex'),
  csr: z.string().min(1).max(PEM_LIMITS.csrChars),
});

export type SignRequest = z.infer<typeof signRequestSchema>;

export const signAnswerSchema = z.object({
  certificate: z.string().min(1).max(PEM_LIMITS.certificateChars),
  /** Every CA certificate the connection trusts now (one, or two while the CA rotates). */
  ca: z.string().min(1).max(PEM_LIMITS.caChars),
});

export type SignAnswer = z.infer<typeof signAnswerSchema>;

/**
 * Enrollment through the channel: a worker forwards what an unauthenticated
 * connector sent to its enrollment endpoint (a one-time token and a CSR). The
 * operator decides everything from the token (tunnel/enrollment-token.ts).
 *
 *   POST /v1/connections/{namespace}/{name}/enroll   EnrollRequest
 *   200  EnrollAnswer {certificate, ca, connector}
 *   403  {reason: TOKEN_INVALID | TOKEN_EXPIRED | TOKEN_USED | TOKEN_UNKNOWN | TOKEN_WRONG_CONNECTION | CONNECTOR_NOT_ALLOWED}
 *   400  {reason: TOKEN_MALFORMED | CSR_INVALID | ...}
 */
export function enrollPath(connection: ConnectionId): string {
  return `/v1/connections/${connection.namespace}/${connection.name}/enroll`;
}

export const ENROLL_PATH_PATTERN = /^\/v1\/connections\/([^/]+)\/([^/]+)\/enroll$/;

export const enrollRequestSchema = z.object({
  token: z.string().min(1).max(4096),
  csr: z.string().min(1).max(PEM_LIMITS.csrChars),
  /** The connector's address as the worker saw it (for the operator's log). */
  peer: z.string().max(64).optional(),
});

export type EnrollRequest = z.infer<typeof enrollRequestSchema>;

export const enrollAnswerSchema = z.object({
  certificate: z.string().min(1).max(PEM_LIMITS.certificateChars),
  ca: z.string().min(1).max(PEM_LIMITS.caChars),
  connector: dnsLabelSchema,
});

export type EnrollAnswer = z.infer<typeof enrollAnswerSchema>;
