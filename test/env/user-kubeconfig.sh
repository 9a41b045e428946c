#!/usr/bin/env bash
# Issue a client certificate for a non-admin user and print a kubeconfig for it.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
source "$HERE/lib.sh"

usage() {
  cat <<'EOF'
Usage: test/env/user-kubeconfig.sh [--out FILE] [--namespace NS] DIR USER [GROUP...]

Issues a client certificate (CN=USER, O=GROUP for each GROUP) signed by the CA of the test
environment in DIR (started by test/env/start.sh) and writes a kubeconfig for it, with the
certificate embedded, to stdout or to FILE (mode 600). The apiserver authenticates the user
as USER with groups GROUP... plus system:authenticated; it has no rights until RBAC grants
some, e.g. to run the operator with exactly the ClusterRole its Helm chart ships:

  test/env/user-kubeconfig.sh --out /tmp/k8s/operator.kubeconfig /tmp/k8s underpass-operator
  kubectl create clusterrolebinding underpass-operator --clusterrole=<chart's role> --user=underpass-operator

The key and certificate are kept in DIR/pki/users/. The user name must not be "admin" and no
group may be system:masters (that would bypass RBAC; use DIR/kubeconfig for admin access).

Options:
  --out FILE       write the kubeconfig to FILE instead of stdout
  --namespace NS   default namespace of the kubeconfig's context
  -h, --help       show this help
EOF
}

outfile="" ns="" args=()
while (($#)); do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --out|-o) [[ $# -ge 2 ]] || testenv_die "$1 needs a value"; outfile="$2"; shift ;;
    --out=*) outfile="${1#*=}" ;;
    --namespace|-n) [[ $# -ge 2 ]] || testenv_die "$1 needs a value"; ns="$2"; shift ;;
    --namespace=*) ns="${1#*=}" ;;
    --) shift; args+=("$@"); break ;;
    -*) testenv_die "unknown option: $1 (see --help)" ;;
    *) args+=("$1") ;;
  esac
  shift
done
((${#args[@]} >= 2)) || { usage >&2; exit 2; }
dir="${args[0]}" user="${args[1]}" groups=("${args[@]:2}")

[[ -f "$dir/env" && -f "$dir/pki/ca.key" ]] || testenv_die "$dir is not a test environment (run test/env/start.sh $dir)"
dir="$(cd "$dir" && pwd -P)"
[[ -n "$user" && "$user" != admin ]] || testenv_die "user name must be non-empty and not 'admin'"
for g in "${groups[@]}"; do
  [[ "$g" != system:masters ]] || testenv_die "group system:masters bypasses RBAC; use $dir/kubeconfig instead"
done
command -v openssl >/dev/null 2>&1 || testenv_die "openssl is required but not on PATH"

apiserver_url="$(sed -n 's/^export APISERVER_URL=\(.*\)$/\1/p' "$dir/env")"
[[ -n "$apiserver_url" ]] || testenv_die "APISERVER_URL not found in $dir/env"

# File name safe for any user name.
safe="$(printf '%s' "$user" | tr -c 'A-Za-z0-9._-' '_')"
users="$dir/pki/users"
mkdir -p "$users"
testenv_issue_cert "$users" "$dir/pki" "$safe" client "$user" "${groups[@]}"

if [[ -n "$outfile" ]]; then
  testenv_write_kubeconfig "$outfile" "$apiserver_url" "$dir/pki/ca.crt" "$user" "$users/$safe.crt" "$users/$safe.key" "$ns"
  testenv_log "wrote $outfile for user '$user'${groups[*]:+ groups: ${groups[*]}}"
else
  tmp="$(mktemp)"
  trap 'rm -f "$tmp"' EXIT
  testenv_write_kubeconfig "$tmp" "$apiserver_url" "$dir/pki/ca.crt" "$user" "$users/$safe.crt" "$users/$safe.key" "$ns"
  cat "$tmp"
fi
