#!/usr/bin/env bash
# Stop the local cluster (make cluster-stop) and remove everything it put on the host.
# See test/env/README.md ("Local cluster").
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=cluster-lib.sh
source "$HERE/cluster-lib.sh"

usage() {
  cat <<EOF
Usage: test/env/cluster-stop.sh [--purge] [DIR]

Stops the cluster test/env/cluster-start.sh started in DIR (default $UNDERPASS_CLUSTER_DEFAULT_DIR)
and removes what it created on the host, whatever state it is in (also after a crash):

  processes   kubelet, kube-proxy, CoreDNS, kube-scheduler, the control plane, containerd, its
              shims, and every process left in the pods' cgroups
  containers  every container and task in DIR's containerd (images stay, under DIR)
  mounts      everything mounted under DIR (pod volumes, rootfs overlays, sandbox shm,
              network namespaces, kubelet's shared root), deepest first
  cgroups     /sys/fs/cgroup/*/$UNDERPASS_CLUSTER_CGROUP
  network     the bridge and its veths, nftables tables inet $UNDERPASS_CLUSTER_NFT_TABLE, ip/ip6
              kube-proxy and inet $UNDERPASS_CLUSTER_KNP_TABLE, the pods' IP leases
  host        sysctls kubelet changed (restored to their value before the start), kubelet's
              /var/log/containers links, CNI result cache entries, directories it created

then runs test/env/cluster-leftovers.sh DIR and exits 1 if anything is left. Idempotent; safe
on a DIR that never ran. State (etcd data, certificates, images) stays in DIR for the next
start unless --purge, which removes DIR.

Options:
  --purge     remove DIR afterwards (only when nothing is mounted under it any more)
  -h, --help  show this help
EOF
}

purge=0 dir=""
while (($#)); do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --purge) purge=1 ;;
    -*) cluster_die "unknown option: $1 (see --help)" ;;
    *) [[ -z "$dir" ]] || cluster_die "only one DIR expected (see --help)"; dir="$1" ;;
  esac
  shift
done
dir="${dir:-$UNDERPASS_CLUSTER_DEFAULT_DIR}"
if [[ ! -d "$dir" ]]; then
  cluster_log "$dir does not exist; nothing to stop"
  exit 0
fi
dir="$(cd "$dir" && pwd -P)"
[[ "$(id -u)" == 0 ]] || cluster_die "stopping the local cluster needs root"
[[ "${UNDERPASS_CLUSTER_LOCKED:-}" == 1 ]] || cluster_lock
cluster_load_conf "$dir"
BR="$UNDERPASS_CLUSTER_BRIDGE"
t0=$SECONDS
# Another directory's cluster owns the machine-wide parts: stop only what runs from DIR.
shared=1
if other="$(cluster_owner_elsewhere "$dir")"; then
  shared=0
  cluster_log "the bridge, tables and cgroups belong to the cluster of $other; stopping only what runs from $dir"
fi

alive() { [[ -d "/proc/$1" ]] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null; }
# stop_pids GRACE PID...: SIGTERM, then SIGKILL for what still runs after GRACE seconds.
stop_pids() {
  local grace="$1" p deadline; shift
  (($#)) || return 0
  kill -TERM "$@" 2>/dev/null || true
  deadline=$((SECONDS + grace))
  for p in "$@"; do
    while alive "$p" && ((SECONDS < deadline)); do sleep 0.1; done
  done
  for p in "$@"; do if alive "$p"; then kill -KILL "$p" 2>/dev/null || true; fi; done
  for p in "$@"; do
    for ((w = 0; w < 50; w++)); do alive "$p" || break; sleep 0.1; done
  done
}
# stop_component NAME GRACE: the process of DIR/NAME.pid (if it is really NAME of DIR).
stop_component() {
  local pid
  if pid="$(testenv_pid_alive "$dir" "$1")"; then
    stop_pids "$2" "$pid"
    cluster_log "stopped $1 (pid $pid)"
  fi
  rm -f "$dir/$1.pid"
}

# 1. Node components first, kubelet before all (nothing restarts containers any more).
stop_component kubelet 10
stop_component kube-proxy 5
# Its queue rules first: without the process, pod traffic through them would stop.
((shared)) && cluster_netpol_rules_del "$dir/host"
stop_component kube-network-policies 8
stop_component coredns 5
stop_component kube-scheduler 5

# 2. Every container of DIR's containerd: kill its tasks (the shims unmount the rootfs and exit),
#    delete the containers with their snapshots. Images stay.
if testenv_pid_alive "$dir" containerd >/dev/null; then
  mapfile -t tasks < <(cluster_ctr "$dir" tasks list -q 2>/dev/null || true)
  for t in "${tasks[@]}"; do cluster_ctr "$dir" tasks kill --all --signal SIGKILL "$t" >/dev/null 2>&1 || true; done
  # The CRI plugin deletes a task as soon as it exits; delete (forcibly) what is still listed.
  for ((w = 0; w < 50; w++)); do
    [[ -z "$(cluster_ctr "$dir" tasks list -q 2>/dev/null)" ]] && break
    sleep 0.2
  done
  while read -r t; do
    [[ -n "$t" ]] && { cluster_ctr "$dir" tasks delete --force "$t" >/dev/null 2>&1 || true; }
  done < <(cluster_ctr "$dir" tasks list -q 2>/dev/null || true)
  mapfile -t ctrs < <(cluster_ctr "$dir" containers list -q 2>/dev/null || true)
  for c in "${ctrs[@]}"; do cluster_ctr "$dir" containers delete "$c" >/dev/null 2>&1 || true; done
  ((${#ctrs[@]})) && cluster_log "removed ${#ctrs[@]} containers (${#tasks[@]} were running)"
fi
stop_component containerd 10

# 3. The control plane (its own script), then whatever survived: shims of a crashed containerd,
#    processes left in the pods' cgroups, anything else started with DIR on its command line.
"$HERE/stop.sh" "$dir" >&2
mapfile -t shims < <(cluster_shim_pids "$dir")
if ((${#shims[@]})); then
  stop_pids 3 "${shims[@]}"
  cluster_log "stopped ${#shims[@]} containerd shims"
fi
for ((round = 0; round < 5 && shared; round++)); do
  mapfile -t pids < <(cluster_pids_of_cgroups)
  ((${#pids[@]})) || break
  ((round)) || cluster_log "killing ${#pids[@]} processes left in the pods' cgroups"
  kill -KILL "${pids[@]}" 2>/dev/null || true
  sleep 0.2
done
mapfile -t pids < <(cluster_dir_pids "$dir")
if ((${#pids[@]})); then
  cluster_log "stopping processes that still name $dir: ${pids[*]}"
  stop_pids 3 "${pids[@]}"
fi

# 4. Mounts under DIR, deepest first (lazily when busy, so nothing blocks the stop).
#    kubelet's root is a shared bind mount, so unmounting one path can take copies of it
#    elsewhere along: list again after each round.
n=0
for ((round = 0; round < 5; round++)); do
  mapfile -t mounts < <(cluster_mounts_under "$dir")
  ((${#mounts[@]})) || break
  for m in "${mounts[@]}"; do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
    n=$((n + 1))
  done
done
((n)) && cluster_log "unmounted $n mounts under $dir"

if ((shared)); then
  # 5. cgroups, deepest first (empty by now).
  while read -r cg; do
    [[ -d "$cg" ]] || continue
    find "$cg" -depth -type d -exec rmdir {} \; 2>/dev/null || true
    [[ -d "$cg" ]] && cluster_log "could not remove cgroup $cg"
  done < <(cluster_cgroup_dirs)

  # cgroup v2: controllers the start delegated at the root (best effort: another user may use them).
  if [[ -f "$dir/host/cgroup-controllers" ]]; then
    while read -r c; do echo "-$c" >/sys/fs/cgroup/cgroup.subtree_control 2>/dev/null || true; done <"$dir/host/cgroup-controllers"
    rm -f "$dir/host/cgroup-controllers"
  fi

  # 6. Network: veths on the bridge (their namespaces are gone with the mounts), the bridge,
  #    the nftables tables (ours, kube-proxy's: it leaves them on exit by design, and
#    kube-network-policies' if it died before removing its own), leases.
  if ip link show "$BR" >/dev/null 2>&1; then
    while read -r l; do ip link del "$l" 2>/dev/null || true; done < <(
      ip -o link show master "$BR" 2>/dev/null | awk -F': ' '{ sub(/@.*/, "", $2); print $2 }')
    ip link del "$BR"
    cluster_log "removed bridge $BR"
  fi
  for t in "inet $UNDERPASS_CLUSTER_NFT_TABLE" "ip kube-proxy" "ip6 kube-proxy" "inet $UNDERPASS_CLUSTER_KNP_TABLE"; do
    # shellcheck disable=SC2086
    nft list table $t >/dev/null 2>&1 && nft delete table $t && cluster_log "removed nftables table $t"
  done
  rm -rf "$dir/cni/ipam"

  # 7. Host state: sysctls back to their value before the start, CNI's result cache of our
  #    network.
  HOST="$dir/host"
  if [[ -f "$HOST/sysctl" ]]; then
    while IFS='=' read -r k v; do
      [[ -n "$k" && -w "/proc/sys/$k" ]] || continue
      cur="$(cat "/proc/sys/$k")"
      if [[ "$cur" != "$v" ]]; then
        echo "$v" >"/proc/sys/$k" && cluster_log "restored ${k//\//.} = $v (was $cur)"
      fi
    done <"$HOST/sysctl"
  fi
  rm -f /var/lib/cni/results/"$UNDERPASS_CLUSTER_CNI_NETWORK"-*
fi

# 7b. What belongs to DIR's pods alone: kubelet's links to their logs, and per sandbox CNI's
#     result cache (NETWORK-SANDBOXID-IFNAME: containerd's loopback network) and the shim's
#     socket, which a killed shim leaves in /run/containerd/s.
if [[ -d /var/log/containers ]]; then
  find /var/log/containers -maxdepth 1 -type l -lname "$dir/*" -delete 2>/dev/null || true
fi
CRI_ROOT="$dir/containerd/root/io.containerd.grpc.v1.cri"
mapfile -t sandboxes < <(cluster_sandbox_ids "$dir" | sort -u)
for sb in "${sandboxes[@]}"; do
  [[ -n "$sb" ]] && rm -f /var/lib/cni/results/cni-loopback-"$sb"-* "$(cluster_shim_socket "$dir" "$sb")"
done
[[ -d "$dir/host" ]] && printf '%s\n' "${sandboxes[@]}" >"$dir/host/sandboxes"   # for cluster-leftovers.sh
# The CRI plugin's per-sandbox and per-container directories (their containers are gone).
rm -rf "$CRI_ROOT/sandboxes" "$CRI_ROOT/containers" \
  "$dir/containerd/state/io.containerd.grpc.v1.cri/sandboxes" "$dir/containerd/state/io.containerd.grpc.v1.cri/containers"

# Directories the start created on the host (when empty now; not while another cluster runs).
if ((shared)) && [[ -f "$dir/host/absent-dirs" ]]; then
  while read -r d; do
    [[ -d "$d" ]] || continue
    if [[ "$d" == /var/lib/kubelet/device-plugins ]]; then
      rm -f "$d/kubelet.sock" "$d/kubelet_internal_checkpoint"
    fi
    rmdir "$d" 2>/dev/null || true
  done < <(sort -r "$dir/host/absent-dirs")
fi

# 8. Bookkeeping: port reservations, the machine-wide pointer.
testenv_release_ports "$dir"
for c in "${UNDERPASS_CLUSTER_COMPONENTS[@]}"; do rm -f "$dir/$c.pid"; done
if [[ -f "$UNDERPASS_CLUSTER_POINTER" && "$(cat "$UNDERPASS_CLUSTER_POINTER")" == "$dir" ]]; then
  rm -f "$UNDERPASS_CLUSTER_POINTER"
fi

if ! "$HERE/cluster-leftovers.sh" "$dir" >&2; then
  cluster_die "the cluster in $dir left something behind (listed above)"
fi
cluster_log "stopped in $((SECONDS - t0))s; nothing left behind"
if ((purge)); then
  [[ -z "$(cluster_mounts_under "$dir")" ]] || cluster_die "not removing $dir: something is still mounted under it"
  rm -rf "$dir"
  cluster_log "removed $dir"
fi
