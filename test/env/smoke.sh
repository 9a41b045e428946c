#!/usr/bin/env bash
# End-to-end check of the test control plane: start, exercise, stop.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

usage() {
  cat <<'EOF'
Usage: test/env/smoke.sh [DIR]

Starts a control plane with test/env/start.sh in DIR (default: a new temp dir) and checks
that it works: kubectl get ns, a CRD and a custom object, a Deployment -> ReplicaSet -> Pods,
ownerReference garbage collection, namespace deletion (namespace controller + GC), a
non-admin user from test/env/user-kubeconfig.sh being Forbidden to list secrets until RBAC
allows it, and helm install/uninstall of a tiny chart. Stops the control plane at the end
(also on failure) and removes DIR if it created it. Exit 0 when every check passed.
EOF
}
case "${1:-}" in -h|--help) usage; exit 0 ;; esac

if [[ -n "${1:-}" ]]; then dir="$1" own=0; else dir="$(mktemp -d -t underpass-smoke.XXXXXX)" own=1; fi
step() { printf '[smoke] %s\n' "$*" >&2; }
fail() { printf '[smoke] FAILED: %s\n' "$*" >&2; exit 1; }
cleanup() {
  local rc=$?
  "$HERE/stop.sh" "$dir" >&2 || true
  if ((own && rc == 0)); then rm -rf "$dir"; fi
  ((rc == 0)) || printf '[smoke] state and logs kept in %s\n' "$dir" >&2
  exit "$rc"
}
trap cleanup EXIT

step "start.sh $dir"
"$HERE/start.sh" "$dir"
# shellcheck source=/dev/null
source "$dir/env"
k() { "$UNDERPASS_TESTENV_BIN/kubectl" "$@"; }
h() { "$UNDERPASS_TESTENV_BIN/helm" "$@"; }
# retry SECONDS CMD...: until CMD succeeds
retry() {
  local until=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do ((SECONDS < until)) || return 1; sleep 0.5; done
}

step "server version + namespaces"
[[ "$(k version -o json | sed -n 's/.*"gitVersion": "\(v[^"]*\)".*/\1/p' | tail -n1)" == "$K8S_VERSION" ]] ||
  fail "server does not report $K8S_VERSION"
k get ns default kube-system >/dev/null

step "CRD + custom object"
k apply -f - >/dev/null <<'EOF'
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.smoke.underpass.test
spec:
  group: smoke.underpass.test
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec: {type: object, properties: {size: {type: integer}}}
EOF
k wait --for=condition=Established crd/widgets.smoke.underpass.test --timeout=30s >/dev/null
cat >"$dir/widget.yaml" <<'EOF'
apiVersion: smoke.underpass.test/v1
kind: Widget
metadata: {name: w1, namespace: default}
spec: {size: 3}
EOF
retry 20 k apply -f "$dir/widget.yaml" || fail "could not create a Widget"
[[ "$(k get widget w1 -o jsonpath='{.spec.size}')" == 3 ]] || fail "Widget not stored"

step "namespace with a Deployment -> ReplicaSet -> Pods"
k create namespace smoke >/dev/null
retry 30 k -n smoke get serviceaccount default || fail "serviceaccount controller did not create default SA"
retry 30 k -n smoke get configmap kube-root-ca.crt || fail "root CA publisher did not create kube-root-ca.crt"
k -n smoke create deployment web --image=registry.invalid/web:1 --replicas=2 >/dev/null
pods_created() { [[ "$(k -n smoke get pods -l app=web -o name | wc -l)" -eq 2 ]]; }
retry 30 pods_created || fail "deployment/replicaset controllers did not create 2 pods"

step "ownerReference garbage collection"
k -n smoke create configmap owner >/dev/null
uid="$(k -n smoke get configmap owner -o jsonpath='{.metadata.uid}')"
k apply -f - >/dev/null <<EOF
apiVersion: v1
kind: ConfigMap
metadata:
  name: child
  namespace: smoke
  ownerReferences: [{apiVersion: v1, kind: ConfigMap, name: owner, uid: "$uid"}]
EOF
k -n smoke delete configmap owner >/dev/null
gone() { local out; out="$(k "$@" 2>&1)" && return 1; grep -q NotFound <<<"$out"; }
retry 30 gone -n smoke get configmap child || fail "garbage collector did not delete the dependent"

step "namespace deletion"
k delete namespace smoke --wait=false >/dev/null
retry 60 gone get namespace smoke || fail "namespace smoke still exists (namespace controller / GC)"

step "non-admin user is subject to RBAC"
"$HERE/user-kubeconfig.sh" --out "$dir/smoke-user.kubeconfig" "$dir" smoke-user smoke:group
ku() { "$UNDERPASS_TESTENV_BIN/kubectl" --kubeconfig "$dir/smoke-user.kubeconfig" "$@"; }
[[ "$(ku auth whoami -o jsonpath='{.status.userInfo.username}')" == smoke-user ]] || fail "whoami is not smoke-user"
if out="$(ku get secrets -A 2>&1)"; then fail "smoke-user could list secrets: $out"; fi
grep -q Forbidden <<<"$out" || fail "expected Forbidden, got: $out"
k create clusterrole smoke-secrets --verb=get,list --resource=secrets >/dev/null
k create clusterrolebinding smoke-secrets --clusterrole=smoke-secrets --group=smoke:group >/dev/null
retry 10 ku get secrets -A || fail "smoke-user still cannot list secrets after the binding"

step "helm install/uninstall"
chart="$dir/smoke-chart"
mkdir -p "$chart/templates"
printf 'apiVersion: v2\nname: smoke\nversion: 0.1.0\nkubeVersion: ">=1.30.0-0"\n' >"$chart/Chart.yaml"
printf 'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: smoke-{{ .Release.Name }}}\ndata: {kube: "{{ .Capabilities.KubeVersion.Version }}"}\n' \
  >"$chart/templates/cm.yaml"
h install smoke "$chart" --namespace default --wait --timeout 60s >/dev/null
[[ "$(k get configmap smoke-smoke -o jsonpath='{.data.kube}')" == "$K8S_VERSION" ]] || fail "helm did not see $K8S_VERSION"
h uninstall smoke --namespace default >/dev/null

step "all checks passed ($(h version --short), kube $K8S_VERSION)"
