/**
 * Every error Underpass raises on purpose carries a stable `code` (like ws's
 * `WS_ERR_*`), so callers, logs, audit lines and tests can match on it instead
 * of on message text. Wrap lower-level errors with `{ cause }`.
 */
export class UnderpassError extends Error {
  readonly code: string;

  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}

/**
 * A configuration file (or flag set) is invalid. `file` and `field` name where;
 * the message says what is wrong. The CLI exits 2 on this error.
 */
export class ConfigError extends UnderpassError {
  readonly file: string | undefined;
  readonly field: string | undefined;
  readonly problem: string;

  constructor(problem: string, where: { file?: string; field?: string } = {}, options?: { cause?: unknown }) {
    const prefix = [where.file, where.field ? `field "${where.field}"` : undefined].filter(Boolean).join(': ');
    super('ERR_CONFIG', prefix ? `${prefix}: ${problem}` : problem, options);
    this.file = where.file;
    this.field = where.field;
    this.problem = problem;
  }
}

/** The protocol peer sent something the protocol does not allow. */
export class ProtocolError extends UnderpassError {}

/** A listener for emitters whose errors are decided elsewhere (a relay, an open handshake). */
export function ignoreError(): void {}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

export function errorCode(err: unknown): string | undefined {
  if (err && typeof err === 'object' && 'code' in err && typeof (err as { code: unknown }).code === 'string') {
    return (err as { code: string }).code;
  }
  return undefined;
}
