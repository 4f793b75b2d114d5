//! The daemon's status document (what `swictation status --json` prints and the control
//! socket's `status` command returns), its human rendering, and the event stream's messages.
//!
//! These are plain data: every task that knows a part (the supervised workers, the placer, the
//! stages, the daemon) writes it through the [`Board`](super::board::Board), a
//! `tokio::sync::watch`, so answering `status` never waits on a task or on a worker.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// What the daemon as a whole is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DaemonState {
    /// Loading workers, opening audio.
    Starting,
    /// Transcribing speech.
    Listening,
    /// Audio is discarded until resumed.
    Paused,
    /// Running, but something is missing (a worker given up on, a device moved to CPU).
    Degraded,
    /// Shutting down.
    Stopping,
}

impl DaemonState {
    /// The lower-case name used in JSON and the text rendering.
    pub fn as_str(self) -> &'static str {
        match self {
            DaemonState::Starting => "starting",
            DaemonState::Listening => "listening",
            DaemonState::Paused => "paused",
            DaemonState::Degraded => "degraded",
            DaemonState::Stopping => "stopping",
        }
    }
}

impl std::fmt::Display for DaemonState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The audio input.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AudioStatus {
    /// Which input: a device name, `default`, or a file for `run --input`.
    pub source: String,
    /// Recent input level in dBFS (RMS), if audio is flowing.
    pub level_dbfs: Option<f32>,
    /// Times the capture buffer overflowed and audio was dropped.
    pub overruns: u64,
}

/// The last failure of a worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailureRecord {
    /// Failure class (`crash`, `hang`, `oom`, `cuda`, …), as the supervisor classifies it.
    pub class: String,
    /// Human-readable detail (`killed by SIGSEGV`, `no reply in 10 s`).
    pub reason: String,
    /// When it happened, seconds since the Unix epoch.
    pub at_unix_s: u64,
}

/// One worker process.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerStatus {
    /// `vad` or `asr`.
    pub role: String,
    /// Process id, while one is running.
    pub pid: Option<u32>,
    /// `starting`, `ready`, `busy`, `restarting`, `failed`, … (free text from the supervisor).
    pub state: String,
    /// Where it runs, e.g. `cpu`, `cuda:0`, or `encoder=cuda:0 decoder=cpu`.
    pub device: String,
    /// Model name as the worker reported it.
    pub model: String,
    /// ASR context window, seconds (none for the VAD).
    pub context_s: Option<f32>,
    /// GPU memory it holds, MiB, where known.
    pub vram_mb: Option<u64>,
    /// Resident memory, MiB (`VmRSS`).
    pub rss_mb: Option<u64>,
    /// Seconds since this process started.
    pub uptime_s: Option<f64>,
    /// Restarts so far, by failure class.
    pub restarts: BTreeMap<String, u32>,
    /// The most recent failure, if any.
    pub last_failure: Option<FailureRecord>,
    /// Where the placement policy put it (`enc cuda:0 dec cpu base 10s`, `cpu`).
    #[serde(default)]
    pub placement: Option<String>,
    /// Why it is there: the reason of the last placement change.
    #[serde(default)]
    pub placement_reason: Option<String>,
}

/// GPU memory, when there is a GPU.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuStatus {
    /// Device name as the driver reports it.
    pub name: String,
    /// Memory in use, MiB (by everything on the card, not only us).
    pub used_mb: u64,
    /// Memory free, MiB.
    pub free_mb: u64,
    /// Total memory, MiB.
    pub total_mb: u64,
    /// Configured warning threshold, percent (`gpu.warning_pct`).
    pub warning_pct: f32,
    /// Configured critical threshold, percent.
    pub critical_pct: f32,
    /// Configured emergency threshold, percent.
    pub emergency_pct: f32,
}

impl GpuStatus {
    /// Memory in use as a percentage of the total (0 when the total is unknown).
    pub fn used_pct(&self) -> f64 {
        if self.total_mb == 0 {
            0.0
        } else {
            self.used_mb as f64 * 100.0 / self.total_mb as f64
        }
    }
}

/// Latency percentiles, milliseconds; `None` until there are samples.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// One VAD frame through the worker, median.
    pub vad_frame_ms_p50: Option<f64>,
    /// One VAD frame through the worker, 95th percentile.
    pub vad_frame_ms_p95: Option<f64>,
    /// One segment through the ASR worker, median.
    pub asr_segment_ms_p50: Option<f64>,
    /// One segment through the ASR worker, 95th percentile.
    pub asr_segment_ms_p95: Option<f64>,
    /// End of speech to its text being output, median: what the user feels.
    pub speech_end_to_text_ms_p50: Option<f64>,
    /// End of speech to its text being output, 95th percentile.
    pub speech_end_to_text_ms_p95: Option<f64>,
}

/// How [`Status::sleep`] begins while the machine is about to sleep.
pub const SLEEP_GOING: &str = "going to sleep";

/// The whole status document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// The daemon's version (`CARGO_PKG_VERSION`).
    pub version: String,
    /// What the daemon is doing.
    pub state: DaemonState,
    /// The audio input.
    pub audio: AudioStatus,
    /// The worker processes.
    pub workers: Vec<WorkerStatus>,
    /// GPU memory, if a GPU is in use or visible.
    pub gpu: Option<GpuStatus>,
    /// Why `gpu` is absent (`no NVIDIA driver`, `all workers on cpu`), when it is.
    pub gpu_unavailable: Option<String>,
    /// Where GPU readings come from (NVML, or a test's script, which says so).
    #[serde(default)]
    pub gpu_probe: Option<String>,
    /// New ASR requests are being held (GPU memory emergency, or the machine about to sleep);
    /// they are queued, not dropped.
    #[serde(default)]
    pub asr_held: bool,
    /// Why they are held, while they are.
    #[serde(default)]
    pub asr_held_why: Option<String>,
    /// How a sleep is noticed: through logind (with a delay lock to finish GPU work first), or
    /// from the clocks after waking, and why.
    #[serde(default)]
    pub sleep: Option<String>,
    /// Speech segments waiting for the ASR worker.
    pub queue_depth: usize,
    /// Segments set aside because they crashed a worker (not retried).
    pub quarantined: usize,
    /// Transcripts recovered from an earlier run's journal and kept for `swictation recovered`.
    #[serde(default)]
    pub recovered: usize,
    /// The speech journal: what it holds and whether it can keep new speech.
    #[serde(default)]
    pub journal: JournalStatus,
    /// Latency percentiles over a recent window.
    pub latency: Latency,
    /// Seconds since the daemon started.
    pub uptime_s: f64,
}

impl Status {
    /// The initial document, before anything has started.
    pub fn starting() -> Status {
        Status {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            state: DaemonState::Starting,
            audio: AudioStatus::default(),
            workers: Vec::new(),
            gpu: None,
            gpu_unavailable: None,
            gpu_probe: None,
            asr_held: false,
            asr_held_why: None,
            sleep: None,
            queue_depth: 0,
            quarantined: 0,
            recovered: 0,
            journal: JournalStatus::default(),
            latency: Latency::default(),
            uptime_s: 0.0,
        }
    }
}

/// The speech journal, for status.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JournalStatus {
    /// Entries on disk (segments not yet delivered, and the open one's draft).
    pub entries: usize,
    /// Their audio, seconds.
    pub seconds: f64,
    /// Entries that could not be kept on disk in this run (disk full, the size cap).
    pub not_kept: u64,
    /// The first reason one could not be kept.
    pub problem: Option<String>,
    /// Entries left by an earlier run that could not be read, put aside in `journal/damaged/`.
    pub damaged: usize,
}

/// Something that happened, streamed to `subscribe` clients as one JSON line each, tagged by
/// `"event"` (e.g. `{"event":"transcript","index":3,"text":"hello"}`).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The daemon's state changed.
    StateChanged {
        /// The new state.
        state: DaemonState,
    },
    /// A transcript was finalised. Only ever sent to same-user clients of the control socket.
    Transcript {
        /// Running segment number since the daemon started.
        index: u64,
        /// The text.
        text: String,
    },
    /// A worker was moved between devices.
    PlacementChanged {
        /// `vad` or `asr`.
        role: String,
        /// Previous device.
        from: String,
        /// New device.
        to: String,
        /// Why (`gpu memory 96% >= emergency 95%`).
        reason: String,
    },
    /// Something about GPU memory worth knowing: a threshold crossed, an Xid error, requests
    /// held or released.
    GpuNotice {
        /// What, in words.
        message: String,
    },
    /// A worker failed (it may be restarted).
    WorkerFailed {
        /// `vad` or `asr`.
        role: String,
        /// Failure class.
        class: String,
        /// Detail.
        reason: String,
    },
    /// Text recovered from an earlier run's journal (sent, like transcripts, only to same-user
    /// clients of the control socket).
    Recovered {
        /// The journal entry it came from.
        entry: String,
        /// The text.
        text: String,
    },
    /// A segment was set aside (quarantined) instead of transcribed.
    Quarantined {
        /// Running segment number.
        segment: u64,
        /// Why (never text).
        reason: String,
        /// Where its WAV and JSON are kept.
        path: String,
    },
    /// The journal could not keep speech, or found entries it could not read.
    JournalProblem {
        /// What, in words.
        message: String,
    },
    /// A worker finished loading.
    WorkerReady {
        /// `vad` or `asr`.
        role: String,
        /// Its process id.
        pid: u32,
        /// Where it runs.
        device: String,
        /// Its model.
        model: String,
    },
}

/// Never the text of a transcript or a recovered one (privacy: Debug output reaches logs): its
/// length only. The other events as their JSON line.
impl std::fmt::Debug for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Event::Transcript { index, text } => f
                .debug_struct("Transcript")
                .field("index", index)
                .field("characters", &text.chars().count())
                .finish(),
            Event::Recovered { entry, text } => f
                .debug_struct("Recovered")
                .field("entry", entry)
                .field("characters", &text.chars().count())
                .finish(),
            other => f.write_str(&serde_json::to_string(other).unwrap_or_default()),
        }
    }
}

/// `3 entries (4.2 s); 2 recovered (swictation recovered)`, with any problem.
fn journal_line(s: &Status) -> String {
    let j = &s.journal;
    let mut line = format!("{} entries ({:.1} s)", j.entries, j.seconds);
    if s.recovered > 0 {
        line.push_str(&format!(
            "; {} recovered (swictation recovered)",
            s.recovered
        ));
    }
    if j.damaged > 0 {
        line.push_str(&format!("; {} damaged, put aside", j.damaged));
    }
    if let Some(p) = &j.problem {
        line.push_str(&format!("; {} not kept: {p}", j.not_kept));
    }
    line
}

/// Percentiles over the last `capacity` samples: recent behaviour, in bounded memory.
#[derive(Debug, Clone)]
pub struct LatencyTracker {
    samples: VecDeque<f64>,
    capacity: usize,
}

impl LatencyTracker {
    /// A tracker over the most recent `capacity` samples (at least 1).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            samples: VecDeque::with_capacity(capacity),
            capacity,
        }
    }

    /// Records one sample, milliseconds. Non-finite values are ignored rather than poisoning
    /// every percentile.
    pub fn record(&mut self, ms: f64) {
        if !ms.is_finite() {
            return;
        }
        if self.samples.len() == self.capacity {
            self.samples.pop_front();
        }
        self.samples.push_back(ms);
    }

    /// Samples held.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether no samples are held.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// The `q`-th percentile (0..=100), nearest-rank: always one of the samples, never an
    /// interpolation between them. `None` without samples.
    pub fn percentile(&self, q: f64) -> Option<f64> {
        if self.samples.is_empty() {
            return None;
        }
        let mut sorted: Vec<f64> = self.samples.iter().copied().collect();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let rank = ((q.clamp(0.0, 100.0) / 100.0) * n as f64).ceil() as usize;
        sorted.get(rank.clamp(1, n) - 1).copied()
    }

    /// Median.
    pub fn p50(&self) -> Option<f64> {
        self.percentile(50.0)
    }

    /// 95th percentile.
    pub fn p95(&self) -> Option<f64> {
        self.percentile(95.0)
    }
}

/// The three trackers behind [`Latency`].
#[derive(Debug, Clone)]
pub struct LatencyTrackers {
    /// Per VAD frame.
    pub vad_frame: LatencyTracker,
    /// Per ASR segment.
    pub asr_segment: LatencyTracker,
    /// End of speech to text out.
    pub speech_end_to_text: LatencyTracker,
}

impl LatencyTrackers {
    /// Windows sized for their rates: VAD frames come ~31 a second, segments a few a minute.
    pub fn new() -> Self {
        Self {
            vad_frame: LatencyTracker::new(2048),
            asr_segment: LatencyTracker::new(256),
            speech_end_to_text: LatencyTracker::new(256),
        }
    }

    /// The current percentiles.
    pub fn snapshot(&self) -> Latency {
        Latency {
            vad_frame_ms_p50: self.vad_frame.p50(),
            vad_frame_ms_p95: self.vad_frame.p95(),
            asr_segment_ms_p50: self.asr_segment.p50(),
            asr_segment_ms_p95: self.asr_segment.p95(),
            speech_end_to_text_ms_p50: self.speech_end_to_text.p50(),
            speech_end_to_text_ms_p95: self.speech_end_to_text.p95(),
        }
    }
}

impl Default for LatencyTrackers {
    fn default() -> Self {
        Self::new()
    }
}

/// `1h02m`, `3m05s`, `42s`.
fn duration_text(s: f64) -> String {
    let s = if s.is_finite() && s > 0.0 {
        s as u64
    } else {
        0
    };
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

fn opt<T: std::fmt::Display>(v: Option<T>, unit: &str) -> String {
    v.map(|v| format!("{v}{unit}"))
        .unwrap_or_else(|| "-".to_owned())
}

fn ms(v: Option<f64>) -> String {
    v.map(|v| {
        if v < 10.0 {
            format!("{v:.1} ms")
        } else {
            format!("{v:.0} ms")
        }
    })
    .unwrap_or_else(|| "-".to_owned())
}

/// Rows of cells as a left-aligned table, two spaces between columns, no trailing spaces.
fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            let _ = write!(line, "{cell:<w$}  ", w = widths[c]);
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The human `swictation status`: a header, an aligned table of workers (like `ollama ps`),
/// then GPU memory, queue and latencies.
pub fn render_text(s: &Status) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut out = format!(
        "swictation {}: {} (up {})\n",
        s.version,
        s.state,
        duration_text(s.uptime_s)
    );
    let level = s
        .audio
        .level_dbfs
        .map(|l| format!("{l:.1} dBFS"))
        .unwrap_or_else(|| "no level".to_owned());
    let _ = writeln!(
        out,
        "audio: {} ({level}, {} overrun{})\n",
        if s.audio.source.is_empty() {
            "-"
        } else {
            &s.audio.source
        },
        s.audio.overruns,
        if s.audio.overruns == 1 { "" } else { "s" }
    );

    let mut rows = vec![[
        "ROLE",
        "PID",
        "STATE",
        "DEVICE",
        "MODEL",
        "CONTEXT",
        "VRAM",
        "RSS",
        "UPTIME",
        "RESTARTS",
        "LAST FAILURE",
    ]
    .map(String::from)
    .to_vec()];
    for w in &s.workers {
        let restarts = if w.restarts.is_empty() {
            "0".to_owned()
        } else {
            w.restarts
                .iter()
                .map(|(class, n)| format!("{class}:{n}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        let failure = w
            .last_failure
            .as_ref()
            .map(|f| {
                format!(
                    "{}: {} ({} ago)",
                    f.class,
                    f.reason,
                    duration_text(now.saturating_sub(f.at_unix_s) as f64)
                )
            })
            .unwrap_or_else(|| "-".to_owned());
        rows.push(vec![
            w.role.clone(),
            opt(w.pid, ""),
            w.state.clone(),
            w.device.clone(),
            w.model.clone(),
            opt(w.context_s, " s"),
            opt(w.vram_mb, " MB"),
            opt(w.rss_mb, " MB"),
            w.uptime_s
                .map(duration_text)
                .unwrap_or_else(|| "-".to_owned()),
            restarts,
            failure,
        ]);
    }
    if s.workers.is_empty() {
        out.push_str("no workers\n");
    } else {
        out.push_str(&table(&rows));
    }
    for w in &s.workers {
        if let (Some(p), Some(why)) = (&w.placement, &w.placement_reason) {
            let _ = writeln!(out, "{} placed on {p}: {why}", w.role);
        }
    }
    out.push('\n');

    let gpu = match (&s.gpu, &s.gpu_unavailable) {
        (Some(g), _) => format!(
            "{}: {}/{} MB used ({:.1}%), {} MB free; warning {}%, critical {}%, emergency {}%",
            g.name,
            g.used_mb,
            g.total_mb,
            g.used_pct(),
            g.free_mb,
            g.warning_pct,
            g.critical_pct,
            g.emergency_pct
        ),
        (None, Some(reason)) => format!("none ({reason})"),
        (None, None) => "none".to_owned(),
    };
    let held = format!(
        "ASR requests held ({})",
        s.asr_held_why.as_deref().unwrap_or("GPU memory emergency")
    );
    let gpu = match (&s.gpu_probe, s.asr_held) {
        (Some(p), true) => format!("{gpu}; {held}; probe: {p}"),
        (Some(p), false) if p.starts_with("scripted") => format!("{gpu}; probe: {p}"),
        (_, true) => format!("{gpu}; {held}"),
        _ => gpu,
    };
    let l = &s.latency;
    let mut lines = vec![vec!["gpu".to_owned(), gpu]];
    if let Some(sleep) = &s.sleep {
        lines.push(vec!["sleep".to_owned(), sleep.clone()]);
    }
    lines.extend(vec![
        vec![
            "queue".to_owned(),
            format!(
                "{} segment(s) waiting, {} quarantined",
                s.queue_depth, s.quarantined
            ),
        ],
        vec!["journal".to_owned(), journal_line(s)],
        vec![
            "vad frame".to_owned(),
            format!(
                "p50 {}  p95 {}",
                ms(l.vad_frame_ms_p50),
                ms(l.vad_frame_ms_p95)
            ),
        ],
        vec![
            "asr segment".to_owned(),
            format!(
                "p50 {}  p95 {}",
                ms(l.asr_segment_ms_p50),
                ms(l.asr_segment_ms_p95)
            ),
        ],
        vec![
            "speech->text".to_owned(),
            format!(
                "p50 {}  p95 {}",
                ms(l.speech_end_to_text_ms_p50),
                ms(l.speech_end_to_text_ms_p95)
            ),
        ],
    ]);
    out.push_str(&table(&lines));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_carries_text_or_audio() {
        let secret = "my bank password is hunter2";
        let debug = [
            format!(
                "{:?}",
                Event::Transcript {
                    index: 4,
                    text: secret.into()
                }
            ),
            format!(
                "{:?}",
                Event::Recovered {
                    entry: "e.seg".into(),
                    text: secret.into()
                }
            ),
            format!(
                "{:?}",
                swictation_proto::Reply::Transcript {
                    id: 1,
                    segment: 2,
                    text: secret.into(),
                    tokens: 7,
                    micros: 9
                }
            ),
            format!(
                "{:?}",
                swictation_proto::Request::Transcribe {
                    id: 1,
                    segment: 2,
                    samples: vec![0.123_456_7; 3]
                }
            ),
            format!(
                "{:?}",
                swictation_proto::Reply::VadProbs {
                    id: 1,
                    probs: vec![0.987_654_3; 2],
                    micros: 9
                }
            ),
        ];
        for d in &debug {
            assert!(
                !d.contains("hunter2") && !d.contains("0.123") && !d.contains("0.987"),
                "{d}"
            );
        }
        assert!(debug[0].contains("characters: 27"), "{}", debug[0]);
        assert!(debug[3].contains("samples: 3"), "{}", debug[3]);
        // Other events stay whole.
        let e = Event::GpuNotice {
            message: "held".into(),
        };
        assert_eq!(
            format!("{e:?}"),
            r#"{"event":"gpu_notice","message":"held"}"#
        );
    }

    fn sample() -> Status {
        let mut s = Status::starting();
        s.state = DaemonState::Listening;
        s.uptime_s = 3725.0;
        s.audio = AudioStatus {
            source: "default".into(),
            level_dbfs: Some(-32.25),
            overruns: 1,
        };
        s.workers = vec![
            WorkerStatus {
                role: "vad".into(),
                pid: Some(101),
                state: "ready".into(),
                device: "cpu".into(),
                model: "silero-vad-v6.2".into(),
                rss_mb: Some(40),
                uptime_s: Some(3720.0),
                ..Default::default()
            },
            WorkerStatus {
                role: "asr".into(),
                pid: Some(102),
                state: "ready".into(),
                device: "cuda:0".into(),
                model: "moonshine-base-en".into(),
                context_s: Some(10.0),
                vram_mb: Some(310),
                rss_mb: Some(812),
                uptime_s: Some(65.0),
                restarts: BTreeMap::from([("crash".to_owned(), 1)]),
                last_failure: Some(FailureRecord {
                    class: "crash".into(),
                    reason: "killed by SIGSEGV".into(),
                    at_unix_s: 0,
                }),
                ..Default::default()
            },
        ];
        s.gpu = Some(GpuStatus {
            name: "NVIDIA H100".into(),
            used_mb: 2048,
            free_mb: 6144,
            total_mb: 8192,
            warning_pct: 80.0,
            critical_pct: 87.5,
            emergency_pct: 95.0,
        });
        s.queue_depth = 2;
        s.latency.asr_segment_ms_p50 = Some(123.4);
        s.latency.vad_frame_ms_p50 = Some(0.42);
        s
    }

    #[test]
    fn json_round_trips_with_lowercase_state() {
        let s = sample();
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["state"], "listening");
        assert_eq!(json["workers"][1]["restarts"]["crash"], 1);
        assert_eq!(
            json["latency"]["asr_segment_ms_p95"],
            serde_json::Value::Null
        );
        let back: Status = serde_json::from_value(json).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn events_are_tagged() {
        let e = Event::Transcript {
            index: 3,
            text: "hello".into(),
        };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"event":"transcript","index":3,"text":"hello"}"#
        );
        let e = Event::StateChanged {
            state: DaemonState::Paused,
        };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"event":"state_changed","state":"paused"}"#
        );
        let e = Event::PlacementChanged {
            role: "asr".into(),
            from: "cuda:0".into(),
            to: "cpu".into(),
            reason: "oom".into(),
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["event"], "placement_changed");
        assert_eq!(serde_json::from_value::<Event>(v).unwrap(), e);
    }

    #[test]
    fn text_rendering_is_an_aligned_table() {
        let text = render_text(&sample());
        assert!(text.starts_with("swictation "), "{text}");
        assert!(text.contains("listening (up 1h02m)"), "{text}");
        assert!(
            text.contains("default (-32.2 dBFS, 1 overrun)")
                || text.contains("default (-32.3 dBFS, 1 overrun)"),
            "{text}"
        );
        let lines: Vec<&str> = text.lines().collect();
        let header = lines.iter().position(|l| l.starts_with("ROLE")).unwrap();
        // Columns line up: every row's DEVICE column starts where the header's does.
        let col = lines[header].find("DEVICE").unwrap();
        assert_eq!(&lines[header + 1][col..col + 3], "cpu", "{text}");
        assert_eq!(&lines[header + 2][col..col + 6], "cuda:0", "{text}");
        assert!(lines[header + 2].contains("crash:1"), "{text}");
        assert!(
            lines[header + 2].contains("crash: killed by SIGSEGV ("),
            "{text}"
        );
        assert!(text.contains("2048/8192 MB used (25.0%)"), "{text}");
        assert!(text.contains("2 segment(s) waiting"), "{text}");
        assert!(text.contains("p50 123 ms  p95 -"), "{text}");
        assert!(text.contains("p50 0.4 ms"), "{text}");
        assert!(
            text.lines().all(|l| l == l.trim_end()),
            "trailing spaces:\n{text}"
        );
    }

    #[test]
    fn text_rendering_without_workers_or_gpu() {
        let mut s = Status::starting();
        s.gpu_unavailable = Some("no NVIDIA driver".into());
        let text = render_text(&s);
        assert!(text.contains("starting"), "{text}");
        assert!(text.contains("no workers"), "{text}");
        assert!(text.contains("none (no NVIDIA driver)"), "{text}");
    }

    #[test]
    fn percentiles_are_nearest_rank_over_a_bounded_window() {
        let mut t = LatencyTracker::new(100);
        assert_eq!(t.p50(), None);
        for i in 1..=100 {
            t.record(i as f64);
        }
        assert_eq!(t.p50(), Some(50.0));
        assert_eq!(t.p95(), Some(95.0));
        assert_eq!(t.percentile(0.0), Some(1.0));
        assert_eq!(t.percentile(100.0), Some(100.0));
        // The window slides: after 100 more samples of 1000, only those remain.
        for _ in 0..100 {
            t.record(1000.0);
        }
        assert_eq!(t.len(), 100);
        assert_eq!(t.p50(), Some(1000.0));
        t.record(f64::NAN);
        assert_eq!(t.len(), 100);
        let mut one = LatencyTracker::new(0);
        one.record(7.0);
        assert_eq!((one.p50(), one.p95()), (Some(7.0), Some(7.0)));
        let mut all = LatencyTrackers::new();
        all.asr_segment.record(5.0);
        assert_eq!(all.snapshot().asr_segment_ms_p95, Some(5.0));
        assert_eq!(all.snapshot().vad_frame_ms_p50, None);
    }
}
