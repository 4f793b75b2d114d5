//! What the policy decides from: pressure, the workers' current places, failures, history.

use std::collections::BTreeMap;
use std::time::Duration;

use swictation_proto::{Device, Role};

use super::*;
use crate::failure::FailureClass;
use crate::gpu::DeviceReading;

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
pub enum Phase {
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
pub struct Slot<T> {
    /// Where it runs (or last ran); `None` before the first placement.
    pub placement: Option<T>,
    /// Its state.
    pub state: Phase,
    /// Its process id while it has one (to read its VRAM from NVML).
    pub pid: Option<u32>,
}

impl<T> Slot<T> {
    /// A worker not placed yet.
    pub fn unplaced() -> Self {
        Self {
            placement: None,
            state: Phase::Absent,
            pid: None,
        }
    }

    /// A worker serving at `placement`.
    pub fn ready(placement: T, pid: Option<u32>) -> Self {
        Self {
            placement: Some(placement),
            state: Phase::Ready,
            pid,
        }
    }
}

/// Both workers now. While a change is being carried out, report the old placement with state
/// [`Phase::Starting`] until the switch is complete, then the new one as `Ready`.
#[derive(Debug, Clone, PartialEq)]
pub struct Current {
    /// The VAD worker.
    pub vad: Slot<Device>,
    /// The ASR worker.
    pub asr: Slot<Placement>,
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
    pub(crate) cuda_faults: BTreeMap<String, (u32, Duration)>,
    /// Failure-driven step-downs from a rung key: each doubles the wait before returning.
    pub(crate) failures: BTreeMap<String, u32>,
    /// Rungs never to use again, with why.
    pub(crate) banned: BTreeMap<String, String>,
    /// Devices with a critical Xid, with which.
    pub(crate) suspect: BTreeMap<u32, String>,
    /// When the last change was decided.
    pub(crate) last_change: Option<Duration>,
    /// Since when each upper rung (role, key) has had room to step up to.
    pub(crate) room_since: BTreeMap<(&'static str, String), Duration>,
    /// Last pressure per device, to report changes only.
    pub(crate) pressure: BTreeMap<u32, Pressure>,
    /// Why there is no GPU, and since when.
    pub(crate) no_gpu: Option<(String, Duration)>,
    /// Whether ASR requests were held at the last decision (to report changes only).
    pub(crate) holding: bool,
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
