/**
 * What a worker agrees to dial for a Cluster-side mapping, decided on the
 * address it is about to dial: the worker resolves a target name once, checks
 * the address, and dials that address (a name can resolve to anything, and a
 * second lookup could answer differently).
 *
 * Never dialled, whatever the mapping says:
 *  - link-local and cloud metadata addresses (tunnel/guarded-addresses.ts):
 *    where a cloud answers with the node's credentials;
 *  - the addresses in `refuse`: the operator writes the Kubernetes API server's
 *    (the `kubernetes` Service's ClusterIP and its endpoints), and the worker
 *    adds the KUBERNETES_SERVICE_HOST its pod was started with.
 * Loopback and the unspecified address (the worker's own pod: its admin port,
 * its tunnel port, its listeners) only when `loopback` is true, which is the
 * default only for a stand-alone worker whose config file is the only source
 * of mappings (no `operator:`): there the mapping author is the host's owner.
 *
 * The operator checks targets too (operator/cluster-targets.ts), by name and
 * namespace; this is the second layer, on the resolved address.
 */
import { formatHostPort } from '../tunnel/address.js';
import { CidrSet, ipFamily } from '../tunnel/cidr.js';
import { guardedBlock } from '../tunnel/guarded-addresses.js';

export interface ClusterTargetRules {
  /** Dial loopback and unspecified addresses (the worker's own host or pod). */
  loopback: boolean;
  /** Addresses and blocks never dialled (normalised CIDRs, e.g. "10.96.0.1/32"). */
  refuse: readonly string[];
}

export class ClusterTargetGuard {
  readonly rules: ClusterTargetRules;
  readonly #refused: CidrSet;

  constructor(rules: ClusterTargetRules) {
    this.rules = { loopback: rules.loopback, refuse: [...rules.refuse] };
    this.#refused = new CidrSet([...rules.refuse]);
  }

  /**
   * Why `ip` (an IP literal the worker is about to dial for `host:port`) must
   * not be dialled, or undefined when it may be.
   */
  whyNot(ip: string, host: string, port: number): string | undefined {
    const family = ipFamily(ip);
    if (family === 0) return `"${ip}" is not an IP address`;
    const target = formatHostPort({ host, port });
    const via = host === ip ? '' : ` resolves to ${ip}, which`;
    const block = guardedBlock(ip);
    if (block && (block.kind !== 'local' || !this.rules.loopback)) {
      const what = block.kind === 'local' ? 'the worker\'s own host (a loopback or unspecified address)' : block.what;
      return `target ${target}${via} is ${what}; workers never dial it for a Cluster-side mapping`;
    }
    if (this.#refused.contains(ip)) {
      return `target ${target}${via} is an address of the Kubernetes API server (or another refused address); workers never dial it`;
    }
    return undefined;
  }
}
