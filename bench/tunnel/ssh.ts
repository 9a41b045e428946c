/**
 * OpenSSH `ssh -L` against our own `sshd -D` on a free loopback port: a
 * generated host key, a generated client key authorised for the current user,
 * UsePAM no, the PID file in the temp dir. Cipher and MAC are OpenSSH's
 * default negotiation; which one was chosen is read from `ssh -v` once.
 */
import { mkdirSync, writeFileSync, chmodSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Child, commandExists, freePort, listening, run, waitUntil, type Contender, type Forward } from './common.js';

export async function sshContender(dir: string): Promise<Contender | string> {
  const sshd = commandExists('sshd') ?? commandExists('/usr/sbin/sshd');
  const ssh = commandExists('ssh');
  const keygen = commandExists('ssh-keygen');
  if (!sshd || !ssh || !keygen) return 'OpenSSH not installed (bench/setup.sh installs openssh-server and openssh-client)';
  const d = path.join(dir, 'ssh');
  mkdirSync(d, { recursive: true, mode: 0o700 });
  for (const [name, type] of [['host_ed25519', 'ed25519'], ['client_ed25519', 'ed25519']] as const) {
    run(keygen, ['-q', '-t', type, '-N', '', '-C', `tunnel-bench-${name}`, '-f', path.join(d, name)]);
  }
  const authorized = path.join(d, 'authorized_keys');
  writeFileSync(authorized, run('cat', [path.join(d, 'client_ed25519.pub')]));
  chmodSync(authorized, 0o600);
  // sshd refuses to start without its privilege-separation directory.
  if (process.getuid?.() === 0) mkdirSync('/run/sshd', { recursive: true, mode: 0o755 });
  const port = await freePort();
  const user = os.userInfo().username;
  const config = path.join(d, 'sshd_config');
  writeFileSync(config, [
    `Port ${port}`,
    'ListenAddress 127.0.0.1',
    `HostKey ${path.join(d, 'host_ed25519')}`,
    `PidFile ${path.join(d, 'sshd.pid')}`,
    `AuthorizedKeysFile ${authorized}`,
    'UsePAM no',
    'StrictModes no',
    'PubkeyAuthentication yes',
    'PasswordAuthentication no',
    'KbdInteractiveAuthentication no',
    'PermitRootLogin prohibit-password',
    `AllowUsers ${user}`,
    'AllowTcpForwarding yes',
    'MaxStartups 200',
    'MaxSessions 100',
    'LogLevel ERROR',
    '',
  ].join('\n'));
  const daemon = new Child('sshd', sshd, ['-D', '-e', '-f', config], path.join(d, 'sshd.log'));
  await waitUntil('sshd to listen', () => listening(port), 10_000, daemon);

  const common = ['-p', String(port), '-i', path.join(d, 'client_ed25519'), '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null',
    '-o', 'BatchMode=yes', '-o', 'IdentitiesOnly=yes', '-o', 'LogLevel=ERROR'];
  // Which cipher, MAC and key exchange the default negotiation picks, from one verbose login.
  const verbose = run(ssh, ['-v', ...sshOpts(common), `${user}@127.0.0.1`, 'true']);
  const cipher = /kex: client->server cipher: (\S+) MAC: (\S+)/.exec(verbose);
  const kex = /kex: algorithm: (\S+)/.exec(verbose);
  const info: Record<string, string> = {
    version: run(ssh, ['-V']).trim(),
    cipher: cipher ? `${cipher[1]} (MAC ${cipher[2]})` : 'unknown (ssh -v did not say)',
    kex: kex?.[1] ?? 'unknown',
  };
  if (!cipher) info.probe = verbose.split('\n').slice(-5).join(' / ');

  let n = 0;
  const forwards = new Set<Child>();
  return {
    id: 'ssh',
    label: 'ssh -L',
    info,
    async forward(targetPort: number): Promise<Forward> {
      const local = await freePort();
      const child = new Child('ssh', ssh, ['-N', '-L', `127.0.0.1:${local}:127.0.0.1:${targetPort}`, ...common, '-o', 'ExitOnForwardFailure=yes', `${user}@127.0.0.1`],
        path.join(d, `ssh-${++n}.log`));
      forwards.add(child);
      await waitUntil(`ssh -L on port ${local}`, () => listening(local), 15_000, child);
      return {
        port: local,
        roles: { 'ssh': child.pid, 'sshd': daemon.pid },
        stop: async () => {
          forwards.delete(child);
          await child.stop();
        },
      };
    },
    async close() {
      for (const f of forwards) await f.stop();
      await daemon.stop();
    },
  };
}

/** The -o options of `common` without the quiet log level (the probe needs -v output). */
function sshOpts(common: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < common.length; i++) {
    if (common[i] === '-o') {
      if (common[i + 1] !== 'LogLevel=ERROR') out.push('-o', common[i + 1]!);
      i++;
    } else if (common[i] === '-p' || common[i] === '-i') {
      out.push(common[i]!, common[i + 1]!);
      i++;
    }
  }
  return out;
}
