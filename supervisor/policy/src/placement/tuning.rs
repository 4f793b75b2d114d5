//! Tuning of the policy: thresholds, margins, estimates of need (`PlacementConfig`).

use std::fmt;
use std::time::Duration;

use swictation_proto::Device;

use super::*;

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
