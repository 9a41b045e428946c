#!/usr/bin/env bash
# Import image archives into the running local cluster's containerd, where pods find them.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=cluster-lib.sh
source "$HERE/cluster-lib.sh"

usage() {
  cat <<EOF
Usage: test/env/cluster-import.sh [--dir DIR] FILE.tar...

Imports OCI or Docker image archives (e.g. from image/oci-image.sh, make image, docker save)
into the containerd of the running local cluster (namespace k8s.io, the one kubelet uses), so
pods with imagePullPolicy IfNotPresent or Never run them without a registry. The image name
comes from the archive (io.containerd.image.name / org.opencontainers.image.ref.name
annotation, or the Docker manifest's RepoTags). Prints the imported image names.
DIR: the cluster's directory (default: the running cluster).

The same by hand:  ctr --address DIR/containerd/containerd.sock -n k8s.io images import FILE.tar
EOF
}
dir="" files=()
while (($#)); do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --dir) dir="${2:?--dir needs a value}"; shift ;;
    -*) cluster_die "unknown option: $1 (see --help)" ;;
    *) files+=("$1") ;;
  esac
  shift
done
((${#files[@]})) || { usage >&2; exit 2; }
if [[ -z "$dir" ]]; then
  dir="$(cluster_running_dir)" || cluster_die "no local cluster runs (start it with make cluster)"
fi
dir="$(cd "$dir" && pwd -P)"
testenv_pid_alive "$dir" containerd >/dev/null || cluster_die "the cluster's containerd does not run in $dir"
for f in "${files[@]}"; do
  [[ -f "$f" ]] || cluster_die "no such file: $f"
  log="$(cluster_ctr "$dir" images import "$f" 2>&1)" || cluster_die "ctr images import $f failed: $log"
  # ctr prints "unpacking NAME (sha256:...)...done" per image.
  sed -n 's/^unpacking \([^ ]*\) .*/\1/p' <<<"$log"
done
