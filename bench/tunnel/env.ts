/** What the report says about the machine and the run. */
import { readFileSync } from 'node:fs';
import os from 'node:os';
import { commandExists, log, run } from './common.js';
import { forwarderNode, forwarderNodeVersion } from './underpass.js';

export interface Machine {
  date: string;
  cpu: string;
  cores: number;
  kernel: string;
  node: string;
  memory: string;
}

export function machine(): Machine {
  const model = /Model name:\s*(.+)/.exec(run('lscpu', []))?.[1]?.trim() ?? os.cpus()[0]?.model ?? 'unknown';
  return {
    date: new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
    cpu: model,
    cores: os.availableParallelism(),
    kernel: `${os.type()} ${os.release()}`,
    node: nodeVersions(),
    memory: `${(os.totalmem() / 2 ** 30).toFixed(1)} GiB`,
  };
}

/** The Node version of the forwarders, and of the benchmark itself when UNDERPASS_BENCH_NODE differs. */
function nodeVersions(): string {
  const v = forwarderNodeVersion();
  return forwarderNode() === process.execPath ? v : `${v} (forwarders, UNDERPASS_BENCH_NODE=${forwarderNode()}; benchmark clients and apps ${process.version})`;
}

export function loadAvg(): string {
  return os.loadavg().map((l) => l.toFixed(2)).join(', ');
}

export function openFileLimit(): number {
  const m = /Max open files\s+(\d+|unlimited)/.exec(readFileSync('/proc/self/limits', 'utf8'));
  return !m ? 1024 : m[1] === 'unlimited' ? Infinity : Number(m[1]);
}

/**
 * Raises this process's open-file limit (children inherit it): 10,000 idle
 * streams need about that many descriptors in each process on the path.
 */
export function raiseOpenFileLimit(want: number, need: number): number {
  if (openFileLimit() < want && commandExists('prlimit')) run('prlimit', ['--pid', String(process.pid), `--nofile=${want}:${want}`]);
  const now = openFileLimit();
  if (now < need) log(`open-file limit is ${now}, the idle-stream test needs about ${need}: raise \`ulimit -n\` (bench/bench.mk asks for 65535)`);
  return now;
}
