/**
 * TEST SUPPORT: runs the real CLI entry point in-process, capturing what it
 * writes to stdout and stderr (cli/*.test.ts, test/cluster/bundle.test.ts).
 */
import { main } from './main.js';

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** `underpass ...args`: the exit code and everything written to stdout and stderr meanwhile. */
export async function runCli(args: string[]): Promise<CliResult> {
  const captured = { stdout: '', stderr: '' };
  const original = { stdout: process.stdout.write, stderr: process.stderr.write };
  process.stdout.write = ((chunk: string | Uint8Array) => { captured.stdout += String(chunk); return true; }) as typeof process.stdout.write;
  process.stderr.write = ((chunk: string | Uint8Array) => { captured.stderr += String(chunk); return true; }) as typeof process.stderr.write;
  try {
    const code = await main(['node', 'underpass', ...args]);
    return { code, ...captured };
  } finally {
    process.stdout.write = original.stdout;
    process.stderr.write = original.stderr;
  }
}
