/** The orchestrator's handle on benchmark child processes (bench/lib/peer.ts) and one scenario run. */
import { fork, type ChildProcess } from 'node:child_process';
import type { ContenderName } from './contender.js';
import type { PeerReply, PeerRequest } from './peer.js';
import type { Result, Scenario, Sizes } from './workloads.js';

const PEER_SCRIPT = new URL('./peer.js', import.meta.url);

interface Pending {
  onPort?: (port: number) => void;
  resolve: (result: Result) => void;
  reject: (err: Error) => void;
}

export class Peer {
  readonly #child: ChildProcess;
  readonly #pending = new Map<number, Pending>();
  readonly ready: Promise<void>;
  #nextId = 1;

  constructor(readonly contender: ContenderName) {
    this.#child = fork(PEER_SCRIPT, [contender], { execArgv: ['--expose-gc'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    this.ready = new Promise((resolve, reject) => {
      this.#child.on('message', (reply: PeerReply) => {
        if (reply.kind === 'ready') return resolve();
        const pending = this.#pending.get(reply.id);
        if (!pending) return;
        if (reply.kind === 'port') return pending.onPort?.(reply.port);
        this.#pending.delete(reply.id);
        if (reply.kind === 'result') pending.resolve(reply.result);
        else pending.reject(new Error(reply.message));
      });
      this.#child.on('exit', (code, signal) => {
        const err = new Error(`${contender} peer exited (${signal ?? code})`);
        reject(err);
        for (const p of this.#pending.values()) p.reject(err);
        this.#pending.clear();
      });
    });
  }

  #request(req: Omit<PeerRequest, 'id'>, onPort?: (port: number) => void): Promise<Result> {
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject, ...(onPort ? { onPort } : {}) });
      this.#child.send({ ...req, id });
    });
  }

  /** Listens for one connection; `port` when listening, `result` when the server part is done. */
  serve(scenario: Scenario, sizes: Sizes): { port: Promise<number>; result: Promise<Result> } {
    let onPort!: (port: number) => void;
    const port = new Promise<number>((resolve) => (onPort = resolve));
    const result = this.#request({ op: 'serve', scenario, sizes }, onPort);
    return { port: Promise.race([port, result.then(() => -1)]), result };
  }

  dial(scenario: Scenario, sizes: Sizes, port: number): Promise<Result> {
    return this.#request({ op: 'dial', scenario, sizes, port });
  }

  /** Starts the byte-by-byte proxy towards `port`; resolves with the proxy's port. */
  proxy(port: number): Promise<number> {
    return new Promise((resolve, reject) => {
      this.#request({ op: 'proxy', port }, resolve).catch(reject);
    });
  }

  stop(): void {
    if (this.#child.connected) this.#child.disconnect();
  }
}

/** The processes one contender uses for a scenario: accepting side, dialling side, and the proxy if needed. */
export class PeerSet {
  readonly server: Peer;
  readonly client: Peer;
  readonly proxy: Peer | undefined;

  constructor(contender: ContenderName, withProxy: boolean) {
    this.server = new Peer(contender);
    this.client = new Peer(contender);
    this.proxy = withProxy ? new Peer(contender) : undefined;
  }

  get ready(): Promise<unknown> {
    return Promise.all([this.server.ready, this.client.ready, this.proxy?.ready]);
  }

  /** One run over a fresh TCP connection; client and server results merged (server fields prefixed "server."). */
  async run(scenario: Scenario, sizes: Sizes): Promise<Result> {
    const served = this.server.serve(scenario, sizes);
    let port = await served.port;
    if (this.proxy) port = await this.proxy.proxy(port);
    const [client, server] = await Promise.allSettled([this.client.dial(scenario, sizes, port), served.result]);
    const merged: Result = {};
    if (client.status === 'fulfilled') Object.assign(merged, client.value);
    else merged.error = client.reason.message;
    if (server.status === 'fulfilled') for (const [k, v] of Object.entries(server.value)) merged[`server.${k}`] = v;
    else merged['server.error'] = server.reason.message;
    return merged;
  }

  stop(): void {
    this.server.stop();
    this.client.stop();
    this.proxy?.stop();
  }
}
