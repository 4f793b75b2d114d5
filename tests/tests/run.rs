//! `swictation run --input`: the daemon loop fed by a real recording in real time.

use std::process::{Command, Stdio};
use std::time::Duration;

use swictation_e2e::*;

fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) {
            // pid (comm) state ppid ...
            let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
            if after.split_whitespace().nth(1).and_then(|s| s.parse::<u32>().ok()) == Some(pid) {
                out.push(p);
            }
        }
    }
    out
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.rsplit_once(')').map(|(_, r)| r.trim_start().starts_with('Z')).unwrap_or(false))
        .unwrap_or(false)
}

#[test]
fn run_prints_each_transcript_in_order_and_exits_zero() {
    let clips = librivox();
    let rt = tempfile::tempdir().unwrap();
    let out = run_with_deadline(
        swictation(rt.path()).arg("run").arg("--input").arg(&clips[0].0).arg(&clips[1].0),
        Duration::from_secs(120),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let reference = format!("{} {}", clips[0].1, clips[1].1);
    let (errors, words) = wer::word_errors(&reference, &stdout.replace('\n', " "));
    assert!(errors as f64 <= 0.08 * words as f64, "{errors}/{words} errors: {stdout}");
    // The first clip's words come before the second's.
    let first_line = stdout.lines().next().unwrap_or("");
    assert!(wer::word_errors(&clips[0].1, first_line).0 < wer::word_errors(&clips[1].1, first_line).0, "{stdout}");
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
    std::thread::sleep(Duration::from_secs(4));
    let workers = children_of(pid);
    assert_eq!(workers.len(), 2, "expected two workers under the supervisor");
    Command::new("kill").arg("-TERM").arg(pid.to_string()).status().unwrap();
    let out = wait_with_deadline(&mut child, Duration::from_secs(60));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    // Roughly the first 4 s of "and mister john dashwood had then leisure to consider ...".
    let words: Vec<&str> = stdout.split_whitespace().collect();
    assert!(words.len() >= 5, "speech before the signal was lost: {stdout:?}");
    assert!(stdout.to_lowercase().contains("dashwood"), "{stdout:?}");
    std::thread::sleep(Duration::from_millis(200));
    for w in workers {
        assert!(!alive(w), "worker {w} outlived the supervisor");
    }
}
