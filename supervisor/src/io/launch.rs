//! Worker command lines: the one place that turns "this worker, there" into a program and its
//! arguments. The placer decides where ([`Spot`]); this knows paths, flags and the test options,
//! and no thresholds.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use swictation_policy::placement::{ModelSize, Placement, Spot};
use swictation_proto::{Device, Role};

use super::worker::{worker_program, WorkerCommand};

/// How to start the workers: everything a command line needs besides where.
#[derive(Debug, Clone)]
pub struct LaunchConfig {
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

impl Default for LaunchConfig {
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

impl LaunchConfig {
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

    /// Where the configuration puts `role` when nothing decides otherwise.
    pub fn configured(&self, role: Role) -> Spot {
        match role {
            Role::Vad => Spot::Vad(self.vad_device),
            Role::Asr => Spot::Asr(Placement {
                encoder: self.asr_encoder,
                decoder: self.asr_decoder,
                model: ModelSize::Base,
                context_s: self.context_s,
            }),
        }
    }

    /// The command line that starts a worker at `spot`: the VAD on a device, or the ASR worker
    /// at a placement (base is the configured model, tiny the installed tiny-en).
    pub fn command(&self, spot: &Spot) -> WorkerCommand {
        match spot {
            Spot::Vad(device) => self.vad_at(*device),
            Spot::Asr(p) => {
                let model = match p.model {
                    ModelSize::Base => self.asr_model.clone(),
                    ModelSize::Tiny => Some(self.tiny_model.clone().unwrap_or_else(|| {
                        swictation_proto::paths::models_dir()
                            .join(swictation_proto::paths::MOONSHINE_TINY_EN)
                    })),
                };
                self.asr_with(p.encoder, p.decoder, model, p.context_s)
            }
        }
    }

    /// Command line of the VAD worker where configured.
    pub fn vad_command(&self) -> WorkerCommand {
        self.command(&self.configured(Role::Vad))
    }

    /// Command line of the ASR worker where configured.
    pub fn asr_command(&self) -> WorkerCommand {
        self.command(&self.configured(Role::Asr))
    }

    fn vad_at(&self, device: Device) -> WorkerCommand {
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

    fn asr_with(
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
