import { describe, expect, it } from '@jest/globals';
import { Histogram, Registry } from 'prom-client';
import { DialHistogram, TunnelMetrics } from './metrics.js';

/** The value of one series in the exposition text (the registry adds the role label last), or undefined when it is absent. */
function series(text: string, name: string, labels: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${name}{${labels},role=`));
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(' ') + 1));
}

describe('TunnelMetrics stream counts (plain numbers, handed to prom-client when scraped)', () => {
  it('reports open streams, finished streams by outcome and reason, and bytes; counters keep their totals across scrapes', async () => {
    const m = new TunnelMetrics('worker', { defaultMetrics: false });
    m.streamOpened('db');
    m.streamOpened('db');
    m.streamOpened('web');
    m.streamClosed('db');
    m.streamFinished('db', 'closed', '', 100, 2000);
    m.streamFinished('(unknown)', 'refused', 'UNKNOWN_MAPPING', 0, 0);
    m.streamFinished('(unknown)', 'refused', 'UNKNOWN_MAPPING', 0, 0);
    m.streamFinished('web', 'failed', 'DIAL_FAILED', 0, 0);

    let text = await m.registry.metrics();
    expect(series(text, 'underpass_streams_open', 'mapping="db"')).toBe(1);
    expect(series(text, 'underpass_streams_open', 'mapping="web"')).toBe(1);
    expect(series(text, 'underpass_streams_total', 'mapping="db",outcome="closed",reason=""')).toBe(1);
    expect(series(text, 'underpass_streams_total', 'mapping="(unknown)",outcome="refused",reason="UNKNOWN_MAPPING"')).toBe(2);
    expect(series(text, 'underpass_streams_total', 'mapping="web",outcome="failed",reason="DIAL_FAILED"')).toBe(1);
    expect(series(text, 'underpass_stream_bytes_total', 'mapping="db",direction="in"')).toBe(100);
    expect(series(text, 'underpass_stream_bytes_total', 'mapping="db",direction="out"')).toBe(2000);
    // No bytes for a mapping that carried none: no series.
    expect(series(text, 'underpass_stream_bytes_total', 'mapping="web",direction="in"')).toBeUndefined();

    // A second scrape with nothing new: the same totals (nothing counted twice).
    text = await m.registry.metrics();
    expect(series(text, 'underpass_streams_total', 'mapping="db",outcome="closed",reason=""')).toBe(1);
    expect(series(text, 'underpass_stream_bytes_total', 'mapping="db",direction="out"')).toBe(2000);
    expect(series(text, 'underpass_streams_total', 'mapping="(unknown)",outcome="refused",reason="UNKNOWN_MAPPING"')).toBe(2);

    // More after it adds up; a gauge that went back to 0 reads 0.
    m.streamClosed('db');
    m.streamFinished('db', 'closed', '', 1, 1);
    m.streamFinished('(unknown)', 'refused', 'UNKNOWN_MAPPING', 0, 0);
    text = await m.registry.metrics();
    expect(series(text, 'underpass_streams_open', 'mapping="db"')).toBe(0);
    expect(series(text, 'underpass_streams_total', 'mapping="db",outcome="closed",reason=""')).toBe(2);
    expect(series(text, 'underpass_stream_bytes_total', 'mapping="db",direction="in"')).toBe(101);
    expect(series(text, 'underpass_streams_total', 'mapping="(unknown)",outcome="refused",reason="UNKNOWN_MAPPING"')).toBe(3);
  });

  it('reads the same through each metric\'s get() as through the registry', async () => {
    const m = new TunnelMetrics('connector', { defaultMetrics: false });
    m.streamFinished('db', 'closed', '', 5, 7);
    const total = await m.streamsTotal.get();
    expect(total.values).toEqual([expect.objectContaining({ labels: { mapping: 'db', outcome: 'closed', reason: '' }, value: 1 })]);
    const bytes = await m.bytes.get();
    expect(bytes.values.map((v) => [v.labels.direction, v.value])).toEqual([['in', 5], ['out', 7]]);
  });
});

describe('DialHistogram (plain numbers, registered as a prom-client metric)', () => {
  it('exposes exactly what prom-client\'s Histogram exposes for the same observations', async () => {
    const buckets = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
    const ours = new Registry();
    const theirs = new Registry();
    for (const r of [ours, theirs]) r.setDefaultLabels({ role: 'connector' });
    const dial = new DialHistogram({ name: 'underpass_dial_duration_seconds', help: 'Time to connect to a mapping target, by mapping and result.', buckets, registers: [ours] });
    const reference = new Histogram({ name: 'underpass_dial_duration_seconds', help: 'Time to connect to a mapping target, by mapping and result.', labelNames: ['mapping', 'result'], buckets, registers: [theirs] });
    const observations: Array<[string, string, number]> = [
      ['db', 'ok', 0.0003], ['db', 'ok', 0.0005], ['db', 'ok', 0.00051], ['db', 'ok', 0.02], ['db', 'error', 10],
      ['db', 'error', 11.5], ['web', 'ok', 0.25], ['web', 'ok', 0], ['web "x"', 'ok', 2.5],
    ];
    for (const [mapping, result, v] of observations) {
      dial.observe(mapping, result, v);
      reference.observe({ mapping, result }, v);
    }
    const text = await ours.metrics();
    expect(text).toBe(await theirs.metrics());
    expect(text).toContain('underpass_dial_duration_seconds_bucket{le="+Inf",role="connector",mapping="db",result="error"} 2');
    expect(text).toContain('underpass_dial_duration_seconds_bucket{le="10",role="connector",mapping="db",result="error"} 1');
    expect(text).toContain('underpass_dial_duration_seconds_bucket{le="0.0005",role="connector",mapping="db",result="ok"} 2');
    expect(text).toContain('underpass_dial_duration_seconds_count{role="connector",mapping="web",result="ok"} 2');
    // get() as prom-client's: each value carries its series' labels.
    expect((await dial.get()).values.find((v) => v.metricName.endsWith('_count'))).toEqual(expect.objectContaining({ labels: { mapping: 'db', result: 'ok' }, value: 4 }));
  });

  it('ignores a value that is not a finite number instead of corrupting the sum', async () => {
    const r = new Registry();
    const dial = new DialHistogram({ name: 'h', help: 'h', buckets: [1], registers: [r] });
    dial.observe('db', 'ok', Number.NaN);
    dial.observe('db', 'ok', 0.5);
    expect(await r.metrics()).toContain('h_sum{mapping="db",result="ok"} 0.5');
  });
});
