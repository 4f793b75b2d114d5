//! The dictation pipeline: audio → VAD worker → segmenter → ASR worker → transcripts in order.
//!
//! Stages are tasks joined by channels; each stage owns its worker, so a slow transcription
//! never blocks capture or segmentation, and control never waits on a worker.

use anyhow::{Context, Result};
use serde::Serialize;
use swictation_proto::{ComponentPlacement, SAMPLE_RATE, VAD_FRAME};

use crate::io::launch::LaunchConfig;
use crate::io::worker::Worker;
use swictation_policy::segmenter::{Segment, Segmenter, SegmenterConfig};

/// Frames per VAD request when the audio is already all there (a file): ~1 s.
const FILE_BATCH_FRAMES: usize = 32;

/// Both workers, started and ready.
pub struct Engine {
    /// The VAD worker.
    pub vad: Worker,
    /// The ASR worker.
    pub asr: Worker,
}

impl Engine {
    /// Start both workers at once and wait for both handshakes.
    pub async fn start(cfg: &LaunchConfig) -> Result<Self> {
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
#[derive(Clone, Serialize)]
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
    /// Its journal entry, retired once the text has been delivered.
    #[serde(skip)]
    pub journal: Option<String>,
    /// Recorded by an earlier run of the daemon and replayed from the journal.
    #[serde(skip)]
    pub recovered: bool,
}

/// Never the text (privacy: no transcript in Debug output).
impl std::fmt::Debug for SegmentText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentText")
            .field("index", &self.index)
            .field("start", &self.start)
            .field("end", &self.end)
            .field("characters", &self.text.chars().count())
            .field("journal", &self.journal)
            .field("recovered", &self.recovered)
            .finish()
    }
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
            journal: None,
            recovered: false,
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
