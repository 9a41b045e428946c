# shellcheck shell=bash disable=SC2034
# (variables here are used by the scripts that source this file)
# Shared settings for test/env/*.sh. Sourced, not executed.
#
# Pinned versions of the test control plane. Bump them here; the cache directory is keyed by
# the Kubernetes version and every binary has a stamp file, so a bump rebuilds what changed.
UNDERPASS_K8S_VERSION="v1.34.4"    # k8s.io/kubernetes (kube-apiserver, kube-controller-manager, kubectl)
UNDERPASS_ETCD_VERSION="v3.6.16"   # go.etcd.io/etcd/server/v3
UNDERPASS_HELM_VERSION="v3.19.5"   # helm.sh/helm/v3

# Bump when the build recipe changes in a way that should invalidate cached binaries.
UNDERPASS_TESTENV_RECIPE="1"

UNDERPASS_TESTENV_CACHE="${UNDERPASS_TESTENV_CACHE:-${HOME:?HOME is not set}/.cache/underpass-testenv}"
UNDERPASS_TESTENV_PREFIX="${UNDERPASS_TESTENV_CACHE}/${UNDERPASS_K8S_VERSION}"
UNDERPASS_TESTENV_BIN="${UNDERPASS_TESTENV_PREFIX}/bin"

# All binaries build.sh produces.
UNDERPASS_TESTENV_BINARIES=(kube-apiserver kube-controller-manager kubectl etcd helm)

testenv_log() { printf '[testenv] %s\n' "$*" >&2; }
testenv_die() { printf '[testenv] ERROR: %s\n' "$*" >&2; exit 1; }

# Expected content of bin/.stamp-NAME for a binary built by the current recipe.
testenv_stamp_for() {
  local name="$1" ver
  case "$name" in
    kube-apiserver|kube-controller-manager|kubectl) ver="k8s.io/kubernetes@${UNDERPASS_K8S_VERSION}" ;;
    etcd) ver="go.etcd.io/etcd/server/v3@${UNDERPASS_ETCD_VERSION}" ;;
    helm) ver="helm.sh/helm/v3@${UNDERPASS_HELM_VERSION} k8s=${UNDERPASS_K8S_VERSION}" ;;
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
#   localhost, 127.0.0.1 and the in-cluster names of the kubernetes Service.
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
      echo "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:10.0.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
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
  cmd="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" || return 1
  [[ "$cmd" == *"/$comp "* && "$cmd" == *"$dir/"* ]] || return 1
  echo "$pid"
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
