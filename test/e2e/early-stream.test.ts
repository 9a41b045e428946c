/**
 * A worker may open a stream on a connector's session as soon as it has sent its welcome: it
 * counts the session ready then (worker/connector-session.ts). A connector busy enough to read the
 * welcome and that stream in one go must still serve it. It once did not: the stream arrived before
 * the mesh listened for streams on the new session and was dropped without an answer, so the
 * worker waited for the open response until its timeout (15 s) and the client gave up first
 * (test/cluster-real/ha.test.ts saw it once in about two runs, during connector rollouts and kills:
 * "no answer within 5000 ms (round trip 1)").
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { once } from 'node:events';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import type { Duplex } from 'node:stream';
import type { Session } from '../../tunnel/mux/session.js';
import type { OpenResponse } from '../../tunnel/open.js';
import { askFor, mappingOf, startFakeWorker, type FakeWorker } from './fake-worker.js';
import { makePki, removeDir, startConnector, tcpServer, tempDir, type App, type ConnectorSetup } from './harness.js';

describe('a stream the worker opens in the same read as its welcome', () => {
  let dir: string;
  let echo: App;
  let worker: FakeWorker | undefined;
  let connector: ConnectorSetup | undefined;

  beforeAll(async () => {
    dir = await tempDir('underpass-early-stream-');
    const pki = await makePki(dir);
    await pki.connector('dc1-a');
    echo = await tcpServer((s) => {
      s.on('error', () => undefined);
      s.pipe(s);
    });
  }, 30_000);

  afterAll(async () => {
    await connector?.proc.stop();
    await worker?.close();
    await echo?.close();
    await removeDir(dir);
  });

  it('is served: the connector answers the open and relays, as for any later stream', async () => {
    const read = (f: string) => readFile(path.join(dir, f));
    let early: Promise<{ stream: Duplex; response: OpenResponse }> | undefined;
    worker = await startFakeWorker({
      cert: await read('worker.crt'), key: await read('worker.key'), ca: await read('ca.crt'),
      mappings: [mappingOf('echo', 'Connector', '127.0.0.1', echo.port)],
      onWelcome: (session: Session) => {
        early = askFor(session, 'echo');
      },
    });
    connector = await startConnector(dir, 'dc1-a', worker.url, { allow: [`127.0.0.1:${echo.port}`] });
    await worker.attached;
    const { stream, response } = await early!;
    expect(response).toEqual({ ok: true });
    const parts: Buffer[] = [];
    stream.on('data', (d: Buffer) => parts.push(d));
    stream.resume();
    stream.end('opened with the welcome');
    await once(stream, 'end');
    expect(Buffer.concat(parts).toString()).toBe('opened with the welcome');
  }, 30_000);
});
