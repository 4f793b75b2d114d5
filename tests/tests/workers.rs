//! The real worker binaries, driven over their socket by a test acting as the supervisor.

use std::time::Duration;

use swictation_e2e::proto::{codec, exit_code, Device, ErrorKind, Reply, Request, Role, VAD_FRAME};
use swictation_e2e::*;

fn hello(w: &mut FakeSupervisor) -> swictation_e2e::proto::Hello {
    match w.recv().expect("handshake") {
        Reply::Hello(h) => h,
        other => panic!("expected a handshake, got {other:?}"),
    }
}

#[test]
fn vad_worker_reports_its_provider_and_tells_speech_from_silence() {
    let mut w = FakeSupervisor::start("swictation-vad-worker", &["--device", "cpu"]);
    let h = hello(&mut w);
    assert_eq!(h.role, Role::Vad);
    assert_eq!(h.protocol, swictation_e2e::proto::PROTOCOL_VERSION);
    assert_eq!(h.placement.len(), 1);
    assert_eq!(h.placement[0].device, Device::Cpu);
    assert!(h.runtime.starts_with("1.3"), "runtime {}", h.runtime);

    // A second of digital silence, then "go forward ten meters".
    let mut samples = vec![0.0f32; VAD_FRAME * 31];
    let speech = read_raw(&speech().join("goforward.raw"));
    samples.extend_from_slice(&speech[..speech.len() / VAD_FRAME * VAD_FRAME]);
    w.send(&Request::VadFrames { id: 1, samples });
    let probs = match w.recv().unwrap() {
        Reply::VadProbs { id: 1, probs, .. } => probs,
        other => panic!("{other:?}"),
    };
    let silence_max = probs[..31].iter().cloned().fold(0.0f32, f32::max);
    let speech_max = probs[31..].iter().cloned().fold(0.0f32, f32::max);
    assert!(silence_max < 0.1, "silence scored {silence_max}");
    assert!(speech_max > 0.8, "speech scored only {speech_max}");

    // Not a whole number of frames: a clear error, and the worker stays usable.
    w.send(&Request::VadFrames {
        id: 2,
        samples: vec![0.0; 100],
    });
    match w.recv().unwrap() {
        Reply::Error(e) => {
            assert_eq!(e.kind, ErrorKind::BadRequest);
            assert!(e.message.contains("512"), "{}", e.message);
        }
        other => panic!("{other:?}"),
    }
    w.send(&Request::VadReset { id: 3 });
    assert_eq!(w.recv().unwrap(), Reply::Done { id: 3 });
    w.send(&Request::Shutdown);
    assert_eq!(w.recv().unwrap(), Reply::Bye);
    assert_eq!(w.wait_exit(Duration::from_secs(5)), Some(0));
}

#[test]
fn asr_worker_reports_where_each_part_runs_and_transcribes() {
    let mut w = FakeSupervisor::start(
        "swictation-asr-worker",
        &["--device", "cpu", "--threads", "2"],
    );
    let h = hello(&mut w);
    assert_eq!(h.role, Role::Asr);
    assert_eq!(h.model, "moonshine-base-en");
    let parts: Vec<(&str, Device)> = h
        .placement
        .iter()
        .map(|c| (c.component.as_str(), c.device))
        .collect();
    assert_eq!(
        parts,
        vec![("encoder", Device::Cpu), ("decoder", Device::Cpu)]
    );
    let samples = read_raw(&speech().join("goforward.raw"));
    w.send(&Request::Transcribe {
        id: 5,
        segment: 0,
        samples,
    });
    match w.recv().unwrap() {
        Reply::Transcript {
            id: 5,
            segment: 0,
            text,
            ..
        } => {
            let (errors, _) = wer::word_errors("go forward ten meters", &text);
            assert_eq!(errors, 0, "transcript {text:?}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn malformed_frame_gets_an_error_reply_and_the_worker_stays_usable() {
    let mut w = FakeSupervisor::start("swictation-vad-worker", &[]);
    hello(&mut w);
    let mut garbage = 5u32.to_le_bytes().to_vec();
    garbage.extend_from_slice(&[0xee, 0xff, 0xff, 0xff, 0xff]);
    w.send_raw(&garbage);
    match w.recv().unwrap() {
        Reply::Error(e) => assert_eq!(e.kind, ErrorKind::Protocol, "{}", e.message),
        other => panic!("expected a protocol error, got {other:?}"),
    }
    w.send(&Request::Ping { id: 77 });
    assert_eq!(w.recv().unwrap(), Reply::Pong { id: 77 });
}

#[test]
fn oversized_frame_closes_the_connection_and_the_worker_exits_cleanly() {
    let mut w = FakeSupervisor::start("swictation-vad-worker", &[]);
    hello(&mut w);
    // Announce 4 GiB: the worker must refuse without trying to allocate it.
    w.send_raw(&u32::MAX.to_le_bytes());
    match w.recv() {
        Ok(Reply::Error(e)) => {
            assert_eq!(e.kind, ErrorKind::Protocol);
            assert!(e.message.contains("exceeds"), "{}", e.message);
        }
        Ok(other) => panic!("{other:?}"),
        Err(codec::CodecError::Closed) => {}
        Err(e) => panic!("{e}"),
    }
    assert_eq!(
        w.wait_exit(Duration::from_secs(5)),
        Some(exit_code::PROTOCOL)
    );
}

#[test]
fn fault_injection_is_refused_unless_enabled() {
    let mut w = FakeSupervisor::start("swictation-vad-worker", &[]);
    hello(&mut w);
    w.send(&Request::InjectFault {
        id: 1,
        fault: swictation_e2e::proto::Fault::Abort,
    });
    match w.recv().unwrap() {
        Reply::Error(e) => assert!(e.message.contains("--allow-faults"), "{}", e.message),
        other => panic!("{other:?}"),
    }
    w.send(&Request::Ping { id: 2 });
    assert_eq!(w.recv().unwrap(), Reply::Pong { id: 2 });
}

#[test]
fn missing_model_is_reported_over_the_socket_naming_the_path() {
    let mut w = FakeSupervisor::start(
        "swictation-vad-worker",
        &["--model", "/nonexistent/silero_vad.onnx"],
    );
    match w.recv().unwrap() {
        Reply::Error(e) => {
            assert_eq!(e.kind, ErrorKind::Load);
            assert!(
                e.message.contains("/nonexistent/silero_vad.onnx"),
                "{}",
                e.message
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(w.wait_exit(Duration::from_secs(5)), Some(exit_code::MODEL));
}

#[test]
fn cuda_request_without_a_cuda_runtime_fails_loudly_instead_of_running_on_cpu() {
    let mut w = FakeSupervisor::start("swictation-vad-worker", &["--device", "cuda:0"]);
    match w.recv().unwrap() {
        Reply::Error(e) => assert!(e.message.contains("cuda:0"), "{}", e.message),
        Reply::Hello(h) => assert_eq!(
            h.placement[0].device,
            Device::Cuda(0),
            "asked for CUDA, got {h:?}"
        ),
        other => panic!("{other:?}"),
    }
}
