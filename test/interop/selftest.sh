#!/usr/bin/env bash
# Sanity check of the Go yamux peer against itself: a server and a client copy of yamux-peer,
# each opening streams of its own (echoed by the other) and pinging. When both have reported
# their -open result, the server's stdin is closed (-stdin-exit), which closes the session; the
# client then sees the remote close. Passes if both print OPEN-OK, PING-OK and DONE and exit 0.
#
# Usage: test/interop/selftest.sh [OPEN] [SIZE]   (defaults: 20 streams of 1048576 bytes)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OPEN="${1:-20}"
SIZE="${2:-1048576}"
BIN="$("$HERE/build-peer.sh")"
WORK="$(mktemp -d)"
server_pid="" client_pid=""
cleanup() {
  [[ -n "$server_pid" ]] && kill "$server_pid" 2>/dev/null || true
  [[ -n "$client_pid" ]] && kill "$client_pid" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# wait_for FILE REGEX SECONDS: wait until a line of FILE matches REGEX.
wait_for() {
  local file="$1" re="$2" deadline=$((SECONDS + $3))
  until grep -Eq "$re" "$file" 2>/dev/null; do
    ((SECONDS < deadline)) || { echo "timeout waiting for /$re/ in $file" >&2; return 1; }
    sleep 0.05
  done
}

mkfifo "$WORK/server.stdin"
"$BIN" -mode server -listen 127.0.0.1:0 -open "$OPEN" -size "$SIZE" -ping -seed 1 -stdin-exit \
  <"$WORK/server.stdin" >"$WORK/server.out" 2>"$WORK/server.err" &
server_pid=$!
exec 3>"$WORK/server.stdin" # the server's stdin stays open until fd 3 is closed

wait_for "$WORK/server.out" '^READY ' 10
addr="$(sed -n 's/^READY //p' "$WORK/server.out" | head -n1)"

"$BIN" -mode client -connect "$addr" -open "$OPEN" -size "$SIZE" -ping -seed 2 \
  </dev/null >"$WORK/client.out" 2>"$WORK/client.err" 3>&- &
client_pid=$!

wait_for "$WORK/server.out" '^OPEN-(OK|FAIL)' 120 || true
wait_for "$WORK/client.out" '^OPEN-(OK|FAIL)' 120 || true
exec 3>&- # EOF on the server's stdin: it closes the session

# Both must exit on their own within 30 s; a hung peer is killed (and then fails the check).
deadline=$((SECONDS + 30))
while kill -0 "$server_pid" 2>/dev/null || kill -0 "$client_pid" 2>/dev/null; do
  if ((SECONDS >= deadline)); then
    echo "timeout: peers did not exit; killing them" >&2
    kill "$server_pid" "$client_pid" 2>/dev/null || true
    break
  fi
  sleep 0.05
done
server_rc=0 client_rc=0
wait "$server_pid" || server_rc=$?
server_pid=""
wait "$client_pid" || client_rc=$?
client_pid=""

summary() { grep -Ev '^(ACCEPT|ECHO-OK) ' "$1"; printf '  (+ %s ACCEPT, %s ECHO-OK lines)\n' \
  "$(grep -c '^ACCEPT ' "$1" || true)" "$(grep -c '^ECHO-OK ' "$1" || true)"; }
echo "--- server stdout (exit $server_rc)"; summary "$WORK/server.out"
echo "--- client stdout (exit $client_rc)"; summary "$WORK/client.out"

ok=1
for side in server client; do
  rc_var="${side}_rc"
  out="$WORK/$side.out"
  grep -q "^OPEN-OK $OPEN $SIZE\$" "$out" || { echo "FAIL: $side: no OPEN-OK $OPEN $SIZE"; ok=0; }
  grep -q '^PING-OK [0-9]*$' "$out" || { echo "FAIL: $side: no PING-OK"; ok=0; }
  grep -q "^DONE accepted=$OPEN echoed_bytes=$((OPEN * SIZE))\$" "$out" || { echo "FAIL: $side: unexpected DONE line"; ok=0; }
  ! grep -q '^ERROR ' "$out" || { echo "FAIL: $side: ERROR lines"; ok=0; }
  [[ "${!rc_var}" == 0 ]] || { echo "FAIL: $side exited ${!rc_var}"; ok=0; }
  if [[ $ok == 0 ]]; then echo "--- $side stderr"; cat "$WORK/$side.err"; fi
done
if [[ $ok == 1 ]]; then echo "selftest: 2 passed, 0 failed"; else echo "selftest: FAILED"; exit 1; fi
