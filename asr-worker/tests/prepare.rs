//! Prepared models, with the real shipped files, the real worker binary and recorded speech
//! (run `deploy/setup.sh` and `deploy/prepare.sh` first; `deploy/test.sh` does both).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use swictation_asr_worker::files::{prepared_state, Manifest, CUDA_FILES, PREPARED_FILES};
use swictation_asr_worker::prepare::Clip;
use swictation_asr_worker::{Moonshine, SpeechModel};
use swictation_proto::Device;
use swictation_worker_kit::{data_dir, default_ort_lib, Runtime};

fn runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        Runtime::load(&default_ort_lib(), 2).unwrap_or_else(|e| panic!("{e} (run deploy/setup.sh)"))
    })
}

fn speech() -> PathBuf {
    data_dir().join("speech")
}

fn clips() -> Vec<PathBuf> {
    let mut c = vec![speech().join("goforward.raw")];
    for n in ["0870", "0880", "0890", "0920", "0930"] {
        c.push(
            speech()
                .join("librivox")
                .join(format!("sense_and_sensibility_01_austen_64kb-{n}.wav")),
        );
    }
    for p in &c {
        assert!(
            p.is_file(),
            "{} is missing: run deploy/setup.sh",
            p.display()
        );
    }
    c
}

/// A temp dir holding `model/` with a copy of the shipped files (only) of `model`.
fn shipped_copy(model: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().expect("temp dir");
    let src = data_dir().join("models").join(model);
    let dst = tmp.path().join(model);
    std::fs::create_dir(&dst).unwrap();
    for f in [
        "encoder_model.ort",
        "decoder_model_merged.ort",
        "tokenizer.bin",
    ] {
        std::fs::copy(src.join(f), dst.join(f))
            .unwrap_or_else(|e| panic!("{}: {e} (run deploy/setup.sh)", src.join(f).display()));
    }
    tmp
}

fn prepare(dir: &Path) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_swictation-asr-worker"));
    cmd.args(["--threads", "2", "--prepare"])
        .arg("--ort-lib")
        .arg(default_ort_lib());
    for c in clips() {
        cmd.arg("--clip").arg(c);
    }
    cmd.arg(dir).output().expect("running the worker")
}

#[test]
fn preparing_a_shipped_model_dir_gives_checked_files_the_worker_then_prefers() {
    // tiny-en: quick to prepare, and the one with the CPU-only FusedConv to split.
    let tmp = shipped_copy("moonshine-tiny-en");
    let dir = tmp.path().join("moonshine-tiny-en");

    // Before: the shipped files load, and the worker says why they are used.
    let (mut shipped, notice) =
        Moonshine::load(runtime(), &dir, Device::Cpu, Device::Cpu).expect("shipped files load");
    let notice = notice.expect("a notice for unprepared files");
    assert!(notice.contains("has no prepared models"), "{notice}");

    let out = prepare(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("checked on 6 clips"), "{stderr}");
    assert_eq!(prepared_state(&dir, runtime().version()), Ok(()));
    let manifest: Manifest = serde_json::from_str(
        &std::fs::read_to_string(dir.join("prepared/manifest.json")).expect("manifest"),
    )
    .expect("manifest parses");
    assert_eq!(manifest.ort_version, runtime().version());
    assert_eq!(manifest.checked_clips.len(), 6);
    for name in PREPARED_FILES.iter().chain(&CUDA_FILES) {
        let f = manifest
            .files
            .iter()
            .find(|f| f.name == *name)
            .unwrap_or_else(|| panic!("{name} not in the manifest"));
        let path = dir.join("prepared").join(name);
        assert_eq!(
            swictation_asr_worker::files::sha256_file(&path).unwrap(),
            f.sha256,
            "{name}"
        );
        let bytes = std::fs::read(&path).unwrap();
        assert!(
            !bytes.windows(9).any(|w| w == b"FusedConv"),
            "{name} still holds the CPU-only FusedConv"
        );
    }
    // Idempotent: a second run leaves valid files alone.
    let again = prepare(&dir);
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already prepared"));

    // After: the prepared files are preferred and hear the same words.
    let (mut prepared, notice) =
        Moonshine::load(runtime(), &dir, Device::Cpu, Device::Cpu).expect("prepared files load");
    assert_eq!(notice, None);
    for path in clips() {
        let clip = Clip::read(&path).unwrap();
        let a = shipped.transcribe(&clip.samples).unwrap();
        let b = prepared.transcribe(&clip.samples).unwrap();
        assert_eq!(a.text, b.text, "{}", clip.name);
        assert!(!b.text.is_empty(), "{}", clip.name);
    }

    // A shipped file changed after preparing: back to the shipped files, saying so.
    std::fs::write(dir.join("decoder_model_merged.ort"), b"changed").unwrap();
    let err = prepared_state(&dir, runtime().version()).unwrap_err();
    assert!(err.contains("has changed since it was prepared"), "{err}");
}

#[test]
fn the_installed_base_decoder_is_prepared_and_several_times_faster_per_step() {
    let dir = data_dir().join("models/moonshine-base-en");
    prepared_state(&dir, runtime().version())
        .unwrap_or_else(|why| panic!("{why}: run deploy/prepare.sh"));
    let clip = speech()
        .join("librivox")
        .join("sense_and_sensibility_01_austen_64kb-0890.wav");
    let out = Command::new(env!("CARGO_BIN_EXE_swictation-asr-worker"))
        .args([
            "--threads",
            "1",
            "--bench",
            "--bench-rounds",
            "1",
            "--model",
        ])
        .arg(&dir)
        .arg("--ort-lib")
        .arg(default_ort_lib())
        .arg("--clip")
        .arg(&clip)
        .output()
        .expect("running the worker");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let per_step = |k: &str| {
        let r = &v[k]["runs"][0];
        (
            r["decoder_ms"].as_f64().unwrap() / r["steps"].as_f64().unwrap(),
            r["text"].as_str().unwrap().to_string(),
        )
    };
    let (shipped, a) = per_step("shipped");
    let (prepared, b) = per_step("prepared");
    eprintln!("decoder per step: shipped {shipped:.1} ms, prepared {prepared:.1} ms");
    assert_eq!(a, b, "the same words");
    // Measured 4.3-9x; 3x leaves room for a machine busy with other work.
    assert!(
        shipped > 3.0 * prepared,
        "shipped {shipped:.1} ms vs prepared {prepared:.1} ms per step"
    );
}
