#!/usr/bin/env bash
# Start a real single-node Kubernetes cluster on this machine (make cluster).
# See test/env/README.md ("Local cluster").
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=cluster-lib.sh
source "$HERE/cluster-lib.sh"

usage() {
  cat <<EOF
Usage: test/env/cluster-start.sh [--timeout SECONDS] [--no-build] [DIR]

Starts a single-node Kubernetes ${UNDERPASS_K8S_VERSION} cluster with all state in DIR (default
$UNDERPASS_CLUSTER_DEFAULT_DIR): etcd, kube-apiserver, kube-controller-manager (test/env/start.sh
--cluster), containerd + runc (Debian), kube-scheduler, kubelet, kube-proxy (nftables), CoreDNS
(a host process on the node IP) and kube-network-policies (NetworkPolicy enforcement, a host
process), pods on the bridge ${UNDERPASS_CLUSTER_BRIDGE} (${UNDERPASS_CLUSTER_POD_CIDR}, nothing
routed beyond it), Services in ${UNDERPASS_CLUSTER_SERVICE_CIDR}. Returns once the node is Ready and CoreDNS
answers; prints the startup time and memory. Needs root.

  DIR/kubeconfig   admin kubeconfig        DIR/env   KUBECONFIG, node IP, containerd socket, ...
  DIR/*.log        one log per component   stop with test/env/cluster-stop.sh DIR

One cluster per machine. Running it again while the cluster runs says so and exits 0; a
cluster started from another DIR is an error naming that DIR. Missing binaries are built
first (test/env/build.sh, ~13 min cold), Debian packages installed when missing.

Options:
  --timeout SECONDS  how long to wait for readiness after the build (default 180)
  --no-build         fail instead of building missing binaries
  -h, --help         show this help

Environment: UNDERPASS_CLUSTER_BRIDGE, UNDERPASS_CLUSTER_POD_CIDR, UNDERPASS_CLUSTER_SERVICE_CIDR,
UNDERPASS_CLUSTER_NODE_NAME override the network settings; UNDERPASS_TESTENV_CACHE the cache;
UNDERPASS_CLUSTER_KEEP_FAILED=1 leaves a cluster that failed to become ready running.
EOF
}

timeout=180 build=1 dir=""
while (($#)); do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --timeout) [[ $# -ge 2 ]] || cluster_die "--timeout needs a value"; timeout="$2"; shift ;;
    --no-build) build=0 ;;
    -*) cluster_die "unknown option: $1 (see --help)" ;;
    *) [[ -z "$dir" ]] || cluster_die "only one DIR expected (see --help)"; dir="$1" ;;
  esac
  shift
done
[[ "$timeout" =~ ^[0-9]+$ ]] || cluster_die "--timeout must be a number of seconds"
dir="${dir:-$UNDERPASS_CLUSTER_DEFAULT_DIR}"
t0=$SECONDS

# ------------------------------------------------------------------------ preflight
[[ "$(uname -s)" == Linux ]] || cluster_die "a local cluster needs Linux"
[[ "$(id -u)" == 0 ]] || cluster_die "a local cluster needs root (bridges, network namespaces, mounts, cgroups): run it as root, e.g. sudo make cluster"

# Debian packages, installed only when missing (idempotent).
install_debs() {
  local missing=() f
  for f in /usr/bin/containerd /usr/bin/ctr /usr/bin/containerd-shim-runc-v2; do [[ -x "$f" ]] || { missing+=(containerd); break; }; done
  command -v runc >/dev/null 2>&1 || missing+=(runc)
  for f in bridge host-local loopback; do [[ -x "/usr/lib/cni/$f" ]] || { missing+=(containernetworking-plugins); break; }; done
  command -v nft >/dev/null 2>&1 || missing+=(nftables)
  command -v iptables-nft >/dev/null 2>&1 || missing+=(iptables)
  command -v ip >/dev/null 2>&1 || missing+=(iproute2)
  command -v openssl >/dev/null 2>&1 || missing+=(openssl)
  command -v curl >/dev/null 2>&1 || missing+=(curl)
  ((${#missing[@]})) || return 0
  command -v apt-get >/dev/null 2>&1 || cluster_die "missing ${missing[*]} and no apt-get to install them"
  cluster_log "installing from Debian: ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null || cluster_log "apt-get update failed; trying the install anyway"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
    cluster_die "apt-get install ${missing[*]} failed"
}
install_debs
for tool in flock setsid findmnt umount awk sysctl; do
  command -v "$tool" >/dev/null 2>&1 || cluster_die "$tool is required but not on PATH"
done

case "$(stat -fc %T /sys/fs/cgroup 2>/dev/null)" in
  cgroup2fs) cgroup_mode=v2 ;;
  tmpfs) cgroup_mode=v1 ;;
  *) cluster_die "/sys/fs/cgroup is neither cgroup v2 nor a cgroup v1 tmpfs" ;;
esac

mkdir -p "$dir"
dir="$(cd "$dir" && pwd -P)"

# ------------------------------------------------------------------ binaries, images
missing_bins="$(for n in "${UNDERPASS_TESTENV_BINARIES[@]}"; do [[ "$n" == helm ]] || testenv_is_built "$n" || echo "$n"; done | tr '\n' ' ')"
if [[ -n "${missing_bins// /}" ]]; then
  ((build)) || cluster_die "missing binaries in $UNDERPASS_TESTENV_BIN: $missing_bins(run test/env/build.sh)"
  cluster_log "missing binaries ($missing_bins); running test/env/build.sh first"
  # shellcheck disable=SC2086
  "$HERE/build.sh" $missing_bins >&2
fi
IMAGES="$("$HERE/cluster-images.sh")"
BIN="$UNDERPASS_TESTENV_BIN"
t_built=$SECONDS

# ------------------------------------------------------------------------- one at a time
cluster_lock
if running="$(cluster_running_dir)"; then
  if [[ "$running" == "$dir" ]]; then
    cluster_log "the cluster is already running in $dir"
    cluster_log "  export KUBECONFIG=$dir/kubeconfig   # or: source $dir/env"
    exit 0
  fi
  cluster_die "a cluster started from $running runs on this machine (one at a time: one bridge, one pod range); use KUBECONFIG=$running/kubeconfig, or stop it: test/env/cluster-stop.sh $running"
fi
if [[ -f "$UNDERPASS_CLUSTER_POINTER" ]]; then
  prev="$(cat "$UNDERPASS_CLUSTER_POINTER")"
  cluster_log "cleaning up after an earlier cluster in $prev that did not stop cleanly"
  UNDERPASS_CLUSTER_LOCKED=1 "$HERE/cluster-stop.sh" "$prev" >&2 || cluster_die "could not clean up after $prev"
fi
cluster_derive_conf
BR="$UNDERPASS_CLUSTER_BRIDGE" NODE_IP="$UNDERPASS_CLUSTER_NODE_IP" NODE="$UNDERPASS_CLUSTER_NODE_NAME"
POD_CIDR="$UNDERPASS_CLUSTER_POD_CIDR" SVC_CIDR="$UNDERPASS_CLUSTER_SERVICE_CIDR"
testenv_cidr_range "$SVC_CIDR" >/dev/null || cluster_die "UNDERPASS_CLUSTER_SERVICE_CIDR is not an IPv4 CIDR: $SVC_CIDR"
testenv_cidrs_overlap "$POD_CIDR" "$SVC_CIDR" && cluster_die "pod range $POD_CIDR and Service range $SVC_CIDR overlap"
[[ ${#BR} -le 15 ]] || cluster_die "bridge name $BR is longer than 15 characters"
if ip link show "$BR" >/dev/null 2>&1; then
  cluster_die "interface $BR exists but no cluster is recorded in $UNDERPASS_CLUSTER_POINTER; it is not ours to remove (ip link del $BR if it is a leftover)"
fi
# Our ranges must not clash with anything the host routes or owns.
while read -r net; do
  [[ "$net" == default ]] && continue
  [[ "$net" == */* ]] || net="$net/32"
  for r in "$POD_CIDR" "$SVC_CIDR"; do
    testenv_cidrs_overlap "$net" "$r" 2>/dev/null &&
      cluster_die "$r overlaps the host's $net; choose another range (UNDERPASS_CLUSTER_POD_CIDR / UNDERPASS_CLUSTER_SERVICE_CIDR)"
  done
done < <(ip -4 route show table all |
  awk '$1 ~ /^(local|broadcast|unicast|unreachable|blackhole|prohibit|throw|multicast|anycast|nat)$/ { print $2; next } { print $1 }' | sort -u)

# ------------------------------------------------------------------ host state snapshot
# What cluster-stop.sh must restore or remove, recorded before anything changes.
HOST="$dir/host"
rm -rf "$HOST"; mkdir -p "$HOST"
for s in "${UNDERPASS_CLUSTER_SYSCTLS[@]}"; do
  [[ -r "/proc/sys/$s" ]] && printf '%s=%s\n' "$s" "$(cat "/proc/sys/$s")"
done >"$HOST/sysctl"
for d in "${UNDERPASS_CLUSTER_HOST_DIRS[@]}" "${UNDERPASS_CLUSTER_FOREIGN_DIRS[@]}"; do
  [[ -e "$d" ]] || echo "$d"
done >"$HOST/absent-dirs"
nft list tables 2>/dev/null >"$HOST/nft-tables" || true
cluster_write_conf "$dir"
echo "$dir" >"$UNDERPASS_CLUSTER_POINTER"

ok=0
on_exit() {
  local rc=$?
  ((ok)) && return 0
  local f
  cluster_log "FAILED (exit $rc); last lines of the logs:"
  for f in "$dir"/*.log; do
    [[ -f "$f" ]] || continue
    printf '\n----- last 25 lines of %s -----\n' "$f" >&2
    tail -n 25 "$f" >&2
  done
  printf '\n' >&2
  if [[ "${UNDERPASS_CLUSTER_KEEP_FAILED:-}" == 1 ]]; then
    cluster_log "left running for inspection (UNDERPASS_CLUSTER_KEEP_FAILED=1); stop it with test/env/cluster-stop.sh $dir"
    exit "$rc"
  fi
  cluster_log "stopping what was started (cluster-stop.sh); state and logs are kept in $dir"
  UNDERPASS_CLUSTER_LOCKED=1 "$HERE/cluster-stop.sh" "$dir" >&2 || true
  exit "$rc"
}
trap on_exit EXIT
deadline=$((SECONDS + timeout))
fail() { cluster_log "$*"; exit 1; }
# wait_for WHAT COMPONENT CHECK...: until CHECK succeeds; fails if COMPONENT dies or time runs out.
wait_for() {
  local what="$1" comp="$2"; shift 2
  until "$@" >/dev/null 2>&1; do
    [[ -z "$comp" ]] || testenv_pid_alive "$dir" "$comp" >/dev/null || fail "$comp exited while waiting for $what (see $dir/$comp.log)"
    ((SECONDS < deadline)) || fail "timed out after ${timeout}s waiting for $what"
    sleep 0.5
  done
}

# ---------------------------------------------------------------------------- network
# The bridge carries the pod network and the node's address (the pods' gateway, where the
# apiserver and CoreDNS listen). nf_call_iptables on this bridge only: bridged pod-to-pod
# replies pass netfilter, so kube-proxy's DNAT of a Service is undone (without it a pod
# calling a Service backed by a pod on the same bridge gets the answer from the wrong address).
# Forwarding is enabled for this bridge only (net.ipv4.conf.BR.forwarding; ip_forward stays as
# it is), so a Service hop between two pods is routed; our nftables table drops whatever would
# be forwarded between the bridge and any other interface.
cluster_log "network: bridge $BR $NODE_IP/${UNDERPASS_CLUSTER_POD_PREFIX}, pods $POD_CIDR, Services $SVC_CIDR"
# The bridge gets a MAC address of its own (locally administered, from the node IP). Without one,
# Linux gives a bridge the lowest MAC of its ports, so deleting the pod whose veth had it changes
# the gateway's MAC under every other pod: their neighbour entries point at a MAC that is gone and
# their traffic to the node and to Services stops for 10-30 s (measured), until the entries
# expire. That made new connections fail during rollouts (test/cluster-real/smoke.test.ts pins it).
BR_MAC="$(printf '02:00:%02x:%02x:%02x:%02x' ${NODE_IP//./ })"
ip link add "$BR" address "$BR_MAC" type bridge nf_call_iptables 1 nf_call_ip6tables 1
ip addr add "$NODE_IP/$UNDERPASS_CLUSTER_POD_PREFIX" dev "$BR"
ip link set "$BR" up
# The Service range goes to the bridge too: a ClusterIP kube-proxy has not programmed (yet) is
# unreachable from the host instead of being sent out of the default route (where a proxy may
# even accept the connection), and host-to-Service traffic has the node IP as its source.
ip route add "$SVC_CIDR" dev "$BR"
sysctl -qw "net.ipv4.conf.$BR.forwarding=1"
[[ -w "/proc/sys/net/ipv6/conf/$BR/disable_ipv6" ]] && echo 1 >"/proc/sys/net/ipv6/conf/$BR/disable_ipv6"
nft -f - <<EOF
table inet $UNDERPASS_CLUSTER_NFT_TABLE {
  comment "underpass local cluster (test/env/cluster-start.sh): pods reach each other and the node only"
  chain forward {
    type filter hook forward priority filter; policy accept;
    iifname "$BR" oifname != "$BR" drop
    oifname "$BR" iifname != "$BR" drop
  }
}
EOF

# --------------------------------------------------------------------- control plane
"$HERE/start.sh" --no-build --timeout "$timeout" --cluster --advertise-address "$NODE_IP" --service-cidr "$SVC_CIDR" "$dir"
# shellcheck source=/dev/null
source "$dir/env"
PKI="$dir/pki"
kubectl() { "$BIN/kubectl" --kubeconfig "$dir/kubeconfig" "$@"; }

testenv_pick_ports "$dir" KUBELET_PORT KUBELET_HEALTHZ_PORT SCHEDULER_PORT PROXY_HEALTHZ_PORT PROXY_METRICS_PORT \
  COREDNS_HEALTH_PORT COREDNS_READY_PORT KNP_METRICS_PORT
SOCK="$dir/containerd/containerd.sock"
{
  echo "# Written by test/env/cluster-start.sh"
  for v in UNDERPASS_CLUSTER_DIR="$dir" UNDERPASS_CLUSTER_NODE_NAME="$NODE" UNDERPASS_CLUSTER_NODE_IP="$NODE_IP" \
           UNDERPASS_CLUSTER_POD_CIDR="$POD_CIDR" UNDERPASS_CLUSTER_SERVICE_CIDR="$SVC_CIDR" \
           UNDERPASS_CLUSTER_DNS="$NODE_IP" UNDERPASS_CLUSTER_DOMAIN="$UNDERPASS_CLUSTER_DOMAIN" \
           UNDERPASS_CLUSTER_BRIDGE="$BR" CONTAINERD_ADDRESS="$SOCK" CONTAINERD_NAMESPACE=k8s.io \
           CONTAINER_RUNTIME_ENDPOINT="unix://$SOCK" \
           UNDERPASS_CLUSTER_PAUSE_IMAGE="$UNDERPASS_CLUSTER_PAUSE_IMAGE" \
           UNDERPASS_CLUSTER_TESTBOX_IMAGE="$UNDERPASS_CLUSTER_TESTBOX_IMAGE" \
           UNDERPASS_CLUSTER_TESTBOX_BIN="$IMAGES/testbox" \
           KUBELET_PORT="$KUBELET_PORT" KUBELET_HEALTHZ_PORT="$KUBELET_HEALTHZ_PORT" SCHEDULER_PORT="$SCHEDULER_PORT" \
           PROXY_HEALTHZ_PORT="$PROXY_HEALTHZ_PORT" PROXY_METRICS_PORT="$PROXY_METRICS_PORT" \
           COREDNS_HEALTH_PORT="$COREDNS_HEALTH_PORT" COREDNS_READY_PORT="$COREDNS_READY_PORT" \
           KNP_METRICS_PORT="$KNP_METRICS_PORT"; do
    printf 'export %s=%q\n' "${v%%=*}" "${v#*=}"
  done
} >>"$dir/env"

# The apiserver never corrects the port of the kubernetes Service's endpoints, only addresses:
# after an apiserver was killed (not stopped) and this one got another port, they still name
# the old one. Deleted, they are rewritten at the reconciler's next round (10 s at most).
ep_port="$(kubectl get endpoints kubernetes -n default -o jsonpath='{.subsets[0].ports[0].port}' 2>/dev/null || true)"
if [[ -n "$ep_port" && "$ep_port" != "$APISERVER_PORT" ]]; then
  cluster_log "the kubernetes Service's endpoints name the port of an earlier apiserver ($ep_port); recreating them"
  kubectl delete endpoints kubernetes -n default >/dev/null
fi

# Identities: each component its own client certificate; the apiserver's bootstrap RBAC binds
# system:node:NAME (Node authorizer), system:kube-scheduler and system:kube-proxy.
issue_client() { # NAME CN [ORG]
  [[ -f "$PKI/$1.crt" ]] || testenv_issue_cert "$PKI" "$PKI" "$@"
  testenv_write_kubeconfig "$dir/$1.kubeconfig" "$APISERVER_URL" "$PKI/ca.crt" "$2" "$PKI/$1.crt" "$PKI/$1.key"
}
issue_client kubelet client "system:node:$NODE" system:nodes
issue_client kube-scheduler client system:kube-scheduler
issue_client kube-proxy client system:kube-proxy
issue_client coredns client underpass:coredns
issue_client kube-network-policies client underpass:network-policies
# kubelet's serving cert, signed by the cluster CA: the apiserver verifies it (logs, exec).
if [[ ! -f "$PKI/kubelet-serving.crt" || "$(cat "$PKI/kubelet-serving.sans" 2>/dev/null)" != "IP:$NODE_IP,DNS:$NODE" ]]; then
  TESTENV_EXTRA_SANS="IP:$NODE_IP,DNS:$NODE" testenv_issue_cert "$PKI" "$PKI" kubelet-serving server "$NODE"
  echo "IP:$NODE_IP,DNS:$NODE" >"$PKI/kubelet-serving.sans"
fi

# CoreDNS reads Services, EndpointSlices, Pods and Namespaces (what upstream's system:coredns
# role grants), nothing else.
kubectl apply -f - >/dev/null <<'EOF'
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "underpass:coredns"}
rules:
- apiGroups: [""]
  resources: [endpoints, services, pods, namespaces]
  verbs: [list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "underpass:coredns"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "underpass:coredns"}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: "underpass:coredns"}
---
# kube-network-policies: what its upstream DaemonSet's ClusterRole grants for NetworkPolicy (no
# admin network policies here).
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "underpass:network-policies"}
rules:
- apiGroups: [""]
  resources: [pods, namespaces]
  verbs: [list, watch]
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [list, watch]
- apiGroups: ["", events.k8s.io]
  resources: [events]
  verbs: [create, patch, update]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "underpass:network-policies"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "underpass:network-policies"}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: "underpass:network-policies"}
EOF

# ------------------------------------------------------------------------ containerd
# Its own root, state, sockets and config, nothing under /var/lib/containerd, /run/containerd
# (except the shim sockets containerd 1.6 always puts in /run/containerd/s) or /etc.
CD="$dir/containerd"
mkdir -p "$CD/root" "$CD/state" "$CD/opt" "$dir/cni/net.d" "$dir/cni/ipam"
cat >"$CD/config.toml" <<EOF
# Written by test/env/cluster-start.sh (containerd 1.6 config format).
version = 2
root = "$CD/root"
state = "$CD/state"
# containerd's own score (0): restrict_oom_score_adj keeps every container at or above it.
oom_score = 0
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "$SOCK"
[ttrpc]
  address = "$SOCK.ttrpc"
[debug]
  level = "info"

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "$CD/opt"
  [plugins."io.containerd.grpc.v1.cri"]
    # Our own image, imported below: there is no registry to pull registry.k8s.io/pause from.
    sandbox_image = "$UNDERPASS_CLUSTER_PAUSE_IMAGE"
    # Kubelet asks for negative oom_score_adj (-997 for Guaranteed pods); this machine refuses
    # negative values, so containers are clamped to containerd's own score instead.
    restrict_oom_score_adj = true
    disable_apparmor = true
    enable_selinux = false
    # Network namespaces under the state dir, not /var/run/netns.
    netns_mounts_under_state_dir = true
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          # cgroupfs, as kubelet's cgroupDriver: there is no systemd to ask for cgroups.
          SystemdCgroup = false
          Root = "$CD/runc"
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/usr/lib/cni"
      conf_dir = "$dir/cni/net.d"
      max_conf_num = 1
EOF

# The pod network: veths on our bridge, addresses from host-local (leases under DIR), a default
# route via the node IP. isGateway stays false (the bridge already has the node IP; true would
# also switch on ip_forward for the whole host) and ipMasq false (nothing leaves the bridge).
cat >"$dir/cni/net.d/10-underpass.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "$UNDERPASS_CLUSTER_CNI_NETWORK",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BR",
      "isGateway": false,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$dir/cni/ipam",
        "ranges": [[{ "subnet": "$POD_CIDR", "gateway": "$NODE_IP" }]],
        "routes": [{ "dst": "0.0.0.0/0", "gw": "$NODE_IP" }]
      }
    }
  ]
}
EOF

export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin${PATH:+:$PATH}"
testenv_launch "$dir" /usr/bin/containerd containerd --config "$CD/config.toml"
wait_for "containerd's socket" containerd cluster_ctr "$dir" version
for img in pause testbox; do
  cluster_ctr "$dir" images import "$IMAGES/$img.tar" >/dev/null || fail "could not import $IMAGES/$img.tar"
done

# ------------------------------------------------------------------------ cgroups
# All pods under one cgroup root of ours (kubelet --cgroup-root), in every hierarchy, so
# cluster-stop.sh finds every pod process and removes every cgroup.
while read -r cg; do
  mkdir -p "$cg"
  if [[ "$cg" == */cpuset/* ]]; then
    cat "$(dirname "$cg")/cpuset.cpus" >"$cg/cpuset.cpus"
    cat "$(dirname "$cg")/cpuset.mems" >"$cg/cpuset.mems"
  fi
done < <(cluster_cgroup_dirs)
if [[ "$cgroup_mode" == v2 ]]; then
  # cgroup v2 (untested here: this machine is v1): the controllers kubelet needs must be enabled
  # for the children of the root and of our cgroup. Those the root did not delegate before are
  # recorded, and cluster-stop.sh disables them again.
  for c in cpu cpuset io memory pids hugetlb; do
    grep -qw "$c" /sys/fs/cgroup/cgroup.controllers || continue
    if ! grep -qw "$c" /sys/fs/cgroup/cgroup.subtree_control; then
      echo "+$c" >/sys/fs/cgroup/cgroup.subtree_control && echo "$c" >>"$HOST/cgroup-controllers"
    fi
    echo "+$c" >"/sys/fs/cgroup/$UNDERPASS_CLUSTER_CGROUP/cgroup.subtree_control" 2>/dev/null || true
  done
fi

# ------------------------------------------------------------------- node components
mkdir -p "$dir/kubelet" "$dir/logs/pods"
cat >"$dir/kubelet.yaml" <<EOF
# Written by test/env/cluster-start.sh
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: "$NODE_IP"
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $KUBELET_HEALTHZ_PORT
tlsCertFile: "$PKI/kubelet-serving.crt"
tlsPrivateKeyFile: "$PKI/kubelet-serving.key"
rotateCertificates: false
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: "$PKI/ca.crt"}
authorization: {mode: Webhook}
containerRuntimeEndpoint: "unix://$SOCK"
# No systemd: cgroupfs, as containerd; pods under our own cgroup root.
cgroupDriver: cgroupfs
cgroupRoot: "/$UNDERPASS_CLUSTER_CGROUP"
cgroupsPerQOS: true
failCgroupV1: false
clusterDNS: ["$NODE_IP"]
clusterDomain: "$UNDERPASS_CLUSTER_DOMAIN"
# Pods get only the cluster's resolver, not the host's nameservers or search domains.
resolvConf: ""
podLogsDir: "$dir/logs/pods"
volumePluginDir: "$dir/kubelet/volume-plugins"
# No iptables chains of kubelet's (KUBE-IPTABLES-HINT, KUBE-FIREWALL): kube-proxy is nftables.
makeIPTablesUtilChains: false
# kubelet itself stays at oom_score_adj 0 (negative values are refused here).
oomScoreAdj: 0
failSwapOn: false
# A shared CI disk must not evict the test pods or garbage-collect the imported images (they
# cannot be pulled again).
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
registerNode: true
EOF
cat >"$dir/kube-scheduler.yaml" <<EOF
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
clientConnection: {kubeconfig: "$dir/kube-scheduler.kubeconfig"}
leaderElection: {leaderElect: false}
EOF
cat >"$dir/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: "$dir/kube-proxy.kubeconfig"}
hostnameOverride: "$NODE"
mode: nftables
# The node IP: kube-proxy's primary address without waiting for the Node object.
bindAddress: "$NODE_IP"
clusterCIDR: "$POD_CIDR"
# NodePorts answer on the node IP only (reachable from the host, not from other machines).
nodePortAddresses: ["$NODE_IP/32"]
healthzBindAddress: "127.0.0.1:$PROXY_HEALTHZ_PORT"
metricsBindAddress: "127.0.0.1:$PROXY_METRICS_PORT"
oomScoreAdj: 0
# Zero: leave the host's conntrack sysctls as they are.
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
# CoreDNS answers cluster.local (and reverse lookups of cluster addresses) from the API, and
# NXDOMAIN for every other name: no forward plugin, nothing leaves the machine.
cat >"$dir/Corefile" <<EOF
$UNDERPASS_CLUSTER_DOMAIN:53 in-addr.arpa:53 ip6.arpa:53 {
    bind $NODE_IP
    errors
    health 127.0.0.1:$COREDNS_HEALTH_PORT
    ready 127.0.0.1:$COREDNS_READY_PORT
    kubernetes $UNDERPASS_CLUSTER_DOMAIN in-addr.arpa ip6.arpa {
        kubeconfig $dir/coredns.kubeconfig underpass-testenv
        pods insecure
        ttl 5
    }
    cache 5
}
.:53 {
    bind $NODE_IP
    errors
    template ANY ANY {
        rcode NXDOMAIN
    }
}
EOF

testenv_launch "$dir" "$BIN/kube-scheduler" kube-scheduler --config="$dir/kube-scheduler.yaml" \
  --bind-address=127.0.0.1 --secure-port="$SCHEDULER_PORT"
testenv_launch "$dir" "$BIN/coredns" coredns -conf "$dir/Corefile"
testenv_launch "$dir" "$BIN/kubelet" kubelet --config="$dir/kubelet.yaml" \
  --kubeconfig="$dir/kubelet.kubeconfig" --root-dir="$dir/kubelet" --cert-dir="$PKI/kubelet-certs" \
  --hostname-override="$NODE" --node-ip="$NODE_IP"
testenv_launch "$dir" "$BIN/kube-proxy" kube-proxy --config="$dir/kube-proxy.yaml"
# NetworkPolicy enforcement (the bridge plugin has none): the first packet of each new connection
# to or from a pod goes to NFQUEUE, where this process evaluates the policies and accepts or drops
# it (then conntrack lets the rest of the connection through).
testenv_launch "$dir" "$BIN/kube-network-policies" kube-network-policies -kubeconfig "$dir/kube-network-policies.kubeconfig" \
  -hostname-override "$NODE" -metrics-bind-address "127.0.0.1:$KNP_METRICS_PORT" -nfqueue-id "$UNDERPASS_CLUSTER_NFQUEUE"

node_ready() {
  [[ "$(kubectl get node "$NODE" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" == True ]] &&
    ! kubectl get node "$NODE" -o jsonpath='{.spec.taints[*].key}' | grep -q 'node.kubernetes.io/not-ready'
}
https_ok() { [[ "$(curl -sk --max-time 3 "$1")" == ok ]]; }
http_ok() { curl -fs --max-time 3 -o /dev/null "$1"; }
kubernetes_svc_resolves() {
  [[ "$("$IMAGES/testbox" resolve -server "$NODE_IP:53" -timeout 2s "kubernetes.default.svc.$UNDERPASS_CLUSTER_DOMAIN")" == "$(testenv_cidr_host "$SVC_CIDR" 1)" ]]
}
# From the host through kube-proxy's rules: proof that Services are programmed.
kubernetes_svc_answers() { [[ "$(curl -s --max-time 3 --cacert "$PKI/ca.crt" "https://$(testenv_cidr_host "$SVC_CIDR" 1)/readyz")" == ok ]]; }
kubernetes_endpoint() {
  [[ "$(kubectl get endpointslices -n default -l kubernetes.io/service-name=kubernetes \
        -o jsonpath='{range .items[*]}{.endpoints[*].addresses[*]}:{.ports[*].port}{end}')" == "$NODE_IP:$APISERVER_PORT" ]]
}

wait_for "kube-scheduler /healthz" kube-scheduler https_ok "https://127.0.0.1:$SCHEDULER_PORT/healthz"
wait_for "kubelet /healthz" kubelet http_ok "http://127.0.0.1:$KUBELET_HEALTHZ_PORT/healthz"
wait_for "kube-proxy /healthz" kube-proxy curl -fs --max-time 3 "http://127.0.0.1:$PROXY_HEALTHZ_PORT/healthz"
wait_for "CoreDNS /ready" coredns http_ok "http://127.0.0.1:$COREDNS_READY_PORT/ready"
wait_for "kube-network-policies /readyz" kube-network-policies http_ok "http://127.0.0.1:$KNP_METRICS_PORT/readyz"
# Which packets go to its queue. Its own nftables table (inet kube-network-policies, the pods that
# policies select) uses nftables' queue expression, which kernels without CONFIG_NFT_QUEUE lack
# (this machine's: the table is refused with ENOENT and it logs "syncing nftables rules" errors).
# The xtables NFQUEUE target, through nft_compat, is in every kernel iptables runs on, so the
# rules are ours, in iptables' mangle table (iptables-nft), postrouting (after kube-proxy's DNAT,
# before SNAT, as upstream's chain): every new connection from or to a pod — also of pods no policy
# selects, which it accepts — except what root processes of the host send (kubelet's probes,
# tests), as upstream's "meta skuid 0 accept". Traffic to the node (CoreDNS, the apiserver) never
# passes postrouting. No --queue-bypass: if the process dies, pod traffic stops instead of policies
# silently no longer applying. Where the kernel has the queue expression its own table works too,
# and such packets are judged twice, with the same verdict.
cluster_netpol_rules_del "$HOST"
ipt() { iptables-nft -w 5 -t mangle "$@"; }
ipt -N "$UNDERPASS_CLUSTER_NETPOL_CHAIN"
ipt -A "$UNDERPASS_CLUSTER_NETPOL_CHAIN" -m owner --uid-owner 0 -j RETURN
for side in -s -d; do
  ipt -A "$UNDERPASS_CLUSTER_NETPOL_CHAIN" "$side" "$POD_CIDR" -m conntrack --ctstate NEW -j NFQUEUE --queue-num "$UNDERPASS_CLUSTER_NFQUEUE"
done
ipt -A POSTROUTING -j "$UNDERPASS_CLUSTER_NETPOL_CHAIN"
wait_for "the kubernetes Service's endpoint $NODE_IP" kube-apiserver kubernetes_endpoint
wait_for "node $NODE Ready and untainted" kubelet node_ready
wait_for "the kubernetes Service to answer through kube-proxy" kube-proxy kubernetes_svc_answers
wait_for "CoreDNS to answer kubernetes.default.svc" coredns kubernetes_svc_resolves
t_ready=$SECONDS

# --------------------------------------------------------------------------- summary
declare -A rss
total=0
for c in "${UNDERPASS_CLUSTER_COMPONENTS[@]}"; do
  pid="$(testenv_pid_alive "$dir" "$c")" || continue
  rss[$c]="$(cluster_rss_kib "$pid")"
  total=$((total + rss[$c]))
done
mapfile -t shims < <(cluster_shim_pids "$dir")
shim_kib=0
((${#shims[@]})) && shim_kib="$(cluster_rss_kib "${shims[@]}")"
total=$((total + shim_kib))
mem_line=""
for c in "${UNDERPASS_CLUSTER_COMPONENTS[@]}"; do
  [[ -n "${rss[$c]:-}" ]] && mem_line+=" $c $((rss[$c] / 1024))M,"
done
ok=1
cluster_log "ready in $((t_ready - t_built))s (binaries and images: $((t_built - t0))s): node $NODE ($NODE_IP), Kubernetes $UNDERPASS_K8S_VERSION"
cluster_log "memory (RSS) $((total / 1024)) MiB:${mem_line} shims $((shim_kib / 1024))M"
cluster_log "  export KUBECONFIG=$dir/kubeconfig   # or: source $dir/env"
cluster_log "  containerd: $SOCK (ctr --address $SOCK -n k8s.io ...; import images with test/env/cluster-import.sh)"
cluster_log "  stop with: make cluster-stop   (test/env/cluster-stop.sh $dir)"
