import { describe, it, expect } from '@jest/globals';
import { ControlChannel, ControlMessageError, CONTROL_LIMITS, fitMappingStatus, MAX_CONTROL_MESSAGE, parseControlMessage, PROTOCOL_VERSION, type ControlMessage } from './control.js';
import { duplexPair } from './testing/duplex-pair.js';

const HELLO: Extract<ControlMessage, { type: 'hello' }> = { type: 'hello', protocol: PROTOCOL_VERSION, connector: 'site-a', version: '0.1.0', capabilities: ['tcp'], hostname: 'host-1' };
const STATUS: Extract<ControlMessage, { type: 'mapping-status' }> = {
  type: 'mapping-status', revision: 3, mappings: [{ name: 'db', state: 'Refused', reason: 'NotAllowed', message: 'outside the allow list' }],
};
const L = CONTROL_LIMITS;

describe('control messages', () => {
  it.each<[string, ControlMessage]>([
    ['hello', HELLO],
    ['welcome', { type: 'welcome', protocol: PROTOCOL_VERSION, connection: 'team-a/dc1', worker: { instance: 'dc1-worker-0', version: '0.1.0' }, session: '4f0c' }],
    ['config', { type: 'config', revision: 1, mappings: [{ name: 'db', protocol: 'TCP', target: { side: 'Connector', host: '127.0.0.1', port: 5432 }, listen: { port: 15432, address: '0.0.0.0' }, allowedSources: [] }] }],
    ['mapping-status', STATUS],
    ['error', { type: 'error', code: 'CONNECTOR_NOT_ALLOWED', message: 'not in spec.connectors', field: 'connector' }],
  ])('a %s message round-trips through JSON unchanged', (_name, msg) => {
    expect(parseControlMessage(JSON.parse(JSON.stringify(msg)))).toEqual(msg);
  });

  it.each<[string, unknown, string]>([
    ['a 65-character version', { ...HELLO, version: 'v'.repeat(L.versionChars + 1) }, 'version'],
    ['a version with spaces', { ...HELLO, version: '1.0 beta' }, 'version'],
    ['a connector name that is not a DNS label', { ...HELLO, connector: 'Site_A' }, 'connector'],
    ['17 capabilities', { ...HELLO, capabilities: Array.from({ length: L.capabilities + 1 }, (_, i) => `c${i}`) }, 'capabilities'],
    ['a 33-character capability', { ...HELLO, capabilities: ['c'.repeat(L.capabilityChars + 1)] }, 'capabilities[0]'],
    ['a 254-character hostname', { ...HELLO, hostname: 'h'.repeat(L.hostnameChars + 1) }, 'hostname'],
    ['1001 mapping-status entries', { ...STATUS, mappings: Array.from({ length: L.mappings + 1 }, (_, i) => ({ name: `m${i}`, state: 'Failed' })) }, 'mappings'],
    ['a 1025-character message', { ...STATUS, mappings: [{ name: 'db', state: 'Failed', message: 'x'.repeat(L.messageChars + 1) }] }, 'mappings[0].message'],
    ['a reason that is not a code', { ...STATUS, mappings: [{ name: 'db', state: 'Failed', reason: 'not a code!' }] }, 'mappings[0].reason'],
    ['a 65-character reason', { ...STATUS, mappings: [{ name: 'db', state: 'Failed', reason: 'R'.repeat(L.codeChars + 1) }] }, 'mappings[0].reason'],
    ['a mapping name that is not a DNS label', { ...STATUS, mappings: [{ name: 'x'.repeat(64), state: 'Failed' }] }, 'mappings[0].name'],
    ['1001 mappings in a config', { type: 'config', revision: 1, mappings: Array.from({ length: L.mappings + 1 }, () => ({})) }, 'mappings'],
  ])('refuses a message with %s, naming the field', (_name, raw, field) => {
    const parsed = parseControlMessage(raw);
    expect(parsed).toBeInstanceOf(ControlMessageError);
    const err = parsed as ControlMessageError;
    expect({ code: err.code, field: err.field }).toEqual({ code: 'ERR_CONTROL_INVALID', field });
    expect(err.message).toContain(field);
  });

  it('fitMappingStatus keeps a sender within the limits the receiver checks', () => {
    const entries = Array.from({ length: L.mappings + 5 }, (_, i) => ({ name: `m${i}`, state: 'Failed' as const, reason: 'ListenFailed', message: 'x'.repeat(L.messageChars + 10) }));
    const fitted = fitMappingStatus(entries);
    expect(fitted).toHaveLength(L.mappings);
    const msg = { type: 'mapping-status', revision: 1, mappings: fitted.map((e) => ({ ...e, message: '\u0001'.repeat(e.message!.length) })) };
    expect(parseControlMessage(msg)).not.toBeInstanceOf(ControlMessageError);
    expect(Buffer.byteLength(JSON.stringify(msg))).toBeLessThanOrEqual(MAX_CONTROL_MESSAGE);
    expect(fitMappingStatus(entries.slice(0, 10)).every((e) => e.message!.length === L.messageChars)).toBe(true);
  });

  it('names no type for a message of an unknown type', () => {
    const err = parseControlMessage({ type: 'surprise' }) as ControlMessageError;
    expect(err).toBeInstanceOf(ControlMessageError);
    expect(err.messageType).toBeUndefined();
  });

  it('drops a refused message whole and keeps reading the channel', async () => {
    const [a, b] = duplexPair();
    const sender = new ControlChannel(a);
    const receiver = new ControlChannel(b);
    const errors: Error[] = [];
    receiver.on('error', (e) => errors.push(e));
    sender.send({ ...HELLO, version: 'v'.repeat(100) });
    sender.send(HELLO);
    const msg = await new Promise<ControlMessage>((resolve) => receiver.once('message', resolve));
    expect(msg).toEqual(HELLO);
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatchObject({ code: 'ERR_CONTROL_INVALID', field: 'version', messageType: 'hello' });
  });
});
