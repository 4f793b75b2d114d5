//! Where each worker runs: the GPU-aware placement policy, a pure function.
//!
//! [`decide`] takes GPU readings, the remembered [`History`], the workers' [`Current`]
//! placements, an optional [`FailureEvent`], the [`PlacementConfig`] and the time, and returns a
//! [`Decision`]: a new place for the VAD and/or the ASR worker (each with a human [`Reason`]),
//! whether to hold new ASR requests (the circuit breaker), warnings to report, and the history to
//! keep. It starts and stops nothing: the caller (the pipeline) carries the decision out, and the
//! policy never touches a process, a clock or a device, so it is tested as tables.
//!
//! The shape, from the OOM research (`../shared/seed/oom-prevention-research.md`) and what was
//! seen on the GPU machine (`../shared/reference/gpu-machine.md`):
//! - ASR walks down a configurable ladder of rungs (device per component × model × context);
//!   the VAD walks down its own (GPU, then CPU), and it is the first thing moved under pressure.
//! - A worker goes on a GPU only if free memory ≥ its need (learned from NVML after a load, else
//!   an estimate) + a margin, and only if that leaves the device below the critical threshold.
//! - warning → report; critical → VAD off the GPU, no growth; emergency → hold ASR requests and
//!   step ASR down.
//! - `OutOfMemory` → next rung; `CudaFault` with plenty of memory → same rung once, then the rung
//!   is banned; `Load` → banned at once (retrying a provider that cannot load the model is
//!   pointless); a critical Xid marks the device suspect; no GPU → CPU, saying why.
//! - Promotion only after free memory stayed above the upper rung's need + hysteresis for a
//!   sustained period, longer after each failure at that rung, so flapping readings never make
//!   it oscillate.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use swictation_proto::{Device, Role};

use crate::config::{Config, GpuConfig, PlacementMode};
use crate::failure::FailureClass;
use crate::gpu::{Availability, DeviceReading};

// ---------------------------------------------------------------------------------------------
// Placements and ladders

/// Which Moonshine model the ASR worker loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ModelSize {
    /// `moonshine-base-en`: better, bigger.
    Base,
    /// `moonshine-tiny-en`: the last resort.
    Tiny,
}

impl ModelSize {
    /// `base` or `tiny`, as `[asr] model` takes it.
    pub fn as_str(self) -> &'static str {
        match self {
            ModelSize::Base => "base",
            ModelSize::Tiny => "tiny",
        }
    }
}

impl fmt::Display for ModelSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ModelSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "base" => Ok(ModelSize::Base),
            "tiny" => Ok(ModelSize::Tiny),
            _ => Err(format!("unknown model {s:?}: expected base or tiny")),
        }
    }
}

/// Where a ladder rung wants a component: the CPU, whichever GPU has the most free memory, or
/// one GPU. Resolved to a [`Device`] when the rung is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// The CPU.
    Cpu,
    /// A GPU: `None` for the one with the most free memory, `Some(n)` for `cuda:n` only.
    Gpu(Option<u32>),
}

impl Target {
    fn is_gpu(self) -> bool {
        matches!(self, Target::Gpu(_))
    }

    fn resolve(self, gpu: Option<u32>) -> Device {
        match (self, gpu) {
            (Target::Cpu, _) => Device::Cpu,
            (Target::Gpu(Some(n)), _) => Device::Cuda(n),
            (Target::Gpu(None), Some(n)) => Device::Cuda(n),
            // Callers resolve GPU targets only with a chosen GPU; the CPU is the safe reading.
            (Target::Gpu(None), None) => Device::Cpu,
        }
    }

    fn matches(self, d: Device) -> bool {
        match (self, d) {
            (Target::Cpu, Device::Cpu) => true,
            (Target::Gpu(None), Device::Cuda(_)) => true,
            (Target::Gpu(Some(n)), Device::Cuda(m)) => n == m,
            _ => false,
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Cpu => f.write_str("cpu"),
            Target::Gpu(None) => f.write_str("cuda"),
            Target::Gpu(Some(n)) => write!(f, "cuda:{n}"),
        }
    }
}

impl std::str::FromStr for Target {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cpu" => Ok(Target::Cpu),
            "cuda" | "gpu" => Ok(Target::Gpu(None)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(|n| Target::Gpu(Some(n)))
                .ok_or_else(|| format!("unknown device {s:?}: expected cpu, cuda or cuda:N")),
        }
    }
}

/// Seconds as people write them: `10`, `2.5`.
fn secs(s: f32) -> String {
    if s.fract() == 0.0 {
        format!("{s:.0}")
    } else {
        format!("{s}")
    }
}

fn kind(d: Device) -> &'static str {
    match d {
        Device::Cpu => "cpu",
        Device::Cuda(_) => "cuda",
    }
}

/// Where the ASR worker runs: a device per component (the Moonshine base-en decoder faults on
/// CUDA while its encoder runs there, so "encoder cuda:0, decoder cpu" is a placement), the
/// model, and the context window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Placement {
    /// Where the encoder runs.
    pub encoder: Device,
    /// Where the merged decoder runs.
    pub decoder: Device,
    /// Which model.
    pub model: ModelSize,
    /// Longest audio window the worker recognises at once; longer segments are split.
    pub context_s: f32,
}

impl Placement {
    /// Everything on the CPU.
    pub fn cpu(model: ModelSize, context_s: f32) -> Self {
        Self {
            encoder: Device::Cpu,
            decoder: Device::Cpu,
            model,
            context_s,
        }
    }

    /// The GPU this placement uses, if any (the encoder's when components sit on two GPUs,
    /// which ladders do not produce).
    pub fn gpu(&self) -> Option<u32> {
        match (self.encoder, self.decoder) {
            (Device::Cuda(n), _) | (_, Device::Cuda(n)) => Some(n),
            _ => None,
        }
    }

    /// The device-independent key learned footprints, faults and bans are kept under:
    /// `asr enc=cuda dec=cpu base 10s` (the same model on another GPU needs the same memory).
    pub fn key(&self) -> String {
        format!(
            "asr enc={} dec={} {} {}s",
            kind(self.encoder),
            kind(self.decoder),
            self.model,
            secs(self.context_s)
        )
    }
}

impl fmt::Display for Placement {
    /// `cuda:0 base 10s` when both components share a device, `enc cuda:0 dec cpu base 10s`
    /// otherwise.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.encoder == self.decoder {
            write!(
                f,
                "{} {} {}s",
                self.encoder,
                self.model,
                secs(self.context_s)
            )
        } else {
            write!(
                f,
                "enc {} dec {} {} {}s",
                self.encoder,
                self.decoder,
                self.model,
                secs(self.context_s)
            )
        }
    }
}

/// The key VAD footprints are kept under: `vad cuda` or `vad cpu`.
pub fn vad_key(d: Device) -> String {
    format!("vad {}", kind(d))
}

/// One rung of the ASR ladder: a [`Placement`] whose GPU is chosen at placement time.
/// Written and parsed as `encoder=cuda decoder=cpu model=base context=10` (`device=X` sets
/// both components; omitted keys default to cpu, base, 10).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rung {
    /// Where the encoder goes.
    pub encoder: Target,
    /// Where the decoder goes.
    pub decoder: Target,
    /// Which model.
    pub model: ModelSize,
    /// Context window, seconds.
    pub context_s: f32,
}

impl Rung {
    /// The placement this rung makes with `gpu` chosen for its GPU components.
    pub fn resolve(&self, gpu: Option<u32>) -> Placement {
        Placement {
            encoder: self.encoder.resolve(gpu),
            decoder: self.decoder.resolve(gpu),
            model: self.model,
            context_s: self.context_s,
        }
    }

    /// Whether `p` is this rung resolved on some GPU.
    pub fn matches(&self, p: &Placement) -> bool {
        self.encoder.matches(p.encoder)
            && self.decoder.matches(p.decoder)
            && self.model == p.model
            && self.context_s == p.context_s
    }

    /// `cuda base 10s`, or `enc cuda dec cpu base 10s` when the components differ.
    pub fn label(&self) -> String {
        if self.encoder == self.decoder {
            format!("{} {} {}s", self.encoder, self.model, secs(self.context_s))
        } else {
            format!(
                "enc {} dec {} {} {}s",
                self.encoder,
                self.decoder,
                self.model,
                secs(self.context_s)
            )
        }
    }

    /// Same as [`Placement::key`] for any placement this rung resolves to.
    pub fn key(&self) -> String {
        self.resolve(Some(0)).key()
    }

    /// `Some(pin)` when a component wants a GPU (`pin` = the one named, if any).
    fn gpu(&self) -> Option<Option<u32>> {
        match (self.encoder, self.decoder) {
            (Target::Gpu(a), Target::Gpu(b)) => Some(a.or(b)),
            (Target::Gpu(a), _) | (_, Target::Gpu(a)) => Some(a),
            _ => None,
        }
    }
}

impl fmt::Display for Rung {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "encoder={} decoder={} model={} context={}",
            self.encoder,
            self.decoder,
            self.model,
            secs(self.context_s)
        )
    }
}

impl std::str::FromStr for Rung {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut r = Rung {
            encoder: Target::Cpu,
            decoder: Target::Cpu,
            model: ModelSize::Base,
            context_s: 10.0,
        };
        for word in s.split_whitespace() {
            let (k, v) = word
                .split_once('=')
                .ok_or_else(|| format!("{word:?}: expected key=value"))?;
            match k {
                "encoder" => r.encoder = v.parse()?,
                "decoder" => r.decoder = v.parse()?,
                "device" => {
                    r.encoder = v.parse()?;
                    r.decoder = r.encoder;
                }
                "model" => r.model = v.parse()?,
                "context" => {
                    let n: f32 = v
                        .strip_suffix('s')
                        .unwrap_or(v)
                        .parse()
                        .map_err(|_| format!("context {v:?}: expected seconds, e.g. 10"))?;
                    if !(n.is_finite() && n > 0.0 && n <= 30.0) {
                        return Err(format!(
                            "context {v:?}: must be more than 0 and at most 30 seconds"
                        ));
                    }
                    r.context_s = n;
                }
                _ => {
                    return Err(format!(
                        "unknown key {k:?}: expected encoder, decoder, device, model or context"
                    ))
                }
            }
        }
        if let (Target::Gpu(Some(a)), Target::Gpu(Some(b))) = (r.encoder, r.decoder) {
            if a != b {
                return Err(format!(
                    "encoder on cuda:{a} and decoder on cuda:{b}: a rung uses at most one GPU"
                ));
            }
        }
        Ok(r)
    }
}

/// The ladders the workers walk down under pressure or failure and back up when memory frees.
#[derive(Debug, Clone, PartialEq)]
pub struct Ladder {
    /// ASR rungs, best first.
    pub asr: Vec<Rung>,
    /// VAD devices, best first.
    pub vad: Vec<Target>,
}

impl Default for Ladder {
    /// ASR: the whole model on the GPU (base, 10 s; the prepared decoder runs on CUDA) → the
    /// encoder on the GPU and the decoder on the CPU at 10 s → 5 s → 3 s → cpu base 10 s → cpu
    /// tiny 10 s. VAD: cuda → cpu.
    fn default() -> Self {
        Self::derived(ModelSize::Base, 10.0)
    }
}

impl Ladder {
    /// The ladder for `model` with a `context_s` window: the whole model on the GPU at
    /// `context_s`, then the GPU encoder (decoder on the CPU) at `context_s`, then at 5 and 3 s
    /// where smaller, then everything on the CPU at `context_s`, then tiny on the CPU (when
    /// `model` is base). VAD: cuda → cpu.
    pub fn derived(model: ModelSize, context_s: f32) -> Self {
        let whole = Rung {
            encoder: Target::Gpu(None),
            decoder: Target::Gpu(None),
            model,
            context_s,
        };
        let gpu = |context_s| Rung {
            encoder: Target::Gpu(None),
            decoder: Target::Cpu,
            model,
            context_s,
        };
        let cpu = |model| Rung {
            encoder: Target::Cpu,
            decoder: Target::Cpu,
            model,
            context_s,
        };
        let mut asr = vec![whole, gpu(context_s)];
        for smaller in [5.0, 3.0] {
            if context_s == 0.0 || smaller < context_s {
                asr.push(gpu(smaller));
            }
        }
        asr.push(cpu(model));
        if model == ModelSize::Base {
            asr.push(cpu(ModelSize::Tiny));
        }
        Self {
            asr,
            vad: vec![Target::Gpu(None), Target::Cpu],
        }
    }

    /// `gpu.placement = "fixed"`: exactly the configured devices, then the CPU if they fail.
    pub fn fixed(
        vad: Device,
        encoder: Device,
        decoder: Device,
        model: ModelSize,
        context_s: f32,
    ) -> Self {
        let target = |d: Device| match d {
            Device::Cpu => Target::Cpu,
            Device::Cuda(n) => Target::Gpu(Some(n)),
        };
        let chosen = Rung {
            encoder: target(encoder),
            decoder: target(decoder),
            model,
            context_s,
        };
        let cpu = Rung {
            encoder: Target::Cpu,
            decoder: Target::Cpu,
            model,
            context_s,
        };
        let mut asr = vec![chosen];
        if chosen != cpu {
            asr.push(cpu);
        }
        let mut vads = vec![target(vad)];
        if vad != Device::Cpu {
            vads.push(Target::Cpu);
        }
        Self { asr, vad: vads }
    }

    /// Parse ASR rungs, one string each (`"encoder=cuda decoder=cpu model=base context=10"`).
    pub fn parse_asr<S: AsRef<str>>(rungs: &[S]) -> Result<Vec<Rung>, String> {
        rungs
            .iter()
            .enumerate()
            .map(|(i, s)| {
                s.as_ref()
                    .parse()
                    .map_err(|e| format!("asr rung {}: {e}", i + 1))
            })
            .collect()
    }

    /// Parse a VAD ladder: devices separated by commas or spaces (`"cuda, cpu"`).
    pub fn parse_vad(list: &str) -> Result<Vec<Target>, String> {
        list.split([',', ' '])
            .filter(|s| !s.is_empty())
            .map(str::parse)
            .collect()
    }

    /// Both ladders must be non-empty and reach the CPU, or a machine without a GPU could not run.
    pub fn validate(&self) -> Result<(), String> {
        if !self.asr.iter().any(|r| r.gpu().is_none()) {
            return Err("the asr ladder needs a rung with everything on the cpu".to_owned());
        }
        if !self.vad.contains(&Target::Cpu) {
            return Err("the vad ladder needs cpu".to_owned());
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Configuration

/// A memory-use threshold: percent of a card's memory, or megabytes used.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Threshold {
    /// Percent of the device's total memory in use.
    Pct(f32),
    /// Megabytes in use.
    UsedMb(u64),
}

impl Threshold {
    /// The threshold in MB used on a device with `total_mb`.
    pub fn used_mb(self, total_mb: u64) -> u64 {
        match self {
            Threshold::Pct(p) => (total_mb as f64 * f64::from(p) / 100.0).round() as u64,
            Threshold::UsedMb(mb) => mb,
        }
    }
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Threshold::Pct(p) => write!(f, "{p}%"),
            Threshold::UsedMb(mb) => write!(f, "{} used", mb_str(*mb)),
        }
    }
}

/// The three pressure thresholds (seed: 80 / 87.5 / 95 %).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// Report.
    pub warning: Threshold,
    /// Move the VAD off the GPU; place nothing new there.
    pub critical: Threshold,
    /// Hold new ASR requests; step ASR down.
    pub emergency: Threshold,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            warning: Threshold::Pct(80.0),
            critical: Threshold::Pct(87.5),
            emergency: Threshold::Pct(95.0),
        }
    }
}

/// First-time memory needs, used until NVML has measured a placement. Deliberately on the high
/// side: a wrong high guess costs a GPU placement for one load; a wrong low one costs a crash.
#[derive(Debug, Clone, PartialEq)]
pub struct Estimates {
    /// Moonshine base encoder on CUDA, CUDA context included (base + 10 s × per-second term
    /// = 760 MB, measured on the H100).
    pub base_encoder_mb: u64,
    /// Moonshine base decoder on CUDA (the prepared decoder's float weights are 275 MB; the
    /// whole model was seen holding 1340 MB on an H200).
    pub base_decoder_mb: u64,
    /// Moonshine tiny encoder on CUDA, context included.
    pub tiny_encoder_mb: u64,
    /// Moonshine tiny decoder on CUDA.
    pub tiny_decoder_mb: u64,
    /// Activation memory per second of context window.
    pub per_context_s_mb: u64,
    /// Silero VAD on CUDA, context included.
    pub vad_mb: u64,
}

impl Default for Estimates {
    fn default() -> Self {
        Self {
            base_encoder_mb: 660,
            base_decoder_mb: 700,
            tiny_encoder_mb: 400,
            tiny_decoder_mb: 250,
            per_context_s_mb: 10,
            vad_mb: 100,
        }
    }
}

impl Estimates {
    /// Estimated VRAM of an ASR placement (0 when it uses no GPU).
    pub fn asr_mb(&self, p: &Placement) -> u64 {
        let (enc, dec) = match p.model {
            ModelSize::Base => (self.base_encoder_mb, self.base_decoder_mb),
            ModelSize::Tiny => (self.tiny_encoder_mb, self.tiny_decoder_mb),
        };
        let on_gpu = |d: Device| d != Device::Cpu;
        if p.gpu().is_none() {
            return 0;
        }
        let activations = (f64::from(p.context_s) * self.per_context_s_mb as f64).ceil() as u64;
        (if on_gpu(p.encoder) {
            enc + activations
        } else {
            0
        }) + if on_gpu(p.decoder) { dec } else { 0 }
    }
}

/// Tuning of the placement policy.
#[derive(Debug, Clone, PartialEq)]
pub struct PlacementConfig {
    /// The ladders.
    pub ladder: Ladder,
    /// Pressure thresholds.
    pub thresholds: Thresholds,
    /// Free memory kept beyond a worker's need when placing it on a GPU. Default 300 MB.
    pub margin_mb: u64,
    /// Extra free memory required, on top of need + margin, to step back up. Default 500 MB.
    pub hysteresis_mb: u64,
    /// How long the room to step up must last before stepping up. Default 30 s; doubled for
    /// each failure at the upper rung.
    pub promote_after: Duration,
    /// After a change, how long before pressure steps ASR down again (the moved worker's memory
    /// takes this long to show as free). Default 3 s.
    pub settle: Duration,
    /// How long NVML may be gone before GPU workers are moved to the CPU (a single failed read
    /// is no reason to move). Default 3 s.
    pub no_gpu_grace: Duration,
    /// A second CUDA fault at one rung within this window bans the rung. Default 10 min.
    pub fault_window: Duration,
    /// First-time needs.
    pub estimates: Estimates,
    /// Xid codes that application faults produce (13 graphics engine exception, 31 memory page
    /// fault, 43 GPU stopped processing, 45 preemptive cleanup). Our own faulting worker raises
    /// these, so they are reported without marking the device suspect; the worker's failure is
    /// handled by the CUDA-fault rule. Every other critical Xid marks the device suspect.
    pub app_xids: Vec<u64>,
}

impl Default for PlacementConfig {
    fn default() -> Self {
        Self {
            ladder: Ladder::default(),
            thresholds: Thresholds::default(),
            margin_mb: 300,
            hysteresis_mb: 500,
            promote_after: Duration::from_secs(30),
            settle: Duration::from_secs(3),
            no_gpu_grace: Duration::from_secs(3),
            fault_window: Duration::from_secs(600),
            estimates: Estimates::default(),
            app_xids: vec![13, 31, 43, 45],
        }
    }
}

impl PlacementConfig {
    /// The policy the configuration file describes (`[gpu]`, with `[asr]`/`[vad]` for the
    /// derived and fixed ladders). The error names the ladder at fault.
    pub fn from_config(c: &Config) -> Result<Self, String> {
        let g = &c.gpu;
        let model = match c.asr.model.as_str() {
            "tiny" => ModelSize::Tiny,
            // A model directory of the user's own is treated as the big one.
            _ => ModelSize::Base,
        };
        let ladder = match g.placement {
            PlacementMode::Auto => Ladder {
                asr: if g.asr_ladder.is_empty() {
                    Ladder::derived(model, c.asr.context_s).asr
                } else {
                    Ladder::parse_asr(&g.asr_ladder)?
                },
                vad: Ladder::parse_vad(&g.vad_ladder).map_err(|e| format!("vad ladder: {e}"))?,
            },
            PlacementMode::Fixed => Ladder::fixed(
                c.vad.device,
                c.asr.encoder_device,
                c.asr.decoder_device,
                model,
                c.asr.context_s,
            ),
        };
        ladder.validate()?;
        let mut cfg = Self::from_gpu_config(g);
        cfg.ladder = ladder;
        cfg.margin_mb = g.margin_mb;
        cfg.hysteresis_mb = g.hysteresis_mb;
        cfg.promote_after = Duration::from_secs_f64(g.promote_after_s.clamp(0.0, 86_400.0));
        Ok(cfg)
    }

    /// Defaults with the thresholds of the `[gpu]` section.
    pub fn from_gpu_config(g: &GpuConfig) -> Self {
        Self {
            thresholds: Thresholds {
                warning: g
                    .warning_mb
                    .map_or(Threshold::Pct(g.warning_pct), Threshold::UsedMb),
                critical: g
                    .critical_mb
                    .map_or(Threshold::Pct(g.critical_pct), Threshold::UsedMb),
                emergency: g
                    .emergency_mb
                    .map_or(Threshold::Pct(g.emergency_pct), Threshold::UsedMb),
            },
            ..Self::default()
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Inputs

/// How full a device is, by the thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Pressure {
    /// Below warning.
    Normal,
    /// At or above warning.
    Warning,
    /// At or above critical.
    Critical,
    /// At or above emergency.
    Emergency,
}

/// Classify a device's memory use.
pub fn pressure(d: &DeviceReading, t: &Thresholds) -> Pressure {
    let at = |th: Threshold| d.used_mb >= th.used_mb(d.total_mb);
    if at(t.emergency) {
        Pressure::Emergency
    } else if at(t.critical) {
        Pressure::Critical
    } else if at(t.warning) {
        Pressure::Warning
    } else {
        Pressure::Normal
    }
}

/// A worker's lifecycle as far as placement cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerState {
    /// No process: not started yet, or gone after a failure.
    Absent,
    /// Being started, or a change decided earlier is being carried out: no new change is
    /// decided for it except in reply to a failure.
    Starting,
    /// Handshake and canary passed; serving.
    Ready,
}

/// One worker as the caller sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Worker<T> {
    /// Where it runs (or last ran); `None` before the first placement.
    pub placement: Option<T>,
    /// Its state.
    pub state: WorkerState,
    /// Its process id while it has one (to read its VRAM from NVML).
    pub pid: Option<u32>,
}

impl<T> Worker<T> {
    /// A worker not placed yet.
    pub fn unplaced() -> Self {
        Self {
            placement: None,
            state: WorkerState::Absent,
            pid: None,
        }
    }

    /// A worker serving at `placement`.
    pub fn ready(placement: T, pid: Option<u32>) -> Self {
        Self {
            placement: Some(placement),
            state: WorkerState::Ready,
            pid,
        }
    }
}

/// Both workers now. While a change is being carried out, report the old placement with state
/// [`WorkerState::Starting`] until the switch is complete, then the new one as `Ready`.
#[derive(Debug, Clone, PartialEq)]
pub struct Current {
    /// The VAD worker.
    pub vad: Worker<Device>,
    /// The ASR worker.
    pub asr: Worker<Placement>,
}

/// A worker failure, as classified by [`crate::failure::classify`].
#[derive(Debug, Clone, PartialEq)]
pub struct FailureEvent {
    /// Which worker.
    pub role: Role,
    /// Why.
    pub class: FailureClass,
    /// When (the same clock as `now`).
    pub at: Duration,
    /// It had passed its canary (failed while serving) rather than during load.
    pub after_ready: bool,
    /// The restart policy escalated (too many failures too fast): step down whatever the class.
    pub escalated: bool,
}

// ---------------------------------------------------------------------------------------------
// History

/// What the policy remembers between calls. The caller keeps the one each [`Decision`] returns
/// and adds measured footprints with [`History::learn_asr`] / [`History::learn_vad`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct History {
    /// Measured VRAM by placement key.
    footprints: BTreeMap<String, u64>,
    /// CUDA faults by rung key: (count, time of the last).
    cuda_faults: BTreeMap<String, (u32, Duration)>,
    /// Failure-driven step-downs from a rung key: each doubles the wait before returning.
    failures: BTreeMap<String, u32>,
    /// Rungs never to use again, with why.
    banned: BTreeMap<String, String>,
    /// Devices with a critical Xid, with which.
    suspect: BTreeMap<u32, String>,
    /// When the last change was decided.
    last_change: Option<Duration>,
    /// Since when each upper rung (role, key) has had room to step up to.
    room_since: BTreeMap<(&'static str, String), Duration>,
    /// Last pressure per device, to report changes only.
    pressure: BTreeMap<u32, Pressure>,
    /// Why there is no GPU, and since when.
    no_gpu: Option<(String, Duration)>,
    /// Whether ASR requests were held at the last decision (to report changes only).
    holding: bool,
}

impl History {
    /// Record the VRAM an ASR worker at `p` holds after its load and canary (from
    /// [`crate::gpu::DeviceReading::process_mb`]). Ignored for CPU-only placements.
    pub fn learn_asr(&mut self, p: &Placement, mb: u64) {
        if p.gpu().is_some() {
            self.footprints.insert(p.key(), mb);
        }
    }

    /// Record the VRAM a VAD worker on `d` holds after its load and canary.
    pub fn learn_vad(&mut self, d: Device, mb: u64) {
        if d != Device::Cpu {
            self.footprints.insert(vad_key(d), mb);
        }
    }

    /// The learned footprint under `key` ([`Placement::key`], [`vad_key`]).
    pub fn footprint(&self, key: &str) -> Option<u64> {
        self.footprints.get(key).copied()
    }

    /// Devices marked suspect, with the Xid that did it.
    pub fn suspect_devices(&self) -> &BTreeMap<u32, String> {
        &self.suspect
    }

    /// Rungs banned after repeated CUDA faults or a load failure, with why.
    pub fn banned(&self) -> &BTreeMap<String, String> {
        &self.banned
    }

    /// Why there is no GPU, while there is none (for status: "everything on the CPU because ...").
    pub fn no_gpu_reason(&self) -> Option<&str> {
        self.no_gpu.as_ref().map(|(why, _)| why.as_str())
    }
}

// ---------------------------------------------------------------------------------------------
// Output

/// Why a worker moves, rendered as `asr: cuda:0 base 10s → cuda:0 base 5s: out of memory at
/// load, 310 MB free < 1.2 GB learned need`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason {
    /// Which worker.
    pub role: Role,
    /// Where it was (none at the first start).
    pub from: Option<String>,
    /// Where it goes.
    pub to: String,
    /// Why, in words.
    pub why: String,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.from {
            Some(from) if *from == self.to => {
                write!(f, "{}: {} again: {}", self.role, self.to, self.why)
            }
            Some(from) => write!(f, "{}: {} → {}: {}", self.role, from, self.to, self.why),
            None => write!(f, "{}: start on {}: {}", self.role, self.to, self.why),
        }
    }
}

/// How the caller carries a change out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Switch {
    /// Nothing is running: just start it.
    Start,
    /// Start the new worker, wait for its canary, switch requests to it, then stop the old one:
    /// nothing in flight is lost. Used when both fit at once.
    MakeBeforeBreak,
    /// Stop the old worker, wait for its memory to show as free ([`memory_recovered`]), then
    /// start the new one, queueing requests meanwhile: the new one needs the old one's memory.
    BreakBeforeMake,
}

/// A decided change for one worker.
#[derive(Debug, Clone, PartialEq)]
pub struct Change<T> {
    /// The new placement.
    pub to: T,
    /// Why, for status and the event stream.
    pub reason: Reason,
    /// How to switch.
    pub switch: Switch,
}

/// What [`decide`] decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Where the VAD worker goes, if it changes (or must start).
    pub vad: Option<Change<Device>>,
    /// Where the ASR worker goes, if it changes (or must start).
    pub asr: Option<Change<Placement>>,
    /// Circuit breaker: keep new ASR requests queued (never drop them) until this is false.
    pub hold_asr_requests: bool,
    /// Warnings and state changes worth a log line and a status event, each said once.
    pub report: Vec<String>,
    /// The history to pass to the next call.
    pub history: History,
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// `310 MB`, `1.2 GB`.
fn mb_str(mb: u64) -> String {
    if mb >= 1024 {
        format!("{:.1} GB", mb as f64 / 1024.0)
    } else {
        format!("{mb} MB")
    }
}

fn pct(used: u64, total: u64) -> String {
    if total == 0 {
        return "?%".to_owned();
    }
    // Truncated to a tenth, so 94.97 % never reads as "95%" next to an emergency at 95 %.
    let tenths = used.saturating_mul(1000) / total;
    if tenths.is_multiple_of(10) {
        format!("{}%", tenths / 10)
    } else {
        format!("{}.{}%", tenths / 10, tenths % 10)
    }
}

/// Whether the memory a stopped worker released has shown up as free: at least 75 % of
/// `released_mb` visible again (NVML's free figure lags a process's exit; ollama waits the same
/// way). Poll every [`RECOVERY_POLL`], at most [`RECOVERY_CAP`], then go on regardless.
pub fn memory_recovered(before_free_mb: u64, now_free_mb: u64, released_mb: u64) -> bool {
    now_free_mb.saturating_sub(before_free_mb).saturating_mul(4) >= released_mb.saturating_mul(3)
}

/// How often to poll NVML while waiting for [`memory_recovered`].
pub const RECOVERY_POLL: Duration = Duration::from_millis(250);
/// The longest wait for [`memory_recovered`].
pub const RECOVERY_CAP: Duration = Duration::from_secs(5);

/// One rung of either ladder, reduced to what the engine needs.
#[derive(Debug, Clone)]
struct Step {
    key: String,
    label: String,
    /// `None`: CPU only. `Some(pin)`: needs a GPU (`pin` = that one only).
    gpu: Option<Option<u32>>,
    need_mb: u64,
    learned: bool,
}

impl Step {
    fn need(&self) -> String {
        format!(
            "{} {} need",
            mb_str(self.need_mb),
            if self.learned { "learned" } else { "estimated" }
        )
    }
}

fn asr_steps(cfg: &PlacementConfig, h: &History) -> Vec<Step> {
    cfg.ladder
        .asr
        .iter()
        .map(|r| {
            let p = r.resolve(Some(0));
            let learned = h.footprint(&p.key());
            Step {
                key: r.key(),
                label: r.label(),
                gpu: r.gpu(),
                need_mb: learned.unwrap_or_else(|| cfg.estimates.asr_mb(&p)),
                learned: learned.is_some() && r.gpu().is_some(),
            }
        })
        .collect()
}

fn vad_steps(cfg: &PlacementConfig, h: &History) -> Vec<Step> {
    cfg.ladder
        .vad
        .iter()
        .map(|t| {
            let d = t.resolve(Some(0));
            let learned = h.footprint(&vad_key(d)).filter(|_| t.is_gpu());
            Step {
                key: vad_key(d),
                label: t.to_string(),
                gpu: match t {
                    Target::Cpu => None,
                    Target::Gpu(pin) => Some(*pin),
                },
                need_mb: if t.is_gpu() {
                    learned.unwrap_or(cfg.estimates.vad_mb)
                } else {
                    0
                },
                learned: learned.is_some(),
            }
        })
        .collect()
}

/// One GPU as the engine sees it.
#[derive(Debug, Clone)]
struct Gpu {
    index: u32,
    total: u64,
    used: u64,
    free: u64,
    pressure: Pressure,
    critical_mb: u64,
    emergency_mb: u64,
    suspect: Option<String>,
    processes: Vec<(u32, u64)>,
}

/// How full a device may be left by a placement: below critical for anything new (critical
/// means "no growth"); below emergency for a step down under emergency, which shrinks use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ceiling {
    Critical,
    Emergency,
}

/// The readings, with memory claimed by placements decided earlier in the same call.
struct View {
    gpus: Vec<Gpu>,
    none: Option<String>,
    claimed: BTreeMap<u32, u64>,
}

impl View {
    fn new(readings: &Availability, h: &History, cfg: &PlacementConfig) -> Self {
        match readings {
            Availability::NoGpu(why) => Self {
                gpus: Vec::new(),
                none: Some(why.clone()),
                claimed: BTreeMap::new(),
            },
            Availability::Available(r) => Self {
                gpus: r
                    .devices
                    .iter()
                    .map(|d| Gpu {
                        index: d.index,
                        total: d.total_mb,
                        used: d.used_mb,
                        free: d.free_mb,
                        pressure: pressure(d, &cfg.thresholds),
                        critical_mb: cfg.thresholds.critical.used_mb(d.total_mb),
                        emergency_mb: cfg.thresholds.emergency.used_mb(d.total_mb),
                        suspect: h.suspect.get(&d.index).cloned(),
                        processes: d.processes.clone(),
                    })
                    .collect(),
                none: None,
                claimed: BTreeMap::new(),
            },
        }
    }

    fn gpu(&self, index: u32) -> Option<&Gpu> {
        self.gpus.iter().find(|g| g.index == index)
    }

    fn claimed(&self, index: u32) -> u64 {
        self.claimed.get(&index).copied().unwrap_or(0)
    }

    /// Whether `step` may go on `g`, with `released` MB of ours leaving it first and `extra` MB
    /// of room asked for beyond need + margin (the hysteresis, when stepping up).
    fn check(
        &self,
        step: &Step,
        g: &Gpu,
        released: u64,
        extra: u64,
        ceiling: Ceiling,
        cfg: &PlacementConfig,
    ) -> Result<(), String> {
        if let Some(why) = &g.suspect {
            return Err(format!("cuda:{} is suspect ({why})", g.index));
        }
        let claimed = self.claimed(g.index);
        let free = (g.free + released).saturating_sub(claimed);
        let want = step.need_mb + cfg.margin_mb + extra;
        if free < want {
            let hysteresis = if extra > 0 {
                format!(" + {} hysteresis", mb_str(extra))
            } else {
                String::new()
            };
            return Err(format!(
                "{} free < {} + {} margin{hysteresis}",
                mb_str(free),
                step.need(),
                mb_str(cfg.margin_mb)
            ));
        }
        // Fitting is not enough: a placement that leaves the device past its ceiling would be
        // moved away again at once.
        let projected = (g.used + claimed + step.need_mb).saturating_sub(released);
        let (limit, name, th) = match ceiling {
            Ceiling::Critical => (g.critical_mb, "critical", cfg.thresholds.critical),
            Ceiling::Emergency => (g.emergency_mb, "emergency", cfg.thresholds.emergency),
        };
        if projected + extra >= limit {
            return Err(format!(
                "would leave cuda:{} at {} ≥ {name} {th}",
                g.index,
                pct(projected + extra, g.total)
            ));
        }
        Ok(())
    }

    /// The GPU for `step` (most free memory first), `Ok(None)` for a CPU step.
    fn place(
        &self,
        step: &Step,
        released: Option<(u32, u64)>,
        extra: u64,
        ceiling: Ceiling,
        cfg: &PlacementConfig,
    ) -> Result<Option<u32>, String> {
        let Some(pin) = step.gpu else { return Ok(None) };
        if let Some(why) = &self.none {
            return Err(format!("no GPU: {why}"));
        }
        let rel = |i: u32| released.filter(|(d, _)| *d == i).map_or(0, |(_, mb)| mb);
        let mut candidates: Vec<&Gpu> = self
            .gpus
            .iter()
            .filter(|g| pin.is_none_or(|p| p == g.index))
            .collect();
        candidates.sort_by_key(|g| {
            (
                std::cmp::Reverse((g.free + rel(g.index)).saturating_sub(self.claimed(g.index))),
                g.index,
            )
        });
        let mut first_err = None;
        for g in candidates {
            // The looser ceiling is only for the device the stepping-down worker leaves.
            let ceil = if rel(g.index) > 0 {
                ceiling
            } else {
                Ceiling::Critical
            };
            match self.check(step, g, rel(g.index), extra, ceil, cfg) {
                Ok(()) => return Ok(Some(g.index)),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        Err(first_err.unwrap_or_else(|| match pin {
            Some(p) => format!("cuda:{p} not found"),
            None => "no GPU in the reading".to_owned(),
        }))
    }
}

/// The first rung from `from` down that is not banned and can be placed; with the rungs skipped
/// and why. If none can, the last rung anyway (a CPU rung, by validation), said so.
fn walk_down(
    steps: &[Step],
    from: usize,
    view: &View,
    h: &History,
    released: Option<(u32, u64)>,
    ceiling: Ceiling,
    cfg: &PlacementConfig,
) -> (usize, Option<u32>, Vec<String>) {
    let mut skipped = Vec::new();
    for (i, step) in steps.iter().enumerate().skip(from) {
        if let Some(why) = h.banned.get(&step.key) {
            skipped.push(format!("{} banned ({why})", step.label));
            continue;
        }
        if let (Some(why), Some(_)) = (&view.none, step.gpu) {
            // Said once for all GPU rungs, not once per rung.
            let why = format!("no GPU: {why}");
            if !skipped.contains(&why) {
                skipped.push(why);
            }
            continue;
        }
        match view.place(step, released, 0, ceiling, cfg) {
            Ok(gpu) => return (i, gpu, skipped),
            Err(why) => skipped.push(format!("{}: {why}", step.label)),
        }
    }
    let last = steps.len().saturating_sub(1);
    skipped.push("no rung left that fits".to_owned());
    (last, None, skipped)
}

/// A worker as the engine sees it.
struct RoleNow {
    role: Role,
    label: Option<String>,
    rung: Option<usize>,
    gpu: Option<u32>,
    state: WorkerState,
    /// VRAM it holds on its GPU (measured, else its need).
    usage_mb: u64,
}

fn role_now<T: fmt::Display>(
    role: Role,
    w: &Worker<T>,
    rung: Option<usize>,
    gpu: Option<u32>,
    steps: &[Step],
    view: &View,
) -> RoleNow {
    let measured = gpu.and_then(|g| view.gpu(g)).and_then(|g| {
        w.pid.and_then(|pid| {
            g.processes
                .iter()
                .find(|(p, _)| *p == pid)
                .map(|(_, mb)| *mb)
        })
    });
    let need = rung.and_then(|i| steps.get(i)).map_or(0, |s| s.need_mb);
    RoleNow {
        role,
        label: w.placement.as_ref().map(|p| p.to_string()),
        rung,
        gpu,
        state: w.state,
        usage_mb: if gpu.is_some() {
            measured.unwrap_or(need)
        } else {
            0
        },
    }
}

/// A change chosen by the engine, before it is turned into a placement.
struct Plan {
    rung: usize,
    gpu: Option<u32>,
    why: String,
    switch: Switch,
}

fn with_skipped(why: String, skipped: &[String]) -> String {
    // A rung passed over for the very reason already given adds nothing.
    let others: Vec<&str> = skipped
        .iter()
        .map(String::as_str)
        .filter(|s| !why.contains(s))
        .collect();
    if others.is_empty() {
        why
    } else {
        format!("{why} (passed over {})", others.join("; "))
    }
}

/// What a failure means for the ladder: where to start looking, and the cause in words.
fn on_failure(
    ev: &FailureEvent,
    me: &RoleNow,
    steps: &[Step],
    view: &View,
    h: &mut History,
    cfg: &PlacementConfig,
    now: Duration,
) -> Plan {
    let i = me.rung.unwrap_or(0);
    let Some(step) = steps.get(i) else {
        return Plan {
            rung: 0,
            gpu: None,
            why: "empty ladder".to_owned(),
            switch: Switch::Start,
        };
    };
    let phase = if ev.after_ready {
        "while serving"
    } else {
        "at load"
    };
    let here = me.gpu.and_then(|g| view.gpu(g));
    let facts = match (here, step.gpu) {
        (Some(g), Some(_)) => {
            let free = g.free.saturating_sub(view.claimed(g.index));
            let cmp = if free < step.need_mb + cfg.margin_mb {
                "<"
            } else {
                "≥"
            };
            format!(", {} free {cmp} {}", mb_str(free), step.need())
        }
        _ => String::new(),
    };
    let key = step.key.clone();
    let down = |h: &mut History| {
        *h.failures.entry(key.clone()).or_insert(0) += 1;
        i + 1
    };
    let (start, cause) = match ev.class {
        FailureClass::OutOfMemory => (down(h), format!("out of memory {phase}{facts}")),
        FailureClass::CudaFault if step.gpu.is_some() => {
            let entry = h.cuda_faults.entry(key.clone()).or_insert((0, now));
            if now.saturating_sub(entry.1) > cfg.fault_window {
                entry.0 = 0;
            }
            entry.0 += 1;
            entry.1 = now;
            let count = entry.0;
            let plenty =
                here.is_some_and(|g| view.check(step, g, 0, 0, Ceiling::Critical, cfg).is_ok());
            if count >= 2 {
                h.banned
                    .insert(key.clone(), format!("CUDA fault {count} times"));
                (
                    down(h),
                    format!("CUDA fault {phase} again{facts}: rung abandoned"),
                )
            } else if plenty {
                (i, format!("CUDA fault {phase}{facts}: retrying once"))
            } else {
                (
                    down(h),
                    format!("CUDA fault {phase}{facts}: memory too short to retry"),
                )
            }
        }
        FailureClass::Load => {
            h.banned.insert(key.clone(), "failed to load".to_owned());
            (down(h), format!("failed to load{facts}: rung abandoned"))
        }
        class if ev.escalated => (down(h), format!("{class} {phase}, restart limit reached")),
        class => (i, format!("{class} {phase}: restarting in place")),
    };
    let from = start.min(steps.len().saturating_sub(1));
    let (rung, gpu, skipped) = walk_down(steps, from, view, h, None, Ceiling::Critical, cfg);
    let why = if start >= steps.len() {
        format!("{cause}; no lower rung")
    } else {
        cause
    };
    Plan {
        rung,
        gpu,
        why: with_skipped(why, &skipped),
        switch: Switch::Start,
    }
}

/// The engine for one worker: failure, first start, forced moves, pressure, promotion.
#[allow(clippy::too_many_arguments)]
fn plan_role(
    me: &RoleNow,
    event: Option<&FailureEvent>,
    vad_on: Option<u32>,
    steps: &[Step],
    view: &View,
    h: &mut History,
    cfg: &PlacementConfig,
    now: Duration,
) -> Option<Plan> {
    if let Some(ev) = event.filter(|e| e.role == me.role) {
        if me.rung.is_some() || me.label.is_some() {
            return Some(on_failure(ev, me, steps, view, h, cfg, now));
        }
    }
    let switch_for = |gpu: Option<u32>| {
        if gpu.is_some() && gpu == me.gpu {
            Switch::BreakBeforeMake
        } else {
            Switch::MakeBeforeBreak
        }
    };
    match me.state {
        WorkerState::Absent => {
            let from = if me.label.is_some() {
                me.rung.unwrap_or(0)
            } else {
                0
            };
            let (rung, gpu, skipped) =
                walk_down(steps, from, view, h, None, Ceiling::Critical, cfg);
            let why = match (gpu.and_then(|g| view.gpu(g)), steps.get(rung)) {
                (Some(g), Some(s)) => with_skipped(
                    format!(
                        "{} free ≥ {} + {} margin",
                        mb_str(g.free.saturating_sub(view.claimed(g.index))),
                        s.need(),
                        mb_str(cfg.margin_mb)
                    ),
                    &skipped,
                ),
                _ if !skipped.is_empty() => skipped.join("; "),
                _ if me.label.is_some() => "restart".to_owned(),
                _ => "first choice".to_owned(),
            };
            return Some(Plan {
                rung,
                gpu,
                why,
                switch: Switch::Start,
            });
        }
        WorkerState::Starting => return None,
        WorkerState::Ready => {}
    }
    let Some(i) = me.rung else {
        // Placed somewhere the ladder does not list (the configuration changed): back onto it.
        let (rung, gpu, skipped) = walk_down(steps, 0, view, h, None, Ceiling::Critical, cfg);
        let why = with_skipped("not on the configured ladder".to_owned(), &skipped);
        return Some(Plan {
            rung,
            gpu,
            why,
            switch: Switch::MakeBeforeBreak,
        });
    };
    if let Some(g) = me.gpu {
        // Forced moves: the device is suspect, gone, or NVML has been gone a while.
        let forced = match (view.gpu(g), &view.none, &h.no_gpu) {
            (Some(d), _, _) => d
                .suspect
                .as_ref()
                .map(|why| format!("cuda:{g} suspect ({why})")),
            (None, Some(why), Some((_, since))) => {
                (now.saturating_sub(*since) >= cfg.no_gpu_grace).then(|| format!("no GPU: {why}"))
            }
            (None, Some(_), None) => None,
            (None, None, _) => Some(format!("cuda:{g} no longer in the readings")),
        };
        if let Some(cause) = forced {
            let (rung, gpu, skipped) = walk_down(steps, i, view, h, None, Ceiling::Critical, cfg);
            return Some(Plan {
                rung,
                gpu,
                why: with_skipped(cause, &skipped),
                switch: Switch::MakeBeforeBreak,
            });
        }
        if let Some(d) = view.gpu(g) {
            let level = |p: Pressure| {
                let th = if p == Pressure::Emergency {
                    cfg.thresholds.emergency
                } else {
                    cfg.thresholds.critical
                };
                format!(
                    "cuda:{g} at {} ({} of {}) ≥ {} {th}",
                    pct(d.used, d.total),
                    mb_str(d.used),
                    mb_str(d.total),
                    if p == Pressure::Emergency {
                        "emergency"
                    } else {
                        "critical"
                    }
                )
            };
            let settled = h
                .last_change
                .is_none_or(|t| now.saturating_sub(t) >= cfg.settle);
            let step_down = match me.role {
                // The VAD is the first thing moved: it is tiny and fast enough on the CPU.
                Role::Vad => d.pressure >= Pressure::Critical,
                // ASR steps down only at emergency, after the VAD has left this device and the
                // previous change has had time to show in the readings.
                Role::Asr => d.pressure == Pressure::Emergency && vad_on != Some(g) && settled,
            };
            if step_down && i + 1 < steps.len() {
                let (rung, gpu, skipped) = walk_down(
                    steps,
                    i + 1,
                    view,
                    h,
                    Some((g, me.usage_mb)),
                    Ceiling::Emergency,
                    cfg,
                );
                return Some(Plan {
                    rung,
                    gpu,
                    why: with_skipped(level(d.pressure), &skipped),
                    switch: switch_for(gpu),
                });
            }
        }
    }
    promote(me, i, steps, view, h, cfg, now)
}

/// Step up to the best rung above `i` that has had room (need + margin + hysteresis, and the
/// device staying below critical by the hysteresis) for the sustained period, doubled per
/// failure at that rung. Any moment without room restarts that rung's clock, so flapping
/// readings never promote.
fn promote(
    me: &RoleNow,
    i: usize,
    steps: &[Step],
    view: &View,
    h: &mut History,
    cfg: &PlacementConfig,
    now: Duration,
) -> Option<Plan> {
    let role = me.role.as_str();
    let mut best: Option<Plan> = None;
    for (j, step) in steps.iter().enumerate().take(i) {
        let key = (role, step.key.clone());
        let placed = if h.banned.contains_key(&step.key) {
            Err(String::new())
        } else {
            view.place(step, None, cfg.hysteresis_mb, Ceiling::Critical, cfg)
        };
        let gpu = match placed {
            Ok(gpu) => gpu,
            Err(_) => {
                h.room_since.remove(&key);
                continue;
            }
        };
        let since = *h.room_since.entry(key).or_insert(now);
        let failures = h.failures.get(&step.key).copied().unwrap_or(0).min(6);
        let wait = cfg.promote_after.saturating_mul(1 << failures);
        if best.is_none() && now.saturating_sub(since) >= wait {
            let room = match gpu.and_then(|g| view.gpu(g)) {
                Some(g) => format!(
                    "cuda:{} has had ≥ {} + {} margin + {} hysteresis free for {} s",
                    g.index,
                    step.need(),
                    mb_str(cfg.margin_mb),
                    mb_str(cfg.hysteresis_mb),
                    wait.as_secs()
                ),
                None => format!("no failure there for {} s", wait.as_secs()),
            };
            best = Some(Plan {
                rung: j,
                gpu,
                why: format!("stepping up: {room}"),
                switch: Switch::MakeBeforeBreak,
            });
        }
    }
    best
}

// ---------------------------------------------------------------------------------------------
// The policy

/// Update the history from a reading: no-GPU state, Xid errors, pressure changes, probe notes.
fn observe(
    readings: &Availability,
    h: &mut History,
    cfg: &PlacementConfig,
    now: Duration,
    report: &mut Vec<String>,
) {
    match readings {
        Availability::NoGpu(why) => match &mut h.no_gpu {
            Some((old, _)) if old == why => {}
            Some((old, _)) => *old = why.clone(),
            None => {
                h.no_gpu = Some((why.clone(), now));
                h.pressure.clear();
                report.push(format!("no GPU: {why}: everything runs on the CPU"));
            }
        },
        Availability::Available(r) => {
            if h.no_gpu.take().is_some() {
                report.push("GPU readings available again".to_owned());
            }
            report.extend(r.notes.iter().cloned());
            for (dev, xid) in &r.xid_errors {
                if cfg.app_xids.contains(xid) {
                    report.push(format!(
                        "cuda:{dev}: Xid {xid} (an application fault, most likely a worker's own; the device stays in use)"
                    ));
                } else if r.device(*dev).is_none() {
                    report.push(format!("Xid {xid} from a device not in the readings"));
                } else if !h.suspect.contains_key(dev) {
                    h.suspect.insert(*dev, format!("Xid {xid}"));
                    report.push(format!("cuda:{dev}: Xid {xid}: device suspect; workers move off it and nothing new goes there"));
                }
            }
            for d in &r.devices {
                let p = pressure(d, &cfg.thresholds);
                let before = h.pressure.insert(d.index, p).unwrap_or(Pressure::Normal);
                if p != before {
                    let what = match p {
                        Pressure::Normal => "normal".to_owned(),
                        Pressure::Warning => format!("warning (≥ {})", cfg.thresholds.warning),
                        Pressure::Critical => format!("critical (≥ {})", cfg.thresholds.critical),
                        Pressure::Emergency => {
                            format!("emergency (≥ {})", cfg.thresholds.emergency)
                        }
                    };
                    report.push(format!(
                        "cuda:{} memory {} used ({} of {}): {what}",
                        d.index,
                        pct(d.used_mb, d.total_mb),
                        mb_str(d.used_mb),
                        mb_str(d.total_mb)
                    ));
                }
            }
        }
    }
}

/// Decide where the workers run now. Pure: the same inputs give the same decision.
///
/// Call it every second with a fresh reading (`event` = `None`), at start-up (both workers
/// [`WorkerState::Absent`] with no placement), and whenever a worker fails (with the event, after
/// waiting for its memory to show as free). Carry out the changes, then keep
/// [`Decision::history`] for the next call.
pub fn decide(
    readings: &Availability,
    history: &History,
    current: &Current,
    event: Option<&FailureEvent>,
    cfg: &PlacementConfig,
    now: Duration,
) -> Decision {
    let mut h = history.clone();
    let mut report = Vec::new();
    observe(readings, &mut h, cfg, now, &mut report);
    let mut view = View::new(readings, &h, cfg);

    let asr_steps = asr_steps(cfg, &h);
    let vad_steps = vad_steps(cfg, &h);
    let asr_rung = current
        .asr
        .placement
        .as_ref()
        .and_then(|p| cfg.ladder.asr.iter().position(|r| r.matches(p)));
    let asr_gpu = current.asr.placement.as_ref().and_then(Placement::gpu);
    let vad_rung = current
        .vad
        .placement
        .and_then(|d| cfg.ladder.vad.iter().position(|t| t.matches(d)));
    let vad_gpu = match current.vad.placement {
        Some(Device::Cuda(n)) => Some(n),
        _ => None,
    };
    let asr_now = role_now(
        Role::Asr,
        &current.asr,
        asr_rung,
        asr_gpu,
        &asr_steps,
        &view,
    );
    let vad_now = role_now(
        Role::Vad,
        &current.vad,
        vad_rung,
        vad_gpu,
        &vad_steps,
        &view,
    );
    // The VAD counts as still on its GPU while it is not Absent there.
    let vad_on = vad_gpu.filter(|_| current.vad.state != WorkerState::Absent);

    // ASR first: it is the one that benefits from the GPU, so it gets first claim on memory.
    let asr_plan = plan_role(&asr_now, event, vad_on, &asr_steps, &view, &mut h, cfg, now);
    let asr = asr_plan.and_then(|plan| {
        let rung = cfg.ladder.asr.get(plan.rung)?;
        let to = rung.resolve(plan.gpu);
        if let (Some(g), Some(step)) = (plan.gpu, asr_steps.get(plan.rung)) {
            *view.claimed.entry(g).or_insert(0) += step.need_mb;
        }
        Some(Change {
            to,
            reason: Reason {
                role: Role::Asr,
                from: asr_now.label.clone(),
                to: to.to_string(),
                why: plan.why,
            },
            switch: plan.switch,
        })
    });
    let vad_plan = plan_role(&vad_now, event, vad_on, &vad_steps, &view, &mut h, cfg, now);
    let vad = vad_plan.and_then(|plan| {
        let to = cfg.ladder.vad.get(plan.rung)?.resolve(plan.gpu);
        Some(Change {
            to,
            reason: Reason {
                role: Role::Vad,
                from: vad_now.label.clone(),
                to: to.to_string(),
                why: plan.why,
            },
            switch: plan.switch,
        })
    });

    // A change resets the step-up clocks of the worker that moved (its "current" is new).
    if asr.is_some() || vad.is_some() {
        h.last_change = Some(now);
        h.room_since.retain(|(role, _), _| {
            !((*role == "asr" && asr.is_some()) || (*role == "vad" && vad.is_some()))
        });
    }
    if current.asr.state != WorkerState::Ready {
        h.room_since.retain(|(role, _), _| *role != "asr");
    }
    if current.vad.state != WorkerState::Ready {
        h.room_since.retain(|(role, _), _| *role != "vad");
    }

    // Circuit breaker: while ASR sits on a device in emergency, a new request could be the
    // allocation that fails; queue requests until it has moved or the pressure has passed.
    let emergency_on = asr_gpu
        .filter(|_| current.asr.state != WorkerState::Absent)
        .and_then(|g| view.gpu(g))
        .filter(|g| g.used >= g.emergency_mb)
        .map(|g| g.index);
    let hold = emergency_on.is_some();
    if hold != h.holding {
        report.push(match emergency_on {
            Some(g) => format!("asr requests held: cuda:{g} in memory emergency"),
            None => "asr requests released".to_owned(),
        });
        h.holding = hold;
    }

    Decision {
        vad,
        asr,
        hold_asr_requests: hold,
        report,
        history: h,
    }
}

/// Whether `p` may be started now: CPU placements always; GPU placements only on a readable,
/// non-suspect device with free ≥ need + margin that stays below critical. The check before
/// every spawn (`decide` applies the same rule).
pub fn fits(
    p: &Placement,
    readings: &Availability,
    history: &History,
    cfg: &PlacementConfig,
) -> Result<(), String> {
    let learned = history.footprint(&p.key());
    let step = Step {
        key: p.key(),
        label: p.to_string(),
        gpu: p.gpu().map(Some),
        need_mb: learned.unwrap_or_else(|| cfg.estimates.asr_mb(p)),
        learned: learned.is_some(),
    };
    fits_step(&step, readings, history, cfg)
}

/// [`fits`] for the VAD on `d`.
pub fn fits_vad(
    d: Device,
    readings: &Availability,
    history: &History,
    cfg: &PlacementConfig,
) -> Result<(), String> {
    let learned = history.footprint(&vad_key(d));
    let step = Step {
        key: vad_key(d),
        label: d.to_string(),
        gpu: match d {
            Device::Cpu => None,
            Device::Cuda(n) => Some(Some(n)),
        },
        need_mb: learned.unwrap_or(cfg.estimates.vad_mb),
        learned: learned.is_some(),
    };
    fits_step(&step, readings, history, cfg)
}

fn fits_step(
    step: &Step,
    readings: &Availability,
    history: &History,
    cfg: &PlacementConfig,
) -> Result<(), String> {
    View::new(readings, history, cfg)
        .place(step, None, 0, Ceiling::Critical, cfg)
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::GpuReading;

    const NO_DRIVER: &str = "no NVIDIA driver (libnvidia-ml.so.1 not found)";

    /// The ladder the stepping tests are written against: the default without its first rung
    /// (the whole model on the GPU), so every GPU rung keeps the decoder on the CPU. How the
    /// ladder is walked does not depend on which rung is first; the default is tested apart.
    fn encoder_ladder() -> Ladder {
        let mut ladder = Ladder::default();
        assert_eq!(ladder.asr[0].label(), "cuda base 10s");
        ladder.asr.remove(0);
        ladder
    }

    fn config() -> PlacementConfig {
        PlacementConfig {
            ladder: encoder_ladder(),
            ..PlacementConfig::default()
        }
    }

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn card(index: u32, total_mb: u64, used_mb: u64) -> DeviceReading {
        DeviceReading {
            index,
            name: "Scripted GPU".to_owned(),
            total_mb,
            used_mb,
            free_mb: total_mb - used_mb,
            utilization_pct: None,
            processes: vec![],
        }
    }

    fn cards(list: &[(u64, u64)]) -> Availability {
        let devices = list
            .iter()
            .enumerate()
            .map(|(i, (t, u))| card(i as u32, *t, *u))
            .collect();
        Availability::Available(GpuReading {
            devices,
            ..Default::default()
        })
    }

    /// One 4 GB card (the seed's RTX A1000) with `used` MB in use.
    fn a1000(used: u64) -> Availability {
        cards(&[(4096, used)])
    }

    fn with_xid(mut a: Availability, dev: u32, xid: u64) -> Availability {
        if let Availability::Available(r) = &mut a {
            r.xid_errors.push((dev, xid));
        }
        a
    }

    fn rung(i: usize, gpu: Option<u32>) -> Placement {
        encoder_ladder().asr[i].resolve(gpu)
    }

    fn fail(role: Role, class: FailureClass, after_ready: bool) -> FailureEvent {
        FailureEvent {
            role,
            class,
            at: s(0),
            after_ready,
            escalated: false,
        }
    }

    /// The policy with an instant caller: every change is carried out at once and is Ready by
    /// the next tick, which is one second later.
    struct Sim {
        cfg: PlacementConfig,
        h: History,
        cur: Current,
        t: Duration,
        /// `(second, role, new placement, switch)` for every change.
        changes: Vec<(u64, Role, String, Switch)>,
        reasons: Vec<String>,
        reports: Vec<String>,
    }

    impl Sim {
        fn new() -> Self {
            Self::with(config())
        }

        fn with(cfg: PlacementConfig) -> Self {
            Self {
                cfg,
                h: History::default(),
                cur: Current {
                    vad: Worker::unplaced(),
                    asr: Worker::unplaced(),
                },
                t: s(0),
                changes: vec![],
                reasons: vec![],
                reports: vec![],
            }
        }

        /// Both workers already serving on the GPU's default top rungs.
        fn on_gpu(gpu: u32) -> Self {
            let mut sim = Self::new();
            sim.cur.asr = Worker::ready(rung(0, Some(gpu)), None);
            sim.cur.vad = Worker::ready(Device::Cuda(gpu), None);
            sim
        }

        fn tick(&mut self, readings: &Availability, event: Option<FailureEvent>) -> Decision {
            let d = decide(
                readings,
                &self.h,
                &self.cur,
                event.as_ref(),
                &self.cfg,
                self.t,
            );
            let sec = self.t.as_secs();
            if let Some(c) = &d.asr {
                self.cur.asr = Worker::ready(c.to, None);
                self.changes
                    .push((sec, Role::Asr, c.to.to_string(), c.switch));
                self.reasons.push(c.reason.to_string());
            }
            if let Some(c) = &d.vad {
                self.cur.vad = Worker::ready(c.to, None);
                self.changes
                    .push((sec, Role::Vad, c.to.to_string(), c.switch));
                self.reasons.push(c.reason.to_string());
            }
            self.reports.extend(d.report.iter().cloned());
            self.h = d.history.clone();
            self.t += s(1);
            d
        }

        fn run(&mut self, seconds: u64, readings: impl Fn(u64) -> Availability) {
            for _ in 0..seconds {
                let r = readings(self.t.as_secs());
                self.tick(&r, None);
            }
        }

        fn asr(&self) -> String {
            self.cur
                .asr
                .placement
                .map(|p| p.to_string())
                .unwrap_or_default()
        }

        fn vad(&self) -> String {
            self.cur
                .vad
                .placement
                .map(|p| p.to_string())
                .unwrap_or_default()
        }
    }

    #[test]
    fn by_default_the_whole_model_starts_on_the_gpu_and_a_faulting_decoder_leaves_the_encoder_there(
    ) {
        let mut sim = Sim::with(PlacementConfig::default());
        let d = sim.tick(&a1000(300), None);
        let a = d.asr.expect("start");
        assert_eq!(a.to.to_string(), "cuda:0 base 10s");
        assert!(
            a.reason.to_string().contains("1.4 GB estimated need"),
            "{}",
            a.reason
        );
        sim.cur.asr = Worker::ready(a.to, None);
        let fault = || Some(fail(Role::Asr, FailureClass::CudaFault, true));
        let c = sim.tick(&a1000(1000), fault()).asr.expect("retry");
        assert_eq!(c.to.to_string(), "cuda:0 base 10s");
        let c = sim.tick(&a1000(1000), fault()).asr.expect("step down");
        assert_eq!(c.to.to_string(), "enc cuda:0 dec cpu base 10s");
        // Too little room for the whole model, enough for the encoder: the next rung.
        let mut sim = Sim::with(PlacementConfig::default());
        let a = sim.tick(&cards(&[(2048, 700)]), None).asr.expect("start");
        assert_eq!(a.to.to_string(), "enc cuda:0 dec cpu base 10s");
    }

    #[test]
    fn first_start_puts_asr_then_vad_where_they_fit() {
        // (readings, asr, vad, words in the asr reason)
        let table: Vec<(&str, Availability, &str, &str, &str)> = vec![
            ("empty 4 GB card", a1000(300), "enc cuda:0 dec cpu base 10s", "cuda:0", "3.7 GB free ≥ 760 MB estimated need + 300 MB margin"),
            ("room for asr only", a1000(2750), "enc cuda:0 dec cpu base 10s", "cpu", "free ≥ 760 MB"),
            ("room for a smaller context only", cards(&[(2048, 1000)]), "enc cuda:0 dec cpu base 5s", "cpu", "passed over enc cuda dec cpu base 10s: 1.0 GB free < 760 MB estimated need + 300 MB margin"),
            ("already critical", a1000(3600), "cpu base 10s", "cpu", "496 MB free < 760 MB estimated need"),
            ("no driver", Availability::NoGpu(NO_DRIVER.to_owned()), "cpu base 10s", "cpu", NO_DRIVER),
            ("most free of several", cards(&[(8192, 6000), (8192, 1000), (8192, 3000)]), "enc cuda:1 dec cpu base 10s", "cuda:1", "7.0 GB free"),
        ];
        for (name, readings, asr, vad, why) in table {
            let mut sim = Sim::new();
            let d = sim.tick(&readings, None);
            let (a, v) = (d.asr.expect(name), d.vad.expect(name));
            assert_eq!(
                (a.to.to_string().as_str(), v.to.to_string().as_str()),
                (asr, vad),
                "{name}"
            );
            assert_eq!(
                (a.switch, v.switch),
                (Switch::Start, Switch::Start),
                "{name}"
            );
            assert!(a.reason.to_string().contains(why), "{name}: {}", a.reason);
            assert!(!d.hold_asr_requests, "{name}");
        }
    }

    #[test]
    fn without_a_gpu_everything_runs_on_the_cpu_and_says_why() {
        let mut sim = Sim::new();
        let none = Availability::NoGpu(NO_DRIVER.to_owned());
        let d = sim.tick(&none, None);
        assert_eq!(
            d.asr.expect("asr").reason.to_string(),
            format!("asr: start on cpu base 10s: no GPU: {NO_DRIVER}")
        );
        assert_eq!(
            d.vad.expect("vad").reason.to_string(),
            format!("vad: start on cpu: no GPU: {NO_DRIVER}")
        );
        assert_eq!(
            d.report,
            vec![format!("no GPU: {NO_DRIVER}: everything runs on the CPU")]
        );
        assert_eq!(d.history.no_gpu_reason(), Some(NO_DRIVER));
        // Said once; nothing moves afterwards, and no step-up without a GPU.
        sim.run(100, |_| none.clone());
        assert_eq!(sim.changes.len(), 2);
        assert_eq!(sim.reports.len(), 1);
    }

    #[test]
    fn nvml_vanishing_moves_gpu_workers_to_the_cpu_after_a_grace_period() {
        let mut sim = Sim::on_gpu(0);
        sim.run(5, |_| a1000(1200));
        assert!(sim.changes.is_empty());
        let gone = Availability::NoGpu("NVML cannot count devices: GPU is lost".to_owned());
        // t = 5, 6, 7: within the grace period, a missing reading moves nothing.
        sim.run(3, |_| gone.clone());
        assert!(sim.changes.is_empty(), "{:?}", sim.changes);
        sim.run(1, |_| gone.clone());
        assert_eq!(
            sim.changes,
            vec![
                (
                    8,
                    Role::Asr,
                    "cpu base 10s".to_owned(),
                    Switch::MakeBeforeBreak
                ),
                (8, Role::Vad, "cpu".to_owned(), Switch::MakeBeforeBreak)
            ]
        );
        assert!(
            sim.reasons[0].ends_with("no GPU: NVML cannot count devices: GPU is lost"),
            "{}",
            sim.reasons[0]
        );
        // One good reading inside the grace period restarts the grace clock.
        let mut sim = Sim::on_gpu(0);
        sim.run(10, |t| if t == 2 { a1000(1200) } else { gone.clone() });
        assert_eq!(sim.changes.first().map(|c| c.0), Some(6));
    }

    #[test]
    fn out_of_memory_steps_down_to_the_next_rung_that_fits() {
        // (free memory after the failure, learned need of the failed rung, expected placement, reason)
        let table = [
            (
                310,
                "asr: enc cuda:0 dec cpu base 10s → cpu base 10s: out of memory at load, 310 MB free < 1.2 GB learned need",
                "cpu base 10s",
            ),
            (2000, "asr: enc cuda:0 dec cpu base 10s → enc cuda:0 dec cpu base 5s: out of memory at load, 2.0 GB free ≥ 1.2 GB learned need", "enc cuda:0 dec cpu base 5s"),
        ];
        for (free, reason, want) in table {
            let mut sim = Sim::new();
            sim.h.learn_asr(&rung(0, Some(0)), 1200);
            sim.cur.asr = Worker {
                placement: Some(rung(0, Some(0))),
                state: WorkerState::Absent,
                pid: None,
            };
            sim.cur.vad = Worker::ready(Device::Cpu, None);
            let d = sim.tick(
                &a1000(4096 - free),
                Some(fail(Role::Asr, FailureClass::OutOfMemory, false)),
            );
            let c = d.asr.expect("a new place");
            assert_eq!(c.to.to_string(), want);
            assert_eq!(c.switch, Switch::Start);
            assert!(c.reason.to_string().starts_with(reason), "{}", c.reason);
            assert!(d.vad.is_none());
        }
    }

    #[test]
    fn a_cuda_fault_retries_the_same_rung_once_then_abandons_it() {
        let mut sim = Sim::on_gpu(0);
        let fault = || Some(fail(Role::Asr, FailureClass::CudaFault, true));
        let plenty = a1000(1000);
        let d = sim.tick(&plenty, fault());
        let c = d.asr.expect("retry");
        assert_eq!(c.to, rung(0, Some(0)));
        assert!(
            c.reason.to_string().contains(
                "CUDA fault while serving, 3.0 GB free ≥ 760 MB estimated need: retrying once"
            ),
            "{}",
            c.reason
        );
        let d = sim.tick(&plenty, fault());
        let c = d.asr.expect("step down");
        assert_eq!(c.to, rung(1, Some(0)));
        assert!(
            c.reason.to_string().contains("rung abandoned"),
            "{}",
            c.reason
        );
        assert_eq!(
            d.history
                .banned()
                .get(&encoder_ladder().asr[0].key())
                .map(String::as_str),
            Some("CUDA fault 2 times")
        );
        // Remembered: however long memory stays plentiful, the abandoned rung is not used again.
        sim.run(600, |_| plenty.clone());
        assert_eq!(sim.asr(), "enc cuda:0 dec cpu base 5s");
        // A CUDA fault with memory too short to retry steps down at once, without a ban.
        let mut sim = Sim::on_gpu(0);
        sim.cur.vad = Worker::ready(Device::Cpu, None);
        let d = sim.tick(&a1000(3400), fault());
        assert_eq!(
            d.asr.expect("down").to,
            Placement::cpu(ModelSize::Base, 10.0)
        );
        assert!(d.history.banned().is_empty());
    }

    #[test]
    fn faults_far_apart_each_get_their_retry() {
        let mut sim = Sim::on_gpu(0);
        let fault = || Some(fail(Role::Asr, FailureClass::CudaFault, true));
        sim.tick(&a1000(1000), fault());
        sim.run(700, |_| a1000(1000));
        let d = sim.tick(&a1000(1000), fault());
        assert_eq!(d.asr.expect("retry").to, rung(0, Some(0)));
    }

    #[test]
    fn other_failures_restart_in_place_until_the_restart_policy_escalates() {
        let table = [
            (
                FailureClass::Crash(11),
                false,
                "enc cuda:0 dec cpu base 10s",
                "crash (SIGSEGV) while serving: restarting in place",
            ),
            (
                FailureClass::Hang,
                false,
                "enc cuda:0 dec cpu base 10s",
                "hang while serving: restarting in place",
            ),
            (
                FailureClass::Crash(11),
                true,
                "enc cuda:0 dec cpu base 5s",
                "crash (SIGSEGV) while serving, restart limit reached",
            ),
            (
                FailureClass::Load,
                false,
                "enc cuda:0 dec cpu base 5s",
                "failed to load",
            ),
        ];
        for (class, escalated, want, why) in table {
            let mut sim = Sim::on_gpu(0);
            let ev = FailureEvent {
                escalated,
                ..fail(Role::Asr, class, true)
            };
            let c = sim.tick(&a1000(1000), Some(ev)).asr.expect("a place");
            assert_eq!(c.to.to_string(), want, "{class}");
            assert!(c.reason.to_string().contains(why), "{}", c.reason);
        }
    }

    #[test]
    fn a_rung_that_cannot_load_on_cuda_is_abandoned_for_good() {
        // The tiny-en encoder fails to initialise on CUDA (gpu-machine.md).
        let mut cfg = config();
        cfg.ladder.asr =
            Ladder::parse_asr(&["device=cuda model=tiny", "model=tiny"]).expect("parses");
        let mut sim = Sim::with(cfg);
        sim.tick(&a1000(300), None);
        assert_eq!(sim.asr(), "cuda:0 tiny 10s");
        sim.cur.asr.state = WorkerState::Absent;
        let d = sim.tick(
            &a1000(300),
            Some(fail(Role::Asr, FailureClass::Load, false)),
        );
        assert_eq!(d.asr.expect("down").reason.to_string(), "asr: cuda:0 tiny 10s → cpu tiny 10s: failed to load, 3.7 GB free ≥ 750 MB estimated need: rung abandoned");
        sim.run(300, |_| a1000(300));
        assert_eq!(sim.asr(), "cpu tiny 10s");
    }

    #[test]
    fn a_memory_hog_moves_the_vad_first_then_steps_asr_down_holding_requests() {
        let mut sim = Sim::new();
        // Ours: 760 (asr) + 100 (vad) over a desktop's 300; the hog's share is on top.
        let ours = |sim: &Sim| {
            (if sim.vad() == "cuda:0" { 100 } else { 0 })
                + if sim.asr().contains("cuda:0") { 760 } else { 0 }
        };
        sim.tick(&a1000(300), None);
        assert_eq!(
            (sim.asr().as_str(), sim.vad().as_str()),
            ("enc cuda:0 dec cpu base 10s", "cuda:0")
        );
        // (second, hog MB, asr, vad, hold)
        let table = [
            (1, 2000, "enc cuda:0 dec cpu base 10s", "cuda:0", false), // 83 %: warning only
            (2, 2500, "enc cuda:0 dec cpu base 10s", "cpu", false),    // 89 %: critical, VAD leaves
            (3, 2500, "enc cuda:0 dec cpu base 10s", "cpu", false),
            (4, 2900, "enc cuda:0 dec cpu base 10s", "cpu", true), // 97 %: emergency, settling
            (5, 2900, "cpu base 10s", "cpu", true),                // settled: ASR steps down
            (6, 2900, "cpu base 10s", "cpu", false),               // off the GPU: requests flow
        ];
        for (t, hog, asr, vad, hold) in table {
            assert_eq!(sim.t, s(t));
            let used = 300 + hog + ours(&sim);
            let d = sim.tick(&a1000(used), None);
            assert_eq!(
                (sim.asr().as_str(), sim.vad().as_str(), d.hold_asr_requests),
                (asr, vad, hold),
                "at {t} s, {used} MB used"
            );
        }
        assert_eq!(
            sim.changes[2],
            (2, Role::Vad, "cpu".to_owned(), Switch::MakeBeforeBreak)
        );
        assert_eq!(
            sim.changes[3],
            (
                5,
                Role::Asr,
                "cpu base 10s".to_owned(),
                Switch::MakeBeforeBreak
            )
        );
        assert!(
            sim.reasons[2].starts_with(
                "vad: cuda:0 → cpu: cuda:0 at 89.3% (3.6 GB of 4.0 GB) ≥ critical 87.5%"
            ),
            "{}",
            sim.reasons[2]
        );
        assert!(sim.reasons[3].starts_with("asr: enc cuda:0 dec cpu base 10s → cpu base 10s: cuda:0 at 96.6% (3.9 GB of 4.0 GB) ≥ emergency 95%"), "{}", sim.reasons[3]);
        for want in [
            "warning (≥ 80%)",
            "critical (≥ 87.5%)",
            "emergency (≥ 95%)",
            "asr requests held",
            "asr requests released",
        ] {
            assert!(
                sim.reports.iter().any(|r| r.contains(want)),
                "{want} not in {:?}",
                sim.reports
            );
        }
    }

    #[test]
    fn under_emergency_asr_steps_one_rung_when_that_rung_clears_it() {
        // Learned footprints that make the 5 s context worth it on a 16 GB card.
        let mut sim = Sim::on_gpu(0);
        sim.cur.vad = Worker::ready(Device::Cpu, None);
        sim.h.learn_asr(&rung(0, Some(0)), 1500);
        sim.h.learn_asr(&rung(1, Some(0)), 900);
        let d = sim.tick(&cards(&[(16384, 15600)]), None);
        let c = d.asr.expect("step down");
        assert_eq!(
            (c.to, c.switch),
            (rung(1, Some(0)), Switch::BreakBeforeMake)
        );
        assert!(d.hold_asr_requests);
    }

    #[test]
    fn the_hog_leaving_brings_workers_back_after_hysteresis_and_the_sustained_period() {
        let mut sim = Sim::new();
        sim.cur.asr = Worker::ready(Placement::cpu(ModelSize::Base, 10.0), None);
        sim.cur.vad = Worker::ready(Device::Cpu, None);
        // Free 1.4 GB: the ASR's top rung fits (760 + 300) but not with the 500 MB hysteresis,
        // so only the small VAD goes back, after the sustained 30 s.
        sim.run(120, |_| a1000(2700));
        assert!(fits(&rung(0, Some(0)), &a1000(2700), &sim.h, &sim.cfg).is_ok());
        assert_eq!(
            sim.changes,
            vec![(30, Role::Vad, "cuda:0".to_owned(), Switch::MakeBeforeBreak)]
        );
        // The hog leaves at 120 s: ASR back up 30 s later, not before, make-before-break.
        sim.run(30, |_| a1000(300));
        assert_eq!(sim.changes.len(), 1, "{:?}", sim.changes);
        sim.run(1, |_| a1000(300));
        assert_eq!(
            sim.changes[1],
            (
                150,
                Role::Asr,
                "enc cuda:0 dec cpu base 10s".to_owned(),
                Switch::MakeBeforeBreak
            )
        );
        assert!(sim.reasons[1].contains("stepping up: cuda:0 has had ≥ 760 MB estimated need + 300 MB margin + 500 MB hysteresis free for 30 s"), "{}", sim.reasons[1]);
    }

    #[test]
    fn a_rung_left_by_out_of_memory_waits_twice_as_long_to_come_back() {
        let mut sim = Sim::new();
        sim.cur.asr = Worker {
            placement: Some(rung(0, Some(0))),
            state: WorkerState::Absent,
            pid: None,
        };
        sim.cur.vad = Worker::ready(Device::Cpu, None);
        sim.tick(
            &a1000(1000),
            Some(fail(Role::Asr, FailureClass::OutOfMemory, false)),
        );
        assert_eq!(sim.asr(), "enc cuda:0 dec cpu base 5s");
        sim.run(60, |_| a1000(1000));
        assert_eq!(sim.changes.len(), 2, "promoted early: {:?}", sim.changes);
        sim.run(1, |_| a1000(1000));
        assert_eq!(sim.asr(), "enc cuda:0 dec cpu base 10s");
        assert_eq!(sim.changes[2].0, 61);
    }

    #[test]
    fn flapping_readings_never_make_the_placement_oscillate() {
        // Memory flapping every second between roomy and critical: the VAD leaves once and
        // nothing comes back up.
        let mut sim = Sim::on_gpu(0);
        sim.run(300, |t| a1000(if t % 2 == 0 { 1000 } else { 3700 }));
        assert_eq!(
            sim.changes,
            vec![(1, Role::Vad, "cpu".to_owned(), Switch::MakeBeforeBreak)]
        );
        // Hovering around the VAD's critical threshold: one move, no return (coming back would
        // need the hysteresis below critical).
        let mut sim = Sim::on_gpu(0);
        sim.run(300, |t| a1000(if t % 3 == 0 { 3600 } else { 3500 }));
        assert_eq!(sim.changes.len(), 1, "{:?}", sim.changes);
        // Flapping into emergency: ASR only ever steps down, at most once per rung.
        let mut sim = Sim::on_gpu(0);
        sim.run(300, |t| a1000(if t % 2 == 0 { 600 } else { 4000 }));
        let asr: Vec<_> = sim.changes.iter().filter(|c| c.1 == Role::Asr).collect();
        assert!(asr.len() <= encoder_ladder().asr.len(), "{asr:?}");
        let ladder = encoder_ladder();
        let rungs: Vec<usize> = sim
            .changes
            .iter()
            .filter(|c| c.1 == Role::Asr)
            .map(|c| {
                (0..ladder.asr.len())
                    .find(|i| ladder.asr[*i].resolve(Some(0)).to_string() == c.2)
                    .expect("on the ladder")
            })
            .collect();
        assert!(rungs.windows(2).all(|w| w[0] < w[1]), "{rungs:?}");
    }

    #[test]
    fn several_gpus_most_free_wins_and_pins_are_kept() {
        let readings = cards(&[(8192, 6000), (8192, 1000)]);
        assert_eq!(
            fits(&rung(0, Some(0)), &readings, &History::default(), &config()),
            Ok(())
        );
        let mut sim = Sim::new();
        sim.tick(&readings, None);
        assert_eq!(
            (sim.asr().as_str(), sim.vad().as_str()),
            ("enc cuda:1 dec cpu base 10s", "cuda:1")
        );
        let mut cfg = config();
        cfg.ladder.asr[0] = "encoder=cuda:0 decoder=cpu model=base context=10"
            .parse()
            .expect("parses");
        cfg.ladder.vad = Ladder::parse_vad("cuda:0, cpu").expect("parses");
        let mut sim = Sim::with(cfg);
        sim.tick(&readings, None);
        assert_eq!(
            (sim.asr().as_str(), sim.vad().as_str()),
            ("enc cuda:0 dec cpu base 10s", "cuda:0")
        );
    }

    #[test]
    fn an_xid_marks_the_device_suspect_and_workers_move_off_it() {
        // Two GPUs: both workers move to the other one.
        let mut sim = Sim::on_gpu(0);
        let d = sim.tick(&with_xid(cards(&[(8192, 2000), (8192, 1000)]), 0, 79), None);
        let (a, v) = (d.asr.expect("asr moves"), d.vad.expect("vad moves"));
        assert_eq!(
            (a.to, v.to, a.switch),
            (rung(0, Some(1)), Device::Cuda(1), Switch::MakeBeforeBreak)
        );
        assert_eq!(a.reason.to_string(), "asr: enc cuda:0 dec cpu base 10s → enc cuda:1 dec cpu base 10s: cuda:0 suspect (Xid 79)");
        assert!(
            d.report
                .iter()
                .any(|r| r.contains("cuda:0: Xid 79: device suspect")),
            "{:?}",
            d.report
        );
        assert_eq!(
            d.history.suspect_devices().get(&0).map(String::as_str),
            Some("Xid 79")
        );
        // Remembered: nothing goes back, however empty the device looks.
        sim.run(300, |_| cards(&[(8192, 0), (8192, 2000)]));
        assert_eq!(
            (sim.asr().as_str(), sim.vad().as_str()),
            ("enc cuda:1 dec cpu base 10s", "cuda:1")
        );
        // One GPU: to the CPU.
        let mut sim = Sim::on_gpu(0);
        sim.tick(&with_xid(a1000(1000), 0, 48), None);
        assert_eq!(
            (sim.asr().as_str(), sim.vad().as_str()),
            ("cpu base 10s", "cpu")
        );
        // An application Xid (our own worker's fault: a trapping kernel raised Xid 43 on the
        // H100) is reported, not held against the device.
        let mut sim = Sim::on_gpu(0);
        let d = sim.tick(&with_xid(a1000(1000), 0, 43), None);
        assert!(d.asr.is_none() && d.vad.is_none());
        assert!(d.history.suspect_devices().is_empty());
        assert!(
            d.report
                .iter()
                .any(|r| r.contains("Xid 43 (an application fault")),
            "{:?}",
            d.report
        );
    }

    #[test]
    fn emergency_holds_asr_requests_only_while_asr_is_on_that_device() {
        let cfg = config();
        // (asr placement, asr state, hold)
        let table = [
            (rung(0, Some(0)), WorkerState::Ready, true),
            (rung(0, Some(0)), WorkerState::Starting, true),
            (rung(0, Some(0)), WorkerState::Absent, false),
            (
                Placement::cpu(ModelSize::Base, 10.0),
                WorkerState::Ready,
                false,
            ),
        ];
        for (p, state, hold) in table {
            let cur = Current {
                vad: Worker::ready(Device::Cpu, None),
                asr: Worker {
                    placement: Some(p),
                    state,
                    pid: None,
                },
            };
            let d = decide(&a1000(4000), &History::default(), &cur, None, &cfg, s(100));
            assert_eq!(d.hold_asr_requests, hold, "{p} {state:?}");
            if state == WorkerState::Starting {
                assert!(
                    d.asr.is_none(),
                    "no new change while one is being carried out"
                );
            }
        }
        // On another device's emergency, ASR keeps serving.
        let cur = Current {
            vad: Worker::ready(Device::Cpu, None),
            asr: Worker::ready(rung(0, Some(1)), None),
        };
        let d = decide(
            &cards(&[(4096, 4000), (4096, 1000)]),
            &History::default(),
            &cur,
            None,
            &cfg,
            s(100),
        );
        assert!(!d.hold_asr_requests && d.asr.is_none());
    }

    #[test]
    fn measured_footprints_replace_estimates() {
        let cfg = config();
        let p = rung(0, Some(0));
        let mut h = History::default();
        // 1.3 GB free: the 760 MB estimate fits, a measured 1.2 GB does not.
        let readings = a1000(2800);
        assert_eq!(fits(&p, &readings, &h, &cfg), Ok(()));
        h.learn_asr(&p, 1200);
        assert_eq!(
            fits(&p, &readings, &h, &cfg),
            Err("1.3 GB free < 1.2 GB learned need + 300 MB margin".to_owned())
        );
        // Keys ignore which GPU: what was learned on cuda:0 holds for cuda:1.
        assert_eq!(h.footprint(&rung(0, Some(1)).key()), Some(1200));
        h.learn_asr(&Placement::cpu(ModelSize::Base, 10.0), 999);
        assert_eq!(
            h.footprint(&Placement::cpu(ModelSize::Base, 10.0).key()),
            None
        );
        h.learn_vad(Device::Cuda(0), 120);
        assert_eq!(h.footprint("vad cuda"), Some(120));
        // A running worker's own measured use counts as released when it steps down.
        let cur = Current {
            vad: Worker::ready(Device::Cpu, None),
            asr: Worker::ready(p, Some(4242)),
        };
        let mut r = cards(&[(16384, 15600)]);
        if let Availability::Available(g) = &mut r {
            g.devices[0].processes.push((4242, 1500));
        }
        h.learn_asr(&rung(1, None), 900);
        let d = decide(&r, &h, &cur, None, &cfg, s(100));
        assert_eq!(d.asr.expect("down").to, rung(1, Some(0)));
    }

    #[test]
    fn fits_table() {
        let cfg = config();
        // Thresholds out of the way, to test the margin alone.
        let loose = PlacementConfig {
            thresholds: Thresholds {
                critical: Threshold::Pct(100.0),
                emergency: Threshold::Pct(100.0),
                ..Thresholds::default()
            },
            ..PlacementConfig::default()
        };
        let h = History::default();
        let mut suspect = History::default();
        suspect.suspect.insert(0, "Xid 79".to_owned());
        let p = rung(0, Some(0));
        type Row<'a> = (
            &'a str,
            Placement,
            Availability,
            &'a History,
            &'a PlacementConfig,
            Result<(), &'a str>,
        );
        let table: Vec<Row> = vec![
            (
                "cpu always fits",
                Placement::cpu(ModelSize::Tiny, 3.0),
                Availability::NoGpu("x".into()),
                &h,
                &cfg,
                Ok(()),
            ),
            ("roomy", p, a1000(1000), &h, &cfg, Ok(())),
            (
                "exactly need + margin",
                p,
                a1000(4096 - 1060),
                &h,
                &loose,
                Ok(()),
            ),
            (
                "one short",
                p,
                a1000(4096 - 1059),
                &h,
                &loose,
                Err("1.0 GB free < 760 MB estimated need + 300 MB margin"),
            ),
            (
                "no gpu",
                p,
                Availability::NoGpu("no devices".into()),
                &h,
                &cfg,
                Err("no GPU: no devices"),
            ),
            (
                "missing device",
                rung(0, Some(3)),
                a1000(0),
                &h,
                &cfg,
                Err("cuda:3 not found"),
            ),
            (
                "suspect",
                p,
                a1000(0),
                &suspect,
                &cfg,
                Err("cuda:0 is suspect (Xid 79)"),
            ),
            (
                "fits but crosses critical",
                p,
                cards(&[(81920, 71000)]),
                &h,
                &cfg,
                Err("would leave cuda:0 at 87.5% ≥ critical 87.5%"),
            ),
        ];
        for (name, p, r, h, cfg, want) in table {
            let got = fits(&p, &r, h, cfg);
            match want {
                Ok(()) => assert_eq!(got, Ok(()), "{name}"),
                Err(w) => assert!(
                    got.as_ref().is_err_and(|e| e.contains(w)),
                    "{name}: {got:?}"
                ),
            }
        }
        assert_eq!(
            fits_vad(Device::Cuda(0), &a1000(3600), &h, &cfg).map_err(|e| e.contains("critical")),
            Err(true)
        );
        assert_eq!(fits_vad(Device::Cpu, &a1000(4096), &h, &cfg), Ok(()));
    }

    #[test]
    fn memory_recovery_table() {
        // (free before stop, free now, released by the worker, recovered)
        let table = [
            (1000, 1000, 800, false),
            (1000, 1599, 800, false),
            (1000, 1600, 800, true), // exactly 75 %
            (1000, 1900, 800, true),
            (1000, 900, 800, false), // something else allocated meanwhile
            (1000, 1000, 0, true),   // nothing to wait for
            (u64::MAX, u64::MAX, u64::MAX, false),
        ];
        for (before, now, released, want) in table {
            assert_eq!(
                memory_recovered(before, now, released),
                want,
                "{before} {now} {released}"
            );
        }
    }

    #[test]
    fn thresholds_in_percent_or_megabytes() {
        let d = card(0, 4096, 3600);
        let table = [
            (Thresholds::default(), Pressure::Critical),
            (
                Thresholds {
                    warning: Threshold::UsedMb(1000),
                    critical: Threshold::UsedMb(3000),
                    emergency: Threshold::UsedMb(3500),
                },
                Pressure::Emergency,
            ),
            (
                Thresholds {
                    warning: Threshold::UsedMb(3600),
                    critical: Threshold::UsedMb(3700),
                    emergency: Threshold::UsedMb(3800),
                },
                Pressure::Warning,
            ),
            (
                Thresholds {
                    warning: Threshold::Pct(90.0),
                    ..Thresholds::default()
                },
                Pressure::Critical,
            ),
        ];
        for (t, want) in table {
            assert_eq!(pressure(&d, &t), want, "{t:?}");
        }
        assert_eq!(
            pressure(&card(0, 4096, 0), &Thresholds::default()),
            Pressure::Normal
        );
        let g = GpuConfig {
            warning_pct: 70.0,
            critical_pct: 80.0,
            emergency_pct: 90.0,
            ..GpuConfig::default()
        };
        assert_eq!(
            PlacementConfig::from_gpu_config(&g).thresholds.critical,
            Threshold::Pct(80.0)
        );
        let g = GpuConfig {
            critical_mb: Some(3500),
            ..g
        };
        let t = PlacementConfig::from_gpu_config(&g).thresholds;
        assert_eq!(
            (t.warning, t.critical, t.emergency),
            (
                Threshold::Pct(70.0),
                Threshold::UsedMb(3500),
                Threshold::Pct(90.0)
            )
        );
    }

    #[test]
    fn rungs_parse_and_print_round_trip() {
        for text in [
            "encoder=cuda decoder=cpu model=base context=10",
            "encoder=cuda:1 decoder=cpu model=tiny context=2.5",
            "encoder=cpu decoder=cpu model=base context=3",
        ] {
            let r: Rung = text.parse().expect(text);
            assert_eq!(r.to_string(), text);
        }
        let short: Rung = "device=cuda model=tiny context=5s".parse().expect("parses");
        assert_eq!(
            short.to_string(),
            "encoder=cuda decoder=cuda model=tiny context=5"
        );
        assert_eq!(
            Ladder::default()
                .asr
                .iter()
                .map(Rung::label)
                .collect::<Vec<_>>(),
            [
                "cuda base 10s",
                "enc cuda dec cpu base 10s",
                "enc cuda dec cpu base 5s",
                "enc cuda dec cpu base 3s",
                "cpu base 10s",
                "cpu tiny 10s"
            ]
        );
        let bad = [
            ("encoder=tpu", "unknown device"),
            ("model=large", "unknown model"),
            ("context=0", "more than 0"),
            ("context=ten", "expected seconds"),
            ("colour=red", "unknown key"),
            ("encoder", "key=value"),
            ("encoder=cuda:0 decoder=cuda:1", "at most one GPU"),
        ];
        for (text, want) in bad {
            let err = text.parse::<Rung>().expect_err(text);
            assert!(err.contains(want), "{text}: {err}");
        }
        assert!(Ladder::parse_asr(&["model=base", "model=huge"])
            .is_err_and(|e| e.starts_with("asr rung 2:")));
        assert_eq!(
            Ladder::parse_vad("cuda cpu"),
            Ok(vec![Target::Gpu(None), Target::Cpu])
        );
        assert!(Ladder::default().validate().is_ok());
        let gpu_only = Ladder {
            asr: Ladder::parse_asr(&["device=cuda"]).expect("parses"),
            vad: vec![Target::Cpu],
        };
        assert!(gpu_only.validate().is_err());
        let vad_gpu_only = Ladder {
            vad: vec![Target::Gpu(None)],
            ..Ladder::default()
        };
        assert!(vad_gpu_only.validate().is_err());
    }

    #[test]
    fn reasons_render_for_status() {
        let r = Reason {
            role: Role::Asr,
            from: Some("cuda:0 base 10s".into()),
            to: "cuda:0 base 5s".into(),
            why: "out of memory at load, 310 MB free < 1.2 GB learned need".into(),
        };
        assert_eq!(r.to_string(), "asr: cuda:0 base 10s → cuda:0 base 5s: out of memory at load, 310 MB free < 1.2 GB learned need");
        let p = Placement {
            encoder: Device::Cuda(0),
            decoder: Device::Cuda(0),
            model: ModelSize::Base,
            context_s: 10.0,
        };
        assert_eq!(p.to_string(), "cuda:0 base 10s");
        assert_eq!(rung(2, Some(1)).to_string(), "enc cuda:1 dec cpu base 3s");
        assert_eq!(
            Placement::cpu(ModelSize::Tiny, 2.5).to_string(),
            "cpu tiny 2.5s"
        );
        assert_eq!(mb_str(310), "310 MB");
        assert_eq!(mb_str(1229), "1.2 GB");
    }

    #[test]
    fn a_placement_off_the_ladder_is_brought_back_onto_it() {
        let cur = Current {
            vad: Worker::ready(Device::Cpu, None),
            asr: Worker::ready(Placement::cpu(ModelSize::Base, 7.0), None),
        };
        let d = decide(
            &a1000(300),
            &History::default(),
            &cur,
            None,
            &config(),
            s(0),
        );
        let c = d.asr.expect("moved");
        assert_eq!(
            (c.to, c.switch),
            (rung(0, Some(0)), Switch::MakeBeforeBreak)
        );
        assert!(
            c.reason.why.starts_with("not on the configured ladder"),
            "{}",
            c.reason
        );
    }
}
