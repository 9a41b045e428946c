/**
 * The report body a worker POSTs to the operator (docs/operator-channel.md).
 * Two paths: the body parser as the server runs it (JSON.parse, then
 * `workerReportSchema` and `zodToConfigError` naming the field), for most
 * inputs; and, for a share of them, the real `ReportServer` over mutual TLS
 * with a worker certificate of the connection, bodies sent whole, chunked
 * (no content-length) or announced larger than the limit.
 *
 * Properties: the parser accepts a report or names a field, and never throws
 * anything else; the server answers 200 (a report), 400 INVALID_JSON or
 * INVALID_REPORT (with `field`) or 413 TOO_LARGE, and never 500 (a bug); its
 * answer agrees with the parser's verdict.
 */
import fc from 'fast-check';
import https from 'node:https';
import { zodToConfigError } from '../../../tunnel/config-load.js';
import { ConfigError } from '../../../tunnel/errors.js';
import { silentLogger } from '../../../tunnel/log.js';
import { createCA, issueWorkerCert, loadCA, type PemKeyPair } from '../../../tunnel/pki.js';
import { createSelfSignedCA, issueServingCert, loadSigningCA } from '../../../tunnel/pki-generic.js';
import { MAX_REPORT_BYTES, ReportServer, ReportStore, workerReportSchema } from '../../../operator/reports.js';
import { anyText, nameArb } from '../arbitraries.js';
import { edgeLengths, mutated, randomBytes } from '../bytes.js';
import { assert, assertEqual, attempt } from '../expect.js';
import { parsing, parsingAsync, type FuzzTarget } from '../harness.js';

type Verdict = { ok: true } | { ok: false; reason: 'INVALID_JSON' } | { ok: false; reason: 'INVALID_REPORT'; field: string };

/** What the server decides about a body (operator/reports.ts parseReport, which is not exported). */
export function parseReportBody(body: Buffer): Verdict {
  let raw: unknown;
  try {
    raw = JSON.parse(body.toString('utf8'));
  } catch {
    return { ok: false, reason: 'INVALID_JSON' };
  }
  const result = workerReportSchema.safeParse(raw, { reportInput: true });
  if (result.success) return { ok: true };
  let field = '';
  const err = attempt(() => {
    const e = zodToConfigError('report', result.error);
    field = e.field ?? '(body)';
    throw e;
  }, [ConfigError], ['ERR_CONFIG']);
  assert(err !== undefined, 'zodToConfigError returned');
  return { ok: false, reason: 'INVALID_REPORT', field };
}

const text = (max: number) => fc.oneof(anyText(20), fc.constantFrom('', 'x'.repeat(max), 'x'.repeat(max + 1)));
const reportArb = fc.record({
  instance: fc.oneof(fc.constantFrom('dc1-worker-0', 'a'.repeat(253), 'a'.repeat(254), '-a'), anyText(30)),
  version: text(64),
  ready: fc.oneof(fc.boolean(), fc.constant('true')),
  draining: fc.boolean(),
  connectors: fc.array(fc.record({
    name: nameArb, session: fc.oneof(fc.uuid(), text(64)), since: fc.oneof(fc.date({ noInvalidDate: true }).map((d) => d.toISOString()), text(64)),
    version: text(64), address: fc.oneof(fc.constant('10.0.0.7:51234'), text(300)),
    unavailableMappings: fc.array(fc.record({ name: nameArb, state: fc.constantFrom('Refused', 'Failed', 'Ready', ''), reason: text(128), message: text(1024) },
      { requiredKeys: ['name', 'state'] }), { maxLength: 3 }),
  }), { maxLength: 3 }),
  listenerFailures: fc.array(fc.record({ mapping: nameArb, message: text(1024) }), { maxLength: 3 }),
  extra: fc.jsonValue({ maxDepth: 2 }),
}, { requiredKeys: ['instance', 'version', 'ready', 'draining', 'connectors', 'listenerFailures'] });

const bodyArb: fc.Arbitrary<Buffer> = fc.oneof(
  { weight: 3, arbitrary: reportArb.map((r) => Buffer.from(JSON.stringify(r))) },
  { weight: 3, arbitrary: mutated(reportArb.map((r) => Buffer.from(JSON.stringify(r))), edgeLengths(MAX_REPORT_BYTES)) },
  { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 3 }).map((v) => Buffer.from(JSON.stringify(v) ?? 'null')) },
  { weight: 1, arbitrary: randomBytes(2048) },
);

type Sending = 'whole' | 'chunked' | 'oversized';

interface Server {
  server: ReportServer;
  store: ReportStore;
  port: number;
  worker: PemKeyPair;
  ca: string;
  agent: https.Agent;
}

let live: Server | undefined;

async function startServer(): Promise<Server> {
  const op = await createSelfSignedCA({ commonName: 'underpass-operator-ca', validityDays: 1 });
  const serving = await issueServingCert(await loadSigningCA(op.certPem, op.keyPem), { commonName: 'operator', sans: ['127.0.0.1'], validityDays: 1 });
  const connection = { namespace: 'fuzz', name: 'dc1' };
  const ca = await createCA({ connection });
  const worker = await issueWorkerCert(await loadCA(ca.certPem, ca.keyPem), { sans: ['localhost'] });
  const store = new ReportStore();
  const server = new ReportServer({
    tls: { cert: serving.certPem, key: serving.keyPem },
    logger: silentLogger(),
    store,
    caFor: (c) => (c.namespace === 'fuzz' && c.name === 'dc1' ? ca.certPem : undefined),
    desiredFor: () => ({ mappings: [] }),
  });
  const port = (await server.listen({ host: '127.0.0.1', port: 0 })).port;
  const agent = new https.Agent({ keepAlive: true, maxSockets: 1, ca: op.certPem, cert: worker.certPem, key: worker.keyPem });
  return { server, store, port, worker, ca: op.certPem, agent };
}

function post(s: Server, body: Buffer, sending: Sending): Promise<{ status: number; reason: string | undefined; field: unknown }> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string | number> = { 'content-type': 'application/json' };
    if (sending === 'whole') headers['content-length'] = body.length;
    if (sending === 'oversized') headers['content-length'] = MAX_REPORT_BYTES + 1;
    const req = https.request({ host: '127.0.0.1', port: s.port, path: '/v1/connections/fuzz/dc1/report', method: 'POST', agent: s.agent, headers }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (text += d));
      res.on('end', () => {
        let field: unknown;
        try {
          field = (JSON.parse(text) as { field?: unknown }).field;
        } catch {
          field = undefined;
        }
        const reason = res.headers['x-underpass-reason'];
        resolve({ status: res.statusCode ?? 0, reason: typeof reason === 'string' ? reason : undefined, field });
      });
    });
    req.on('error', reject);
    if (sending === 'chunked') {
      req.write(body.subarray(0, body.length >> 1));
      req.end(body.subarray(body.length >> 1));
    } else if (sending === 'oversized') {
      req.end();
    } else {
      req.end(body);
    }
  });
}

export const operatorReportTarget: FuzzTarget = {
  name: 'operator-report',
  parser: 'operator/reports.ts report body (JSON + workerReportSchema) and ReportServer over mTLS',
  maxHeapGrowth: 32 << 20,
  async setup() {
    live = await startServer();
  },
  async teardown() {
    live?.agent.destroy();
    await live?.server.close();
    live = undefined;
  },
  properties: [
    {
      name: 'body parser',
      weight: 19,
      arbitrary: bodyArb,
      check(body: Buffer) {
        parsing(() => parseReportBody(body));
      },
    },
    {
      name: 'report server',
      weight: 1,
      async: true,
      arbitrary: fc.tuple(bodyArb, fc.constantFrom<Sending>('whole', 'whole', 'chunked', 'oversized')),
      async check([body, sending]: [Buffer, Sending]) {
        const s = live!;
        const answer = await parsingAsync(() => post(s, body, sending));
        s.store.forget('fuzz/dc1'); // the store is not under test here; keep it from growing over the run
        assert(answer.status !== 500, 'the server answered 500 INTERNAL: a bug');
        if (sending === 'oversized') return assertEqual([answer.status, answer.reason], [413, 'TOO_LARGE'], 'a declared length over the limit');
        const verdict = parseReportBody(body);
        if (verdict.ok) assertEqual([answer.status, answer.reason], [200, undefined], 'a valid report');
        else if (verdict.reason === 'INVALID_JSON') assertEqual([answer.status, answer.reason], [400, 'INVALID_JSON'], 'a body that is not JSON');
        else assertEqual([answer.status, answer.reason, answer.field], [400, 'INVALID_REPORT', verdict.field], 'a body that is not a report');
      },
    },
  ],
};
