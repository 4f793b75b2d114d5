//! The live pipeline under supervision: a VAD stage and an ASR stage, each owning a
//! [`Supervised`] worker, joined by an unbounded queue of segments.
//!
//! What is promised here, whatever the workers do:
//! - every segment the segmenter emits is kept until its transcript has been delivered, or it
//!   has been quarantined after killing the worker twice; transcripts leave in order, once;
//! - audio that arrives while the VAD worker restarts waits in the audio queue and is replayed,
//!   so speech spanning a crash is still segmented; frames in flight are sent again;
//! - if the VAD worker cannot be kept running, an energy detector in the supervisor takes over;
//!   if the ASR worker cannot, segments wait on disk until it returns. Both are reported.

use std::collections::{BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;
use swictation_proto::{Fault, Role, SAMPLE_RATE, VAD_FRAME};
use tokio::sync::{mpsc, watch};

use crate::io::launch::LaunchConfig;
use crate::report::board::Board;
use crate::report::status::DaemonState;
use crate::supervision::engine::SegmentText;
use crate::supervision::placer::{Hold, Order, Placer};
use crate::supervision::supervised::{CallError, Canary, Stats, Supervised};
use swictation_policy::restart::{RestartPolicy, Verdict};
use swictation_policy::segmenter::{Segment, Segmenter, SegmenterConfig};

/// Most frames sent in one VAD request (2 s): bounds the deadline and the replay on a failure.
const MAX_BATCH_FRAMES: usize = 64;

/// How often an idle ASR worker is pinged (a frozen one is then killed and restarted).
const HEARTBEAT: Duration = Duration::from_secs(1);

/// How often GPU readings are taken and placement decided (the seed: every second).
const PLACEMENT_EVERY: Duration = Duration::from_secs(1);

/// Longest a VAD move waits for a pause in speech.
const ORDER_PATIENCE: Duration = Duration::from_secs(5);

/// Everything the supervised pipeline needs.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// How to start the workers.
    pub engine: LaunchConfig,
    /// Segmentation.
    pub segmenter: SegmenterConfig,
    /// Restart back-off and intensity limit.
    pub policy: RestartPolicy,
    /// Where segments that killed the ASR worker twice are kept (WAV + JSON).
    pub quarantine_dir: PathBuf,
    /// Where segments wait while no ASR worker can run.
    pub pending_dir: PathBuf,
}

impl PipelineConfig {
    /// Defaults with the state directories under `$XDG_STATE_HOME/swictation`.
    pub fn new(engine: LaunchConfig, segmenter: SegmenterConfig) -> Self {
        let state = swictation_proto::paths::state_dir();
        Self {
            engine,
            segmenter,
            policy: RestartPolicy::default(),
            quarantine_dir: state.join("quarantine"),
            pending_dir: state.join("pending"),
        }
    }
}

/// Something the daemon asks of a stage's worker, handled between requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StageCommand {
    /// Stop the worker cleanly and start a fresh one (`swictation restart vad|asr`).
    Restart,
    /// Test-only: make the worker misbehave (honoured only with `allow_faults`).
    Inject(Fault),
    /// Push-to-talk, for the VAD stage's segmenter: `mark` at stream sample `at`.
    Hold {
        /// The stream position (samples fed to the pipeline) the mark applies at.
        at: u64,
        /// What the key did.
        mark: swictation_policy::segmenter::HoldMark,
    },
}

/// Senders for [`StageCommand`]s, one per stage.
#[derive(Clone)]
pub struct StageControl {
    /// Commands for the VAD stage.
    pub vad: mpsc::UnboundedSender<StageCommand>,
    /// Commands for the ASR stage.
    pub asr: mpsc::UnboundedSender<StageCommand>,
}

impl StageControl {
    /// The sender for `role`.
    pub fn for_role(&self, role: Role) -> &mpsc::UnboundedSender<StageCommand> {
        match role {
            Role::Vad => &self.vad,
            Role::Asr => &self.asr,
        }
    }
}

struct StageReceivers {
    vad: mpsc::UnboundedReceiver<StageCommand>,
    asr: mpsc::UnboundedReceiver<StageCommand>,
}

/// Make the stage command channels.
pub fn stage_channels() -> (StageControl, StageReceiversHandle) {
    let (vad_tx, vad) = mpsc::unbounded_channel();
    let (asr_tx, asr) = mpsc::unbounded_channel();
    (
        StageControl {
            vad: vad_tx,
            asr: asr_tx,
        },
        StageReceiversHandle(StageReceivers { vad, asr }),
    )
}

/// The receiving side of [`stage_channels`], handed to [`Pipeline::run`].
pub struct StageReceiversHandle(StageReceivers);

/// Counters of what went through the pipeline, for status and the soak.
#[derive(Debug, Default)]
pub struct Counters {
    /// Segments emitted by the segmenter.
    pub segments_in: AtomicU64,
    /// Transcripts delivered.
    pub delivered: AtomicU64,
    /// Segments quarantined.
    pub quarantined: AtomicU64,
    /// Segments waiting for ASR.
    pub queued: AtomicU64,
    /// Frames scored by the energy detector instead of the VAD worker.
    pub energy_frames: AtomicU64,
    /// Roles running degraded (bit 1: VAD on the energy detector, bit 2: ASR unavailable).
    pub degraded: std::sync::atomic::AtomicU8,
    /// Milliseconds per VAD frame through the worker, per request, not yet taken by the
    /// daemon's latency tracker (the newest [`VAD_TIMINGS_KEPT`] only).
    pub vad_frame_ms: std::sync::Mutex<VecDeque<f64>>,
}

/// How many untaken VAD timings [`Counters::vad_frame_ms`] keeps.
pub const VAD_TIMINGS_KEPT: usize = 4096;

impl Counters {
    /// Take the VAD timings recorded since the last call.
    pub fn take_vad_timings(&self) -> Vec<f64> {
        self.vad_frame_ms
            .lock()
            .map(|mut q| q.drain(..).collect())
            .unwrap_or_default()
    }

    fn record_vad(&self, ms_per_frame: f64) {
        if let Ok(mut q) = self.vad_frame_ms.lock() {
            if q.len() == VAD_TIMINGS_KEPT {
                q.pop_front();
            }
            q.push_back(ms_per_frame);
        }
    }
}

/// What a finished pipeline reports.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// Segments emitted.
    pub segments_in: u64,
    /// Transcripts delivered.
    pub delivered: u64,
    /// Indices of quarantined segments.
    pub quarantined: Vec<u64>,
    /// VAD worker restarts and recovery times.
    #[serde(skip)]
    pub vad: Stats,
    /// ASR worker restarts and recovery times.
    #[serde(skip)]
    pub asr: Stats,
}

/// Handles for watching a running pipeline.
#[derive(Clone)]
pub struct Probe {
    /// Live counters.
    pub counters: Arc<Counters>,
    /// VAD worker stats.
    pub vad: Arc<std::sync::Mutex<Stats>>,
    /// ASR worker stats.
    pub asr: Arc<std::sync::Mutex<Stats>>,
}

/// A supervised pipeline, constructed but not yet running.
pub struct Pipeline {
    cfg: PipelineConfig,
    board: Board,
    vad: Supervised,
    asr: Supervised,
    counters: Arc<Counters>,
    placer: Option<Arc<Placer>>,
}

impl Pipeline {
    /// Prepare both workers (nothing starts until [`Pipeline::start`]).
    pub fn new(cfg: PipelineConfig, board: Board) -> Self {
        let canary = Canary::installed();
        if canary.is_none() {
            crate::log_warn!("canary clip goforward.raw not installed: readiness is proven by the handshake only (run deploy/setup.sh)");
        }
        let e = &cfg.engine;
        let launch = Arc::new(e.clone());
        let vad = Supervised::new(
            Role::Vad,
            launch.clone(),
            e.load_timeout,
            cfg.policy.clone(),
            canary.clone(),
            board.clone(),
        );
        let asr = Supervised::new(
            Role::Asr,
            launch,
            e.load_timeout,
            cfg.policy.clone(),
            canary,
            board.clone(),
        );
        Self {
            cfg,
            board,
            vad,
            asr,
            counters: Arc::new(Counters::default()),
            placer: None,
        }
    }

    /// Let `placer` decide where the workers run (GPU-aware placement); without one they run
    /// where the engine configuration says.
    pub fn with_placer(mut self, placer: Arc<Placer>) -> Self {
        self.vad.set_placer(placer.clone());
        self.asr.set_placer(placer.clone());
        self.placer = Some(placer);
        self
    }

    /// Watch handles.
    pub fn probe(&self) -> Probe {
        Probe {
            counters: self.counters.clone(),
            vad: self.vad.stats(),
            asr: self.asr.stats(),
        }
    }

    /// Start both workers and wait until both are ready (or report why one is not: the pipeline
    /// still runs, degraded, when a worker cannot start).
    pub async fn start(&mut self) {
        let (v, a) = tokio::join!(self.vad.ensure_ready(), self.asr.ensure_ready());
        for (role, r) in [(Role::Vad, v), (Role::Asr, a)] {
            if let Err(f) = r {
                crate::log_error!("{role} worker could not start: {}: {}", f.class, f.reason);
            }
        }
    }

    /// Run until `audio` closes and every segment has been delivered or quarantined, calling
    /// `deliver` with each transcript in order.
    pub async fn run(
        self,
        audio: mpsc::Receiver<Vec<f32>>,
        deliver: impl FnMut(SegmentText) + Send + 'static,
        control: Option<StageReceiversHandle>,
    ) -> Result<Report> {
        let Pipeline {
            cfg,
            board,
            vad,
            asr,
            counters,
            placer,
        } = self;
        let (faults_vad, faults_asr) = match control {
            Some(StageReceiversHandle(f)) => (Some(f.vad), Some(f.asr)),
            None => (None, None),
        };
        // The placement monitor: every second, read the GPUs and hand each stage its moves.
        let (vad_orders_tx, vad_orders) = mpsc::unbounded_channel::<Order>();
        let (asr_orders_tx, asr_orders) = mpsc::unbounded_channel::<Order>();
        let held = placer.as_ref().map(|p| p.held());
        let monitor = placer.map(|p| {
            tokio::spawn(async move {
                let mut every = tokio::time::interval(PLACEMENT_EVERY);
                every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    every.tick().await;
                    let p = p.clone();
                    let orders = tokio::task::spawn_blocking(move || p.tick())
                        .await
                        .unwrap_or_default();
                    for o in orders {
                        let _ = match o.role {
                            Role::Vad => vad_orders_tx.send(o),
                            Role::Asr => asr_orders_tx.send(o),
                        };
                    }
                }
            })
        });
        let (seg_tx, seg_rx) = mpsc::unbounded_channel::<Segment>();
        let vad_task = tokio::spawn(vad_stage(
            vad,
            cfg.segmenter.clone(),
            audio,
            seg_tx,
            Inbox {
                commands: faults_vad,
                orders: vad_orders,
            },
            board.clone(),
            counters.clone(),
        ));
        let asr_task = tokio::spawn(asr_stage(
            asr,
            seg_rx,
            deliver,
            Inbox {
                commands: faults_asr,
                orders: asr_orders,
            },
            held,
            board.clone(),
            counters.clone(),
            cfg,
        ));
        let mut vad = vad_task.await.context("VAD stage panicked")?;
        let (mut asr, quarantined) = asr_task.await.context("ASR stage panicked")?;
        if let Some(m) = monitor {
            m.abort();
        }
        tokio::join!(vad.shutdown(), asr.shutdown());
        let stats = |s: &Supervised| s.stats().lock().map(|s| s.clone()).unwrap_or_default();
        Ok(Report {
            segments_in: counters.segments_in.load(Ordering::Relaxed),
            delivered: counters.delivered.load(Ordering::Relaxed),
            quarantined,
            vad: stats(&vad),
            asr: stats(&asr),
        })
    }
}

/// Speech probability from energy alone: the fallback when no VAD worker can run.
pub fn energy_probability(frame: &[f32]) -> f32 {
    let energy = frame.iter().map(|s| s * s).sum::<f32>() / frame.len().max(1) as f32;
    let db = 10.0 * (energy + 1e-12).log10();
    // Speech in a room sits around -30..-15 dBFS, silence below -50: map -45 dBFS to 0.5.
    1.0 / (1.0 + (-(db + 45.0) / 3.0).exp())
}

/// Record that `role` runs degraded (or no longer does) and derive the daemon's state from it.
fn set_degraded(board: &Board, counters: &Counters, role: Role, on: bool) {
    let bit = match role {
        Role::Vad => 1,
        Role::Asr => 2,
    };
    let mask = if on {
        counters.degraded.fetch_or(bit, Ordering::Relaxed) | bit
    } else {
        counters.degraded.fetch_and(!bit, Ordering::Relaxed) & !bit
    };
    board.update(|s| match (mask, s.state) {
        (0, DaemonState::Degraded) => s.state = DaemonState::Listening,
        (m, DaemonState::Listening) if m != 0 => s.state = DaemonState::Degraded,
        _ => {}
    });
}

/// What a stage hears besides its data: daemon commands and placement orders.
struct Inbox {
    commands: Option<mpsc::UnboundedReceiver<StageCommand>>,
    orders: mpsc::UnboundedReceiver<Order>,
}

async fn vad_stage(
    mut sup: Supervised,
    cfg: SegmenterConfig,
    mut audio: mpsc::Receiver<Vec<f32>>,
    seg_tx: mpsc::UnboundedSender<Segment>,
    inbox: Inbox,
    board: Board,
    counters: Arc<Counters>,
) -> Supervised {
    let Inbox {
        commands: mut faults,
        mut orders,
    } = inbox;
    // A VAD move waits for a pause in speech (a fresh worker starts with fresh Silero state),
    // but not forever.
    let mut order: Option<(Order, Instant)> = None;
    let mut seg = Segmenter::new(cfg);
    let mut pending: VecDeque<f32> = VecDeque::new();
    let mut energy = false;
    let mut done = false;
    let emit = |segments: Vec<Segment>| {
        for s in segments {
            counters.segments_in.fetch_add(1, Ordering::Relaxed);
            counters.queued.fetch_add(1, Ordering::Relaxed);
            let _ = seg_tx.send(s);
        }
    };
    while !done {
        tokio::select! {
            biased;
            Some(cmd) = recv_opt(&mut faults) => {
                if let StageCommand::Hold { at, mark } = cmd {
                    emit(seg.mark(at, mark));
                } else if !energy {
                    command(&mut sup, cmd).await;
                }
                continue;
            }
            Some(o) = orders.recv() => {
                // Carried out below, at once if no speech is in progress.
                order = Some((o, Instant::now()));
            }
            chunk = audio.recv() => match chunk {
                Some(c) => pending.extend(c),
                None => {
                    done = true;
                    let rem = pending.len() % VAD_FRAME;
                    if rem != 0 {
                        pending.extend(std::iter::repeat_n(0.0, VAD_FRAME - rem));
                    }
                }
            }
        }
        while let Ok(c) = audio.try_recv() {
            pending.extend(c);
        }
        if let Some((o, since)) = order.take() {
            if energy {
                // The worker is not running: the next start is placed afresh anyway.
            } else if !seg.in_speech() || since.elapsed() >= ORDER_PATIENCE {
                sup.switch(o).await;
            } else {
                order = Some((o, since));
            }
        }
        while pending.len() >= VAD_FRAME {
            let n = (pending.len() / VAD_FRAME).min(MAX_BATCH_FRAMES) * VAD_FRAME;
            let frames: Vec<f32> = pending.range(..n).copied().collect();
            let probs = loop {
                if energy
                    && sup.next_attempt().is_none_or(|t| t <= Instant::now())
                    && sup.ensure_ready().await.is_ok()
                {
                    energy = false;
                    crate::log_info!("VAD worker is back: leaving the energy detector");
                    set_degraded(&board, &counters, Role::Vad, false);
                }
                if energy {
                    counters
                        .energy_frames
                        .fetch_add((n / VAD_FRAME) as u64, Ordering::Relaxed);
                    break frames
                        .chunks_exact(VAD_FRAME)
                        .map(energy_probability)
                        .collect::<Vec<_>>();
                }
                if let Err(f) = sup.ensure_ready().await {
                    if matches!(f.decision, Verdict::Escalate { .. }) {
                        crate::log_error!(
                            "VAD worker keeps failing ({}): segmenting by energy until it recovers",
                            f.class
                        );
                        energy = true;
                        set_degraded(&board, &counters, Role::Vad, true);
                    }
                    continue;
                }
                let sent = Instant::now();
                match sup.vad_frames(frames.clone()).await {
                    Ok(p) => {
                        let per_frame = sent.elapsed().as_secs_f64() * 1e3 / p.len().max(1) as f64;
                        counters.record_vad(per_frame);
                        break p;
                    }
                    // The worker is gone: the same frames go to its successor.
                    Err(CallError::Failed(_)) => continue,
                    Err(CallError::Rejected(msg)) => {
                        crate::log_warn!(
                            "VAD worker refused frames ({msg}); scoring them by energy"
                        );
                        break frames
                            .chunks_exact(VAD_FRAME)
                            .map(energy_probability)
                            .collect();
                    }
                }
            };
            pending.drain(..n);
            for (frame, p) in frames.chunks_exact(VAD_FRAME).zip(probs) {
                emit(seg.push(frame, p));
            }
        }
    }
    emit(seg.finish());
    sup
}

/// Carry out a daemon command on a stage's worker (between requests, never during one).
async fn command(sup: &mut Supervised, cmd: StageCommand) {
    match cmd {
        StageCommand::Restart => {
            crate::log_info!("restarting the {} worker on request", sup.role());
            sup.shutdown().await;
            let _ = sup.ensure_ready().await;
        }
        StageCommand::Inject(fault) => {
            if sup.ensure_ready().await.is_ok() {
                let _ = sup.inject(fault).await;
            }
        }
        // Only the VAD stage's segmenter holds segments; it handles these itself.
        StageCommand::Hold { .. } => {}
    }
}

async fn recv_opt<T>(rx: &mut Option<mpsc::UnboundedReceiver<T>>) -> Option<T> {
    match rx {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}

#[allow(clippy::too_many_arguments)]
async fn asr_stage(
    mut sup: Supervised,
    mut seg_rx: mpsc::UnboundedReceiver<Segment>,
    mut deliver: impl FnMut(SegmentText) + Send + 'static,
    inbox: Inbox,
    held: Option<watch::Receiver<Option<Hold>>>,
    board: Board,
    counters: Arc<Counters>,
    cfg: PipelineConfig,
) -> (Supervised, Vec<u64>) {
    let Inbox {
        commands: mut faults,
        mut orders,
    } = inbox;
    let mut held = held.unwrap_or_else(|| watch::channel(None).1);
    let mut holding = false;
    let mut queue: VecDeque<(Segment, u32)> = VecDeque::new();
    let mut closed = false;
    let mut quarantined = Vec::new();
    let mut on_disk: BTreeSet<u64> = BTreeSet::new();
    let mut degraded = false;
    loop {
        if queue.is_empty() {
            if closed {
                break;
            }
            tokio::select! {
                biased;
                Some(cmd) = recv_opt(&mut faults) => command(&mut sup, cmd).await,
                Some(o) = orders.recv() => sup.switch(o).await,
                s = seg_rx.recv() => match s {
                    Some(s) => queue.push_back((s, 0)),
                    None => closed = true,
                },
                _ = sup.exited() => {
                    sup.on_exit().await;
                }
                _ = tokio::time::sleep(HEARTBEAT) => {
                    // Idle: prove the worker still answers (a frozen one is killed).
                    if sup.pid().is_some() {
                        let _ = sup.ping(Duration::from_secs(1)).await;
                    }
                }
            }
            // Bring a failed worker back now, before speech needs it.
            if sup.pid().is_none() {
                let _ = sup.ensure_ready().await;
            }
            continue;
        }
        while let Ok(s) = seg_rx.try_recv() {
            queue.push_back((s, 0));
        }
        board.update(|s| s.queue_depth = queue.len());
        if let Some(cmd) = faults.as_mut().and_then(|f| f.try_recv().ok()) {
            command(&mut sup, cmd).await;
        }
        if let Ok(o) = orders.try_recv() {
            sup.switch(o).await;
        }
        // Circuit breaker: while GPU memory is in emergency, requests stay queued (never
        // dropped) until ASR has stepped down or the pressure has passed; so too around a
        // sleep, until the GPU workers have restarted.
        let hold = *held.borrow_and_update();
        if let Some(why) = hold {
            if !holding {
                holding = true;
                crate::log_warn!("holding {} segment(s) for ASR: {why}", queue.len());
            }
            tokio::select! {
                biased;
                Some(o) = orders.recv() => sup.switch(o).await,
                Some(cmd) = recv_opt(&mut faults) => command(&mut sup, cmd).await,
                _ = held.changed() => {}
                _ = tokio::time::sleep(HEARTBEAT) => {}
            }
            continue;
        }
        if holding {
            holding = false;
            crate::log_info!("releasing {} held segment(s) to ASR", queue.len());
        }
        if let Err(f) = sup.ensure_ready().await {
            if matches!(f.decision, Verdict::Escalate { .. }) && !degraded {
                degraded = true;
                crate::log_error!(
                    "ASR worker keeps failing ({}): keeping speech on disk until it recovers",
                    f.class
                );
                set_degraded(&board, &counters, Role::Asr, true);
            }
            if degraded {
                for (s, _) in &queue {
                    if on_disk.insert(s.index) {
                        if let Err(e) = keep_pending(&cfg.pending_dir, s) {
                            crate::log_warn!("cannot keep segment {} on disk: {e:#}", s.index);
                        }
                    }
                }
            }
            continue;
        }
        if degraded {
            degraded = false;
            crate::log_info!(
                "ASR worker is back: transcribing the {} waiting segments",
                queue.len()
            );
            set_degraded(&board, &counters, Role::Asr, false);
        }
        let Some((seg, attempts)) = queue.front_mut() else {
            continue;
        };
        match sup.transcribe(seg.index, seg.samples.clone()).await {
            Ok(text) => {
                let Some((seg, _)) = queue.pop_front() else {
                    continue;
                };
                if on_disk.remove(&seg.index) {
                    let _ =
                        std::fs::remove_file(cfg.pending_dir.join(format!("{:08}.wav", seg.index)));
                }
                counters.delivered.fetch_add(1, Ordering::Relaxed);
                counters.queued.fetch_sub(1, Ordering::Relaxed);
                deliver(SegmentText::new(&seg, text));
            }
            Err(e) => {
                let reason = match &e {
                    CallError::Failed(f) => format!("{}: {}", f.class, f.reason),
                    CallError::Rejected(m) => format!("rejected: {m}"),
                };
                *attempts += 1;
                if *attempts >= 2 {
                    let Some((seg, _)) = queue.pop_front() else {
                        continue;
                    };
                    counters.quarantined.fetch_add(1, Ordering::Relaxed);
                    counters.queued.fetch_sub(1, Ordering::Relaxed);
                    quarantined.push(seg.index);
                    let path = quarantine(&cfg.quarantine_dir, &seg, &reason);
                    crate::log_error!(
                        "segment {} failed twice ({reason}); quarantined at {}",
                        seg.index,
                        path.as_ref()
                            .map(|p| p.display().to_string())
                            .unwrap_or_else(|e| format!("(not written: {e:#})"))
                    );
                    board.update(|s| s.quarantined += 1);
                }
            }
        }
    }
    board.update(|s| s.queue_depth = 0);
    (sup, quarantined)
}

/// Keep a segment that is waiting for ASR on disk (16-bit WAV), so a supervisor restart or a long
/// outage does not lose it.
fn keep_pending(dir: &std::path::Path, seg: &Segment) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    crate::io::audio::write_wav(&dir.join(format!("{:08}.wav", seg.index)), &seg.samples)?;
    Ok(())
}

/// Write a quarantined segment as WAV plus a JSON description; returns the WAV's path.
fn quarantine(dir: &std::path::Path, seg: &Segment, reason: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let base = dir.join(format!("{stamp}-{:08}", seg.index));
    let wav = base.with_extension("wav");
    crate::io::audio::write_wav(&wav, &seg.samples)?;
    let meta = serde_json::json!({
        "segment": seg.index,
        "start_s": seg.start as f64 / SAMPLE_RATE as f64,
        "end_s": seg.end as f64 / SAMPLE_RATE as f64,
        "reason": reason,
        "quarantined_at_unix_s": stamp,
    });
    std::fs::write(
        base.with_extension("json"),
        serde_json::to_vec_pretty(&meta)?,
    )?;
    Ok(wav)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn energy_detector_separates_speech_from_silence() {
        let silence = vec![0.0f32; VAD_FRAME];
        let hiss: Vec<f32> = (0..VAD_FRAME)
            .map(|i| if i % 2 == 0 { 0.001 } else { -0.001 })
            .collect();
        let speech: Vec<f32> = (0..VAD_FRAME)
            .map(|i| 0.1 * (i as f32 * 0.2).sin())
            .collect();
        assert!(energy_probability(&silence) < 0.01);
        assert!(energy_probability(&hiss) < 0.1);
        assert!(energy_probability(&speech) > 0.9);
    }
}
