#!/usr/bin/env bash
# Pack directories into an OCI image archive that `ctr images import`, skopeo and kind accept:
# the one packer of this repository (image/build.sh: the Underpass image; test/env/cluster-images.sh:
# the local cluster's pause and testbox images). See --help.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: image/oci-image.sh --ref NAME:TAG --out FILE.tar --layer DIR [--history TEXT] [--layer DIR ...]
                          [--entrypoint ARG]... [--user UID:GID] [--env K=V]... [--workdir DIR]
                          [--label K=V]... [--epoch SECONDS]

Writes FILE.tar, an OCI image layout (https://github.com/opencontainers/image-spec): oci-layout,
index.json and blobs/sha256/* — one gzip layer per --layer DIR, in order (the DIR's content
at /, owned by root, modes as in DIR, entries sorted, times --epoch: the same input gives the
same digest), the image config, the manifest, and an index naming the image NAME:TAG for
containerd (annotation io.containerd.image.name; `ctr -n k8s.io images import FILE.tar`
registers it under that name) and TAG for OCI tools (org.opencontainers.image.ref.name).

  --history TEXT   the created_by of the history entry of the --layer before it
  --entrypoint     repeat for the entry point's fixed arguments
  --epoch SECONDS  file times, image creation and history times (default $SOURCE_DATE_EPOCH, else 0)

Needs only tar, gzip and sha256sum: no registry, no container engine, no root. Prints the
manifest digest (sha256:...) on stdout.
EOF
}

die() { printf '[oci-image] ERROR: %s\n' "$*" >&2; exit 1; }
ref="" out="" user="" workdir="/" epoch="${SOURCE_DATE_EPOCH:-0}"
layers=() history=() entry=() envs=() labels=()
while (($#)); do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --ref) ref="${2:?--ref needs a value}"; shift ;;
    --out) out="${2:?--out needs a value}"; shift ;;
    --layer) layers+=("${2:?--layer needs a directory}"); history+=(""); shift ;;
    --history) ((${#layers[@]})) || die "--history follows the --layer it describes"; history[${#layers[@]} - 1]="${2?--history needs a value}"; shift ;;
    --entrypoint) entry+=("${2:?--entrypoint needs a value}"); shift ;;
    --user) user="${2:?--user needs a value}"; shift ;;
    --env) envs+=("${2:?--env needs a value}"); shift ;;
    --workdir) workdir="${2:?--workdir needs a value}"; shift ;;
    --label) labels+=("${2:?--label needs K=V}"); shift ;;
    --epoch) epoch="${2:?--epoch needs a value}"; shift ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
  shift
done
[[ -n "$ref" && -n "$out" && ${#layers[@]} -gt 0 ]] || { usage >&2; exit 2; }
[[ "$ref" == *:* && "${ref##*:}" != */* ]] || die "--ref must be NAME:TAG, got $ref"
[[ "$epoch" =~ ^[0-9]+$ ]] || die "--epoch must be a number of seconds, got $epoch"
for d in "${layers[@]}"; do [[ -d "$d" ]] || die "--layer $d is not a directory"; done
for kv in "${envs[@]}" "${labels[@]}"; do [[ "$kv" == ?*=* ]] || die "expected K=V, got '$kv'"; done

# js STRING: a JSON string. Our inputs are paths, names and short texts: backslash and quote are
# escaped; a control character (which would need \uXXXX) is refused rather than written wrong.
js() {
  [[ "$1" != *[[:cntrl:]]* ]] || die "control character in '$1'"
  local s="${1//\\/\\\\}"
  printf '"%s"' "${s//\"/\\\"}"
}
jarr() { local o="" x; for x in "$@"; do o+="${o:+,}$(js "$x")"; done; printf '[%s]' "$o"; }
jobj() { local o="" kv; for kv in "$@"; do o+="${o:+,}$(js "${kv%%=*}"):$(js "${kv#*=}")"; done; printf '{%s}' "$o"; }

case "$(uname -m)" in
  x86_64) arch=amd64 ;; aarch64) arch=arm64 ;; *) arch="$(uname -m)" ;;
esac
created="$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)"

work="$(mktemp -d "${TMPDIR:-/tmp}/oci-image.XXXXXX")"
trap 'rm -rf "$work"' EXIT
blobs="$work/layout/blobs/sha256"
mkdir -p "$blobs"

# put FILE: moves FILE into blobs/ under its digest; prints "sha256:DIGEST SIZE".
put() {
  local d s
  d="$(sha256sum "$1" | cut -d' ' -f1)"; s="$(stat -c %s "$1")"
  mv "$1" "$blobs/$d"
  printf 'sha256:%s %s\n' "$d" "$s"
}

diff_ids=() layer_descs=() hist=()
for i in "${!layers[@]}"; do
  dir="${layers[$i]}"
  # Top-level entries by name (no "./" prefix, as image tools expect); GNU format with its end
  # blocks; numeric root ownership; fixed times.
  mapfile -t top < <(cd "$dir" && find . -mindepth 1 -maxdepth 1 -printf '%P\n' | LC_ALL=C sort)
  ((${#top[@]})) || die "--layer $dir is empty"
  tar -C "$dir" --sort=name --mtime="@$epoch" --owner=0 --group=0 --numeric-owner --format=gnu -cf "$work/layer.tar" "${top[@]}"
  diff_ids+=("sha256:$(sha256sum "$work/layer.tar" | cut -d' ' -f1)")
  gzip -n -6 "$work/layer.tar"
  read -r digest size < <(put "$work/layer.tar.gz")
  layer_descs+=("{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"$digest\",\"size\":$size}")
  hist+=("{\"created\":\"$created\",\"created_by\":$(js "${history[$i]:-image/oci-image.sh: layer $((i + 1))}")}")
done

{
  printf '{"created":"%s","architecture":"%s","os":"linux","config":{' "$created" "$arch"
  [[ -n "$user" ]] && printf '"User":%s,' "$(js "$user")"
  ((${#envs[@]})) && printf '"Env":%s,' "$(jarr "${envs[@]}")"
  ((${#entry[@]})) && printf '"Entrypoint":%s,' "$(jarr "${entry[@]}")"
  ((${#labels[@]})) && printf '"Labels":%s,' "$(jobj "${labels[@]}")"
  printf '"WorkingDir":%s},' "$(js "$workdir")"
  printf '"rootfs":{"type":"layers","diff_ids":%s},' "$(jarr "${diff_ids[@]}")"
  printf '"history":[%s]}' "$(IFS=,; echo "${hist[*]}")"
} >"$work/config.json"
read -r config_digest config_size < <(put "$work/config.json")

printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%s},"layers":[%s]}' \
  "$config_digest" "$config_size" "$(IFS=,; echo "${layer_descs[*]}")" >"$work/manifest.json"
read -r manifest_digest manifest_size < <(put "$work/manifest.json")

printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"%s","size":%s,"platform":{"architecture":"%s","os":"linux"},"annotations":{"io.containerd.image.name":%s,"org.opencontainers.image.ref.name":%s}}]}' \
  "$manifest_digest" "$manifest_size" "$arch" "$(js "$ref")" "$(js "${ref##*:}")" >"$work/layout/index.json"
printf '{"imageLayoutVersion":"1.0.0"}' >"$work/layout/oci-layout"

mkdir -p "$(dirname "$out")"
tar -C "$work/layout" --sort=name --mtime="@$epoch" --owner=0 --group=0 --numeric-owner --format=gnu \
  -cf "$out.tmp" oci-layout index.json blobs
mv -f "$out.tmp" "$out"
echo "$manifest_digest"
