import { describe, expect, jest, test } from '@jest/globals';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { AUDIT_FLUSH_CHARS, AUDIT_FLUSH_MS, AuditLog, type StreamAuditEvent } from './audit.js';

class Capture extends Writable {
  writes: string[] = [];
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: () => void): void {
    this.writes.push(chunk.toString());
    cb();
  }
}

const event = (i: number): StreamAuditEvent => ({
  event: 'stream', connection: 'ns/tc', connector: 'dc1', worker: 'w-0', mapping: 'db', client: `127.0.0.1:${1000 + i}`,
  outcome: 'closed', bytesIn: i, bytesOut: 0, durationMs: 1,
});

describe('AuditLog', () => {
  test('lines of the same few milliseconds leave in one write, in order, one JSON object per line', async () => {
    // Fake timers: with real ones, a loaded machine that stalls this process for AUDIT_FLUSH_MS
    // between two writes flushes in between (the test failed so, without a bug).
    jest.useFakeTimers();
    try {
      const out = new Capture();
      let now = Date.parse('2026-12-01T00:00:00Z');
      const audit = new AuditLog(out, () => new Date(now++));
      for (let i = 0; i < 3; i++) audit.write(event(i));
      jest.advanceTimersByTime(AUDIT_FLUSH_MS - 1);
      for (let i = 3; i < 5; i++) audit.write(event(i)); // later, before AUDIT_FLUSH_MS
      expect(out.writes).toHaveLength(0);
      jest.advanceTimersByTime(1);
      expect(out.writes).toHaveLength(1);
      const lines = out.writes[0]!.trimEnd().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
      expect(lines.map((l) => l.bytesIn)).toEqual([0, 1, 2, 3, 4]);
      expect(lines.map((l) => l.time)).toEqual([0, 1, 2, 3, 4].map((i) => `2026-12-01T00:00:00.00${i}Z`));
      expect(lines[0]).toMatchObject({ audit: true, event: 'stream', mapping: 'db' });
      audit.write(event(5));
      jest.advanceTimersByTime(AUDIT_FLUSH_MS - 1);
      expect(out.writes).toHaveLength(1);
      jest.advanceTimersByTime(1);
      expect(out.writes).toHaveLength(2);
      await audit.close();
    } finally {
      jest.useRealTimers();
    }
  });

  test('lines sharing a millisecond share its time; a full batch leaves at once', () => {
    const out = new Capture();
    const audit = new AuditLog(out, () => new Date('2026-12-01T00:00:00.123Z'));
    const big = { ...event(0), message: 'x'.repeat(1000) };
    let written = 0;
    while (out.writes.length === 0) {
      audit.write(big);
      written++;
    }
    const lines = out.writes[0]!.trimEnd().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines).toHaveLength(written);
    expect(out.writes[0]!.length).toBeGreaterThanOrEqual(AUDIT_FLUSH_CHARS);
    expect(out.writes[0]!.length).toBeLessThan(AUDIT_FLUSH_CHARS + 1200);
    expect(new Set(lines.map((l) => l.time))).toEqual(new Set(['2026-12-01T00:00:00.123Z']));
    void audit.close();
  });

  test('flush() and close() write what is pending at once', async () => {
    const out = new Capture();
    const audit = new AuditLog(out);
    audit.write(event(1));
    audit.flush();
    expect(out.writes).toHaveLength(1);
    audit.write(event(2));
    await audit.close();
    expect(out.writes.join('').trimEnd().split('\n')).toHaveLength(2);
  });

  test('lines pending when the process exits are not lost (stdout and file)', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'audit-exit-'));
    const file = path.join(dir, 'audit.log');
    const mod = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'dist', 'tunnel', 'audit.js');
    const script = `
      const { AuditLog } = await import(${JSON.stringify(mod)});
      const toStdout = AuditLog.open(undefined);
      const toFile = AuditLog.open(${JSON.stringify(file)});
      await new Promise((r) => setTimeout(r, 100)); // the file is open
      for (let i = 0; i < 3; i++) { toStdout.write({ event: 'config-applied', connection: 'ns/tc', revision: i }); toFile.write({ event: 'config-applied', connection: 'ns/tc', revision: i }); }
      process.exit(0); // before the end of the turn
    `;
    try {
      const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' });
      expect(r.status).toBe(0);
      expect(r.stdout.trimEnd().split('\n').map((l) => (JSON.parse(l) as { revision: number }).revision)).toEqual([0, 1, 2]);
      expect(readFileSync(file, 'utf8').trimEnd().split('\n').map((l) => (JSON.parse(l) as { revision: number }).revision)).toEqual([0, 1, 2]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
