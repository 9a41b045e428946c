/**
 * Status conditions per Kubernetes API conventions: lastTransitionTime
 * changes only when status flips; observedGeneration records what was seen.
 */
export interface Condition {
  type: string;
  status: 'True' | 'False' | 'Unknown';
  observedGeneration?: number;
  lastTransitionTime: string;
  reason: string;
  message: string;
}

export type ConditionInput = Omit<Condition, 'lastTransitionTime' | 'observedGeneration'>;

/** A condition message longer than this (the CRDs' maxLength) would make the status write fail. */
export const MAX_CONDITION_MESSAGE = 32_768;

export function setConditions(previous: readonly Condition[] | undefined, next: ConditionInput[], generation: number, now: Date): Condition[] {
  const old = new Map((previous ?? []).map((c) => [c.type, c]));
  return next.map((c) => {
    const before = old.get(c.type);
    const lastTransitionTime = before && before.status === c.status ? before.lastTransitionTime : now.toISOString();
    // Messages quote what workers report (connector refusals): never let their length block the write.
    const message = c.message.length > MAX_CONDITION_MESSAGE ? `${c.message.slice(0, MAX_CONDITION_MESSAGE - 1)}…` : c.message;
    return { ...c, message, observedGeneration: generation, lastTransitionTime };
  });
}

export function findCondition(list: readonly Condition[] | undefined, type: string): Condition | undefined {
  return list?.find((c) => c.type === type);
}
