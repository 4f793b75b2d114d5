//! `swictation-asr-worker`: Moonshine speech recognition in its own process, serving the
//! supervisor's requests.

use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use swictation_asr_worker::files::ModelFiles;
use swictation_asr_worker::prepare::{self, Clip};
use swictation_asr_worker::{Moonshine, SpeechModel, Windowed};
use swictation_proto::{Device, ErrorKind, Reply, Request, Role};
use swictation_worker_kit::{error, parse_device, CommonArgs, Handler, Loaded};

/// Moonshine ASR worker (started by the swictation supervisor).
#[derive(Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Model directory holding encoder_model.ort, decoder_model_merged.ort and tokenizer.bin.
    #[arg(long, value_name = "DIR")]
    model: Option<PathBuf>,
    /// Execution provider for both parts: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu", value_parser = parse_device)]
    device: Device,
    /// Execution provider for the encoder only (overrides --device).
    #[arg(long, value_parser = parse_device)]
    encoder_device: Option<Device>,
    /// Execution provider for the decoder only (overrides --device).
    #[arg(long, value_parser = parse_device)]
    decoder_device: Option<Device>,
    /// Longest window transcribed at once, seconds: longer segments are split into overlapping
    /// windows whose texts are merged (0 = no windowing; values below 2 count as 2).
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = swictation_asr_worker::window::DEFAULT_CONTEXT_S,
        value_parser = parse_context
    )]
    context_s: f32,
    /// Prepare the model directories given (or --model's) for fast loading and running, check
    /// them on --clip files, and exit (set-up runs this; see swictation_asr_worker::prepare).
    #[arg(long)]
    prepare: bool,
    /// With --prepare: prepare again even where valid prepared files exist.
    #[arg(long, requires = "prepare")]
    force: bool,
    /// Ignore prepared files and load the shipped ones.
    #[arg(long)]
    shipped: bool,
    /// Speech clips (16 kHz mono 16-bit WAV or raw s16le): checked by --prepare, timed by
    /// --bench.
    #[arg(long = "clip", value_name = "FILE")]
    clips: Vec<PathBuf>,
    /// Time the shipped against the prepared files in this process on the --clip files,
    /// alternating, and print JSON.
    #[arg(long)]
    bench: bool,
    /// With --bench: runs over the clips per variant.
    #[arg(long, default_value_t = 2)]
    bench_rounds: usize,
    /// Model directories for --prepare.
    #[arg(value_name = "DIR", requires = "prepare")]
    dirs: Vec<PathBuf>,
}

/// A context length: a finite number of seconds, not negative.
fn parse_context(s: &str) -> Result<f32, String> {
    match s.parse::<f32>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("{s:?} is not a number of seconds >= 0")),
    }
}

struct Asr(Box<dyn SpeechModel>);

impl Handler for Asr {
    fn handle(&mut self, request: Request) -> Reply {
        match request {
            Request::Transcribe {
                id,
                segment,
                samples,
            } => {
                let t = Instant::now();
                match self.0.transcribe(&samples) {
                    Ok(tr) => Reply::Transcript {
                        id,
                        segment,
                        text: tr.text,
                        tokens: tr.tokens,
                        micros: t.elapsed().as_micros() as u64,
                    },
                    Err(e) => error(Some(id), e.kind, e.message),
                }
            }
            other => error(
                other.id(),
                ErrorKind::BadRequest,
                "the ASR worker does not run VAD".into(),
            ),
        }
    }
}

fn main() {
    let args = Args::parse();
    let dir = args
        .model
        .clone()
        .unwrap_or_else(|| swictation_worker_kit::data_dir().join("models/moonshine-base-en"));
    let encoder = args.encoder_device.unwrap_or(args.device);
    let decoder = args.decoder_device.unwrap_or(args.device);
    let context_s = args.context_s;
    if args.prepare || args.bench {
        let code = match offline(&args, &dir) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("swictation-asr-worker: {e}");
                1
            }
        };
        std::process::exit(code);
    }
    let shipped = args.shipped;
    swictation_worker_kit::worker_main(Role::Asr, &args.common, |rt| {
        let moonshine = if shipped {
            Moonshine::load_files(rt, &ModelFiles::shipped(&dir), encoder, decoder)?
        } else {
            let (m, notice) = Moonshine::load(rt, &dir, encoder, decoder)?;
            if let Some(why) = notice {
                // The supervisor logs `notice:` lines once (see its worker module).
                eprintln!(
                    "notice: {why}: using the shipped model files, whose decoder is about 4x slower; run deploy/setup.sh after building (or swictation-asr-worker --prepare {}) to prepare them",
                    dir.display()
                );
            }
            m
        };
        let model = Windowed::new(moonshine, context_s);
        Ok(Loaded {
            model: model.name().to_string(),
            placement: model.placement(),
            handler: Box::new(Asr(Box::new(model))),
        })
    })
}

/// `--prepare` and `--bench`: work without a supervisor, on the CPU.
fn offline(args: &Args, dir: &std::path::Path) -> Result<(), String> {
    let rt = swictation_worker_kit::Runtime::load(&args.common.ort_lib(), args.common.threads)
        .map_err(|e| e.to_string())?;
    let clips = args
        .clips
        .iter()
        .map(|p| Clip::read(p))
        .collect::<Result<Vec<_>, _>>()?;
    if args.prepare {
        let dirs = if args.dirs.is_empty() {
            vec![dir.to_path_buf()]
        } else {
            args.dirs.clone()
        };
        for d in dirs {
            let t = Instant::now();
            let done = prepare::prepare(&rt, &d, &clips, args.force)?;
            eprintln!(
                "swictation-asr-worker: {done} in {:.1} s",
                t.elapsed().as_secs_f64()
            );
        }
        return Ok(());
    }
    bench(&rt, args, dir, &clips)
}

/// Shipped and prepared files loaded side by side in one process and run alternately on each
/// clip, so both see the same machine at the same time.
fn bench(
    rt: &swictation_worker_kit::Runtime,
    args: &Args,
    dir: &std::path::Path,
    clips: &[Clip],
) -> Result<(), String> {
    if clips.is_empty() {
        return Err("--bench needs --clip files".into());
    }
    swictation_asr_worker::files::prepared_state(dir, rt.version())?;
    let encoder = args.encoder_device.unwrap_or(args.device);
    let decoder = args.decoder_device.unwrap_or(args.device);
    let shipped_files = ModelFiles::shipped(dir);
    let (prepared_files, _) = ModelFiles::resolve(dir, rt.version());
    let mut variants = Vec::new();
    for (name, files) in [("shipped", &shipped_files), ("prepared", &prepared_files)] {
        let t = Instant::now();
        let mut m =
            Moonshine::load_files(rt, files, encoder, decoder).map_err(|e| e.to_string())?;
        let load_ms = t.elapsed().as_secs_f64() * 1e3;
        // Warm-up: first-run allocations are not billed to the first clip.
        m.transcribe(&clips[0].samples).map_err(|e| e.to_string())?;
        variants.push((name, m, load_ms, Vec::new()));
    }
    for _ in 0..args.bench_rounds.max(1) {
        for (i, clip) in clips.iter().enumerate() {
            for (_, m, _, runs) in variants.iter_mut() {
                let t = Instant::now();
                let tr = m.transcribe(&clip.samples).map_err(|e| e.to_string())?;
                let total = t.elapsed().as_secs_f64();
                let timing = m.last_timing();
                runs.push(serde_json::json!({
                    "clip": i,
                    "text": tr.text,
                    "total_ms": total * 1e3,
                    "encoder_ms": timing.encoder_s * 1e3,
                    "decoder_ms": timing.decoder_s * 1e3,
                    "steps": timing.steps,
                }));
            }
        }
    }
    let out: serde_json::Map<String, serde_json::Value> = variants
        .into_iter()
        .map(|(name, _, load_ms, runs)| {
            (
                name.to_string(),
                serde_json::json!({"load_ms": load_ms, "runs": runs}),
            )
        })
        .collect();
    println!("{}", serde_json::Value::Object(out));
    Ok(())
}
