//! `swictation run --input -`: the dictation loop fed raw s16le 16 kHz mono on standard input,
//! as `arecord -t raw -f S16_LE -r 16000 -c 1 | swictation run --input -` would, with the real
//! workers and models.

use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use swictation_e2e::*;

/// Samples per write: 100 ms, as a recorder delivers them.
const CHUNK: usize = 1_600;

/// Words wrong per reference word.
fn wer_of(reference: &str, hypothesis: &str) -> f64 {
    let (errors, words) = wer::word_errors(reference, hypothesis);
    errors as f64 / words.max(1) as f64
}

fn s16le(samples: &[i16]) -> Vec<u8> {
    samples.iter().flat_map(|s| s.to_le_bytes()).collect()
}

/// Writes `samples` in [`CHUNK`]s at `speed` times real time.
fn play(stdin: &mut impl Write, samples: &[i16], speed: f64) {
    let t0 = Instant::now();
    for (i, chunk) in samples.chunks(CHUNK).enumerate() {
        let due = t0 + Duration::from_secs_f64((i * CHUNK) as f64 / 16_000.0 / speed);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        stdin
            .write_all(&s16le(chunk))
            .expect("write audio to the daemon's stdin");
    }
    stdin.flush().expect("flush stdin");
}

#[test]
fn stdin_speech_is_transcribed_and_closing_stdin_ends_the_run() {
    let _serial = serial();
    let clips = librivox();
    let t0 = Instant::now();
    let env = TestEnv::new();
    let mut daemon = DaemonProcess::spawn(
        env.cmd()
            .args(["run", "--input", "-"])
            .stdin(Stdio::piped()),
    );
    let mut stdin = daemon.child.stdin.take().expect("the daemon's stdin");
    let s = env.wait_status("listening on stdin", Duration::from_secs(90), |s| {
        s["state"] == "listening"
            && s["workers"]
                .as_array()
                .is_some_and(|w| w.len() == 2 && w.iter().all(|w| w["state"] == "ready"))
    });
    assert_eq!(s["audio"]["source"], "stdin", "{s}");
    eprintln!("ready after {:?}", t0.elapsed());

    // Three clips with a second of silence between them, at twice real time.
    let used = &clips[..3];
    let gap = vec![0i16; 16_000];
    let (first, first_text) = &used[0];
    play(&mut stdin, &samples_i16(first), 2.0);
    play(&mut stdin, &gap, 2.0);
    // The loop transcribes while the input is still open, not only at its end.
    let start = Instant::now();
    while wer_of(first_text, &daemon.stdout()) >= 0.3 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the first utterance was not transcribed while stdin stayed open: {:?}\n{}",
            daemon.stdout(),
            daemon.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        daemon.child.try_wait().expect("wait").is_none(),
        "exited with stdin open"
    );
    for (i, (clip, _)) in used[1..].iter().enumerate() {
        if i > 0 {
            play(&mut stdin, &gap, 2.0);
        }
        play(&mut stdin, &samples_i16(clip), 2.0);
    }
    // No trailing silence: the end of input itself closes the last utterance.
    let closed_at = Instant::now();
    drop(stdin);
    let (code, out, log) = daemon.wait(Duration::from_secs(60));
    eprintln!(
        "exited {:?} after stdin closed ({code}); total {:?}\noutput:\n{out}",
        closed_at.elapsed(),
        t0.elapsed()
    );
    assert_eq!(code.code(), Some(0), "the run did not end cleanly:\n{log}");

    let reference: Vec<&str> = used.iter().map(|(_, t)| t.as_str()).collect();
    let reference = reference.join(" ");
    let (errors, words) = wer::word_errors(&reference, &out.replace('\n', " "));
    assert!(
        errors as f64 <= 0.08 * words as f64,
        "{errors}/{words} word errors:\n{out}\nreference: {reference}"
    );
    // In order, and the last utterance (ended by the end of input) is the last line.
    let lines: Vec<&str> = out.lines().filter(|l| !l.trim().is_empty()).collect();
    let (last_clip_text, first_line, last_line) = (
        &used[2].1,
        lines.first().copied().unwrap_or(""),
        lines.last().copied().unwrap_or(""),
    );
    assert!(
        wer_of(first_text, first_line) < wer_of(last_clip_text, first_line),
        "{out}"
    );
    let tail: Vec<&str> = last_clip_text.split_whitespace().rev().take(3).collect();
    assert!(
        tail.iter().all(|w| last_line.to_lowercase().contains(w)),
        "the last utterance's end ({tail:?}) is not in the last line {last_line:?}"
    );
    // Transcripts go to the output only, never to the log.
    for line in &lines {
        if line.split_whitespace().count() >= 3 {
            assert!(
                !log.contains(line.trim()),
                "transcript {line:?} in the log:\n{log}"
            );
        }
    }
    assert!(
        !log.contains(": error:"),
        "errors in the log of a clean stdin run:\n{log}"
    );
    // The control socket is gone with the daemon.
    let status = env.cli(&["status"]);
    assert!(
        !status.status.success(),
        "a daemon still answers: {status:?}"
    );
}
