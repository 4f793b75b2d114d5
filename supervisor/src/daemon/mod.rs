//! The daemon: `swictation daemon` (what the systemd unit starts) and `swictation run`.
//!
//! One main loop owns everything that changes what the daemon does: audio sources, the control
//! commands, the status document, sd_notify. The supervised pipeline ([`Pipeline`]) runs in its
//! own task and the control socket in its own; the loop never awaits either, so a command is
//! answered while the ASR worker is busy on a long segment, and `WATCHDOG=1` (sent only from
//! here) stops when, and only when, this loop stops turning.
//!
//! Audio comes from one of three sources:
//! - capture ([`crate::io::capture`]): events arrive on a channel; the loop batches them into 100 ms
//!   chunks for the pipeline and never blocks on it (a full queue drops and counts audio);
//! - files: played by a task at real-time pace (or as fast as the pipeline takes them), which
//!   discards audio while paused, still at real-time pace, as a microphone would;
//! - standard input: raw s16le 16 kHz mono, read on a thread, paced by whoever writes it.
//!
//! Stopping (SIGTERM, SIGINT, `swictation stop`, or the end of file input) closes the audio
//! queue; the pipeline then finishes the speech already captured, delivers every transcript, and
//! the process exits 0. A stop always ends: after a signal or `swictation stop` the daemon waits
//! at most `[supervision] stop_timeout_s`; after the end of input it waits while an ASR worker
//! can deliver, and at most that long without one; a second SIGINT stops at once. What was not
//! transcribed stays in the speech journal, and the exit message says how much.
//!
//! Every segment is in the journal ([`crate::io::journal`]) until its transcript has been output
//! (the output thread retires it after writing). At start, what an earlier run left is
//! transcribed first; where its text goes is `[journal] recovered`.

use std::collections::VecDeque;
use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::{json, Map};
use swictation_proto::{Role, SAMPLE_RATE};
use tokio::sync::{mpsc, oneshot, watch};

use crate::config::Config;
use crate::config::RecoveredTo;
use crate::io::capture::{self, CaptureConfig, CaptureEvent, CaptureHandle};
use crate::io::control::{Command, ControlCommand, ControlListener};
use crate::io::deliver::{Deliverer, Outgoing};
use crate::io::journal::{Entry, Journal};
use crate::io::launch::LaunchConfig;
use crate::io::notify::Notifier;
use crate::io::output::{Output, Session};
use crate::io::procfs;
use crate::io::recovered::{History, HistoryStore, Recovered, RecoveredStore};
use crate::report::board::Board;
use crate::report::status::{DaemonState, Event, LatencyTrackers};
use crate::supervision::engine::SegmentText;
use crate::supervision::placer::Placer;
use crate::supervision::stages::{
    self, Pipeline, PipelineConfig, Probe, StageCommand, StageControl,
};

mod ptt;

/// Samples per chunk sent to the pipeline: 100 ms.
const CHUNK: usize = SAMPLE_RATE as usize / 10;

/// Chunks the pipeline's audio queue holds: 60 s, so audio keeps arriving while a worker
/// restarts (the VAD stage replays it afterwards) without the loop ever blocking on it.
const AUDIO_QUEUE: usize = 600;

/// How often the status document is refreshed.
const STATUS_EVERY: Duration = Duration::from_secs(1);

/// Silence pushed into the pipeline on pause: longer than the segmenter's default
/// `min_silence_ms` plus its padding, so speech in progress is closed and transcribed now
/// rather than joined to whatever is said after resuming.
const CLOSING_SILENCE: Duration = Duration::from_millis(1500);

/// How long sample positions are remembered for latency measurement.
const TIMELINE_SPAN: Duration = Duration::from_secs(600);

/// Where the audio comes from.
#[derive(Debug, Clone)]
pub enum Input {
    /// Live capture through cpal; `device` as `--device` takes it (`None`: the default input).
    Capture {
        /// Device name, unique part of one, or id.
        device: Option<String>,
    },
    /// Recordings played back to back (a second of silence between them).
    Files {
        /// The recordings.
        paths: Vec<PathBuf>,
        /// Real-time pace (`false`: as fast as the pipeline takes them).
        paced: bool,
    },
    /// Raw s16le 16 kHz mono on standard input.
    Stdin,
}

impl Input {
    /// Whether the input ends by itself (files, stdin): the daemon then exits when it is done.
    pub fn is_finite(&self) -> bool {
        !matches!(self, Input::Capture { .. })
    }

    fn describe(&self) -> String {
        match self {
            Input::Capture { device } => device.clone().unwrap_or_else(|| "default".into()),
            Input::Files { paths, .. } => paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            Input::Stdin => "stdin".into(),
        }
    }
}

/// Everything [`run`] needs.
#[derive(Debug)]
pub struct Options {
    /// The configuration, with command-line overrides already applied.
    pub config: Config,
    /// The audio source.
    pub input: Input,
    /// The control socket (normally [`crate::io::control::socket_path`]).
    pub socket: PathBuf,
    /// sd_notify (disabled outside systemd).
    pub notifier: Notifier,
    /// Let workers honour fault-injection requests (tests only).
    pub allow_faults: bool,
    /// Take GPU readings from this timeline file instead of NVML (tests only; GPU placements
    /// then run on the CPU, and status says so).
    pub gpu_script: Option<PathBuf>,
}

/// The engine (worker command lines) a configuration describes.
pub fn engine_config(cfg: &Config, allow_faults: bool) -> LaunchConfig {
    let models = cfg.runtime.models_dir();
    LaunchConfig {
        workers_dir: cfg.runtime.workers_dir.clone(),
        ort_lib: cfg.runtime.ort_lib.clone(),
        vad_model: Some(cfg.vad.model_path(&models)),
        asr_model: Some(cfg.asr.model_dir(&models)),
        vad_device: cfg.vad.device,
        asr_encoder: cfg.asr.encoder_device,
        asr_decoder: cfg.asr.decoder_device,
        asr_threads: cfg.asr.threads,
        allow_faults,
        load_timeout: Duration::from_secs(60),
        memory_limit_mb: None,
        context_s: cfg.asr.context_s,
        tiny_model: Some(models.join(swictation_proto::paths::MOONSHINE_TINY_EN)),
        simulate_gpu: false,
    }
}

/// The supervised pipeline's configuration from the file's `[vad]`, `[audio]` and
/// `[supervision]` sections.
pub fn pipeline_config(cfg: &Config, allow_faults: bool) -> PipelineConfig {
    let mut segmenter = cfg.vad.segmenter();
    // The pre-roll is the segmenter's padding before speech: take the longer of the two keys.
    segmenter.pad_before_ms = segmenter.pad_before_ms.max(cfg.audio.pre_roll_ms);
    if segmenter.validate().is_err() {
        segmenter.pad_before_ms = cfg.vad.pad_before_ms;
    }
    let mut p = PipelineConfig::new(engine_config(cfg, allow_faults), segmenter);
    p.policy.max_failures = cfg.supervision.restart_max as usize;
    p.policy.window = Duration::from_secs(cfg.supervision.restart_window_s);
    p.policy.hang_timeout = Duration::from_secs(cfg.supervision.hang_timeout_s);
    p
}

/// The journal and what an earlier run left in it: entries whose text is already in the
/// recovered store (the daemon died between storing and retiring) are retired, not replayed.
struct JournalAtStart {
    journal: Option<Journal>,
    replay: Vec<Entry>,
    damaged: Vec<String>,
    problem: Option<String>,
}

fn open_journal(cfg: &Config, store: &RecoveredStore) -> JournalAtStart {
    let dir = crate::io::journal::default_dir();
    let opened = match Journal::open(&dir, cfg.journal.max_mb.saturating_mul(1_000_000)) {
        Ok(o) => o,
        Err(e) => {
            // Dictation still works; what it hears is then kept in memory only, and status says so.
            let problem = format!("no speech journal: {e:#}");
            crate::log_error!("{problem}");
            return JournalAtStart {
                journal: None,
                replay: Vec::new(),
                damaged: Vec::new(),
                problem: Some(problem),
            };
        }
    };
    let stored: std::collections::HashSet<String> = store
        .list()
        .unwrap_or_default()
        .into_iter()
        .map(|r| r.entry)
        .collect();
    let mut replay = Vec::new();
    for e in opened.entries {
        if stored.contains(&e.id) {
            opened.journal.retire(&e.id);
        } else {
            replay.push(e);
        }
    }
    let damaged = opened
        .damaged
        .iter()
        .map(|d| {
            format!(
                "journal entry {} could not be read ({}); put aside at {}",
                d.id,
                d.why,
                d.moved_to.display()
            )
        })
        .collect::<Vec<_>>();
    for m in &damaged {
        crate::log_error!("{m}");
    }
    if !replay.is_empty() {
        crate::log_info!(
            "transcribing {} segment(s) ({:.1} s of speech) an earlier run left in the journal, before new speech",
            replay.len(),
            replay.iter().map(Entry::seconds).sum::<f64>()
        );
    }
    JournalAtStart {
        journal: Some(opened.journal),
        replay,
        damaged,
        problem: None,
    }
}

/// What audio sources do right now; sources watch it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gate {
    Open,
    Paused,
    Stopped,
}

/// Audio positions and levels, shared by whatever feeds the pipeline: sample position → when it
/// was fed (for latency), and the energy since the last status refresh (for the level).
#[derive(Debug, Default)]
struct Tap {
    position: u64,
    marks: VecDeque<(u64, Instant)>,
    sum_sq: f64,
    samples: u64,
}

impl Tap {
    /// Records that `chunk` enters the pipeline now.
    fn record(&mut self, chunk: &[f32]) {
        let now = Instant::now();
        self.position += chunk.len() as u64;
        self.marks.push_back((self.position, now));
        while self
            .marks
            .front()
            .is_some_and(|(_, t)| now.duration_since(*t) > TIMELINE_SPAN)
        {
            self.marks.pop_front();
        }
        self.sum_sq += chunk
            .iter()
            .map(|&s| f64::from(s) * f64::from(s))
            .sum::<f64>();
        self.samples += chunk.len() as u64;
    }

    /// When sample `pos` entered the pipeline (the end of the chunk holding it).
    fn instant_of(&self, pos: u64) -> Option<Instant> {
        let i = self.marks.partition_point(|(end, _)| *end < pos);
        self.marks.get(i).map(|(_, t)| *t)
    }

    /// RMS level in dBFS since the last call, and reset; `None` without audio.
    fn take_level(&mut self) -> Option<f32> {
        let level = (self.samples > 0).then(|| {
            let ms = self.sum_sq / self.samples as f64;
            (10.0 * (ms + 1e-12).log10()).max(-120.0) as f32
        });
        self.sum_sq = 0.0;
        self.samples = 0;
        level
    }
}

type SharedTap = Arc<Mutex<Tap>>;

fn tap_record(tap: &SharedTap, chunk: &[f32]) {
    if let Ok(mut t) = tap.lock() {
        t.record(chunk);
    }
}

/// Plays `samples` into the pipeline in [`CHUNK`]s, at real-time pace when `paced`. While the
/// gate is paused, chunks are discarded at real-time pace; when it closes, playing stops.
async fn play_file(
    samples: Vec<f32>,
    paced: bool,
    tx: mpsc::Sender<Vec<f32>>,
    mut gate: watch::Receiver<Gate>,
    tap: SharedTap,
) {
    let period = Duration::from_secs_f64(CHUNK as f64 / SAMPLE_RATE as f64);
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for part in samples.chunks(CHUNK) {
        let g = *gate.borrow();
        match g {
            Gate::Stopped => return,
            Gate::Paused => {
                tick.tick().await;
                continue;
            }
            Gate::Open => {}
        }
        if paced {
            tokio::select! {
                _ = tick.tick() => {}
                _ = gate.changed() => if *gate.borrow() == Gate::Stopped { return },
            }
        }
        tap_record(&tap, part);
        tokio::select! {
            r = tx.send(part.to_vec()) => if r.is_err() { return },
            _ = wait_stopped(&mut gate) => return,
        }
    }
}

async fn wait_stopped(gate: &mut watch::Receiver<Gate>) {
    let _ = gate.wait_for(|g| *g == Gate::Stopped).await;
}

/// Reads raw s16le 16 kHz mono from standard input on a thread (a blocked read cannot be
/// cancelled, so the thread is left behind at exit) and forwards it to the pipeline from a task
/// that does stop on request, so the pipeline's queue always closes.
async fn play_stdin(tx: mpsc::Sender<Vec<f32>>, mut gate: watch::Receiver<Gate>, tap: SharedTap) {
    let (raw_tx, mut raw_rx) = mpsc::channel::<Vec<f32>>(8);
    let reader = std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            let mut stdin = std::io::stdin().lock();
            let mut buf = vec![0u8; CHUNK * 2];
            let mut filled = 0;
            loop {
                match stdin.read(&mut buf[filled..]) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        crate::log_error!("reading audio from stdin: {e}");
                        break;
                    }
                }
                if filled == buf.len() {
                    if raw_tx
                        .blocking_send(crate::io::audio::from_raw_s16le(&buf))
                        .is_err()
                    {
                        return;
                    }
                    filled = 0;
                }
            }
            // An odd trailing byte is half a sample: dropped.
            let tail = crate::io::audio::from_raw_s16le(&buf[..filled - filled % 2]);
            if !tail.is_empty() {
                let _ = raw_tx.blocking_send(tail);
            }
        });
    if let Err(e) = reader {
        crate::log_error!("cannot start the stdin reader: {e}");
        return;
    }
    loop {
        let chunk = tokio::select! {
            c = raw_rx.recv() => match c { Some(c) => c, None => return },
            _ = wait_stopped(&mut gate) => return,
        };
        if *gate.borrow() != Gate::Open {
            continue;
        }
        tap_record(&tap, &chunk);
        tokio::select! {
            r = tx.send(chunk) => if r.is_err() { return },
            _ = wait_stopped(&mut gate) => return,
        }
    }
}

/// Live capture state, for status.
struct CaptureState {
    handle: Option<CaptureHandle>,
    rx: Option<mpsc::UnboundedReceiver<CaptureEvent>>,
    /// `name [id]` of the open device, or what was asked for.
    device: String,
    /// The current error, while capture is retrying.
    error: Option<String>,
    /// Samples batched for the next pipeline chunk.
    pending: Vec<f32>,
}

/// Everything the main loop owns.
struct Daemon {
    cfg: Config,
    board: Board,
    notifier: Notifier,
    probe: Probe,
    stage: StageControl,
    gate: watch::Sender<Gate>,
    tap: SharedTap,
    audio_tx: Option<mpsc::Sender<Vec<f32>>>,
    capture: Option<CaptureState>,
    source: String,
    started: Instant,
    ready: bool,
    paused: bool,
    stopping: bool,
    /// Audio samples dropped because the pipeline's queue was full.
    dropped: u64,
    latency: LatencyTrackers,
    last_delivery: Option<Instant>,
    last_state: DaemonState,
    last_sd_status: String,
    /// To the output thread: what to deliver, and the journal entry to retire once it is.
    out_tx: Option<std::sync::mpsc::Sender<(Outgoing, Option<String>)>>,
    /// Push-to-talk: the tap-vs-hold state machine, and a stop waiting for the release padding.
    ptt: swictation_policy::ptt::PushToTalk,
    ptt_stop: Option<ptt::PendingStop>,
    /// `[dictation]` rules, applied to each transcript before it is output.
    dictation: swictation_policy::dictation::Rules,
    journal: Option<Journal>,
    journal_problem: Option<String>,
    damaged: usize,
    store: RecoveredStore,
    recovered: usize,
    /// When a stop gives up waiting for pending speech.
    stop_deadline: Option<Instant>,
    /// File or stdin input has ended (the deadline then runs only while no ASR worker can
    /// deliver).
    end_of_input: bool,
}

impl Daemon {
    /// The state as derived from what the loop knows and the pipeline's degraded flags.
    fn derive_state(&self) -> DaemonState {
        if self.stopping {
            DaemonState::Stopping
        } else if !self.ready {
            DaemonState::Starting
        } else if self.paused {
            DaemonState::Paused
        } else if self.probe.counters.degraded.load(Ordering::Relaxed) != 0
            || self.capture.as_ref().is_some_and(|c| c.error.is_some())
        {
            DaemonState::Degraded
        } else {
            DaemonState::Listening
        }
    }

    /// Writes the derived state into the status and announces a change.
    fn publish_state(&mut self) {
        let state = self.derive_state();
        self.board.update(|s| s.state = state);
        if state != self.last_state {
            self.last_state = state;
            crate::log_info!("state: {state}");
            self.board.emit(Event::StateChanged { state });
        }
    }

    /// The whole status refresh (every [`STATUS_EVERY`]).
    fn refresh_status(&mut self) {
        let level = if self.paused {
            None
        } else {
            self.tap.lock().ok().and_then(|mut t| t.take_level())
        };
        let (overruns, source) = match &self.capture {
            Some(c) => {
                let stats = c
                    .handle
                    .as_ref()
                    .map(CaptureHandle::stats)
                    .unwrap_or_default();
                let source = match &c.error {
                    Some(e) => format!("{} (capture error, retrying: {e})", c.device),
                    // Pause closes the stream (the device is free for other programs).
                    None if self.paused => format!("{} (paused: capture closed)", c.device),
                    None => c.device.clone(),
                };
                (stats.overruns, source)
            }
            None => (0, self.source.clone()),
        };
        let context_s = self.cfg.asr.context_s;
        let queued = self.probe.counters.queued.load(Ordering::Relaxed) as usize;
        let uptime = self.started.elapsed().as_secs_f64();
        for ms in self.probe.counters.take_vad_timings() {
            self.latency.vad_frame.record(ms);
        }
        let latency = self.latency.snapshot();
        let dropped = self.dropped;
        let journal = self.journal_status();
        let recovered = self.recovered;
        self.board.update(|s| {
            s.journal = journal;
            s.recovered = recovered;
            s.uptime_s = uptime;
            s.audio.source = source;
            s.audio.level_dbfs = level;
            s.audio.overruns = overruns + dropped;
            s.queue_depth = queued;
            s.latency.vad_frame_ms_p50 = latency.vad_frame_ms_p50;
            s.latency.vad_frame_ms_p95 = latency.vad_frame_ms_p95;
            s.latency.asr_segment_ms_p50 = latency.asr_segment_ms_p50;
            s.latency.asr_segment_ms_p95 = latency.asr_segment_ms_p95;
            s.latency.speech_end_to_text_ms_p50 = latency.speech_end_to_text_ms_p50;
            s.latency.speech_end_to_text_ms_p95 = latency.speech_end_to_text_ms_p95;
            for w in &mut s.workers {
                w.rss_mb = w.pid.and_then(procfs::rss_mb);
                w.uptime_s = w.pid.and_then(procfs::uptime_s);
                if w.role == Role::Asr.as_str() && w.context_s.is_none() {
                    w.context_s = Some(context_s);
                }
            }
        });
        self.publish_state();
        self.send_sd_status();
    }

    /// The journal's part of the status.
    fn journal_status(&self) -> crate::report::status::JournalStatus {
        let h = self
            .journal
            .as_ref()
            .map(Journal::health)
            .unwrap_or_default();
        crate::report::status::JournalStatus {
            entries: h.entries,
            seconds: h.seconds,
            not_kept: h.not_kept,
            problem: self.journal_problem.clone().or(h.problem),
            damaged: self.damaged,
        }
    }

    /// Whether an ASR worker is running or starting (and the restart limit not reached), so
    /// waiting for it after the end of input makes sense.
    fn asr_can_deliver(&self) -> bool {
        let degraded = self.probe.counters.degraded.load(Ordering::Relaxed) & 2 != 0;
        !degraded
            && self.board.snapshot().workers.iter().any(|w| {
                w.role == Role::Asr.as_str()
                    && matches!(w.state.as_str(), "spawning" | "loading" | "ready" | "busy")
            })
    }

    /// After the end of input: wait on while an ASR worker can deliver, at most
    /// `stop_timeout_s` without one.
    fn extend_stop_deadline(&mut self) {
        if self.end_of_input && !self.stopping_by_request() && self.asr_can_deliver() {
            self.stop_deadline = Some(Instant::now() + self.stop_timeout());
        }
    }

    fn stop_timeout(&self) -> Duration {
        Duration::from_secs(self.cfg.supervision.stop_timeout_s)
    }

    /// A stop was asked for (signal, `swictation stop`): its deadline is absolute.
    fn stopping_by_request(&self) -> bool {
        self.stopping && !self.end_of_input
    }

    /// `STATUS=listening; vad cpu, asr moonshine-base-en on cpu`, sent when it changes (and
    /// only after READY=1, and never after STOPPING=1).
    fn send_sd_status(&mut self) {
        if !self.ready || self.stopping {
            return;
        }
        let s = self.board.snapshot();
        let workers: Vec<String> = s
            .workers
            .iter()
            .map(|w| match (w.pid, w.role.as_str()) {
                (Some(_), "vad") => format!("vad {}", w.device),
                (Some(_), role) => format!("{role} {} on {}", w.model, w.device),
                (None, role) => format!("{role} {}", w.state),
            })
            .collect();
        let line = format!("{}; {}", s.state, workers.join(", "));
        if line != self.last_sd_status {
            if let Err(e) = self.notifier.status(&line) {
                crate::log_warn!("sd_notify STATUS: {e}");
            }
            self.last_sd_status = line;
        }
    }

    /// Pushes audio to the pipeline without waiting: a full queue drops it and counts it.
    fn push_audio(&mut self, chunk: Vec<f32>) {
        let Some(tx) = &self.audio_tx else { return };
        let n = chunk.len() as u64;
        tap_record(&self.tap, &chunk);
        if let Err(mpsc::error::TrySendError::Full(_)) = tx.try_send(chunk) {
            if self.dropped == 0 {
                crate::log_warn!(
                    "the pipeline is {} s behind; dropping audio (counted as overruns)",
                    AUDIO_QUEUE / 10
                );
            }
            self.dropped += n;
        }
    }

    fn pause(&mut self) {
        if self.paused || self.stopping {
            return;
        }
        self.paused = true;
        self.gate.send_replace(Gate::Paused);
        if let Some(c) = &mut self.capture {
            if let Some(h) = &c.handle {
                h.pause();
            }
            c.pending.clear();
        }
        // Close the utterance in progress so it is transcribed now.
        let silence = vec![0.0f32; (CLOSING_SILENCE.as_secs_f64() * SAMPLE_RATE as f64) as usize];
        for c in silence.chunks(CHUNK) {
            self.push_audio(c.to_vec());
        }
        self.publish_state();
    }

    fn resume(&mut self) {
        if !self.paused || self.stopping {
            return;
        }
        self.paused = false;
        self.gate.send_replace(Gate::Open);
        if let Some(h) = self.capture.as_ref().and_then(|c| c.handle.as_ref()) {
            h.resume();
        }
        self.publish_state();
    }

    /// Begins a graceful stop: sources stop, the audio queue closes once what was captured is
    /// in it, and the pipeline finishes what it holds.
    fn begin_stop(&mut self, why: &str) {
        if self.stopping {
            return;
        }
        crate::log_info!(
            "stopping ({why}): finishing the speech already captured (at most {} s)",
            self.cfg.supervision.stop_timeout_s
        );
        self.stop_deadline = Some(Instant::now() + self.stop_timeout());
        if let Err(e) = self.notifier.stopping() {
            crate::log_warn!("sd_notify STOPPING: {e}");
        }
        self.stopping = true;
        // A stop asked for after the end of input still has an absolute deadline.
        self.end_of_input = false;
        self.gate.send_replace(Gate::Stopped);
        match &mut self.capture {
            Some(c) => {
                // The capture thread delivers what it has, then ends, closing its channel; the
                // loop forwards that audio and then closes the pipeline's queue.
                if let Some(h) = c.handle.take() {
                    tokio::task::spawn_blocking(move || h.stop());
                }
                if c.rx.is_none() {
                    self.audio_tx = None;
                }
            }
            None => self.audio_tx = None,
        }
        self.publish_state();
    }

    /// Answers one control command, at once.
    fn command(&mut self, cmd: ControlCommand) {
        let state =
            |d: &Daemon| Map::from_iter([("state".to_owned(), json!(d.derive_state().as_str()))]);
        if self.stopping && cmd.command != Command::Stop {
            cmd.respond(Err("the daemon is stopping".into()));
            return;
        }
        if matches!(
            cmd.command,
            Command::Pause | Command::Resume | Command::Toggle
        ) {
            self.ptt_cancel();
        }
        match cmd.command {
            Command::Ptt(key) => {
                let mut m = self.ptt_key(key);
                m.extend(state(self));
                cmd.respond(Ok(m));
                return;
            }
            Command::Pause => self.pause(),
            Command::Resume => self.resume(),
            Command::Toggle if self.paused => self.resume(),
            Command::Toggle => self.pause(),
            Command::Stop => self.begin_stop("requested through the control socket"),
            Command::Restart(role) => {
                if self
                    .stage
                    .for_role(role)
                    .send(StageCommand::Restart)
                    .is_err()
                {
                    cmd.respond(Err(format!("the {role} stage is not running")));
                    return;
                }
                let mut m = state(self);
                m.insert("restarting".into(), json!(role.as_str()));
                cmd.respond(Ok(m));
                return;
            }
        }
        let m = state(self);
        cmd.respond(Ok(m));
    }

    /// One capture event.
    fn capture_event(&mut self, ev: Option<CaptureEvent>) {
        let Some(c) = &mut self.capture else { return };
        match ev {
            None => {
                // The capture thread has ended (only after stop): flush and close the queue.
                c.rx = None;
                let rest = std::mem::take(&mut c.pending);
                if !rest.is_empty() {
                    self.push_audio(rest);
                }
                self.audio_tx = None;
            }
            Some(CaptureEvent::Audio(a)) => {
                if self.paused {
                    return;
                }
                c.pending.extend_from_slice(&a);
                if c.pending.len() >= CHUNK {
                    let chunk = std::mem::take(&mut c.pending);
                    self.push_audio(chunk);
                }
            }
            Some(CaptureEvent::Opened {
                device,
                rate,
                channels,
                format,
            }) => {
                crate::log_info!("capturing from {device} ({rate} Hz, {channels} ch, {format})");
                c.device = device;
                if c.error.take().is_some() {
                    crate::log_info!("capture is back");
                }
                self.publish_state();
            }
            Some(CaptureEvent::Error(message)) => {
                crate::log_warn!("capture: {message}");
                c.error = Some(message.clone());
                // Subscribers hear of capture failures as failures of the `capture` role.
                self.board.emit(Event::WorkerFailed {
                    role: "capture".into(),
                    class: "device".into(),
                    reason: message,
                });
                self.publish_state();
            }
        }
    }

    /// One transcript from the pipeline.
    fn transcript(&mut self, seg: SegmentText, at: Instant) {
        let min_silence = u64::from(self.cfg.vad.min_silence_ms) * u64::from(SAMPLE_RATE) / 1000;
        let pos = |secs: f64| (secs * SAMPLE_RATE as f64).round() as u64;
        if let Ok(tap) = self.tap.lock() {
            if let Some(t) = tap.instant_of(pos(seg.speech_end)) {
                self.latency
                    .speech_end_to_text
                    .record(at.duration_since(t).as_secs_f64() * 1e3);
            }
            // The segment reached the ASR queue once `min_silence` followed its speech; its ASR
            // time is from then (or from the previous delivery, if the worker was still busy).
            if let Some(t) = tap.instant_of(pos(seg.speech_end) + min_silence) {
                let from = self.last_delivery.map_or(t, |d| d.max(t));
                self.latency
                    .asr_segment
                    .record(at.saturating_duration_since(from).as_secs_f64() * 1e3);
            }
        }
        self.last_delivery = Some(at);
        let text = seg.text.trim().to_owned();
        crate::log_debug!(
            "segment {} transcribed ({} characters)",
            seg.index,
            text.chars().count()
        );
        let retire = |d: &Daemon| {
            if let (Some(j), Some(id)) = (&d.journal, &seg.journal) {
                j.retire(id);
            }
        };
        if text.is_empty() {
            retire(self);
            return;
        }
        // Replacements and spoken commands ([dictation]); nothing changes without rules.
        let dictated = self.dictation.apply(&text);
        if dictated.scratch_last {
            if let Some(out) = &self.out_tx {
                let _ = out.send((Outgoing::ScratchLast, None));
            }
        }
        let text = dictated.text;
        if text.is_empty() {
            retire(self);
            return;
        }
        if seg.recovered {
            self.board.emit(Event::Recovered {
                entry: seg.journal.clone().unwrap_or_default(),
                text: text.clone(),
            });
            if self.cfg.journal.recovered == RecoveredTo::Keep {
                let r = Recovered {
                    entry: seg.journal.clone().unwrap_or_default(),
                    text,
                    seconds: seg.end - seg.start,
                    at_unix_s: unix_now(),
                };
                match self.store.add(&r) {
                    Ok(()) => {
                        self.recovered += 1;
                        // Neither the text nor its length at info level: only that there is one.
                        crate::log_info!(
                            "recovered a transcript from the journal: `swictation recovered` shows it"
                        );
                        retire(self);
                    }
                    // Not retired: the next start tries again.
                    Err(e) => crate::log_error!("cannot keep recovered text: {e:#}"),
                }
                return;
            }
        } else {
            self.board.emit(Event::Transcript {
                index: seg.index,
                text: text.clone(),
            });
        }
        // The output thread retires the entry once the text is written.
        if let Some(out) = &self.out_tx {
            let _ = out.send((Outgoing::Text(text), seg.journal));
        }
    }
}

/// Runs the daemon until it is stopped (or file input ends and everything is output).
pub async fn run(opts: Options) -> Result<()> {
    let Options {
        config,
        input,
        socket,
        notifier,
        allow_faults,
        gpu_script,
    } = opts;
    let started = Instant::now();

    // Everything that can be refused is checked before anything starts.
    let output = Output::open(&config.output, &Session::from_env())?;
    let placement = crate::config::translate::placement_config(&config)?;
    let gpu_probe = crate::io::gpu::probe_from_options(gpu_script.as_deref())
        .context("reading the GPU script")?;
    let file_audio = load_files(&input)?;

    // The control socket is listening before READY=1, so `swictation status` works as soon as
    // systemd says the service is up. For a file run a second daemon's socket is not fatal.
    let listener = match ControlListener::bind(&socket) {
        Ok(l) => Some(l),
        Err(e) if input.is_finite() => {
            crate::log_warn!("no control socket: {e:#}");
            None
        }
        Err(e) => return Err(e),
    };
    let board = Board::new();
    let store = RecoveredStore::new(&RecoveredStore::default_path());
    let at_start = open_journal(&config, &store);
    for m in at_start.damaged.iter().chain(&at_start.problem) {
        board.emit(Event::JournalProblem { message: m.clone() });
    }
    let (cmd_tx, mut cmd_rx) = mpsc::channel::<ControlCommand>(32);
    let control_task = listener.map(|l| {
        crate::log_info!("control socket at {}", l.path().display());
        let (status, commands, events) = (board.subscribe_status(), cmd_tx.clone(), board.events());
        tokio::spawn(async move {
            if let Err(e) = l.run(status, commands, events).await {
                crate::log_error!("control socket: {e:#}");
            }
        })
    });

    let tap: SharedTap = Arc::new(Mutex::new(Tap::default()));
    let (gate, gate_rx) = watch::channel(Gate::Open);
    let (audio_tx, audio_rx) = mpsc::channel::<Vec<f32>>(AUDIO_QUEUE);

    let history = config.history.enabled.then(|| {
        let h = HistoryStore::new(&HistoryStore::default_path());
        crate::log_info!("keeping the transcript history in {}", h.path().display());
        (h, config.history.max_entries)
    });
    let (out_tx, output_thread) = spawn_output(output, at_start.journal.clone(), history)?;

    // Capture starts before the workers: a --device that matches nothing fails now, and the
    // audio captured while the models load waits in the queue (the pre-roll of the first words).
    let capture = start_capture(&input)?;

    // The pipeline: start the workers, then run; the loop hears of readiness through `ready`.
    let mut pcfg = pipeline_config(&config, allow_faults);
    pcfg.engine.simulate_gpu = gpu_script.is_some();
    pcfg.journal = at_start.journal.clone();
    pcfg.replay = at_start.replay;
    let placer = Placer::new(gpu_probe, placement, &pcfg.engine, board.clone());
    let desktop = config.notify.enabled.then(|| {
        tokio::spawn(crate::io::desktop::run(
            board.events(),
            Duration::from_secs(config.notify.min_interval_s),
        ))
    });
    let sleep_watch = tokio::spawn(crate::supervision::sleep::watch(
        placer.clone(),
        board.clone(),
    ));
    let mut pipeline = Pipeline::new(pcfg, board.clone()).with_placer(placer);
    let probe = pipeline.probe();
    let (stage, stage_rx) = stages::stage_channels();
    let (text_tx, mut text_rx) = mpsc::unbounded_channel::<(SegmentText, Instant)>();
    let (ready_tx, mut ready_rx) = oneshot::channel::<()>();
    let mut pipeline_task = tokio::spawn(async move {
        pipeline.start().await;
        let _ = ready_tx.send(());
        pipeline
            .run(
                audio_rx,
                move |s| {
                    let _ = text_tx.send((s, Instant::now()));
                },
                Some(stage_rx),
            )
            .await
    });

    // Audio sources.
    let mut feeder = start_feeder(&input, file_audio, &audio_tx, &gate_rx, &tap);
    // File and stdin feeders own their sender; the loop keeps one for the pause silence.
    let config_ptt = config.ptt.policy();
    let config_dictation = config.dictation.rules();
    let mut d = Daemon {
        cfg: config,
        board: board.clone(),
        notifier,
        probe,
        stage,
        gate,
        tap,
        audio_tx: Some(audio_tx),
        capture,
        source: input.describe(),
        started,
        ready: false,
        paused: false,
        stopping: false,
        dropped: 0,
        latency: LatencyTrackers::new(),
        last_delivery: None,
        last_state: DaemonState::Starting,
        last_sd_status: String::new(),
        out_tx: Some(out_tx),
        ptt: swictation_policy::ptt::PushToTalk::new(config_ptt),
        ptt_stop: None,
        dictation: config_dictation,
        journal: at_start.journal,
        journal_problem: at_start.problem,
        damaged: at_start.damaged.len(),
        recovered: store.list().map(|l| l.len()).unwrap_or(0),
        store,
        stop_deadline: None,
        end_of_input: false,
    };
    if d.cfg.ptt.start_paused {
        crate::log_info!(
            "starting paused (ptt.start_paused): `swictation ptt down` or `toggle` to listen"
        );
        d.pause();
    }
    d.refresh_status();

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("SIGTERM handler")?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .context("SIGINT handler")?;
    let mut status_tick = tokio::time::interval(STATUS_EVERY);
    status_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let watchdog_every = d.notifier.watchdog_ping_interval();
    let mut watchdog_tick = tokio::time::interval(
        watchdog_every
            .unwrap_or(Duration::from_secs(3600))
            .max(Duration::from_millis(50)),
    );
    watchdog_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ready_seen = false;
    // One interval for the whole loop: a sleep made afresh each turn would never fire while
    // capture events keep the loop turning.
    let mut ptt_every = tokio::time::interval(ptt::STOP_POLL);
    ptt_every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    let report = loop {
        tokio::select! {
            r = &mut pipeline_task => break Some(r),
            _ = sleep_until_opt(d.stop_deadline) => {
                crate::log_warn!(
                    "{}: not waiting any longer for the speech still pending",
                    if d.stopping_by_request() {
                        format!("stop_timeout_s ({} s) reached", d.cfg.supervision.stop_timeout_s)
                    } else {
                        format!("no ASR worker could deliver for {} s", d.cfg.supervision.stop_timeout_s)
                    }
                );
                break None;
            }
            r = &mut ready_rx, if !ready_seen => {
                ready_seen = true;
                if r.is_ok() {
                    d.ready = true;
                    // READY=1 strictly before the first STATUS= (refresh_status sends it).
                    if !d.stopping {
                        if let Err(e) = d.notifier.ready() {
                            crate::log_warn!("sd_notify READY: {e}");
                        }
                    }
                    d.refresh_status();
                    crate::log_info!("ready: {}", d.last_sd_status);
                }
            }
            Some(cmd) = cmd_rx.recv() => d.command(cmd),
            ev = recv_capture(&mut d.capture) => d.capture_event(ev),
            Some((seg, at)) = text_rx.recv() => d.transcript(seg, at),
            _ = join_opt(&mut feeder) => {
                // File or stdin input has ended: close the audio queue (the feeder's sender is
                // gone with it); the pipeline finishes what it holds, and then the loop ends.
                // Until then the daemon still answers and can be paused.
                feeder = None;
                d.audio_tx = None;
                crate::log_info!("end of input: finishing the speech already read");
                if !d.stopping {
                    d.end_of_input = true;
                    d.stop_deadline = Some(Instant::now() + d.stop_timeout());
                    d.extend_stop_deadline();
                }
            }
            _ = term.recv() => d.begin_stop("SIGTERM"),
            _ = int.recv() => {
                if d.stopping {
                    crate::log_warn!("second SIGINT: stopping at once");
                    break None;
                }
                d.begin_stop("SIGINT");
            }
            _ = status_tick.tick() => {
                d.refresh_status();
                d.extend_stop_deadline();
            }
            _ = ptt_every.tick(), if d.ptt_stop.is_some() => d.ptt_tick(),
            _ = watchdog_tick.tick(), if watchdog_every.is_some() && d.ready && !d.stopping => {
                if let Err(e) = d.notifier.watchdog() {
                    crate::log_warn!("sd_notify WATCHDOG: {e}");
                }
            }
        }
    };
    // No more GPU work to protect: let go of logind's delay lock.
    sleep_watch.abort();
    if let Some(t) = desktop {
        t.abort();
    }
    let abandoned = report.is_none();
    if abandoned {
        // The stages go with the task, and the workers with them (killed on drop).
        pipeline_task.abort();
        let _ = (&mut pipeline_task).await;
    }
    // The pipeline has delivered everything: drain the transcripts it sent on the way out.
    d.begin_stop("all input transcribed");
    while let Ok((seg, at)) = text_rx.try_recv() {
        d.transcript(seg, at);
    }
    d.out_tx = None;
    let joined = tokio::task::spawn_blocking(move || output_thread.join()).await;
    if !matches!(joined, Ok(Ok(()))) {
        crate::log_error!("the output thread failed; some transcripts may not have been output");
    }
    if let Some(t) = control_task {
        t.abort();
        // Dropping the listener removes the socket file.
        let _ = t.await;
    }
    if let Some(j) = &d.journal {
        say_what_stays(j);
    }
    finish(report)
}

/// The recordings of a file run, back to back with a second of silence between and after them;
/// `None` for live input. Read before anything starts, so a bad file is refused at once.
fn load_files(input: &Input) -> Result<Option<Vec<f32>>> {
    let Input::Files { paths, .. } = input else {
        return Ok(None);
    };
    let mut samples = Vec::new();
    for (i, f) in paths.iter().enumerate() {
        if i > 0 {
            // A second of silence between recordings so each ends as its own utterance.
            samples.extend(std::iter::repeat_n(0.0f32, SAMPLE_RATE as usize));
        }
        samples.extend(crate::io::audio::load(f)?.samples);
    }
    // Trailing silence lets the last utterance close naturally, as when the user stops.
    samples.extend(std::iter::repeat_n(0.0f32, SAMPLE_RATE as usize));
    Ok(Some(samples))
}

/// Seconds since the Unix epoch (0 on a clock before it).
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What goes to the output thread: something to deliver, and the journal entry to retire once it
/// is delivered.
type OutputSender = std::sync::mpsc::Sender<(Outgoing, Option<String>)>;

/// Output on its own thread: typing tools may block, and stdout may be a slow pipe. An entry is
/// retired from the journal only after its text was delivered.
fn spawn_output(
    output: Output,
    journal: Option<Journal>,
    history: Option<(HistoryStore, usize)>,
) -> Result<(OutputSender, std::thread::JoinHandle<()>)> {
    let (out_tx, out_rx) = std::sync::mpsc::channel::<(Outgoing, Option<String>)>();
    crate::log_info!("transcripts go to {}", output.describe());
    let thread = std::thread::Builder::new()
        .name("output".into())
        .spawn(move || {
            let mut output = Deliverer::new(output);
            let mut failures = 0u32;
            let mut kept = 0usize;
            let trim = |(h, max): &(HistoryStore, usize)| {
                if let Err(e) = h.keep_newest(*max) {
                    crate::log_warn!("transcript history: {e:#}");
                }
            };
            if let Some(h) = &history {
                trim(h);
            }
            for (what, entry) in out_rx {
                let delivered = output.deliver(&what);
                if let (Some(h), Outgoing::Text(text)) = (&history, &what) {
                    // Delivered or not: a text whose typing failed is kept here too.
                    let record = History {
                        at_unix_s: unix_now(),
                        text: text.clone(),
                        delivered: delivered.is_ok(),
                    };
                    if let Err(e) = h.0.add(&record) {
                        crate::log_warn!("transcript history: {e:#}");
                    }
                    kept += 1;
                    // Every hundredth: the file stays near its bound without a rewrite per line.
                    if kept.is_multiple_of(100) {
                        trim(h);
                    }
                }
                match delivered {
                    Ok(()) => {
                        // Delivered: the speech journal may let go of it.
                        if let (Some(j), Some(id)) = (&journal, &entry) {
                            j.retire(id);
                        }
                    }
                    Err(e) => {
                        failures += 1;
                        // Once is informative; every transcript would flood the log.
                        if failures <= 3 {
                            crate::log_error!("output: {e}");
                        }
                    }
                }
            }
        })?;
    Ok((out_tx, thread))
}

/// Live capture for microphone input (`None` for files and stdin).
fn start_capture(input: &Input) -> Result<Option<CaptureState>> {
    let Input::Capture { device } = input else {
        return Ok(None);
    };
    let (cap_tx, cap_rx) = mpsc::unbounded_channel();
    let cc = CaptureConfig {
        device: device.clone(),
        ..CaptureConfig::default()
    };
    let handle = capture::start(cc, cap_tx).context("starting audio capture")?;
    Ok(Some(CaptureState {
        handle: Some(handle),
        rx: Some(cap_rx),
        device: input.describe(),
        error: None,
        pending: Vec::with_capacity(CHUNK * 2),
    }))
}

/// The task that feeds a file or stdin into the pipeline (`None` for live capture, which the
/// main loop feeds).
fn start_feeder(
    input: &Input,
    file_audio: Option<Vec<f32>>,
    audio_tx: &mpsc::Sender<Vec<f32>>,
    gate_rx: &watch::Receiver<Gate>,
    tap: &SharedTap,
) -> Option<tokio::task::JoinHandle<()>> {
    match input {
        Input::Capture { .. } => None,
        Input::Files { paced, .. } => Some(tokio::spawn(play_file(
            file_audio.unwrap_or_default(),
            *paced,
            audio_tx.clone(),
            gate_rx.clone(),
            tap.clone(),
        ))),
        Input::Stdin => Some(tokio::spawn(play_stdin(
            audio_tx.clone(),
            gate_rx.clone(),
            tap.clone(),
        ))),
    }
}

/// At exit: how much speech stays in the journal untranscribed, and how to get it back.
fn say_what_stays(j: &Journal) {
    j.flush();
    let h = j.health();
    if h.entries > 0 {
        crate::log_warn!(
            "{} segment(s) ({:.1} s of speech) not transcribed stay in the journal at {}: the next start transcribes them first (their text then goes where [journal] recovered says; `swictation recovered` shows kept text)",
            h.entries,
            h.seconds,
            j.dir().display()
        );
    }
}

/// The end of a run: what the pipeline reported (`None`: the stop did not wait for it).
fn finish(
    report: Option<std::result::Result<Result<stages::Report>, tokio::task::JoinError>>,
) -> Result<()> {
    let Some(report) = report else {
        crate::log_info!("stopped before all speech was transcribed");
        return Ok(());
    };
    let report = report.context("pipeline task panicked")??;
    if !report.quarantined.is_empty() {
        crate::log_warn!(
            "{} segment(s) quarantined under {}",
            report.quarantined.len(),
            swictation_proto::paths::state_dir()
                .join("quarantine")
                .display()
        );
    }
    crate::log_info!(
        "stopped: {} segment(s), {} transcript(s)",
        report.segments_in,
        report.delivered
    );
    Ok(())
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

async fn recv_capture(c: &mut Option<CaptureState>) -> Option<CaptureEvent> {
    match c.as_mut().and_then(|c| c.rx.as_mut()) {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn join_opt(h: &mut Option<tokio::task::JoinHandle<()>>) {
    match h {
        Some(h) => {
            let _ = h.await;
        }
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tap_maps_positions_to_times_and_measures_level() {
        let mut tap = Tap::default();
        tap.record(&[0.5; 1600]);
        let first = tap.instant_of(1);
        std::thread::sleep(Duration::from_millis(5));
        tap.record(&[0.5; 1600]);
        assert_eq!(tap.instant_of(1600), first);
        assert!(tap.instant_of(1601) > first);
        assert_eq!(tap.instant_of(4000), None);
        // A constant 0.5 is -6.02 dBFS.
        let level = tap.take_level().unwrap_or(f32::NAN);
        assert!((level + 6.02).abs() < 0.01, "{level}");
        assert_eq!(tap.take_level(), None);
    }

    #[test]
    fn own_process_has_an_uptime() {
        let up = procfs::uptime_s(std::process::id());
        assert!(up.is_some_and(|u| (0.0..3600.0).contains(&u)), "{up:?}");
        assert_eq!(procfs::uptime_s(u32::MAX), None);
    }

    #[test]
    fn pipeline_config_follows_the_file() {
        let mut cfg = Config::default();
        cfg.supervision.restart_max = 3;
        cfg.supervision.restart_window_s = 30;
        cfg.audio.pre_roll_ms = 500;
        cfg.supervision.hang_timeout_s = 12;
        let p = pipeline_config(&cfg, false);
        assert_eq!(p.policy.hang_timeout, Duration::from_secs(12));
        assert_eq!(p.policy.max_failures, 3);
        assert_eq!(p.policy.window, Duration::from_secs(30));
        assert_eq!(p.segmenter.pad_before_ms, 500);
    }
}
