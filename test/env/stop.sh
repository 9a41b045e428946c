#!/usr/bin/env bash
# Stop the control plane that test/env/start.sh started in DIR. Idempotent.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
source "$HERE/lib.sh"

usage() {
  cat <<EOF
Usage: test/env/stop.sh [--grace SECONDS] [--purge] DIR

Stops kube-controller-manager, kube-apiserver and etcd started by test/env/start.sh in DIR:
SIGTERM, then SIGKILL for whatever still runs after the grace period (default 5 s).
Only processes named by DIR/*.pid whose command line matches the component and DIR are
signalled. Safe to run repeatedly, on a DIR that was never started, or on a missing DIR.

Options:
  --grace SECONDS  time between SIGTERM and SIGKILL (default 5)
  --purge          remove DIR afterwards
  -h, --help       show this help
EOF
}

grace=5 purge=0 dir=""
while (($#)); do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --grace) [[ $# -ge 2 ]] || testenv_die "--grace needs a value"; grace="$2"; shift ;;
    --grace=*) grace="${1#*=}" ;;
    --purge) purge=1 ;;
    -*) testenv_die "unknown option: $1 (see --help)" ;;
    *) [[ -z "$dir" ]] || testenv_die "only one DIR expected (see --help)"; dir="$1" ;;
  esac
  shift
done
[[ -n "$dir" ]] || { usage >&2; exit 2; }
[[ "$grace" =~ ^[0-9]+$ ]] || testenv_die "--grace must be a number of seconds"

if [[ ! -d "$dir" ]]; then
  testenv_log "$dir does not exist; nothing to stop"
  exit 0
fi
dir="$(cd "$dir" && pwd -P)"

# Two rounds: the controller manager and the apiserver first, etcd once they are gone. On its
# way out the apiserver removes its address from the kubernetes Service's endpoints (start.sh
# --cluster); with etcd already gone that fails, and the next start would find the old port
# there (the apiserver does not reconcile endpoint ports).
pids=() names=()
alive() { [[ -d "/proc/$1" ]] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null; }
stop_round() {
  local c pid idx deadline round_pids=() round_names=()
  for c in "$@"; do
    if pid="$(testenv_pid_alive "$dir" "$c")"; then
      kill -TERM "$pid" 2>/dev/null || true
      round_pids+=("$pid"); round_names+=("$c")
      testenv_log "sent SIGTERM to $c (pid $pid)"
    fi
  done
  deadline=$((SECONDS + grace))
  for idx in "${!round_pids[@]}"; do
    pid="${round_pids[idx]}"
    while alive "$pid" && ((SECONDS < deadline)); do sleep 0.1; done
    if alive "$pid"; then
      testenv_log "${round_names[idx]} (pid $pid) still running after ${grace}s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      for ((w = 0; w < 25; w++)); do alive "$pid" || break; sleep 0.2; done
    fi
  done
  pids+=("${round_pids[@]}"); names+=("${round_names[@]}")
}
stop_round kube-controller-manager kube-apiserver
stop_round etcd

for c in "${UNDERPASS_TESTENV_COMPONENTS[@]}"; do
  if pid="$(testenv_pid_alive "$dir" "$c")"; then
    testenv_die "$c (pid $pid) is still running"
  fi
  rm -f "$dir/$c.pid"
done
testenv_release_ports "$dir"

if ((${#pids[@]} == 0)); then
  testenv_log "nothing was running in $dir"
else
  testenv_log "stopped ${names[*]} in $dir"
fi
if ((purge)); then
  rm -rf "$dir"
  testenv_log "removed $dir"
fi
