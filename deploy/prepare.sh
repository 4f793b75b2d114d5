#!/usr/bin/env bash
# prepare.sh: turn the shipped Moonshine .ort files into their prepared form (weights folded
# once; see asr-worker/src/prepare.rs), cached in each model directory's prepared/ folder and
# checked: by sha256 where pinned for this ONNX Runtime, and always by transcribing the canary
# and the LibriVox clips to the same text as the shipped files. Idempotent: a valid prepared/
# is left as it is. Needs the built ASR worker, so it runs after `cargo build`.
#
#   deploy/prepare.sh [ASR_WORKER_BINARY] [--force]
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(deploy/setup.sh --print)"
worker=target/release/swictation-asr-worker
force=()
for a in "$@"; do
  case "$a" in
    --force) force=(--force) ;;
    *) worker=$a ;;
  esac
done
[ -x "$worker" ] || { echo "prepare: $worker not found: run cargo build --release first" >&2; exit 1; }
clips=(--clip "$SWICTATION_SPEECH/goforward.raw")
for n in 0870 0880 0890 0920 0930; do
  clips+=(--clip "$SWICTATION_SPEECH/librivox/sense_and_sensibility_01_austen_64kb-$n.wav")
done
# Preparing is a one-off: use every core.
"$worker" --ort-lib "${SWICTATION_ORT_LIB}" --threads "$(nproc)" --prepare "${force[@]}" "${clips[@]}" \
  "$SWICTATION_MODELS/moonshine-base-en" "$SWICTATION_MODELS/moonshine-tiny-en"
