/**
 * A small TCP load balancer for the HA tests (docs/ha.md): what a Service and
 * kube-proxy, or a cloud load balancer, do in front of worker pods.
 *
 *  - `random`: a backend chosen at random per connection (kube-proxy's
 *    nftables/iptables modes, a cloud NLB hashing the 5-tuple);
 *  - `source-hash`: chosen by the client's address only (OpenShift
 *    passthrough Routes by default, sessionAffinity: ClientIP): every
 *    connection from one address lands on the same backend.
 *
 * With `readyUrl` on a backend it also plays the EndpointSlice: the URL
 * (an admin /readyz) is polled, and a backend gets new connections only while
 * it answered 2xx, as seen `propagationMs` late (kube-proxy reprogramming each
 * node after the endpoint changed). Backends without one always get
 * connections (publishNotReadyAddresses). Like kube-proxy it never retries: a
 * backend that refuses resets the client.
 */
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import net from 'node:net';

export interface Backend {
  name: string;
  host: string;
  port: number;
  /** Polled for readiness; absent: always eligible. */
  readyUrl?: string;
}

export interface BalancerOptions {
  mode: 'random' | 'source-hash';
  backends: Backend[];
  /** How often readiness is polled (default 100 ms). */
  pollMs?: number;
  /** How late a readiness change takes effect (default 0). */
  propagationMs?: number;
  host?: string;
}

interface State {
  backend: Backend;
  /** Readiness as the balancer uses it now. */
  ready: boolean;
  connections: number;
  timer?: NodeJS.Timeout;
}

export class TcpBalancer {
  readonly #o: BalancerOptions;
  readonly #server: net.Server;
  readonly #states = new Map<string, State>();
  readonly #sockets = new Set<net.Socket>();
  #closed = false;
  port = 0;
  /** Client connections reset because no backend was eligible or the chosen one refused. */
  refused = 0;
  /** How late readiness changes take effect (BalancerOptions.propagationMs); may change between tests. */
  propagationMs: number;

  constructor(o: BalancerOptions) {
    this.#o = o;
    this.propagationMs = o.propagationMs ?? 0;
    this.#server = net.createServer({ allowHalfOpen: true }, (client) => this.#onClient(client));
    for (const b of o.backends) this.add(b);
  }

  async listen(): Promise<number> {
    this.#server.listen(0, this.#o.host ?? '127.0.0.1');
    await once(this.#server, 'listening');
    this.port = (this.#server.address() as net.AddressInfo).port;
    return this.port;
  }

  add(backend: Backend): void {
    const state: State = { backend, ready: !backend.readyUrl, connections: 0 };
    this.#states.set(backend.name, state);
    if (backend.readyUrl) void this.#poll(state);
  }

  remove(name: string): void {
    const s = this.#states.get(name);
    if (s?.timer) clearTimeout(s.timer);
    this.#states.delete(name);
  }

  /** Connections each backend got. */
  counts(): Record<string, number> {
    return Object.fromEntries([...this.#states.values()].map((s) => [s.backend.name, s.connections]));
  }

  eligible(): string[] {
    return [...this.#states.values()].filter((s) => s.ready).map((s) => s.backend.name);
  }

  async close(): Promise<void> {
    this.#closed = true;
    for (const s of this.#states.values()) if (s.timer) clearTimeout(s.timer);
    for (const s of this.#sockets) s.destroy();
    await new Promise((r) => this.#server.close(r));
  }

  async #poll(state: State): Promise<void> {
    if (this.#closed || this.#states.get(state.backend.name) !== state) return;
    let ok = false;
    try {
      const res = await fetch(state.backend.readyUrl!, { signal: AbortSignal.timeout(1_000) });
      ok = res.ok;
      await res.arrayBuffer();
    } catch {
      ok = false;
    }
    if (ok !== state.ready) {
      const apply = (): void => { state.ready = ok; };
      if (this.propagationMs) setTimeout(apply, this.propagationMs).unref();
      else apply();
    }
    state.timer = setTimeout(() => void this.#poll(state), this.#o.pollMs ?? 100);
    state.timer.unref();
  }

  #choose(client: net.Socket): State | undefined {
    const ready = [...this.#states.values()].filter((s) => s.ready);
    if (ready.length === 0) return undefined;
    if (this.#o.mode === 'random') return ready[Math.floor(Math.random() * ready.length)];
    const all = [...this.#states.values()];
    const h = createHash('sha256').update(client.remoteAddress ?? '').digest().readUInt32BE(0);
    // Hash over every backend (as HAProxy's `balance source` does over its servers); skip to the next ready one.
    for (let i = 0; i < all.length; i++) {
      const s = all[(h + i) % all.length]!;
      if (s.ready) return s;
    }
    return undefined;
  }

  #onClient(client: net.Socket): void {
    this.#sockets.add(client);
    client.on('close', () => this.#sockets.delete(client));
    client.on('error', () => undefined);
    const state = this.#choose(client);
    if (!state) {
      this.refused++;
      client.resetAndDestroy();
      return;
    }
    state.connections++;
    const upstream = net.connect({ host: state.backend.host, port: state.backend.port, allowHalfOpen: true });
    this.#sockets.add(upstream);
    upstream.on('close', () => this.#sockets.delete(upstream));
    let connected = false;
    upstream.once('connect', () => { connected = true; });
    upstream.on('error', () => {
      if (!connected) this.refused++;
      if (!client.destroyed) client.resetAndDestroy();
    });
    client.on('error', () => { if (!upstream.destroyed) upstream.resetAndDestroy(); });
    client.pipe(upstream);
    upstream.pipe(client);
  }
}
