//! Carrying out the placement policy: the glue between [`crate::placement::decide`] (pure), the
//! GPU probe, and the supervised workers.
//!
//! One [`Placer`] is shared by both stages. It keeps the policy's [`History`] and its view of
//! both workers ([`Current`]), and is consulted at four moments:
//! - **before every spawn** ([`Placer::before_spawn`]): a fresh reading, and the rung the worker
//!   starts on. This is the check before every spawn: a GPU rung whose need no longer fits is
//!   passed over for the next one.
//! - **after every failure** ([`Placer::on_failure`]): wait (bounded) for the dead worker's VRAM
//!   to show as free, then let the failure move the ladder (out of memory → next rung, ...).
//! - **after every start** ([`Placer::on_ready`]): learn the worker's real VRAM from NVML.
//! - **every second** ([`Placer::tick`]): pressure and recovery. Changes for serving workers come
//!   back as [`Order`]s that each stage carries out between requests, make-before-break where
//!   both fit at once.
//!
//! The circuit breaker ([`Placer::held`]) tells the ASR stage to keep requests queued.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use swictation_proto::{Device, Role};
use tokio::sync::watch;

use crate::failure::FailureClass;
use crate::gpu::{Availability, GpuProbe};
use crate::pipeline::EngineConfig;
use crate::placement::{
    decide, memory_recovered, Current, Decision, FailureEvent, History, Placement, PlacementConfig,
    Reason, Switch, Threshold, WorkerState, RECOVERY_CAP, RECOVERY_POLL,
};
use crate::status::{Event, GpuStatus};
use crate::supervised::Board;
use crate::worker::WorkerCommand;

/// Where a worker goes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Spot {
    /// The VAD on a device.
    Vad(Device),
    /// The ASR worker at a placement.
    Asr(Placement),
}

impl std::fmt::Display for Spot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Spot::Vad(d) => write!(f, "{d}"),
            Spot::Asr(p) => write!(f, "{p}"),
        }
    }
}

/// A move decided while a worker serves, for its stage to carry out between requests.
#[derive(Debug, Clone)]
pub struct Order {
    /// Which worker.
    pub role: Role,
    /// Where to.
    pub to: Spot,
    /// How to start it there.
    pub command: WorkerCommand,
    /// Make-before-break or break-before-make.
    pub switch: Switch,
    /// Why, for status and the event stream.
    pub reason: Reason,
}

struct State {
    history: History,
    current: Current,
    last: Availability,
    /// A placement decided moments ago for a role's next start (after a failure, or in a
    /// break-before-make move), with when: the next start takes it as decided if it is fresh,
    /// rather than judging it again by a stricter rule (a step down under emergency may leave
    /// the card above critical; a fresh start there may not).
    committed: [Option<(Spot, Instant)>; 2],
    /// Xid errors read but not yet decided on: a probe delivers each once, and not every read
    /// is followed by a decision.
    pending_xids: Vec<(u32, u64)>,
}

/// How long a committed placement stays fresh enough to start without a new decision.
const COMMIT_FRESH: Duration = Duration::from_secs(2);

fn slot(role: Role) -> usize {
    match role {
        Role::Vad => 0,
        Role::Asr => 1,
    }
}

/// The shared placement state; see the module documentation.
pub struct Placer {
    cfg: PlacementConfig,
    engine: EngineConfig,
    board: Board,
    epoch: Instant,
    probe: Mutex<Box<dyn GpuProbe>>,
    state: Mutex<State>,
    hold: watch::Sender<bool>,
    /// Time spent suspended so far, at the last tick (see [`suspended_so_far`]).
    asleep: Mutex<Option<Duration>>,
}

/// Time the machine has spent suspended since boot: `CLOCK_BOOTTIME` counts suspend,
/// `CLOCK_MONOTONIC` does not. Works with or without logind, and needs no D-Bus.
pub fn suspended_so_far() -> Option<Duration> {
    use nix::time::{clock_gettime, ClockId};
    let boot = Duration::from(clock_gettime(ClockId::CLOCK_BOOTTIME).ok()?);
    let mono = Duration::from(clock_gettime(ClockId::CLOCK_MONOTONIC).ok()?);
    Some(boot.saturating_sub(mono))
}

/// Whether the machine slept between two [`suspended_so_far`] readings, and for how long
/// (shorter gaps are clock noise).
pub fn slept(before: Duration, now: Duration) -> Option<Duration> {
    let gap = now.saturating_sub(before);
    (gap >= Duration::from_secs(2)).then_some(gap)
}

impl Placer {
    /// A placer reading `probe`, deciding by `cfg`, building worker commands from `engine`.
    pub fn new(
        probe: Box<dyn GpuProbe>,
        cfg: PlacementConfig,
        engine: EngineConfig,
        board: Board,
    ) -> Arc<Self> {
        let described = probe.describe();
        let described = if engine.simulate_gpu {
            format!("{described}; GPU placements run on the CPU")
        } else {
            described
        };
        crate::log_info!("GPU readings: {described}");
        board.update(|s| s.gpu_probe = Some(described));
        let (hold, _) = watch::channel(false);
        let placer = Arc::new(Self {
            cfg,
            engine,
            board,
            epoch: Instant::now(),
            probe: Mutex::new(probe),
            state: Mutex::new(State {
                history: History::default(),
                current: Current {
                    vad: crate::placement::Worker::unplaced(),
                    asr: crate::placement::Worker::unplaced(),
                },
                last: Availability::NoGpu("not read yet".into()),
                committed: [None, None],
                pending_xids: Vec::new(),
            }),
            hold,
            asleep: Mutex::new(suspended_so_far()),
        });
        placer.read();
        placer
    }

    /// The circuit breaker: `true` while new ASR requests must wait.
    pub fn held(&self) -> watch::Receiver<bool> {
        self.hold.subscribe()
    }

    /// Where `role` is placed now (or is being started), in words.
    pub fn placement_of(&self, role: Role) -> Option<String> {
        let st = self.state.lock().ok()?;
        match role {
            Role::Vad => st.current.vad.placement.map(|d| d.to_string()),
            Role::Asr => st.current.asr.placement.map(|p| p.to_string()),
        }
    }

    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    /// Read the probe, remember the reading and publish it (GPU line and each worker's VRAM).
    fn read(&self) -> Availability {
        let mut r = match self.probe.lock() {
            Ok(mut p) => p.read(),
            Err(_) => Availability::NoGpu("the GPU probe panicked earlier".into()),
        };
        let pids = match self.state.lock() {
            Ok(mut st) => {
                if self.engine.simulate_gpu {
                    self.add_simulated_use(&mut r, &st.current);
                }
                if let Availability::Available(g) = &r {
                    st.pending_xids.extend(g.xid_errors.iter().copied());
                }
                st.last = r.clone();
                [
                    (Role::Vad, st.current.vad.pid),
                    (Role::Asr, st.current.asr.pid),
                ]
            }
            Err(_) => [(Role::Vad, None), (Role::Asr, None)],
        };
        self.publish(&r, pids);
        r
    }

    /// Simulated GPU placements hold no real VRAM, so a scripted reading (memory used by
    /// everything else) gets our workers' estimated needs added, as NVML would show them: a
    /// worker that stops frees its share, one that starts takes it.
    fn add_simulated_use(&self, r: &mut Availability, c: &Current) {
        let Availability::Available(g) = r else {
            return;
        };
        let live = |s: WorkerState| s != WorkerState::Absent;
        let mut uses: Vec<(u32, Option<u32>, u64)> = Vec::new();
        if let (Some(Device::Cuda(n)), true) = (c.vad.placement, live(c.vad.state)) {
            uses.push((n, c.vad.pid, self.cfg.estimates.vad_mb));
        }
        if let (Some(p), true) = (c.asr.placement, live(c.asr.state)) {
            if let Some(n) = p.gpu() {
                uses.push((n, c.asr.pid, self.cfg.estimates.asr_mb(&p)));
            }
        }
        for (n, pid, mb) in uses {
            if let Some(d) = g.devices.iter_mut().find(|d| d.index == n) {
                d.used_mb = (d.used_mb + mb).min(d.total_mb);
                d.free_mb = d.total_mb - d.used_mb;
                if let Some(pid) = pid {
                    d.processes.push((pid, mb));
                }
            }
        }
    }

    fn publish(&self, r: &Availability, pids: [(Role, Option<u32>); 2]) {
        let t = &self.cfg.thresholds;
        let pct = |th: Threshold, total: u64| match th {
            Threshold::Pct(p) => p,
            Threshold::UsedMb(mb) if total > 0 => (mb as f64 * 100.0 / total as f64) as f32,
            Threshold::UsedMb(_) => 0.0,
        };
        let asr_gpu = self
            .state
            .lock()
            .ok()
            .and_then(|st| st.current.asr.placement.and_then(|p| p.gpu()));
        match r {
            Availability::Available(g) => {
                // The card ASR uses, else the one with the most free memory.
                let shown = asr_gpu
                    .and_then(|i| g.device(i))
                    .or_else(|| g.devices.iter().max_by_key(|d| d.free_mb));
                let gpu = shown.map(|d| GpuStatus {
                    name: format!("cuda:{} {}", d.index, d.name),
                    used_mb: d.used_mb,
                    free_mb: d.free_mb,
                    total_mb: d.total_mb,
                    warning_pct: pct(t.warning, d.total_mb),
                    critical_pct: pct(t.critical, d.total_mb),
                    emergency_pct: pct(t.emergency, d.total_mb),
                });
                let vram: Vec<(Role, Option<u64>)> = pids
                    .iter()
                    .map(|(role, pid)| {
                        let mb =
                            pid.and_then(|pid| g.devices.iter().find_map(|d| d.process_mb(pid)));
                        (*role, mb)
                    })
                    .collect();
                self.board.update(|s| {
                    s.gpu = gpu;
                    s.gpu_unavailable = None;
                    for w in &mut s.workers {
                        if let Some((_, mb)) = vram.iter().find(|(r, _)| r.as_str() == w.role) {
                            w.vram_mb = *mb;
                        }
                    }
                });
            }
            Availability::NoGpu(why) => {
                let why = format!("{why}: everything runs on the CPU");
                self.board.update(|s| {
                    s.gpu = None;
                    s.gpu_unavailable = Some(why);
                    for w in &mut s.workers {
                        w.vram_mb = None;
                    }
                });
            }
        }
    }

    /// Run the policy, keep its history, report what it has to say, set the circuit breaker.
    fn decide_now(
        &self,
        st: &mut State,
        readings: &Availability,
        event: Option<&FailureEvent>,
    ) -> Decision {
        let mut readings = readings.clone();
        if let Availability::Available(g) = &mut readings {
            g.xid_errors = std::mem::take(&mut st.pending_xids);
        }
        let d = decide(
            &readings,
            &st.history,
            &st.current,
            event,
            &self.cfg,
            self.now(),
        );
        st.history = d.history.clone();
        for line in &d.report {
            crate::log_warn!("gpu: {line}");
            self.board.emit(Event::GpuNotice {
                message: line.clone(),
            });
        }
        let held = d.hold_asr_requests;
        if *self.hold.borrow() != held {
            self.hold.send_replace(held);
            self.board.update(|s| s.asr_held = held);
        }
        d
    }

    /// Say where a worker goes and why: log, event stream, status.
    fn announce(&self, reason: &Reason, to: Spot) {
        crate::log_info!("placement: {reason}");
        self.board.emit(Event::PlacementChanged {
            role: reason.role.as_str().into(),
            from: reason.from.clone().unwrap_or_default(),
            to: reason.to.clone(),
            reason: reason.why.clone(),
        });
        let (label, why) = (reason.to.clone(), reason.why.clone());
        self.board.update_worker(reason.role, |w| {
            w.placement = Some(label);
            w.placement_reason = Some(why);
            if let Spot::Asr(p) = to {
                w.context_s = Some(p.context_s);
            }
        });
    }

    fn command(&self, to: Spot) -> WorkerCommand {
        match to {
            Spot::Vad(d) => self.engine.vad_command_at(d),
            Spot::Asr(p) => self.engine.asr_command_at(&p),
        }
    }

    /// Where `role` starts now: decided afresh from a new reading (with the worker absent), so a
    /// GPU rung is used only if it fits at this moment. Returns the command to start it with.
    pub fn before_spawn(&self, role: Role) -> WorkerCommand {
        let readings = self.read();
        let mut guard = match self.state.lock() {
            Ok(g) => g,
            Err(_) => {
                return self.command(match role {
                    Role::Vad => Spot::Vad(Device::Cpu),
                    Role::Asr => Spot::Asr(Placement::cpu(
                        crate::placement::ModelSize::Base,
                        self.engine.context_s,
                    )),
                })
            }
        };
        let st = &mut *guard;
        set_state(&mut st.current, role, WorkerState::Absent, None);
        if let Some((to, at)) = st.committed[slot(role)].take() {
            if at.elapsed() <= COMMIT_FRESH {
                set_spot(&mut st.current, to);
                set_state(&mut st.current, role, WorkerState::Starting, None);
                return self.command(to);
            }
        }
        let d = self.decide_now(st, &readings, None);
        let to = match role {
            Role::Vad => {
                let before = st.current.vad.placement;
                let to = d
                    .vad
                    .as_ref()
                    .map(|c| c.to)
                    .or(before)
                    .unwrap_or(Device::Cpu);
                if let Some(c) = d.vad.as_ref().filter(|c| Some(c.to) != before) {
                    self.announce(&c.reason, Spot::Vad(to));
                }
                st.current.vad.placement = Some(to);
                Spot::Vad(to)
            }
            Role::Asr => {
                let before = st.current.asr.placement;
                let to = d
                    .asr
                    .as_ref()
                    .map(|c| c.to)
                    .or(before)
                    .or_else(|| self.cfg.ladder.asr.last().map(|r| r.resolve(None)))
                    .unwrap_or_else(|| {
                        Placement::cpu(crate::placement::ModelSize::Base, self.engine.context_s)
                    });
                if let Some(c) = d.asr.as_ref().filter(|c| Some(c.to) != before) {
                    self.announce(&c.reason, Spot::Asr(to));
                }
                st.current.asr.placement = Some(to);
                Spot::Asr(to)
            }
        };
        set_state(&mut st.current, role, WorkerState::Starting, None);
        self.command(to)
    }

    /// The VRAM `role`'s worker held at the last reading, with its device and that device's
    /// free memory then: what to wait for after it stops.
    fn held_by(&self, role: Role) -> Option<(u32, u64, u64)> {
        let st = self.state.lock().ok()?;
        let (gpu, pid) = match role {
            Role::Vad => (
                match st.current.vad.placement {
                    Some(Device::Cuda(n)) => Some(n),
                    _ => None,
                },
                st.current.vad.pid,
            ),
            Role::Asr => (
                st.current.asr.placement.and_then(|p| p.gpu()),
                st.current.asr.pid,
            ),
        };
        let (gpu, pid) = (gpu?, pid?);
        let Availability::Available(r) = &st.last else {
            return None;
        };
        let d = r.device(gpu)?;
        Some((gpu, d.process_mb(pid)?, d.free_mb))
    }

    /// Wait (at most [`RECOVERY_CAP`]) until the memory a stopped worker held shows as free:
    /// NVML's figure lags a process's exit, and placing by it too early repeats the failure.
    async fn wait_released(&self, held: Option<(u32, u64, u64)>) {
        let Some((gpu, mb, free_before)) = held else {
            return;
        };
        let start = Instant::now();
        loop {
            tokio::time::sleep(RECOVERY_POLL).await;
            let free = match self.read() {
                Availability::Available(r) => r.device(gpu).map_or(0, |d| d.free_mb),
                Availability::NoGpu(_) => return,
            };
            if memory_recovered(free_before, free, mb) {
                return;
            }
            if start.elapsed() >= RECOVERY_CAP {
                crate::log_warn!(
                    "cuda:{gpu}: {mb} MB of a stopped worker not yet shown as free after {} s; placing anyway",
                    RECOVERY_CAP.as_secs()
                );
                return;
            }
        }
    }

    /// A worker failed: wait for its memory, then let the failure move it down the ladder (the
    /// next [`Placer::before_spawn`] starts it where this decided, if that still fits).
    pub async fn on_failure(
        &self,
        role: Role,
        class: FailureClass,
        after_ready: bool,
        escalated: bool,
    ) {
        let held = self.held_by(role);
        self.wait_released(held).await;
        let readings = self.read();
        let Ok(mut guard) = self.state.lock() else {
            return;
        };
        let st = &mut *guard;
        set_state(&mut st.current, role, WorkerState::Absent, None);
        let event = FailureEvent {
            role,
            class,
            at: self.now(),
            after_ready,
            escalated,
        };
        let d = self.decide_now(st, &readings, Some(&event));
        let change = match role {
            Role::Vad => d.vad.map(|c| (Spot::Vad(c.to), c.reason)),
            Role::Asr => d.asr.map(|c| (Spot::Asr(c.to), c.reason)),
        };
        if let Some((to, reason)) = change {
            let before = match role {
                Role::Vad => st.current.vad.placement.map(Spot::Vad),
                Role::Asr => st.current.asr.placement.map(Spot::Asr),
            };
            if before != Some(to) {
                self.announce(&reason, to);
            }
            set_spot(&mut st.current, to);
            st.committed[slot(role)] = Some((to, Instant::now()));
        }
    }

    /// A worker passed its canary: note it serving, and learn its real VRAM there.
    pub fn on_ready(&self, role: Role, pid: u32) {
        if let Ok(mut st) = self.state.lock() {
            set_state(&mut st.current, role, WorkerState::Ready, Some(pid));
        }
        let readings = self.read();
        if self.engine.simulate_gpu {
            // Simulated use is the estimate itself: nothing to learn.
            return;
        }
        let Availability::Available(r) = readings else {
            return;
        };
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        match role {
            Role::Vad => {
                if let Some(d @ Device::Cuda(n)) = st.current.vad.placement {
                    if let Some(mb) = r.device(n).and_then(|g| g.process_mb(pid)) {
                        st.history.learn_vad(d, mb);
                        crate::log_info!("vad on {d} holds {mb} MB of GPU memory (learned)");
                    }
                }
            }
            Role::Asr => {
                if let Some(p) = st.current.asr.placement {
                    if let Some(mb) = p.gpu().and_then(|n| r.device(n)?.process_mb(pid)) {
                        st.history.learn_asr(&p, mb);
                        crate::log_info!("asr at {p} holds {mb} MB of GPU memory (learned)");
                    }
                }
            }
        }
    }

    /// A worker was stopped on purpose.
    pub fn on_stopped(&self, role: Role) {
        if let Ok(mut st) = self.state.lock() {
            set_state(&mut st.current, role, WorkerState::Absent, None);
        }
    }

    /// The once-a-second look: read, decide, and return the moves for serving workers. After a
    /// suspend, the GPU workers are restarted first.
    pub fn tick(&self) -> Vec<Order> {
        let now = suspended_so_far();
        let before = self
            .asleep
            .lock()
            .ok()
            .and_then(|mut a| std::mem::replace(&mut *a, now));
        if let Some(gap) = before.zip(now).and_then(|(b, n)| slept(b, n)) {
            let orders = self.after_suspend(gap);
            if !orders.is_empty() {
                return orders;
            }
        }
        let readings = self.read();
        let Ok(mut guard) = self.state.lock() else {
            return Vec::new();
        };
        let st = &mut *guard;
        let d = self.decide_now(st, &readings, None);
        let changes = [
            (
                Role::Asr,
                d.asr.map(|c| (Spot::Asr(c.to), c.switch, c.reason)),
            ),
            (
                Role::Vad,
                d.vad.map(|c| (Spot::Vad(c.to), c.switch, c.reason)),
            ),
        ];
        let mut orders = Vec::new();
        for (role, change) in changes {
            let Some((to, switch, reason)) = change else {
                continue;
            };
            let serving = match role {
                Role::Vad => st.current.vad.state,
                Role::Asr => st.current.asr.state,
            } == WorkerState::Ready;
            // Only a serving worker is moved; one starting or absent is placed when it starts.
            if serving {
                orders.push(self.order(&mut st.current, to, switch, reason));
            }
        }
        orders
    }

    /// An order moving `to`'s worker, which counts as starting until the order is carried out.
    /// Its pid stays: the VRAM it holds is what a break-before-make start waits to see freed.
    fn order(&self, current: &mut Current, to: Spot, switch: Switch, reason: Reason) -> Order {
        let role = match to {
            Spot::Vad(_) => Role::Vad,
            Spot::Asr(_) => Role::Asr,
        };
        let pid = match role {
            Role::Vad => current.vad.pid,
            Role::Asr => current.asr.pid,
        };
        set_state(current, role, WorkerState::Starting, pid);
        Order {
            role,
            to,
            command: self.command(to),
            switch,
            reason,
        }
    }

    /// The machine slept for `gap`: a CUDA context that lived through a suspend fails later with
    /// "unspecified launch failure", so every serving worker on a GPU is restarted in place now
    /// (break-before-make), before speech needs it.
    pub fn after_suspend(&self, gap: Duration) -> Vec<Order> {
        let Ok(mut guard) = self.state.lock() else {
            return Vec::new();
        };
        let st = &mut *guard;
        let why = format!(
            "resumed from suspend ({} s asleep): restarting GPU workers before a stale CUDA context fails with \"unspecified launch failure\"",
            gap.as_secs()
        );
        let mut orders = Vec::new();
        let vad = (st.current.vad.state == WorkerState::Ready)
            .then_some(st.current.vad.placement)
            .flatten()
            .filter(|d| *d != Device::Cpu)
            .map(Spot::Vad);
        let asr = (st.current.asr.state == WorkerState::Ready)
            .then_some(st.current.asr.placement)
            .flatten()
            .filter(|p| p.gpu().is_some())
            .map(Spot::Asr);
        for (role, to) in [(Role::Vad, vad), (Role::Asr, asr)] {
            let Some(to) = to else { continue };
            let reason = Reason {
                role,
                from: Some(to.to_string()),
                to: to.to_string(),
                why: why.clone(),
            };
            orders.push(self.order(&mut st.current, to, Switch::BreakBeforeMake, reason));
        }
        if !orders.is_empty() {
            crate::log_warn!("{why}");
        }
        orders
    }

    /// The VRAM to wait for before a break-before-make start, read before the old worker stops.
    pub fn release_of(&self, role: Role) -> ReleaseToken {
        ReleaseToken(self.held_by(role))
    }

    /// Break-before-make: the old worker has stopped; wait for its memory, then make `order`
    /// the placement the next start uses (the start still checks that it fits).
    pub async fn take_over(&self, order: &Order, released: ReleaseToken) {
        self.wait_released(released.0).await;
        if let Ok(mut st) = self.state.lock() {
            set_spot(&mut st.current, order.to);
            set_state(&mut st.current, order.role, WorkerState::Absent, None);
            st.committed[slot(order.role)] = Some((order.to, Instant::now()));
        }
        self.announce(&order.reason, order.to);
    }

    /// Make-before-break succeeded: the new worker (`pid`) serves at `order.to`.
    pub fn switched(&self, order: &Order, pid: u32) {
        if let Ok(mut st) = self.state.lock() {
            set_spot(&mut st.current, order.to);
        }
        self.announce(&order.reason, order.to);
        self.on_ready(order.role, pid);
    }

    /// Make-before-break failed: the new placement's worker did not come up. The failure is
    /// remembered against that placement (a ban, a longer wait before trying it again); the old
    /// worker goes on serving where it was.
    pub fn switch_failed(&self, order: &Order, class: FailureClass, why: &str) {
        let Ok(mut guard) = self.state.lock() else {
            return;
        };
        let st = &mut *guard;
        let mut trial = st.current.clone();
        set_spot(&mut trial, order.to);
        set_state(&mut trial, order.role, WorkerState::Starting, None);
        let event = FailureEvent {
            role: order.role,
            class,
            at: self.now(),
            after_ready: false,
            escalated: false,
        };
        let last = st.last.clone();
        let saved = std::mem::replace(&mut st.current, trial);
        let _ = self.decide_now(st, &last, Some(&event));
        st.current = saved;
        let pid = match order.role {
            Role::Vad => st.current.vad.pid,
            Role::Asr => st.current.asr.pid,
        };
        set_state(&mut st.current, order.role, WorkerState::Ready, pid);
        let message = format!(
            "{}: could not move to {} ({class}: {why}); staying where it is",
            order.role, order.to
        );
        crate::log_warn!("placement: {message}");
        self.board.emit(Event::GpuNotice { message });
    }
}

/// Memory a worker held before it was stopped (see [`Placer::release_of`]).
#[derive(Debug, Clone, Copy)]
pub struct ReleaseToken(Option<(u32, u64, u64)>);

fn set_state(c: &mut Current, role: Role, state: WorkerState, pid: Option<u32>) {
    match role {
        Role::Vad => {
            c.vad.state = state;
            c.vad.pid = pid;
        }
        Role::Asr => {
            c.asr.state = state;
            c.asr.pid = pid;
        }
    }
}

fn set_spot(c: &mut Current, to: Spot) {
    match to {
        Spot::Vad(d) => c.vad.placement = Some(d),
        Spot::Asr(p) => c.asr.placement = Some(p),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::ScriptedProbe;

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    /// A placer reading a one-line script, GPU placements simulated, reporting to `board`.
    fn scripted(script: &str, board: Board) -> Arc<Placer> {
        let probe = ScriptedProbe::parse(
            std::path::Path::new("t.jsonl"),
            script,
            Box::new(|| Duration::ZERO),
        )
        .expect("script parses");
        let engine = EngineConfig {
            simulate_gpu: true,
            ..EngineConfig::default()
        };
        Placer::new(Box::new(probe), PlacementConfig::default(), engine, board)
    }

    #[test]
    fn sleep_is_a_jump_of_boottime_over_monotonic() {
        let table = [
            (s(0), s(0), None),
            (s(5), s(5), None),
            (s(5), s(6), None),
            (s(5), s(7), Some(s(2))),
            (s(5), s(3605), Some(s(3600))),
            // The clocks never go back; if they seem to, nothing slept.
            (s(9), s(3), None),
        ];
        for (before, now, want) in table {
            assert_eq!(slept(before, now), want, "{before:?} → {now:?}");
        }
        let a = suspended_so_far().expect("both clocks readable");
        let b = suspended_so_far().expect("both clocks readable");
        assert_eq!(slept(a, b), None, "no suspend between two reads");
    }

    #[test]
    fn after_a_suspend_only_serving_gpu_workers_restart_in_place() {
        let placer = scripted(
            r#"{"at_s": 0, "devices": [{"index": 0, "total_mb": 8192, "used_mb": 1000}]}"#,
            Board::new(),
        );
        // Both start: both on the GPU (room for everything).
        placer.before_spawn(Role::Vad);
        placer.before_spawn(Role::Asr);
        assert_eq!(placer.placement_of(Role::Vad).as_deref(), Some("cuda:0"));
        // Only the VAD is serving yet: only it is restarted.
        placer.on_ready(Role::Vad, 11);
        let orders = placer.after_suspend(s(40));
        assert_eq!(orders.len(), 1);
        let o = &orders[0];
        assert_eq!(
            (o.role, o.to, o.switch),
            (
                Role::Vad,
                Spot::Vad(Device::Cuda(0)),
                Switch::BreakBeforeMake
            )
        );
        assert!(
            o.reason
                .to_string()
                .starts_with("vad: cuda:0 again: resumed from suspend (40 s asleep)"),
            "{}",
            o.reason
        );
        // Now the ASR worker serves on the GPU; the VAD (being restarted) is not ordered twice.
        placer.on_ready(Role::Asr, 12);
        let orders = placer.after_suspend(s(40));
        assert_eq!(
            orders.iter().map(|o| o.role).collect::<Vec<_>>(),
            [Role::Asr]
        );
        // Workers on the CPU keep running through a suspend.
        let cpu = scripted(r#"{"at_s": 0, "no_gpu": "none here"}"#, Board::new());
        cpu.before_spawn(Role::Asr);
        cpu.on_ready(Role::Asr, 13);
        assert_eq!(cpu.placement_of(Role::Asr).as_deref(), Some("cpu base 10s"));
        assert!(cpu.after_suspend(s(40)).is_empty());
    }

    #[test]
    fn an_xid_read_without_a_decision_still_reaches_the_policy() {
        // The script's only Xid is delivered by the very first read (in `Placer::new`, which
        // decides nothing); the first decision must still see it and keep off the card.
        let board = Board::new();
        let placer = scripted(
            r#"{"at_s": 0, "devices": [{"index": 0, "total_mb": 8192, "used_mb": 1000}], "xid_errors": [[0, 79]]}"#,
            board.clone(),
        );
        placer.before_spawn(Role::Asr);
        assert_eq!(
            placer.placement_of(Role::Asr).as_deref(),
            Some("cpu base 10s")
        );
        let why = board
            .snapshot()
            .workers
            .iter()
            .find(|w| w.role == "asr")
            .and_then(|w| w.placement_reason.clone())
            .unwrap_or_default();
        assert!(why.contains("suspect (Xid 79)"), "{why}");
    }
}
