/**
 * `underpass probe URL`: GET an admin endpoint (/readyz, /healthz) and exit 0
 * on a 2xx answer, 1 otherwise, printing the status and body. The image has
 * no shell or curl; the charts' `helm test` pods run this with the same image.
 */
import type { Command } from 'commander';
import { parseDuration } from '../tunnel/duration.js';
import { ConfigError, errorMessage, UnderpassError } from '../tunnel/errors.js';

interface ProbeFlags {
  timeout: string;
  wait: string;
}

export interface ProbeResult {
  ok: boolean;
  line: string;
}

/** One GET; never throws (a refused connection is a failed probe). */
export async function probeOnce(url: URL, timeoutMs: number): Promise<ProbeResult> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs), redirect: 'manual' });
    const body = (await res.text()).trim().slice(0, 2000);
    return { ok: res.status >= 200 && res.status < 300, line: `GET ${url.href}: ${res.status}${body ? ` ${body}` : ''}` };
  } catch (err) {
    const cause = (err as { cause?: unknown }).cause;
    return { ok: false, line: `GET ${url.href}: ${errorMessage(cause ?? err)}` };
  }
}

export function registerProbeCommand(program: Command): void {
  program
    .command('probe')
    .description('GET an http:// URL (e.g. an admin /readyz) and exit 0 on a 2xx answer, 1 otherwise')
    .argument('<url>', 'http:// or https:// URL, e.g. http://underpass-operator-metrics.underpass-system.svc:8080/readyz')
    .option('--timeout <duration>', 'timeout of each request', '5s')
    .option('--wait <duration>', 'keep trying (once a second) for this long before giving up', '0')
    .addHelpText('after', `
Example (what the charts' helm test pods run):
  $ underpass probe http://underpass-operator-metrics.underpass-system.svc:8080/readyz --wait 60s`)
    .action(async (raw: string, flags: ProbeFlags) => {
      let url: URL;
      try {
        url = new URL(raw);
      } catch {
        throw new ConfigError(`"${raw}" is not a URL`, { field: 'url' });
      }
      if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new ConfigError(`"${raw}" must be an http:// or https:// URL`, { field: 'url' });
      const timeoutMs = parseDuration(flags.timeout, '--timeout');
      if (timeoutMs === 0) throw new ConfigError('must be more than 0', { field: '--timeout' });
      const deadline = Date.now() + parseDuration(flags.wait, '--wait');
      for (;;) {
        const r = await probeOnce(url, timeoutMs);
        if (r.ok) return void process.stdout.write(`${r.line}\n`);
        if (Date.now() >= deadline) throw new UnderpassError('ERR_PROBE_FAILED', r.line);
        await new Promise((resolve) => setTimeout(resolve, 1000));
      }
    });
}
