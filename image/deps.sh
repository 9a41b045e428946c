#!/usr/bin/env bash
# Install the Debian packages that provide COMMANDs, only those missing. See --help.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: image/deps.sh COMMAND...

Makes sure every COMMAND is on PATH, installing its Debian package with apt-get when it is
missing (idempotent: nothing is installed or updated when all are there). Known commands and
their packages:

  dpkg-deb    dpkg         (unpacks the runtime libraries' .deb files)
  apt-get     apt          (downloads them; must be there already)
  containerd  containerd   (the image test runs the image under a private containerd)
  ctr         containerd
  runc        runc

Needs root or password-less sudo to install. Exits 1 naming what is still missing.
EOF
}

die() { printf '[image/deps.sh] ERROR: %s\n' "$*" >&2; exit 1; }
[[ $# -gt 0 ]] || { usage >&2; exit 2; }
[[ "$1" == -h || "$1" == --help ]] && { usage; exit 0; }

missing=() pkgs=()
for cmd in "$@"; do
  case "$cmd" in
    dpkg-deb) pkg=dpkg ;;
    apt-get) pkg=apt ;;
    containerd|ctr) pkg=containerd ;;
    runc) pkg=runc ;;
    *) die "unknown command '$cmd' (see --help)" ;;
  esac
  command -v "$cmd" >/dev/null 2>&1 && continue
  missing+=("$cmd")
  [[ " ${pkgs[*]-} " == *" $pkg "* ]] || pkgs+=("$pkg")
done
((${#missing[@]} == 0)) && exit 0

command -v apt-get >/dev/null 2>&1 || die "${missing[*]} missing and no apt-get to install ${pkgs[*]}"
SUDO=()
if [[ "$(id -u)" -ne 0 ]]; then
  sudo -n true 2>/dev/null || die "${missing[*]} missing; installing ${pkgs[*]} needs root (or password-less sudo)"
  SUDO=(sudo -n)
fi
printf '[image/deps.sh] installing %s from Debian\n' "${pkgs[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null 2>&1 || {
  # A fresh machine may have no package lists yet.
  "${SUDO[@]}" apt-get update -qq >/dev/null 2>&1 || true
  "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null ||
    die "apt-get install ${pkgs[*]} failed"
}
for cmd in "${missing[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || die "$cmd is still missing after installing ${pkgs[*]}"
done
