//! The dictation pipeline: audio → VAD worker → segmenter → ASR worker → transcripts in order.
//!
//! Stages are tasks joined by channels; each stage owns its worker, so a slow transcription
//! never blocks capture or segmentation, and control never waits on a worker.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;
use swictation_proto::{ComponentPlacement, Device, Role, SAMPLE_RATE, VAD_FRAME};
use tokio::sync::{mpsc, watch};

use crate::placement::{ModelSize, Placement};
use crate::segmenter::{Segment, Segmenter, SegmenterConfig};
use crate::worker::{worker_program, Worker, WorkerCommand};

/// Frames per VAD request when the audio is already all there (a file): ~1 s.
const FILE_BATCH_FRAMES: usize = 32;

/// How to start the workers.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Directory holding the worker binaries (default: beside this executable).
    pub workers_dir: Option<PathBuf>,
    /// ONNX Runtime library passed to the workers (default: theirs).
    pub ort_lib: Option<PathBuf>,
    /// Silero model file (default: the installed one).
    pub vad_model: Option<PathBuf>,
    /// Moonshine model directory (default: the installed base-en).
    pub asr_model: Option<PathBuf>,
    /// Where the VAD runs.
    pub vad_device: Device,
    /// Where the ASR encoder runs.
    pub asr_encoder: Device,
    /// Where the ASR decoder runs.
    pub asr_decoder: Device,
    /// Intra-op threads for the ASR worker (0: [`crate::config::asr_threads`] decides).
    pub asr_threads: usize,
    /// Let workers honour fault injection (tests only).
    pub allow_faults: bool,
    /// Longest a worker may take from spawn to handshake.
    pub load_timeout: Duration,
    /// Address-space cap for each worker, MiB (none by default).
    pub memory_limit_mb: Option<u64>,
    /// Longest window the ASR worker transcribes at once, seconds (0 = no windowing).
    pub context_s: f32,
    /// Moonshine tiny-en directory, for placements that step down to it (default: the installed
    /// one).
    pub tiny_model: Option<PathBuf>,
    /// GPU readings are scripted (a test option): placements on a GPU are carried out on the CPU,
    /// so the policy can be exercised end to end on a machine without one. Status says so.
    pub simulate_gpu: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            workers_dir: None,
            ort_lib: None,
            vad_model: None,
            asr_model: None,
            vad_device: Device::Cpu,
            asr_encoder: Device::Cpu,
            asr_decoder: Device::Cpu,
            asr_threads: 0,
            allow_faults: false,
            load_timeout: Duration::from_secs(60),
            memory_limit_mb: None,
            context_s: 10.0,
            tiny_model: None,
            simulate_gpu: false,
        }
    }
}

impl EngineConfig {
    fn common(&self, args: &mut Vec<OsString>) {
        if let Some(lib) = &self.ort_lib {
            args.extend(["--ort-lib".into(), lib.into()]);
        }
        if self.allow_faults {
            args.push("--allow-faults".into());
        }
        if let Some(mib) = self.memory_limit_mb {
            args.extend(["--memory-limit-mb".into(), mib.to_string().into()]);
        }
    }

    /// The device a worker is really started on: `d`, or the CPU when GPU placements are
    /// simulated.
    fn real(&self, d: Device) -> Device {
        if self.simulate_gpu {
            Device::Cpu
        } else {
            d
        }
    }

    /// Command line of the VAD worker on the configured device.
    pub fn vad_command(&self) -> WorkerCommand {
        self.vad_command_at(self.vad_device)
    }

    /// Command line of the VAD worker on `device`.
    pub fn vad_command_at(&self, device: Device) -> WorkerCommand {
        let mut args: Vec<OsString> = vec!["--device".into(), self.real(device).to_string().into()];
        if let Some(m) = &self.vad_model {
            args.extend(["--model".into(), m.into()]);
        }
        self.common(&mut args);
        WorkerCommand {
            role: Role::Vad,
            program: worker_program(self.workers_dir.as_deref(), Role::Vad),
            args,
        }
    }

    /// Command line of the ASR worker on the configured devices.
    pub fn asr_command(&self) -> WorkerCommand {
        self.asr_command_with(
            self.asr_encoder,
            self.asr_decoder,
            self.asr_model.clone(),
            self.context_s,
        )
    }

    /// Command line of the ASR worker at placement `p` (base is the configured model, tiny the
    /// installed tiny-en).
    pub fn asr_command_at(&self, p: &Placement) -> WorkerCommand {
        let model = match p.model {
            ModelSize::Base => self.asr_model.clone(),
            ModelSize::Tiny => Some(self.tiny_model.clone().unwrap_or_else(|| {
                swictation_proto::paths::models_dir().join("moonshine-tiny-en")
            })),
        };
        self.asr_command_with(p.encoder, p.decoder, model, p.context_s)
    }

    fn asr_command_with(
        &self,
        encoder: Device,
        decoder: Device,
        model: Option<PathBuf>,
        context_s: f32,
    ) -> WorkerCommand {
        let mut args: Vec<OsString> = vec![
            "--encoder-device".into(),
            self.real(encoder).to_string().into(),
            "--decoder-device".into(),
            self.real(decoder).to_string().into(),
            "--threads".into(),
            crate::config::asr_threads(self.asr_threads)
                .to_string()
                .into(),
            "--context-s".into(),
            context_s.to_string().into(),
        ];
        if let Some(m) = &model {
            args.extend(["--model".into(), m.into()]);
        }
        self.common(&mut args);
        WorkerCommand {
            role: Role::Asr,
            program: worker_program(self.workers_dir.as_deref(), Role::Asr),
            args,
        }
    }
}

/// Both workers, started and ready.
pub struct Engine {
    /// The VAD worker.
    pub vad: Worker,
    /// The ASR worker.
    pub asr: Worker,
}

impl Engine {
    /// Start both workers at once and wait for both handshakes.
    pub async fn start(cfg: &EngineConfig) -> Result<Self> {
        let (vad_cmd, asr_cmd) = (cfg.vad_command(), cfg.asr_command());
        let (vad, asr) = tokio::join!(
            Worker::spawn(&vad_cmd, cfg.load_timeout),
            Worker::spawn(&asr_cmd, cfg.load_timeout)
        );
        // A worker that did start is killed on drop if its peer failed.
        let vad = vad.context("starting the VAD worker")?;
        let asr = asr.context("starting the ASR worker")?;
        for w in [&vad, &asr] {
            let h = w.hello();
            crate::log_info!(
                "{} worker ready: pid {}, {} on {}, ONNX Runtime {}, loaded in {} ms",
                h.role,
                h.pid,
                h.model,
                describe_placement(&h.placement),
                h.runtime,
                h.load_ms
            );
        }
        Ok(Self { vad, asr })
    }

    /// Stop both workers.
    pub async fn shutdown(self) {
        tokio::join!(self.vad.shutdown(), self.asr.shutdown());
    }
}

/// `encoder cuda:0, decoder cpu` or `cpu`.
pub fn describe_placement(p: &[ComponentPlacement]) -> String {
    let first = p.first().map(|c| c.device);
    if p.iter().all(|c| Some(c.device) == first) {
        return first.map(|d| d.to_string()).unwrap_or_else(|| "?".into());
    }
    p.iter()
        .map(|c| format!("{} {}", c.component, c.device))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A transcribed segment of a recording.
#[derive(Debug, Clone, Serialize)]
pub struct SegmentText {
    /// Position in the stream.
    pub index: u64,
    /// Start, seconds from the beginning of the recording.
    pub start: f64,
    /// End, seconds.
    pub end: f64,
    /// Where speech was detected, without the padding (seconds).
    pub speech_start: f64,
    /// Where the last detected speech ended, without the padding (seconds).
    pub speech_end: f64,
    /// What was said.
    pub text: String,
}

impl SegmentText {
    /// The text of segment `s`.
    pub fn new(s: &Segment, text: String) -> Self {
        let secs = |n: u64| n as f64 / SAMPLE_RATE as f64;
        Self {
            index: s.index,
            start: secs(s.start),
            end: secs(s.end),
            speech_start: secs(s.speech_start),
            speech_end: secs(s.speech_end),
            text,
        }
    }
}

/// Segment a whole recording through the VAD worker.
pub async fn segment_recording(
    vad: &mut Worker,
    cfg: &SegmenterConfig,
    samples: &[f32],
) -> Result<Vec<Segment>> {
    vad.vad_reset().await?;
    let mut seg = Segmenter::new(cfg.clone());
    let mut out = Vec::new();
    let batch = VAD_FRAME * FILE_BATCH_FRAMES;
    for chunk in samples.chunks(batch) {
        let mut padded = chunk.to_vec();
        padded.resize(chunk.len().div_ceil(VAD_FRAME) * VAD_FRAME, 0.0);
        let (probs, _) = vad.vad_frames(padded.clone()).await?;
        for (frame, p) in padded.chunks_exact(VAD_FRAME).zip(probs) {
            out.extend(seg.push(frame, p));
        }
    }
    out.extend(seg.finish());
    Ok(out)
}

/// Transcribe a whole recording: segment it, then transcribe each segment in order.
pub async fn transcribe_recording(
    engine: &mut Engine,
    cfg: &SegmenterConfig,
    samples: &[f32],
) -> Result<Vec<SegmentText>> {
    let mut segments = segment_recording(&mut engine.vad, cfg, samples).await?;
    // The last VAD frame is zero-padded; no segment reaches past the real recording.
    let len = samples.len() as u64;
    for s in &mut segments {
        s.end = s.end.min(len);
        s.speech_end = s.speech_end.min(len);
        s.samples.truncate((s.end - s.start.min(s.end)) as usize);
    }
    let mut out = Vec::with_capacity(segments.len());
    for s in segments {
        let (text, _) = engine.asr.transcribe(s.index, s.samples.clone()).await?;
        out.push(SegmentText::new(&s, text));
    }
    Ok(out)
}

/// Join segment texts into one line.
pub fn join_text(segments: &[SegmentText]) -> String {
    segments
        .iter()
        .map(|s| s.text.trim())
        .filter(|t| !t.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Feed `samples` into `tx` in chunks of `chunk` samples at real-time pace (or as fast as the
/// receiver takes them when `paced` is false), stopping early when `stop` is raised.
pub async fn play(
    samples: Vec<f32>,
    chunk: usize,
    paced: bool,
    tx: mpsc::Sender<Vec<f32>>,
    mut stop: watch::Receiver<bool>,
) {
    let period = Duration::from_secs_f64(chunk as f64 / SAMPLE_RATE as f64);
    let mut tick = tokio::time::interval(period);
    for part in samples.chunks(chunk) {
        if paced {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
        }
        if *stop.borrow() || tx.send(part.to_vec()).await.is_err() {
            return;
        }
    }
}
