/**
 * The worker end of the operator channel (docs/operator-channel.md; the
 * contract is tunnel/operator-channel.ts): POSTs this worker's report to the
 * operator every `intervalMs` and soon after `trigger()`, over mutual TLS with
 * the worker's own certificate, and hands each answer (mapping set, admission
 * list) to `onAnswer`. One request at a time. Failures are logged when the
 * failure (or recovery) is new, not every tick; the data plane never waits on
 * this channel.
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import https from 'node:https';
import type { IncomingMessage } from 'node:http';
import type { Logger } from 'pino';
import { formatPath } from '../tunnel/config-load.js';
import { errorCode, errorMessage, UnderpassError } from '../tunnel/errors.js';
import type { ConnectionId } from '../tunnel/identity.js';
import type { Admission } from '../tunnel/admission.js';
import type { Mapping } from '../tunnel/mapping.js';
import {
  answerEnvelopeSchema, answerMappingsSchema, enrollAnswerSchema, enrollPath, MAX_ANSWER_BYTES, reportPath, signAnswerSchema, signPath,
  type EnrollAnswer, type EnrollRequest, type ReportVerdict, type SignAnswer, type SignRequest, type WorkerReport,
} from '../tunnel/operator-channel.js';
import { readTlsFiles, type TlsFiles } from '../tunnel/transport/tls-files.js';
import { VERSION } from '../tunnel/version.js';

export const TRIGGER_DEBOUNCE_MS = 100;
const REQUEST_TIMEOUT_MS = 5_000;

export interface OperatorReporterOptions {
  /** The operator's base URL (https); the report path is appended. */
  url: URL;
  /** PEM file of the CA that issued the operator's serving certificate. */
  caFile: string;
  /** The worker's certificate and key (its `ca` is not used here); re-read for every request. */
  tls: TlsFiles;
  connection: ConnectionId;
  intervalMs: number;
  report: () => WorkerReport;
  /**
   * Applies what the operator says this worker must enforce; a throw is
   * logged as ERR_OPERATOR_APPLY. `mappings` is undefined when the answer's
   * set could not be read (the admission list still applies).
   */
  onAnswer: (answer: AppliedAnswer) => Promise<void>;
  /** Counts each exchange: accepted, report-refused (answer applied, report not recorded) or failed. */
  onResult?: (result: 'accepted' | 'report-refused' | 'failed') => void;
  logger: Logger;
}

export interface AppliedAnswer {
  mappings: Mapping[] | undefined;
  /** undefined: the operator sent none (an older one); keep the current admission. */
  admission: Admission | undefined;
}

/** Where the last exchange left us: 'ok', or the reason of the failure. */
type ChannelState = { ok: true } | { ok: false; reason: string; message: string };

export class OperatorReporter {
  readonly #opts: OperatorReporterOptions;
  readonly #log: Logger;
  readonly #endpoint: URL;
  readonly #signEndpoint: URL;
  readonly #enrollEndpoint: URL;
  #agent: https.Agent | undefined;
  #agentKey = '';
  #timer: NodeJS.Timeout | undefined;
  #debounce: NodeJS.Timeout | undefined;
  #inFlight: Promise<void> | undefined;
  #again = false;
  #running = false;
  #abort = new AbortController();
  #state: ChannelState | undefined;
  #failures = 0;
  /** The last refusal of our report the operator named ("" = none), so each is logged once. */
  #reportRefusal = '';

  constructor(opts: OperatorReporterOptions) {
    this.#opts = opts;
    this.#log = opts.logger.child({ channel: 'operator' });
    const base = opts.url.pathname.replace(/\/+$/, '');
    this.#endpoint = new URL(`${base}${reportPath(opts.connection)}`, opts.url);
    this.#signEndpoint = new URL(`${base}${signPath(opts.connection)}`, opts.url);
    this.#enrollEndpoint = new URL(`${base}${enrollPath(opts.connection)}`, opts.url);
  }

  /** Forwards an enrollment (token + CSR) to the operator; throws with the operator's reason as code. */
  async enroll(req: EnrollRequest): Promise<EnrollAnswer> {
    const agent = await this.#currentAgent();
    const answer = await this.#request(agent, JSON.stringify(req), this.#enrollEndpoint);
    const parsed = enrollAnswerSchema.safeParse(answer);
    if (!parsed.success) throw invalidAnswer(parsed.error);
    return parsed.data;
  }

  /**
   * Asks the operator to sign a connector's certificate request (renewal);
   * throws an UnderpassError whose code is the operator's reason.
   */
  async sign(req: SignRequest): Promise<SignAnswer> {
    const agent = await this.#currentAgent();
    const answer = await this.#request(agent, JSON.stringify(req), this.#signEndpoint);
    const parsed = signAnswerSchema.safeParse(answer);
    if (!parsed.success) throw invalidAnswer(parsed.error);
    return parsed.data;
  }

  start(): void {
    if (this.#running) return;
    this.#running = true;
    this.#abort = new AbortController();
    this.#log.info({ url: this.#endpoint.href, intervalMs: this.#opts.intervalMs },
      `reporting to the operator at ${this.#endpoint.origin} every ${this.#opts.intervalMs} ms; mappings come from its answers`);
    this.#schedule(0);
  }

  /** Report soon (debounced), e.g. after a connector came or went. */
  trigger(): void {
    if (!this.#running || this.#debounce) return;
    this.#debounce = setTimeout(() => {
      this.#debounce = undefined;
      this.#schedule(0);
    }, TRIGGER_DEBOUNCE_MS);
    this.#debounce.unref();
  }

  /**
   * Stops reporting. With `finalReport`, first sends one more report (best
   * effort, at most `timeoutMs`) so the operator sees the end (e.g. draining).
   */
  async stop(opts: { finalReport?: boolean; timeoutMs?: number } = {}): Promise<void> {
    if (!this.#running) return;
    this.#running = false;
    clearTimeout(this.#timer);
    clearTimeout(this.#debounce);
    this.#debounce = undefined;
    if (opts.finalReport) {
      const timeout = setTimeout(() => this.#abort.abort(), opts.timeoutMs ?? 1_000);
      await this.#inFlight;
      await this.#exchange(false);
      clearTimeout(timeout);
    }
    this.#abort.abort();
    this.#agent?.destroy();
    this.#agent = undefined;
  }

  #schedule(delayMs: number): void {
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => void this.#tick(), delayMs);
    this.#timer.unref();
  }

  async #tick(): Promise<void> {
    if (!this.#running) return;
    if (this.#inFlight) {
      this.#again = true; // report again right after the current one
      return;
    }
    this.#inFlight = this.#exchange(true).finally(() => (this.#inFlight = undefined));
    await this.#inFlight;
    if (!this.#running) return;
    const again = this.#again;
    this.#again = false;
    this.#schedule(again ? 0 : this.#opts.intervalMs);
  }

  /** One report and its answer; never throws. `apply` = hand the answer to onAnswer. */
  async #exchange(apply: boolean): Promise<void> {
    try {
      const envelope = parseEnvelope(await this.#post(JSON.stringify(this.#opts.report())));
      this.#noteVerdict(envelope.report);
      const mappings = answerMappingsSchema.safeParse(envelope.mappings);
      if (apply && this.#running) {
        try {
          await this.#opts.onAnswer({ mappings: mappings.success ? mappings.data : undefined, admission: envelope.admission });
        } catch (err) {
          throw new UnderpassError('ERR_OPERATOR_APPLY', `cannot apply the operator's answer: ${errorMessage(err)}`, { cause: err });
        }
      }
      if (!mappings.success) throw invalidAnswer(mappings.error, ['mappings']);
      this.#opts.onResult?.(envelope.report?.accepted === false ? 'report-refused' : 'accepted');
      this.#record({ ok: true });
    } catch (err) {
      if (this.#abort.signal.aborted && !this.#running) return;
      this.#opts.onResult?.('failed');
      this.#record({ ok: false, reason: errorCode(err) ?? 'ERROR', message: errorMessage(err) });
    }
  }

  /** The operator answered but did not record our report (a bug or a version skew): say so once per reason. */
  #noteVerdict(verdict: ReportVerdict | undefined): void {
    const key = verdict?.accepted === false ? `${verdict.reason ?? 'REFUSED'} ${verdict.field ?? ''}` : '';
    if (key === this.#reportRefusal) return;
    this.#reportRefusal = key;
    if (key === '') {
      this.#log.info('the operator records this worker\'s reports again');
      return;
    }
    this.#log.warn({ reason: verdict!.reason, field: verdict!.field },
      `the operator did not record this worker's report (${verdict!.reason ?? 'REFUSED'}${verdict!.field ? ` at ${verdict!.field}` : ''}): ${verdict!.message ?? ''}; its answer is applied all the same`);
  }

  #record(next: ChannelState): void {
    const before = this.#state;
    this.#state = next;
    if (!next.ok) {
      this.#failures++;
      if (before && !before.ok && before.reason === next.reason) return;
      this.#log.warn({ reason: next.reason, err: next.message, url: this.#endpoint.href },
        `cannot report to the operator (${next.reason}): ${next.message}; keeping the current mappings and retrying every ${this.#opts.intervalMs} ms`);
      return;
    }
    if (before === undefined) this.#log.info('reported to the operator');
    else if (!before.ok) this.#log.info({ failures: this.#failures }, `reporting to the operator again after ${this.#failures} failed attempt(s)`);
    this.#failures = 0;
  }

  async #post(body: string): Promise<unknown> {
    const agent = await this.#currentAgent();
    try {
      return await this.#request(agent, body);
    } catch (err) {
      // A kept-alive connection the server closed in the meantime: one retry on a fresh one.
      if ((err as { reusedSocket?: boolean }).reusedSocket && errorCode(err) === 'ECONNRESET') return this.#request(agent, body);
      throw err;
    }
  }

  /** An agent with the current files; a new one (so new TLS connections) when any file changed. */
  async #currentAgent(): Promise<https.Agent> {
    const [material, ca] = await Promise.all([readTlsFiles(this.#opts.tls), readCa(this.#opts.caFile)]);
    const key = createHash('sha256').update(material.fingerprint).update(ca).digest('hex');
    if (!this.#agent || key !== this.#agentKey) {
      this.#agent?.destroy();
      this.#agent = new https.Agent({ keepAlive: true, maxSockets: 1, cert: material.cert, key: material.key, ca, minVersion: 'TLSv1.2' });
      this.#agentKey = key;
    }
    return this.#agent;
  }

  #request(agent: https.Agent, body: string, endpoint = this.#endpoint): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const req = https.request(endpoint, {
        method: 'POST',
        agent,
        signal: this.#abort.signal,
        timeout: REQUEST_TIMEOUT_MS,
        headers: {
          'content-type': 'application/json',
          'content-length': Buffer.byteLength(body),
          'user-agent': `underpass-worker/${VERSION}`,
        },
      }, (res) => void readAnswer(res).then(resolve, reject));
      req.on('timeout', () => req.destroy(new UnderpassError('ETIMEDOUT', `no answer within ${REQUEST_TIMEOUT_MS} ms`)));
      req.on('error', (err) => {
        if (req.reusedSocket) Object.assign(err, { reusedSocket: true });
        reject(describeRequestError(err));
      });
      req.end(body);
    });
  }
}

async function readCa(file: string): Promise<Buffer> {
  try {
    return await readFile(file);
  } catch (err) {
    throw new UnderpassError('ERR_OPERATOR_CA', `cannot read operator.ca (${file}): ${errorMessage(err)}`, { cause: err });
  }
}

async function readAnswer(res: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of res as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_ANSWER_BYTES) {
      res.destroy();
      throw new UnderpassError('ERR_OPERATOR_ANSWER', `the operator's answer is larger than ${MAX_ANSWER_BYTES} bytes`);
    }
    chunks.push(chunk);
  }
  const text = Buffer.concat(chunks).toString('utf8');
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  if (res.statusCode === 200) {
    if (json === undefined) throw new UnderpassError('ERR_OPERATOR_ANSWER', 'the operator answered 200 with a body that is not JSON');
    return json;
  }
  const refusal = json as { error?: unknown; reason?: unknown } | undefined;
  const reason = typeof refusal?.reason === 'string' ? refusal.reason : `HTTP_${res.statusCode}`;
  const message = typeof refusal?.error === 'string' ? refusal.error : text.trim().slice(0, 200);
  throw new UnderpassError(reason, `the operator refused (HTTP ${res.statusCode} ${reason}): ${message}`);
}

function parseEnvelope(answer: unknown) {
  const result = answerEnvelopeSchema.safeParse(answer);
  if (result.success) return result.data;
  throw invalidAnswer(result.error);
}

function invalidAnswer(error: { issues: ReadonlyArray<{ path: PropertyKey[]; message: string }> }, prefix: PropertyKey[] = []): UnderpassError {
  const issue = error.issues[0];
  const field = formatPath([...prefix, ...(issue?.path ?? [])]) || '(body)';
  return new UnderpassError('ERR_OPERATOR_ANSWER', `the operator's answer is invalid at ${field}: ${issue?.message ?? 'unknown problem'}`);
}

function describeRequestError(err: Error): Error {
  const code = errorCode(err);
  switch (code) {
    case 'ERR_TLS_CERT_ALTNAME_INVALID':
      return new UnderpassError(code, `the operator's certificate does not name this host: ${err.message}`, { cause: err });
    case 'UNABLE_TO_VERIFY_LEAF_SIGNATURE':
    case 'SELF_SIGNED_CERT_IN_CHAIN':
    case 'DEPTH_ZERO_SELF_SIGNED_CERT':
      return new UnderpassError(code, `the operator's certificate is not issued by the CA in operator.ca (${code})`, { cause: err });
    case 'CERT_HAS_EXPIRED':
      return new UnderpassError(code, "the operator's certificate has expired", { cause: err });
    default:
      return err;
  }
}
