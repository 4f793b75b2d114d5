//! The live pipeline under supervision: a VAD stage and an ASR stage, each owning a
//! [`Supervised`] worker, joined by an unbounded queue of segments.
//!
//! What is promised here, whatever the workers do:
//! - every segment the segmenter emits is kept until its transcript has been delivered, or it
//!   has been quarantined after killing the worker twice; transcripts leave in order, once;
//! - audio that arrives while the VAD worker restarts waits in the audio queue and is replayed,
//!   so speech spanning a crash is still segmented; frames in flight are sent again;
//! - if the VAD worker cannot be kept running, an energy detector in the supervisor takes over;
//!   if the ASR worker cannot, segments wait until it returns. Both are reported;
//! - with a journal ([`PipelineConfig::journal`]), every segment is on disk from the moment the
//!   segmenter closes it (the open one as a draft, flushed every [`vad::DRAFT_EVERY`]) until its
//!   transcript has been delivered, and what an earlier run left is transcribed first.
//!
//! One file per stage: [`vad`] (audio → segments) and [`asr`] (segments → transcripts); what
//! they share (configuration, commands, counters) is here.

mod asr;
mod vad;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;
use swictation_proto::{Fault, Role};
use tokio::sync::{mpsc, watch};

use crate::io::journal::{Entry, Journal};
use crate::io::launch::LaunchConfig;
use crate::report::board::Board;
use crate::report::status::DaemonState;
use crate::supervision::engine::SegmentText;
use crate::supervision::placer::{Hold, Order, Placer};
use crate::supervision::supervised::{Canary, Stats, Supervised};
use swictation_policy::restart::RestartPolicy;
use swictation_policy::segmenter::{Segment, SegmenterConfig};

/// How often GPU readings are taken and placement decided (the seed: every second).
const PLACEMENT_EVERY: Duration = Duration::from_secs(1);

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
    /// The speech journal (none: segments are kept in memory only, as the soak does).
    pub journal: Option<Journal>,
    /// Entries an earlier run left in the journal: transcribed first, before new speech.
    pub replay: Vec<Entry>,
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
            journal: None,
            replay: Vec::new(),
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
        if let Err(why) = &canary {
            crate::log_error!("{why}");
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
        let (vad_commands, asr_commands) = match control {
            Some(StageReceiversHandle(f)) => (Some(f.vad), Some(f.asr)),
            None => (None, None),
        };
        // The placement monitor: every second, read the GPUs and hand each stage its moves.
        let (vad_orders_tx, vad_orders) = mpsc::unbounded_channel::<Order>();
        let (asr_orders_tx, asr_orders) = mpsc::unbounded_channel::<Order>();
        let held = placer.as_ref().map(|p| p.held());
        let monitor = placer.map(|p| {
            AbortOnDrop(tokio::spawn(async move {
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
            }))
        });
        let (seg_tx, seg_rx) = mpsc::unbounded_channel::<Queued>();
        let shared = Shared { board, counters };
        // If this future is dropped (the daemon gives up waiting on a stop), the stages go too,
        // and with them the workers (killed on drop).
        let mut vad_task = AbortOnDrop(tokio::spawn(vad::run(
            vad,
            cfg.segmenter.clone(),
            cfg.journal.clone(),
            audio,
            seg_tx,
            Inbox {
                commands: vad_commands,
                orders: vad_orders,
                held: None,
            },
            shared.clone(),
        )));
        let mut asr_task = AbortOnDrop(tokio::spawn(
            asr::AsrStage::new(
                asr,
                seg_rx,
                deliver,
                Inbox {
                    commands: asr_commands,
                    orders: asr_orders,
                    held,
                },
                shared.clone(),
                cfg,
            )
            .run(),
        ));
        let mut vad = (&mut vad_task.0).await.context("VAD stage panicked")?;
        let (mut asr, quarantined) = (&mut asr_task.0).await.context("ASR stage panicked")?;
        drop(monitor);
        tokio::join!(vad.shutdown(), asr.shutdown());
        let stats = |s: &Supervised| s.stats().lock().map(|s| s.clone()).unwrap_or_default();
        let counters = shared.counters;
        Ok(Report {
            segments_in: counters.segments_in.load(Ordering::Relaxed),
            delivered: counters.delivered.load(Ordering::Relaxed),
            quarantined,
            vad: stats(&vad),
            asr: stats(&asr),
        })
    }
}

/// A task aborted when its handle is dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
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

/// What a stage hears besides its data: daemon commands, placement orders, and (ASR only) the
/// placer's hold on requests.
struct Inbox {
    commands: Option<mpsc::UnboundedReceiver<StageCommand>>,
    orders: mpsc::UnboundedReceiver<Order>,
    held: Option<watch::Receiver<Option<Hold>>>,
}

/// A segment on its way to the ASR stage, with its journal entry.
struct Queued {
    seg: Segment,
    /// The entry that keeps it on disk, to be retired once its text is delivered.
    journal: Option<String>,
    /// Replayed from an earlier run's journal.
    recovered: bool,
}

/// What both stages report to: the status board and the pipeline's counters.
#[derive(Clone)]
struct Shared {
    board: Board,
    counters: Arc<Counters>,
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

#[cfg(test)]
mod tests {
    use super::*;
    use swictation_proto::VAD_FRAME;

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
