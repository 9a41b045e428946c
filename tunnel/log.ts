import { pino, type Logger, type DestinationStream } from 'pino';

export type { Logger };

export interface LogOptions {
  level?: string;
  /** Where JSON lines go; default stderr (stdout is kept for audit events). */
  destination?: DestinationStream;
}

/**
 * Structured JSON logs (pino). Secrets never reach a log: keys, tokens and
 * private material are redacted by path as a second line of defence.
 */
export function createLogger(name: string, options: LogOptions = {}): Logger {
  return pino(
    {
      name,
      level: options.level ?? 'info',
      base: { component: name },
      timestamp: pino.stdTimeFunctions.isoTime,
      redact: { paths: ['*.key', '*.privateKey', '*.token', '*.password', 'key', 'token'], censor: 'MASKED' },
      formatters: { level: (label) => ({ level: label }) },
    },
    options.destination ?? pino.destination({ dest: 2, sync: true }),
  );
}

/** A logger that drops everything (unit tests). */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
