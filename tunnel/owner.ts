/**
 * Links an emitter (socket, stream, session) to the object whose listeners it calls, so that one
 * shared listener function serves every connection: the listener gets the emitter as `this` and
 * finds its owner here. Objects that live as long as a connection (relays, sessions, channels)
 * then keep no closures per connection — most of what an idle stream or session cost
 * (docs/benchmarks.md). A symbol property, not a WeakMap: no per-entry table memory.
 */
export interface OwnerSlot<T> {
  set(emitter: object, owner: T): void;
  /** The owner set on `emitter` (the caller knows one was set). */
  of(emitter: object): T;
}

export function ownerSlot<T>(name: string): OwnerSlot<T> {
  const key = Symbol(name);
  return {
    set(emitter, owner) {
      (emitter as Record<symbol, T>)[key] = owner;
    },
    of(emitter) {
      return (emitter as Record<symbol, T>)[key]!;
    },
  };
}
