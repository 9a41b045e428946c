#!/usr/bin/env bash
# Build the Underpass OCI image archive without a container engine or a registry. See --help
# and docs/image.md.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HERE="$ROOT/image"

# Bump when the recipe changes in a way the input hash cannot see (it hashes this file too).
RECIPE=1
# The runtime libraries node needs (`ldd node`: libc, libm, libdl, libpthread, libstdc++, libgcc_s)
# and gcc-12-base, which holds the copyright file libstdc++6 and libgcc-s1 point to.
DEBS=(libc6 libgcc-s1 libstdc++6 gcc-12-base)
REPOSITORY="ghcr.io/underpass/underpass"
# File times, image creation time and history times: fixed, so the same inputs give the same
# digest (override with SOURCE_DATE_EPOCH, the reproducible-builds convention).
EPOCH="${SOURCE_DATE_EPOCH:-0}"
UID_GID="65532:65532"

usage() {
  cat <<EOF
Usage: image/build.sh [--out DIR] [--force] [-h|--help]

Builds the Underpass image as an OCI image archive, from this checkout, with no container
engine and no registry:

  /usr/local/bin/node         Node v$(bash "$HERE/node.sh" --version), the pinned runtime (image/node.sh)
  /lib, /usr/lib              ${DEBS[*]} from Debian (apt-get download + dpkg-deb -x)
  /opt/underpass/             package.json, bin/, dist/ (image/tsconfig.json: no test helpers,
                              no bench/), production node_modules (npm ci --omit=dev)
  /etc/passwd, /etc/group     root and nonroot (${UID_GID})

ENTRYPOINT node <flags of bin/underpass's first line> /opt/underpass/bin/underpass,
USER ${UID_GID}, WORKDIR /opt/underpass. No shell, no package manager. Two layers (runtime,
application), packed by image/oci-image.sh (tar, gzip, sha256sum); file times and the
creation time are fixed (SOURCE_DATE_EPOCH, default 0), so the same inputs give the same digest.

Writes DIR/underpass-<version>.oci.tar (default DIR: image/out), reference
${REPOSITORY}:<package.json version> (annotation io.containerd.image.name, so
\`ctr images import\` names it), and prints its digest and sizes. When the hash of every input
(sources, package files, bin/, image/, Node version, Debian package versions) matches the
archive's .inputs file, nothing is rebuilt (--force rebuilds). Prints the archive path on the
last line. Import it with image/import.sh (make image does when the local cluster runs).

Requires: npm dependencies installed (make deps), apt-get with package lists, dpkg-deb, tar,
gzip, sha256sum, flock.
EOF
}

log() { printf '[image] %s\n' "$*" >&2; }
die() { printf '[image] ERROR: %s\n' "$*" >&2; exit 1; }

out="$HERE/out" force=0
while (($#)); do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --out) out="${2:?--out needs a directory}"; shift ;;
    --force) force=1 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
  shift
done

[[ "$(uname -s)" == Linux ]] || die "builds on Linux only"
PATH="$(bash "$HERE/node.sh"):$PATH"
export PATH
NODE_VERSION="$(bash "$HERE/node.sh" --version)"
bash "$HERE/deps.sh" dpkg-deb apt-get
[[ -x "$ROOT/node_modules/.bin/tsc" ]] || die "node_modules/.bin/tsc missing: run make deps first"

VERSION="$(node -p 'require(process.argv[1]).version' "$ROOT/package.json")"
REF="${REPOSITORY}:${VERSION}"
DEB_ARCH="$(dpkg --print-architecture)"
# Node flags of the entry point: the ones bin/underpass's first line gives node (tunnel/node-flags.ts).
read -r -a NODE_FLAGS < <(sed -n '1s/^#![^ ]*env  *\(-S  *\)\{0,1\}node\(\( --[^ ]*\)*\) *$/\2/p' "$ROOT/bin/underpass")
[[ "$(head -1 "$ROOT/bin/underpass")" =~ ^#!.*env\ .*node ]] || die "bin/underpass: first line is not #!/usr/bin/env [-S] node [--flags]"

mkdir -p "$out"
out="$(cd "$out" && pwd)"
ARCHIVE="$out/underpass-${VERSION}.oci.tar"
CACHE="${UNDERPASS_TESTENV_CACHE:-$HOME/.cache/underpass-testenv}"
exec 9>"$out/.lock"
flock 9

# ------------------------------------------------------------------ Debian package versions

# The version apt-get download would fetch of each package (one apt-cache call: it is slow).
candidates() {
  apt-cache policy "${DEBS[@]}" 2>/dev/null | awk '
    /^[^ ].*:$/ { pkg = substr($0, 1, length($0) - 1) }
    /^  Candidate: / && $2 != "(none)" { print pkg, $2 }'
}
declare -A DEB_VERSION=()
read_candidates() { local p v; while read -r p v; do DEB_VERSION[$p]="$v"; done < <(candidates); }
read_candidates
if ((${#DEB_VERSION[@]} < ${#DEBS[@]})); then
  log "apt has no candidate for some of ${DEBS[*]}: running apt-get update"
  if [[ "$(id -u)" -eq 0 ]]; then apt-get update -qq >/dev/null; else sudo -n apt-get update -qq >/dev/null; fi ||
    die "apt-get update failed"
  read_candidates
fi
for p in "${DEBS[@]}"; do
  [[ -n "${DEB_VERSION[$p]:-}" ]] || die "apt knows no package $p (check /etc/apt/sources.list)"
done

# ------------------------------------------------------------------------ input hash

inputs_hash() {
  {
    printf 'recipe=%s epoch=%s node=%s arch=%s\n' "$RECIPE" "$EPOCH" "$NODE_VERSION" "$DEB_ARCH"
    for p in "${DEBS[@]}"; do printf 'deb %s=%s\n' "$p" "${DEB_VERSION[$p]}"; done
    (cd "$ROOT" && find tunnel worker connector operator cli -name '*.ts' -not -name '*.test.ts' -print0 &&
      find bin -type f -print0 &&
      printf '%s\0' image/build.sh image/oci-image.sh image/node.sh image/tsconfig.json package.json package-lock.json tsconfig.json tsconfig.build.json) |
      sort -z | (cd "$ROOT" && xargs -0 sha256sum)
  } | sha256sum | cut -d' ' -f1
}
HASH="$(inputs_hash)"
if ((!force)) && [[ -f "$ARCHIVE" && -f "$ARCHIVE.inputs" && "$(head -1 "$ARCHIVE.inputs")" == "$HASH" ]]; then
  log "up to date (inputs $HASH): $ARCHIVE"
  sed -n '2,$p' "$ARCHIVE.inputs" >&2
  echo "$ARCHIVE"
  exit 0
fi

started=$SECONDS
WORK="$out/work"   # kept after a failure, for a look; removed after a success
rm -rf "$WORK"
mkdir -p "$WORK"
RUNTIME="$WORK/runtime"   # layer 1: libraries, node, /etc
APP="$WORK/app"           # layer 2: /opt/underpass

# --------------------------------------------------------------------- layer 1: runtime

DEB_CACHE="$CACHE/debs/$DEB_ARCH"
mkdir -p "$DEB_CACHE" "$RUNTIME/var/lib/dpkg/status.d"
for p in "${DEBS[@]}"; do
  v="${DEB_VERSION[$p]}"
  deb="$DEB_CACHE/${p}_${v//:/%3a}_${DEB_ARCH}.deb"
  if [[ ! -f "$deb" ]]; then
    log "downloading $p=$v"
    mkdir -p "$WORK/dl"
    (cd "$WORK/dl" && apt-get download -q -o APT::Sandbox::User=root "$p=$v" >/dev/null) || die "apt-get download $p=$v failed"
    mv "$WORK/dl/${p}_"*.deb "$deb.tmp" && mv "$deb.tmp" "$deb"
  fi
  [[ "$(dpkg-deb -f "$deb" Package Version | tr '\n' ' ')" == "Package: $p Version: $v " ]] || die "$deb is not $p $v"
  dpkg-deb -x "$deb" "$RUNTIME"
  # What distroless images do: the package's control data where scanners (trivy, grype) look for
  # Debian packages in images without dpkg, so CVEs in these libraries are reported.
  dpkg-deb -f "$deb" >"$RUNTIME/var/lib/dpkg/status.d/$p"
done
# Never loaded by node: iconv modules (node converts with its own ICU), docs except the
# copyright files, lintian overrides, gdb pretty-printers.
rm -rf "$RUNTIME"/usr/lib/*-linux-gnu/gconv "$RUNTIME/usr/share/lintian" "$RUNTIME/usr/share/gdb" "$RUNTIME/usr/share/gcc"
find "$RUNTIME/usr/share/doc" -mindepth 2 -not -name copyright -not -type d -delete
find "$RUNTIME/usr/share/doc" -mindepth 1 -type d -empty -delete

NODE_HOME="$(bash "$HERE/node.sh" --dir)"
install -D -m 0755 "$NODE_HOME/bin/node" "$RUNTIME/usr/local/bin/node"
install -D -m 0644 "$NODE_HOME/LICENSE" "$RUNTIME/usr/local/share/doc/node/LICENSE"

# Users: root and the unprivileged user the image runs as (65532, "nonroot" as in distroless).
# No home directory and no login shell: nothing in the image writes, and there is no shell.
mkdir -p "$RUNTIME/etc"
cat >"$RUNTIME/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
nonroot:x:65532:65532:nonroot:/nonexistent:/sbin/nologin
EOF
cat >"$RUNTIME/etc/group" <<'EOF'
root:x:0:
nonroot:x:65532:
EOF
# glibc's name service: /etc/hosts first, then DNS (the kubelet mounts /etc/hosts and resolv.conf).
cat >"$RUNTIME/etc/nsswitch.conf" <<'EOF'
passwd: files
group: files
hosts: files dns
EOF
# Scanners identify the libraries' distribution by this file (ID, VERSION_ID).
(
  # shellcheck disable=SC1091
  . /etc/os-release
  printf 'PRETTY_NAME="Underpass %s (runtime libraries from %s)"\nNAME="%s"\nID=%s\nVERSION_ID="%s"\nVERSION_CODENAME=%s\nHOME_URL="https://github.com/underpass/underpass"\n' \
    "$VERSION" "$PRETTY_NAME" "$NAME" "$ID" "${VERSION_ID:-}" "${VERSION_CODENAME:-}"
) >"$RUNTIME/etc/os-release"

# -------------------------------------------------------------------- layer 2: the app

OPT="$APP/opt/underpass"
mkdir -p "$OPT/bin"
log "compiling the product (image/tsconfig.json)"
"$ROOT/node_modules/.bin/tsc" -p "$HERE/tsconfig.json" --outDir "$OPT/dist" || die "tsc failed"
leaked="$(cd "$OPT/dist" && find . -path ./tunnel/testing -o -path ./cli/testing.js -o -path ./bench -o -name '*.test.js' | head -5)"
[[ -z "$leaked" ]] || die "test helpers in the image's build output (imported by product code?): $leaked"
install -m 0755 "$ROOT/bin/underpass" "$OPT/bin/underpass"
install -m 0644 "$ROOT/package.json" "$OPT/package.json"

# Production dependencies, cached by package.json + lock + Node version.
mods_key="$(cat "$ROOT/package.json" "$ROOT/package-lock.json" <(echo "node=$NODE_VERSION recipe=$RECIPE") | sha256sum | cut -c1-16)"
MODS="$out/cache/node_modules-$mods_key"
if [[ ! -d "$MODS/node_modules" ]]; then
  log "installing production dependencies (npm ci --omit=dev)"
  rm -rf "$out/cache"
  mkdir -p "$WORK/npm"
  cp "$ROOT/package.json" "$ROOT/package-lock.json" "$WORK/npm/"
  (cd "$WORK/npm" && npm ci --omit=dev --no-fund --no-audit --loglevel=error >&2) || die "npm ci --omit=dev failed"
  # Files node never loads: type declarations, source maps, native prebuilds of other platforms.
  NODE_PLATFORM="linux-$(node -p process.arch)"
  find "$WORK/npm/node_modules" -type f \( -name '*.d.ts' -o -name '*.d.mts' -o -name '*.d.cts' -o -name '*.map' \) -delete
  find "$WORK/npm/node_modules" -type d -path '*/prebuilds/*' -prune -not -name "$NODE_PLATFORM" -exec rm -rf {} +
  rm -f "$WORK/npm/node_modules/.package-lock.json"
  mkdir -p "$MODS"
  mv "$WORK/npm/node_modules" "$MODS/node_modules"
fi
# Hard links (same file system, nothing writes to them): a copy of 4,000 files costs seconds.
cp -al "$MODS/node_modules" "$OPT/node_modules"

# ------------------------------------------------------------------------- checks

# Run the image's node with the image's own libraries (their loader, only their directories), as
# the container will: every library node and bufferutil's addon need must resolve inside.
LIBDIRS="$(find "$RUNTIME/lib" "$RUNTIME/usr/lib" -mindepth 1 -maxdepth 1 -type d -name '*-linux-gnu' | paste -sd:)"
LOADER="$(find "$RUNTIME/lib" -maxdepth 2 -name 'ld-linux*.so.*' -type f | head -1)"
[[ -n "$LOADER" ]] || die "no dynamic loader in libc6"
in_image() { "$LOADER" --inhibit-cache --library-path "$LIBDIRS" "$RUNTIME/usr/local/bin/node" "$@"; }
libs="$("$LOADER" --inhibit-cache --library-path "$LIBDIRS" --list "$RUNTIME/usr/local/bin/node")" || die "node's libraries do not load: $libs"
outside="$(grep '=>' <<<"$libs" | grep -v "=> $RUNTIME/" || true)"
[[ -z "$outside" ]] || die "node needs libraries the image lacks:"$'\n'"$outside"
got="$(cd "$OPT" && in_image "${NODE_FLAGS[@]}" bin/underpass --version)" || die "underpass --version failed: $got"
[[ "$got" == "$VERSION" ]] || die "underpass --version printed '$got', expected $VERSION"
# bufferutil falls back to plain JS silently when its addon fails: load the addon itself.
in_image --input-type=commonjs -e "require('$OPT/node_modules/node-gyp-build')('$OPT/node_modules/bufferutil')" ||
  die "bufferutil's native addon does not load with the image's node"

# ------------------------------------------------------------------------ assemble

# Only root may write anywhere in the image, even without a read-only root file system.
# (node_modules are hard links into the cache: their modes change there too, which is harmless.)
chmod -R u+rwX,go+rX,go-w "$RUNTIME" "$APP"
deb_list="$(for p in "${DEBS[@]}"; do printf '%s=%s ' "$p" "${DEB_VERSION[$p]}"; done)"
entry=(--entrypoint node)
for f in "${NODE_FLAGS[@]}"; do entry+=(--entrypoint "$f"); done
entry+=(--entrypoint /opt/underpass/bin/underpass)
manifest="$(bash "$HERE/oci-image.sh" --ref "$REF" --out "$ARCHIVE" --epoch "$EPOCH" \
  --layer "$RUNTIME" --history "image/build.sh: node v$NODE_VERSION (npm node-linux-$(node -p process.arch)), Debian ${deb_list% }, /etc" \
  --layer "$APP" --history "image/build.sh: /opt/underpass (package.json, bin/, dist/, production node_modules)" \
  --user "$UID_GID" --workdir /opt/underpass --env PATH=/usr/local/bin:/usr/bin:/bin "${entry[@]}" \
  --label org.opencontainers.image.title=underpass \
  --label org.opencontainers.image.version="$VERSION" \
  --label org.opencontainers.image.licenses=Apache-2.0 \
  --label org.opencontainers.image.description="Underpass: Kubernetes-native secure tunnel (operator, worker, connector)" \
  --label io.underpass.node.version="$NODE_VERSION")"

# ----------------------------------------------------------------------- report

unpacked=$(( $(du -sb --apparent-size "$RUNTIME" | cut -f1) + $(du -sb --apparent-size "$APP" | cut -f1) ))
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
{
  echo "$HASH"
  echo "image    $REF"
  echo "digest   $manifest"
  echo "archive  $(mib "$(stat -c %s "$ARCHIVE")") (compressed layers; $ARCHIVE)"
  echo "unpacked $(mib "$unpacked") (files: runtime $(mib "$(du -sb --apparent-size "$RUNTIME" | cut -f1)"), app $(mib "$(du -sb --apparent-size "$APP" | cut -f1)"))"
  echo "node     v$NODE_VERSION; Debian ${deb_list% }"
} >"$ARCHIVE.inputs"
log "built in $((SECONDS - started)) s"
rm -rf "$WORK"
sed -n '2,$p' "$ARCHIVE.inputs" >&2
echo "$ARCHIVE"
