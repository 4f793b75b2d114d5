//! `swictation transcribe` with the real supervisor, workers and models.

use std::time::Duration;

use swictation_e2e::*;

fn transcribe(args: &[&str]) -> std::process::Output {
    let rt = tempfile::tempdir().unwrap();
    run_with_deadline(
        swictation(rt.path()).arg("transcribe").args(args),
        Duration::from_secs(300),
    )
}

#[test]
fn librivox_and_goforward_word_error_rate_is_at_most_six_percent() {
    let mut refs: Vec<(String, String)> = librivox()
        .into_iter()
        .map(|(p, r)| (p.to_string_lossy().into_owned(), r))
        .collect();
    refs.push((
        speech()
            .join("goforward.raw")
            .to_string_lossy()
            .into_owned(),
        "go forward ten meters".into(),
    ));
    let files: Vec<&str> = refs.iter().map(|(p, _)| p.as_str()).collect();
    let out = transcribe(&files);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "transcribe failed: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), refs.len(), "one line per file, got {stdout}");
    let (mut errors, mut words) = (0, 0);
    for ((file, reference), hyp) in refs.iter().zip(&lines) {
        let (e, n) = wer::word_errors(reference, hyp);
        eprintln!("{e:2}/{n:2}  {file}\n       ref: {reference}\n       hyp: {hyp}");
        errors += e;
        words += n;
    }
    let rate = errors as f64 / words as f64;
    eprintln!("total WER {:.2} % ({errors}/{words})", rate * 100.0);
    assert!(rate <= 0.06, "WER {:.2} % > 6 %", rate * 100.0);
}

#[test]
fn json_names_segments_devices_and_models() {
    let clip = librivox()[0].0.to_string_lossy().into_owned();
    let out = transcribe(&["--json", &clip]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(v["file"], clip.as_str());
    assert_eq!(v["asr"]["model"], "moonshine-base-en");
    assert_eq!(v["asr"]["device"], "cpu");
    assert_eq!(v["vad"]["model"], "silero-vad-v6.2");
    assert_eq!(v["vad"]["device"], "cpu");
    let segs = v["segments"].as_array().expect("segments");
    assert!(!segs.is_empty());
    let mut last_end = 0.0;
    for s in segs {
        let (start, end) = (s["start"].as_f64().unwrap(), s["end"].as_f64().unwrap());
        assert!(
            start >= last_end && end > start,
            "segments out of order: {segs:?}"
        );
        assert!(!s["text"].as_str().unwrap().is_empty());
        last_end = end;
    }
    assert!(last_end <= v["duration"].as_f64().unwrap() + 1e-6);
}

#[test]
fn other_sample_rates_and_channel_counts_are_converted() {
    let mono = speech().join("chan3.wav");
    let stereo = speech().join("chan3.2chan.wav");
    let out = transcribe(&[mono.to_str().unwrap(), stereo.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2);
    assert!(
        lines[0].split_whitespace().count() >= 10,
        "11 kHz meeting speech gave {:?}",
        lines[0]
    );
    let (diff, n) = wer::word_errors(lines[0], lines[1]);
    assert!(
        (diff as f64) <= 0.1 * n as f64,
        "mono and stereo copies disagree: {lines:?}"
    );
}

#[test]
fn missing_model_names_the_path() {
    let clip = speech().join("goforward.raw");
    let out = transcribe(&["--models", "/nonexistent/models", clip.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/nonexistent/models/"), "{stderr}");
    assert!(stderr.contains("deploy/setup.sh"), "{stderr}");
}

#[test]
fn missing_onnx_runtime_names_the_path() {
    let clip = speech().join("goforward.raw");
    let out = transcribe(&[
        "--ort-lib",
        "/nonexistent/libonnxruntime.so.1.32.0",
        clip.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("/nonexistent/libonnxruntime.so.1.32.0"),
        "{stderr}"
    );
    assert!(stderr.to_lowercase().contains("onnx runtime"), "{stderr}");
}

#[test]
fn unsupported_file_says_what_was_found() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("notes.wav");
    std::fs::write(&bad, b"this is not audio at all").unwrap();
    let out = transcribe(&[bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("notes.wav"), "{stderr}");
    let missing = dir.path().join("absent.wav");
    let out = transcribe(&[missing.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("absent.wav"));
}

#[test]
fn segment_boundaries_follow_the_word_timings() {
    // The LibriVox .json files give each word's begin and duration (from forced alignment).
    for (clip, _) in librivox() {
        let words: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(clip.with_extension("json")).unwrap())
                .unwrap();
        let spans: Vec<(f64, f64)> = words["w"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|w| !w["t"].as_str().unwrap().starts_with('<'))
            .map(|w| {
                let b = w["b"].as_f64().unwrap();
                (b, b + w["d"].as_f64().unwrap())
            })
            .collect();
        let out = transcribe(&["--json", clip.to_str().unwrap()]);
        assert!(out.status.success());
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let segs = v["segments"].as_array().unwrap();
        for s in segs {
            let (start, end) = (
                s["speech_start"].as_f64().unwrap(),
                s["speech_end"].as_f64().unwrap(),
            );
            let near_begin = spans
                .iter()
                .map(|(b, _)| (b - start).abs())
                .fold(f64::MAX, f64::min);
            let near_end = spans
                .iter()
                .map(|(_, e)| (e - end).abs())
                .fold(f64::MAX, f64::min);
            assert!(
                near_begin <= 0.15,
                "{}: speech starts at {start:.2}, no word begins within 150 ms",
                clip.display()
            );
            assert!(
                near_end <= 0.15,
                "{}: speech ends at {end:.2}, no word ends within 150 ms",
                clip.display()
            );
        }
        // Every word lies inside some segment.
        for (b, e) in &spans {
            let mid = (b + e) / 2.0;
            assert!(
                segs.iter()
                    .any(|s| s["start"].as_f64().unwrap() <= mid
                        && mid <= s["end"].as_f64().unwrap()),
                "{}: word at {b:.2}-{e:.2} is in no segment",
                clip.display()
            );
        }
    }
}
