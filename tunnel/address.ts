/**
 * host:port addresses and host names.
 *
 * Accepted forms of parseHostPort:
 *   127.0.0.1:8443     IPv4 address and port
 *   [::1]:8443         IPv6 address (brackets required) and port
 *   localhost:80       DNS name and port
 *   :8443              every IPv4 address (host "0.0.0.0")
 * Ports are 1..65535. IP hosts come back canonical, names lowercase;
 * formatHostPort(parseHostPort(s)) is the canonical spelling of s.
 */
import { ConfigError } from './errors.js';
import { ipFamily, normaliseIp } from './cidr.js';

export interface HostPort {
  host: string;
  port: number;
}

const HOST_LABEL = /^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$/i;

/** Kubernetes DNS-1123 label; one implementation, in tunnel/identity.ts. */
export { isDns1123Label } from './identity.js';

/** A DNS host name (RFC 1123; '_' tolerated for service records), optionally with a trailing dot. */
export function isDnsName(s: string): boolean {
  const name = s.endsWith('.') ? s.slice(0, -1) : s;
  if (name.length === 0 || name.length > 253) return false;
  const labels = name.split('.');
  // An all-numeric last label would make "300.1.1.1" a valid host name; it is a bad IP instead.
  if (/^\d+$/.test(labels[labels.length - 1]!)) return false;
  return labels.every((l) => HOST_LABEL.test(l));
}

/** An IP literal (canonical) or a DNS name (lowercase, no trailing dot); throws a ConfigError otherwise. */
export function normaliseHost(s: string, field?: string): string {
  if (ipFamily(s) !== 0) return normaliseIp(s);
  if (isDnsName(s)) return s.toLowerCase().replace(/\.$/, '');
  const hint = s.includes('%') ? ' (IPv6 zone ids are not supported)' : '';
  throw new ConfigError(`"${s}" is not an IP address or DNS name${hint}`, { field });
}

/** A port number or its decimal text, checked to be 1..65535. */
export function parsePort(s: string | number, field?: string): number {
  const text = String(s);
  const port = /^\d{1,5}$/.test(text) ? Number(text) : NaN;
  if (!(port >= 1 && port <= 65535)) {
    throw new ConfigError(`port "${text}" must be between 1 and 65535`, { field });
  }
  return port;
}

export function parseHostPort(s: string, field?: string): HostPort {
  const example = 'expected host:port, e.g. 127.0.0.1:8443, [::1]:8443 or :8443';
  if (s.startsWith('[')) {
    const close = s.indexOf(']');
    const host = close < 0 ? '' : s.slice(1, close);
    if (ipFamily(host) !== 6) throw new ConfigError(`"${s}": brackets must hold an IPv6 address (${example})`, { field });
    if (s[close + 1] !== ':') throw new ConfigError(`"${s}": missing port (${example})`, { field });
    return { host: normaliseIp(host), port: parsePort(s.slice(close + 2), field) };
  }
  const colon = s.lastIndexOf(':');
  if (colon < 0) throw new ConfigError(`"${s}": missing port (${example})`, { field });
  const hostText = s.slice(0, colon);
  if (hostText.includes(':')) {
    throw new ConfigError(`"${s}": IPv6 addresses must be in brackets, e.g. [::1]:8443`, { field });
  }
  const host = hostText === '' ? '0.0.0.0' : normaliseHost(hostText, field);
  return { host, port: parsePort(s.slice(colon + 1), field) };
}

export function formatHostPort(hp: HostPort): string {
  return ipFamily(hp.host) === 6 ? `[${hp.host}]:${hp.port}` : `${hp.host}:${hp.port}`;
}

/** A socket's remote end as host:port, or "unknown" once the socket has no address (closed). */
export function formatPeer(socket: { remoteAddress?: string | undefined; remotePort?: number | undefined }): string {
  return socket.remoteAddress ? formatHostPort({ host: socket.remoteAddress, port: socket.remotePort ?? 0 }) : 'unknown';
}

/** True when listeners on a and b would collide: same port and same address, or either is a wildcard. */
export function listenersOverlap(a: HostPort, b: HostPort): boolean {
  if (a.port !== b.port) return false;
  return a.host === b.host || isWildcardAddress(a.host) || isWildcardAddress(b.host);
}

export function isWildcardAddress(host: string): boolean {
  return host === '0.0.0.0' || host === '::';
}
