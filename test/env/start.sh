#!/usr/bin/env bash
# Start a throwaway Kubernetes control plane (etcd + kube-apiserver + kube-controller-manager)
# with all state in one directory. See test/env/README.md.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
source "$HERE/lib.sh"

usage() {
  cat <<EOF
Usage: test/env/start.sh [--timeout SECONDS] [--no-build]
                         [--cluster --advertise-address IP --service-cidr CIDR] DIR

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
  --cluster           the control plane of a cluster with a node (test/env/cluster-start.sh
                      uses it): Node+RBAC authorization, the default admission plugins
                      (ServiceAccount, PodSecurity, NodeRestriction...), the kubernetes
                      Service's endpoints reconciled, every default controller, and a client
                      certificate for the apiserver to reach kubelets
  --advertise-address IP  address the apiserver binds to and advertises (default 127.0.0.1;
                      with --cluster: an address pods reach, e.g. the pod bridge's gateway)
  --service-cidr CIDR Service ClusterIP range (default 10.0.0.0/24)
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
timeout="${UNDERPASS_TESTENV_START_TIMEOUT:-90}" build=1 dir="" cluster=0 adv=127.0.0.1 svc_cidr=10.0.0.0/24
while (($#)); do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --timeout) [[ $# -ge 2 ]] || testenv_die "--timeout needs a value"; timeout="$2"; shift ;;
    --timeout=*) timeout="${1#*=}" ;;
    --no-build) build=0 ;;
    --cluster) cluster=1 ;;
    --advertise-address) [[ $# -ge 2 ]] || testenv_die "--advertise-address needs a value"; adv="$2"; shift ;;
    --service-cidr) [[ $# -ge 2 ]] || testenv_die "--service-cidr needs a value"; svc_cidr="$2"; shift ;;
    -*) testenv_die "unknown option: $1 (see --help)" ;;
    *) [[ -z "$dir" ]] || testenv_die "only one DIR expected (see --help)"; dir="$1" ;;
  esac
  shift
done
[[ -n "$dir" ]] || { usage >&2; exit 2; }
[[ "$timeout" =~ ^[0-9]+$ ]] || testenv_die "--timeout must be a number of seconds"
testenv_ipv4_to_int "$adv" >/dev/null || testenv_die "--advertise-address must be an IPv4 address, got '$adv'"
svc_ip="$(testenv_cidr_host "$svc_cidr" 1)" || testenv_die "--service-cidr must be an IPv4 CIDR, got '$svc_cidr'"
if ((!cluster)) && [[ "$adv" != 127.* ]]; then
  testenv_die "--advertise-address other than loopback needs --cluster (the envtest control plane listens on loopback only)"
fi
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
# The serving cert names the advertised address and the kubernetes Service's ClusterIP (the
# first of the range): reissued when they change (a DIR first used with other options).
sans="IP:$adv,IP:$svc_ip"
if [[ ! -f "$PKI/apiserver.crt" || "$(cat "$PKI/apiserver.sans" 2>/dev/null)" != "$sans" ]]; then
  TESTENV_EXTRA_SANS="$sans" testenv_issue_cert "$PKI" "$PKI" apiserver server kube-apiserver
  echo "$sans" >"$PKI/apiserver.sans"
fi
# For kubelet's API (logs, exec, port-forward): kubelet authorizes it by SubjectAccessReview.
if ((cluster)) && [[ ! -f "$PKI/apiserver-kubelet-client.crt" ]]; then
  testenv_issue_cert "$PKI" "$PKI" apiserver-kubelet-client client kube-apiserver-kubelet-client system:masters
fi
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
# Drop reservations of an earlier run in this DIR before taking new ones (see testenv_pick_ports).
# The apiserver keeps its port when it is still free, so a kubeconfig copied from DIR stays good.
prev_apiserver_port=""
if [[ -f "$dir/env" ]]; then
  prev_apiserver_port="$(sed -n 's/^export APISERVER_PORT=\([0-9]*\)$/\1/p' "$dir/env")"
  testenv_release_ports "$dir"
fi
testenv_pick_ports "$dir" ETCD_PORT ETCD_PEER_PORT "APISERVER_PORT=$prev_apiserver_port" KCM_PORT
ETCD_URL="http://127.0.0.1:$ETCD_PORT"
APISERVER_URL="https://$adv:$APISERVER_PORT"

# ---------------------------------------------------------------------- kubeconfigs + env
testenv_write_kubeconfig "$dir/kubeconfig" "$APISERVER_URL" "$PKI/ca.crt" admin "$PKI/admin.crt" "$PKI/admin.key"
testenv_write_kubeconfig "$dir/controller-manager.kubeconfig" "$APISERVER_URL" "$PKI/ca.crt" \
  system:kube-controller-manager "$PKI/controller-manager.crt" "$PKI/controller-manager.key"
{
  echo "# Written by test/env/start.sh; source it: . $dir/env"
  for v in KUBECONFIG=$dir/kubeconfig UNDERPASS_TESTENV_DIR=$dir UNDERPASS_TESTENV_BIN=$BIN \
           APISERVER_URL=$APISERVER_URL APISERVER_PORT=$APISERVER_PORT ETCD_URL=$ETCD_URL \
           ETCD_PORT=$ETCD_PORT ETCD_PEER_PORT=$ETCD_PEER_PORT KCM_PORT=$KCM_PORT \
           UNDERPASS_TESTENV_CA=$PKI/ca.crt K8S_VERSION=$UNDERPASS_K8S_VERSION SERVICE_CIDR=$svc_cidr; do
    printf 'export %s=%q\n' "${v%%=*}" "${v#*=}"
  done
} >"$dir/env"

# ---------------------------------------------------------------------- processes
launch() { local name="$1"; shift; testenv_launch "$dir" "$BIN/$name" "$name" "$@"; }

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

# shellcheck disable=SC2054 # the commas are inside flag values
if ((cluster)); then
  # A cluster with a node: kubelets authorize as system:node:NAME (Node authorizer +
  # NodeRestriction), pods get service-account tokens (ServiceAccount admission) and Pod
  # Security admission applies namespace labels (both on by default); the kubernetes Service
  # gets the advertised address as its endpoint; the apiserver verifies kubelets' serving certs
  # and reaches them at their InternalIP (node names need not resolve).
  mode_flags=(
    --authorization-mode=Node,RBAC
    --enable-admission-plugins=NodeRestriction
    --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt"
    --kubelet-client-key="$PKI/apiserver-kubelet-client.key"
    --kubelet-certificate-authority="$PKI/ca.crt"
    --kubelet-preferred-address-types=InternalIP
  )
else
  mode_flags=(
    --authorization-mode=RBAC
    --disable-admission-plugins=ServiceAccount
    --endpoint-reconciler-type=none
  )
fi
launch kube-apiserver \
  --etcd-servers="$ETCD_URL" \
  --bind-address="$adv" --advertise-address="$adv" --secure-port="$APISERVER_PORT" \
  --cert-dir="$PKI" --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
  --client-ca-file="$PKI/ca.crt" \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
  --service-cluster-ip-range="$svc_cidr" \
  --allow-privileged=true \
  --shutdown-delay-duration=0s \
  "${mode_flags[@]}"
wait_for kube-apiserver https_ok "$APISERVER_URL/readyz"

# --cluster: every default controller ("*"): node-lifecycle lifts the node's not-ready taint,
# endpointslice feeds kube-proxy, daemonset/job/statefulset/... for charts' workloads.
controllers="$default_controllers"
((cluster)) && controllers="*"
# Started only now: kube-controller-manager gives up if the apiserver is not healthy soon.
# No --authentication/authorization-kubeconfig: its HTTPS port then serves only the
# always-allowed /healthz, /readyz, /livez (enough for us) and it does not log errors about
# the requestheader CA this apiserver has no use for.
launch kube-controller-manager \
  --kubeconfig="$dir/controller-manager.kubeconfig" \
  --bind-address=127.0.0.1 --secure-port="$KCM_PORT" --cert-dir="$PKI/controller-manager-serving" \
  --leader-elect=false \
  --controllers="${UNDERPASS_TESTENV_CONTROLLERS:-$controllers}" \
  --service-cluster-ip-range="$svc_cidr" \
  --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
  --flex-volume-plugin-dir="$dir/kcm-flexvolume" \
  --use-service-account-credentials=false
wait_for kube-controller-manager curl -fsSk --max-time 5 "https://127.0.0.1:$KCM_PORT/healthz"

testenv_log "ready after $((SECONDS - started))s: $APISERVER_URL ($UNDERPASS_K8S_VERSION)"
testenv_log "  export KUBECONFIG=$dir/kubeconfig   # or: source $dir/env"
testenv_log "  stop with: $HERE/stop.sh $dir"
