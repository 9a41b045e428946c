#!/usr/bin/env bash
# Pack a directory into a single-layer OCI image archive that `ctr images import` accepts.
# No registry, no Docker, no umoci: an OCI image is a tar layer, a config JSON, a manifest and
# an index, each addressed by its sha256 (https://github.com/opencontainers/image-spec).
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: test/env/oci-image.sh --ref NAME:TAG --out FILE.tar [--entrypoint PATH]... [--user UID:GID]
                             [--env K=V]... [--workdir DIR] ROOTFS_DIR

Writes FILE.tar: an OCI image layout (oci-layout, index.json, blobs/sha256/...) holding one
uncompressed layer with the content of ROOTFS_DIR (owned by root, mtime 0, sorted: the same
input gives the same digest). The index names the image NAME:TAG (annotation
io.containerd.image.name), so `ctr -n k8s.io images import FILE.tar` registers it under that
name. --entrypoint may repeat (entrypoint and its fixed arguments).
Prints the manifest digest (sha256:...) on stdout.
EOF
}

die() { printf '[oci-image] ERROR: %s\n' "$*" >&2; exit 1; }
ref="" out="" user="" workdir="/" entry=() envs=() root=""
while (($#)); do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --ref) ref="${2:?--ref needs a value}"; shift ;;
    --out) out="${2:?--out needs a value}"; shift ;;
    --entrypoint) entry+=("${2:?--entrypoint needs a value}"); shift ;;
    --user) user="${2:?--user needs a value}"; shift ;;
    --env) envs+=("${2:?--env needs a value}"); shift ;;
    --workdir) workdir="${2:?--workdir needs a value}"; shift ;;
    -*) die "unknown option: $1 (see --help)" ;;
    *) [[ -z "$root" ]] || die "only one ROOTFS_DIR expected"; root="$1" ;;
  esac
  shift
done
[[ -n "$ref" && -n "$out" && -n "$root" ]] || { usage >&2; exit 2; }
[[ -d "$root" ]] || die "$root is not a directory"
[[ "$ref" == *:* ]] || die "--ref must be NAME:TAG, got $ref"

# JSON string (our inputs: paths, image names, env values; escape \ and ").
js() { local s="${1//\\/\\\\}"; printf '"%s"' "${s//\"/\\\"}"; }
jarr() { local out="" x; for x in "$@"; do out+="${out:+,}$(js "$x")"; done; printf '[%s]' "$out"; }

case "$(uname -m)" in
  x86_64) arch=amd64 ;; aarch64) arch=arm64 ;; *) arch="$(uname -m)" ;;
esac

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
blobs="$work/layout/blobs/sha256"
mkdir -p "$blobs"

# put FILE: moves FILE into blobs/ under its digest; prints "DIGEST SIZE".
put() {
  local d s
  d="$(sha256sum "$1" | cut -d' ' -f1)"; s="$(stat -c %s "$1")"
  mv "$1" "$blobs/$d"
  printf 'sha256:%s %s\n' "$d" "$s"
}

tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --format=posix \
  --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
  -C "$root" -cf "$work/layer.tar" .
read -r layer_digest layer_size < <(put "$work/layer.tar")

{
  printf '{"architecture":"%s","os":"linux","config":{' "$arch"
  [[ -n "$user" ]] && printf '"User":%s,' "$(js "$user")"
  ((${#envs[@]})) && printf '"Env":%s,' "$(jarr "${envs[@]}")"
  ((${#entry[@]})) && printf '"Entrypoint":%s,' "$(jarr "${entry[@]}")"
  printf '"WorkingDir":%s},' "$(js "$workdir")"
  printf '"rootfs":{"type":"layers","diff_ids":["%s"]},' "$layer_digest"
  printf '"history":[{"created_by":"underpass test/env/oci-image.sh"}]}'
} >"$work/config.json"
read -r config_digest config_size < <(put "$work/config.json")

printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"%s","size":%s}]}' \
  "$config_digest" "$config_size" "$layer_digest" "$layer_size" >"$work/manifest.json"
read -r manifest_digest manifest_size < <(put "$work/manifest.json")

printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"%s","size":%s,"platform":{"architecture":"'"$arch"'","os":"linux"},"annotations":{"io.containerd.image.name":%s,"org.opencontainers.image.ref.name":%s}}]}' \
  "$manifest_digest" "$manifest_size" "$(js "$ref")" "$(js "${ref##*:}")" >"$work/layout/index.json"
printf '{"imageLayoutVersion":"1.0.0"}' >"$work/layout/oci-layout"

mkdir -p "$(dirname "$out")"
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$work/layout" -cf "$out.tmp" oci-layout index.json blobs
mv -f "$out.tmp" "$out"
echo "$manifest_digest"
