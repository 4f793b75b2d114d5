//! Issue 5, end to end: the daemon places its workers by GPU readings, steps down under memory
//! pressure and back up when it frees, while transcribing real speech, losing and repeating
//! nothing.
//!
//! The readings come from a scripted probe (`--gpu-script`, a JSON-lines file the test rewrites
//! while the daemon runs): this machine has no GPU, so the "GPU" placements are carried out on
//! the CPU, and status says so. The policy, the orders, make-before-break and break-before-make,
//! the circuit breaker and the event stream are the real ones; the real NVML probe and the CUDA
//! execution provider are exercised on the GPU machine (`deploy/gpu-check.sh`).

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use swictation_e2e::*;

fn placed(s: &Value, role: &str, want: &str) -> bool {
    s["workers"]
        .as_array()
        .and_then(|w| w.iter().find(|w| w["role"] == role))
        .is_some_and(|w| {
            w["placement"] == want
                && (w["state"] == "ready" || w["state"] == "busy")
                && w["pid"].is_u64()
        })
}

#[test]
fn steps_down_under_pressure_and_back_up_without_losing_speech() {
    let _serial = serial();
    let t0 = Instant::now();
    let clips = librivox();
    let env = TestEnv::new();
    // The encoder-only rungs of the default ladder (without its first, whole-GPU rung): the
    // memory figures below are worked out for them.
    env.write_config(
        "[gpu]\npromote_after_s = 3\nasr_ladder = [\"encoder=cuda decoder=cpu model=base context=10\", \"encoder=cuda decoder=cpu model=base context=5\", \"encoder=cuda decoder=cpu model=base context=3\", \"device=cpu model=base context=10\", \"device=cpu model=tiny context=10\"]\n",
    );
    let script = env.dir.path().join("gpu.jsonl");
    TestEnv::set_gpu(&script, 1000);
    let mut daemon = DaemonProcess::spawn(
        env.cmd()
            .args(["run", "--input", "-", "--gpu-script"])
            .arg(&script)
            .stdin(Stdio::piped()),
    );
    let mut stdin = daemon.child.stdin.take().expect("stdin");
    let mut speak = |i: usize| speak(&mut stdin, &clips[i].0);

    // Room on the card: both workers on the GPU, the best ASR rung.
    let s = env.wait_status("both workers on the GPU", Duration::from_secs(90), |s| {
        placed(s, "asr", "enc cuda:0 dec cpu base 10s") && placed(s, "vad", "cuda:0")
    });
    eprintln!("{:?} placed: {s}", t0.elapsed());
    assert!(
        s["gpu_probe"]
            .as_str()
            .is_some_and(|p| p.contains("scripted") && p.contains("run on the CPU")),
        "status must say the readings are scripted: {s}"
    );
    assert_eq!(s["gpu"]["total_mb"], 8192, "{s}");
    assert_eq!(worker(&s, "asr")["context_s"], 10.0, "{s}");
    assert!(
        worker(&s, "asr")["placement_reason"]
            .as_str()
            .is_some_and(|r| r.contains("free ≥") && r.contains("margin")),
        "{s}"
    );
    speak(0);
    daemon.wait_transcripts(1, Duration::from_secs(60));

    // A memory hog: 7 GB used by others; with our workers' share the card is at 96.6 %
    // (emergency). The VAD leaves the card first (95.3 %, still emergency), then ASR steps down
    // one rung, to a smaller context on the same card (break-before-make), which brings the card
    // to 94.7 %: critical, not emergency, so nothing moves further and nothing moves back.
    TestEnv::set_gpu(&script, 7050);
    speak(1);
    let s = env.wait_status("ASR stepped down to 5 s", Duration::from_secs(60), |s| {
        placed(s, "asr", "enc cuda:0 dec cpu base 5s") && placed(s, "vad", "cpu")
    });
    eprintln!("{:?} stepped down: {s}", t0.elapsed());
    let why = worker(&s, "asr")["placement_reason"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(why.contains("emergency"), "{why}");
    assert!(
        worker(&s, "vad")["placement_reason"]
            .as_str()
            .is_some_and(|r| r.contains("cuda:0 at") && r.contains("emergency")),
        "{s}"
    );
    assert_eq!(worker(&s, "asr")["context_s"], 5.0, "{s}");
    daemon.wait_transcripts(2, Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(5));
    let s = env.status().expect("status");
    assert!(
        placed(&s, "asr", "enc cuda:0 dec cpu base 5s") && placed(&s, "vad", "cpu"),
        "under critical pressure nothing may move: {s}"
    );
    assert_eq!(s["asr_held"], false, "{s}");
    speak(2);
    daemon.wait_transcripts(3, Duration::from_secs(60));

    // The hog leaves: after 3 s of room (promote_after_s), both step back up,
    // make-before-break.
    TestEnv::set_gpu(&script, 1000);
    let s = env.wait_status("back on the best rung", Duration::from_secs(60), |s| {
        placed(s, "asr", "enc cuda:0 dec cpu base 10s") && placed(s, "vad", "cuda:0")
    });
    eprintln!("{:?} stepped up: {s}", t0.elapsed());
    assert!(
        worker(&s, "asr")["placement_reason"]
            .as_str()
            .is_some_and(|r| r.contains("stepping up")),
        "{s}"
    );
    speak(3);
    daemon.wait_transcripts(4, Duration::from_secs(60));

    drop(stdin);
    let (code, out, log) = daemon.wait(Duration::from_secs(60));
    assert!(code.success(), "{log}");
    eprintln!("{log}");
    // Every utterance exactly once, in order, and recognised.
    let got = transcript_lines(&out);
    assert_eq!(got.len(), 4, "{got:?}");
    assert_recognised(&got, &clips);
    for needle in [
        "asr: enc cuda:0 dec cpu base 10s → enc cuda:0 dec cpu base 5s",
        "vad: cuda:0 → cpu",
        "asr requests held",
        "stepping up",
    ] {
        assert!(log.contains(needle), "log lacks {needle:?}:\n{log}");
    }
    eprintln!("total {:?}", t0.elapsed());
}
