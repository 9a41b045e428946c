import { describe, expect, it } from '@jest/globals';
import { WorkQueue } from './queue.js';

describe('WorkQueue.stop', () => {
  it('resolves once the running key finishes, even with keys still pending (it hung before)', async () => {
    let release!: () => void;
    const started: string[] = [];
    const q = new WorkQueue({
      concurrency: 1,
      onError: () => undefined,
      process: (key) => {
        started.push(key);
        return new Promise((resolve) => { release = () => resolve(undefined); });
      },
    });
    q.start();
    q.add('a');
    q.add('b');
    await new Promise((r) => setTimeout(r, 10));
    expect(started).toEqual(['a']);
    const stopped = q.stop();
    release();
    await expect(Promise.race([stopped.then(() => 'stopped'), new Promise((r) => setTimeout(() => r('hung'), 1_000))])).resolves.toBe('stopped');
    expect(started).toEqual(['a']);
  });
});
