#!/usr/bin/env bash
# Start a throwaway Kubernetes control plane (etcd + kube-apiserver + kube-controller-manager)
# with all state in one directory. See test/env/README.md.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
source "$HERE/lib.sh"

usage() {
  cat <<EOF
Usage: test/env/start.sh [--timeout SECONDS] [--no-build] DIR

Starts etcd, kube-apiserver and kube-controller-manager (Kubernetes ${UNDERPASS_K8S_VERSION}) as
background processes that keep running after this script exits, with all state in DIR:

  DIR/kubeconfig        admin kubeconfig (user "admin", group system:masters, certs embedded)
  DIR/env               shell-sourceable: KUBECONFIG, APISERVER_URL, ports, bin dir
  DIR/pki/              CA, apiserver serving cert, client certs, service-account key
  DIR/etcd/             etcd data (fsync disabled)
  DIR/*.log, DIR/*.pid  one per component

Ports are free loopback ports picked at random (two concurrent runs do not collide).
Exits 0 once /readyz of the apiserver and /healthz of the controller manager answer "ok";
on failure prints the tail of the logs, stops what it started and exits non-zero.
Missing binaries are built first with test/env/build.sh (~10 minutes on a cold cache)
unless --no-build is given. If DIR holds state from an earlier run that was stopped, the
certificates and etcd data are reused. Stop with: test/env/stop.sh DIR

Options:
  --timeout SECONDS   how long to wait for readiness (default: ${UNDERPASS_TESTENV_START_TIMEOUT:-90},
                      env UNDERPASS_TESTENV_START_TIMEOUT)
  --no-build          fail instead of building missing binaries
  -h, --help          show this help

Environment:
  UNDERPASS_TESTENV_CACHE        cache root (default \$HOME/.cache/underpass-testenv)
  UNDERPASS_TESTENV_CONTROLLERS  kube-controller-manager --controllers value
                                 (default: $default_controllers)

Example:
  test/env/start.sh /tmp/k8s && source /tmp/k8s/env && "\$UNDERPASS_TESTENV_BIN/kubectl" get ns
EOF
}

default_controllers="garbage-collector-controller,namespace-controller,serviceaccount-controller,serviceaccount-token-controller,deployment-controller,replicaset-controller,root-ca-certificate-publisher-controller,clusterrole-aggregation-controller"
timeout="${UNDERPASS_TESTENV_START_TIMEOUT:-90}" build=1 dir=""
while (($#)); do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --timeout) [[ $# -ge 2 ]] || testenv_die "--timeout needs a value"; timeout="$2"; shift ;;
    --timeout=*) timeout="${1#*=}" ;;
    --no-build) build=0 ;;
    -*) testenv_die "unknown option: $1 (see --help)" ;;
    *) [[ -z "$dir" ]] || testenv_die "only one DIR expected (see --help)"; dir="$1" ;;
  esac
  shift
done
[[ -n "$dir" ]] || { usage >&2; exit 2; }
[[ "$timeout" =~ ^[0-9]+$ ]] || testenv_die "--timeout must be a number of seconds"
for tool in openssl curl base64 ss flock setsid; do
  command -v "$tool" >/dev/null 2>&1 || testenv_die "$tool is required but not on PATH"
done

mkdir -p "$dir"
dir="$(cd "$dir" && pwd -P)"
BIN="$UNDERPASS_TESTENV_BIN"

# Refuse to start twice in the same directory.
for c in "${UNDERPASS_TESTENV_COMPONENTS[@]}"; do
  if pid="$(testenv_pid_alive "$dir" "$c")"; then
    testenv_die "$c is already running in $dir (pid $pid); run test/env/stop.sh $dir first"
  fi
done

# ------------------------------------------------------------------------- binaries
needed=(etcd kube-apiserver kube-controller-manager kubectl)
missing=()
for n in "${needed[@]}"; do testenv_is_built "$n" || missing+=("$n"); done
if ((${#missing[@]})); then
  ((build)) || testenv_die "missing binaries in $BIN: ${missing[*]} (run test/env/build.sh)"
  testenv_log "missing binaries (${missing[*]}); running test/env/build.sh first"
  "$HERE/build.sh" "${missing[@]}" >&2
fi

# ---------------------------------------------------------------------- certificates
PKI="$dir/pki"
testenv_new_ca "$PKI"
[[ -f "$PKI/apiserver.crt" ]] || testenv_issue_cert "$PKI" "$PKI" apiserver server kube-apiserver
[[ -f "$PKI/admin.crt" ]] || testenv_issue_cert "$PKI" "$PKI" admin client admin system:masters
# The controller manager runs all controllers with its own identity (no per-controller
# service accounts), so it needs broad rights: system:masters keeps this simple.
[[ -f "$PKI/controller-manager.crt" ]] ||
  testenv_issue_cert "$PKI" "$PKI" controller-manager client system:kube-controller-manager system:masters
if [[ ! -f "$PKI/sa.key" ]]; then
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$PKI/sa.key" 2>/dev/null ||
    testenv_die "openssl could not create the service-account key"
  openssl pkey -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
  chmod 600 "$PKI/sa.key"
fi

# ---------------------------------------------------------------------- free ports
# Random ports below the ephemeral range (so outgoing connections do not take them) that
# nothing listens on (ss) and that no other test environment has reserved. Reservations are
# files in $RESV (content: the owning DIR), taken under a machine-wide lock; stop.sh drops
# them, and a reservation whose owner runs nothing and is older than 10 minutes is stale.
read -r eph_lo _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || eph_lo=32768
port_lo=15000 port_hi=$((eph_lo - 1))
((port_hi - port_lo >= 1000)) || { port_lo=20000; port_hi=60999; }
RESV="$(testenv_port_reservations)"
mkdir -p "$RESV"
exec 8>>"$RESV/.lock"
flock -w 60 8 || testenv_die "could not take the port lock $RESV/.lock"
reserved() {
  local f="$RESV/$1" owner c
  [[ -f "$f" ]] || return 1
  owner="$(cat "$f" 2>/dev/null)" || return 1
  [[ "$owner" == "$dir" ]] && return 1   # our own leftover from an earlier run
  [[ -n "$(find "$f" -mmin -10 2>/dev/null)" ]] && return 0
  for c in "${UNDERPASS_TESTENV_COMPONENTS[@]}"; do testenv_pid_alive "$owner" "$c" >/dev/null && return 0; done
  return 1
}
chosen=" "
pick_port() {
  local p i
  for ((i = 0; i < 500; i++)); do
    p=$((port_lo + (RANDOM * 32768 + RANDOM) % (port_hi - port_lo + 1)))
    [[ "$chosen" == *" $p "* ]] && continue
    testenv_port_in_use "$p" && continue
    reserved "$p" && continue
    chosen+="$p "
    echo "$dir" >"$RESV/$p"
    PICKED="$p"
    return 0
  done
  testenv_die "could not find a free port in $port_lo-$port_hi"
}
# Drop reservations of an earlier run in this DIR before taking new ones.
[[ -f "$dir/env" ]] && testenv_release_ports "$dir"
for var in ETCD_PORT ETCD_PEER_PORT APISERVER_PORT KCM_PORT; do
  pick_port
  printf -v "$var" '%s' "$PICKED"
done
flock -u 8; exec 8>&-
ETCD_URL="http://127.0.0.1:$ETCD_PORT"
APISERVER_URL="https://127.0.0.1:$APISERVER_PORT"

# ---------------------------------------------------------------------- kubeconfigs + env
testenv_write_kubeconfig "$dir/kubeconfig" "$APISERVER_URL" "$PKI/ca.crt" admin "$PKI/admin.crt" "$PKI/admin.key"
testenv_write_kubeconfig "$dir/controller-manager.kubeconfig" "$APISERVER_URL" "$PKI/ca.crt" \
  system:kube-controller-manager "$PKI/controller-manager.crt" "$PKI/controller-manager.key"
{
  echo "# Written by test/env/start.sh; source it: . $dir/env"
  for v in KUBECONFIG=$dir/kubeconfig UNDERPASS_TESTENV_DIR=$dir UNDERPASS_TESTENV_BIN=$BIN \
           APISERVER_URL=$APISERVER_URL APISERVER_PORT=$APISERVER_PORT ETCD_URL=$ETCD_URL \
           ETCD_PORT=$ETCD_PORT ETCD_PEER_PORT=$ETCD_PEER_PORT KCM_PORT=$KCM_PORT \
           UNDERPASS_TESTENV_CA=$PKI/ca.crt K8S_VERSION=$UNDERPASS_K8S_VERSION; do
    printf 'export %s=%q\n' "${v%%=*}" "${v#*=}"
  done
} >"$dir/env"

# ---------------------------------------------------------------------- processes
# launch NAME ARGS...: detached (own session, stdio to DIR/NAME.log, no inherited lock fds),
# pid written by the process itself before exec so it is the real pid.
launch() {
  local name="$1"; shift
  : >>"$dir/$name.log"
  printf '\n==== %s start.sh: %s %s\n' "$(date -u +%FT%TZ)" "$name" "$*" >>"$dir/$name.log"
  # shellcheck disable=SC2016 # $$ and $@ are for the inner bash
  setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' _ "$dir/$name.pid" "$BIN/$name" "$@" \
    </dev/null >>"$dir/$name.log" 2>&1 8>&- &
  local i
  for ((i = 0; i < 50; i++)); do [[ -s "$dir/$name.pid" ]] && break; sleep 0.1; done
}

deadline=$((SECONDS + timeout))
failed() {
  local c
  testenv_log "FAILED: $*"
  for c in "${UNDERPASS_TESTENV_COMPONENTS[@]}"; do
    [[ -f "$dir/$c.log" ]] || continue
    printf '\n----- last 30 lines of %s -----\n' "$dir/$c.log" >&2
    tail -n 30 "$dir/$c.log" >&2
  done
  printf '\n' >&2
  testenv_log "stopping what was started; state and logs are kept in $dir"
  "$HERE/stop.sh" "$dir" >&2 || true
  exit 1
}
# wait_for NAME CHECK...: until CHECK succeeds, the process dies, or the deadline passes.
wait_for() {
  local name="$1"; shift
  while ! "$@" >/dev/null 2>&1; do
    testenv_pid_alive "$dir" "$name" >/dev/null || failed "$name exited (see $dir/$name.log)"
    ((SECONDS < deadline)) || failed "timed out after ${timeout}s waiting for $name"
    sleep 0.5
  done
}
https_ok() { # URL: 200 "ok" with the admin client cert
  [[ "$(curl -sS --max-time 5 --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" "$1")" == ok ]]
}

rm -f "$dir"/{etcd,kube-apiserver,kube-controller-manager}.pid
started=$SECONDS
testenv_log "starting in $dir: etcd :$ETCD_PORT, kube-apiserver :$APISERVER_PORT, kube-controller-manager :$KCM_PORT"

launch etcd \
  --name=testenv --data-dir="$dir/etcd" --unsafe-no-fsync \
  --listen-client-urls="$ETCD_URL" --advertise-client-urls="$ETCD_URL" \
  --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster="testenv=http://127.0.0.1:$ETCD_PEER_PORT" \
  --log-level=warn
wait_for etcd curl -fsS --max-time 2 "$ETCD_URL/health"

launch kube-apiserver \
  --etcd-servers="$ETCD_URL" \
  --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$APISERVER_PORT" \
  --cert-dir="$PKI" --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
  --client-ca-file="$PKI/ca.crt" \
  --authorization-mode=RBAC \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
  --service-cluster-ip-range=10.0.0.0/24 \
  --disable-admission-plugins=ServiceAccount \
  --allow-privileged=true \
  --endpoint-reconciler-type=none \
  --shutdown-delay-duration=0s
wait_for kube-apiserver https_ok "$APISERVER_URL/readyz"

# Started only now: kube-controller-manager gives up if the apiserver is not healthy soon.
# No --authentication/authorization-kubeconfig: its HTTPS port then serves only the
# always-allowed /healthz, /readyz, /livez (enough for us) and it does not log errors about
# the requestheader CA this apiserver has no use for.
launch kube-controller-manager \
  --kubeconfig="$dir/controller-manager.kubeconfig" \
  --bind-address=127.0.0.1 --secure-port="$KCM_PORT" --cert-dir="$PKI/controller-manager-serving" \
  --leader-elect=false \
  --controllers="${UNDERPASS_TESTENV_CONTROLLERS:-$default_controllers}" \
  --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
  --use-service-account-credentials=false
wait_for kube-controller-manager curl -fsSk --max-time 5 "https://127.0.0.1:$KCM_PORT/healthz"

testenv_log "ready after $((SECONDS - started))s: $APISERVER_URL ($UNDERPASS_K8S_VERSION)"
testenv_log "  export KUBECONFIG=$dir/kubeconfig   # or: source $dir/env"
testenv_log "  stop with: $HERE/stop.sh $dir"
