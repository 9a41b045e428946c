/** The baseline: no forwarder at all; the "local port" is the target itself. */
import type { Contender } from './common.js';

export function directContender(): Contender {
  return {
    id: 'direct',
    label: 'direct TCP',
    info: {},
    forward: async (targetPort) => ({ port: targetPort, roles: {}, stop: async () => undefined }),
    close: async () => undefined,
  };
}
