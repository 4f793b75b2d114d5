#!/usr/bin/env bash
# verify-unit.sh: check the systemd user unit with `systemd-analyze verify`, strictly.
#
#   deploy/verify-unit.sh [UNIT]     (default: deploy/swictation.service)
#
# Why not just `systemd-analyze verify deploy/swictation.service`:
#  - ExecStart is %h/.local/bin/swictation, which does not exist on a build machine, and verify
#    fails on a missing executable. We point HOME at a temporary directory holding a stub, so %h
#    resolves there and the unit is checked exactly as written.
#  - `--user` needs $XDG_RUNTIME_DIR ("Failed to initialize manager" without one, e.g. as root in
#    CI); we give it a private temporary one. If the user manager still cannot be set up, we fall
#    back to system-mode verification, which checks the same syntax.
#  - verify exits 0 on unknown keys and unparsable values ("…, ignoring"), so any output at all
#    counts as a failure here.
# Exits 0 with a "skipped" line where systemd-analyze is not installed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
unit=${1:-$here/swictation.service}
name=$(basename "$unit")

if ! command -v systemd-analyze >/dev/null; then
  echo "verify-unit: systemd-analyze not found; skipped" >&2
  exit 0
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/home/.local/bin" "$tmp/run" "$tmp/unit"
chmod 700 "$tmp/run"
printf '#!/bin/sh\nexit 0\n' >"$tmp/home/.local/bin/swictation"
chmod 755 "$tmp/home/.local/bin/swictation"
cp "$unit" "$tmp/unit/$name"

# The directives the daemon's behaviour depends on must be present, whatever else changes.
missing=()
for want in 'Type=notify' 'NotifyAccess=main' 'WatchdogSec=30' 'Restart=on-failure' 'RestartSec=2' \
  'ExecStart=%h/.local/bin/swictation daemon'; do
  grep -qxF "$want" "$unit" || missing+=("$want")
done
if [ ${#missing[@]} -gt 0 ]; then
  printf 'verify-unit: %s lacks: %s\n' "$unit" "${missing[*]}" >&2
  exit 1
fi

run_verify() {
  HOME="$tmp/home" XDG_RUNTIME_DIR="$tmp/run" SYSTEMD_LOG_LEVEL=notice \
    systemd-analyze "$@" verify "$tmp/unit/$name" 2>&1
}

mode=--user
set +e
out=$(run_verify --user)
rc=$?
if [ $rc -ne 0 ] && grep -q 'Failed to initialize manager\|Failed to lookup RuntimeDirectory' <<<"$out"; then
  mode=system
  out=$(run_verify)
  rc=$?
fi
set -e
if [ $rc -ne 0 ] || [ -n "$out" ]; then
  printf 'verify-unit: systemd-analyze %s verify %s failed (rc %d):\n%s\n' "$mode" "$unit" "$rc" "$out" >&2
  exit 1
fi
echo "verify-unit: $unit OK (systemd-analyze $mode verify)"
