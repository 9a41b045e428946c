#!/usr/bin/env bash
# Show whether the local cluster runs, its components, memory, node and pods (make cluster-status).
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=cluster-lib.sh
source "$HERE/cluster-lib.sh"

case "${1:-}" in
  -h|--help)
    cat <<EOF
Usage: test/env/cluster-status.sh [DIR]

Prints which cluster runs on this machine (DIR, default: the running one, else
$UNDERPASS_CLUSTER_DEFAULT_DIR), each component with its pid and RSS, the node and the pods.
Exit 0 when every component of DIR runs, 1 when none does, 2 when only some do.
EOF
    exit 0 ;;
esac
dir="${1:-}"
if [[ -z "$dir" ]]; then dir="$(cluster_running_dir)" || dir="$UNDERPASS_CLUSTER_DEFAULT_DIR"; fi
[[ -d "$dir" ]] && dir="$(cd "$dir" && pwd -P)"

up=0 down=0 total=0
for c in "${UNDERPASS_CLUSTER_COMPONENTS[@]}"; do
  if pid="$(testenv_pid_alive "$dir" "$c")"; then
    kib="$(cluster_rss_kib "$pid")"; total=$((total + kib)); up=$((up + 1))
    printf '  %-24s running  pid %-8s %5d MiB\n' "$c" "$pid" $((kib / 1024))
  else
    printf '  %-24s stopped\n' "$c"; down=$((down + 1))
  fi
done
mapfile -t shims < <(cluster_shim_pids "$dir")
if ((${#shims[@]})); then
  kib="$(cluster_rss_kib "${shims[@]}")"; total=$((total + kib))
  printf '  %-24s %-21s %5d MiB\n' "containerd shims" "${#shims[@]}" $((kib / 1024))
fi
if ((up == 0)); then
  echo "no cluster runs in $dir"
  other="$(cluster_running_dir)" && echo "(a cluster runs from $other)"
  exit 1
fi
echo "cluster in $dir: $up of ${#UNDERPASS_CLUSTER_COMPONENTS[@]} components running, $((total / 1024)) MiB RSS"
echo "  export KUBECONFIG=$dir/kubeconfig   # or: source $dir/env"
if testenv_pid_alive "$dir" kube-apiserver >/dev/null; then
  "$UNDERPASS_TESTENV_BIN/kubectl" --kubeconfig "$dir/kubeconfig" get nodes -o wide 2>&1 | sed 's/^/  /'
  "$UNDERPASS_TESTENV_BIN/kubectl" --kubeconfig "$dir/kubeconfig" get pods -A -o wide 2>&1 | sed 's/^/  /'
fi
((down == 0)) || exit 2
