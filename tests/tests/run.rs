//! `swictation run --input`: the daemon loop fed by a real recording in real time.

use std::process::{Command, Stdio};
use std::time::Duration;

use swictation_e2e::*;

fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) {
            // pid (comm) state ppid ...
            let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
            if after
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse::<u32>().ok())
                == Some(pid)
            {
                out.push(p);
            }
        }
    }
    out
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit_once(')')
                .map(|(_, r)| r.trim_start().starts_with('Z'))
                .unwrap_or(false)
        })
        .unwrap_or(false)
}

#[test]
fn run_prints_each_transcript_in_order_and_exits_zero() {
    let clips = librivox();
    let rt = tempfile::tempdir().unwrap();
    let out = run_with_deadline(
        swictation(rt.path())
            .arg("run")
            .arg("--input")
            .arg(&clips[0].0)
            .arg(&clips[1].0),
        Duration::from_secs(120),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let reference = format!("{} {}", clips[0].1, clips[1].1);
    let (errors, words) = wer::word_errors(&reference, &stdout.replace('\n', " "));
    assert!(
        errors as f64 <= 0.08 * words as f64,
        "{errors}/{words} errors: {stdout}"
    );
    // The first clip's words come before the second's.
    let first_line = stdout.lines().next().unwrap_or("");
    assert!(
        wer::word_errors(&clips[0].1, first_line).0 < wer::word_errors(&clips[1].1, first_line).0,
        "{stdout}"
    );
}

#[test]
fn sigterm_mid_speech_still_prints_what_was_said_and_leaves_nothing_running() {
    let clips = librivox();
    // 0870 is 7.1 s of continuous speech; stop 4 s in.
    let rt = tempfile::tempdir().unwrap();
    let mut child = swictation(rt.path())
        .arg("run")
        .arg("--input")
        .arg(&clips[0].0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let start = std::time::Instant::now();
    let mut workers = children_of(pid);
    while workers.len() < 2 && start.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(50));
        workers = children_of(pid);
    }
    assert_eq!(
        workers.len(),
        2,
        "expected two workers under the supervisor"
    );
    // Speech starts once both are ready; stop about 4 s into the 7.1 s clip.
    std::thread::sleep(Duration::from_secs(4));
    Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
        .unwrap();
    let out = wait_with_deadline(&mut child, Duration::from_secs(60));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    // Roughly the first 4 s of "and mister john dashwood had then leisure to consider ...".
    let words: Vec<&str> = stdout.split_whitespace().collect();
    assert!(
        words.len() >= 5,
        "speech before the signal was lost: {stdout:?}"
    );
    assert!(stdout.to_lowercase().contains("dashwood"), "{stdout:?}");
    std::thread::sleep(Duration::from_millis(200));
    for w in workers {
        assert!(!alive(w), "worker {w} outlived the supervisor");
    }
}

fn asr_worker_of(pid: u32) -> Option<u32> {
    children_of(pid).into_iter().find(|c| {
        std::fs::read_to_string(format!("/proc/{c}/cmdline"))
            .is_ok_and(|cmd| cmd.contains("swictation-asr-worker"))
    })
}

#[test]
fn sigkill_of_the_asr_worker_mid_recording_loses_nothing() {
    let clips = librivox();
    let inputs: Vec<&std::path::Path> = clips[..3].iter().map(|(p, _)| p.as_path()).collect();
    let rt = tempfile::tempdir().unwrap();
    let clean = run_with_deadline(
        swictation(rt.path())
            .arg("run")
            .arg("--input")
            .args(&inputs),
        Duration::from_secs(120),
    );
    assert!(
        clean.status.success(),
        "{}",
        String::from_utf8_lossy(&clean.stderr)
    );

    let rt = tempfile::tempdir().unwrap();
    let mut child = swictation(rt.path())
        .arg("run")
        .arg("--input")
        .args(&inputs)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    // The first clip ends after ~7 s; kill the ASR worker while the second is being spoken and
    // the first one's segment is likely being transcribed.
    let start = std::time::Instant::now();
    let mut victim = None;
    while start.elapsed() < Duration::from_secs(30) && victim.is_none() {
        victim = asr_worker_of(pid);
        std::thread::sleep(Duration::from_millis(50));
    }
    let victim = victim.expect("ASR worker found");
    std::thread::sleep(Duration::from_secs(8).saturating_sub(start.elapsed()));
    Command::new("kill")
        .arg("-KILL")
        .arg(victim.to_string())
        .status()
        .unwrap();
    let out = wait_with_deadline(&mut child, Duration::from_secs(120));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("crash (SIGKILL)"),
        "the kill was not noticed: {stderr}"
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&clean.stdout),
        "the transcript changed when the ASR worker was killed"
    );
}
