/**
 * Rotation of a connection's CA with overlap, so that no connection fails
 * (docs/operations.md, "Rotating a connection CA"). Three phases, kept in the
 * CA Secret (operator/connection-ca.ts):
 *
 *   Stable       ca                  signs; trusted alone
 *   Introducing  ca + next           ca signs; workers and connectors learn to trust next
 *   Retiring     ca(=new) + retiring new signs: worker certificates are reissued, connectors
 *                                    renew at once (the trust bundle names the signer first)
 *   Stable       ca(=new)            the old CA is gone
 *
 * A phase ends only when every worker that reports says it has moved: all of
 * them trust the new CA (Introducing), then all of them serve a certificate of
 * the new CA and every connector session they hold was opened with one
 * (Retiring). `nextStep` is pure; ConnectionPki applies its answer.
 */
import type { WorkerReport } from '../tunnel/operator-channel.js';
import { caId } from '../tunnel/pki.js';
import type { CAState } from './connection-ca.js';

const DAY_MS = 86_400_000;
/** The CA is rotated by itself when less than this much of it is left (or a quarter of caDuration, if less). */
export const AUTO_ROTATE_BEFORE_MS = 90 * DAY_MS;

export type RotationPhase = 'Stable' | 'Introducing' | 'Retiring';
export type RotationStep = 'start' | 'switch' | 'finish';

export function rotationPhase(state: CAState): RotationPhase {
  if (state.nextPem) return 'Introducing';
  if (state.retiringPem) return 'Retiring';
  return 'Stable';
}

export interface RotationInput {
  state: CAState;
  /** The TunnelConnection's underpass.dev/rotate-ca annotation, if any. */
  requested: string | undefined;
  caNotAfter: Date;
  caDurationMs: number;
  now: Date;
  /** Live worker reports of the connection. */
  reports: readonly WorkerReport[];
}

/** What to do now, and why (for the log and the event), or undefined. */
export function nextStep(input: RotationInput): { step: RotationStep; why: string } | undefined {
  const { state, reports } = input;
  switch (rotationPhase(state)) {
    case 'Stable': {
      if (input.requested !== undefined && input.requested !== state.rotateHandled) {
        return { step: 'start', why: `annotation underpass.dev/rotate-ca is "${input.requested}"` };
      }
      const left = input.caNotAfter.getTime() - input.now.getTime();
      if (left < Math.min(AUTO_ROTATE_BEFORE_MS, input.caDurationMs / 4)) {
        return { step: 'start', why: `the CA expires ${input.caNotAfter.toISOString()}` };
      }
      return undefined;
    }
    case 'Introducing': {
      const next = caId(state.nextPem!);
      const behind = reports.filter((r) => !r.trust?.includes(next)).map((r) => r.instance);
      if (behind.length > 0) return undefined;
      return { step: 'switch', why: `every worker (${reports.length}) trusts the new CA ${next}` };
    }
    case 'Retiring': {
      const now = caId(state.caPem!);
      const workersBehind = reports.filter((r) => r.issuer !== now).map((r) => r.instance);
      const sessionsBehind = reports.flatMap((r) => r.connectors.filter((c) => c.issuer !== now).map((c) => `${c.name}@${r.instance}`));
      if (workersBehind.length > 0 || sessionsBehind.length > 0) return undefined;
      return { step: 'finish', why: `every worker (${reports.length}) and connector session uses a certificate of the new CA ${now}` };
    }
  }
}

/** Who a rotation still waits for (for status messages and logs). */
export function waitingFor(input: Pick<RotationInput, 'state' | 'reports'>): string[] {
  const { state, reports } = input;
  const phase = rotationPhase(state);
  if (phase === 'Introducing') {
    const next = caId(state.nextPem!);
    return reports.filter((r) => !r.trust?.includes(next)).map((r) => `worker ${r.instance} (does not trust the new CA yet)`);
  }
  if (phase === 'Retiring') {
    const now = caId(state.caPem!);
    return [
      ...reports.filter((r) => r.issuer !== now).map((r) => `worker ${r.instance} (old certificate)`),
      ...reports.flatMap((r) => r.connectors.filter((c) => c.issuer !== now).map((c) => `connector ${c.name} on ${r.instance} (old certificate)`)),
    ];
  }
  return [];
}
