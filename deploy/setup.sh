#!/usr/bin/env bash
# setup.sh: obtain everything swictation needs on a fresh Debian/Ubuntu machine, idempotently.
#
#   deploy/setup.sh            build deps + ONNX Runtime + models + speech clips
#   deploy/setup.sh --print    print the resolved paths (as shell assignments) and exit
#
# Downloads come only from the package registries (Debian, PyPI) and are cached under
# $XDG_CACHE_HOME/swictation/downloads; extracted files land under $XDG_DATA_HOME/swictation.
# Every file is checked against a pinned sha256: a mismatch is an error naming the file and the
# expected hash, and the bad file is never re-used.
set -euo pipefail

CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/swictation/downloads
DATA=${SWICTATION_DATA_DIR:-${XDG_DATA_HOME:-$HOME/.local/share}/swictation}
ORT_VERSION=1.32.0
ORT_LIB=$DATA/onnxruntime/libonnxruntime.so.$ORT_VERSION
MODELS=$DATA/models
SPEECH=$DATA/speech

if [ "${1:-}" = "--print" ]; then
  printf 'SWICTATION_DATA_DIR=%q\nSWICTATION_ORT_LIB=%q\nSWICTATION_MODELS=%q\nSWICTATION_SPEECH=%q\n' \
    "$DATA" "$ORT_LIB" "$MODELS" "$SPEECH"
  exit 0
fi

log() { printf 'setup: %s\n' "$*" >&2; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

# check FILE SHA256: fail loudly (naming both) if FILE does not hash to SHA256.
check() {
  local file=$1 want=$2 got
  [ -f "$file" ] || die "missing $file (expected sha256 $want)"
  got=$(sha256sum "$file" | cut -d' ' -f1)
  [ "$got" = "$want" ] || die "sha256 mismatch for $file: expected $want, got $got. Delete it and run deploy/setup.sh again, or check where it came from."
}

# ---- 1. Debian build dependencies --------------------------------------------------------------
# libasound2-dev, pkg-config: cpal. alsa-utils: the live-audio tests' ALSA file plugin checks.
# dbus-daemon: the sleep tests' private system bus (the daemon itself needs none).
# xvfb xdotool xterm xclip: the X11 typing tests type into a real xterm under Xvfb.
# dunst, dbus-bin (dbus-send): the notification test's real notification server.
# sway foot wtype wl-clipboard fonts-dejavu-core: the Wayland typing tests type and paste into a
# real foot terminal under a headless sway.
need_pkgs=()
for p in libasound2-dev pkg-config alsa-utils dbus-daemon dbus-bin xvfb xdotool xterm xclip dunst \
  sway foot wtype wl-clipboard fonts-dejavu-core; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need_pkgs+=("$p")
done
command -v python3 >/dev/null || need_pkgs+=(python3 python3-pip)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  log "installing Debian packages: ${need_pkgs[*]}"
  SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

mkdir -p "$CACHE" "$DATA/onnxruntime" "$MODELS" "$SPEECH"

# fetch_pip SPEC FILE SHA256 [pip args...]: download one distribution file into the cache, verified.
fetch_pip() {
  local spec=$1 file=$2 sha=$3; shift 3
  if [ -f "$CACHE/$file" ] && [ "$(sha256sum "$CACHE/$file" | cut -d' ' -f1)" = "$sha" ]; then
    return 0
  fi
  rm -f "$CACHE/$file"
  log "downloading $spec"
  python3 -m pip download -q --no-deps -d "$CACHE" "$@" "$spec" >&2 \
    || die "pip could not download $spec (is PyPI reachable?)"
  check "$CACHE/$file" "$sha"
}

# extract ARCHIVE MEMBER DEST SHA256: extract one member (zip or tar.gz) to DEST, verified.
extract() {
  local archive=$1 member=$2 dest=$3 sha=$4
  if [ -f "$dest" ] && [ "$(sha256sum "$dest" | cut -d' ' -f1)" = "$sha" ]; then return 0; fi
  mkdir -p "$(dirname "$dest")"
  case "$archive" in
    *.whl|*.zip) python3 - "$archive" "$member" "$dest.part" <<'PY'
import sys, zipfile, shutil
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
    ;;
    *.tar.gz) tar -xzOf "$archive" "$member" > "$dest.part" ;;
    *) die "unknown archive type: $archive" ;;
  esac
  mv "$dest.part" "$dest"
  check "$dest" "$sha"
}

# ---- 2. ONNX Runtime (CPU) shared library ------------------------------------------------------
ORT_WHEEL=onnxruntime-1.32.0-cp312-cp312-manylinux_2_28_x86_64.whl
ORT_WHEEL_SHA=99e1074c4b2197accd5073052a465361be17b89c093b8ffb6e6bd8f986c52df8
ORT_LIB_SHA=6c1585d1bbf45b0712ea4a21b705c5fcb4ba04ff2e30f1fbf81a49faf658638f
if [ -n "${SWICTATION_ORT_LIB:-}" ] && [ "$SWICTATION_ORT_LIB" != "$ORT_LIB" ]; then
  log "using ONNX Runtime from SWICTATION_ORT_LIB=$SWICTATION_ORT_LIB (not downloading)"
else
  if ! [ -f "$ORT_LIB" ] || [ "$(sha256sum "$ORT_LIB" | cut -d' ' -f1)" != "$ORT_LIB_SHA" ]; then
    fetch_pip onnxruntime==$ORT_VERSION "$ORT_WHEEL" "$ORT_WHEEL_SHA" \
      --only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
    extract "$CACHE/$ORT_WHEEL" "onnxruntime/capi/libonnxruntime.so.$ORT_VERSION" "$ORT_LIB" "$ORT_LIB_SHA"
  fi
fi

# ---- 3. Silero VAD v6.2 ------------------------------------------------------------------------
SILERO_WHEEL=silero_vad-6.2.3-py3-none-any.whl
fetch_pip silero-vad==6.2.3 $SILERO_WHEEL 7b7f5436cfcb02fae583a05b512ea96467fd449fe54cb49a5e4f06c51a1e43b8
extract "$CACHE/$SILERO_WHEEL" silero_vad/data/silero_vad.onnx "$MODELS/silero-vad/silero_vad.onnx" \
  1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3

# ---- 4. Moonshine base-en and tiny-en ----------------------------------------------------------
BASE_WHEEL=moonshine_cpp-0.1.4-py3-none-manylinux2014_x86_64.whl
fetch_pip moonshine-cpp==0.1.4 "$BASE_WHEEL" f7afc662bdd3ef98815ee3b940438b456e77d5a77cea5396ed9c572785412ebd \
  --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64
B=moonshine_cpp-0.1.4.data/purelib/moonshine_cpp/models/base-en
extract "$CACHE/$BASE_WHEEL" $B/encoder_model.ort "$MODELS/moonshine-base-en/encoder_model.ort" \
  9d1a19e044cbf89a207723d1adb667de89a5671a1e3e611b8ebe721b2c31219c
extract "$CACHE/$BASE_WHEEL" $B/decoder_model_merged.ort "$MODELS/moonshine-base-en/decoder_model_merged.ort" \
  370e0c1f161d68dc1c2264c1a82024fb123380da3b73f47f05531d1e8d3308c3
extract "$CACHE/$BASE_WHEEL" $B/tokenizer.bin "$MODELS/moonshine-base-en/tokenizer.bin" \
  04670d78994d030185c3dd843c60591788fed0a56cc6750747bd326825f13ca9

TINY_WHEEL=moonshine_voice-0.1.0-py3-none-manylinux_2_34_x86_64.whl
fetch_pip moonshine-voice==0.1.0 "$TINY_WHEEL" 0f833deb43bad5dcfb4cfd3257b6df83ef9abd3f27be3199622fe41932e8d916 \
  --only-binary=:all: --python-version 3.12 --platform manylinux_2_34_x86_64
T=moonshine_voice/assets/tiny-en
extract "$CACHE/$TINY_WHEEL" $T/encoder_model.ort "$MODELS/moonshine-tiny-en/encoder_model.ort" \
  94e90a4654fc45cdfedb77c4c08e1739f48862998e58fada384b25118134f221
extract "$CACHE/$TINY_WHEEL" $T/decoder_model_merged.ort "$MODELS/moonshine-tiny-en/decoder_model_merged.ort" \
  cf524c4862d36e9e5ab032eddc73637efd822d70e868ac575cf1a46e1e4708a0
extract "$CACHE/$TINY_WHEEL" $T/tokenizer.bin "$MODELS/moonshine-tiny-en/tokenizer.bin" \
  6884b35fd6377d4c4d32336a0bc152f36b64d1e45b6503683cdc238250a8472d

# ---- 5. Real speech: pocketsphinx 5.1.1 test data ----------------------------------------------
PS_TGZ=pocketsphinx-5.1.1.tar.gz
fetch_pip pocketsphinx==5.1.1 $PS_TGZ 675778b309a22dfc9b7d37f7621976bba491d2a5f8c59696bd77fd6d07271355 --no-binary=pocketsphinx
while read -r sha member; do
  [ -n "$sha" ] || continue
  case "$member" in
    */librivox/*) dest=$SPEECH/librivox/$(basename "$member") ;;
    *) dest=$SPEECH/$(basename "$member") ;;
  esac
  extract "$CACHE/$PS_TGZ" "pocketsphinx-5.1.1/$member" "$dest" "$sha"
done <<'CLIPS'
f15c60ec54059d8b66e410d0064945a0b0a04ea56e1ddca1958e493c0cf70e71  test/data/goforward.raw
6d3883a910d6646b74e73480922e2f0bcd294f617bd19f2c885a736088a9532c  test/data/librivox/sense_and_sensibility_01_austen_64kb-0870.json
e7001f6b4f6961f49df18fbdf0a0cda70c950806a2f2055eed20bb128dc3570c  test/data/librivox/sense_and_sensibility_01_austen_64kb-0870.txt
b0557cf95c974d930577e58e46b7f068c432a6e3afcc286563d88922b2a5315c  test/data/librivox/sense_and_sensibility_01_austen_64kb-0870.wav
ecd310a6bae6db4c4ad142e46257681d412fbd62634d66664084fe932ac692cb  test/data/librivox/sense_and_sensibility_01_austen_64kb-0880.json
e7c98df9e9929043aad0994ac095bc86a6e9db8ff51d9dd0d3c28eb5df691a0e  test/data/librivox/sense_and_sensibility_01_austen_64kb-0880.txt
fbec491ef00ee734a67f0ee318e98c51c157b479e1629ff4f4426861ecac0414  test/data/librivox/sense_and_sensibility_01_austen_64kb-0880.wav
eca493f8d07b95a03c9ac99f614c8346111e72f624b665650d6a0d122dac7b24  test/data/librivox/sense_and_sensibility_01_austen_64kb-0890.json
942c80d221e02f9e01fbe4558a61313decf4b45a4e5e5941ae35fb0ba793ba09  test/data/librivox/sense_and_sensibility_01_austen_64kb-0890.txt
5793ffbdee55fb8bfd284943a6866864c832d9d4accf2661cabd39915c84ee10  test/data/librivox/sense_and_sensibility_01_austen_64kb-0890.wav
e81bd5f50b920e3f81831e49b1566c2361db67d393ecd9d8f313b3b6b81ec866  test/data/librivox/sense_and_sensibility_01_austen_64kb-0920.json
20c9afffa853ca7697939312c43a6d2fc5ea8248e5748238b7ce34f6121b7835  test/data/librivox/sense_and_sensibility_01_austen_64kb-0920.txt
40882414ef4cc51f3ff7a63bad0c8c87e7f595ffeb8209fbf756c8ebc5c28a59  test/data/librivox/sense_and_sensibility_01_austen_64kb-0920.wav
06d7a9eaaa5801ce8589d2218ea2fe8ea2e4b0c8783470bdfa68c49b043f7479  test/data/librivox/sense_and_sensibility_01_austen_64kb-0930.json
b57a1fa64e7bdf66d5ca11df4a31c93492808006295fe3b3e8b2ea4deb800640  test/data/librivox/sense_and_sensibility_01_austen_64kb-0930.txt
954adbf0b56ac8a148cbe77b39ca18d76b5f2a1e1f405565bd786ce3e68a68b7  test/data/librivox/sense_and_sensibility_01_austen_64kb-0930.wav
84cb850a234d4cf30370fa6a49b749ea479f6910053ed5c3aa424e32e45d726a  test/regression/chan3.2chan.wav
360af92e9d29cc178f1c0e34bf0386dfa004fe320f4794ad949b4bc336fc0818  test/regression/chan3.wav
CLIPS

log "ready: ONNX Runtime $ORT_LIB, models in $MODELS, speech in $SPEECH"
