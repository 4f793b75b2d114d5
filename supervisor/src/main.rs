//! `swictation`: the supervisor binary. Argument parsing and wiring only; the work is in the
//! library's modules.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use swictation::pipeline::{self, describe_placement, Engine, EngineConfig};
use swictation::segmenter::SegmenterConfig;
use swictation::stages::{Pipeline, PipelineConfig};
use swictation::supervised::Board;
use swictation::{audio, bench};
use swictation_proto::Device;
use tokio::sync::{mpsc, watch};

/// Hands-free voice dictation: Silero VAD and Moonshine speech recognition, each in its own
/// supervised process.
#[derive(Parser)]
#[command(version, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    engine: EngineArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct EngineArgs {
    /// Directory holding swictation-vad-worker and swictation-asr-worker (default: beside this binary).
    #[arg(long, global = true, value_name = "DIR", env = "SWICTATION_WORKERS_DIR")]
    workers_dir: Option<PathBuf>,
    /// ONNX Runtime shared library (default: the one deploy/setup.sh installs).
    #[arg(long, global = true, value_name = "PATH", env = "SWICTATION_ORT_LIB")]
    ort_lib: Option<PathBuf>,
    /// Directory holding the models (default: $XDG_DATA_HOME/swictation/models).
    #[arg(long, global = true, value_name = "DIR")]
    models: Option<PathBuf>,
    /// Speech model: base, tiny, or a directory with encoder_model.ort, decoder_model_merged.ort, tokenizer.bin.
    #[arg(long, global = true, default_value = "base")]
    model: String,
    /// Where the VAD runs: cpu, cuda or cuda:N.
    #[arg(long, global = true, default_value = "cpu")]
    vad_device: Device,
    /// Where the speech model runs (both parts): cpu, cuda or cuda:N.
    #[arg(long, global = true, default_value = "cpu")]
    asr_device: Device,
    /// Where the speech model's encoder runs (overrides --asr-device).
    #[arg(long, global = true)]
    encoder_device: Option<Device>,
    /// Where the speech model's decoder runs (overrides --asr-device).
    #[arg(long, global = true)]
    decoder_device: Option<Device>,
    /// Threads for the speech model.
    #[arg(long, global = true, default_value_t = 2)]
    asr_threads: usize,
    /// Let workers honour fault-injection requests (for tests).
    #[arg(long, global = true, hide = true)]
    allow_faults: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Transcribe recordings (WAV of any common format, or raw s16le 16 kHz mono `.raw`): one line per file.
    Transcribe {
        /// One JSON object per file with its segments and the devices and models that ran them.
        #[arg(long)]
        json: bool,
        /// Files to transcribe.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Run the dictation loop, printing each transcript as it is finalised.
    Run {
        /// Recording(s) to dictate from, played back to back at real-time pace.
        #[arg(long, required = true, num_args = 1..)]
        input: Vec<PathBuf>,
        /// Feed the recording as fast as the pipeline takes it instead of in real time.
        #[arg(long)]
        fast: bool,
    },
    /// Measure per-frame VAD time in-process vs. through the worker socket, ASR real-time
    /// factors and model load times, and print a table.
    Bench {
        /// Directory with the LibriVox clips (default: the installed speech data).
        #[arg(long, value_name = "DIR")]
        clips: Option<PathBuf>,
        /// VAD frames to time each way.
        #[arg(long, default_value_t = 2000)]
        frames: usize,
    },
}

impl EngineArgs {
    fn models_dir(&self) -> PathBuf {
        self.models.clone().unwrap_or_else(swictation_proto::paths::models_dir)
    }

    fn config(&self) -> EngineConfig {
        let models = self.models_dir();
        let asr_model = match self.model.as_str() {
            "base" => models.join("moonshine-base-en"),
            "tiny" => models.join("moonshine-tiny-en"),
            dir => PathBuf::from(dir),
        };
        EngineConfig {
            workers_dir: self.workers_dir.clone(),
            ort_lib: self.ort_lib.clone(),
            vad_model: Some(models.join("silero-vad/silero_vad.onnx")),
            asr_model: Some(asr_model),
            vad_device: self.vad_device,
            asr_encoder: self.encoder_device.unwrap_or(self.asr_device),
            asr_decoder: self.decoder_device.unwrap_or(self.asr_device),
            asr_threads: self.asr_threads,
            allow_faults: self.allow_faults,
            load_timeout: Duration::from_secs(60),
        }
    }
}

fn main() {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = runtime.block_on(async {
        let cfg = cli.engine.config();
        match cli.command {
            Command::Transcribe { json, files } => transcribe(&cfg, json, &files).await,
            Command::Run { input, fast } => run(&cfg, &input, fast).await,
            Command::Bench { clips, frames } => bench::run(&cfg, clips, frames).await,
        }
    });
    if let Err(e) = result {
        swictation::log_error!("{e:#}");
        std::process::exit(1);
    }
}

async fn transcribe(cfg: &EngineConfig, json: bool, files: &[PathBuf]) -> Result<()> {
    // Read every file first: a bad file is reported before any model is loaded.
    let mut recordings = Vec::with_capacity(files.len());
    for f in files {
        recordings.push(audio::load(f)?);
    }
    let seg_cfg = SegmenterConfig::default();
    let mut engine = Engine::start(cfg).await?;
    let mut stdout = std::io::stdout().lock();
    let mut result = Ok(());
    for (file, rec) in files.iter().zip(&recordings) {
        let segments = match pipeline::transcribe_recording(&mut engine, &seg_cfg, &rec.samples).await {
            Ok(s) => s,
            Err(e) => {
                result = Err(e.context(format!("transcribing {}", file.display())));
                break;
            }
        };
        let text = pipeline::join_text(&segments);
        if json {
            let obj = serde_json::json!({
                "file": file,
                "text": text,
                "duration": rec.samples.len() as f64 / audio::RATE as f64,
                "segments": segments,
                "asr": {
                    "model": engine.asr.hello().model,
                    "device": describe_placement(&engine.asr.hello().placement),
                    "placement": engine.asr.hello().placement.iter()
                        .map(|c| serde_json::json!({"component": c.component, "device": c.device.to_string()}))
                        .collect::<Vec<_>>(),
                },
                "vad": {
                    "model": engine.vad.hello().model,
                    "device": describe_placement(&engine.vad.hello().placement),
                },
            });
            writeln!(stdout, "{obj}")?;
        } else {
            writeln!(stdout, "{text}")?;
        }
        stdout.flush()?;
    }
    engine.shutdown().await;
    result
}

async fn run(cfg: &EngineConfig, inputs: &[PathBuf], fast: bool) -> Result<()> {
    let mut samples = Vec::new();
    for (i, f) in inputs.iter().enumerate() {
        if i > 0 {
            // A second of silence between recordings so each ends as its own utterance.
            samples.extend(std::iter::repeat_n(0.0f32, audio::RATE as usize));
        }
        samples.extend(audio::load(f)?.samples);
    }
    // Trailing silence lets the last utterance close naturally, as it would when the user stops.
    samples.extend(std::iter::repeat_n(0.0f32, audio::RATE as usize));

    let board = Board::new();
    let mut pipeline = Pipeline::new(PipelineConfig::new(cfg.clone(), SegmenterConfig::default()), board.clone());
    pipeline.start().await;
    board.update(|s| s.state = swictation::status::DaemonState::Listening);
    let (stop_tx, stop_rx) = watch::channel(false);
    // At least 30 s of 100 ms chunks: audio keeps arriving while a worker restarts.
    let (audio_tx, audio_rx) = mpsc::channel::<Vec<f32>>(400);
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        swictation::log_info!("stopping: finishing the speech already captured");
        let _ = stop_tx.send(true);
    });
    let source = tokio::spawn(pipeline::play(samples, audio::RATE as usize / 10, !fast, audio_tx, stop_rx));
    let report = pipeline
        .run(
            audio_rx,
            |s| {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{}", s.text);
                let _ = out.flush();
            },
            None,
        )
        .await?;
    if !report.quarantined.is_empty() {
        swictation::log_warn!("{} segment(s) quarantined under {}", report.quarantined.len(), swictation::stages::state_dir().join("quarantine").display());
    }
    source.await.context("audio source")?;
    Ok(())
}
