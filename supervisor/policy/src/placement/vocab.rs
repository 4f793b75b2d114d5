//! The vocabulary of placement: model sizes, where a component runs (`Target`), a worker's
//! whole placement (`Placement`), rungs and ladders.

use std::fmt;

use swictation_proto::Device;

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
    pub(crate) fn is_gpu(self) -> bool {
        matches!(self, Target::Gpu(_))
    }

    pub(crate) fn resolve(self, gpu: Option<u32>) -> Device {
        match (self, gpu) {
            (Target::Cpu, _) => Device::Cpu,
            (Target::Gpu(Some(n)), _) => Device::Cuda(n),
            (Target::Gpu(None), Some(n)) => Device::Cuda(n),
            // Callers resolve GPU targets only with a chosen GPU; the CPU is the safe reading.
            (Target::Gpu(None), None) => Device::Cpu,
        }
    }

    pub(crate) fn matches(self, d: Device) -> bool {
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
pub(crate) fn secs(s: f32) -> String {
    if s.fract() == 0.0 {
        format!("{s:.0}")
    } else {
        format!("{s}")
    }
}

pub(crate) fn kind(d: Device) -> &'static str {
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
    pub(crate) fn gpu(&self) -> Option<Option<u32>> {
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

    /// The ASR ladder must reach the CPU, or a machine without a GPU could not run.
    pub fn validate_asr(asr: &[Rung]) -> Result<(), String> {
        if asr.iter().any(|r| r.gpu().is_none()) {
            Ok(())
        } else {
            Err("the asr ladder needs a rung with everything on the cpu".to_owned())
        }
    }

    /// The VAD ladder must reach the CPU, or a machine without a GPU could not run.
    pub fn validate_vad(vad: &[Target]) -> Result<(), String> {
        if vad.contains(&Target::Cpu) {
            Ok(())
        } else {
            Err("the vad ladder needs cpu".to_owned())
        }
    }
}

/// Where a worker goes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Spot {
    /// The VAD on a device.
    Vad(Device),
    /// The ASR worker at a placement.
    Asr(Placement),
}

impl fmt::Display for Spot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Spot::Vad(d) => write!(f, "{d}"),
            Spot::Asr(p) => write!(f, "{p}"),
        }
    }
}
