#!/usr/bin/env bash
# Build the Go yamux interop peer (test/interop/yamux-peer) if it is not cached yet, and print
# the path of the binary as the only line on stdout. Progress and errors go to stderr.
#
# Cache: ${UNDERPASS_TESTENV_CACHE:-$HOME/.cache/underpass-testenv}/yamux-peer/<key>/yamux-peer
# where <key> is the first 12 hex digits of sha256(go.mod + go.sum + main.go), so any change to
# the peer's sources or pinned yamux version builds a new binary; a cached one is reused as is.
#
# Requires: go (GOTOOLCHAIN=local: the installed toolchain is used, never downloaded) and, on a
# cold module cache, the Go module proxy for github.com/hashicorp/yamux.
# Options: --force  rebuild even if the cached binary exists.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SRC="$HERE/yamux-peer"

force=0
for arg in "$@"; do
  case "$arg" in
    --force) force=1 ;;
    -h|--help) sed -n '2,11p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 0 ;;
    *) printf '[build-peer] ERROR: unknown argument: %s\n' "$arg" >&2; exit 2 ;;
  esac
done

log() { printf '[build-peer] %s\n' "$*" >&2; }
die() { printf '[build-peer] ERROR: %s\n' "$*" >&2; exit 1; }

for f in go.mod go.sum main.go; do
  [[ -f "$SRC/$f" ]] || die "missing $SRC/$f"
done
key="$(cat "$SRC/go.mod" "$SRC/go.sum" "$SRC/main.go" | sha256sum | cut -c1-12)"
CACHE="${UNDERPASS_TESTENV_CACHE:-${HOME:?HOME is not set}/.cache/underpass-testenv}"
DIR="$CACHE/yamux-peer/$key"
BIN="$DIR/yamux-peer"

if [[ $force -eq 0 && -x "$BIN" ]]; then
  printf '%s\n' "$BIN"
  exit 0
fi

command -v go >/dev/null 2>&1 || die "go not found on PATH"
mkdir -p "$DIR"

# Serialize concurrent builds of the same key (e.g. parallel test workers).
if command -v flock >/dev/null 2>&1; then
  exec 9>"$DIR/.lock"
  flock 9
  if [[ $force -eq 0 && -x "$BIN" ]]; then
    printf '%s\n' "$BIN"
    exit 0
  fi
fi

log "building $BIN ($(GOTOOLCHAIN=local go version))"
tmp="$(mktemp "$DIR/.yamux-peer.XXXXXX")"
trap 'rm -f "$tmp"' EXIT
(
  cd "$SRC"
  GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-mod=readonly -buildvcs=false" \
    go build -trimpath -o "$tmp" . 1>&2
) || die "go build failed"
chmod 0755 "$tmp"
mv -f "$tmp" "$BIN"
trap - EXIT
log "built"
printf '%s\n' "$BIN"
