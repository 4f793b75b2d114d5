//! `swictation-asr-worker`: Moonshine speech recognition in its own process, serving the
//! supervisor's requests.

use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
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
    swictation_worker_kit::worker_main(Role::Asr, &args.common, |rt| {
        let model = Windowed::new(Moonshine::load(rt, &dir, encoder, decoder)?, context_s);
        Ok(Loaded {
            model: model.name().to_string(),
            placement: model.placement(),
            handler: Box::new(Asr(Box::new(model))),
        })
    })
}
