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

export function setConditions(previous: readonly Condition[] | undefined, next: ConditionInput[], generation: number, now: Date): Condition[] {
  const old = new Map((previous ?? []).map((c) => [c.type, c]));
  return next.map((c) => {
    const before = old.get(c.type);
    const lastTransitionTime = before && before.status === c.status ? before.lastTransitionTime : now.toISOString();
    return { ...c, observedGeneration: generation, lastTransitionTime };
  });
}

export function findCondition(list: readonly Condition[] | undefined, type: string): Condition | undefined {
  return list?.find((c) => c.type === type);
}
