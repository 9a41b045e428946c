/**
 * Starting and stopping our HTTP(S) servers (admin endpoint, tunnel endpoint,
 * operator report endpoint) the same way.
 */
import type http from 'node:http';
import type https from 'node:https';
import type { AddressInfo, Server } from 'node:net';
import type { HostPort } from './address.js';

/** Listens on `at`; resolves with the bound address, rejects with the listen error (EADDRINUSE, EACCES…). */
export async function listenOn(server: Server, at: HostPort): Promise<AddressInfo> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(at.port, at.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return server.address() as AddressInfo;
}

/** Stops listening and drops every connection, idle keep-alive ones included; resolves once closed. */
export function closeNow(server: http.Server | https.Server): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });
}
