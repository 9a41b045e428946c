/**
 * The operator channel (docs/operator-channel.md, contract in
 * tunnel/operator-channel.ts), both directions. The report body a worker
 * POSTs: as the server parses it (JSON.parse, `workerReportSchema`, the field
 * of the first issue), for most inputs; and, for a share of them, through the
 * real `ReportServer` over mutual TLS with a worker certificate of the
 * connection, sent whole, chunked (no content-length) or announced larger
 * than the limit. The answer a worker reads: `answerEnvelopeSchema` and
 * `answerMappingsSchema`.
 *
 * Properties: the parsers accept or name a field, and never throw; the server
 * answers 200 with its verdict on the report (accepted, or INVALID_JSON /
 * INVALID_REPORT naming the same field as the parser) or 413 TOO_LARGE, and
 * never 500 (a bug).
 */
import fc from 'fast-check';
import https from 'node:https';
import { ANY_CONNECTOR } from '../../../tunnel/admission.js';
import { formatPath } from '../../../tunnel/config-load.js';
import { silentLogger } from '../../../tunnel/log.js';
import { answerEnvelopeSchema, answerMappingsSchema, MAX_REPORT_BYTES, workerReportSchema } from '../../../tunnel/operator-channel.js';
import { createCA, issueWorkerCert, loadCA, type PemKeyPair } from '../../../tunnel/pki.js';
import { createSelfSignedCA, issueServingCert, loadSigningCA } from '../../../tunnel/pki-generic.js';
import { ReportServer } from '../../../operator/report-server.js';
import { ReportStore } from '../../../operator/report-store.js';
import { anyText, mappingArb, nameArb } from '../arbitraries.js';
import { edgeLengths, mutated, randomBytes } from '../bytes.js';
import { assert, assertEqual } from '../expect.js';
import { parsing, parsingAsync, type FuzzTarget } from '../harness.js';

type Verdict = { accepted: true } | { accepted: false; reason: 'INVALID_JSON' } | { accepted: false; reason: 'INVALID_REPORT'; field: string };

/** What the server decides about a body (operator/report-server.ts parseReport, which is not exported). */
export function parseReportBody(body: Buffer): Verdict {
  let raw: unknown;
  try {
    raw = JSON.parse(body.toString('utf8'));
  } catch {
    return { accepted: false, reason: 'INVALID_JSON' };
  }
  const result = workerReportSchema.safeParse(raw);
  if (result.success) return { accepted: true };
  return { accepted: false, reason: 'INVALID_REPORT', field: formatPath(result.error.issues[0]?.path ?? []) || '(body)' };
}

const text = (max: number) => fc.oneof(anyText(20), fc.constantFrom('', 'x'.repeat(max), 'x'.repeat(max + 1)));
const reportArb = fc.record({
  instance: fc.oneof(fc.constantFrom('dc1-worker-0', 'a'.repeat(253), 'a'.repeat(254), '-a'), anyText(30)),
  version: text(64),
  ready: fc.oneof(fc.boolean(), fc.constant('true')),
  dropped: fc.record({ sessions: fc.oneof(fc.nat(), fc.constantFrom(-1, 1e9, 1e9 + 1, 0.5)), messages: fc.nat() }, { requiredKeys: [] }),
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
  // The CA outlives the 1-day serving certificate made a moment later (a second boundary between the two failed once).
  const op = await createSelfSignedCA({ commonName: 'underpass-operator-ca', validityDays: 10 });
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
    desiredFor: () => ({ mappings: [], admission: ANY_CONNECTOR }),
  });
  const port = (await server.listen({ host: '127.0.0.1', port: 0 })).port;
  const agent = new https.Agent({ keepAlive: true, maxSockets: 1, ca: op.certPem, cert: worker.certPem, key: worker.keyPem });
  return { server, store, port, worker, ca: op.certPem, agent };
}

interface Answer {
  status: number;
  reason: string | undefined;
  report: unknown;
}

function post(s: Server, body: Buffer, sending: Sending): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string | number> = { 'content-type': 'application/json' };
    if (sending === 'whole') headers['content-length'] = body.length;
    if (sending === 'oversized') headers['content-length'] = MAX_REPORT_BYTES + 1;
    const req = https.request({ host: '127.0.0.1', port: s.port, path: '/v1/connections/fuzz/dc1/report', method: 'POST', agent: s.agent, headers }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (text += d));
      res.on('end', () => {
        let report: unknown;
        try {
          report = (JSON.parse(text) as { report?: unknown }).report;
        } catch {
          report = undefined;
        }
        const reason = res.headers['x-underpass-reason'];
        resolve({ status: res.statusCode ?? 0, reason: typeof reason === 'string' ? reason : undefined, report });
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
  parser: 'tunnel/operator-channel.ts report and answer schemas; operator/report-server.ts ReportServer over mTLS',
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
        assertEqual(answer.status, 200, 'an authenticated worker always gets an answer');
        const verdict = parseReportBody(body);
        const got = answer.report as { accepted?: unknown; reason?: unknown; field?: unknown } | undefined;
        assertEqual({ accepted: got?.accepted, reason: got?.reason, field: got?.field },
          { accepted: verdict.accepted, reason: 'reason' in verdict ? verdict.reason : undefined, field: 'field' in verdict ? verdict.field : undefined },
          'the verdict on the report');
      },
    },
    {
      name: 'answer parser',
      weight: 5,
      // The worker's side: what an operator (or whoever answers on its port) sends back.
      arbitrary: fc.oneof(
        fc.record({
          mappings: fc.array(mappingArb, { maxLength: 4 }),
          admission: fc.oneof(fc.record({ connectors: fc.array(nameArb, { maxLength: 4 }) }, { requiredKeys: [] }), fc.jsonValue({ maxDepth: 1 })),
          report: fc.record({ accepted: fc.boolean(), reason: anyText(70), field: anyText(260), message: anyText(1100) }, { requiredKeys: ['accepted'] }),
        }, { requiredKeys: ['mappings'] }),
        fc.jsonValue({ maxDepth: 3 }),
      ),
      check(answer: unknown) {
        parsing(() => {
          const plain = JSON.parse(JSON.stringify(answer) ?? 'null') as unknown;
          const envelope = answerEnvelopeSchema.safeParse(plain);
          if (envelope.success) answerMappingsSchema.safeParse(envelope.data.mappings);
          else formatPath(envelope.error.issues[0]?.path ?? []);
        });
      },
    },
  ],
};
