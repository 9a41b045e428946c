import { beforeAll, describe, expect, it } from '@jest/globals';
import type { WorkerReport } from '../tunnel/operator-channel.js';
import { caId, createCA } from '../tunnel/pki.js';
import { AUTO_ROTATE_BEFORE_MS, nextStep, rotationPhase, waitingFor } from './ca-rotation.js';
import type { CAState } from './connection-ca.js';

const DAY = 86_400_000;
const NOW = new Date('2026-12-06T12:00:00Z');
let oldCa: string;
let newCa: string;

beforeAll(async () => {
  oldCa = (await createCA({ connection: { namespace: 'a', name: 'b' } })).certPem;
  newCa = (await createCA({ connection: { namespace: 'a', name: 'b' } })).certPem;
});

function report(instance: string, trust: string[], issuer?: string, sessions: Array<string | undefined> = []): WorkerReport {
  return {
    instance, version: 'x', ready: true, draining: false, listenerFailures: [], trust, ...(issuer ? { issuer } : {}),
    connectors: sessions.map((s, i) => ({ name: `c${i}`, session: `s${i}`, since: '', version: 'x', address: '', unavailableMappings: [], ...(s ? { issuer: s } : {}) })),
  };
}

describe('CA rotation steps', () => {
  const year = 365 * DAY;
  it.each([
    ['a stable CA far from expiry: nothing', () => ({ state: { caPem: oldCa }, requested: undefined, left: 300 * DAY }), undefined],
    ['the annotation set: start', () => ({ state: { caPem: oldCa }, requested: 'now', left: 300 * DAY }), 'start'],
    ['the annotation already handled: nothing', () => ({ state: { caPem: oldCa, rotateHandled: 'now' }, requested: 'now', left: 300 * DAY }), undefined],
    ['a changed annotation value: start again', () => ({ state: { caPem: oldCa, rotateHandled: 'now' }, requested: 'again', left: 300 * DAY }), 'start'],
    ['the CA in its last 90 days: start', () => ({ state: { caPem: oldCa }, requested: undefined, left: AUTO_ROTATE_BEFORE_MS - 1 }), 'start'],
  ])('%s', (_name, make, expected) => {
    const { state, requested, left } = make();
    const step = nextStep({ state: state as CAState, requested, caNotAfter: new Date(NOW.getTime() + left), caDurationMs: year, now: NOW, reports: [] });
    expect(step?.step).toBe(expected);
  });

  it.each([
    ['Introducing: a worker that does not trust the new CA yet holds the switch', () => [report('w0', [caId(oldCa), caId(newCa)]), report('w1', [caId(oldCa)])], undefined],
    ['Introducing: every worker trusts it: switch', () => [report('w0', [caId(oldCa), caId(newCa)]), report('w1', [caId(newCa), caId(oldCa)])], 'switch'],
  ])('%s', (_name, reports, expected) => {
    const state: CAState = { caPem: oldCa, nextPem: newCa };
    expect(rotationPhase(state)).toBe('Introducing');
    expect(nextStep({ state, requested: undefined, caNotAfter: new Date(NOW.getTime() + year), caDurationMs: year, now: NOW, reports: reports() })?.step).toBe(expected);
  });

  it.each([
    ['a worker still serving an old certificate', () => [report('w0', [], caId(oldCa))], undefined, ['worker w0 (old certificate)']],
    ['a connector session opened with an old certificate', () => [report('w0', [], caId(newCa), [caId(newCa), caId(oldCa)])], undefined, ['connector c1 on w0 (old certificate)']],
    ['everyone on the new CA', () => [report('w0', [], caId(newCa), [caId(newCa)]), report('w1', [], caId(newCa))], 'finish', []],
  ])('Retiring: %s', (_name, reports, expected, waiting) => {
    const state: CAState = { caPem: newCa, retiringPem: oldCa };
    expect(rotationPhase(state)).toBe('Retiring');
    const r = reports();
    expect(nextStep({ state, requested: undefined, caNotAfter: new Date(NOW.getTime() + year), caDurationMs: year, now: NOW, reports: r })?.step).toBe(expected);
    expect(waitingFor({ state, reports: r })).toEqual(waiting);
  });
});
