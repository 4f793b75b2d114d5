//! `swictation-vad-worker`: Silero VAD in its own process, serving the supervisor's requests.

use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use swictation_proto::{ComponentPlacement, Device, ErrorKind, Reply, Request, Role};
use swictation_vad_worker::{Silero, MODEL_NAME};
use swictation_worker_kit::{error, inference_error, parse_device, CommonArgs, Handler, Loaded};

/// Silero VAD worker (started by the swictation supervisor).
#[derive(Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Path to silero_vad.onnx.
    #[arg(long, value_name = "PATH")]
    model: Option<PathBuf>,
    /// Execution provider: cpu, cuda or cuda:N (never silently replaced by another).
    #[arg(long, default_value = "cpu", value_parser = parse_device)]
    device: Device,
    /// Measure per-frame inference in this process over a raw s16le 16 kHz file and print JSON
    /// (used by `swictation bench`), instead of serving.
    #[arg(long, value_name = "RAW")]
    bench: Option<PathBuf>,
    /// Frames to time in --bench mode.
    #[arg(long, default_value_t = 2000)]
    bench_frames: usize,
}

struct Vad(Silero);

impl Handler for Vad {
    fn handle(&mut self, request: Request) -> Reply {
        match request {
            Request::VadFrames { id, samples } => {
                let t = Instant::now();
                match self.0.frames(&samples) {
                    Ok(probs) => Reply::VadProbs {
                        id,
                        probs,
                        micros: t.elapsed().as_micros() as u64,
                    },
                    Err(e) if e.starts_with("VAD input must be") => {
                        error(Some(id), ErrorKind::BadRequest, e)
                    }
                    Err(e) => inference_error(id, e),
                }
            }
            Request::VadReset { id } => {
                self.0.reset();
                Reply::Done { id }
            }
            other => error(
                other.id(),
                ErrorKind::BadRequest,
                "the VAD worker does not transcribe".into(),
            ),
        }
    }
}

fn main() {
    let args = Args::parse();
    let model = args.model.clone().unwrap_or_else(|| {
        swictation_worker_kit::data_dir().join("models/silero-vad/silero_vad.onnx")
    });
    if let Some(raw) = &args.bench {
        std::process::exit(match bench(&args, &model, raw) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("swictation-vad-worker: bench: {e:#}");
                1
            }
        });
    }
    swictation_worker_kit::worker_main(Role::Vad, &args.common, |rt| {
        let silero = Silero::load(rt, &model, args.device)?;
        Ok(Loaded {
            placement: vec![ComponentPlacement {
                component: "vad".into(),
                device: silero.device(),
            }],
            handler: Box::new(Vad(silero)),
            model: MODEL_NAME.into(),
        })
    })
}

/// In-process timing of single frames, for comparison with the same frames through the socket.
fn bench(args: &Args, model: &std::path::Path, raw: &std::path::Path) -> anyhow::Result<()> {
    let rt = swictation_worker_kit::Runtime::load(&args.common.ort_lib(), args.common.threads)?;
    let t = Instant::now();
    let mut silero = Silero::load(&rt, model, args.device)?;
    let load_ms = t.elapsed().as_secs_f64() * 1e3;
    let bytes = std::fs::read(raw)?;
    let audio: Vec<f32> = bytes
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]) as f32 / 32768.0)
        .collect();
    anyhow::ensure!(
        audio.len() >= swictation_proto::VAD_FRAME,
        "{} is too short",
        raw.display()
    );
    let frames: Vec<&[f32]> = audio.chunks_exact(swictation_proto::VAD_FRAME).collect();
    let mut times = Vec::with_capacity(args.bench_frames);
    for i in 0..args.bench_frames {
        let t = Instant::now();
        silero
            .frame(frames[i % frames.len()])
            .map_err(anyhow::Error::msg)?;
        times.push(t.elapsed().as_secs_f64() * 1e6);
    }
    times.sort_by(f64::total_cmp);
    let mean = times.iter().sum::<f64>() / times.len().max(1) as f64;
    let p = |q: f64| {
        times
            .get(((times.len() as f64 - 1.0) * q) as usize)
            .copied()
            .unwrap_or(0.0)
    };
    println!(
        "{{\"frames\":{},\"mean_us\":{mean:.2},\"p50_us\":{:.2},\"p95_us\":{:.2},\"load_ms\":{load_ms:.1},\"device\":\"{}\"}}",
        times.len(), p(0.5), p(0.95), silero.device()
    );
    Ok(())
}
