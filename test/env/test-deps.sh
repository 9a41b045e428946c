#!/usr/bin/env bash
# Debian packages the test suite uses, installed only when missing (idempotent, never fatal):
#   - nftables: the network-namespace e2e test drops every NEW inbound connection on the
#     connector's veth with it (without it, that test runs its route-only part and says so).
#   - systemd: cli/install.test.ts checks the connector's unit with `systemd-analyze verify`
#     (offline; PID 1 need not be systemd).
set -uo pipefail

missing=()
command -v nft >/dev/null 2>&1 || missing+=(nftables)
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
    echo "test-deps: ${missing[*]} missing and no root to install them; the tests that need them run reduced and say so"
    exit 0
  fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "test-deps: ${missing[*]} missing and no apt-get; the tests that need them run reduced and say so"
  exit 0
fi
echo "test-deps: installing ${missing[*]} from Debian"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null 2>&1 || echo "test-deps: apt-get update failed; trying the install anyway"
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1 ||
  echo "test-deps: installing ${missing[*]} failed; the tests that need them run reduced and say so"
exit 0
