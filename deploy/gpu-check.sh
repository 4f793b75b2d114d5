#!/usr/bin/env bash
# The GPU-machine check (how to run it: the README's GPU section): builds nothing, and is a test:
# it exits non-zero when any row fails, and prints a table last.
#   deploy/gpu-check.sh ORT_GPU_DIR UP_DIR OUT_DIR
# ORT_GPU_DIR holds libonnxruntime.so.1.31.1 and its CUDA provider (gpu-stage.sh's unpack.sh);
# UP_DIR holds the pieces deploy/gpu-pack.sh made (data.xz.0*, bins.tar.xz, tiny.tar.xz). Everything it
# writes goes under OUT_DIR.
#
# 0. Prepared models for this ONNX Runtime, made here as set-up makes them (deploy/prepare.sh:
#    weights folded once, checked by transcribing the canary and the LibriVox clips).
# 1. doctor: NVML and the CUDA execution provider, as the user would see them.
# 2. The real NVML probe and the default ladder: the whole model starts on cuda:0; real speech
#    is transcribed; then a real memory hog (gpu-ballast holding VRAM up to 97 % of the card):
#    the VAD leaves the GPU, ASR steps down, requests wait, nothing is lost; then the hog leaves
#    and both step back up.
# 3. A rung that really faults: the *shipped* base-en decoder on CUDA raises an illegal address
#    (a model directory holding only the shipped files); the ladder retries it once, abandons
#    it, and transcribes on the next rung.
# 4. tiny-en on CUDA, whole model, from its prepared files.
# 5. Context windows with the whole model on CUDA: the LibriVox recording (~25 s) as one segment
#    at 10, 5 and 3 s: word error rate, time, peak GPU memory.
# 6. Latency: speech end -> transcript through the daemon for 5-7 s utterances fed at real-time
#    pace, on the whole-GPU rung, the encoder-only rung and the CPU.
set -uo pipefail
ORT=${1:?ORT_GPU_DIR}; UP=${2:?UP_DIR}; OUT=${3:?OUT_DIR}
W=$(mktemp -d /tmp/swgpu.XXXX)
mkdir -p "$OUT" "$W/bin" "$W/data/swictation" "$W/run" "$W/state" "$W/config/swictation"
chmod 700 "$W/run"
X='import lzma,sys,shutil; shutil.copyfileobj(lzma.open(sys.stdin.buffer), sys.stdout.buffer)'
python3 -c "$X" <"$UP/bins.tar.xz" | tar xf - -C "$W/bin"
cat "$UP"/data.xz.0* >"$W/data.tar.xz"
echo "$(cat "$UP/data.sha256")  $W/data.tar.xz" | sha256sum -c - || exit 1
python3 -c "$X" <"$W/data.tar.xz" | tar xf - -C "$W/data/swictation"
python3 -c "$X" <"$UP/tiny.tar.xz" | tar xf - -C "$W/data/swictation"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:$ORT:$W/bin
export SWICTATION_ORT_LIB=$ORT/libonnxruntime.so.1.31.1
export XDG_DATA_HOME=$W/data XDG_RUNTIME_DIR=$W/run XDG_STATE_HOME=$W/state XDG_CONFIG_HOME=$W/config
S=$W/bin/swictation
M=$W/data/swictation/models
SPEECH=$W/data/swictation/speech/librivox
CLIPS=("$SPEECH"/*-0870.wav "$SPEECH"/*-0880.wav "$SPEECH"/*-0890.wav)
FAILED=0
: >"$OUT/summary.txt"
row() { printf '%-48s %s\n' "$1" "$2" | tee -a "$OUT/summary.txt"; }
# check NAME CONDITION... : a row that passes when the command succeeds
check() { local what=$1; shift; if "$@"; then row "PASS $what" ""; else row "FAIL $what" ""; FAILED=1; fi; }
raw() { # WAV → raw s16le plus 2 s of silence, on stdout
    python3 -c 'import wave,sys; w=wave.open(sys.argv[1]); sys.stdout.buffer.write(w.readframes(w.getnframes()) + bytes(64000))' "$1"
}
status() { "$S" status --json 2>/dev/null; }
field() { # field ROLE KEY: a worker's field from the status
    status | python3 -c 'import json,sys; s=json.load(sys.stdin); print(next((w.get(sys.argv[2]) for w in s["workers"] if w["role"]==sys.argv[1]), ""))' "$1" "$2" 2>/dev/null
}
wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...: poll until COMMAND succeeds
    local limit=$1 what=$2; shift 2
    for _ in $(seq $((limit * 5))); do "$@" && return 0; sleep 0.2; done
    row "FAIL timeout: $what" ""; FAILED=1; return 1
}
wer() { # wer REFERENCE_TEXT HYPOTHESIS_TEXT: word error rate in percent, as tests/window.rs counts
    python3 - "$1" "$2" <<'PY'
import re, sys
def words(t):
    t = re.sub(r"[^a-z0-9' ]", " ", t.lower().replace("-", " "))
    return [{"mr": "mister"}.get(w, w) for w in (x.strip("'") for x in t.split()) if w]
r, h = words(sys.argv[1]), words(sys.argv[2])
d = list(range(len(h) + 1))
for i, a in enumerate(r):
    e = [i + 1] + [0] * len(h)
    for j, b in enumerate(h):
        e[j + 1] = min(d[j] + (a != b), d[j + 1] + 1, e[j] + 1)
    d = e
print(f"{100 * d[-1] / max(len(r), 1):.1f}")
PY
}
ref() { cat "${1%.wav}.txt"; }
le() { python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) <= float(sys.argv[2]) else 1)" "$1" "$2"; }
# in_order FILE CLIP...: line k of FILE is clip k's text (at most 15 % word errors each)
in_order() {
    local f=$1; shift; local k=1
    [ "$(grep -c . "$f")" -eq $# ] || return 1
    for c in "$@"; do le "$(wer "$(ref "$c")" "$(sed -n "${k}p" "$f")")" 15 || return 1; k=$((k + 1)); done
}

nvidia-smi --query-gpu=name,memory.used,memory.total,driver_version --format=csv | tee "$OUT/nvidia-smi.txt"

# --- 0. prepared models, as set-up makes them -------------------------------------------------
PREP=(--clip "$W/data/swictation/speech/goforward.raw")
for c in "$SPEECH"/*.wav; do PREP+=(--clip "$c"); done
mkdir -p "$W/shipped" && cp -r "$M/moonshine-base-en" "$W/shipped/" # before preparing: shipped files only
T0=$(date +%s.%N)
"$W/bin/swictation-asr-worker" --threads "$(nproc)" --prepare "${PREP[@]}" "$M/moonshine-base-en" "$M/moonshine-tiny-en" \
    >"$OUT/prepare.log" 2>&1
RC=$?
row "prepare base-en and tiny-en (ORT 1.31.1)" "exit $RC, $(python3 -c "import time; print(f'{time.time()-$T0:.1f} s')")"
check "prepared models written and checked" [ $RC -eq 0 ]
cat "$OUT/prepare.log"
"$S" doctor >"$OUT/doctor.txt" 2>&1; cat "$OUT/doctor.txt"

# --- 2. placement by real NVML readings, default ladder ---------------------------------------
printf '[gpu]\npromote_after_s = 5\n' >"$W/config/swictation/config.toml"
mkfifo "$W/mic"
"$S" run --input - <"$W/mic" >"$OUT/placement.out" 2>"$OUT/placement.log" &
DAEMON=$!
exec 7>"$W/mic"
lines() { grep -c . "$OUT/placement.out" 2>/dev/null || true; }
have() { [ "$(lines)" -ge "$1" ]; }
ready() { [ "$(field asr state)" = ready ] && [ "$(field vad state)" = ready ]; }
wait_for 120 "workers ready" ready || { tail -20 "$OUT/placement.log"; }
status >"$OUT/status-start.json"
ASR0=$(field asr placement)
row "start: vad" "$(field vad placement) (device $(field vad device), vram $(field vad vram_mb) MB)"
row "start: asr" "$ASR0 (device $(field asr device), vram $(field asr vram_mb) MB)"
check "workers ready" ready
check "whole model on cuda:0 by default" [ "$ASR0" = "cuda:0 base 10s" ]
raw "${CLIPS[0]}" >&7
wait_for 60 "transcript 1" have 1
mkfifo "$W/hold"
"$W/bin/gpu-ballast" 0 97 <"$W/hold" >"$OUT/ballast.txt" 2>&1 &
exec 8>"$W/hold"
wait_for 60 "ballast holding" grep -q holding "$OUT/ballast.txt"
row "hog" "$(cat "$OUT/ballast.txt")"
moved() { [ "$(field vad placement)" = cpu ] && [ "$(field asr placement)" != "$ASR0" ] && [ "$(field asr state)" = ready ]; }
T0=$(date +%s.%N)
raw "${CLIPS[1]}" >&7
wait_for 90 "step down under the hog" moved
row "under the hog: vad" "$(field vad placement): $(field vad placement_reason)"
row "under the hog: asr" "$(field asr placement): $(field asr placement_reason)"
check "the hog moved VAD and ASR" moved
status >"$OUT/status-hog.json"
wait_for 90 "transcript 2" have 2
row "transcript 2 after" "$(python3 -c "import time; print(f'{time.time()-$T0:.1f} s')")"
exec 8>&-
back() { [ "$(field asr placement)" = "$ASR0" ] && [ "$(field asr state)" = ready ] && [ "$(field vad placement)" != cpu ]; }
T1=$(date +%s.%N)
wait_for 120 "step back up" back
row "hog gone, back up after" "$(python3 -c "import time; print(f'{time.time()-$T1:.1f} s')")"
row "back up: asr" "$(field asr placement): $(field asr placement_reason)"
check "back on the GPU" back
status >"$OUT/status-back.json"
raw "${CLIPS[2]}" >&7
wait_for 60 "transcript 3" have 3
exec 7>&-
wait $DAEMON; RC=$?
row "daemon exit" "$RC"
check "3 transcripts, once each, in order" in_order "$OUT/placement.out" "${CLIPS[@]}"
grep -E "placement:|gpu:|learned|held|releasing|notice" "$OUT/placement.log" | cut -c1-220 >"$OUT/placement-events.txt"

# --- 3. a rung that really faults: the shipped decoder on CUDA -------------------------------
cp -r "$M/silero-vad" "$W/shipped/"
cat >"$W/config/swictation/config.toml" <<'TOML'
[gpu]
asr_ladder = [
  "device=cuda model=base context=10",
  "encoder=cuda decoder=cpu model=base context=10",
  "device=cpu model=base context=10",
]
TOML
"$S" run --models "$W/shipped" --input "${CLIPS[0]}" >"$OUT/fault.out" 2>"$OUT/fault.log"
RC=$?
grep -E "placement:|cuda_fault|CUDA fault|worker failed|notice" "$OUT/fault.log" | cut -c1-220 >"$OUT/fault-events.txt"
FAULTS=$(grep -c "worker failed: cuda" "$OUT/fault.log")
LAST=$(grep "placement: asr" "$OUT/fault.log" | tail -1 | cut -c1-160)
row "faulting rung (shipped decoder on cuda): exit" "$RC, $(wc -w <"$OUT/fault.out") words"
row "faulting rung: cuda faults seen" "$FAULTS"
row "faulting rung: final asr" "$LAST"
check "the real CUDA fault was survived: rung abandoned" \
    bash -c "[ $RC -eq 0 ] && [ $FAULTS -ge 2 ] && grep -q 'abandoned' '$OUT/fault.log' && echo '$LAST' | grep -q 'enc cuda:0 dec cpu'"
check "faulting rung: transcript right" in_order "$OUT/fault.out" "${CLIPS[0]}"

# --- 4. tiny-en on CUDA, prepared ---------------------------------------------------------------
: >"$W/config/swictation/config.toml"
"$S" transcribe --json --model tiny --asr-device cuda "${CLIPS[0]}" >"$OUT/tiny.json" 2>"$OUT/tiny.log"
RC=$?
TINY=$(python3 -c 'import json,sys; print(" ".join(s["text"] for s in json.load(open(sys.argv[1]))["segments"]))' "$OUT/tiny.json" 2>/dev/null)
TDEV=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["asr"]["device"])' "$OUT/tiny.json" 2>/dev/null)
row "tiny-en, --asr-device cuda" "exit $RC, on $TDEV, WER $(wer "$(ref "${CLIPS[0]}")" "$TINY") %"
check "tiny-en whole model on cuda:0" bash -c "[ $RC -eq 0 ] && [ '$TDEV' = cuda:0 ]"
tail -3 "$OUT/tiny.log"

# --- 5. context windows, whole model on the GPU ---------------------------------------------
python3 - "$SPEECH" "$W/long.wav" "$W/long.txt" <<'PY'
import glob, sys, wave
clips = sorted(glob.glob(sys.argv[1] + "/*.wav"))
out, ref = wave.open(sys.argv[2], "wb"), []
for i, c in enumerate(clips):
    w = wave.open(c)
    if i == 0:
        out.setparams(w.getparams())
    out.writeframes(w.readframes(w.getnframes()))
    ref.append(open(c[:-4] + ".txt").read().strip())
out.close()
open(sys.argv[3], "w").write(" ".join(ref))
PY
for ctx in 10 5 3; do
    printf '[vad]\nmin_silence_ms = 1500\nmax_segment_ms = 30000\n[asr]\ncontext_s = %s\n' "$ctx" \
        >"$W/config/swictation/config.toml"
    T0=$(date +%s.%N)
    "$S" transcribe --asr-device cuda "$W/long.wav" >"$OUT/context-$ctx.txt" 2>"$OUT/context-$ctx.log" &
    P=$! PEAK=0
    while kill -0 $P 2>/dev/null; do
        MB=$(nvidia-smi --query-compute-apps=process_name,used_memory --format=csv,noheader,nounits 2>/dev/null |
            awk -F', ' '/asr-worker/ {print $2}' | sort -n | tail -1)
        [ -n "$MB" ] && [ "$MB" -gt "$PEAK" ] && PEAK=$MB
        sleep 0.1
    done
    wait $P; RC=$?
    SECS=$(python3 -c "import time; print(f'{time.time()-$T0:.1f}')")
    E=$(wer "$(cat "$W/long.txt")" "$(cat "$OUT/context-$ctx.txt")")
    row "context ${ctx} s, cuda:0 (whole model)" "exit $RC, ${SECS} s, WER $E %, asr peak ${PEAK} MiB"
    check "context ${ctx} s: WER $E % <= 3 %" le "$E" 3
done

# --- 6. latency: speech end -> transcript through the daemon -------------------------------
# Two clips of 5.3 and 6.05 s, three times each, fed at real-time pace with 1.5 s of silence
# after each (the segment closes after vad.min_silence_ms = 500 ms of it).
LAT=("$SPEECH"/*-0890.wav "$SPEECH"/*-0920.wav "$SPEECH"/*-0890.wav "$SPEECH"/*-0920.wav "$SPEECH"/*-0890.wav "$SPEECH"/*-0920.wav)
pace() { # write the clips at real-time pace, each followed by 1.5 s of silence
    python3 - "$@" <<'PY'
import sys, time, wave
out, t0, sent = sys.stdout.buffer, time.monotonic(), 0
def send(b):
    global sent
    for i in range(0, len(b), 640):  # 20 ms chunks
        out.write(b[i:i + 640]); out.flush(); sent += len(b[i:i + 640])
        d = t0 + sent / 32000 - time.monotonic()
        if d > 0: time.sleep(d)
for c in sys.argv[1:]:
    w = wave.open(c); send(w.readframes(w.getnframes())); send(bytes(48000))
PY
}
for rung in "device=cuda model=base context=10" "encoder=cuda decoder=cpu model=base context=10" "device=cpu model=base context=10"; do
    printf '[gpu]\nasr_ladder = ["%s", "device=cpu model=base context=10"]\n' "$rung" >"$W/config/swictation/config.toml"
    rm -f "$W/mic"; mkfifo "$W/mic"
    "$S" run --input - <"$W/mic" >"$OUT/latency.out" 2>"$OUT/latency.log" &
    DAEMON=$!
    exec 7>"$W/mic"
    wait_for 120 "workers ready ($rung)" ready
    P=$(field asr placement)
    pace "${LAT[@]}" >&7
    lines() { grep -c . "$OUT/latency.out" 2>/dev/null || true; }
    wait_for 60 "latency transcripts" have ${#LAT[@]}
    sleep 1.2 # one status refresh
    L=$(status | python3 -c 'import json,sys; l=json.load(sys.stdin)["latency"]; f=lambda k: "-" if l.get(k) is None else "%.0f" % l[k]; print("%s / %s ms (after the segment closed: %s / %s)" % (f("speech_end_to_text_ms_p50"), f("speech_end_to_text_ms_p95"), f("asr_segment_ms_p50"), f("asr_segment_ms_p95")))')
    exec 7>&-
    wait $DAEMON
    row "latency on $P, p50 / p95" "$L"
    check "latency run on $P: ${#LAT[@]} transcripts in order" in_order "$OUT/latency.out" "${LAT[@]}"
done

echo; echo "=== events ==="; cat "$OUT/placement-events.txt" "$OUT/fault-events.txt"
echo; echo "=== summary ==="; cat "$OUT/summary.txt"
if [ $FAILED -ne 0 ]; then echo "gpu-check: FAILED (see the FAIL rows)"; else echo "gpu-check: all rows passed"; fi
rm -rf "$W"
exit $FAILED
