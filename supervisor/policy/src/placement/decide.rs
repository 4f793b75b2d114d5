//! The decision: its output types and [`decide`] itself.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use swictation_proto::{Device, Role};

use super::*;
use crate::failure::FailureClass;
use crate::gpu::Availability;

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
pub(crate) fn mb_str(mb: u64) -> String {
    if mb >= 1024 {
        format!("{:.1} GB", mb as f64 / 1024.0)
    } else {
        format!("{mb} MB")
    }
}

pub(crate) fn pct(used: u64, total: u64) -> String {
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
pub(crate) struct Step {
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

pub(crate) fn asr_steps(cfg: &PlacementConfig, h: &History) -> Vec<Step> {
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

pub(crate) fn vad_steps(cfg: &PlacementConfig, h: &History) -> Vec<Step> {
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
pub(crate) struct Gpu {
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
pub(crate) enum Ceiling {
    Critical,
    Emergency,
}

/// The readings, with memory claimed by placements decided earlier in the same call.
pub(crate) struct View {
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
pub(crate) fn walk_down(
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
pub(crate) struct RoleNow {
    role: Role,
    label: Option<String>,
    rung: Option<usize>,
    gpu: Option<u32>,
    state: Phase,
    /// VRAM it holds on its GPU (measured, else its need).
    usage_mb: u64,
}

pub(crate) fn role_now<T: fmt::Display>(
    role: Role,
    w: &Slot<T>,
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
pub(crate) struct Plan {
    rung: usize,
    gpu: Option<u32>,
    why: String,
    switch: Switch,
}

pub(crate) fn with_skipped(why: String, skipped: &[String]) -> String {
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
pub(crate) fn on_failure(
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
pub(crate) fn plan_role(
    ask: &Ask<'_>,
    event: Option<&FailureEvent>,
    vad_on: Option<u32>,
    h: &mut History,
) -> Option<Plan> {
    let Ask {
        me,
        steps,
        view,
        cfg,
        now,
    } = *ask;
    if let Some(ev) = event.filter(|e| e.role == me.role) {
        if me.rung.is_some() || me.label.is_some() {
            return Some(on_failure(ev, me, steps, view, h, cfg, now));
        }
    }
    match me.state {
        Phase::Absent => return Some(plan_start(ask, h)),
        Phase::Starting => return None,
        Phase::Ready => {}
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
        if let Some(plan) = plan_off_gpu(ask, i, g, vad_on, h) {
            return Some(plan);
        }
    }
    promote(me, i, steps, view, h, cfg, now)
}

/// What planning one role reads: the role as it is, its steps, the readings, the tuning, now.
#[derive(Clone, Copy)]
pub(crate) struct Ask<'a> {
    pub(crate) me: &'a RoleNow,
    pub(crate) steps: &'a [Step],
    pub(crate) view: &'a View,
    pub(crate) cfg: &'a PlacementConfig,
    pub(crate) now: Duration,
}

/// Where an absent worker starts: the best rung that fits from the top (from its last rung after
/// a restart), and why in words.
fn plan_start(ask: &Ask<'_>, h: &History) -> Plan {
    let Ask {
        me,
        steps,
        view,
        cfg,
        ..
    } = *ask;
    let from = if me.label.is_some() {
        me.rung.unwrap_or(0)
    } else {
        0
    };
    let (rung, gpu, skipped) = walk_down(steps, from, view, h, None, Ceiling::Critical, cfg);
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
    Plan {
        rung,
        gpu,
        why,
        switch: Switch::Start,
    }
}

/// A ready worker on GPU `g` at rung `i` that must move down: the device is suspect or gone
/// (forced), or its pressure says so (the VAD at critical; ASR at emergency once the VAD has
/// left the device and the last change has settled). `None`: it may stay.
fn plan_off_gpu(ask: &Ask<'_>, i: usize, g: u32, vad_on: Option<u32>, h: &History) -> Option<Plan> {
    let Ask {
        me,
        steps,
        view,
        cfg,
        now,
    } = *ask;
    let switch_for = |gpu: Option<u32>| {
        if gpu.is_some() && gpu == me.gpu {
            Switch::BreakBeforeMake
        } else {
            Switch::MakeBeforeBreak
        }
    };
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
    let d = view.gpu(g)?;
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
    if !step_down || i + 1 >= steps.len() {
        return None;
    }
    let (name, th) = if d.pressure == Pressure::Emergency {
        ("emergency", cfg.thresholds.emergency)
    } else {
        ("critical", cfg.thresholds.critical)
    };
    let level = format!(
        "cuda:{g} at {} ({} of {}) ≥ {name} {th}",
        pct(d.used, d.total),
        mb_str(d.used),
        mb_str(d.total),
    );
    let (rung, gpu, skipped) = walk_down(
        steps,
        i + 1,
        view,
        h,
        Some((g, me.usage_mb)),
        Ceiling::Emergency,
        cfg,
    );
    Some(Plan {
        rung,
        gpu,
        why: with_skipped(level, &skipped),
        switch: switch_for(gpu),
    })
}

/// Step up to the best rung above `i` that has had room (need + margin + hysteresis, and the
/// device staying below critical by the hysteresis) for the sustained period, doubled per
/// failure at that rung. Any moment without room restarts that rung's clock, so flapping
/// readings never promote.
pub(crate) fn promote(
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
pub(crate) fn observe(
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
/// [`Phase::Absent`] with no placement), and whenever a worker fails (with the event, after
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
    let vad_on = vad_gpu.filter(|_| current.vad.state != Phase::Absent);

    // ASR first: it is the one that benefits from the GPU, so it gets first claim on memory.
    let asr_ask = Ask {
        me: &asr_now,
        steps: &asr_steps,
        view: &view,
        cfg,
        now,
    };
    let asr_plan = plan_role(&asr_ask, event, vad_on, &mut h);
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
    let vad_ask = Ask {
        me: &vad_now,
        steps: &vad_steps,
        view: &view,
        cfg,
        now,
    };
    let vad_plan = plan_role(&vad_ask, event, vad_on, &mut h);
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
    if current.asr.state != Phase::Ready {
        h.room_since.retain(|(role, _), _| *role != "asr");
    }
    if current.vad.state != Phase::Ready {
        h.room_since.retain(|(role, _), _| *role != "vad");
    }

    // Circuit breaker: while ASR sits on a device in emergency, a new request could be the
    // allocation that fails; queue requests until it has moved or the pressure has passed.
    let emergency_on = asr_gpu
        .filter(|_| current.asr.state != Phase::Absent)
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

pub(crate) fn fits_step(
    step: &Step,
    readings: &Availability,
    history: &History,
    cfg: &PlacementConfig,
) -> Result<(), String> {
    View::new(readings, history, cfg)
        .place(step, None, 0, Ceiling::Critical, cfg)
        .map(|_| ())
}
