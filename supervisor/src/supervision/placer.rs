//! Carrying out the placement policy: the glue between [`swictation_policy::placement::decide`] (pure), the
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
//!
//! Sleep: logind's word, where there is a system bus ([`crate::supervision::sleep`]), comes in through
//! [`Placer::on_sleeping`] (requests are held: no CUDA work while the GPU suspends) and
//! [`Placer::on_woken`]; the clocks (`CLOCK_BOOTTIME` − `CLOCK_MONOTONIC`) tell on their own
//! within a tick of waking. Whichever tells first, the serving GPU workers restart once.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use swictation_proto::{Device, Role};
use tokio::sync::watch;

use crate::io::gpu::{Availability, GpuProbe};
use crate::io::launch::LaunchConfig;
use crate::report::board::Board;
use crate::report::status::{Event, GpuStatus};
use swictation_policy::failure::FailureClass;
use swictation_policy::placement::{
    decide, memory_recovered, Current, Decision, FailureEvent, History, Phase, Placement,
    PlacementConfig, Reason, Spot, Switch, Threshold, RECOVERY_CAP, RECOVERY_POLL,
};

/// A move decided while a worker serves, for its stage to carry out between requests.
#[derive(Debug, Clone)]
pub struct Order {
    /// Which worker.
    pub role: Role,
    /// Where to (the launch code turns it into a command line).
    pub to: Spot,
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
    /// GPU placements are carried out on the CPU (scripted readings, a test option).
    simulate_gpu: bool,
    /// The context window of the CPU placement used when nothing else can be decided.
    context_s: f32,
    board: Board,
    epoch: Instant,
    probe: Mutex<Box<dyn GpuProbe>>,
    state: Mutex<State>,
    hold: watch::Sender<Option<Hold>>,
    /// Time spent suspended so far, at the last tick (see [`suspended_so_far`]).
    asleep: Mutex<Option<Duration>>,
    sleep: Mutex<Sleep>,
}

/// Why new ASR requests are held (see [`Placer::held`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// GPU memory is at the emergency threshold: wait for ASR to step down or the pressure to
    /// pass.
    Memory,
    /// The machine is about to sleep, or has just woken and its GPU workers are restarting.
    Sleep,
}

impl std::fmt::Display for Hold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Hold::Memory => "GPU memory emergency",
            Hold::Sleep => "sleep: GPU work waits for the wake and the restarted GPU workers",
        })
    }
}

/// What logind and the clocks said about sleeping: a small state machine, time passed in.
#[derive(Debug, Default)]
struct Sleep {
    /// The policy's own circuit breaker, which a sleep adds to.
    policy_hold: bool,
    /// Requests are held for a sleep since then: logind said the machine is about to sleep, or
    /// it woke and the restart orders are on their way (monotonic time, which stops while
    /// asleep).
    going: Option<Instant>,
    /// The restart orders went out at the last tick: the hold ends at this one, when the stages
    /// have them ahead of any request.
    release_next: bool,
    /// logind said the machine woke.
    woke: bool,
    /// The last restart after a sleep: when, and who had told of the wake (logind, the clocks).
    restarted: Option<(Instant, bool, bool)>,
}

/// What a tick does about sleep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wake {
    /// Nothing to do.
    No,
    /// Restart the serving GPU workers: the machine woke (as told by logind, the clocks, or
    /// both).
    Restart { by_logind: bool, by_clocks: bool },
}

impl Sleep {
    /// logind: about to sleep. The wake after this one is a new one.
    fn going(&mut self, now: Instant) {
        self.going = Some(now);
        self.restarted = None;
    }

    /// The tick at `now`, the clocks having seen a sleep since the last one or not.
    fn tick(&mut self, now: Instant, clocks_slept: bool) -> Wake {
        if std::mem::take(&mut self.release_next) {
            self.going = None;
        }
        let by_logind = std::mem::take(&mut self.woke);
        if self
            .going
            .is_some_and(|t| now.saturating_duration_since(t) > SLEEP_GIVE_UP)
        {
            crate::log_warn!(
                "logind said the machine would sleep {} s ago but it never did: requests flow again",
                SLEEP_GIVE_UP.as_secs()
            );
            self.going = None;
        }
        if !(by_logind || clocks_slept) {
            return Wake::No;
        }
        // The other one's telling of a wake already acted on: logind and the clocks each tell
        // of every wake, a moment apart. (Two tellings by the same one are two sleeps.)
        if let Some((at, logind, clocks)) = &mut self.restarted {
            let recent = now.saturating_duration_since(*at) <= SAME_WAKE;
            let echo = (by_logind && !*logind && !clocks_slept)
                || (clocks_slept && !*clocks && !by_logind);
            if recent && echo {
                *logind |= by_logind;
                *clocks |= clocks_slept;
                self.going = None;
                return Wake::No;
            }
        }
        self.restarted = Some((now, by_logind, clocks_slept));
        Wake::Restart {
            by_logind,
            by_clocks: clocks_slept,
        }
    }

    /// The restart orders are out (or there were none): requests wait one tick more, so each
    /// stage has its order before any of them reaches a worker whose CUDA context lived
    /// through the sleep.
    fn ordered(&mut self, now: Instant, any: bool) {
        if any {
            self.going.get_or_insert(now);
            self.release_next = true;
        } else {
            self.going = None;
        }
    }

    /// Why requests are held, if they are.
    fn hold(&self) -> Option<Hold> {
        if self.going.is_some() {
            Some(Hold::Sleep)
        } else {
            self.policy_hold.then_some(Hold::Memory)
        }
    }
}

/// One restart per wake: logind and the clocks both tell of it, a moment apart.
const SAME_WAKE: Duration = Duration::from_secs(10);
/// A sleep logind announced but never ended stops holding requests after this long awake
/// (monotonic time stops while the machine sleeps, so a real sleep never runs it out).
const SLEEP_GIVE_UP: Duration = Duration::from_secs(30);

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

/// What a supervised worker tells the placer: the one message type from supervision to
/// placement, applied in one place ([`Placer::tell`]).
#[derive(Debug, Clone)]
pub enum WorkerNews {
    /// It passed its canary and serves, as process `pid`.
    Ready {
        /// Its process.
        pid: u32,
    },
    /// It failed (`after_ready`: while serving; `escalated`: the restart budget is spent).
    Failed {
        /// How.
        class: FailureClass,
        /// Whether it had been serving.
        after_ready: bool,
        /// Whether the restart policy escalated.
        escalated: bool,
    },
    /// It was stopped on purpose.
    Stopped,
    /// `order` was carried out: the worker now serves there as `pid`.
    Switched {
        /// The order.
        order: Order,
        /// The new process.
        pid: u32,
    },
    /// `order` could not be carried out; the old worker (if any) keeps serving.
    SwitchFailed {
        /// The order.
        order: Order,
        /// How the new worker failed.
        class: FailureClass,
        /// Why, in words.
        why: String,
    },
}

impl Placer {
    /// A placer reading `probe`, deciding by `cfg`; `launch` says whether GPU placements are
    /// simulated and the configured context window.
    pub fn new(
        probe: Box<dyn GpuProbe>,
        cfg: PlacementConfig,
        launch: &LaunchConfig,
        board: Board,
    ) -> Arc<Self> {
        let described = probe.describe();
        let described = if launch.simulate_gpu {
            format!("{described}; GPU placements run on the CPU")
        } else {
            described
        };
        crate::log_info!("GPU readings: {described}");
        board.update(|s| s.gpu_probe = Some(described));
        let (hold, _) = watch::channel(None);
        let placer = Arc::new(Self {
            cfg,
            simulate_gpu: launch.simulate_gpu,
            context_s: launch.context_s,
            board,
            epoch: Instant::now(),
            probe: Mutex::new(probe),
            state: Mutex::new(State {
                history: History::default(),
                current: Current {
                    vad: swictation_policy::placement::Slot::unplaced(),
                    asr: swictation_policy::placement::Slot::unplaced(),
                },
                last: Availability::NoGpu("not read yet".into()),
                committed: [None, None],
                pending_xids: Vec::new(),
            }),
            hold,
            asleep: Mutex::new(suspended_so_far()),
            sleep: Mutex::new(Sleep::default()),
        });
        placer.read();
        placer
    }

    /// Apply what `role`'s supervised worker reports (a failure first waits for its memory).
    pub async fn tell(&self, role: Role, news: WorkerNews) {
        match news {
            WorkerNews::Ready { pid } => self.on_ready(role, pid),
            WorkerNews::Failed {
                class,
                after_ready,
                escalated,
            } => self.on_failure(role, class, after_ready, escalated).await,
            WorkerNews::Stopped => self.on_stopped(role),
            WorkerNews::Switched { order, pid } => self.switched(&order, pid),
            WorkerNews::SwitchFailed { order, class, why } => {
                self.switch_failed(&order, class, &why)
            }
        }
    }

    /// The circuit breaker: `Some(why)` while new ASR requests must wait.
    pub fn held(&self) -> watch::Receiver<Option<Hold>> {
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
                if self.simulate_gpu {
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
        let live = |s: Phase| s != Phase::Absent;
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
        self.set_hold(Some(d.hold_asr_requests));
        d
    }

    /// Set the circuit breaker: the policy's (`Some`: its new word) or a sleep's.
    fn set_hold(&self, policy: Option<bool>) {
        let held = match self.sleep.lock() {
            Ok(mut sl) => {
                if let Some(p) = policy {
                    sl.policy_hold = p;
                }
                sl.hold()
            }
            Err(_) => policy.unwrap_or(false).then_some(Hold::Memory),
        };
        if *self.hold.borrow() != held {
            self.hold.send_replace(held);
            self.board.update(|s| {
                s.asr_held = held.is_some();
                s.asr_held_why = held.map(|h| h.to_string());
            });
        }
    }

    /// logind says the machine is about to sleep: hold new ASR requests (they stay queued) so
    /// no CUDA work runs while the GPU suspends, until the wake restarts the GPU workers.
    pub fn on_sleeping(&self) {
        if let Ok(mut sl) = self.sleep.lock() {
            sl.going(Instant::now());
        }
        self.set_hold(None);
        let message =
            "going to sleep (logind): new ASR requests wait until the GPU workers are restarted after waking";
        crate::log_info!("{message}");
        self.board.emit(Event::GpuNotice {
            message: message.into(),
        });
    }

    /// logind says the machine woke: the next tick restarts the serving GPU workers.
    pub fn on_woken(&self) {
        if let Ok(mut sl) = self.sleep.lock() {
            sl.woke = true;
        }
    }

    /// After a sleep (told by logind, or seen in the clocks as `gap` asleep), the orders that
    /// restart the GPU workers, once per wake; and the end of the hold a coming sleep put on.
    fn wake_orders(&self, gap: Option<Duration>) -> Vec<Order> {
        let wake = match self.sleep.lock() {
            Ok(mut sl) => sl.tick(Instant::now(), gap.is_some()),
            Err(_) => Wake::No,
        };
        let Wake::Restart {
            by_logind,
            by_clocks,
        } = wake
        else {
            self.set_hold(None);
            return Vec::new();
        };
        let source = match (by_logind, by_clocks) {
            (true, true) => "logind and the clocks",
            (true, false) => "logind",
            _ => "the clocks",
        };
        crate::log_info!("woke from sleep (told by {source})");
        let orders = self.after_suspend(gap);
        if let Ok(mut sl) = self.sleep.lock() {
            sl.ordered(Instant::now(), !orders.is_empty());
        }
        self.set_hold(None);
        orders
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

    /// Where `role` starts now: decided afresh from a new reading (with the worker absent), so a
    /// GPU rung is used only if it fits at this moment. Returns where to start it (the launch code
    /// turns that into a command line).
    pub fn before_spawn(&self, role: Role) -> Spot {
        let readings = self.read();
        let mut guard = match self.state.lock() {
            Ok(g) => g,
            Err(_) => {
                return match role {
                    Role::Vad => Spot::Vad(Device::Cpu),
                    Role::Asr => Spot::Asr(Placement::cpu(
                        swictation_policy::placement::ModelSize::Base,
                        self.context_s,
                    )),
                }
            }
        };
        let st = &mut *guard;
        set_state(&mut st.current, role, Phase::Absent, None);
        if let Some((to, at)) = st.committed[slot(role)].take() {
            if at.elapsed() <= COMMIT_FRESH {
                set_spot(&mut st.current, to);
                set_state(&mut st.current, role, Phase::Starting, None);
                return to;
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
                        Placement::cpu(
                            swictation_policy::placement::ModelSize::Base,
                            self.context_s,
                        )
                    });
                if let Some(c) = d.asr.as_ref().filter(|c| Some(c.to) != before) {
                    self.announce(&c.reason, Spot::Asr(to));
                }
                st.current.asr.placement = Some(to);
                Spot::Asr(to)
            }
        };
        set_state(&mut st.current, role, Phase::Starting, None);
        to
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
    async fn on_failure(
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
        set_state(&mut st.current, role, Phase::Absent, None);
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
    fn on_ready(&self, role: Role, pid: u32) {
        if let Ok(mut st) = self.state.lock() {
            set_state(&mut st.current, role, Phase::Ready, Some(pid));
        }
        let readings = self.read();
        if self.simulate_gpu {
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
    fn on_stopped(&self, role: Role) {
        if let Ok(mut st) = self.state.lock() {
            set_state(&mut st.current, role, Phase::Absent, None);
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
        let gap = before.zip(now).and_then(|(b, n)| slept(b, n));
        let orders = self.wake_orders(gap);
        if !orders.is_empty() {
            return orders;
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
            } == Phase::Ready;
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
        set_state(current, role, Phase::Starting, pid);
        Order {
            role,
            to,
            switch,
            reason,
        }
    }

    /// The machine slept (for `gap`, where the clocks tell): a CUDA context that lived through a
    /// suspend fails later with "unspecified launch failure", so every serving worker on a GPU
    /// is restarted in place now (break-before-make), before speech needs it.
    pub fn after_suspend(&self, gap: Option<Duration>) -> Vec<Order> {
        let Ok(mut guard) = self.state.lock() else {
            return Vec::new();
        };
        let st = &mut *guard;
        let asleep = gap.map_or(String::new(), |g| format!(" ({} s asleep)", g.as_secs()));
        let why = format!(
            "resumed from suspend{asleep}: restarting GPU workers before a stale CUDA context fails with \"unspecified launch failure\""
        );
        let mut orders = Vec::new();
        let vad = (st.current.vad.state == Phase::Ready)
            .then_some(st.current.vad.placement)
            .flatten()
            .filter(|d| *d != Device::Cpu)
            .map(Spot::Vad);
        let asr = (st.current.asr.state == Phase::Ready)
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
            set_state(&mut st.current, order.role, Phase::Absent, None);
            st.committed[slot(order.role)] = Some((order.to, Instant::now()));
        }
        self.announce(&order.reason, order.to);
    }

    /// Make-before-break succeeded: the new worker (`pid`) serves at `order.to`.
    fn switched(&self, order: &Order, pid: u32) {
        if let Ok(mut st) = self.state.lock() {
            set_spot(&mut st.current, order.to);
        }
        self.announce(&order.reason, order.to);
        self.on_ready(order.role, pid);
    }

    /// Make-before-break failed: the new placement's worker did not come up. The failure is
    /// remembered against that placement (a ban, a longer wait before trying it again); the old
    /// worker goes on serving where it was.
    fn switch_failed(&self, order: &Order, class: FailureClass, why: &str) {
        let Ok(mut guard) = self.state.lock() else {
            return;
        };
        let st = &mut *guard;
        let mut trial = st.current.clone();
        set_spot(&mut trial, order.to);
        set_state(&mut trial, order.role, Phase::Starting, None);
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
        set_state(&mut st.current, order.role, Phase::Ready, pid);
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

fn set_state(c: &mut Current, role: Role, state: Phase, pid: Option<u32>) {
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
    use crate::io::gpu::ScriptedProbe;

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
        let engine = LaunchConfig {
            simulate_gpu: true,
            ..LaunchConfig::default()
        };
        Placer::new(Box::new(probe), PlacementConfig::default(), &engine, board)
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
        let orders = placer.after_suspend(Some(s(40)));
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
        let orders = placer.after_suspend(Some(s(40)));
        assert_eq!(
            orders.iter().map(|o| o.role).collect::<Vec<_>>(),
            [Role::Asr]
        );
        // Workers on the CPU keep running through a suspend.
        let cpu = scripted(r#"{"at_s": 0, "no_gpu": "none here"}"#, Board::new());
        cpu.before_spawn(Role::Asr);
        cpu.on_ready(Role::Asr, 13);
        assert_eq!(cpu.placement_of(Role::Asr).as_deref(), Some("cpu base 10s"));
        assert!(cpu.after_suspend(Some(s(40))).is_empty());
    }

    /// The sleep bookkeeping, step by step: (what happens, seconds after start, the tick's
    /// answer, the hold after it).
    #[test]
    fn sleep_and_wake_table() {
        #[derive(Debug, Clone, Copy)]
        enum Step {
            /// logind: about to sleep.
            Going,
            /// logind: woke.
            Woke,
            /// A tick; the clocks saw a sleep since the last one, or not.
            Tick { clocks: bool },
            /// The restart orders went out (some, or none: no worker on a GPU).
            Ordered { any: bool },
        }
        use Step::*;
        let restart = |by_logind, by_clocks| Wake::Restart {
            by_logind,
            by_clocks,
        };
        // (case, steps with their time in seconds, and after each the tick's answer (for
        // ticks) and the hold)
        type Row = (Step, u64, Option<Wake>, Option<Hold>);
        let cases: Vec<(&str, Vec<Row>)> = vec![
            (
                "logind sleep and wake: hold from the notice until a tick after the orders",
                vec![
                    (Going, 0, None, Some(Hold::Sleep)),
                    (Tick { clocks: false }, 1, Some(Wake::No), Some(Hold::Sleep)),
                    (Woke, 2, None, Some(Hold::Sleep)),
                    (
                        Tick { clocks: true },
                        2,
                        Some(restart(true, true)),
                        Some(Hold::Sleep),
                    ),
                    (Ordered { any: true }, 2, None, Some(Hold::Sleep)),
                    (Tick { clocks: false }, 3, Some(Wake::No), None),
                ],
            ),
            (
                "the clocks first, then logind's word of the same wake: one restart",
                vec![
                    (Going, 0, None, Some(Hold::Sleep)),
                    (
                        Tick { clocks: true },
                        1,
                        Some(restart(false, true)),
                        Some(Hold::Sleep),
                    ),
                    (Ordered { any: true }, 1, None, Some(Hold::Sleep)),
                    (Woke, 1, None, Some(Hold::Sleep)),
                    (Tick { clocks: false }, 2, Some(Wake::No), None),
                ],
            ),
            (
                "logind first, then the clocks at the next tick: one restart",
                vec![
                    (Woke, 0, None, None),
                    (Tick { clocks: false }, 0, Some(restart(true, false)), None),
                    (Ordered { any: true }, 0, None, Some(Hold::Sleep)),
                    (Tick { clocks: true }, 1, Some(Wake::No), None),
                ],
            ),
            (
                "no logind: the clocks alone restart, and hold requests for that one tick",
                vec![
                    (Tick { clocks: true }, 0, Some(restart(false, true)), None),
                    (Ordered { any: true }, 0, None, Some(Hold::Sleep)),
                    (Tick { clocks: false }, 1, Some(Wake::No), None),
                ],
            ),
            (
                "nothing on a GPU: no orders, no hold",
                vec![
                    (Going, 0, None, Some(Hold::Sleep)),
                    (Woke, 5, None, Some(Hold::Sleep)),
                    (
                        Tick { clocks: false },
                        5,
                        Some(restart(true, false)),
                        Some(Hold::Sleep),
                    ),
                    (Ordered { any: false }, 5, None, None),
                ],
            ),
            (
                "two sleeps a minute apart: two restarts",
                vec![
                    (Woke, 0, None, None),
                    (Tick { clocks: true }, 0, Some(restart(true, true)), None),
                    (Ordered { any: true }, 0, None, Some(Hold::Sleep)),
                    (Tick { clocks: false }, 1, Some(Wake::No), None),
                    (Going, 60, None, Some(Hold::Sleep)),
                    (Woke, 61, None, Some(Hold::Sleep)),
                    (
                        Tick { clocks: true },
                        61,
                        Some(restart(true, true)),
                        Some(Hold::Sleep),
                    ),
                ],
            ),
            (
                "no logind: two sleeps 5 s apart awake, two restarts",
                vec![
                    (Tick { clocks: true }, 0, Some(restart(false, true)), None),
                    (Ordered { any: true }, 0, None, Some(Hold::Sleep)),
                    (Tick { clocks: false }, 1, Some(Wake::No), None),
                    (Tick { clocks: true }, 5, Some(restart(false, true)), None),
                ],
            ),
            (
                "logind: a second sleep announced soon after a wake, a second restart",
                vec![
                    (Woke, 0, None, None),
                    (Tick { clocks: true }, 0, Some(restart(true, true)), None),
                    (Ordered { any: true }, 0, None, Some(Hold::Sleep)),
                    (Tick { clocks: false }, 1, Some(Wake::No), None),
                    (Going, 3, None, Some(Hold::Sleep)),
                    (Woke, 4, None, Some(Hold::Sleep)),
                    (
                        Tick { clocks: true },
                        4,
                        Some(restart(true, true)),
                        Some(Hold::Sleep),
                    ),
                ],
            ),
            (
                "a sleep announced and never taken stops holding after 30 s awake",
                vec![
                    (Going, 0, None, Some(Hold::Sleep)),
                    (
                        Tick { clocks: false },
                        29,
                        Some(Wake::No),
                        Some(Hold::Sleep),
                    ),
                    (Tick { clocks: false }, 31, Some(Wake::No), None),
                ],
            ),
        ];
        let start = Instant::now();
        for (case, steps) in cases {
            let mut sl = Sleep::default();
            for (i, (step, at, answer, hold)) in steps.into_iter().enumerate() {
                let now = start + s(at);
                let got = match step {
                    Going => {
                        sl.going(now);
                        None
                    }
                    Woke => {
                        sl.woke = true;
                        None
                    }
                    Tick { clocks } => Some(sl.tick(now, clocks)),
                    Ordered { any } => {
                        sl.ordered(now, any);
                        None
                    }
                };
                assert_eq!(got, answer, "{case}, step {i} ({step:?})");
                assert_eq!(sl.hold(), hold, "{case}, after step {i} ({step:?})");
            }
        }
        // The memory breaker shows when no sleep holds.
        let mut sl = Sleep {
            policy_hold: true,
            ..Sleep::default()
        };
        assert_eq!(sl.hold(), Some(Hold::Memory));
        sl.going(start);
        assert_eq!(sl.hold(), Some(Hold::Sleep));
    }

    #[test]
    fn logind_sleep_holds_requests_and_wake_restarts_gpu_workers_once() {
        let board = Board::new();
        let placer = scripted(
            r#"{"at_s": 0, "devices": [{"index": 0, "total_mb": 8192, "used_mb": 1000}]}"#,
            board.clone(),
        );
        placer.before_spawn(Role::Vad);
        placer.before_spawn(Role::Asr);
        placer.on_ready(Role::Vad, 11);
        placer.on_ready(Role::Asr, 12);
        let held = placer.held();
        assert_eq!(*held.borrow(), None);
        placer.on_sleeping();
        assert_eq!(*held.borrow(), Some(Hold::Sleep));
        assert!(board.snapshot().asr_held);
        // Ticks while the machine is (about to be) asleep move nothing.
        assert!(placer.tick().is_empty());
        placer.on_woken();
        let orders = placer.tick();
        let mut roles: Vec<Role> = orders.iter().map(|o| o.role).collect();
        roles.sort_by_key(|r| slot(*r));
        assert_eq!(roles, [Role::Vad, Role::Asr]);
        assert!(orders.iter().all(|o| o.switch == Switch::BreakBeforeMake
            && o.reason.why.starts_with("resumed from suspend")));
        // Requests wait until the orders are out; the next tick lets them go, and restarts
        // nothing more.
        assert_eq!(*held.borrow(), Some(Hold::Sleep));
        for order in &orders {
            placer.switched(order, 20 + slot(order.role) as u32);
        }
        assert!(placer.tick().is_empty(), "one wake, one restart");
        assert_eq!(*held.borrow(), None);
        assert!(!board.snapshot().asr_held);
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
