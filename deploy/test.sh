#!/usr/bin/env bash
# test.sh: everything the tests need, then every test, the unit check and a 60 s soak.
# Safe to run again (setup is cached).
#
#   deploy/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo >/dev/null || { echo "test: cargo not found: install Rust (https://rustup.rs) first" >&2; exit 1; }
deploy/setup.sh
eval "$(deploy/setup.sh --print)"
export SWICTATION_DATA_DIR SWICTATION_ORT_LIB
# The end-to-end tests start the real binaries of the same profile.
cargo build --release --workspace --bins
# The prepared (fast) Moonshine files: made once from the shipped ones, cached and checked.
deploy/prepare.sh
cargo test --release --workspace --no-fail-fast
deploy/verify-unit.sh deploy/swictation.service
# Crash-recovery soak: random faults into random workers (some mid-request), then one SIGKILL of
# the supervisor itself; fails on any loss, duplicate, wrong text, lost audio, unplanned
# quarantine, memory growth or leak.
target/release/swictation soak --duration 60s --fault-every 4s --seed 7 --min-faults 10 --supervisor-kills 1
