#!/usr/bin/env bash
# make cluster-demo: Underpass as it ships, in the local cluster, traffic both ways. See --help.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
ENV_SCRIPTS="$ROOT/test/env"

usage() {
  cat <<EOF
Usage: test/env/cluster-demo.sh [--clean]   (make cluster-demo)

Starts the local single-node cluster unless one runs (make cluster, test/env/README.md), builds
the Underpass image (make image) and imports it, then:

  underpass-system  the operator, installed with Helm (2 replicas)
  demo-team         TunnelConnection dc1 (2 workers), a web server, a client pod,
                    ApplicationMappings peer-web (Connector-side) and team-web (Cluster-side)
  demo-peer         stands for the peer cluster: connector site-a installed with Helm from
                    \`underpass connector bundle --secret\`, a web server, a client pod

and sends one request each way through the tunnel: demo-team's client to demo-peer's web server
(through the workers' apps Service), demo-peer's client to demo-team's web server (through the
connector). Every namespace enforces the restricted Pod Security Standard. Prints what it started
and the kubectl commands to look at it. Running it again replaces the demo.

  --clean   remove the demo (helm uninstall, namespaces) and exit; the cluster keeps running
            (make cluster-stop stops it)

Needs root and Linux (the cluster); the first run builds the cluster's binaries (~15 min on 2 cores).
EOF
}

log() { printf '[cluster-demo] %s\n' "$*" >&2; }
die() { printf '[cluster-demo] ERROR: %s\n' "$*" >&2; exit 1; }

clean=0
case "${1:-}" in
  -h|--help) usage; exit 0 ;;
  --clean) clean=1 ;;
  '') ;;
  *) usage >&2; exit 2 ;;
esac
[[ "$(uname -s)" == Linux && "$(id -u)" == 0 ]] || die "the local cluster needs root on Linux (see test/env/README.md)"

OPERATOR_NS=underpass-system
TEAM=demo-team
PEER=demo-peer
TC=dc1
CONNECTOR=site-a
PEER_WEB_PORT=18080   # the workers' apps Service listens here for demo-peer's web server
TEAM_WEB_PORT=18081   # the connector listens here for demo-team's web server

PATH="$(bash "$ROOT/image/node.sh")${PATH:+:$PATH}"
export PATH
# shellcheck source=/dev/null
source "$ENV_SCRIPTS/cluster-lib.sh"
if dir="$(cluster_running_dir)"; then
  log "using the cluster running in $dir"
else
  ((clean)) && { log "no cluster runs: nothing to clean"; exit 0; }
  dir="$ROOT/.cluster"
  log "starting the local cluster in $dir (make cluster)"
  bash "$ENV_SCRIPTS/cluster-start.sh" "$dir"
fi
# shellcheck source=/dev/null
source "$dir/env"
export KUBECONFIG="$dir/kubeconfig"
PATH="$UNDERPASS_TESTENV_BIN:$PATH"
k() { kubectl "$@"; }

remove_demo() {
  helm uninstall "$CONNECTOR" -n "$PEER" --wait >/dev/null 2>&1 || true
  k delete tunnelconnection --all -n "$TEAM" --wait --timeout=60s >/dev/null 2>&1 || true
  helm uninstall underpass-operator -n "$OPERATOR_NS" --wait >/dev/null 2>&1 || true
  k delete namespace "$TEAM" "$PEER" "$OPERATOR_NS" --wait --timeout=120s --ignore-not-found >/dev/null
}
if ((clean)); then
  remove_demo
  log "demo removed (the cluster keeps running: make cluster-stop)"
  exit 0
fi
remove_demo

log "building the image (make image) and importing it into the cluster's containerd"
[[ -d "$ROOT/node_modules" ]] || (cd "$ROOT" && npm install --no-fund --no-audit >/dev/null)
[[ -f "$ROOT/dist/.stamp" ]] || (cd "$ROOT" && make --no-print-directory build >/dev/null)
archive="$(bash "$ROOT/image/build.sh" | tail -n1)"
image="$(bash "$ROOT/image/import.sh" --address "$CONTAINERD_ADDRESS" "$archive" | tail -n1)"
log "image $image"

restricted_ns() {
  k create namespace "$1" >/dev/null
  k label namespace "$1" pod-security.kubernetes.io/enforce=restricted pod-security.kubernetes.io/enforce-version=latest >/dev/null
  local i
  for ((i = 0; i < 100; i++)); do k get serviceaccount default -n "$1" >/dev/null 2>&1 && return; sleep 0.2; done
  die "no default ServiceAccount in $1"
}
# A testbox pod (test/env/images/testbox) with the restricted securityContext; web servers get a Service.
testbox() { # NS NAME ARGS...
  local ns="$1" name="$2"; shift 2
  local args; args="$(printf '"%s",' "$@")"
  cat <<EOF
---
apiVersion: v1
kind: Pod
metadata: {name: $name, namespace: $ns, labels: {app: $name}}
spec:
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 1
  securityContext: {runAsNonRoot: true, seccompProfile: {type: RuntimeDefault}}
  containers:
  - name: main
    image: $UNDERPASS_CLUSTER_TESTBOX_IMAGE
    imagePullPolicy: Never
    args: [${args%,}]
    resources: {requests: {cpu: 10m, memory: 16Mi}, limits: {memory: 64Mi}}
    securityContext: {allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, runAsNonRoot: true, capabilities: {drop: [ALL]}, seccompProfile: {type: RuntimeDefault}}
EOF
}
web_service() { # NS
  printf -- '---\napiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: %s}\nspec: {selector: {app: web}, ports: [{name: http, port: 8080}]}\n' "$1"
}

log "operator: helm install underpass-operator charts/underpass-operator -n $OPERATOR_NS"
restricted_ns "$OPERATOR_NS"
helm install underpass-operator "$ROOT/charts/underpass-operator" -n "$OPERATOR_NS" --wait --timeout 3m >/dev/null

log "apps: a web server and a client in $TEAM and in $PEER"
restricted_ns "$TEAM"
restricted_ns "$PEER"
{
  testbox "$TEAM" web serve -http :8080 -name "$TEAM"; web_service "$TEAM"
  testbox "$TEAM" client sleep
  testbox "$PEER" web serve -http :8080 -name "$PEER"; web_service "$PEER"
  testbox "$PEER" client sleep
} | k apply -f - >/dev/null

log "TunnelConnection $TEAM/$TC (2 workers) and its two ApplicationMappings"
k apply -f - >/dev/null <<EOF
apiVersion: underpass.dev/v1alpha1
kind: TunnelConnection
metadata: {name: $TC, namespace: $TEAM}
spec:
  replicas: 2
---
apiVersion: underpass.dev/v1alpha1
kind: ApplicationMapping
metadata: {name: peer-web, namespace: $TEAM}
spec:
  connection: $TC
  target: {side: Connector, host: web.$PEER.svc.cluster.local, port: 8080}
  listen: {port: $PEER_WEB_PORT}
---
apiVersion: underpass.dev/v1alpha1
kind: ApplicationMapping
metadata: {name: team-web, namespace: $TEAM}
spec:
  connection: $TC
  target: {side: Cluster, host: web.$TEAM.svc.cluster.local, port: 8080}
  listen: {port: $TEAM_WEB_PORT}
EOF
k wait -n "$TEAM" --for=condition=CertificatesReady "tunnelconnection/$TC" --timeout=2m >/dev/null

log "connector: underpass connector bundle --secret, then helm install $CONNECTOR charts/underpass-connector -n $PEER"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$ROOT/bin/underpass" connector bundle --connection "$TEAM/$TC" --name "$CONNECTOR" --secret --secret-namespace "$PEER" \
  --worker-url "wss://$TC-tunnel.$TEAM.svc.cluster.local:443" >"$work/secret.yaml"
k apply -f "$work/secret.yaml" >/dev/null
cat >"$work/values.yaml" <<EOF
listeners: [{name: team-web, port: $TEAM_WEB_PORT}]
networkPolicy:
  workers: [{namespace: $TEAM, podLabels: {app.kubernetes.io/name: underpass-worker, app.kubernetes.io/instance: $TC}, ports: [8443]}]
  targets: [{namespace: $PEER, podLabels: {app: web}, ports: [8080]}]
EOF
helm install "$CONNECTOR" "$ROOT/charts/underpass-connector" -n "$PEER" -f "$work/values.yaml" --wait --timeout 3m >/dev/null
k wait -n "$TEAM" --for=condition=Ready "tunnelconnection/$TC" --timeout=2m >/dev/null
k wait -n "$TEAM" --for=condition=Ready applicationmapping/peer-web applicationmapping/team-web --timeout=1m >/dev/null
k wait -n "$TEAM" --for=condition=Ready pod/client pod/web --timeout=2m >/dev/null
k wait -n "$PEER" --for=condition=Ready pod/client pod/web --timeout=2m >/dev/null

# A mapping is Ready once the operator has applied it; a worker's listener follows within a
# second or two: retry the first request for a few seconds, then fail with what it said.
through() { # NS URL EXPECTED-NAME
  local out="" i
  for ((i = 0; i < 20; i++)); do
    if out="$(k exec -n "$1" client -- /testbox get "$2" 2>&1)" && [[ "$out" == *"$3"* ]]; then
      printf '%s' "$out"
      return 0
    fi
    sleep 0.5
  done
  die "no answer from $2 in $1: $out"
}
log "traffic: $TEAM/client -> $PEER/web through the tunnel (Connector-side mapping peer-web)"
a="$(through "$TEAM" "http://$TC-apps.$TEAM.svc.cluster.local:$PEER_WEB_PORT/" "$PEER host=web")"
log "  answered: ${a%%$'\n'*}"
log "traffic: $PEER/client -> $TEAM/web through the connector (Cluster-side mapping team-web)"
b="$(through "$PEER" "http://underpass-connector-$CONNECTOR.$PEER.svc.cluster.local:$TEAM_WEB_PORT/" "$TEAM host=web")"
log "  answered: ${b%%$'\n'*}"

cat <<EOF

Underpass runs in the local cluster; traffic went both ways.
  operator     helm -n $OPERATOR_NS status underpass-operator     (image $image)
  connection   $TEAM/$TC: 2 workers; mappings peer-web (Connector-side), team-web (Cluster-side)
  connector    helm -n $PEER status $CONNECTOR                    ($PEER stands for the peer cluster)

Look at it:
  export KUBECONFIG=$dir/kubeconfig
  kubectl get tunnelconnections,applicationmappings,tunnelconnectors -n $TEAM
  kubectl get pods -n $TEAM -o wide; kubectl get pods -n $PEER -o wide
  kubectl describe tunnelconnection $TC -n $TEAM
  kubectl logs -n $TEAM -l app.kubernetes.io/name=underpass-worker --tail=20
  kubectl exec -n $TEAM client -- /testbox get http://$TC-apps.$TEAM.svc.cluster.local:$PEER_WEB_PORT/
  kubectl exec -n $PEER client -- /testbox get http://underpass-connector-$CONNECTOR.$PEER.svc.cluster.local:$TEAM_WEB_PORT/
Remove the demo: test/env/cluster-demo.sh --clean      Stop the cluster: make cluster-stop
EOF
