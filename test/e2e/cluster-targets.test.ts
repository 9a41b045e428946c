/**
 * The worker's second layer for Cluster-side targets (issue 15 finding 9): at
 * dial time, on the address it resolved, it refuses link-local and metadata
 * addresses, the API server's addresses (clusterTargets.refuse, written by the
 * operator) and, in a pod, its own loopback: a hand-made mapping that the
 * operator would have refused gets NOT_ALLOWED, and nothing is dialled. Real
 * worker and connector processes; the worker config is written by hand, as a
 * tenant would need the operator to write it.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import dns from 'node:dns/promises';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import YAML from 'yaml';
import { echoServer, exchange, freePort, makePki, removeDir, startConnector, startWorker, tcpProbe, tempDir, waitFor, type App, type ConnectorSetup, type WorkerSetup } from './harness.js';

/** An address no one answers on here, standing for the API server's ClusterIP. */
const API_SERVER = '10.96.0.1';

describe('the worker refuses Cluster-side targets it must never dial (real processes)', () => {
  let dir: string;
  let worker: WorkerSetup;
  let connector: ConnectorSetup;
  let app: App;
  let dialled = 0;
  const ports = { metadata: 0, apiServer: 0, byName: 0, metadataV6: 0 };

  beforeAll(async () => {
    dir = await tempDir();
    const pki = await makePki(dir);
    await pki.connector('dc1-a');
    // Where localhost leads on this machine (127.0.0.1 or ::1): the app listens there.
    app = await echoServer((await dns.lookup('localhost')).address);
    app.server.on('connection', () => dialled++);
    for (const k of Object.keys(ports) as Array<keyof typeof ports>) ports[k] = await freePort();
    const at = (port: number) => ({ port, address: '127.0.0.1' });
    worker = await startWorker(dir, {
      // What the operator writes for a pod: no loopback, and the API server's addresses.
      clusterTargets: { loopback: false, refuse: [API_SERVER] },
      mappings: [
        { name: 'metadata', target: { side: 'Cluster', host: '169.254.169.254', port: 80 }, listen: at(ports.metadata) },
        { name: 'metadata-v6', target: { side: 'Cluster', host: 'fd00:ec2::254', port: 80 }, listen: at(ports.metadataV6) },
        { name: 'api-server', target: { side: 'Cluster', host: API_SERVER, port: 443 }, listen: at(ports.apiServer) },
        // A name is checked on what it resolves to: localhost is the worker's own pod.
        { name: 'by-name', target: { side: 'Cluster', host: 'localhost', port: app.port }, listen: at(ports.byName) },
      ],
    });
    connector = await startConnector(dir, 'dc1-a', worker.url, { bind: Object.values(ports).map((p) => `127.0.0.1:${p}`) });
  }, 60_000);

  afterAll(async () => {
    await connector?.proc.stop();
    await worker?.proc.stop();
    await app?.close();
    await removeDir(dir);
  });

  it.each([
    ['the cloud metadata address', 'metadata', /^target 169\.254\.169\.254:80 is a link-local address \(cloud metadata answers at 169\.254\.169\.254\); workers never dial it/],
    ['the IPv6 metadata address', 'metadata-v6', /^target \[fd00:ec2::254\]:80 is a cloud metadata address; workers never dial it/],
    ['the API server\'s ClusterIP', 'api-server', /^target 10\.96\.0\.1:443 is an address of the Kubernetes API server/],
    ['a name that resolves to the worker\'s own loopback', 'by-name', /^target localhost:\d+ resolves to (127\.0\.0\.1|::1), which is the worker's own host/],
  ] as const)('%s: the client is reset, the stream refused NOT_ALLOWED, nothing dialled', async (_name, mapping, message) => {
    const port = ports[({ metadata: 'metadata', 'metadata-v6': 'metadataV6', 'api-server': 'apiServer', 'by-name': 'byName' } as const)[mapping]];
    await waitFor(`the connector's listener for ${mapping}`, async () => (await tcpProbe('127.0.0.1', port)) === 'connected');
    const r = await exchange(port, 'GET /latest/meta-data/ HTTP/1.0\r\n\r\n');
    expect(r.received.length).toBe(0);
    const line = await waitFor('worker audit line', () => worker.proc.streams({ mapping })[0]);
    expect(line).toMatchObject({ outcome: 'refused', reason: 'NOT_ALLOWED', bytesIn: 0, bytesOut: 0 });
    expect(String(line.message)).toMatch(message);
    expect(dialled).toBe(0);
  });

  it('dials the same name once the worker\'s config allows loopback (read again without a restart): the refusal was the guard\'s', async () => {
    const file = path.join(dir, 'worker.yaml');
    await writeFile(file, YAML.stringify({ ...worker.config, clusterTargets: { loopback: true, refuse: [API_SERVER] } }));
    await waitFor('the reloaded guard to let localhost through', async () => (await exchange(ports.byName, 'hello')).received.toString() === 'hello', 15_000);
    const api = await exchange(ports.apiServer, 'x');
    expect(api.received.length).toBe(0);
    expect(worker.proc.streams({ mapping: 'api-server', reason: 'NOT_ALLOWED' }).length).toBeGreaterThanOrEqual(2);
  });
});
