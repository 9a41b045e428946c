#!/usr/bin/env bash
# List what the local cluster of DIR left on this machine; exit 1 if anything.
# cluster-stop.sh runs it last. See test/env/README.md ("Local cluster").
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=cluster-lib.sh
source "$HERE/cluster-lib.sh"

usage() {
  cat <<EOF
Usage: test/env/cluster-leftovers.sh [DIR]

Lists, one "LEFTOVER kind: detail" line each, what a stopped cluster of DIR (default
$UNDERPASS_CLUSTER_DEFAULT_DIR) would have left behind: processes (pid files, containerd shims,
processes in the pods' cgroups or naming DIR), mounts under DIR, cgroups, the bridge, veths and
addresses in the pod range, nftables tables (ours, kube-proxy's), iptables rules naming KUBE-
chains or the pod range, sysctls that differ from before the start, kubelet's log links, CNI
cache entries, default directories (/var/lib/kubelet, /etc/cni, ...) that appeared, port
reservations, the machine-wide pointer. Exit 0 and "no leftovers" when clean, 1 otherwise.
EOF
}
case "${1:-}" in -h|--help) usage; exit 0 ;; esac
dir="${1:-$UNDERPASS_CLUSTER_DEFAULT_DIR}"
[[ -d "$dir" ]] && dir="$(cd "$dir" && pwd -P)"
cluster_load_conf "$dir"
BR="$UNDERPASS_CLUSTER_BRIDGE"
# While another directory's cluster runs, the bridge, tables, cgroups and sysctls are its own.
shared=1
if other="$(cluster_owner_elsewhere "$dir")"; then
  shared=0
  echo "(the cluster of $other owns the bridge, tables, cgroups and sysctls: not checked for $dir)"
fi

found=0
left() { printf 'LEFTOVER %s\n' "$*"; found=1; }

# Processes.
for c in "${UNDERPASS_CLUSTER_COMPONENTS[@]}"; do
  pid="$(testenv_pid_alive "$dir" "$c")" && left "process: $c (pid $pid)"
done
for p in $(cluster_shim_pids "$dir"); do left "process: containerd shim (pid $p)"; done
((shared)) && for p in $(cluster_pids_of_cgroups); do left "process: pid $p in cgroup $(sed -n 's/^[0-9]*:memory://p' "/proc/$p/cgroup" 2>/dev/null)"; done
for p in $(cluster_dir_pids "$dir"); do left "process: pid $p: $(tr '\0' ' ' 2>/dev/null <"/proc/$p/cmdline" | cut -c1-120)"; done

# Mounts (pod volumes, overlays, shm, network namespaces, kubelet's root).
while read -r m; do [[ -n "$m" ]] && left "mount: $m"; done < <(cluster_mounts_under "$dir")
if ((shared)); then
  while read -r cg; do [[ -d "$cg" ]] && left "cgroup: $cg"; done < <(cluster_cgroup_dirs)

  # Network.
  ip link show "$BR" >/dev/null 2>&1 && left "interface: bridge $BR"
  while read -r l; do [[ -n "$l" ]] && left "interface: $l (on $BR)"; done < <(
    ip -o link show master "$BR" 2>/dev/null | awk -F': ' '{ sub(/@.*/, "", $2); print $2 }')
  while read -r ifname addr; do
    testenv_cidrs_overlap "$addr" "$UNDERPASS_CLUSTER_POD_CIDR" 2>/dev/null && left "address: $addr on $ifname"
  done < <(ip -4 -o addr show 2>/dev/null | awk '{ print $2, $4 }')
  while read -r r; do [[ -n "$r" ]] && left "route: $r"; done < <(
    ip -4 route show table all 2>/dev/null | grep -F -e "${UNDERPASS_CLUSTER_POD_CIDR%.*}." -e "${UNDERPASS_CLUSTER_SERVICE_CIDR%.*}." || true)
  while read -r fam name; do
    case "$name" in
      "$UNDERPASS_CLUSTER_NFT_TABLE"|kube-proxy|"$UNDERPASS_CLUSTER_KNP_TABLE") left "nftables table: $fam $name" ;;
    esac
  done < <(nft list tables 2>/dev/null | awk '$1 == "table" { print $2, $3 }')
  for ipt in iptables-save ip6tables-save; do
    command -v "$ipt" >/dev/null 2>&1 || continue
    while read -r rule; do [[ -n "$rule" ]] && left "$ipt: $rule"; done < <(
      "$ipt" 2>/dev/null | grep -E -e 'KUBE-' -e "$BR" -e "${UNDERPASS_CLUSTER_CNI_NETWORK}" -e "$UNDERPASS_CLUSTER_NETPOL_CHAIN" | grep -v '^#' || true)
  done
  if [[ -f "$dir/host/nft-tables" ]] && ! grep -qx 'table ip mangle' "$dir/host/nft-tables" && nft list table ip mangle >/dev/null 2>&1; then
    left "nftables table: ip mangle (created by the start for the NetworkPolicy queue rules)"
  fi

  # Host state recorded at the start.
  HOST="$dir/host"
  if [[ -f "$HOST/sysctl" ]]; then
    while IFS='=' read -r k v; do
      [[ -r "/proc/sys/$k" ]] || continue
      cur="$(cat "/proc/sys/$k")"
      [[ "$cur" == "$v" ]] || left "sysctl: ${k//\//.} = $cur (was $v before the start)"
    done <"$HOST/sysctl"
  fi
  if [[ -f "$HOST/absent-dirs" ]]; then
    while read -r d; do
      [[ -e "$d" ]] && left "path: $d (did not exist before the start)"
    done <"$HOST/absent-dirs"
  fi
fi
if [[ -d /var/log/containers ]]; then
  while read -r l; do [[ -n "$l" ]] && left "log link: $l"; done < <(find /var/log/containers -maxdepth 1 -type l -lname "$dir/*" 2>/dev/null)
fi
((shared)) && for f in /var/lib/cni/results/"$UNDERPASS_CLUSTER_CNI_NETWORK"-*; do [[ -e "$f" ]] && left "CNI cache: $f"; done
while read -r sb; do
  [[ -n "$sb" ]] || continue
  for f in /var/lib/cni/results/*-"$sb"-*; do [[ -e "$f" ]] && left "CNI cache: $f"; done
  s="$(cluster_shim_socket "$dir" "$sb")"
  [[ -e "$s" ]] && left "shim socket: $s (sandbox $sb)"
done < <(cluster_sandbox_ids "$dir" | sort -u)

# Bookkeeping.
resv="$(testenv_port_reservations)"
if [[ -d "$resv" ]]; then
  while read -r f; do [[ -n "$f" ]] && left "port reservation: $f"; done < <(grep -lxF "$dir" "$resv"/[0-9]* 2>/dev/null)
fi
if [[ -f "$UNDERPASS_CLUSTER_POINTER" && "$(cat "$UNDERPASS_CLUSTER_POINTER" 2>/dev/null)" == "$dir" ]] && ! cluster_running_dir >/dev/null; then
  left "pointer: $UNDERPASS_CLUSTER_POINTER names $dir, which runs nothing"
fi

if ((found)); then exit 1; fi
echo "no leftovers of the cluster in $dir"
