#!/usr/bin/env bash
# run.sh: set up, build, and run the dictation daemon on the bundled real-speech recording
# (five LibriVox clips of "Sense and Sensibility", played in real time), printing each transcript
# as it is finalised.
#
#   deploy/run.sh [extra swictation run arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo >/dev/null || { echo "run: cargo not found: install Rust (https://rustup.rs) first" >&2; exit 1; }
deploy/setup.sh
eval "$(deploy/setup.sh --print)"
export SWICTATION_DATA_DIR SWICTATION_ORT_LIB
cargo build --release --workspace --bins
# The prepared (fast) Moonshine files: made once from the shipped ones, cached and checked.
deploy/prepare.sh
clips=()
for n in 0870 0880 0890 0920 0930; do
  clips+=("$SWICTATION_SPEECH/librivox/sense_and_sensibility_01_austen_64kb-$n.wav")
done
exec target/release/swictation run --input "${clips[@]}" "$@"
