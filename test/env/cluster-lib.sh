# shellcheck shell=bash disable=SC2034
# (variables here are used by the scripts that source this file)
# Shared settings and code of the local single-node cluster (cluster-start.sh, cluster-stop.sh,
# cluster-status.sh, cluster-leftovers.sh, cluster-import.sh). Sourced, not executed.
# Sources lib.sh (pinned versions, certificates, ports, process helpers).
_CLUSTER_LIB_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
source "$_CLUSTER_LIB_DIR/lib.sh"

UNDERPASS_REPO_ROOT="$(cd "$_CLUSTER_LIB_DIR/../.." && pwd)"
UNDERPASS_CLUSTER_DEFAULT_DIR="$UNDERPASS_REPO_ROOT/.cluster"

# Network of the cluster. Everything lives on a bridge this script creates; nothing is routed
# or masqueraded to the outside. cluster-start.sh refuses to start when a host address or route
# overlaps these ranges. Override with the environment variables of the same name (then the
# values are recorded in DIR/cluster.conf and cluster-stop.sh reads them from there).
UNDERPASS_CLUSTER_BRIDGE="${UNDERPASS_CLUSTER_BRIDGE:-underpass0}"
UNDERPASS_CLUSTER_POD_CIDR="${UNDERPASS_CLUSTER_POD_CIDR:-10.213.0.0/24}"
UNDERPASS_CLUSTER_SERVICE_CIDR="${UNDERPASS_CLUSTER_SERVICE_CIDR:-10.213.128.0/24}"
UNDERPASS_CLUSTER_NODE_NAME="${UNDERPASS_CLUSTER_NODE_NAME:-underpass-node}"
# cgroup parent of all pods (kubelet --cgroup-root), in every cgroup v1 hierarchy.
UNDERPASS_CLUSTER_CGROUP="underpass-cluster"
# Our nftables table (forward filter: pods reach each other and the node, nothing else).
UNDERPASS_CLUSTER_NFT_TABLE="underpass-cluster"
# CNI network name (also the prefix of the CNI result cache files in /var/lib/cni/results).
UNDERPASS_CLUSTER_CNI_NETWORK="underpass-cluster"
UNDERPASS_CLUSTER_DOMAIN="cluster.local"

# Images built by cluster-images.sh and imported at every start. The sandbox image is
# containerd's sandbox_image; neither is ever pulled (the .test TLD never resolves).
UNDERPASS_CLUSTER_PAUSE_IMAGE="underpass.test/pause:v1"
UNDERPASS_CLUSTER_TESTBOX_IMAGE="underpass.test/testbox:v1"

# Machine-wide: one cluster at a time (a fixed bridge, pod range and cgroup). The lock
# serializes start and stop; the pointer file names the directory of the running cluster.
UNDERPASS_CLUSTER_LOCK="${UNDERPASS_TESTENV_CACHE}/cluster.lock"
UNDERPASS_CLUSTER_POINTER="${UNDERPASS_TESTENV_CACHE}/cluster.dir"

# Components in start order; stop goes in reverse. The control plane ones come from start.sh.
UNDERPASS_CLUSTER_COMPONENTS=(etcd kube-apiserver kube-controller-manager containerd kube-scheduler coredns kubelet kube-proxy
  kube-network-policies)
# The nftables table kube-network-policies keeps (NFQUEUE rules for pods that policies select):
# it removes it on a clean exit, cluster-stop.sh after a crash.
UNDERPASS_CLUSTER_KNP_TABLE="kube-network-policies"
# The chain of iptables' mangle table (iptables-nft) that sends new pod connections to
# kube-network-policies' NFQUEUE (cluster-start.sh says why it is not the controller's own rules).
UNDERPASS_CLUSTER_NETPOL_CHAIN="UNDERPASS-NETPOL"
UNDERPASS_CLUSTER_NFQUEUE=100

# cluster_netpol_rules_del: removes that chain and its jump; the mangle table too when the
# start created it (DIR/host/nft-tables lists the tables from before) and nothing else uses it.
cluster_netpol_rules_del() {
  local host="$1" ipt=(iptables-nft -w 5 -t mangle) removed=0
  command -v iptables-nft >/dev/null 2>&1 || return 0
  nft list table ip mangle >/dev/null 2>&1 || return 0
  while "${ipt[@]}" -D POSTROUTING -j "$UNDERPASS_CLUSTER_NETPOL_CHAIN" 2>/dev/null; do removed=1; done
  if "${ipt[@]}" -S "$UNDERPASS_CLUSTER_NETPOL_CHAIN" >/dev/null 2>&1; then
    "${ipt[@]}" -F "$UNDERPASS_CLUSTER_NETPOL_CHAIN" && "${ipt[@]}" -X "$UNDERPASS_CLUSTER_NETPOL_CHAIN" && removed=1
  fi
  if [[ -f "$host/nft-tables" ]] && ! grep -qx 'table ip mangle' "$host/nft-tables" &&
     [[ -z "$("${ipt[@]}" -S | grep -v '^-P ')" ]]; then
    nft delete table ip mangle && removed=1
  fi
  ((removed)) && cluster_log "removed the NetworkPolicy queue rules (iptables mangle chain $UNDERPASS_CLUSTER_NETPOL_CHAIN)"
  return 0
}

# Sysctls kubelet and kube-proxy may change (kubelet's setupKernelTunables; kube-proxy's
# conntrack settings are disabled in its config): saved at start, restored by cluster-stop.sh.
UNDERPASS_CLUSTER_SYSCTLS=(
  vm/overcommit_memory vm/panic_on_oom kernel/panic kernel/panic_on_oops
  kernel/keys/root_maxkeys kernel/keys/root_maxbytes
  net/netfilter/nf_conntrack_max net/ipv4/conf/all/route_localnet
  net/ipv4/ip_forward net/bridge/bridge-nf-call-iptables net/bridge/bridge-nf-call-ip6tables
)

# Host paths that containerd 1.6 / kubelet use no matter what their config says (shim
# sockets, the CNI result cache, kubelet's legacy log symlinks, kubelet's device-plugin socket:
# pluginapi.DevicePluginPath ignores --root-dir). cluster-stop.sh removes what we put there, and
# the directories themselves if they did not exist before the start.
UNDERPASS_CLUSTER_HOST_DIRS=(/run/containerd/s /run/containerd /var/lib/cni/results /var/lib/cni /var/log/containers
  /var/lib/kubelet/device-plugins /var/lib/kubelet)
# Default paths that must never appear (everything is configured under DIR): if one shows up
# after a start that did not have it before, cluster-leftovers.sh reports it.
UNDERPASS_CLUSTER_FOREIGN_DIRS=(/var/log/pods /var/lib/containerd /etc/containerd /opt/containerd
  /etc/cni /opt/cni /usr/libexec/kubernetes /etc/kubernetes /var/lib/calico)

cluster_log() { printf '[cluster] %s\n' "$*" >&2; }
cluster_die() { printf '[cluster] ERROR: %s\n' "$*" >&2; exit 1; }

# cluster_load_conf DIR: the network settings DIR's cluster was started with (DIR/cluster.conf),
# else the defaults above (for stop, status, leftovers: a start uses the current settings).
cluster_load_conf() {
  local conf="$1/cluster.conf"
  if [[ -f "$conf" ]]; then
    # shellcheck source=/dev/null
    source "$conf"
  fi
  cluster_derive_conf
}

# cluster_derive_conf: the node IP (first address of the pod range) and the prefix length.
cluster_derive_conf() {
  UNDERPASS_CLUSTER_NODE_IP="$(testenv_cidr_host "$UNDERPASS_CLUSTER_POD_CIDR" 1)" ||
    cluster_die "UNDERPASS_CLUSTER_POD_CIDR is not an IPv4 CIDR: $UNDERPASS_CLUSTER_POD_CIDR"
  UNDERPASS_CLUSTER_POD_PREFIX="${UNDERPASS_CLUSTER_POD_CIDR##*/}"
}

# cluster_write_conf DIR
cluster_write_conf() {
  {
    echo "# Written by test/env/cluster-start.sh: the settings this cluster runs with."
    local v
    for v in UNDERPASS_CLUSTER_BRIDGE UNDERPASS_CLUSTER_POD_CIDR UNDERPASS_CLUSTER_SERVICE_CIDR UNDERPASS_CLUSTER_NODE_NAME; do
      printf '%s=%q\n' "$v" "${!v}"
    done
  } >"$1/cluster.conf"
}

# cluster_running_dir: prints the directory of the cluster running on this machine (from the
# pointer file) if any of its components is alive.
cluster_running_dir() {
  local d c
  [[ -f "$UNDERPASS_CLUSTER_POINTER" ]] || return 1
  d="$(cat "$UNDERPASS_CLUSTER_POINTER" 2>/dev/null)" || return 1
  [[ -n "$d" && -d "$d" ]] || return 1
  for c in "${UNDERPASS_CLUSTER_COMPONENTS[@]}"; do
    testenv_pid_alive "$d" "$c" >/dev/null && { echo "$d"; return 0; }
  done
  return 1
}

# cluster_owner_elsewhere DIR: prints the directory the machine-wide pointer names when that is
# not DIR. The bridge, the nftables tables, the pods' cgroup root and the sysctls then belong
# to that cluster: scripts working on DIR leave them alone.
cluster_owner_elsewhere() {
  local owner
  [[ -f "$UNDERPASS_CLUSTER_POINTER" ]] || return 1
  owner="$(cat "$UNDERPASS_CLUSTER_POINTER" 2>/dev/null)" || return 1
  [[ -n "$owner" && "$owner" != "$1" ]] || return 1
  echo "$owner"
}

# cluster_lock: takes the machine-wide cluster lock on fd 9 (waits up to 10 minutes: a start
# that builds binaries holds it for long).
cluster_lock() {
  mkdir -p "$(dirname "$UNDERPASS_CLUSTER_LOCK")"
  exec 9>>"$UNDERPASS_CLUSTER_LOCK"
  if ! flock -n 9; then
    cluster_log "another cluster start or stop holds $UNDERPASS_CLUSTER_LOCK; waiting for it..."
    flock -w 600 9 || cluster_die "could not take $UNDERPASS_CLUSTER_LOCK within 10 minutes"
  fi
}

# cluster_cgroup_dirs: every cgroup v1 hierarchy's directory of our cgroup root (existing or
# not), or the cgroup v2 one.
cluster_cgroup_dirs() {
  local m
  if [[ "$(stat -fc %T /sys/fs/cgroup 2>/dev/null)" == cgroup2fs ]]; then
    echo "/sys/fs/cgroup/$UNDERPASS_CLUSTER_CGROUP"
    return 0
  fi
  while read -r _ m fstype _; do
    [[ "$fstype" == cgroup ]] && echo "$m/$UNDERPASS_CLUSTER_CGROUP"
  done </proc/mounts
}

# cluster_pids_of_cgroups: pids of every process in our cgroup tree (all hierarchies).
cluster_pids_of_cgroups() {
  local d
  while read -r d; do
    [[ -d "$d" ]] || continue
    find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null
  done < <(cluster_cgroup_dirs) | sort -un
}

# cluster_shim_pids DIR: containerd shims serving DIR's containerd (they outlive containerd).
cluster_shim_pids() {
  local sock="$1/containerd/containerd.sock" f cmd
  # One grep over every command line, then a closer look at the few that mention the socket.
  while read -r f; do
    cmd="$(tr '\0' ' ' 2>/dev/null <"$f")" || continue
    [[ "$cmd" == *containerd-shim* && "$cmd" == *"-address $sock "* ]] && { f="${f#/proc/}"; echo "${f%/cmdline}"; }
  done < <(grep -lsaF -- "$sock" /proc/[0-9]*/cmdline 2>/dev/null)
  return 0
}

# cluster_shim_socket DIR ID: where containerd 1.6 puts the socket of the shim of sandbox (or
# container) ID: /run/containerd/s/sha256(ADDRESS/NAMESPACE/ID), whatever the state dir is.
cluster_shim_socket() {
  printf '/run/containerd/s/%s\n' "$(printf '%s' "$1/containerd/containerd.sock/k8s.io/$2" | sha256sum | cut -c1-64)"
}

# cluster_sandbox_ids DIR: ids of every pod sandbox the CRI plugin of DIR's containerd has made
# (its directories outlive containerd; cluster-stop.sh records them in DIR/host/sandboxes).
cluster_sandbox_ids() {
  local sb
  for sb in "$1/containerd/root/io.containerd.grpc.v1.cri/sandboxes"/*; do [[ -d "$sb" ]] && basename "$sb"; done
  [[ -f "$1/host/sandboxes" ]] && cat "$1/host/sandboxes"
  return 0
}

# cluster_dir_pids DIR: processes whose command line names DIR (daemons started for it).
cluster_dir_pids() {
  local dir="$1" f p cmd
  while read -r f; do
    p="${f#/proc/}"; p="${p%/cmdline}"
    [[ "$p" == "$$" || "$p" == "$BASHPID" ]] && continue
    cmd="$(tr '\0' ' ' 2>/dev/null <"$f")" || continue
    # Not our own scripts (cluster-stop.sh DIR, make, a shell that runs them).
    [[ "$cmd" == *"/test/env/"* || "$cmd" == *"bash -c"* || "$cmd" == make* ]] && continue
    echo "$p"
  done < <(grep -lsaF -- "$dir/" /proc/[0-9]*/cmdline 2>/dev/null)
  return 0
}

# cluster_mounts_under DIR: mount points under DIR, deepest first.
cluster_mounts_under() {
  awk -v d="$1/" 'index($2, d) == 1 { print $2 }' /proc/self/mounts | awk '{ print length($0) " " $0 }' |
    sort -rn | cut -d' ' -f2- | sed 's/\\040/ /g'
}

# cluster_ctr DIR ARGS...: ctr against DIR's containerd, namespace k8s.io (the CRI's).
cluster_ctr() {
  local dir="$1"; shift
  ctr --address "$dir/containerd/containerd.sock" --namespace k8s.io "$@"
}

# cluster_rss_kib PID...: summed VmRSS of the pids, in KiB.
cluster_rss_kib() {
  local p sum=0 v
  for p in "$@"; do
    v="$(awk '/^VmRSS:/ { print $2 }' "/proc/$p/status" 2>/dev/null)" || continue
    sum=$((sum + ${v:-0}))
  done
  echo "$sum"
}
