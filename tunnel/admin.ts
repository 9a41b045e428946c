/**
 * The admin endpoint of a worker or connector: liveness, readiness (with the
 * reason when not ready), Prometheus metrics and a JSON status document.
 *
 * /status names peers, their addresses, host names and every target: it is
 * answered to loopback clients only (in a pod: `kubectl port-forward` or
 * `kubectl exec`, which need rights on the pod), never to the network the
 * admin port listens on, where kubelet probes and metrics scrapers come from.
 * A packet from another host cannot carry a loopback source: the kernel drops
 * it as martian before any socket sees it.
 */
import http from 'node:http';
import { isIPv4, type AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import type { HostPort } from './address.js';
import { formatHostPort } from './address.js';
import { closeNow, listenOn } from './listen.js';

export interface AdminHandlers {
  /** undefined = ready; otherwise the reason it is not. */
  notReadyReason(): string | undefined;
  status(): unknown;
  registry: Registry;
}

export class AdminServer {
  readonly #server: http.Server;
  readonly #log: Logger;

  constructor(handlers: AdminHandlers, logger: Logger) {
    this.#log = logger;
    this.#server = http.createServer((req, res) => {
      void route(handlers, req, res).catch((err: Error) => {
        res.writeHead(500, { 'content-type': 'text/plain' }).end(`internal error: ${err.message}\n`);
      });
    });
  }

  async listen(at: HostPort): Promise<AddressInfo> {
    const address = await listenOn(this.#server, at);
    this.#log.info({ admin: formatHostPort({ host: address.address, port: address.port }) }, `admin endpoint on http://${formatHostPort({ host: address.address, port: address.port })} (/healthz, /readyz, /metrics, /status)`);
    return address;
  }

  close(): Promise<void> {
    return closeNow(this.#server);
  }
}

/** 127.0.0.0/8, ::1, and their IPv4-mapped form (a dual-stack listener on ::). */
export function isLoopback(address: string | undefined): boolean {
  if (!address) return false;
  const v4 = address.startsWith('::ffff:') ? address.slice(7) : address;
  return address === '::1' || (isIPv4(v4) && v4.startsWith('127.'));
}

async function route(h: AdminHandlers, req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
  const path = (req.url ?? '/').split('?')[0];
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.writeHead(405, { allow: 'GET, HEAD' }).end();
    return;
  }
  switch (path) {
    case '/healthz':
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
      return;
    case '/readyz': {
      const reason = h.notReadyReason();
      res.writeHead(reason ? 503 : 200, { 'content-type': 'text/plain' }).end(reason ? `not ready: ${reason}\n` : 'ready\n');
      return;
    }
    case '/metrics':
      res.writeHead(200, { 'content-type': h.registry.contentType }).end(await h.registry.metrics());
      return;
    case '/status':
      if (!isLoopback(req.socket.remoteAddress)) {
        res.writeHead(403, { 'content-type': 'text/plain' })
          .end('forbidden: /status is served to loopback clients only (kubectl port-forward, or curl inside the pod); /healthz, /readyz and /metrics answer here\n');
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end(`${JSON.stringify(h.status(), null, 2)}\n`);
      return;
    default:
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found; try /healthz, /readyz, /metrics or /status\n');
  }
}
