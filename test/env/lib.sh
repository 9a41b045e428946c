# shellcheck shell=bash disable=SC2034
# (variables here are used by the scripts that source this file)
# Shared settings for test/env/*.sh. Sourced, not executed.
#
# Pinned versions of the test control plane. Bump them here; the cache directory is keyed by
# the Kubernetes version and every binary has a stamp file, so a bump rebuilds what changed.
UNDERPASS_K8S_VERSION="v1.34.4"    # k8s.io/kubernetes (kube-apiserver, kube-controller-manager, kubectl,
                                   #   kubelet, kube-scheduler, kube-proxy)
UNDERPASS_ETCD_VERSION="v3.6.16"   # go.etcd.io/etcd/server/v3
UNDERPASS_HELM_VERSION="v3.19.5"   # helm.sh/helm/v3
# github.com/coredns/coredns: the last release whose go.mod requires the k8s.io v0.34 modules
# (client-go v0.34.3), so its client stays within the supported skew of the v1.34 apiserver.
UNDERPASS_COREDNS_VERSION="v1.14.1"
# The CoreDNS plugins compiled in (test/env/build.sh writes the main that imports them). Only
# what the local cluster's Corefile uses: no forward, no cloud backends.
UNDERPASS_COREDNS_PLUGINS=(bind cache errors health kubernetes log ready template)
# sigs.k8s.io/kube-network-policies: NetworkPolicy enforcement (nftables + NFQUEUE, as kind runs it),
# a host process of the local cluster (the bridge CNI enforces no policy).
UNDERPASS_KNP_VERSION="v0.8.0"
# github.com/openshift/oc, tried by `build.sh oc` (optional: the quick-start test runs with oc only
# when it built). A pseudo-version, since oc's tags (openshift-clients-4.21.0-202601121715, the
# commit below) are not semantic versions; its k8s.io modules are v0.34.1, this cluster's minor.
UNDERPASS_OC_VERSION="v0.0.0-20251202105104-345800dc3c41"

# Bump when the build recipe changes in a way that should invalidate cached binaries.
UNDERPASS_TESTENV_RECIPE="1"

UNDERPASS_TESTENV_CACHE="${UNDERPASS_TESTENV_CACHE:-${HOME:?HOME is not set}/.cache/underpass-testenv}"
UNDERPASS_TESTENV_PREFIX="${UNDERPASS_TESTENV_CACHE}/${UNDERPASS_K8S_VERSION}"
UNDERPASS_TESTENV_BIN="${UNDERPASS_TESTENV_PREFIX}/bin"

# All binaries build.sh produces: the control plane of start.sh, then what the local cluster
# (cluster-start.sh) adds to it.
UNDERPASS_TESTENV_CONTROL_PLANE=(kube-apiserver kube-controller-manager kubectl etcd helm)
UNDERPASS_CLUSTER_NODE_BINARIES=(kubelet kube-scheduler kube-proxy coredns kube-network-policies)
UNDERPASS_TESTENV_BINARIES=("${UNDERPASS_TESTENV_CONTROL_PLANE[@]}" "${UNDERPASS_CLUSTER_NODE_BINARIES[@]}")
# Built only when asked by name (build.sh oc), never as part of "all"; may be unavailable.
UNDERPASS_TESTENV_OPTIONAL_BINARIES=(oc)
# The ones built from k8s.io/kubernetes, in one `go build`.
UNDERPASS_K8S_BINARIES=(kube-apiserver kube-controller-manager kubectl kubelet kube-scheduler kube-proxy)

testenv_log() { printf '[testenv] %s\n' "$*" >&2; }
testenv_die() { printf '[testenv] ERROR: %s\n' "$*" >&2; exit 1; }

# Expected content of bin/.stamp-NAME for a binary built by the current recipe.
testenv_stamp_for() {
  local name="$1" ver
  case "$name" in
    kube-apiserver|kube-controller-manager|kubectl|kubelet|kube-scheduler|kube-proxy)
      ver="k8s.io/kubernetes@${UNDERPASS_K8S_VERSION}" ;;
    etcd) ver="go.etcd.io/etcd/server/v3@${UNDERPASS_ETCD_VERSION}" ;;
    helm) ver="helm.sh/helm/v3@${UNDERPASS_HELM_VERSION} k8s=${UNDERPASS_K8S_VERSION}" ;;
    coredns) ver="github.com/coredns/coredns@${UNDERPASS_COREDNS_VERSION} plugins=$(IFS=,; echo "${UNDERPASS_COREDNS_PLUGINS[*]}")" ;;
    kube-network-policies) ver="sigs.k8s.io/kube-network-policies@${UNDERPASS_KNP_VERSION} main=2" ;;
    oc) ver="github.com/openshift/oc@${UNDERPASS_OC_VERSION}" ;;
    *) testenv_die "unknown binary: $name" ;;
  esac
  printf '%s %s recipe=%s\n' "$name" "$ver" "$UNDERPASS_TESTENV_RECIPE"
}

# True if bin/NAME exists, is executable, and its stamp matches the current versions.
testenv_is_built() {
  local name="$1" stamp="${UNDERPASS_TESTENV_BIN}/.stamp-$1"
  [[ -x "${UNDERPASS_TESTENV_BIN}/${name}" && -f "$stamp" ]] || return 1
  [[ "$(cat "$stamp")" == "$(testenv_stamp_for "$name")" ]]
}

# Names of binaries that are missing or stale, space separated.
testenv_missing_binaries() {
  local n out=()
  for n in "${UNDERPASS_TESTENV_BINARIES[@]}"; do
    testenv_is_built "$n" || out+=("$n")
  done
  echo "${out[*]-}"
}

# ------------------------------------------------------------------ certificates (openssl)

# testenv_new_ca PKI_DIR: writes PKI_DIR/ca.{key,crt} unless they exist.
testenv_new_ca() {
  local pki="$1"
  [[ -f "$pki/ca.key" && -f "$pki/ca.crt" ]] && return 0
  mkdir -p "$pki"
  openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
    -keyout "$pki/ca.key" -out "$pki/ca.crt" -days 3650 -subj "/CN=underpass-testenv-ca" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
    2>/dev/null || testenv_die "openssl could not create the CA in $pki"
  chmod 600 "$pki/ca.key"
}

# Escape a value for an openssl -subj string (/ and \ are special).
testenv_subj_escape() { printf '%s' "$1" | sed -e 's/[\\/]/\\&/g'; }

# testenv_issue_cert PKI_DIR CA_DIR NAME server|client CN [ORG...]
#   Writes PKI_DIR/NAME.{key,crt}, signed by CA_DIR/ca.{key,crt}. Server certs get SANs for
#   localhost, 127.0.0.1 and the in-cluster names of the kubernetes Service, plus the
#   comma-separated SANs in TESTENV_EXTRA_SANS (e.g. "IP:10.213.0.1,DNS:node").
testenv_issue_cert() {
  local pki="$1" ca="$2" name="$3" kind="$4" cn="$5"; shift 5
  local subj="" o ext
  for o in "$@"; do subj+="/O=$(testenv_subj_escape "$o")"; done
  subj+="/CN=$(testenv_subj_escape "$cn")"
  mkdir -p "$pki"
  ext="$(mktemp)"
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    if [[ "$kind" == server ]]; then
      echo "extendedKeyUsage=serverAuth"
      echo "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:10.0.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local${TESTENV_EXTRA_SANS:+,$TESTENV_EXTRA_SANS}"
    else
      echo "extendedKeyUsage=clientAuth"
    fi
  } >"$ext"
  if ! openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
         -keyout "$pki/$name.key" -subj "$subj" 2>/dev/null |
       openssl x509 -req -CA "$ca/ca.crt" -CAkey "$ca/ca.key" -CAcreateserial -CAserial "$pki/.ca.srl" \
         -days 3650 -extfile "$ext" -out "$pki/$name.crt" 2>/dev/null; then
    rm -f "$ext"; testenv_die "openssl could not issue the $kind certificate $pki/$name.crt ($subj)"
  fi
  rm -f "$ext"
  chmod 600 "$pki/$name.key"
}

# testenv_write_kubeconfig FILE SERVER_URL CA_CRT USER CLIENT_CRT CLIENT_KEY [NAMESPACE]
#   Self-contained kubeconfig (certificates embedded), mode 600.
testenv_write_kubeconfig() {
  local file="$1" server="$2" ca="$3" user="$4" crt="$5" key="$6" ns="${7:-}" tmp nsline=""
  [[ -n "$ns" ]] && nsline=$'\n'"    namespace: \"${ns}\""
  tmp="$(mktemp "${file}.XXXXXX" 2>/dev/null || mktemp)"
  chmod 600 "$tmp"
  cat >"$tmp" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
- name: underpass-testenv
  cluster:
    server: ${server}
    certificate-authority-data: $(base64 -w0 <"$ca")
users:
- name: "${user}"
  user:
    client-certificate-data: $(base64 -w0 <"$crt")
    client-key-data: $(base64 -w0 <"$key")
contexts:
- name: underpass-testenv
  context:
    cluster: underpass-testenv
    user: "${user}"${nsline}
current-context: underpass-testenv
preferences: {}
KUBECONFIG
  mv -f "$tmp" "$file"
}

# ------------------------------------------------------------------------------ processes

# The components start.sh runs, in start order.
UNDERPASS_TESTENV_COMPONENTS=(etcd kube-apiserver kube-controller-manager)

# testenv_pid_alive DIR COMPONENT: prints the pid and returns 0 if DIR/COMPONENT.pid names a
# live process that is really that component of DIR (guards against pid reuse).
testenv_pid_alive() {
  local dir="$1" comp="$2" pid cmd
  [[ -f "$dir/$comp.pid" ]] || return 1
  pid="$(cat "$dir/$comp.pid" 2>/dev/null)" || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  [[ -r "/proc/$pid/cmdline" ]] || return 1
  cmd="$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline")" || return 1
  [[ "$cmd" == *"/$comp "* && "$cmd" == *"$dir/"* ]] || return 1
  echo "$pid"
}

# -------------------------------------------------------------------------- IPv4 arithmetic

# testenv_ipv4_to_int A.B.C.D: prints the address as an integer; fails on anything else.
testenv_ipv4_to_int() {
  local IFS=. a b c d
  [[ "$1" =~ ^[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}$ ]] || return 1
  read -r a b c d <<<"$1"
  ((a < 256 && b < 256 && c < 256 && d < 256)) || return 1
  echo $(((a << 24) | (b << 16) | (c << 8) | d))
}
testenv_int_to_ipv4() { echo "$(($1 >> 24 & 255)).$(($1 >> 16 & 255)).$(($1 >> 8 & 255)).$(($1 & 255))"; }

# testenv_cidr_range A.B.C.D/N: prints "FIRST LAST" (integers) of the network; fails if invalid.
testenv_cidr_range() {
  local ip="${1%/*}" len="${1##*/}" n mask
  [[ "$1" == */* && "$len" =~ ^[0-9]+$ ]] && ((len <= 32)) || return 1
  n="$(testenv_ipv4_to_int "$ip")" || return 1
  mask=$(((0xffffffff << (32 - len)) & 0xffffffff))
  echo "$((n & mask)) $(((n & mask) | (~mask & 0xffffffff)))"
}

# testenv_cidr_host CIDR K: prints the K-th address of the network (1 = first host).
testenv_cidr_host() {
  local lo hi
  read -r lo hi < <(testenv_cidr_range "$1") || return 1
  [[ -n "$lo" ]] && (($2 >= 0 && lo + $2 <= hi)) || return 1
  testenv_int_to_ipv4 $((lo + $2))
}

# testenv_cidrs_overlap CIDR1 CIDR2: true if the two networks share an address.
testenv_cidrs_overlap() {
  local a1 a2 b1 b2
  read -r a1 a2 < <(testenv_cidr_range "$1") || return 1
  read -r b1 b2 < <(testenv_cidr_range "$2") || return 1
  ((a1 <= b2 && b1 <= a2))
}

# ---------------------------------------------------------------------------------- ports

# Directory of port reservation files shared by all test environments of this user.
testenv_port_reservations() { echo "${TMPDIR:-/tmp}/underpass-testenv-ports-$(id -u)"; }

testenv_port_in_use() { [[ -n "$(ss -Hltn "sport = :$1" 2>/dev/null)" ]]; }

# testenv_release_ports DIR: drop the port reservations held by DIR (ports from DIR/env).
testenv_release_ports() {
  local dir="$1" resv p
  resv="$(testenv_port_reservations)"
  [[ -f "$dir/env" ]] || return 0
  while read -r p; do
    [[ -f "$resv/$p" && "$(cat "$resv/$p" 2>/dev/null)" == "$dir" ]] && rm -f "$resv/$p"
  done < <(sed -n 's/^export [A-Z_]*PORT=\([0-9]*\)$/\1/p' "$dir/env")
  return 0
}

# testenv_pick_ports DIR VAR[=PREFERRED]...: sets each VAR to a random free TCP port (PREFERRED
#   when that one is free) and reserves it for DIR.
#   Ports come from 15000 up to the start of the kernel's ephemeral range (so outgoing
#   connections do not take them), nothing listens on them (ss), and no other test environment
#   has reserved them. Reservations are files in testenv_port_reservations (content: the owning
#   DIR), taken under a machine-wide lock; stop.sh drops them (testenv_release_ports), and a
#   reservation whose owner runs nothing and is older than 10 minutes is stale. DIR's own
#   reservations are free again unless DIR/env lists the port (taken earlier in this start).
testenv_pick_ports() {
  local dir="$1"; shift
  local eph_lo port_lo port_hi resv chosen=" " var p i owner c f ok
  read -r eph_lo _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || eph_lo=32768
  port_lo=15000 port_hi=$((eph_lo - 1))
  ((port_hi - port_lo >= 1000)) || { port_lo=20000; port_hi=60999; }
  resv="$(testenv_port_reservations)"
  mkdir -p "$resv"
  exec 8>>"$resv/.lock"
  flock -w 60 8 || testenv_die "could not take the port lock $resv/.lock"
  local spec want
  for spec in "$@"; do
    var="${spec%%=*}" want=""
    [[ "$spec" == *=* ]] && want="${spec#*=}"
    ok=0
    for ((i = 0; i < 500; i++)); do
      if ((i == 0)) && [[ "$want" =~ ^[0-9]+$ ]]; then p="$want"; else
        p=$((port_lo + (RANDOM * 32768 + RANDOM) % (port_hi - port_lo + 1)))
      fi
      [[ "$chosen" == *" $p "* ]] && continue
      testenv_port_in_use "$p" && continue
      f="$resv/$p"
      if [[ -f "$f" ]] && owner="$(cat "$f" 2>/dev/null)"; then
        if [[ "$owner" == "$dir" ]]; then
          [[ -f "$dir/env" ]] && grep -q "PORT=$p\$" "$dir/env" && continue
        else
          [[ -n "$(find "$f" -mmin -10 2>/dev/null)" ]] && continue
          for c in "${UNDERPASS_TESTENV_COMPONENTS[@]}" "${UNDERPASS_TESTENV_EXTRA_COMPONENTS[@]}"; do
            testenv_pid_alive "$owner" "$c" >/dev/null && continue 2
          done
        fi
      fi
      chosen+="$p "
      echo "$dir" >"$f"
      printf -v "$var" '%s' "$p"
      ok=1
      break
    done
    ((ok)) || { flock -u 8; exec 8>&-; testenv_die "could not find a free port in $port_lo-$port_hi"; }
  done
  flock -u 8; exec 8>&-
}

# Components other scripts (cluster-start.sh) run in a DIR, for the port-staleness check.
UNDERPASS_TESTENV_EXTRA_COMPONENTS=(containerd kubelet kube-scheduler kube-proxy coredns kube-network-policies)

# testenv_launch DIR EXE NAME ARGS...: runs EXE detached (own session, stdio appended to
#   DIR/NAME.log, lock fds 8 and 9 closed), its pid written to DIR/NAME.pid by the process
#   itself right before exec so it is the real pid. Returns once the pid file exists.
testenv_launch() {
  local dir="$1" exe="$2" name="$3" i; shift 3
  : >>"$dir/$name.log"
  printf '\n==== %s %s: %s %s\n' "$(date -u +%FT%TZ)" "$(basename "$0")" "$exe" "$*" >>"$dir/$name.log"
  rm -f "$dir/$name.pid"
  # shellcheck disable=SC2016 # $$ and $@ are for the inner bash
  setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' _ "$dir/$name.pid" "$exe" "$@" \
    </dev/null >>"$dir/$name.log" 2>&1 8>&- 9>&- &
  for ((i = 0; i < 50; i++)); do [[ -s "$dir/$name.pid" ]] && break; sleep 0.1; done
}
