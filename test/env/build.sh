#!/usr/bin/env bash
# Build the binaries of the integration-test control plane from upstream Go modules.
# See test/env/README.md.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
source "$HERE/lib.sh"

usage() {
  cat <<EOF
Usage: test/env/build.sh [--force] [--check] [-v|--verbose] [NAME...]

Builds the binaries that test/env/start.sh and test/env/cluster-start.sh run, from the
upstream Go modules served by the Go module proxy (no Docker, no GitHub downloads):

  kube-apiserver, kube-controller-manager, kubectl,  k8s.io/kubernetes ${UNDERPASS_K8S_VERSION}
  kubelet, kube-scheduler, kube-proxy                  (one go build for all six)
  etcd                                               go.etcd.io/etcd/server/v3 ${UNDERPASS_ETCD_VERSION}
  helm                                               helm.sh/helm/v3 ${UNDERPASS_HELM_VERSION}
  coredns                                            github.com/coredns/coredns ${UNDERPASS_COREDNS_VERSION}
                                                       (plugins: ${UNDERPASS_COREDNS_PLUGINS[*]})
  kube-network-policies                              sigs.k8s.io/kube-network-policies ${UNDERPASS_KNP_VERSION}
                                                       (our main: kubeconfig instead of in-cluster config)
  oc (only when named; optional)                     github.com/openshift/oc ${UNDERPASS_OC_VERSION}

into
  ${UNDERPASS_TESTENV_BIN}/
(set UNDERPASS_TESTENV_CACHE to move the cache root, default \$HOME/.cache/underpass-testenv).

Only binaries that are missing, or whose stamp file (bin/.stamp-NAME) does not match the
pinned versions, are built; a second run takes seconds. A cold build takes ~10 minutes on
2 cores (the cluster's four add ~4); the Go build cache and module cache (go env GOCACHE /
GOMODCACHE) are reused.
Concurrent invocations serialize on a lock file in the cache directory.

Options:
  NAME...        build these binaries; "control-plane" stands for the five start.sh and
                 most tests need (the default), "cluster-node" for the five the local
                 cluster adds (cluster-start.sh builds them when missing: ~5 min after the
                 control plane), "all" for all ten (the six Kubernetes ones in one go build).
                 "oc" is never part of "all": when it cannot be built, build.sh writes the
                 reason to bin/.unavailable-oc (the quick-start test skips oc with it)
  --force        rebuild even if an up-to-date binary exists
  --check        build nothing; exit 0 if all (or the named) binaries are up to date, 1 if not
  -v, --verbose  pass -v to go build (prints every package as it is compiled)
  -h, --help     show this help

Requires: go (any version new enough for the modules; GOTOOLCHAIN=local is forced, so the
installed toolchain is used and never downloaded). Prints the bin directory on the last line.
EOF
}

force=0 check=0 verbose=0 names=()
while (($#)); do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --force) force=1 ;;
    --check) check=1 ;;
    -v|--verbose) verbose=1 ;;
    -*) testenv_die "unknown option: $1 (see --help)" ;;
    control-plane) names+=("${UNDERPASS_TESTENV_CONTROL_PLANE[@]}") ;;
    all) names+=("${UNDERPASS_TESTENV_BINARIES[@]}") ;;
    cluster-node) names+=("${UNDERPASS_CLUSTER_NODE_BINARIES[@]}") ;;
    *) names+=("$1") ;;
  esac
  shift
done
if ((${#names[@]} == 0)); then names=("${UNDERPASS_TESTENV_CONTROL_PLANE[@]}"); fi
for n in "${names[@]}"; do
  case " ${UNDERPASS_TESTENV_BINARIES[*]} ${UNDERPASS_TESTENV_OPTIONAL_BINARIES[*]} " in
    *" $n "*) ;;
    *) testenv_die "unknown binary '$n'; known: ${UNDERPASS_TESTENV_BINARIES[*]} ${UNDERPASS_TESTENV_OPTIONAL_BINARIES[*]}" ;;
  esac
done

needs_build() { ((force)) || ! testenv_is_built "$1"; }

if ((check)); then
  rc=0
  for n in "${names[@]}"; do
    if testenv_is_built "$n"; then testenv_log "up to date: $n"; else testenv_log "missing or stale: $n"; rc=1; fi
  done
  exit "$rc"
fi

command -v go >/dev/null 2>&1 || testenv_die "go is not on PATH; install a Go toolchain first"

# Use the installed toolchain only, static binaries, no stray go.work.
export GOTOOLCHAIN=local CGO_ENABLED=0 GOWORK=off
GOVERBOSE=()
((verbose)) && GOVERBOSE=(-v)

SRC="${UNDERPASS_TESTENV_PREFIX}/src"   # generated wrapper modules (never inside the repo)
mkdir -p "$UNDERPASS_TESTENV_BIN" "$SRC"

# Serialize concurrent builds (e.g. two start.sh runs on a fresh machine).
exec 9>"${UNDERPASS_TESTENV_PREFIX}/.build.lock"
if ! flock -n 9; then
  testenv_log "another build holds ${UNDERPASS_TESTENV_PREFIX}/.build.lock; waiting for it..."
  flock 9
fi

todo=()
for n in "${names[@]}"; do needs_build "$n" && todo+=("$n"); done
if ((${#todo[@]} == 0)); then
  testenv_log "all binaries up to date (${names[*]})"
  echo "$UNDERPASS_TESTENV_BIN"
  exit 0
fi

testenv_log "$(go version); GOTOOLCHAIN=local CGO_ENABLED=0"
testenv_log "GOMODCACHE=$(go env GOMODCACHE) GOCACHE=$(go env GOCACHE) GOPROXY=$(go env GOPROXY)"
testenv_log "to build: ${todo[*]}  ->  $UNDERPASS_TESTENV_BIN"

want() { local n; for n in "${todo[@]}"; do [[ "$n" == "$1" ]] && return 0; done; return 1; }

TIMINGS=()
fmt_secs() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }

# Move freshly built binaries from $1 into bin/ and write their stamps.
install_from() {
  local dir="$1" n; shift
  for n in "$@"; do
    [[ -x "$dir/$n" ]] || testenv_die "build produced no $dir/$n"
    mv -f "$dir/$n" "$UNDERPASS_TESTENV_BIN/$n"
    testenv_stamp_for "$n" >"$UNDERPASS_TESTENV_BIN/.stamp-$n"
  done
}

# Prints the path of the go.mod that module@version was published with.
upstream_gomod() {
  local json path
  json="$(cd "$SRC" && go mod download -json "$1")" || testenv_die "go mod download $1 failed: $json"
  path="$(sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p' <<<"$json")"
  [[ -f "$path" ]] || testenv_die "could not locate go.mod of $1 in: $json"
  echo "$path"
}

# ---------------------------------------------------------------- kubernetes
build_kubernetes() {
  local bins=("$@") V="$UNDERPASS_K8S_VERSION"
  local staging="v0.${V#v1.}"           # k8s.io/kubernetes v1.X.Y publishes staging modules as v0.X.Y
  local minor="${V#v1.}"; minor="${minor%%.*}"
  local dir="$SRC/kubernetes" upstream start=$SECONDS
  testenv_log "kubernetes $V: generating wrapper module in $dir"
  upstream="$(upstream_gomod "k8s.io/kubernetes@$V")"

  rm -rf "$dir"; mkdir -p "$dir"
  # k8s.io/kubernetes replaces every staging module (k8s.io/api, ...) with ./staging/src/...,
  # which makes `go install k8s.io/kubernetes/cmd/...@v` fail. Build from a wrapper module
  # whose replace list maps each of those to the published staging module of the same version,
  # generated from the real go.mod so new staging modules (1.36: k8s.io/streaming, ...) are
  # picked up automatically. The go and godebug lines are copied too: godebug settings only
  # take effect in the main module.
  {
    echo "// Generated by underpass test/env/build.sh from k8s.io/kubernetes@$V go.mod. Do not edit."
    echo "module underpass.local/k8sbins"
    echo
    grep -E '^go [0-9]' "$upstream"
    awk '/^godebug[ \t]*\(/{b=1} b{print} b&&/^\)/{b=0} /^godebug[ \t]+[^(]/{print}' "$upstream"
    echo
    echo "require k8s.io/kubernetes $V"
    echo
    echo "replace ("
    awk -v ver="$staging" '
      /^replace[ \t]*\(/ { inblock = 1; next }
      inblock && /^\)/  { inblock = 0; next }
      /^replace[ \t]+[^(]/ { sub(/^replace[ \t]+/, ""); line = $0 }
      inblock { line = $0 }
      line != "" {
        sub(/\/\/.*/, "", line); sub(/^[ \t]+/, "", line); sub(/[ \t]+$/, "", line)
        if (line == "") next
        n = split(line, f, /[ \t]+/)
        lhs = f[1]; rhs = ""
        for (i = 1; i < n; i++) if (f[i] == "=>") rhs = f[i + 1]
        if (rhs ~ /^\.\/staging\/src\//) {
          printf "\t%s => %s %s\n", lhs, lhs, ver
        } else if (rhs ~ /^(\.|\/)/) {
          printf "unsupported local replace in upstream go.mod: %s\n", line > "/dev/stderr"; exit 3
        } else {
          printf "\t%s\n", line
        }
        line = ""
      }' "$upstream" || testenv_die "could not translate the replace directives of $upstream"
    echo ")"
  } >"$dir/go.mod"
  local nrep; nrep="$(grep -c " => .* $staging\$" "$dir/go.mod" || true)"
  ((nrep > 0)) || testenv_die "no staging replace directives found in $upstream"
  testenv_log "kubernetes $V: $nrep staging modules replaced with their $staging releases"

  # Keep the main packages as requirements for `go mod tidy` (classic tools.go pattern). All
  # six, whichever are built now, so the wrapper module (and go.sum) is always the same.
  {
    echo "//go:build tools"
    echo
    echo "package tools"
    echo
    echo "import ("
    for b in "${UNDERPASS_K8S_BINARIES[@]}"; do echo "	_ \"k8s.io/kubernetes/cmd/$b\""; done
    echo ")"
  } >"$dir/tools.go"

  testenv_log "kubernetes $V: go mod tidy (downloads modules on a cold cache)"
  (cd "$dir" && go mod tidy)

  # The wrapper must resolve the same dependency versions that kubernetes pins.
  local drift
  drift="$(cd "$dir" && go list -m -f '{{.Path}} {{.Version}}' all | awk '
      NR == FNR { sel[$1] = $2; next }
      /^require[ \t]*\(/ { r = 1; next } r && /^\)/ { r = 0; next }
      r && $2 ~ /^v/ && $2 != "v0.0.0" && ($1 in sel) && sel[$1] != $2 { print "  " $1 ": kubernetes pins " $2 ", wrapper selected " sel[$1] }
    ' - "$upstream")"
  if [[ -n "$drift" ]]; then
    testenv_log "WARNING: dependency versions differ from k8s.io/kubernetes@$V go.mod:"; echo "$drift" >&2
  fi

  # Same tags and version ldflags as hack/lib/golang.sh + hack/lib/version.sh (release build).
  local build_date ldf="-s -w" kv
  build_date="$(sed -n 's/.*"Time":"\([^"]*\)".*/\1/p' "${upstream%.mod}.info" 2>/dev/null || true)"
  for kv in "gitVersion=$V" "gitMajor=1" "gitMinor=$minor" "gitTreeState=clean" "buildDate=${build_date:-1970-01-01T00:00:00Z}"; do
    ldf+=" -X k8s.io/component-base/version.$kv -X k8s.io/client-go/pkg/version.$kv"
  done
  local pkgs=() b out
  for b in "${bins[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$b"); done
  out="$(mktemp -d "$UNDERPASS_TESTENV_PREFIX/tmp.XXXXXX")"
  testenv_log "kubernetes $V: go build ${bins[*]} (the slow part: ~6-10 min cold on 2 cores)"
  (cd "$dir" && go build "${GOVERBOSE[@]}" -trimpath -tags=selinux,notest,grpcnotrace -ldflags="$ldf" -o "$out/" "${pkgs[@]}")
  install_from "$out" "${bins[@]}"
  rmdir "$out"
  TIMINGS+=("kubernetes (${bins[*]}): $(fmt_secs $((SECONDS - start)))")
  testenv_log "kubernetes $V: done in $(fmt_secs $((SECONDS - start)))"
}

# ---------------------------------------------------------------------- etcd
build_etcd() {
  local V="$UNDERPASS_ETCD_VERSION" dir="$SRC/etcd" start=$SECONDS out
  testenv_log "etcd $V: generating wrapper module in $dir"
  rm -rf "$dir"; mkdir -p "$dir"
  # go install go.etcd.io/etcd/server/v3@v fails (its go.mod has replace directives); this
  # main is identical to the module's own main.go.
  cat >"$dir/main.go" <<'GO'
// Generated by underpass test/env/build.sh. Do not edit.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  printf '// Generated by underpass test/env/build.sh. Do not edit.\nmodule underpass.local/etcdbin\n\ngo 1.24.0\n' >"$dir/go.mod"
  # `go get` raises the go line to what etcd requires (it fails if the local toolchain is older).
  (cd "$dir" && go get "go.etcd.io/etcd/server/v3@$V" && go mod tidy)
  out="$(mktemp -d "$UNDERPASS_TESTENV_PREFIX/tmp.XXXXXX")"
  testenv_log "etcd $V: go build"
  (cd "$dir" && go build "${GOVERBOSE[@]}" -trimpath -ldflags="-s -w" -o "$out/etcd" .)
  install_from "$out" etcd
  rmdir "$out"
  TIMINGS+=("etcd: $(fmt_secs $((SECONDS - start)))")
  testenv_log "etcd $V: done in $(fmt_secs $((SECONDS - start)))"
}

# ---------------------------------------------------------------------- helm
build_helm() {
  local V="$UNDERPASS_HELM_VERSION" start=$SECONDS out kmin
  kmin="${UNDERPASS_K8S_VERSION#v1.}"; kmin="${kmin%%.*}"
  out="$(mktemp -d "$UNDERPASS_TESTENV_PREFIX/tmp.XXXXXX")"
  # helm's go.mod has no replace directives, so go install works. ldflags as in helm's Makefile;
  # k8sVersion* sets the default .Capabilities.KubeVersion (helm template) and lint's target.
  local ldf="-s -w -X helm.sh/helm/v3/internal/version.version=$V -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  local p
  for p in pkg/chartutil pkg/lint/rules; do
    ldf+=" -X helm.sh/helm/v3/$p.k8sVersionMajor=1 -X helm.sh/helm/v3/$p.k8sVersionMinor=$kmin"
  done
  testenv_log "helm $V: go install helm.sh/helm/v3/cmd/helm@$V"
  (cd "$SRC" && GOBIN="$out" go install "${GOVERBOSE[@]}" -trimpath -ldflags="$ldf" "helm.sh/helm/v3/cmd/helm@$V")
  install_from "$out" helm
  rmdir "$out"
  TIMINGS+=("helm: $(fmt_secs $((SECONDS - start)))")
  testenv_log "helm $V: done in $(fmt_secs $((SECONDS - start)))"
}

# ------------------------------------------------------------------- coredns
build_coredns() {
  local V="$UNDERPASS_COREDNS_VERSION" dir="$SRC/coredns" start=$SECONDS out p
  testenv_log "coredns $V: generating wrapper module in $dir (plugins: ${UNDERPASS_COREDNS_PLUGINS[*]})"
  rm -rf "$dir"; mkdir -p "$dir"
  # CoreDNS's own main imports core/plugin, i.e. every plugin (cloud backends, etcd, forward...),
  # which is most of its build time and of what it could do here. This main is coredns.go with
  # only the plugins our Corefile names; the directive order stays core/dnsserver's.
  {
    echo "// Generated by underpass test/env/build.sh. Do not edit."
    echo "package main"
    echo
    echo "import ("
    echo "	\"github.com/coredns/coredns/coremain\""
    echo
    for p in "${UNDERPASS_COREDNS_PLUGINS[@]}"; do echo "	_ \"github.com/coredns/coredns/plugin/$p\""; done
    echo ")"
    echo
    echo "func main() { coremain.Run() }"
  } >"$dir/main.go"
  printf '// Generated by underpass test/env/build.sh. Do not edit.\nmodule underpass.local/corednsbin\n\ngo 1.24.0\n' >"$dir/go.mod"
  (cd "$dir" && go get "github.com/coredns/coredns@$V" && go mod tidy)
  out="$(mktemp -d "$UNDERPASS_TESTENV_PREFIX/tmp.XXXXXX")"
  testenv_log "coredns $V: go build"
  (cd "$dir" && go build "${GOVERBOSE[@]}" -trimpath \
    -ldflags="-s -w -X github.com/coredns/coredns/coremain.GitCommit=$V" -o "$out/coredns" .)
  install_from "$out" coredns
  rmdir "$out"
  TIMINGS+=("coredns: $(fmt_secs $((SECONDS - start)))")
  testenv_log "coredns $V: done in $(fmt_secs $((SECONDS - start)))"
}

# ------------------------------------------------------ kube-network-policies
build_kube_network_policies() {
  local V="$UNDERPASS_KNP_VERSION" dir="$SRC/kube-network-policies" start=$SECONDS out
  testenv_log "kube-network-policies $V: generating wrapper module in $dir"
  rm -rf "$dir"; mkdir -p "$dir"
  # Upstream's cmd/main.go reads the in-cluster config (a ServiceAccount token at a fixed path):
  # it runs as a DaemonSet pod. Here it is a host process of the local cluster, so this main
  # builds the same controller (pkg/networkpolicy, NetworkPolicy only: no admin policies) from a
  # kubeconfig, answers /readyz once its caches are synced, stops on SIGTERM as well as SIGINT,
  # and waits for the controller to remove its nftables table before exiting.
  cat >"$dir/main.go" <<'GO'
// Generated by underpass test/env/build.sh. Do not edit.
package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
	"sigs.k8s.io/kube-network-policies/pkg/networkpolicy"
)

var version = "unknown"

func main() {
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig of the cluster (required)")
	node := flag.String("hostname-override", "", "name of this node (required)")
	metrics := flag.String("metrics-bind-address", "127.0.0.1:9080", "address of /metrics and /readyz")
	queueID := flag.Int("nfqueue-id", 100, "number of the nfqueue")
	bug1766 := flag.Bool("netfilter-bug-1766-fix", true, "process DNS packets on PREROUTING (kernels before 6.12)")
	showVersion := flag.Bool("version", false, "print the version and exit")
	klog.InitFlags(nil)
	flag.Parse()
	if *showVersion {
		fmt.Println("kube-network-policies", version)
		return
	}
	if *kubeconfig == "" || *node == "" {
		fmt.Fprintln(os.Stderr, "kube-network-policies: -kubeconfig and -hostname-override are required")
		os.Exit(2)
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()

	config, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		klog.Fatalf("kubeconfig %s: %v", *kubeconfig, err)
	}
	config.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
	config.ContentType = "application/vnd.kubernetes.protobuf"
	client, err := kubernetes.NewForConfig(config)
	if err != nil {
		klog.Fatalf("client: %v", err)
	}
	factory := informers.NewSharedInformerFactory(client, 0)
	ctrl, err := networkpolicy.NewController(client,
		factory.Networking().V1().NetworkPolicies(), factory.Core().V1().Namespaces(), factory.Core().V1().Pods(),
		nil, nil, nil, nil,
		networkpolicy.Config{QueueID: *queueID, NodeName: *node, NetfilterBug1766Fix: *bug1766})
	if err != nil {
		klog.Fatalf("controller: %v", err)
	}
	var ready atomic.Bool
	http.Handle("/metrics", promhttp.Handler())
	http.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !ready.Load() {
			http.Error(w, "caches not synced", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	go func() { klog.Error(http.ListenAndServe(*metrics, nil)) }()
	done := make(chan error, 1)
	go func() { done <- ctrl.Run(ctx) }()
	factory.Start(ctx.Done())
	go func() {
		for _, ok := range factory.WaitForCacheSync(ctx.Done()) {
			if !ok {
				return
			}
		}
		ready.Store(true)
	}()
	select {
	case err = <-done: // nfqueue could not be opened, or the caches never synced
		klog.Errorf("controller stopped: %v", err)
		os.Exit(1)
	case <-ctx.Done():
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
	}
}
GO
  printf '// Generated by underpass test/env/build.sh. Do not edit.\nmodule underpass.local/knpbin\n\ngo 1.24.0\n' >"$dir/go.mod"
  (cd "$dir" && go get "sigs.k8s.io/kube-network-policies@$V" && go mod tidy)
  out="$(mktemp -d "$UNDERPASS_TESTENV_PREFIX/tmp.XXXXXX")"
  testenv_log "kube-network-policies $V: go build"
  (cd "$dir" && go build "${GOVERBOSE[@]}" -trimpath -ldflags="-s -w -X main.version=$V" -o "$out/kube-network-policies" .)
  install_from "$out" kube-network-policies
  rmdir "$out"
  TIMINGS+=("kube-network-policies: $(fmt_secs $((SECONDS - start)))")
  testenv_log "kube-network-policies $V: done in $(fmt_secs $((SECONDS - start)))"
}

# ------------------------------------------------------------------------ oc
# Optional. On any failure the reason goes to bin/.unavailable-oc (read by the quick-start test)
# and the build of the others goes on.
build_oc() {
  local V="$UNDERPASS_OC_VERSION" dir="$SRC/oc" start=$SECONDS out upstream log rc=0
  rm -f "$UNDERPASS_TESTENV_BIN/.unavailable-oc"
  testenv_log "oc $V: resolving github.com/openshift/oc@$V (GOPROXY=$(go env GOPROXY))"
  rm -rf "$dir"; mkdir -p "$dir"
  printf '// Generated by underpass test/env/build.sh. Do not edit.\nmodule underpass.local/ocbin\n\ngo 1.24.0\n' >"$dir/go.mod"
  if ! log="$(cd "$dir" && go mod download -json "github.com/openshift/oc@$V" 2>&1)" || grep -q '"Error"' <<<"$log"; then
    printf 'github.com/openshift/oc@%s does not resolve from the Go module proxy (GOPROXY=%s, %ds): %s\n' "$V" "$(go env GOPROXY)" \
      $((SECONDS - start)) "$(sed -n 's/.*"Error": "\(.*\)",\{0,1\}$/\1/p' <<<"$log" | head -1 | sed 's/\\n\\t/ /g')" \
      >"$UNDERPASS_TESTENV_BIN/.unavailable-oc"
    testenv_log "oc: $(cat "$UNDERPASS_TESTENV_BIN/.unavailable-oc")"
    return 1
  fi
  upstream="$(upstream_gomod "github.com/openshift/oc@$V")"
  # oc's go.mod replaces modules (github.com/apcera/gssapi => an openshift fork): a go install of
  # it fails, so the wrapper carries the same replace lines.
  {
    echo "require github.com/openshift/oc $V"
    awk '/^replace[ \t]*\(/{b=1;print;next} b{print} b&&/^\)/{b=0} /^replace[ \t]+[^(]/{print}' "$upstream"
  } >>"$dir/go.mod"
  printf '//go:build tools\n\npackage tools\n\nimport _ "github.com/openshift/oc/cmd/oc"\n' >"$dir/tools.go"
  out="$(mktemp -d "$UNDERPASS_TESTENV_PREFIX/tmp.XXXXXX")"
  if ! (cd "$dir" && go mod tidy && go build "${GOVERBOSE[@]}" -trimpath -tags=include_gcs,include_oss,containers_image_openpgp \
        -ldflags="-s -w" -o "$out/oc" github.com/openshift/oc/cmd/oc) >"$dir/build.log" 2>&1; then
    printf 'github.com/openshift/oc@%s resolved but did not build (%ds): %s\n' "$V" $((SECONDS - start)) "$(tail -3 "$dir/build.log" | tr '\n' ' ')" \
      >"$UNDERPASS_TESTENV_BIN/.unavailable-oc"
    testenv_log "oc: $(cat "$UNDERPASS_TESTENV_BIN/.unavailable-oc")"
    rm -rf "$out"
    return 1
  fi
  install_from "$out" oc
  rmdir "$out"
  TIMINGS+=("oc: $(fmt_secs $((SECONDS - start)))")
  testenv_log "oc $V: done in $(fmt_secs $((SECONDS - start)))"
}

total_start=$SECONDS
k8s_bins=()
for n in "${UNDERPASS_K8S_BINARIES[@]}"; do want "$n" && k8s_bins+=("$n"); done
# Cheap steps first, so a toolchain or proxy problem shows up before the long kubernetes build.
want etcd && build_etcd
want helm && build_helm
want coredns && build_coredns
want kube-network-policies && build_kube_network_policies
((${#k8s_bins[@]})) && build_kubernetes "${k8s_bins[@]}"
oc_failed=0
if want oc && ! build_oc; then
  oc_failed=1
  rest=()
  for n in "${todo[@]}"; do [[ "$n" == oc ]] || rest+=("$n"); done
  todo=("${rest[@]}")
fi

# Smoke-test what was built.
for n in "${todo[@]}"; do
  case "$n" in
    kubectl|oc) args=(version --client) ;;
    helm) args=(version --short) ;;
    coredns|kube-network-policies) args=(-version) ;;
    *) args=(--version) ;;
  esac
  if ! v="$("$UNDERPASS_TESTENV_BIN/$n" "${args[@]}" 2>&1)"; then
    rm -f "$UNDERPASS_TESTENV_BIN/.stamp-$n"
    testenv_die "$n does not run: $v"
  fi
  testenv_log "ok $n: $(head -n 3 <<<"$v" | tr '\n' ' ')"
done

for t in "${TIMINGS[@]}"; do testenv_log "time  $t"; done
testenv_log "total $(fmt_secs $((SECONDS - total_start)))"
((oc_failed)) && testenv_die "oc is unavailable: $(cat "$UNDERPASS_TESTENV_BIN/.unavailable-oc")"
echo "$UNDERPASS_TESTENV_BIN"
