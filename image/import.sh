#!/usr/bin/env bash
# Import the image archive image/build.sh wrote into a containerd (the local cluster's by default).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEFAULT_ADDRESS="${CONTAINERD_ADDRESS:-$ROOT/.cluster/containerd/containerd.sock}"

usage() {
  cat <<EOF
Usage: image/import.sh [--address SOCKET] [--namespace NS] [--snapshotter NAME] [--if-running] ARCHIVE

Imports ARCHIVE (an OCI image archive from image/build.sh) into the containerd listening on
SOCKET, namespace NS, unpacked for NAME, so pods with imagePullPolicy IfNotPresent or Never run
it without a registry. The image name comes from the archive (io.containerd.image.name:
ghcr.io/underpass/underpass:<version>). Prints that name.

  --address SOCKET     default: \$CONTAINERD_ADDRESS, else the local cluster's
                       (<repo>/.cluster/containerd/containerd.sock, see test/env/README.md);
                       now: $DEFAULT_ADDRESS
  --namespace NS       default k8s.io (the namespace kubelet's CRI uses)
  --snapshotter NAME   default overlayfs (the CRI's default snapshotter)
  --if-running         exit 0 with a note when no containerd answers at SOCKET

The same by hand:  ctr -a SOCKET -n k8s.io images import ARCHIVE
Elsewhere: kind load image-archive ARCHIVE; a registry: skopeo copy oci-archive:ARCHIVE docker://...
(docs/image.md). Needs ctr (Debian package containerd, installed when missing) and the right to
use SOCKET (root, usually).
EOF
}

die() { printf '[image/import.sh] ERROR: %s\n' "$*" >&2; exit 1; }
address="$DEFAULT_ADDRESS" namespace=k8s.io snapshotter=overlayfs if_running=0 archive=""
while (($#)); do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --address) address="${2:?--address needs a socket path}"; shift ;;
    --namespace) namespace="${2:?--namespace needs a value}"; shift ;;
    --snapshotter) snapshotter="${2:?--snapshotter needs a value}"; shift ;;
    --if-running) if_running=1 ;;
    -*) die "unknown option: $1 (see --help)" ;;
    *) [[ -z "$archive" ]] || die "one ARCHIVE only"; archive="$1" ;;
  esac
  shift
done
[[ -n "$archive" ]] || { usage >&2; exit 2; }
[[ -f "$archive" ]] || die "no such archive: $archive"

bash "$ROOT/image/deps.sh" ctr
ctr_() { ctr --address "$address" --namespace "$namespace" "$@"; }
# A missing socket is "not running" at once (ctr would try to connect for 10 s).
if [[ ! -S "$address" ]] || ! ctr --connect-timeout 5s --address "$address" version >/dev/null 2>&1; then
  if ((if_running)); then
    printf '[image/import.sh] no containerd answers at %s: not imported (make cluster starts one; --address names another)\n' "$address" >&2
    exit 0
  fi
  die "no containerd answers at $address (make cluster starts the local one; --address names another)"
fi
log="$(ctr_ images import --snapshotter "$snapshotter" "$archive" 2>&1)" || die "ctr images import failed: $log"
# ctr prints "unpacking NAME (sha256:...)...done" per image.
name="$(sed -n 's/^unpacking \([^ ]*\) .*/\1/p' <<<"$log")"
[[ -n "$name" ]] || die "ctr imported no named image: $log"
printf '[image/import.sh] imported %s into %s (namespace %s)\n' "$name" "$address" "$namespace" >&2
echo "$name"
