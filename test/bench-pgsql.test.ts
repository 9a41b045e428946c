/**
 * The pgbench row's parser (bench/tunnel/pgsql.ts) on pgbench's own summary: a row must never
 * report a number pgbench did not print, nor a run where transactions failed.
 */
import { describe, expect, it } from '@jest/globals';
import { parsePgBench } from '../bench/tunnel/pgsql.js';

// pgbench 15.18 (Debian), `-S -n -c 2 -j 1 -T 1`, verbatim.
const PG15 = `pgbench (15.18 (Debian 15.18-0+deb12u1))
transaction type: <builtin: select only>
scaling factor: 1
query mode: simple
number of clients: 2
number of threads: 1
maximum number of tries: 1
duration: 1 s
number of transactions actually processed: 20772
number of failed transactions: 0 (0.000%)
latency average = 0.095 ms
initial connection time = 11.447 ms
tps = 20960.518907 (without initial connection time)
`;

describe('parsePgBench', () => {
  it('reads tps, transactions and latency from pgbench 15', () => {
    expect(parsePgBench(PG15)).toEqual({ perSecond: 20960.518907, transactions: 20772, latencyMs: 0.095 });
  });

  it('reads the "excluding connections establishing" line of pgbench 13 and older', () => {
    const old = PG15.replace('tps = 20960.518907 (without initial connection time)', 'tps = 20960.518907 (excluding connections establishing)');
    expect(parsePgBench(old)).toMatchObject({ perSecond: 20960.518907 });
  });

  it('refuses a run with failed transactions', () => {
    expect(parsePgBench(PG15.replace('failed transactions: 0 (0.000%)', 'failed transactions: 3 (0.014%)'))).toBe('3 transactions failed');
  });

  it('refuses output without a summary, quoting its end', () => {
    const r = parsePgBench('pgbench: error: connection to server at "127.0.0.1", port 1 failed: Connection refused\n');
    expect(typeof r).toBe('string');
    expect(r).toContain('Connection refused');
  });

  it('refuses a zero rate', () => {
    expect(parsePgBench(PG15.replace('tps = 20960.518907', 'tps = 0.000000'))).toContain('no transactions per second');
  });
});
