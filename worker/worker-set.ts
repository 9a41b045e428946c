/**
 * The live workers of this connection as this worker knows them, announced to
 * `mesh` connectors (welcome, then a `workers` message on every change) so
 * that each keeps a session with every worker (docs/ha.md). The set comes from
 * the operator's answers; this worker is always in it until it drains, so a
 * worker the operator has not heard of yet still announces itself.
 */
import { CONTROL_LIMITS } from '../tunnel/control.js';

export class WorkerSet {
  readonly #self: string;
  /** What the operator last said (undefined: nothing yet, or an operator that sends no set). */
  #announced: readonly string[] | undefined;
  #draining = false;
  #list: string[];

  constructor(self: string) {
    this.#self = self;
    this.#list = [self];
  }

  /** Sorted, without duplicates, at most CONTROL_LIMITS.workers names. */
  get list(): readonly string[] {
    return this.#list;
  }

  /** Puts the operator's set in force; returns whether the announced list changed. */
  apply(workers: readonly string[]): boolean {
    this.#announced = workers;
    return this.#rebuild();
  }

  /** From now on this worker leaves itself out (connectors must not look for it). */
  drain(): boolean {
    this.#draining = true;
    return this.#rebuild();
  }

  #rebuild(): boolean {
    const names = new Set(this.#announced ?? []);
    if (this.#draining) names.delete(this.#self);
    else names.add(this.#self);
    // Ourselves first, so a cut list still names this worker.
    const rest = [...names].filter((n) => n !== this.#self).sort();
    const next = (names.has(this.#self) ? [this.#self, ...rest] : rest).slice(0, CONTROL_LIMITS.workers).sort();
    const changed = next.length !== this.#list.length || next.some((n, i) => n !== this.#list[i]);
    this.#list = next;
    return changed;
  }
}
