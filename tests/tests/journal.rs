//! The speech journal end to end: nothing said is lost when the supervisor itself dies, a stop
//! always ends, and an unreadable entry is put aside without stopping the start.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use swictation_e2e::*;

/// Generous: under CPU contention a request can take long, and a hang kill would be a fault the
/// test did not plan.
const CONFIG: &str = "[supervision]\nhang_timeout_s = 30\nstop_timeout_s = 5\n";

fn journal_dir(env: &TestEnv) -> PathBuf {
    env.state.join("swictation/journal")
}

/// `(closed segments, drafts with their sample counts)` in the journal now.
fn journal_files(dir: &Path) -> (usize, Vec<usize>) {
    let (mut segs, mut drafts) = (0, Vec::new());
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".seg") {
            segs += 1;
        } else if name.ends_with(".draft") {
            // The sample count is the u32 at byte 40 of the header.
            let n = std::fs::read(e.path())
                .ok()
                .filter(|b| b.len() >= 44)
                .map_or(0, |b| {
                    u32::from_le_bytes([b[40], b[41], b[42], b[43]]) as usize
                });
            drafts.push(n);
        }
    }
    (segs, drafts)
}

fn raw(samples: &[i16]) -> Vec<u8> {
    samples.iter().flat_map(|s| s.to_le_bytes()).collect()
}

/// Four whole clips, each followed by 2 s of silence (so the ASR worker has seconds of work),
/// then the first 3 s of a fifth: what is said before the kill (the fifth is still an open
/// segment then).
fn speech(clips: &[(PathBuf, String)]) -> (Vec<u8>, Vec<u8>) {
    let mut closed = Vec::new();
    for c in &clips[..4] {
        closed.extend(samples_i16(&c.0));
        closed.extend(std::iter::repeat_n(0i16, 32_000));
    }
    let open: Vec<i16> = samples_i16(&clips[4].0).into_iter().take(48_000).collect();
    (raw(&closed), raw(&open))
}

/// No transcript (of three words or more) appears in any of `logs`.
fn assert_no_text_in(logs: &[&str], texts: &[String]) {
    for t in texts {
        let words: Vec<&str> = t.split_whitespace().collect();
        for w in words.windows(3) {
            let phrase = w.join(" ");
            for log in logs {
                assert!(
                    !log.to_lowercase().contains(&phrase.to_lowercase()),
                    "transcript text {phrase:?} in a log:\n{log}"
                );
            }
        }
    }
}

fn silence_wav(dir: &Path) -> PathBuf {
    let p = dir.join("silence.wav");
    swictation::io::audio::write_wav(&p, &vec![0.0f32; 16_000]).expect("write silence");
    p
}

/// The recovered store's texts (`swictation recovered --json`).
fn recovered(env: &TestEnv) -> Vec<String> {
    let out = env.cli(&["recovered", "--json"]);
    assert!(
        out.status.success(),
        "recovered: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("recovered JSON line");
            v["text"].as_str().expect("text").to_owned()
        })
        .collect()
}

/// A later start that can transcribe: plays a second of silence, replays the journal first.
fn good_start(env: &TestEnv) -> String {
    let silence = silence_wav(env.dir.path());
    let out = run_with_deadline(
        env.cmd()
            .arg("run")
            .arg("--fast")
            .arg("--input")
            .arg(&silence),
        Duration::from_secs(180),
    );
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "the good start failed:\n{log}");
    log
}

#[test]
fn supervisor_killed_while_asr_is_busy_and_a_segment_is_open_loses_nothing() {
    let _serial = serial();
    let clips = librivox();
    let (closed, open) = speech(&clips);

    // The clean run: the same audio, to the end of input.
    let clean_env = TestEnv::new();
    clean_env.write_config(CONFIG);
    let mut clean = DaemonProcess::spawn(
        clean_env
            .cmd()
            .args(["run", "--input", "-"])
            .stdin(Stdio::piped()),
    );
    {
        let mut stdin = clean.child.stdin.take().expect("stdin");
        stdin.write_all(&closed).expect("feed");
        stdin.write_all(&open).expect("feed");
    }
    let (st, clean_out, clean_log) = clean.wait(Duration::from_secs(240));
    assert!(st.success(), "clean run failed:\n{clean_log}");
    let clean_text = transcript_lines(&clean_out);
    assert!(
        clean_text.len() >= 5,
        "clean run: {clean_text:?}\n{clean_log}"
    );

    // The same audio, with the supervisor SIGKILLed once a closed segment waits for (or is in)
    // ASR and the open segment's draft holds all the audio fed (it has stopped growing: the
    // draft is rewritten every 500 ms).
    let env = TestEnv::new();
    env.write_config(CONFIG);
    let mut d = DaemonProcess::spawn(
        env.cmd()
            .args(["run", "--input", "-"])
            .stdin(Stdio::piped()),
    );
    let mut stdin = d.child.stdin.take().expect("stdin");
    stdin.write_all(&closed).expect("feed");
    stdin.write_all(&open).expect("feed");
    stdin.flush().expect("flush");
    let jdir = journal_dir(&env);
    let start = Instant::now();
    let mut last: (usize, Instant) = (0, Instant::now());
    loop {
        let (segs, drafts) = journal_files(&jdir);
        let n = drafts.iter().copied().max().unwrap_or(0);
        if n != last.0 {
            last = (n, Instant::now());
        }
        if segs >= 1 && n > 16_000 && last.1.elapsed() >= Duration::from_millis(800) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "never saw a closed segment waiting for ASR together with a full draft (last: {segs} closed, drafts {drafts:?}); log:\n{}",
            d.stderr()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    d.signal(Signal::SIGKILL);
    let (_, before_kill, killed_log) = d.wait(Duration::from_secs(10));
    drop(stdin);
    let mut got = transcript_lines(&before_kill);
    let (segs, drafts) = journal_files(&jdir);
    assert!(segs + drafts.len() >= 2, "the journal kept too little");

    let log = good_start(&env);
    assert!(log.contains("an earlier run left in the journal"), "{log}");
    let rec = recovered(&env);
    let rec_len = rec.len();
    assert!(!rec.is_empty(), "nothing recovered; log:\n{log}");
    got.extend(rec);
    // Privacy: no transcript in any log, through the kill and the replay.
    assert_no_text_in(&[&clean_log, &killed_log, &log], &got);
    // Every word once, against the clean run, within one word per segment.
    let (errors, words) = wer::word_errors(&clean_text.join(" "), &got.join(" "));
    assert!(
        errors <= clean_text.len(),
        "{errors} word errors in {words} words:\nclean: {clean_text:?}\ngot:   {got:?}"
    );
    let (segs, drafts) = journal_files(&jdir);
    assert_eq!(
        (segs, drafts.len()),
        (0, 0),
        "the journal is not empty after replay"
    );
    // Exactly once: a third start recovers nothing new.
    good_start(&env);
    assert_eq!(
        recovered(&env).len(),
        rec_len,
        "a second start replayed again"
    );
}

/// Workers that can never load, as a new user met it: the ONNX Runtime library unreadable. The
/// VAD then falls back to the energy detector; no ASR worker ever loads.
fn broken_runtime(cmd: &mut std::process::Command) -> &mut std::process::Command {
    cmd.env("SWICTATION_ORT_LIB", "/nonexistent/libonnxruntime.so")
}

#[test]
fn with_an_asr_that_never_loads_end_of_input_and_sigterm_end_within_the_bound() {
    let _serial = serial();
    let clips = librivox();
    let env = TestEnv::new();
    env.write_config(&format!("{CONFIG}restart_max = 2\n"));

    // End of input.
    let started = Instant::now();
    let out = run_with_deadline(
        broken_runtime(&mut env.cmd())
            .args(["run", "--fast", "--input"])
            .arg(&clips[0].0),
        Duration::from_secs(90),
    );
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(45),
        "took {took:?} to end after end of input:\n{log}"
    );
    assert!(log.contains("stay in the journal"), "{log}");
    // The degraded VAD mode: past the intensity limit, speech is segmented by energy.
    assert!(log.contains("segmenting by energy"), "{log}");
    let (segs, _) = journal_files(&journal_dir(&env));
    assert!(segs >= 1, "the speech is not in the journal:\n{log}");

    // SIGTERM while the speech waits for an ASR that cannot load.
    let mut d = DaemonProcess::spawn(
        broken_runtime(&mut env.cmd())
            .args(["run", "--input", "-"])
            .stdin(Stdio::piped()),
    );
    let mut stdin = d.child.stdin.take().expect("stdin");
    speak(&mut stdin, &clips[1].0);
    let start = Instant::now();
    while journal_files(&journal_dir(&env)).0 <= segs {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the second clip never reached the journal; log:\n{}",
            d.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let signalled = Instant::now();
    d.signal(Signal::SIGTERM);
    let (_, _, log) = d.wait(Duration::from_secs(30));
    drop(stdin);
    let took = signalled.elapsed();
    assert!(
        took < Duration::from_secs(5 + 5),
        "took {took:?} after SIGTERM (stop_timeout_s = 5):\n{log}"
    );
    assert!(log.contains("stay in the journal"), "{log}");

    // A later start that can load transcribes both, in order.
    env.write_config(CONFIG);
    let log = good_start(&env);
    let rec = recovered(&env);
    // The energy detector cuts segments its own way: compare the whole, in order.
    let reference = format!("{} {}", clips[0].1, clips[1].1);
    let (errors, words) = wer::word_errors(&reference, &rec.join(" "));
    assert!(
        errors * 10 <= words,
        "{errors} errors in {words} words: {rec:?}; log:\n{log}"
    );
    let (segs, drafts) = journal_files(&journal_dir(&env));
    assert_eq!((segs, drafts.len()), (0, 0));
    // And status-style accounting: `recovered --clear` forgets them.
    let out = env.cli(&["recovered", "--clear"]);
    assert!(out.status.success());
    assert!(recovered(&env).is_empty());
}

#[test]
fn a_torn_journal_entry_is_put_aside_and_the_rest_is_recovered() {
    let _serial = serial();
    let clips = librivox();
    let env = TestEnv::new();
    env.write_config(CONFIG);
    let jdir = journal_dir(&env);
    // An earlier run's journal: one good entry (the first clip) and one torn one.
    let j = swictation::io::journal::Journal::open(&jdir, 1 << 30)
        .expect("journal")
        .journal;
    let samples = swictation::io::audio::load(&clips[0].0)
        .expect("clip")
        .samples;
    let span = swictation::io::journal::Span {
        start: 0,
        end: samples.len() as u64,
        speech_start: 0,
        speech_end: samples.len() as u64,
    };
    j.put(&j.next_stem(), false, span, samples.clone());
    let torn = j.put(&j.next_stem(), false, span, samples);
    j.flush();
    let p = jdir.join(&torn);
    let bytes = std::fs::read(&p).expect("entry");
    std::fs::write(&p, &bytes[..bytes.len() / 2]).expect("tear it");
    drop(j);

    let log = good_start(&env);
    assert!(
        log.contains(&format!("journal entry {torn} could not be read")) && log.contains("torn"),
        "{log}"
    );
    assert!(jdir.join("damaged").join(&torn).exists());
    let rec = recovered(&env);
    assert_eq!(rec.len(), 1, "{rec:?}");
    assert_recognised(&rec, &clips[..1]);
}

#[test]
fn a_full_disk_is_reported_clearly_and_dictation_goes_on() {
    let _serial = serial();
    let clips = librivox();
    let env = TestEnv::new();
    env.write_config(CONFIG);
    let jdir = journal_dir(&env);
    std::fs::create_dir_all(&jdir).expect("journal dir");
    // The journal on a 1 MB file system (a tmpfs in a private mount namespace): one clip's
    // entry fits, four clips waiting for ASR do not.
    let mut cmd = std::process::Command::new("unshare");
    cmd.args(["--user", "--map-root-user", "--mount", "sh", "-c"])
        .arg("mount -t tmpfs -o size=1m,mode=0700 tmpfs \"$0\" && exec \"$@\"")
        .arg(&jdir)
        .arg(bin("swictation"))
        .args(["run", "--input", "-"]);
    let template = env.cmd();
    for (k, v) in template.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let mut d = DaemonProcess::spawn(cmd.stdin(Stdio::piped()));
    {
        let mut stdin = d.child.stdin.take().expect("stdin");
        for c in &clips[..4] {
            speak(&mut stdin, &c.0);
        }
    }
    let (st, out, log) = d.wait(Duration::from_secs(240));
    assert!(
        st.success(),
        "the daemon failed (is unshare allowed here?):\n{log}"
    );
    assert!(
        log.contains("cannot keep") && log.contains("No space left on device"),
        "no clear message about the full disk:\n{log}"
    );
    assert!(
        !log.lines()
            .any(|l| l.contains("journal") && l.contains("No such file or directory")),
        "a later failure hid the first one:\n{log}"
    );
    // Nothing else lost: every clip still comes out, in order.
    let reference = clips[..4]
        .iter()
        .map(|c| c.1.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    let got = transcript_lines(&out).join(" ");
    let (errors, words) = wer::word_errors(&reference, &got);
    assert!(
        errors * 10 <= words,
        "{errors}/{words} errors: {got}\n{log}"
    );
}

#[test]
fn a_segment_that_kills_the_asr_worker_twice_is_quarantined_as_wav_and_json() {
    let _serial = serial();
    let clips = librivox();
    let env = TestEnv::new();
    // A frozen worker is killed as hung after 1 s plus 2 s per second of audio.
    env.write_config("[supervision]\nhang_timeout_s = 1\nstop_timeout_s = 5\n");
    let mut d = DaemonProcess::spawn(
        env.cmd()
            .args(["run", "--input", "-"])
            .stdin(Stdio::piped()),
    );
    env.wait_status("ready", Duration::from_secs(120), |s| {
        s["state"] == "listening"
    });
    let mut stdin = d.child.stdin.take().expect("stdin");
    speak(&mut stdin, &clips[0].0);
    // Freeze the ASR worker inside the request, twice: two deaths on the same segment.
    let mut frozen = Vec::new();
    for round in 0..2 {
        let s = env.wait_status("the ASR worker busy", Duration::from_secs(120), |s| {
            let w = worker(s, "asr");
            w["state"] == "busy" && w["pid"].as_u64().is_some_and(|p| !frozen.contains(&p))
        });
        let pid = worker(&s, "asr")["pid"].as_u64().expect("pid");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGSTOP)
            .unwrap_or_else(|e| panic!("round {round}: SIGSTOP {pid}: {e}"));
        frozen.push(pid);
    }
    let qdir = env.state.join("swictation/quarantine");
    let start = Instant::now();
    let found = loop {
        let names: Vec<String> = std::fs::read_dir(&qdir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        if names.iter().any(|n| n.ends_with(".wav")) && names.iter().any(|n| n.ends_with(".json")) {
            break names;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no quarantined WAV + JSON in {}; log:\n{}",
            qdir.display(),
            d.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let json = found.iter().find(|n| n.ends_with(".json")).expect("json");
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(qdir.join(json)).expect("read json")).expect("json");
    assert!(
        meta["reason"]
            .as_str()
            .is_some_and(|r| r.contains("killed the worker twice")),
        "{meta}"
    );
    // Dictation goes on: the next clip is transcribed.
    speak(&mut stdin, &clips[1].0);
    let lines = d.wait_transcripts(1, Duration::from_secs(120));
    assert_recognised(&lines[lines.len() - 1..], &clips[1..2]);
    drop(stdin);
    let (st, _, log) = d.wait(Duration::from_secs(60));
    assert!(st.success(), "{log}");
    // Its journal entry went with it into the quarantine.
    let (segs, drafts) = journal_files(&journal_dir(&env));
    assert_eq!((segs, drafts.len()), (0, 0), "{log}");
}
