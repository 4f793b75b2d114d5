#!/usr/bin/env bash
# The GPU-machine check of issue 5 (see ../shared/reference/gpu-machine.md): builds nothing.
#   deploy/gpu-check.sh ORT_GPU_DIR UP_DIR OUT_DIR
# ORT_GPU_DIR holds libonnxruntime.so.1.31.1 and its CUDA provider (gpu-stage.sh's unpack.sh);
# UP_DIR holds the pieces deploy/gpu-pack.sh made (data.xz.0*, bins.tar.xz). Everything it
# writes goes under OUT_DIR; it prints a short table last.
#
# 1. doctor: NVML and the CUDA execution provider, as the user would see them.
# 2. The real NVML probe and default ladder: where the workers start, what VRAM they hold
#    (learned), real speech transcribed; then a real memory hog (gpu-ballast holding VRAM up to
#    97 % of the card): the VAD leaves the GPU, ASR steps down, requests wait, nothing is lost;
#    then the hog leaves and both step back up.
# 3. A rung that really faults: the Moonshine base-en decoder on CUDA raises an illegal address;
#    the ladder retries it once, abandons it, and transcribes on the next rung.
# 4. Context windows with the encoder on CUDA (the decoder on the CPU, as on the GPU rungs): the
#    LibriVox recording (~25 s) as one segment at 10, 5 and 3 s: word error rate, time, and the
#    ASR worker's peak GPU memory.
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
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:$ORT:$W/bin
export SWICTATION_ORT_LIB=$ORT/libonnxruntime.so.1.31.1
export XDG_DATA_HOME=$W/data XDG_RUNTIME_DIR=$W/run XDG_STATE_HOME=$W/state XDG_CONFIG_HOME=$W/config
S=$W/bin/swictation
SPEECH=$W/data/swictation/speech/librivox
CLIPS=("$SPEECH"/*-0870.wav "$SPEECH"/*-0880.wav "$SPEECH"/*-0890.wav)
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
    echo "TIMEOUT: $what" | tee -a "$OUT/summary.txt"; return 1
}
lines() { grep -c . "$OUT/placement.out" 2>/dev/null || true; }
have() { [ "$(lines)" -ge "$1" ]; }
row() { printf '%-44s %s\n' "$1" "$2" | tee -a "$OUT/summary.txt"; }
: >"$OUT/summary.txt"

nvidia-smi --query-gpu=name,memory.used,memory.total,driver_version --format=csv | tee "$OUT/nvidia-smi.txt"
"$S" doctor >"$OUT/doctor.txt" 2>&1; cat "$OUT/doctor.txt"

# --- 2. placement by real NVML readings -------------------------------------------------------
printf '[gpu]\npromote_after_s = 5\n' >"$W/config/swictation/config.toml"
mkfifo "$W/mic"
"$S" run --input - <"$W/mic" >"$OUT/placement.out" 2>"$OUT/placement.log" &
DAEMON=$!
exec 7>"$W/mic"
ready() { [ "$(field asr state)" = ready ] && [ "$(field vad state)" = ready ]; }
wait_for 120 "workers ready" ready || { tail -20 "$OUT/placement.log"; exit 1; }
status >"$OUT/status-start.json"
row "start: vad" "$(field vad placement) (device $(field vad device), vram $(field vad vram_mb) MB)"
row "start: asr" "$(field asr placement) (device $(field asr device), vram $(field asr vram_mb) MB)"
raw "${CLIPS[0]}" >&7
wait_for 60 "transcript 1" have 1
sleep 1.2 # one status refresh, so the latencies include the whole first clip
lat() { status | python3 -c 'import json,sys; l=json.load(sys.stdin)["latency"]; f=lambda v: "-" if v is None else f"{v:.2f}"; print(" / ".join(f(l[k]) for k in sys.argv[1:]))' "$@"; }
row "vad ms/frame on $(field vad placement), p50 / p95" "$(lat vad_frame_ms_p50 vad_frame_ms_p95)"
row "asr ms/segment on $(field asr placement)" "$(lat asr_segment_ms_p50)"
ASR0=$(field asr placement)
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
status >"$OUT/status-hog.json"
wait_for 90 "transcript 2" have 2
row "transcript 2 after" "$(python3 -c "import time; print(f'{time.time()-$T0:.1f} s')")"
exec 8>&-
back() { [ "$(field asr placement)" = "$ASR0" ] && [ "$(field asr state)" = ready ] && [ "$(field vad placement)" != cpu ]; }
T1=$(date +%s.%N)
wait_for 120 "step back up" back
row "hog gone, back up after" "$(python3 -c "import time; print(f'{time.time()-$T1:.1f} s')")"
row "back up: asr" "$(field asr placement): $(field asr placement_reason)"
status >"$OUT/status-back.json"
raw "${CLIPS[2]}" >&7
wait_for 60 "transcript 3" have 3
exec 7>&-
wait $DAEMON; row "daemon exit" "$?"
row "transcripts (want 3, in order)" "$(lines)"
grep -E "placement:|gpu:|learned|held|releasing" "$OUT/placement.log" | cut -c1-220 >"$OUT/placement-events.txt"

# --- 3. a rung that really faults -------------------------------------------------------------
cat >"$W/config/swictation/config.toml" <<'TOML'
[gpu]
asr_ladder = [
  "device=cuda model=base context=10",
  "encoder=cuda decoder=cpu model=base context=10",
  "device=cpu model=base context=10",
]
TOML
"$S" run --input "${CLIPS[0]}" >"$OUT/fault.out" 2>"$OUT/fault.log"
row "faulting rung: exit" "$?"
row "faulting rung: transcript words" "$(wc -w <"$OUT/fault.out")"
grep -E "placement:|cuda_fault|CUDA fault|worker failed" "$OUT/fault.log" | cut -c1-220 >"$OUT/fault-events.txt"
row "faulting rung: cuda faults seen" "$(grep -c "worker failed: cuda" "$OUT/fault.log")"
row "faulting rung: final asr" "$(grep "placement: asr" "$OUT/fault.log" | tail -1 | cut -c1-160)"
# --- 4. context windows on the GPU -----------------------------------------------------------
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
wer() { # wer REFERENCE_FILE HYPOTHESIS_FILE: word error rate in percent, as tests/window.rs counts
    python3 - "$1" "$2" <<'PY'
import re, sys
def words(t):
    t = re.sub(r"[^a-z0-9' ]", " ", t.lower().replace("-", " "))
    return [{"mr": "mister"}.get(w, w) for w in (x.strip("'") for x in t.split()) if w]
r, h = words(open(sys.argv[1]).read()), words(open(sys.argv[2]).read())
d = list(range(len(h) + 1))
for i, a in enumerate(r):
    e = [i + 1] + [0] * len(h)
    for j, b in enumerate(h):
        e[j + 1] = min(d[j] + (a != b), d[j + 1] + 1, e[j] + 1)
    d = e
print(f"{100 * d[-1] / len(r):.1f} % ({d[-1]} of {len(r)} words)")
PY
}
for ctx in 10 5 3; do
    printf '[vad]\nmin_silence_ms = 1500\nmax_segment_ms = 30000\n[asr]\ncontext_s = %s\n' "$ctx" \
        >"$W/config/swictation/config.toml"
    T0=$(date +%s.%N)
    "$S" transcribe --encoder-device cuda --decoder-device cpu "$W/long.wav" \
        >"$OUT/context-$ctx.txt" 2>"$OUT/context-$ctx.log" &
    P=$! PEAK=0
    while kill -0 $P 2>/dev/null; do
        M=$(nvidia-smi --query-compute-apps=process_name,used_memory --format=csv,noheader,nounits 2>/dev/null |
            awk -F', ' '/asr-worker/ {print $2}' | sort -n | tail -1)
        [ -n "$M" ] && [ "$M" -gt "$PEAK" ] && PEAK=$M
        sleep 0.1
    done
    wait $P; RC=$?
    SECS=$(python3 -c "import time; print(f'{time.time()-$T0:.1f}')")
    row "context ${ctx} s, enc cuda:0 dec cpu" "exit $RC, ${SECS} s, WER $(wer "$W/long.txt" "$OUT/context-$ctx.txt"), asr peak ${PEAK} MiB"
done

echo; echo "=== events ==="; cat "$OUT/placement-events.txt" "$OUT/fault-events.txt"
echo; echo "=== summary ==="; cat "$OUT/summary.txt"
rm -rf "$W"
