//! Supervision with the real worker binaries: every failure class is classified, the worker is
//! restarted and proven by its canary, and no segment is lost.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use swictation::io::launch::LaunchConfig;
use swictation::report::board::Board;
use swictation::supervision::engine::SegmentText;
use swictation::supervision::stages::{
    stage_channels, Pipeline, PipelineConfig, Report, StageCommand,
};
use swictation_e2e::proto::{Fault, Role};
use swictation_e2e::*;
use swictation_policy::segmenter::SegmenterConfig;

fn engine() -> LaunchConfig {
    LaunchConfig {
        workers_dir: Some(bin_dir()),
        allow_faults: true,
        // Generous for the models, small enough that a 4 GiB allocation fails.
        memory_limit_mb: Some(3072),
        ..LaunchConfig::default()
    }
}

/// Run two LibriVox clips through a supervised pipeline, sending `fault` to `role` first.
/// Returns the transcripts, the report and the final status.
fn run_with_fault(
    role: Role,
    fault: Fault,
) -> (Vec<SegmentText>, Report, swictation::report::status::Status) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let state = tempfile::tempdir().unwrap();
        let mut cfg = PipelineConfig::new(engine(), SegmenterConfig::default());
        cfg.quarantine_dir = state.path().join("quarantine");
        let board = Board::new();
        let mut pipeline = Pipeline::new(cfg, board.clone());
        pipeline.start().await;
        let (control, receivers) = stage_channels();
        control
            .for_role(role)
            .send(StageCommand::Inject(fault))
            .unwrap();
        let (tx, rx) = tokio::sync::mpsc::channel(1000);
        let clips = librivox();
        for (clip, _) in &clips[..2] {
            let audio = swictation::io::audio::load(clip).unwrap().samples;
            for chunk in audio.chunks(1600) {
                tx.send(chunk.to_vec()).await.unwrap();
            }
            tx.send(vec![0.0; 16000]).await.unwrap();
        }
        drop(tx);
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = got.clone();
        let report = tokio::time::timeout(
            Duration::from_secs(180),
            pipeline.run(rx, move |s| sink.lock().unwrap().push(s), Some(receivers)),
        )
        .await
        .expect("pipeline finished in time")
        .expect("pipeline ran");
        let texts = got.lock().unwrap().clone();
        (texts, report, board.snapshot())
    })
}

fn check(role: Role, fault: Fault, class_key: &str, class_text: &str) {
    let (texts, report, status) = run_with_fault(role, fault);
    // Classified, counted, explained.
    let w = status
        .workers
        .iter()
        .find(|w| w.role == role.as_str())
        .expect("worker in status");
    assert_eq!(
        w.restarts.get(class_key),
        Some(&1),
        "{fault:?}: restarts {:?}",
        w.restarts
    );
    let last = w.last_failure.as_ref().expect("last failure recorded");
    assert!(
        last.class.starts_with(class_text),
        "{fault:?}: class {:?}",
        last.class
    );
    // Restarted and proven ready again.
    let stats = match role {
        Role::Vad => &report.vad,
        Role::Asr => &report.asr,
    };
    assert_eq!(stats.recoveries.len(), 1, "{fault:?}: one recovery");
    assert_eq!(
        stats.startups.len(),
        2,
        "{fault:?}: started twice (initial + restart)"
    );
    // Nothing lost, in order, exactly once, and right.
    assert_eq!(
        report.delivered, report.segments_in,
        "{fault:?}: {report:?}"
    );
    assert!(report.quarantined.is_empty());
    let indices: Vec<u64> = texts.iter().map(|t| t.index).collect();
    assert!(indices.windows(2).all(|p| p[0] < p[1]), "{indices:?}");
    let clips = librivox();
    let reference = format!("{} {}", clips[0].1, clips[1].1);
    let hyp: Vec<&str> = texts.iter().map(|t| t.text.as_str()).collect();
    let (errors, words) = wer::word_errors(&reference, &hyp.join(" "));
    assert!(
        errors * 10 <= words,
        "{fault:?}: {errors}/{words} errors in {hyp:?}"
    );
}

#[test]
fn crash_by_signal_is_classified_and_recovered() {
    check(Role::Asr, Fault::Segfault, "crash", "crash (SIGSEGV)");
    check(Role::Vad, Fault::Abort, "crash", "crash (SIGABRT)");
}

#[test]
fn exit_code_is_classified_and_recovered() {
    check(Role::Vad, Fault::Exit(42), "exit", "exit (42)");
}

#[test]
fn cuda_fault_is_classified_and_recovered() {
    check(Role::Asr, Fault::CudaFault, "cuda_fault", "cuda_fault");
}

#[test]
fn out_of_memory_is_classified_and_recovered() {
    check(Role::Asr, Fault::GrowMemory(4096), "oom", "oom");
}

#[test]
fn hang_is_detected_by_deadline_and_recovered() {
    check(Role::Vad, Fault::Hang, "hang", "hang");
}

#[test]
fn protocol_violation_is_classified_and_recovered() {
    check(Role::Asr, Fault::Garbage, "protocol", "protocol");
}
