//! `swictation soak`: loop real speech through the supervised pipeline while faults are injected
//! into random workers (from inside, over the protocol) and inflicted from outside (SIGKILL,
//! SIGSTOP, the ASR worker killed while it is inside a request), then check that nothing was lost,
//! duplicated or leaked, that the words that come out are the words that went in (word error rate
//! against the clips' reference texts), that the speech seconds delivered match those fed, that
//! nothing was quarantined that no fault planned, and that the supervisor's memory did not grow.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use swictation_proto::{Fault, Role};
use tokio::sync::mpsc;

use crate::io::audio;
use crate::io::launch::LaunchConfig;
use crate::report::board::Board;
use crate::supervision::stages::{
    stage_channels, Pipeline, PipelineConfig, StageCommand, StageControl,
};
use crate::supervision::supervised::Stats;
use swictation_policy::segmenter::SegmenterConfig;

/// Soak parameters.
#[derive(Debug, Clone)]
pub struct SoakArgs {
    /// How long speech is fed.
    pub duration: Duration,
    /// Mean interval between faults (each interval is drawn from 0.5×..1.5× this).
    pub fault_every: Duration,
    /// Seed of the fault schedule.
    pub seed: u64,
    /// Feed speech as fast as the pipeline takes it instead of in real time.
    pub fast: bool,
}

/// A small deterministic generator (SplitMix64): the schedule is reproducible from `--seed`.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// One kind of fault the soak inflicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Inflict {
    Inject(FaultKind),
    Kill,
    Freeze,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum FaultKind {
    Abort,
    Segfault,
    Exit,
    Hang,
    CudaFault,
    GrowMemory,
}

const MENU: &[Inflict] = &[
    Inflict::Inject(FaultKind::Abort),
    Inflict::Inject(FaultKind::Segfault),
    Inflict::Inject(FaultKind::Exit),
    Inflict::Inject(FaultKind::Hang),
    Inflict::Inject(FaultKind::CudaFault),
    Inflict::Inject(FaultKind::GrowMemory),
    Inflict::Kill,
    Inflict::Freeze,
];

impl Inflict {
    fn name(self) -> &'static str {
        match self {
            Inflict::Inject(FaultKind::Abort) => "abort",
            Inflict::Inject(FaultKind::Segfault) => "segfault",
            Inflict::Inject(FaultKind::Exit) => "exit(42)",
            Inflict::Inject(FaultKind::Hang) => "hang",
            Inflict::Inject(FaultKind::CudaFault) => "cuda fault",
            Inflict::Inject(FaultKind::GrowMemory) => "grow 64 MiB",
            Inflict::Kill => "SIGKILL",
            Inflict::Freeze => "SIGSTOP",
        }
    }

    fn fault(self) -> Option<Fault> {
        match self {
            Inflict::Inject(FaultKind::Abort) => Some(Fault::Abort),
            Inflict::Inject(FaultKind::Segfault) => Some(Fault::Segfault),
            Inflict::Inject(FaultKind::Exit) => Some(Fault::Exit(42)),
            Inflict::Inject(FaultKind::Hang) => Some(Fault::Hang),
            Inflict::Inject(FaultKind::CudaFault) => Some(Fault::CudaFault),
            Inflict::Inject(FaultKind::GrowMemory) => Some(Fault::GrowMemory(64)),
            Inflict::Kill | Inflict::Freeze => None,
        }
    }
}

/// Everything the soak measured.
#[derive(Debug, Default)]
pub struct SoakReport {
    /// Faults inflicted by kind and role.
    pub faults: BTreeMap<(String, &'static str), u32>,
    /// Segments the segmenter emitted.
    pub segments_in: u64,
    /// Transcripts delivered.
    pub transcripts_out: u64,
    /// Segments neither delivered nor quarantined.
    pub lost: u64,
    /// Segments delivered more than once.
    pub duplicated: u64,
    /// Transcripts delivered out of order.
    pub out_of_order: u64,
    /// Segments quarantined.
    pub quarantined: u64,
    /// VAD worker counters.
    pub vad: Stats,
    /// ASR worker counters.
    pub asr: Stats,
    /// Supervisor resident memory after start-up and at the end, MiB.
    pub rss_mb: (u64, u64),
    /// Open file descriptors after start-up and after shutdown.
    pub fds: (usize, usize),
    /// Zombie children left after shutdown.
    pub zombies: usize,
    /// Word errors of everything delivered against the reference texts of the clips fed.
    pub word_errors: usize,
    /// Words in those reference texts.
    pub words: usize,
    /// Seconds of recorded speech fed (whole clips only).
    pub speech_in_s: f64,
    /// Seconds of audio in the segments delivered.
    pub speech_out_s: f64,
    /// Faults inflicted on the ASR worker while it was inside a request.
    pub mid_request: u32,
    /// Clips fed whose own segments came out with more than [`MAX_CLIP_WER_PCT`] word errors:
    /// (position in the feed, word errors, words).
    pub wrong_clips: Vec<(usize, usize, usize)>,
    /// Clips fed.
    pub clips: usize,
}

/// Most word errors allowed, percent of the reference words (base-en makes about 3 % on the
/// clips; a lost, duplicated or wrong segment makes far more).
pub const MAX_WER_PCT: usize = 10;

/// Most word errors allowed in the segments of any one clip, percent of its words: loose enough
/// for the model's own slips on a short clip, tight enough that a segment lost, emptied,
/// duplicated or swapped for another shows.
pub const MAX_CLIP_WER_PCT: usize = 34;

/// Most supervisor memory growth allowed over a soak, MiB.
pub const MAX_RSS_GROWTH_MB: u64 = 150;

impl SoakReport {
    /// Total faults inflicted.
    pub fn fault_count(&self) -> u32 {
        self.faults.values().sum()
    }

    /// The invariants that must hold; each violation as a sentence.
    pub fn violations(&self) -> Vec<String> {
        let mut v = Vec::new();
        if self.lost > 0 {
            v.push(format!("{} segment(s) lost", self.lost));
        }
        if self.duplicated > 0 {
            v.push(format!("{} transcript(s) duplicated", self.duplicated));
        }
        if self.out_of_order > 0 {
            v.push(format!("{} transcript(s) out of order", self.out_of_order));
        }
        if self.fds.1 > self.fds.0 {
            v.push(format!(
                "{} file descriptor(s) leaked",
                self.fds.1 - self.fds.0
            ));
        }
        if self.zombies > 0 {
            v.push(format!("{} zombie process(es)", self.zombies));
        }
        if self.segments_in == 0 {
            v.push("no speech was segmented".into());
        }
        if self.word_errors * 100 > self.words * MAX_WER_PCT {
            v.push(format!(
                "wrong text: {} word errors in {} words (more than {MAX_WER_PCT} %)",
                self.word_errors, self.words
            ));
        }
        if !self.wrong_clips.is_empty() {
            let list: Vec<String> = self
                .wrong_clips
                .iter()
                .map(|(k, e, w)| format!("clip {} ({e} errors in {w} words)", k + 1))
                .collect();
            v.push(format!(
                "wrong text in {} clip(s), more than {MAX_CLIP_WER_PCT} % each: {}",
                list.len(),
                list.join(", ")
            ));
        }
        if self.speech_out_s < 0.8 * self.speech_in_s {
            v.push(format!(
                "audio lost: {:.1} s of speech fed, {:.1} s delivered",
                self.speech_in_s, self.speech_out_s
            ));
        }
        if self.quarantined > 0 {
            v.push(format!(
                "{} unplanned quarantine(s) (no fault was aimed at one segment twice)",
                self.quarantined
            ));
        }
        let growth = self.rss_mb.1.saturating_sub(self.rss_mb.0);
        if growth > MAX_RSS_GROWTH_MB {
            v.push(format!(
                "supervisor memory grew {growth} MiB (bound {MAX_RSS_GROWTH_MB})"
            ));
        }
        v
    }

    /// The table the command prints.
    pub fn table(&self) -> String {
        use std::fmt::Write;
        let mut t = String::new();
        let row = |t: &mut String, k: &str, v: String| {
            let _ = writeln!(t, "{k:<34} {v}");
        };
        let faults: Vec<String> = self
            .faults
            .iter()
            .map(|((role, kind), n)| format!("{role} {kind} ×{n}"))
            .collect();
        row(
            &mut t,
            "faults inflicted",
            format!("{} ({})", self.fault_count(), faults.join(", ")),
        );
        row(&mut t, "segments in", self.segments_in.to_string());
        row(&mut t, "transcripts out", self.transcripts_out.to_string());
        row(&mut t, "lost", self.lost.to_string());
        row(&mut t, "duplicated", self.duplicated.to_string());
        row(&mut t, "out of order", self.out_of_order.to_string());
        row(&mut t, "quarantined", self.quarantined.to_string());
        row(
            &mut t,
            "word errors",
            format!(
                "{} in {} words ({:.1} %)",
                self.word_errors,
                self.words,
                100.0 * self.word_errors as f64 / self.words.max(1) as f64
            ),
        );
        row(
            &mut t,
            "clips over the word bound",
            format!(
                "{} of {} (more than {MAX_CLIP_WER_PCT} % word errors in a clip's own segments)",
                self.wrong_clips.len(),
                self.clips
            ),
        );
        row(
            &mut t,
            "speech in → out",
            format!("{:.1} s → {:.1} s", self.speech_in_s, self.speech_out_s),
        );
        row(
            &mut t,
            "asr faults mid-request",
            self.mid_request.to_string(),
        );
        for (role, s) in [("vad", &self.vad), ("asr", &self.asr)] {
            let by_class: Vec<String> =
                s.restarts.iter().map(|(k, n)| format!("{k} {n}")).collect();
            row(
                &mut t,
                &format!("{role} restarts by class"),
                if by_class.is_empty() {
                    "none".into()
                } else {
                    by_class.join(", ")
                },
            );
            row(
                &mut t,
                &format!("{role} recovery (failure → ready)"),
                percentiles(&s.recoveries),
            );
            row(
                &mut t,
                &format!("{role} restart (spawn → ready)"),
                percentiles(&s.startups),
            );
        }
        row(
            &mut t,
            "supervisor RSS start → end",
            format!("{} → {} MiB", self.rss_mb.0, self.rss_mb.1),
        );
        row(
            &mut t,
            "file descriptors start → end",
            format!("{} → {}", self.fds.0, self.fds.1),
        );
        row(&mut t, "zombies", self.zombies.to_string());
        t
    }
}

fn percentiles(v: &[Duration]) -> String {
    if v.is_empty() {
        return "n/a".into();
    }
    let mut ms: Vec<f64> = v.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    let p = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    format!(
        "p50 {:.0} ms, p95 {:.0} ms, max {:.0} ms (n={})",
        p(0.5),
        p(0.95),
        p(1.0),
        ms.len()
    )
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

fn zombie_children() -> usize {
    let me = std::process::id();
    crate::io::procfs::pids()
        .filter_map(crate::io::procfs::stat)
        .filter(|s| s.state == 'Z' && s.ppid == me)
        .count()
}

/// A clip fed: its reference text, seconds of speech, and where it starts and ends in the stream.
type Fed = (String, f64, f64, f64);

/// A segment delivered: its index, text, seconds, and its middle in the stream.
type Delivered = (u64, String, f64, f64);

/// Run the soak.
pub async fn run(mut engine: LaunchConfig, args: SoakArgs) -> Result<SoakReport> {
    engine.allow_faults = true;
    let speech_dir = swictation_proto::paths::speech_dir().join("librivox");
    let clips = crate::cli::bench::librivox_clips(&speech_dir)?;
    let mut speech = Vec::new();
    for (path, text) in &clips {
        let mut s = audio::load(path)?.samples;
        let secs = s.len() as f64 / f64::from(audio::RATE);
        s.extend(std::iter::repeat_n(0.0f32, audio::RATE as usize));
        speech.push((s, text.clone(), secs));
    }
    // What was fed: (reference text, seconds of speech, where it starts and ends in the stream),
    // whole clips only.
    let fed: Arc<Mutex<Vec<Fed>>> = Arc::default();

    let state = tempfile_dir()?;
    let mut cfg = PipelineConfig::new(engine, SegmenterConfig::default());
    cfg.quarantine_dir = state.join("quarantine");
    let board = Board::new();
    let mut pipeline = Pipeline::new(cfg, board.clone());
    pipeline.start().await;
    let fds_start = open_fds();
    let rss_start = crate::io::procfs::rss_mb(std::process::id()).unwrap_or(0);

    let (control, receivers) = stage_channels();
    let (audio_tx, audio_rx) = mpsc::channel::<Vec<f32>>(600);
    let deadline = Instant::now() + args.duration;
    let fast = args.fast;
    let fed_by_source = fed.clone();
    let source = tokio::spawn(async move {
        let chunk = audio::RATE as usize / 10;
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        // Whole clips only, so the words fed are known exactly.
        let mut at_s = 0.0f64;
        'outer: loop {
            for (clip, text, secs) in &speech {
                if Instant::now() >= deadline {
                    break 'outer;
                }
                for part in clip.chunks(chunk) {
                    if !fast {
                        tick.tick().await;
                    }
                    if audio_tx.send(part.to_vec()).await.is_err() {
                        break 'outer;
                    }
                }
                let end_s = at_s + clip.len() as f64 / f64::from(audio::RATE);
                if let Ok(mut f) = fed_by_source.lock() {
                    f.push((text.clone(), *secs, at_s, end_s));
                }
                at_s = end_s;
            }
        }
    });

    let faults: Arc<Mutex<BTreeMap<(String, &'static str), u32>>> = Arc::default();
    let mid_request: Arc<Mutex<u32>> = Arc::default();
    let fault_task = {
        let faults = faults.clone();
        let mid_request = mid_request.clone();
        let board = board.clone();
        let control: StageControl = control.clone();
        let (every, seed) = (args.fault_every, args.seed);
        tokio::spawn(async move {
            let mut rng = Rng(seed);
            loop {
                let wait = every.mul_f64(0.5 + rng.unit());
                if Instant::now() + wait >= deadline {
                    break;
                }
                tokio::time::sleep(wait).await;
                let role = if rng.below(2) == 0 {
                    Role::Vad
                } else {
                    Role::Asr
                };
                let what = MENU[rng.below(MENU.len() as u64) as usize];
                let inflicted = match what.fault() {
                    Some(f) => control.for_role(role).send(StageCommand::Inject(f)).is_ok(),
                    None => {
                        // Aimed at a request in progress: wait (a little) for the ASR worker
                        // to be inside one.
                        let mut busy = false;
                        if role == Role::Asr {
                            let until = Instant::now() + Duration::from_secs(3);
                            while Instant::now() < until && !busy {
                                busy = board
                                    .snapshot()
                                    .workers
                                    .iter()
                                    .any(|w| w.role == role.as_str() && w.state == "busy");
                                if !busy {
                                    tokio::time::sleep(Duration::from_millis(5)).await;
                                }
                            }
                        }
                        if busy {
                            if let Ok(mut m) = mid_request.lock() {
                                *m += 1;
                            }
                        }
                        let pid = board
                            .snapshot()
                            .workers
                            .iter()
                            .find(|w| w.role == role.as_str())
                            .and_then(|w| w.pid);
                        let sig = if what == Inflict::Kill {
                            nix::sys::signal::Signal::SIGKILL
                        } else {
                            nix::sys::signal::Signal::SIGSTOP
                        };
                        pid.is_some_and(|p| {
                            nix::sys::signal::kill(nix::unistd::Pid::from_raw(p as i32), sig)
                                .is_ok()
                        })
                    }
                };
                if inflicted {
                    crate::log_info!("soak: {} → {role} worker", what.name());
                    if let Ok(mut f) = faults.lock() {
                        *f.entry((role.as_str().to_string(), what.name()))
                            .or_default() += 1;
                    }
                }
            }
        })
    };

    // (segment, text, seconds, middle of the segment in the stream)
    let delivered: Arc<Mutex<Vec<Delivered>>> = Arc::default();
    let seen = delivered.clone();
    let report = pipeline
        .run(
            audio_rx,
            move |s| {
                if let Ok(mut d) = seen.lock() {
                    d.push((
                        s.index,
                        s.text.trim().to_owned(),
                        s.end - s.start,
                        (s.start + s.end) / 2.0,
                    ));
                }
            },
            Some(receivers),
        )
        .await?;
    fault_task.abort();
    source.await.context("speech source")?;
    drop(control);
    // Give the reaper a moment: zombies are counted after the workers were waited for.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let delivered_all = delivered.lock().map(|d| d.clone()).unwrap_or_default();
    let delivered: Vec<u64> = delivered_all.iter().map(|d| d.0).collect();
    let fed = fed.lock().map(|f| f.clone()).unwrap_or_default();
    let reference = fed
        .iter()
        .map(|(t, ..)| t.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    let said = delivered_all
        .iter()
        .map(|d| d.1.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    let (word_errors, words) = swictation_policy::wer::word_errors(&reference, &said);
    // Each clip against the segments that fall in it (clips are a second of silence apart, so
    // no segment spans two).
    let wrong_clips = fed
        .iter()
        .enumerate()
        .filter_map(|(k, (text, _, start, end))| {
            let said: Vec<&str> = delivered_all
                .iter()
                .filter(|d| (*start..*end).contains(&d.3))
                .map(|d| d.1.as_str())
                .collect();
            let (e, w) = swictation_policy::wer::word_errors(text, &said.join(" "));
            (e * 100 > w * MAX_CLIP_WER_PCT).then_some((k, e, w))
        })
        .collect();
    let unique: BTreeSet<u64> = delivered.iter().copied().collect();
    let quarantined: BTreeSet<u64> = report.quarantined.iter().copied().collect();
    let accounted = unique.union(&quarantined).count() as u64;
    let out_of_order = delivered.windows(2).filter(|w| w[1] <= w[0]).count() as u64;
    let soak = SoakReport {
        faults: faults.lock().map(|f| f.clone()).unwrap_or_default(),
        segments_in: report.segments_in,
        transcripts_out: delivered.len() as u64,
        lost: report.segments_in.saturating_sub(accounted),
        duplicated: (delivered.len() - unique.len()) as u64,
        out_of_order,
        quarantined: quarantined.len() as u64,
        vad: report.vad,
        asr: report.asr,
        rss_mb: (
            rss_start,
            crate::io::procfs::rss_mb(std::process::id()).unwrap_or(0),
        ),
        fds: (fds_start, open_fds()),
        zombies: zombie_children(),
        word_errors,
        words,
        speech_in_s: fed.iter().map(|f| f.1).sum(),
        speech_out_s: delivered_all.iter().map(|d| d.2).sum(),
        mid_request: mid_request.lock().map(|m| *m).unwrap_or(0),
        wrong_clips,
        clips: fed.len(),
    };
    let _ = std::fs::remove_dir_all(&state);
    Ok(soak)
}

/// What the supervisor-kill part of the soak found: the daemon (`swictation run --input -`, as a
/// separate process) SIGKILLed while ASR is busy, `kills` times, then started again.
#[derive(Debug, Default)]
pub struct KillReport {
    /// Supervisor SIGKILLs inflicted.
    pub kills: u32,
    /// Word errors of what came out (before the kills, and recovered after) against the clips fed.
    pub word_errors: usize,
    /// Words in those clips.
    pub words: usize,
    /// Journal entries left after the final start.
    pub journal_left: usize,
    /// Clips fed before the kills.
    pub clips: usize,
    /// Transcripts printed before the kills.
    pub before: usize,
    /// Transcripts the restart printed or recovered from the journal.
    pub after: usize,
    /// Why the part could not run as planned, if it could not.
    pub problem: Option<String>,
}

impl KillReport {
    /// Violations, as sentences.
    pub fn violations(&self) -> Vec<String> {
        let mut v = Vec::new();
        if let Some(p) = &self.problem {
            v.push(format!("supervisor kill: {p}"));
        }
        if self.word_errors * 100 > self.words * MAX_WER_PCT {
            v.push(format!(
                "after supervisor kills: {} word errors in {} words (lost, duplicated or wrong text)",
                self.word_errors, self.words
            ));
        }
        if self.journal_left > 0 {
            v.push(format!(
                "{} journal entries left after the restart",
                self.journal_left
            ));
        }
        v
    }

    /// Table rows.
    pub fn table(&self) -> String {
        format!(
            "{:<34} {}\n{:<34} {} clips: {} transcripts before the kills, {} after the restart\n{:<34} {} in {} words\n{:<34} {}\n",
            "supervisor SIGKILLs",
            self.kills,
            "speech across the kills",
            self.clips,
            self.before,
            self.after,
            "word errors across the kills",
            self.word_errors,
            self.words,
            "journal entries left",
            self.journal_left
        )
    }
}

/// Kill the supervisor itself `kills` times while its ASR worker has speech to transcribe, start
/// it again each time (as systemd would), and check that every clip spoken before a kill comes
/// out exactly once: on standard output before the kill, or recovered from the journal after.
pub fn supervisor_kills(kills: u32) -> Result<KillReport> {
    use std::io::{Read, Write};
    use std::process::{Command, Stdio};
    let exe = std::env::current_exe().context("the swictation binary")?;
    let clips =
        crate::cli::bench::librivox_clips(&swictation_proto::paths::speech_dir().join("librivox"))?;
    let root = tempfile_dir()?.join("kills");
    let (state, run) = (root.join("state"), root.join("run"));
    for d in [&state, &run] {
        crate::io::control::prepare_dir(d)?;
    }
    let journal = state.join("swictation/journal");
    let daemon = |args: &[&str]| {
        let mut c = Command::new(&exe);
        c.args(args)
            .env("XDG_STATE_HOME", &state)
            .env("XDG_RUNTIME_DIR", &run)
            .env_remove("NOTIFY_SOCKET")
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        c
    };
    let entries = || {
        std::fs::read_dir(&journal)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| {
                let n = e.file_name();
                let n = n.to_string_lossy();
                n.ends_with(".seg") || n.ends_with(".draft")
            })
            .count()
    };
    let mut report = KillReport::default();
    let silence = root.join("silence.wav");
    audio::write_wav(&silence, &vec![0.0f32; audio::RATE as usize])?;
    let store =
        crate::io::recovered::RecoveredStore::new(&state.join("swictation/recovered.jsonl"));
    let mut seen = 0;
    for round in 0..kills as usize {
        let (mut reference, mut said) = (Vec::new(), Vec::new());
        let mut child = daemon(&["run", "--input", "-"])
            .stdin(Stdio::piped())
            .spawn()?;
        let (mut bytes, mut spoken_at) = (Vec::new(), 0);
        for k in 0..3 {
            let (path, text) = &clips[(3 * round + k) % clips.len()];
            let mut samples = audio::load(path)?.samples;
            // Where the last clip's speech ends (its silence after is what closes it).
            spoken_at = bytes.len() + 2 * samples.len();
            samples.extend(std::iter::repeat_n(0.0f32, 2 * audio::RATE as usize));
            for s in samples {
                bytes.extend_from_slice(&((s.clamp(-1.0, 1.0) * 32767.0) as i16).to_le_bytes());
            }
            reference.push(text.clone());
        }
        let mut stdin = child.stdin.take().context("stdin")?;
        let written = Arc::new(Mutex::new(None::<Instant>));
        let done = written.clone();
        let feeder = std::thread::spawn(move || {
            // At the pace of speech, as a microphone gives it: what the daemon has read, it has
            // had time to hear. (Piped as fast as it goes, the audio read but not yet through
            // the VAD would be in memory only, which no journal promises to keep.)
            let start = Instant::now();
            const STEP: usize = 2 * audio::RATE as usize / 10;
            for (i, chunk) in bytes.chunks(STEP).enumerate() {
                if stdin.write_all(chunk).is_err() {
                    break;
                }
                if (i + 1) * STEP >= spoken_at {
                    if let Ok(mut d) = done.lock() {
                        d.get_or_insert_with(Instant::now);
                    }
                }
                let due = start + Duration::from_millis(100 * (i as u64 + 1));
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
            }
            // Kept open: the kill, not the end of input, ends this run.
            std::thread::sleep(Duration::from_secs(120));
        });
        let mut stdout = child.stdout.take().context("stdout")?;
        let reader = std::thread::spawn(move || {
            let mut out = String::new();
            let _ = stdout.read_to_string(&mut out);
            out
        });
        // Kill once all the speech has been spoken and its last segment has closed (no draft
        // left) while a closed segment still waits for (or is inside) ASR.
        let start = Instant::now();
        let mut hit = false;
        while start.elapsed() < Duration::from_secs(90) {
            let spoken = written.lock().ok().and_then(|w| *w);
            let (mut segs, mut drafts) = (0, 0);
            for e in std::fs::read_dir(&journal).into_iter().flatten().flatten() {
                let n = e.file_name();
                let n = n.to_string_lossy();
                segs += usize::from(n.ends_with(".seg"));
                drafts += usize::from(n.ends_with(".draft"));
            }
            if spoken.is_some() && drafts == 0 && segs > 0 {
                hit = true;
                break;
            }
            if spoken.is_some_and(|t| t.elapsed() > Duration::from_secs(10)) {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let _ = child.kill();
        let _ = child.wait();
        drop(feeder);
        said.extend(
            reader
                .join()
                .unwrap_or_default()
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_owned),
        );
        if hit {
            report.kills += 1;
        } else {
            report.problem =
                Some("no segment was ever waiting for ASR to kill the supervisor over".into());
        }
        // The restart (as systemd would): it replays the journal first, into the recovered
        // store. Each round is checked on its own, in the order spoken: what was printed before
        // the kill, then what the restart recovered.
        let out = daemon(&["run", "--fast", "--input", &silence.to_string_lossy()])
            .output()
            .context("restarting the daemon")?;
        if !out.status.success() {
            report.problem = Some(format!("the restarted daemon failed ({})", out.status));
        }
        let printed = said.len();
        let recovered = store.list()?;
        said.extend(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_owned),
        );
        said.extend(recovered.iter().skip(seen).map(|r| r.text.clone()));
        seen = recovered.len();
        report.before += printed;
        report.after += said.len() - printed;
        let (e, w) = swictation_policy::wer::word_errors(&reference.join(" "), &said.join(" "));
        report.word_errors += e;
        report.words += w;
        report.journal_left += entries();
        report.clips += reference.len();
    }
    let _ = std::fs::remove_dir_all(&root);
    Ok(report)
}

fn tempfile_dir() -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("swictation-soak-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_is_reproducible_from_the_seed() {
        let a: Vec<u64> = {
            let mut r = Rng(7);
            (0..5).map(|_| r.below(100)).collect()
        };
        let b: Vec<u64> = {
            let mut r = Rng(7);
            (0..5).map(|_| r.below(100)).collect()
        };
        let c: Vec<u64> = {
            let mut r = Rng(8);
            (0..5).map(|_| r.below(100)).collect()
        };
        assert_eq!(a, b);
        assert_ne!(a, c);
        let mut r = Rng(1);
        assert!((0..1000).map(|_| r.unit()).all(|u| (0.0..1.0).contains(&u)));
    }

    #[test]
    fn violations_name_each_broken_invariant() {
        let ok = SoakReport {
            segments_in: 10,
            transcripts_out: 10,
            fds: (9, 9),
            words: 100,
            word_errors: 3,
            speech_in_s: 10.0,
            speech_out_s: 10.5,
            rss_mb: (20, 60),
            ..Default::default()
        };
        assert!(ok.violations().is_empty());
        let bad = SoakReport {
            segments_in: 10,
            lost: 1,
            duplicated: 2,
            fds: (9, 11),
            zombies: 1,
            words: 100,
            word_errors: 30,
            wrong_clips: vec![(2, 9, 12)],
            speech_in_s: 10.0,
            speech_out_s: 5.0,
            quarantined: 1,
            rss_mb: (20, 400),
            ..Default::default()
        };
        let v = bad.violations().join("; ");
        for word in [
            "lost",
            "duplicated",
            "leaked",
            "zombie",
            "wrong text",
            "clip 3 (9 errors in 12 words)",
            "audio lost",
            "unplanned quarantine",
            "memory grew",
        ] {
            assert!(v.contains(word), "{v}");
        }
    }
}
