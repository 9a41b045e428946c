#!/usr/bin/env bash
# Build the local cluster's own images (sandbox "pause" and the "testbox" test server) from the
# Go sources in test/env/images/, as OCI archives in the cache. See test/env/README.md.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=cluster-lib.sh
source "$HERE/cluster-lib.sh"

usage() {
  cat <<EOF
Usage: test/env/cluster-images.sh [--force]

Builds two static Go programs from test/env/images/ (standard library only, CGO_ENABLED=0)
and packs each into a one-layer OCI image archive with image/oci-image.sh (the packer of the
Underpass image too):

  pause.tar    ${UNDERPASS_CLUSTER_PAUSE_IMAGE}    containerd's sandbox image; user 65535
  testbox.tar  ${UNDERPASS_CLUSTER_TESTBOX_IMAGE}  HTTP/echo server + clients; user 65532

into \${UNDERPASS_TESTENV_CACHE}/images/KEY/ (KEY: hash of the sources, this script, image/oci-image.sh
and the Go version), next to the binaries (testbox also runs on the host as a DNS/HTTP probe).
A cached KEY is reused as is (~0.1 s); a cold build takes ~20 s. Prints the directory.
cluster-start.sh runs this and imports both archives at every start.

Options:
  --force     rebuild even if the archives exist
  -h, --help  show this help
EOF
}
force=0
while (($#)); do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --force) force=1 ;;
    *) cluster_die "unknown argument: $1 (see --help)" ;;
  esac
  shift
done

command -v go >/dev/null 2>&1 || cluster_die "go is not on PATH"
export GOTOOLCHAIN=local CGO_ENABLED=0 GOWORK=off GOFLAGS=-buildvcs=false
SRC="$HERE/images"
PACK="$HERE/../../image/oci-image.sh"
key="$(
  {
    find "$SRC" -type f \( -name '*.go' -o -name go.mod \) -print0 | sort -z | xargs -0 cat
    cat "${BASH_SOURCE[0]}" "$PACK"
    go version
    echo "$UNDERPASS_CLUSTER_PAUSE_IMAGE $UNDERPASS_CLUSTER_TESTBOX_IMAGE"
  } | sha256sum | cut -c1-12
)"
OUT="$UNDERPASS_TESTENV_CACHE/images/$key"
if ((!force)) && [[ -f "$OUT/pause.tar" && -f "$OUT/testbox.tar" && -x "$OUT/testbox" ]]; then
  echo "$OUT"
  exit 0
fi

mkdir -p "$OUT"
exec 7>"$OUT/.lock"
flock 7
if ((!force)) && [[ -f "$OUT/pause.tar" && -f "$OUT/testbox.tar" && -x "$OUT/testbox" ]]; then
  echo "$OUT"
  exit 0
fi

start=$SECONDS
cluster_log "building the pause and testbox images into $OUT"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$SRC" && go build -trimpath -ldflags="-s -w" -o "$work/bin/" ./pause ./testbox)

# Root filesystems: the binary, the directories runc mounts over (read-only root filesystems
# cannot create them later), nothing else: no shell, no libc, no passwd (numeric users).
for img in pause testbox; do
  r="$work/rootfs-$img"
  mkdir -p "$r/etc" "$r/proc" "$r/sys" "$r/dev" "$r/tmp"
  chmod 1777 "$r/tmp"
  install -m 0755 "$work/bin/$img" "$r/$img"
done
bash "$PACK" --ref "$UNDERPASS_CLUSTER_PAUSE_IMAGE" --entrypoint /pause --user 65535:65535 \
  --out "$work/pause.tar" --layer "$work/rootfs-pause" --history "test/env/cluster-images.sh: /pause" >/dev/null
bash "$PACK" --ref "$UNDERPASS_CLUSTER_TESTBOX_IMAGE" --entrypoint /testbox --user 65532:65532 \
  --out "$work/testbox.tar" --layer "$work/rootfs-testbox" --history "test/env/cluster-images.sh: /testbox" >/dev/null
install -m 0755 "$work/bin/testbox" "$OUT/testbox.tmp"
mv -f "$OUT/testbox.tmp" "$OUT/testbox"
mv -f "$work/pause.tar" "$OUT/pause.tar"
mv -f "$work/testbox.tar" "$OUT/testbox.tar"
cluster_log "images built in $((SECONDS - start))s: $(du -h "$OUT/pause.tar" | cut -f1) pause, $(du -h "$OUT/testbox.tar" | cut -f1) testbox"
echo "$OUT"
