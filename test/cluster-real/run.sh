#!/usr/bin/env bash
# Runs the real-cluster suite (make test-cluster): one local cluster for all of it. See --help.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
ENV_SCRIPTS="$ROOT/test/env"

usage() {
  cat <<EOF
Usage: test/cluster-real/run.sh [JEST ARGS...]

Runs test/cluster-real/*.test.ts (jest.cluster.config.js: in band, smoke test first) against one
local cluster: the one running (make cluster; left running), or one this script starts in
<repo>/.cluster and stops at the end, also when the suite fails or is interrupted
(UNDERPASS_CLUSTER_KEEP=1 leaves it running). JEST ARGS select files or tests, e.g.
  test/cluster-real/run.sh test/cluster-real/netpol.test.ts
  test/cluster-real/run.sh -t 'NodePort'
Without root, Linux or the cluster binaries every file is skipped, saying why.
Prints how long the start, the suite and the stop took.
EOF
}
case "${1:-}" in -h|--help) usage; exit 0 ;; esac

log() { printf '[test-cluster] %s\n' "$*" >&2; }
# The pinned Node 24 (image/node.sh), as every make target: jest and bin/underpass run on it.
PATH="$(bash "$ROOT/image/node.sh")${PATH:+:$PATH}"
export PATH
started=0
t0=$SECONDS
if [[ "$(id -u)" == 0 && "$(uname -s)" == Linux ]]; then
  if running="$(bash -c 'source "$1/cluster-lib.sh" && cluster_running_dir' _ "$ENV_SCRIPTS")"; then
    log "joining the cluster running in $running (left running afterwards)"
  else
    started=1
    stop_cluster() {
      local rc=$? t=$SECONDS
      if [[ "${UNDERPASS_CLUSTER_KEEP:-}" == 1 ]]; then
        log "UNDERPASS_CLUSTER_KEEP=1: the cluster keeps running (make cluster-stop)"
      else
        bash "$ENV_SCRIPTS/cluster-stop.sh" "$ROOT/.cluster" || rc=1
        log "cluster stopped in $((SECONDS - t)) s"
      fi
      exit "$rc"
    }
    trap stop_cluster EXIT
    trap 'exit 130' INT TERM
    bash "$ENV_SCRIPTS/cluster-start.sh" "$ROOT/.cluster"
    log "cluster started in $((SECONDS - t0)) s"
  fi
fi
# 1: this run started the cluster and nothing else uses it, so the smoke test may stop and
# start it again.
export UNDERPASS_CLUSTER_SUITE_STARTED="$started"
t1=$SECONDS
cd "$ROOT"
rc=0
node --experimental-vm-modules --no-warnings=ExperimentalWarning node_modules/jest/bin/jest.js \
  -c jest.cluster.config.js --runInBand "$@" || rc=$?
log "suite finished in $((SECONDS - t1)) s (exit $rc)"
exit "$rc"
