//! Issue 3, end to end: `swictation run` capturing live audio through cpal and real ALSA (the
//! `file` plugin reading a FIFO fed in real time, see `deploy/asoundrc.capture`), with the real
//! workers and models.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use swictation_e2e::alsa_feed::Feeder;
use swictation_e2e::*;

/// Seconds of silence between clips: longer than the segmenter's closing silence, so each clip
/// ends as its own utterance, as it does when `transcribe` reads it alone.
const GAP_S: f64 = 1.5;

fn silence(seconds: f64) -> Vec<i16> {
    vec![0; (seconds * 16_000.0) as usize]
}

/// Words wrong per reference word, over all clips.
fn wer_of(reference: &str, hypothesis: &str) -> f64 {
    let (errors, words) = wer::word_errors(reference, hypothesis);
    errors as f64 / words.max(1) as f64
}

/// Starts `swictation run` on the default (FIFO) device and waits until it listens with its
/// capture open.
fn start_live(env: &TestEnv) -> DaemonProcess {
    let daemon = DaemonProcess::spawn(env.cmd().arg("run"));
    env.wait_status(
        "listening with workers ready",
        Duration::from_secs(90),
        |s| {
            s["state"] == "listening"
                && s["workers"]
                    .as_array()
                    .is_some_and(|w| w.len() == 2 && w.iter().all(|w| w["state"] == "ready"))
                && s["audio"]["source"]
                    .as_str()
                    .is_some_and(|src| src.contains("file capture"))
        },
    );
    daemon
}

#[test]
fn live_capture_transcribes_like_transcribe() {
    let _serial = serial();
    let clips = librivox();
    let t0 = Instant::now();

    // The reference: `swictation transcribe` on the same files.
    let files: Vec<&std::path::Path> = clips.iter().map(|(p, _)| p.as_path()).collect();
    let env = TestEnv::new();
    let out = run_with_deadline(
        env.cmd().arg("transcribe").args(&files),
        Duration::from_secs(240),
    );
    assert!(
        out.status.success(),
        "transcribe failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let offline = String::from_utf8_lossy(&out.stdout).into_owned();
    let t_transcribe = t0.elapsed();

    let mut env = TestEnv::new();
    let fifo = env.with_alsa();
    let feeder = Feeder::start(&fifo);
    let mut daemon = start_live(&env);
    let t_ready = t0.elapsed();
    let mut speech = Vec::new();
    for (path, _) in &clips {
        speech.extend(samples_i16(path));
        speech.extend(silence(GAP_S));
    }
    feeder.push(&speech);
    let seconds = speech.len() as f64 / 16_000.0;
    feeder.drain(Duration::from_secs_f64(seconds * 1.5 + 10.0));
    // While it runs, the status says where the audio comes from and how loud it is.
    let status = env.status().expect("status while listening");
    eprintln!("status while listening: {}", status["audio"]);
    assert_eq!(status["audio"]["overruns"], 0, "{status}");
    // Let the last utterance close and be transcribed, then stop through the control socket.
    std::thread::sleep(Duration::from_secs(2));
    let status = env.status().expect("status after the speech");
    eprintln!("latency: {}", status["latency"]);
    assert!(
        status["latency"]["speech_end_to_text_ms_p50"].is_f64()
            && status["latency"]["asr_segment_ms_p95"].is_f64(),
        "{status}"
    );
    assert!(
        status["audio"]["level_dbfs"].is_f64(),
        "no input level: {status}"
    );
    let (live, log) = env.stop(&mut daemon, Duration::from_secs(60));
    drop(feeder);

    let reference: Vec<&str> = clips.iter().map(|(_, t)| t.as_str()).collect();
    let reference = reference.join(" ");
    let (w_offline, w_live) = (
        wer_of(&reference, &offline.replace('\n', " ")),
        wer_of(&reference, &live.replace('\n', " ")),
    );
    let between = wer_of(&offline.replace('\n', " "), &live.replace('\n', " "));
    eprintln!(
        "transcribe: {t_transcribe:?}; live ready after {:?}; {seconds:.1} s of audio played; total {:?}\n\
         WER transcribe {:.2}%, live {:.2}%, live vs transcribe {:.2}%\nlive:\n{live}",
        t_ready - t_transcribe,
        t0.elapsed(),
        w_offline * 100.0,
        w_live * 100.0,
        between * 100.0
    );
    // Transcripts go to the output only, never to the log.
    for line in live.lines().filter(|l| l.split_whitespace().count() >= 3) {
        assert!(
            !log.contains(line.trim()),
            "transcript {line:?} in the log:\n{log}"
        );
    }
    assert!(
        w_live <= w_offline + 0.01,
        "live WER {:.2}% is more than 1 point above transcribe's {:.2}%\nlive: {live}\noffline: {offline}",
        w_live * 100.0,
        w_offline * 100.0
    );
    assert!(
        !log.contains("capture:"),
        "capture errors during a clean run:\n{log}"
    );
}

#[test]
fn capture_source_lost_and_back_keeps_transcribing() {
    let _serial = serial();
    let clips = librivox();
    let t0 = Instant::now();
    let mut env = TestEnv::new();
    let fifo = env.with_alsa();
    let feeder = Feeder::start(&fifo);
    let mut daemon = start_live(&env);

    // First utterance, then the source goes away: the FIFO is removed (so reopening fails) and
    // its writer closed (so the open stream hits the end of its input).
    let (first, first_text) = &clips[0];
    feeder.push(&samples_i16(first));
    feeder.push(&silence(GAP_S));
    feeder.drain(Duration::from_secs(30));
    std::fs::remove_file(&fifo).expect("remove FIFO");
    feeder.close();

    // The daemon reports it (status and log) and keeps running.
    let failing = env.wait_status(
        "a capture error in the status",
        Duration::from_secs(15),
        |s| {
            s["audio"]["source"]
                .as_str()
                .is_some_and(|src| src.contains("capture error"))
        },
    );
    eprintln!(
        "while the source is gone: state {}, audio {}",
        failing["state"], failing["audio"]
    );
    assert_eq!(failing["state"], "degraded", "{failing}");
    assert!(
        daemon.stderr().contains("warn: capture:"),
        "no capture error in the log:\n{}",
        daemon.stderr()
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(alive(daemon.pid()), "the daemon died with its audio source");
    // The utterance spoken before the loss is still transcribed (ASR takes a few seconds).
    let deadline = Instant::now() + Duration::from_secs(30);
    while wer_of(first_text, &daemon.stdout()) >= 0.3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let before = daemon.stdout();
    assert!(
        wer_of(first_text, &before) < 0.3,
        "first utterance not transcribed: {before:?}\n{}",
        daemon.stderr()
    );

    // The source comes back: capture reopens it and what is said next is transcribed.
    alsa_feed::make_fifo(&fifo);
    let feeder = Feeder::start(&fifo);
    let back = env.wait_status("capture back", Duration::from_secs(30), |s| {
        s["state"] == "listening"
            && s["audio"]["source"]
                .as_str()
                .is_some_and(|src| !src.contains("error"))
    });
    eprintln!("after the source came back: audio {}", back["audio"]);
    let (second, second_text) = &clips[2];
    feeder.push(&samples_i16(second));
    feeder.push(&silence(GAP_S));
    feeder.drain(Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(1));
    daemon.signal(Signal::SIGTERM);
    let (code, out, log) = daemon.wait(Duration::from_secs(60));
    drop(feeder);
    assert!(code.success(), "{log}");
    let after = out.strip_prefix(before.as_str()).unwrap_or(&out);
    eprintln!(
        "took {:?}; before the loss: {before:?}; after: {after:?}",
        t0.elapsed()
    );
    assert!(
        wer_of(second_text, after) < 0.3,
        "speech after the source came back was not transcribed: {after:?}\n{log}"
    );
}

/// Whether process `pid` has `path` open (the ALSA file plugin holds its FIFO open while a
/// capture stream exists).
fn holds_open(pid: u32, path: &std::path::Path) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|fds| {
            fds.flatten()
                .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| target == path))
        })
        .unwrap_or(false)
}

/// Waits until `cond` holds, failing with `what` after `limit`.
fn wait_until(what: &str, limit: Duration, cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out after {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until the daemon's output holds `text` (WER under 0.3 against what was added after
/// `before`), failing after `limit`; returns the output added.
fn wait_transcript(daemon: &DaemonProcess, before: &str, text: &str, limit: Duration) -> String {
    let start = Instant::now();
    loop {
        let out = daemon.stdout();
        let added = out.strip_prefix(before).unwrap_or(&out).to_owned();
        if wer_of(text, &added) < 0.3 {
            return added;
        }
        assert!(
            start.elapsed() < limit,
            "{text:?} not transcribed within {limit:?}; output added: {added:?}\nlog:\n{}",
            daemon.stderr()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn pause_closes_capture_and_resume_reopens_it() {
    let _serial = serial();
    let clips = librivox();
    let (before_clip, before_text) = &clips[0];
    let (paused_clip, paused_text) = &clips[3];
    let (after_clip, after_text) = &clips[2];
    let t0 = Instant::now();
    let mut env = TestEnv::new();
    let fifo = env.with_alsa();
    // A microphone: what is said while nobody captures is gone, not queued for later.
    let mic = Feeder::start_mic(&fifo);
    let mut daemon = start_live(&env);
    let pid = daemon.pid();
    assert!(
        holds_open(pid, &fifo),
        "the daemon listens but does not hold its capture FIFO open"
    );

    // Listening: speech is transcribed.
    mic.push(&samples_i16(before_clip));
    mic.push(&silence(GAP_S));
    mic.drain(Duration::from_secs(30));
    wait_transcript(&daemon, "", before_text, Duration::from_secs(30));

    // Pause: the answer is the new state, and capture closes the device.
    let out = env.cli(&["pause"]);
    assert!(
        out.status.success(),
        "pause: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "paused");
    let paused = env.wait_status("state paused", Duration::from_secs(5), |s| {
        s["state"] == "paused"
    });
    eprintln!("paused after {:?}: audio {}", t0.elapsed(), paused["audio"]);
    wait_until(
        "the capture FIFO closed after pause",
        Duration::from_secs(5),
        || !holds_open(pid, &fifo),
    );
    // Past the feeder's grace period, a second of "microphone" audio goes unread.
    std::thread::sleep(alsa_feed::UNREAD_GRACE + Duration::from_millis(500));
    let (fed, lost) = (mic.fed(), mic.lost());
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        mic.fed() - fed <= alsa_feed::PERIOD as u64 && mic.lost() - lost >= 12_000,
        "the FIFO is still read while paused: {} samples taken, {} lost in 1 s",
        mic.fed() - fed,
        mic.lost() - lost
    );
    let status = env.wait_status(
        "status saying capture is closed",
        Duration::from_secs(5),
        |s| {
            s["audio"]["source"]
                .as_str()
                .is_some_and(|src| src.contains("paused: capture closed"))
        },
    );
    assert_eq!(status["state"], "paused", "{status}");
    assert!(
        status["audio"]["level_dbfs"].is_null(),
        "an input level while paused: {status}"
    );

    // Speech while paused is not transcribed.
    let out_at_pause = daemon.stdout();
    mic.push(&samples_i16(paused_clip));
    mic.push(&silence(GAP_S));
    mic.drain(Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        daemon.stdout(),
        out_at_pause,
        "output while paused (the speech was {paused_text:?})"
    );
    assert!(alive(pid) && !holds_open(pid, &fifo));

    // Resume: capture reopens the device and speech is transcribed again.
    let out = env.cli(&["resume"]);
    assert!(
        out.status.success(),
        "resume: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "listening");
    wait_until(
        "the capture FIFO reopened after resume",
        Duration::from_secs(10),
        || holds_open(pid, &fifo),
    );
    let resumed = env.wait_status(
        "listening on the file capture after resume",
        Duration::from_secs(10),
        |s| {
            s["state"] == "listening"
                && s["audio"]["source"]
                    .as_str()
                    .is_some_and(|src| src.contains("file capture") && !src.contains("error"))
        },
    );
    eprintln!(
        "resumed after {:?}: audio {}",
        t0.elapsed(),
        resumed["audio"]
    );
    let fed = mic.fed();
    wait_until(
        "the FIFO read again after resume",
        Duration::from_secs(5),
        || mic.fed() >= fed + 8_000,
    );
    mic.push(&samples_i16(after_clip));
    mic.push(&silence(GAP_S));
    mic.drain(Duration::from_secs(30));
    wait_transcript(&daemon, &out_at_pause, after_text, Duration::from_secs(30));

    let (out, log) = env.stop(&mut daemon, Duration::from_secs(60));
    drop(mic);
    let after = out.strip_prefix(out_at_pause.as_str()).unwrap_or(&out);
    eprintln!(
        "took {:?}\nbefore the pause: {out_at_pause:?}\nafter the resume: {after:?}",
        t0.elapsed()
    );
    assert!(
        wer_of(after_text, after) < 0.3,
        "after resume: {after:?} for {after_text:?}"
    );
    // Nothing of what was said while paused, even late: no word only that clip has.
    let others = format!("{before_text} {after_text}").to_lowercase();
    let own: Vec<&str> = paused_text
        .split_whitespace()
        .filter(|w| w.len() >= 5 && !others.split_whitespace().any(|o| o == w.to_lowercase()))
        .collect();
    assert!(
        own.len() >= 3,
        "too few distinctive words in {paused_text:?}"
    );
    let lower = out.to_lowercase();
    let heard: Vec<&&str> = own
        .iter()
        .filter(|w| lower.contains(&w.to_lowercase()))
        .collect();
    assert!(
        heard.is_empty(),
        "words said while paused were transcribed: {heard:?} in {out:?}"
    );
    assert!(
        !log.contains("capture:"),
        "capture errors around pause and resume:\n{log}"
    );
}
