#!/usr/bin/env bash
# Pack what deploy/gpu-check.sh needs on the GPU machine into .gpu-up/1..4 (ignored by git),
# sized to ride along with the four .gpu-stage/K uploads of ../shared/tools/gpu-stage.sh (each
# call carries at most 64 MiB). Run here, after `cargo build --release --workspace`.
#   .gpu-up/K/data.xz.0K  pieces of a tar.xz of the models (Silero, Moonshine base-en) and speech
#   .gpu-up/5/bins.tar.xz the stripped release binaries (swictation, both workers, gpu-ballast),
#                         tiny.tar.xz (Moonshine tiny-en) and gpu-check.sh itself: a fifth call
#   The shipped model files only: gpu-check.sh prepares them there, for that ONNX Runtime.
set -euo pipefail
cd "$(dirname "$0")/.."
data="${XDG_DATA_HOME:-$HOME/.local/share}/swictation"
rm -rf .gpu-up && mkdir -p .gpu-up/{1,2,3,4,5} .gpu-up/tmp
for b in swictation swictation-asr-worker swictation-vad-worker gpu-ballast; do
    cp "target/release/$b" .gpu-up/tmp/ && strip ".gpu-up/tmp/$b"
done
# cpal links ALSA, which the GPU machine lacks: bring this machine's libasound beside the binaries.
cp -L "$(ldconfig -p | awk '/libasound.so.2 / {print $NF; exit}')" .gpu-up/tmp/
tar cf - -C .gpu-up/tmp . | xz -T0 -6 >.gpu-up/5/bins.tar.xz
cp deploy/gpu-check.sh .gpu-up/5/
tar cf - -C "$data" --exclude=prepared models/moonshine-tiny-en | xz -T0 -6 >.gpu-up/5/tiny.tar.xz
tar cf - -C "$data" --exclude=prepared models/silero-vad models/moonshine-base-en speech | xz -T0 -6 >.gpu-up/tmp/data.tar.xz
# Room left beside each stage folder (64 MiB less the stage and ~2 MiB for the working tree).
sizes=()
for k in 1 2 3; do
    used=$(du -sm ".gpu-stage/$k" | cut -f1)
    sizes+=($((62 - used)))
done
(
    cd .gpu-up/tmp
    off=0
    for k in 1 2 3; do
        dd if=data.tar.xz of="../$k/data.xz.0$k" bs=1M skip=$off count="${sizes[$((k - 1))]}" status=none
        off=$((off + ${sizes[$((k - 1))]}))
    done
    dd if=data.tar.xz of=../4/data.xz.04 bs=1M skip=$off status=none
    sha256sum data.tar.xz | cut -d' ' -f1 >../4/data.sha256
)
rm -rf .gpu-up/tmp
du -sm .gpu-stage/* .gpu-up/*
