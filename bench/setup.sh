#!/usr/bin/env bash
# Installs what `make bench` compares against, only what is missing (idempotent):
#   - OpenSSH server and client, iperf3, wrk, redis-server and redis-tools (redis-benchmark),
#     PostgreSQL (postgres, initdb, pgbench) from Debian;
#   - chisel built from its Go module into $CACHE/bench-bin/ (skipped with a note if the
#     build fails: the bench then runs without chisel).
# Prints one line per tool. Never fails because chisel cannot be built.
set -uo pipefail

CACHE="${UNDERPASS_TESTENV_CACHE:-$HOME/.cache/underpass-testenv}"
BIN_DIR="$CACHE/bench-bin"
# Newest jpillora/chisel release known to us; the Go module proxy decides whether it is served.
CHISEL_VERSION="${CHISEL_VERSION:-v1.10.1}"

missing=()
command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ] || missing+=(openssh-server)
command -v ssh >/dev/null 2>&1 || missing+=(openssh-client)
command -v ssh-keygen >/dev/null 2>&1 || missing+=(openssh-client)
command -v iperf3 >/dev/null 2>&1 || missing+=(iperf3)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v redis-benchmark >/dev/null 2>&1 || missing+=(redis-tools)
pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }
pg="$(pg_bin)"
{ [ -n "$pg" ] && [ -x "$pg/postgres" ] && [ -x "$pg/initdb" ] && [ -x "$pg/pgbench" ]; } || missing+=(postgresql)

if [ ${#missing[@]} -gt 0 ]; then
  # shellcheck disable=SC2207
  missing=($(printf '%s\n' "${missing[@]}" | sort -u))
  echo "bench/setup: installing ${missing[*]} from Debian"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq >/dev/null || echo "bench/setup: apt-get update failed; trying the install anyway"
  if ! $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; then
    echo "bench/setup: apt-get install ${missing[*]} failed; contenders that need them will be skipped"
  fi
  # Debian's postinst may start an sshd on port 22, a redis-server on 6379 and a PostgreSQL cluster on
  # 5432; the bench runs its own on free ports and needs none of them.
fi

for tool in /usr/sbin/sshd ssh iperf3 wrk redis-server redis-benchmark; do
  if command -v "$tool" >/dev/null 2>&1; then echo "bench/setup: $(basename "$tool"): $(command -v "$tool")"; else echo "bench/setup: $(basename "$tool"): MISSING"; fi
done
pg="$(pg_bin)"
for tool in postgres initdb pgbench; do
  if [ -n "$pg" ] && [ -x "$pg/$tool" ]; then echo "bench/setup: $tool: $pg/$tool"; else echo "bench/setup: $tool: MISSING"; fi
done

mkdir -p "$BIN_DIR"
if [ -x "$BIN_DIR/chisel" ]; then
  echo "bench/setup: chisel: $BIN_DIR/chisel ($("$BIN_DIR/chisel" --version 2>/dev/null || echo '?'))"
elif [ -f "$BIN_DIR/chisel.failed" ] && [ "$(cat "$BIN_DIR/chisel.failed" | head -1)" = "$CHISEL_VERSION" ] && [ -z "${CHISEL_RETRY:-}" ]; then
  echo "bench/setup: chisel: skipped (building github.com/jpillora/chisel@$CHISEL_VERSION failed before; CHISEL_RETRY=1 to try again):"
  tail -n +2 "$BIN_DIR/chisel.failed" | sed 's/^/bench\/setup:   /' | head -5
elif ! command -v go >/dev/null 2>&1; then
  echo "bench/setup: chisel: skipped (no Go toolchain to build it)"
else
  echo "bench/setup: building github.com/jpillora/chisel@$CHISEL_VERSION"
  log="$(mktemp)"
  # A throw-away module that requires chisel: `go install pkg@version` would also ask the proxy
  # for chisel's version list (to report deprecation), which the proxy may refuse even when the
  # version itself is served.
  mod="$(mktemp -d)"
  printf 'module benchchisel\n\ngo 1.22\n\nrequire github.com/jpillora/chisel %s\n' "$CHISEL_VERSION" >"$mod/go.mod"
  printf '//go:build tools\n\npackage tools\n\nimport _ "github.com/jpillora/chisel"\n' >"$mod/tools.go"
  if (cd "$mod" && export GOFLAGS="-mod=mod -buildvcs=false" &&
      timeout 600 go mod tidy &&
      timeout 600 go build -trimpath -ldflags "-s -w -X github.com/jpillora/chisel/share.BuildVersion=$CHISEL_VERSION" -o "$BIN_DIR/chisel" github.com/jpillora/chisel) >"$log" 2>&1; then
    rm -f "$BIN_DIR/chisel.failed"
    echo "bench/setup: chisel: $BIN_DIR/chisel ($("$BIN_DIR/chisel" --version 2>/dev/null || echo '?'))"
  else
    { echo "$CHISEL_VERSION"; tail -n 5 "$log"; } >"$BIN_DIR/chisel.failed"
    echo "bench/setup: chisel: skipped, the build failed:"
    tail -n 5 "$log" | sed 's/^/bench\/setup:   /'
  fi
  rm -rf "$mod"
  rm -f "$log"
fi
exit 0
