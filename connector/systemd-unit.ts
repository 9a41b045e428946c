/**
 * The host install of a connector (docs/connector-lifecycle.md, "Host install"):
 * a hardened systemd unit and the connector config it runs, rendered here
 * (pure), written by `underpass connector install` (cli/install.ts).
 *
 * The unit runs as its own unprivileged user with no capabilities, sees the
 * file system read-only except its state directory (where the connector keeps
 * its key and renews its certificate), and restarts on failure. Node's JIT
 * needs writable executable memory, so MemoryDenyWriteExecute stays off.
 */
import YAML from 'yaml';

export interface InstallPlan {
  name: string;
  /** The `underpass` executable ExecStart runs. */
  exec: string;
  user: string;
  workers: string[];
  allow: string[];
  bind: string[];
  admin: string;
}

export function unitName(name: string): string {
  return `underpass-connector-${name}.service`;
}

/** Paths the unit and the config use (relative to the host's root). */
export function installPaths(name: string): { unit: string; configDir: string; config: string; token: string; stateDir: string } {
  return {
    unit: `/etc/systemd/system/${unitName(name)}`,
    configDir: `/etc/underpass/${name}`,
    config: `/etc/underpass/${name}/connector.yaml`,
    token: `/etc/underpass/${name}/token`,
    stateDir: `/var/lib/underpass/${name}`,
  };
}

export function renderUnit(p: InstallPlan): string {
  const paths = installPaths(p.name);
  return `# Written by "underpass connector install"; see docs/connector-lifecycle.md (Host install).
[Unit]
Description=Underpass connector ${p.name}
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
User=${p.user}
Group=${p.user}
ExecStart=${p.exec} connector --config ${paths.config}
Restart=on-failure
RestartSec=5s
# SIGTERM drains open streams (drainTimeout, 30 s by default) before the connector exits.
TimeoutStopSec=45s
# Key, certificate and CA live here: enrolled once with the token, renewed in place.
StateDirectory=underpass/${p.name}
StateDirectoryMode=0700
ConfigurationDirectory=underpass/${p.name}
UMask=0077
NoNewPrivileges=yes
CapabilityBoundingSet=
AmbientCapabilities=
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
RestrictSUIDSGID=yes
RestrictRealtime=yes
RestrictNamespaces=yes
LockPersonality=yes
SystemCallArchitectures=native
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX

[Install]
WantedBy=multi-user.target
`;
}

export function renderInstalledConfig(p: InstallPlan): string {
  const paths = installPaths(p.name);
  const config = {
    name: p.name,
    worker: p.workers.length === 1 ? p.workers[0] : p.workers,
    state: paths.stateDir,
    enroll: { tokenFile: paths.token },
    admin: p.admin,
    allow: p.allow,
    bind: p.bind,
  };
  return `# Written by "underpass connector install". allow and bind decide what the cluster side may reach and
# open on this host (default deny; docs/configuration.md). Restart the unit after editing them.
${YAML.stringify(config)}`;
}
