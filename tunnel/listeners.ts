/**
 * Keeps one TCP listener per mapping in step with a mapping set. Applying a
 * new set rebinds only listeners whose address or port changed; a removed
 * mapping's listener stops accepting, while connections it already accepted
 * carry on. Each accepted socket is passed to `onConnection` with the mapping
 * as it is *now* (a changed target applies to new connections at once).
 */
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import type { Logger } from 'pino';
import { formatHostPort } from './address.js';
import type { Mapping } from './mapping.js';
import { acceptInto, acceptProblem, adoptionProblem } from './accept.js';
import { Relay } from './relay.js';

export interface ListenResult {
  name: string;
  ok: boolean;
  error?: Error;
}

interface Entry {
  mapping: Mapping;
  server: net.Server;
}

export class MappingListeners {
  readonly #entries = new Map<string, Entry>();
  #accepted = 0;
  #lastAcceptAt: number | undefined;
  readonly #onConnection: (mapping: Mapping, socket: net.Socket) => void;
  readonly #log: Logger;
  readonly #where: string;
  #warned = false;

  constructor(options: { onConnection: (mapping: Mapping, socket: net.Socket) => void; logger: Logger; where: string }) {
    this.#onConnection = options.onConnection;
    this.#log = options.logger;
    this.#where = options.where;
  }

  /** Client connections accepted so far (drain-listeners.ts watches them). */
  get accepted(): number {
    return this.#accepted;
  }

  /** When the last client connection was accepted (`performance.now()` ms). */
  get lastAcceptAt(): number | undefined {
    return this.#lastAcceptAt;
  }

  get names(): string[] {
    return [...this.#entries.keys()];
  }

  /** The address a mapping's listener is bound to (useful with port 0 in tests). */
  address(name: string): net.AddressInfo | undefined {
    const a = this.#entries.get(name)?.server.address();
    return a && typeof a === 'object' ? a : undefined;
  }

  async apply(mappings: readonly Mapping[]): Promise<ListenResult[]> {
    const wanted = new Map(mappings.map((m) => [m.name, m]));
    for (const [name, entry] of this.#entries) {
      const next = wanted.get(name);
      if (!next || next.listen.port !== entry.mapping.listen.port || next.listen.address !== entry.mapping.listen.address) {
        this.#entries.delete(name);
        entry.server.close();
        this.#log.info({ mapping: name, listen: this.#describe(entry.mapping) }, `stopped listening for mapping "${name}"`);
      }
    }
    const results: ListenResult[] = [];
    for (const mapping of mappings) {
      const existing = this.#entries.get(mapping.name);
      if (existing) {
        existing.mapping = mapping;
        results.push({ name: mapping.name, ok: true });
        continue;
      }
      try {
        await this.#listen(mapping);
        results.push({ name: mapping.name, ok: true });
      } catch (err) {
        const error = err as NodeJS.ErrnoException;
        this.#log.error({ mapping: mapping.name, listen: this.#describe(mapping), err: error.message, code: error.code },
          `cannot listen on ${this.#describe(mapping)} for mapping "${mapping.name}": ${error.message}`);
        results.push({ name: mapping.name, ok: false, error });
      }
    }
    return results;
  }

  /** Stops accepting on every listener (connections already accepted continue). */
  async close(): Promise<void> {
    const servers = [...this.#entries.values()].map((e) => e.server);
    this.#entries.clear();
    await Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
  }

  #listen(mapping: Mapping): Promise<void> {
    // Each accepted connection becomes one socket reading into the relay's shared buffer, with
    // TCP_NODELAY and keep-alive from the listening socket (accept.ts).
    const entry: Entry = { mapping, server: net.createServer({ allowHalfOpen: true, pauseOnConnect: true }) };
    const onSocket = (socket: net.Socket): void => {
      this.#accepted++;
      this.#lastAcceptAt = performance.now();
      // Paused: the relay's pipe resumes it.
      this.#onConnection(entry.mapping, socket);
    };
    return new Promise((resolve, reject) => {
      entry.server.once('error', reject);
      entry.server.listen({ host: mapping.listen.address, port: mapping.listen.port }, () => {
        entry.server.off('error', reject);
        entry.server.on('error', (err) => this.#log.error({ mapping: mapping.name, err: err.message }, 'listener error'));
        if (acceptInto(entry.server, Relay.socketOptions.onread, true, onSocket, (problem) => this.#warnAccept(problem)) !== 'direct') this.#warnAccept(acceptProblem());
        this.#entries.set(mapping.name, entry);
        const bound = entry.server.address() as net.AddressInfo;
        this.#log.info({ mapping: mapping.name, listen: formatHostPort({ host: bound.address, port: bound.port }), target: formatHostPort(mapping.target) },
          `listening on ${formatHostPort({ host: bound.address, port: bound.port })} (${this.#where}) for mapping "${mapping.name}" → ${mapping.target.side} ${formatHostPort(mapping.target)}`);
        resolve();
      });
    });
  }

  /** Once per process: accepted sockets take Node's slower path (accept.ts says what each costs). */
  #warnAccept(problem: string | undefined): void {
    if (this.#warned) return;
    this.#warned = true;
    const detail = adoptionProblem() === undefined
      ? 'one more socket object and five setsockopt calls per connection'
      : 'reads by Node\'s default allocation: more garbage collection per byte on Node 24+';
    this.#log.warn({ problem }, `accepted connections take Node's slower path (${problem ?? 'unknown'}): ${detail}`);
  }

  #describe(m: Mapping): string {
    return formatHostPort({ host: m.listen.address, port: m.listen.port });
  }
}
