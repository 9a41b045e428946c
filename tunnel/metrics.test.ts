import { describe, expect, it } from '@jest/globals';
import { TunnelMetrics } from './metrics.js';

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
