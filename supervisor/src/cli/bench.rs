//! `swictation bench`: measurements taken side by side in one run, printed as a table of ratios.
//!
//! - Silero per-frame time in the worker's own process vs. one frame per request through the
//!   socket (what isolation costs), and a batched request for comparison.
//! - ASR real-time factor (processing time / audio time) of base-en and tiny-en on the LibriVox
//!   clips, each clip as one segment, with the word error rate.
//! - Context windows: base-en over the clips joined into one 25 s segment at 10, 5 and 3 s, with
//!   the word error rate and the worker's peak resident memory.
//! - The base-en decoder as shipped against its prepared form (`deploy/prepare.sh`), loaded side
//!   by side in one worker process (`swictation-asr-worker --bench`) and run alternately on
//!   each LibriVox clip: ms per decoder step, ms per utterance, word error rate.
//! - Speech end -> transcript through the daemon (`swictation run --input -` in a child with a
//!   private runtime dir, fed the clips at real-time pace): p50 / p95 from its status.
//! - Model load times (reported by the worker) and spawn-to-ready times.
//! - Audio capture through the real cpal/ALSA path (`--capture-s`, default 60 s): the longest
//!   data callback against the callback period, and samples dropped. The input is ALSA's `file`
//!   plugin over the `null` device reading a FIFO this process feeds at real-time pace (see
//!   `deploy/asoundrc.capture`); ALSA reads its configuration once per process, so capture runs
//!   in a child process (`swictation bench --capture-child`) whose environment points ALSA at a
//!   private temp dir. Nothing outside that dir is touched.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use swictation_proto::{Role, VAD_FRAME};

use crate::io::audio;
use crate::io::capture::{self, CaptureConfig, CaptureEvent, CaptureStats};
use crate::io::launch::LaunchConfig;
use crate::io::worker::{worker_program, Worker};
use swictation_policy::wer;

/// The five LibriVox clips `deploy/setup.sh` installs, with their transcripts.
pub fn librivox_clips(dir: &Path) -> Result<Vec<(PathBuf, String)>> {
    let mut clips = Vec::new();
    for n in ["0870", "0880", "0890", "0920", "0930"] {
        let wav = dir.join(format!("sense_and_sensibility_01_austen_64kb-{n}.wav"));
        let txt = wav.with_extension("txt");
        let reference = std::fs::read_to_string(&txt)
            .with_context(|| format!("reading {} (run deploy/setup.sh)", txt.display()))?;
        clips.push((wav, reference.trim().to_string()));
    }
    Ok(clips)
}

struct Row {
    what: String,
    value: String,
    ratio: String,
}

fn stats(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    let mean = v.iter().sum::<f64>() / v.len().max(1) as f64;
    let p95 = v
        .get(((v.len() as f64 - 1.0) * 0.95) as usize)
        .copied()
        .unwrap_or(0.0);
    (mean, p95)
}

/// Run every measurement and print the table. `capture_s` seconds of paced input time the
/// capture path (0 skips it).
pub async fn run(
    cfg: &LaunchConfig,
    clips: Option<PathBuf>,
    frames: usize,
    capture_s: f64,
) -> Result<()> {
    if !(capture_s.is_finite() && capture_s >= 0.0) {
        bail!("--capture-s must be a number of seconds, 0 or more (got {capture_s})");
    }
    if frames == 0 {
        bail!("--frames must be at least 1");
    }
    let speech = swictation_proto::paths::speech_dir();
    let clips_dir = clips.unwrap_or_else(|| speech.join("librivox"));
    let clips = librivox_clips(&clips_dir)?;
    let raw = speech.join("goforward.raw");
    let mut rows = Vec::new();

    // 1. Silero in the worker's own process.
    let mut cmd = std::process::Command::new(worker_program(cfg.workers_dir.as_deref(), Role::Vad));
    cmd.arg("--bench")
        .arg(&raw)
        .arg("--bench-frames")
        .arg(frames.to_string());
    cmd.arg("--device").arg(cfg.vad_device.to_string());
    if let Some(m) = &cfg.vad_model {
        cmd.arg("--model").arg(m);
    }
    if let Some(l) = &cfg.ort_lib {
        cmd.arg("--ort-lib").arg(l);
    }
    let out = cmd
        .output()
        .context("running swictation-vad-worker --bench")?;
    if !out.status.success() {
        bail!(
            "in-process VAD bench failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let inproc: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("parsing the VAD bench output")?;
    let in_mean = inproc["mean_us"].as_f64().unwrap_or(f64::NAN);
    let in_p95 = inproc["p95_us"].as_f64().unwrap_or(f64::NAN);

    // 2. The same frames through the socket, one frame per request, then 32 per request.
    let audio_raw = audio::load(&raw)?.samples;
    let frame_list: Vec<&[f32]> = audio_raw.chunks_exact(VAD_FRAME).collect();
    let t = Instant::now();
    let mut vad = Worker::spawn(&cfg.vad_command(), cfg.load_timeout).await?;
    let vad_ready = t.elapsed().as_secs_f64() * 1e3;
    let vad_load = vad.hello().load_ms;
    let mut one = Vec::with_capacity(frames);
    for i in 0..frames {
        let f = frame_list[i % frame_list.len()].to_vec();
        let t = Instant::now();
        vad.vad_frames(f).await?;
        one.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let mut batched = Vec::new();
    let batch: Vec<f32> = frame_list
        .iter()
        .cycle()
        .take(32)
        .flat_map(|f| f.iter().copied())
        .collect();
    for _ in 0..(frames / 32).max(1) {
        let t = Instant::now();
        vad.vad_frames(batch.clone()).await?;
        batched.push(t.elapsed().as_secs_f64() * 1e6 / 32.0);
    }
    vad.shutdown().await;
    let (sock_mean, sock_p95) = stats(one);
    let (batch_mean, _) = stats(batched);
    rows.push(Row {
        what: format!("VAD per frame, in-process ({frames} frames)"),
        value: format!("{in_mean:.0} µs (p95 {in_p95:.0})"),
        ratio: "1.00".into(),
    });
    rows.push(Row {
        what: "VAD per frame, via socket, 1 frame/request".into(),
        value: format!("{sock_mean:.0} µs (p95 {sock_p95:.0})"),
        ratio: format!("{:.2}", sock_mean / in_mean),
    });
    rows.push(Row {
        what: "VAD per frame, via socket, 32 frames/request".into(),
        value: format!("{batch_mean:.0} µs"),
        ratio: format!("{:.2}", batch_mean / in_mean),
    });

    // 3. ASR real-time factor per model, with accuracy.
    let recordings: Vec<(Vec<f32>, &String)> = clips
        .iter()
        .map(|(p, r)| Ok((audio::load(p)?.samples, r)))
        .collect::<Result<_>>()?;
    let audio_s: f64 = recordings
        .iter()
        .map(|(s, _)| s.len() as f64 / audio::RATE as f64)
        .sum();
    let models = swictation_proto::paths::models_dir();
    let mut rtfs = Vec::new();
    let mut loads = vec![("silero-vad", vad_load as f64, vad_ready)];
    for (name, dir) in [
        ("moonshine-base-en", "moonshine-base-en"),
        ("moonshine-tiny-en", "moonshine-tiny-en"),
    ] {
        let mut c = cfg.clone();
        c.asr_model = Some(models.join(dir));
        let t = Instant::now();
        let mut asr = Worker::spawn(&c.asr_command(), c.load_timeout).await?;
        let ready = t.elapsed().as_secs_f64() * 1e3;
        loads.push((name, asr.hello().load_ms as f64, ready));
        // One warm-up so first-run allocation is not billed to the first clip.
        asr.transcribe(0, recordings[0].0.clone()).await?;
        let (mut errors, mut words) = (0, 0);
        let t = Instant::now();
        for (i, (samples, reference)) in recordings.iter().enumerate() {
            let (text, _) = asr.transcribe(i as u64 + 1, samples.clone()).await?;
            let (e, n) = wer::word_errors(reference, &text);
            errors += e;
            words += n;
        }
        let took = t.elapsed().as_secs_f64();
        asr.shutdown().await;
        let rtf = took / audio_s;
        rtfs.push(rtf);
        rows.push(Row {
            what: format!("ASR {name}, {:.1} s of LibriVox", audio_s),
            value: format!(
                "RTF {rtf:.3} ({:.2} s), WER {:.1} % ({errors}/{words})",
                took,
                100.0 * errors as f64 / words.max(1) as f64
            ),
            ratio: format!("{:.2}", rtf / rtfs[0]),
        });
    }
    // 3b. Context windows: the recording as one segment (as a long dictation would be), base-en
    // at each context of the default ladder.
    let joined: Vec<f32> = recordings
        .iter()
        .flat_map(|(s, _)| s.iter().copied())
        .collect();
    let reference = recordings
        .iter()
        .map(|(_, r)| r.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    let mut ten = None;
    for context_s in [10.0f32, 5.0, 3.0] {
        let mut c = cfg.clone();
        c.asr_model = Some(models.join("moonshine-base-en"));
        c.context_s = context_s;
        let mut asr = Worker::spawn(&c.asr_command(), c.load_timeout).await?;
        asr.transcribe(0, recordings[0].0.clone()).await?;
        let t = Instant::now();
        let (text, _) = asr.transcribe(1, joined.clone()).await?;
        let took = t.elapsed().as_secs_f64();
        let peak = asr.pid().and_then(crate::io::procfs::peak_rss_mb);
        asr.shutdown().await;
        let (errors, words) = wer::word_errors(&reference, &text);
        let rtf = took / audio_s;
        let base = *ten.get_or_insert(rtf);
        rows.push(Row {
            what: format!("ASR base-en, {audio_s:.1} s as one segment, {context_s} s context"),
            value: format!(
                "RTF {rtf:.3}, WER {:.1} % ({errors}/{words}), peak RSS {}",
                100.0 * errors as f64 / words.max(1) as f64,
                peak.map_or("-".into(), |mb| format!("{mb} MiB"))
            ),
            ratio: format!("{:.2}", rtf / base),
        });
    }
    // 3c. The decoder as shipped against its prepared form, side by side in one process.
    rows.extend(prepared_rows(
        cfg,
        &clips,
        &models.join("moonshine-base-en"),
    )?);
    // 3d. Speech end -> transcript through the daemon, as a user would see it.
    rows.extend(daemon_latency_rows(cfg, &clips)?);
    for (name, load, ready) in &loads {
        rows.push(Row {
            what: format!("load {name}"),
            value: format!("{load:.0} ms in worker, {ready:.0} ms spawn→ready"),
            ratio: format!("{:.2}", ready / loads[0].2),
        });
    }

    // 4. Audio capture, last and alone, so that nothing else runs while it is timed.
    if capture_s > 0.0 {
        let speech: Vec<i16> = audio_raw
            .iter()
            .map(|&s| (s.clamp(-1.0, 1.0) * 32_767.0).round() as i16)
            .collect();
        let measured = tokio::task::spawn_blocking(move || measure_capture(capture_s, &speech))
            .await
            .context("the capture measurement panicked")?;
        rows.extend(capture_rows(measured));
    }

    let w = rows
        .iter()
        .map(|r| r.what.chars().count())
        .max()
        .unwrap_or(0);
    let v = rows
        .iter()
        .map(|r| r.value.chars().count())
        .max()
        .unwrap_or(0);
    println!("{:<w$}  {:<v$}  ratio", "measure", "value");
    println!("{}", "-".repeat(w + v + 9));
    for r in rows {
        println!("{:<w$}  {:<v$}  {}", r.what, r.value, r.ratio);
    }
    println!("\nratios: VAD rows vs in-process; ASR rows vs base-en RTF; context rows vs the 10 s context; shipped/prepared rows: shipped ÷ prepared (speed-up); daemon rows vs p50; load rows vs Silero spawn→ready");
    if capture_s > 0.0 {
        println!(
            "capture rows: longest callback / callback period; samples dropped / samples captured"
        );
    }
    Ok(())
}

/// Rows comparing the shipped base-en files with their prepared form on the LibriVox clips,
/// measured in one worker process that alternates between the two on every clip.
fn prepared_rows(cfg: &LaunchConfig, clips: &[(PathBuf, String)], dir: &Path) -> Result<Vec<Row>> {
    let mut cmd = Command::new(worker_program(cfg.workers_dir.as_deref(), Role::Asr));
    cmd.arg("--bench")
        .arg("--model")
        .arg(dir)
        .arg("--threads")
        .arg(crate::config::asr_threads(cfg.asr_threads).to_string());
    for (wav, _) in clips {
        cmd.arg("--clip").arg(wav);
    }
    if let Some(l) = &cfg.ort_lib {
        cmd.arg("--ort-lib").arg(l);
    }
    let out = cmd
        .output()
        .context("running swictation-asr-worker --bench")?;
    if !out.status.success() {
        bail!(
            "the shipped-vs-prepared ASR bench failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("parsing the ASR bench output")?;
    // (ms per step, ms per utterance, errors, words, load ms)
    let measure = |name: &str| -> Result<(f64, f64, usize, usize, f64)> {
        let runs = v[name]["runs"]
            .as_array()
            .with_context(|| format!("no {name} runs in the ASR bench output"))?;
        let (mut steps, mut decoder_ms, mut total_ms) = (0.0, 0.0, 0.0);
        let (mut errors, mut words) = (0, 0);
        for r in runs {
            steps += r["steps"].as_f64().unwrap_or(0.0);
            decoder_ms += r["decoder_ms"].as_f64().unwrap_or(0.0);
            total_ms += r["total_ms"].as_f64().unwrap_or(0.0);
            let clip = r["clip"].as_u64().unwrap_or(0) as usize;
            let reference = clips.get(clip).map_or("", |c| c.1.as_str());
            let (e, n) = wer::word_errors(reference, r["text"].as_str().unwrap_or(""));
            errors += e;
            words += n;
        }
        Ok((
            decoder_ms / steps.max(1.0),
            total_ms / runs.len().max(1) as f64,
            errors,
            words,
            v[name]["load_ms"].as_f64().unwrap_or(f64::NAN),
        ))
    };
    let shipped = measure("shipped")?;
    let prepared = measure("prepared")?;
    let pct = |e: usize, n: usize| 100.0 * e as f64 / n.max(1) as f64;
    let mut rows = Vec::new();
    for (label, m, ratio) in [
        ("shipped", shipped, 1.0),
        ("prepared", prepared, shipped.0 / prepared.0),
    ] {
        rows.push(Row {
            what: format!("ASR base-en decoder {label}, per step"),
            value: format!(
                "{:.1} ms, {:.0} ms per utterance, WER {:.1} % ({}/{}), load {:.0} ms",
                m.0,
                m.1,
                pct(m.2, m.3),
                m.2,
                m.3,
                m.4
            ),
            ratio: format!("{ratio:.2}"),
        });
    }
    rows.push(Row {
        what: "ASR base-en per utterance, shipped ÷ prepared".into(),
        value: format!("{:.0} ms → {:.0} ms", shipped.1, prepared.1),
        ratio: format!("{:.2}", shipped.1 / prepared.1),
    });
    Ok(rows)
}

/// Speech end -> transcript through the daemon: `swictation run --input -` in a child with a
/// private runtime dir (its own control socket), fed the clips at real-time pace, each followed
/// by 1.5 s of silence (the segment closes after `vad.min_silence_ms` of it, which is part of
/// what a user waits for); the latencies are the daemon's own, from its status.
fn daemon_latency_rows(cfg: &LaunchConfig, clips: &[(PathBuf, String)]) -> Result<Vec<Row>> {
    let runtime = PrivateDir::new().context("creating a private runtime dir")?;
    let exe = std::env::current_exe().context("finding the swictation binary")?;
    let mut cmd = Command::new(&exe);
    cmd.args(["run", "--input", "-"])
        .env("XDG_RUNTIME_DIR", runtime.0.as_path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(l) = &cfg.ort_lib {
        cmd.arg("--ort-lib").arg(l);
    }
    let mut child = cmd.spawn().context("starting swictation run --input -")?;
    let mut stdin = child.stdin.take().context("no stdin")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if !line.trim().is_empty() && tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut pcm = Vec::new();
    for (wav, _) in clips {
        pcm.extend(audio::load(wav)?.samples);
        pcm.extend(std::iter::repeat_n(0.0f32, audio::RATE as usize * 3 / 2));
    }
    let bytes: Vec<u8> = pcm
        .iter()
        .flat_map(|&s| ((s.clamp(-1.0, 1.0) * 32_767.0).round() as i16).to_le_bytes())
        .collect();
    // Real-time pace in 20 ms writes, from the moment the daemon is ready to listen.
    let status = |rt: &Path| -> Option<serde_json::Value> {
        let out = Command::new(&exe)
            .args(["status", "--json"])
            .env("XDG_RUNTIME_DIR", rt)
            .output()
            .ok()?;
        serde_json::from_slice(&out.stdout).ok()
    };
    let ready = |s: &serde_json::Value| {
        s["workers"]
            .as_array()
            .is_some_and(|w| w.len() >= 2 && w.iter().all(|w| w["state"].as_str() == Some("ready")))
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while !status(runtime.0.as_path()).is_some_and(|s| ready(&s)) {
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("the daemon's workers were not ready within 120 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let chunk = 640;
    let t0 = Instant::now();
    for (i, c) in bytes.chunks(chunk).enumerate() {
        stdin.write_all(c).context("feeding the daemon")?;
        let due = t0 + Duration::from_secs_f64(((i + 1) * chunk) as f64 / 32_000.0);
        if let Some(d) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
    }
    let mut got = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while got < clips.len() {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(_) => got += 1,
            Err(_) => break,
        }
    }
    // One status refresh after the last transcript.
    std::thread::sleep(Duration::from_millis(1200));
    let s = status(runtime.0.as_path());
    drop(stdin);
    let _ = child.wait();
    if got < clips.len() {
        bail!(
            "the daemon gave {got} of {} transcripts within 60 s",
            clips.len()
        );
    }
    let s = s.context("no status from the daemon")?;
    let l = &s["latency"];
    let f = |k: &str| l[k].as_f64().unwrap_or(f64::NAN);
    let placement = s["workers"]
        .as_array()
        .and_then(|w| w.iter().find(|w| w["role"] == "asr"))
        .and_then(|w| w["placement"].as_str())
        .unwrap_or("?")
        .to_string();
    let p50 = f("speech_end_to_text_ms_p50");
    Ok(vec![
        Row {
            what: format!(
                "daemon speech end → transcript, {} clips, asr {placement}",
                clips.len()
            ),
            value: format!(
                "p50 {p50:.0} ms, p95 {:.0} ms",
                f("speech_end_to_text_ms_p95")
            ),
            ratio: "1.00".into(),
        },
        Row {
            what: "daemon segment closed → transcript".into(),
            value: format!(
                "p50 {:.0} ms, p95 {:.0} ms",
                f("asr_segment_ms_p50"),
                f("asr_segment_ms_p95")
            ),
            ratio: format!("{:.2}", f("asr_segment_ms_p50") / p50),
        },
    ])
}

/// Samples (16 kHz) per FIFO write while probing for the file plugin's period: one sample,
/// which the plugin pads to a whole period.
const PROBE: [u8; 2] = [0, 0];

/// How long the capture device may take to open in the child.
const OPEN_WAIT: Duration = Duration::from_secs(20);

/// Failed opens in the child before the measurement gives up (capture itself retries forever).
const OPEN_ATTEMPTS: usize = 3;

/// How long the reader may leave a written period unread before the feed counts as stalled.
const READ_WAIT: Duration = Duration::from_secs(3);

/// What one capture measurement found.
#[derive(Debug, Clone)]
struct CaptureMeasurement {
    /// Counters over the whole run (probe included).
    stats: CaptureStats,
    /// The stream's native rate and channel count.
    rate: u32,
    channels: u16,
    /// Seconds of paced input written to the FIFO.
    fed_s: f64,
    /// 16 kHz samples the child received from capture.
    captured: u64,
}

/// The table rows for a capture measurement, or one row saying why there is none.
fn capture_rows(measured: Result<CaptureMeasurement, String>) -> Vec<Row> {
    let m = match measured {
        Ok(m) => m,
        Err(why) => {
            return vec![Row {
                what: "capture".into(),
                value: format!("not measured: {why}"),
                ratio: "-".into(),
            }]
        }
    };
    let s = &m.stats;
    let frames_per_callback = s.frames_in as f64 / s.callbacks.max(1) as f64;
    let period_ms = frames_per_callback / f64::from(m.rate.max(1)) * 1e3;
    let longest_ms = s.max_callback_ns as f64 / 1e6;
    let samples_in = s.frames_in.saturating_mul(u64::from(m.channels)).max(1);
    let mut overruns = format!("{} samples dropped", s.overruns);
    if s.errors > 0 {
        overruns.push_str(&format!(
            ", {} stream errors (last: {})",
            s.errors,
            s.last_error.as_deref().unwrap_or("?")
        ));
    } else {
        overruns.push_str(", 0 stream errors");
    }
    vec![
        Row {
            what: format!(
                "capture: longest callback ({} callbacks, {} Hz {} ch)",
                s.callbacks, m.rate, m.channels
            ),
            value: format!("{longest_ms:.3} ms (period {period_ms:.2} ms)"),
            ratio: format!("{:.4}", longest_ms / period_ms),
        },
        Row {
            what: format!("capture: overruns over {:.0} s", m.fed_s),
            value: format!(
                "{overruns}; {:.1} s captured",
                m.captured as f64 / f64::from(audio::RATE)
            ),
            ratio: format!("{:.4}", s.overruns as f64 / samples_in as f64),
        },
    ]
}

/// A private directory under the system temp dir, removed on drop.
struct PrivateDir(PathBuf);

impl PrivateDir {
    fn new() -> std::io::Result<PrivateDir> {
        use std::os::unix::fs::DirBuilderExt;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path =
            std::env::temp_dir().join(format!("swictation-bench-{}-{nanos:x}", std::process::id()));
        std::fs::DirBuilder::new().mode(0o700).create(&path)?;
        Ok(PrivateDir(path))
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The capture child process: its stdin (closing it ends capture), its JSON lines, and the
/// tail of its stderr.
struct CaptureChild {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<serde_json::Value>,
    stderr: Arc<std::sync::Mutex<String>>,
    /// The latest stats line's counters.
    stats: serde_json::Value,
}

impl CaptureChild {
    fn spawn(dir: &Path, fifo: &Path) -> std::result::Result<CaptureChild, String> {
        let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
        let mut child = Command::new(&exe)
            .args(["bench", "--capture-child"])
            .env("XDG_CONFIG_HOME", dir)
            .env("CAPTURE_RAW", fifo)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {} for capture: {e}", exe.display()))?;
        let stdout = child
            .stdout
            .take()
            .ok_or("no stdout from the capture child")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                    if tx.send(v).is_err() {
                        break;
                    }
                }
            }
        });
        let stderr = Arc::new(std::sync::Mutex::new(String::new()));
        if let Some(mut pipe) = child.stderr.take() {
            let keep = Arc::clone(&stderr);
            std::thread::spawn(move || {
                let mut text = String::new();
                let _ = pipe.read_to_string(&mut text);
                if let Ok(mut k) = keep.lock() {
                    *k = text;
                }
            });
        }
        let stdin = child.stdin.take();
        Ok(CaptureChild {
            child,
            stdin,
            lines,
            stderr,
            stats: serde_json::json!({}),
        })
    }

    /// The next line, within `timeout`; a stats line also updates `self.stats`.
    fn next(&mut self, timeout: Duration) -> std::result::Result<serde_json::Value, String> {
        match self.lines.recv_timeout(timeout) {
            Ok(v) => {
                if v["event"] == "stats" {
                    self.stats = v["stats"].clone();
                }
                Ok(v)
            }
            Err(mpsc::RecvTimeoutError::Timeout) => Err(format!(
                "the capture child said nothing for {:.0} s",
                timeout.as_secs_f64()
            )),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                // Its stderr reader finishes once the child has exited.
                let _ = self.child.wait();
                std::thread::sleep(Duration::from_millis(100));
                let stderr = self.stderr.lock().map(|s| s.clone()).unwrap_or_default();
                let last = stderr
                    .lines()
                    .last()
                    .unwrap_or("no output")
                    .trim()
                    .to_owned();
                Err(format!("the capture child ended early: {last}"))
            }
        }
    }

    fn count(&self, key: &str) -> u64 {
        self.stats[key].as_u64().unwrap_or(0)
    }
}

impl Drop for CaptureChild {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Bytes waiting in a FIFO (0 if it cannot be asked). Also used by the capture tests.
pub fn fifo_queued(fifo: &File) -> usize {
    let mut n: nix::libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through the pointer, which points to `n`.
    let rc = unsafe { nix::libc::ioctl(fifo.as_raw_fd(), nix::libc::FIONREAD, &mut n) };
    if rc != 0 {
        return 0;
    }
    usize::try_from(n).unwrap_or(0)
}

/// Writes `bytes` once the reader has taken everything written before (the file plugin fills
/// exactly one period per read, so each read must find exactly one write).
fn write_when_read(fifo: &mut File, bytes: &[u8]) -> std::result::Result<(), String> {
    let start = Instant::now();
    while fifo_queued(fifo) > 0 {
        if start.elapsed() > READ_WAIT {
            return Err(format!(
                "capture stopped reading its input for {:.0} s",
                READ_WAIT.as_secs_f64()
            ));
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    fifo.write_all(bytes)
        .map_err(|e| format!("writing the capture FIFO: {e}"))
}

/// Times `seconds` of capture of `speech` (looped) through cpal and ALSA's file plugin.
fn measure_capture(
    seconds: f64,
    speech: &[i16],
) -> std::result::Result<CaptureMeasurement, String> {
    let dir = PrivateDir::new().map_err(|e| format!("cannot create a temp dir: {e}"))?;
    let alsa = dir.0.join("alsa");
    std::fs::create_dir_all(&alsa)
        .and_then(|()| {
            std::fs::write(
                alsa.join("asoundrc"),
                include_str!("../../../deploy/asoundrc.capture"),
            )
        })
        .map_err(|e| format!("cannot write the ALSA configuration: {e}"))?;
    let fifo_path = dir.0.join("mic.raw");
    nix::unistd::mkfifo(
        &fifo_path,
        nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR,
    )
    .map_err(|e| format!("cannot create a FIFO: {e}"))?;
    // Read-write: opening never blocks, and writes never fail while capture reopens it.
    let mut fifo = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&fifo_path)
        .map_err(|e| format!("cannot open the FIFO: {e}"))?;
    let mut child = CaptureChild::spawn(&dir.0, &fifo_path)?;

    // The device opens (or says why not).
    let deadline = Instant::now() + OPEN_WAIT;
    let mut failures = Vec::new();
    let opened = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "ALSA's file capture did not open within {:.0} s{}",
                OPEN_WAIT.as_secs_f64(),
                failures
                    .last()
                    .map(|f| format!(": {f}"))
                    .unwrap_or_default()
            ));
        }
        let v = child.next(left)?;
        match v["event"].as_str() {
            Some("opened") => break v,
            Some("error") => {
                failures.push(v["message"].as_str().unwrap_or("?").to_owned());
                if failures.len() >= OPEN_ATTEMPTS {
                    return Err(format!(
                        "ALSA's file capture is not usable: {}",
                        failures[0]
                    ));
                }
            }
            _ => {}
        }
    };
    let rate = opened["rate"].as_u64().unwrap_or(0);
    let channels = opened["channels"].as_u64().unwrap_or(0);
    if rate == 0 || channels == 0 {
        return Err(format!("the capture child reported {opened}"));
    }

    // The file plugin's period in 16 kHz samples: probes (each padded to a period) until a
    // callback arrives.
    let mut probes = 0;
    while child.count("callbacks") == 0 {
        if probes == 20 {
            return Err(format!("no capture callback after {probes} probe writes"));
        }
        write_when_read(&mut fifo, &PROBE)?;
        probes += 1;
        let wait = Instant::now() + Duration::from_millis(200);
        while Instant::now() < wait && child.count("callbacks") == 0 {
            child.next(Duration::from_secs(5))?;
        }
    }
    let (frames_in, callbacks) = (child.count("frames_in"), child.count("callbacks"));
    // Native frames per callback, scaled to 16 kHz: must be a whole number of samples.
    let scaled = frames_in * u64::from(audio::RATE) / callbacks;
    let period = scaled / rate;
    if period == 0 || !scaled.is_multiple_of(rate) || period > u64::from(audio::RATE) {
        return Err(format!(
            "unexpected capture period: {frames_in} frames in {callbacks} callbacks at {rate} Hz"
        ));
    }
    let period = period as usize;

    // Real-time feed: one period per write, each due at its real-time instant.
    let silence = [0i16; 1];
    let source = if speech.is_empty() {
        &silence[..]
    } else {
        speech
    };
    let total = (seconds * f64::from(audio::RATE)).round() as usize;
    let mut bytes = Vec::with_capacity(period * 2);
    let t0 = Instant::now();
    let mut written = 0usize;
    let mut pos = 0usize;
    while written < total {
        let due = t0 + Duration::from_secs_f64(written as f64 / f64::from(audio::RATE));
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        bytes.clear();
        for _ in 0..period {
            bytes.extend_from_slice(&source[pos % source.len()].to_le_bytes());
            pos += 1;
        }
        write_when_read(&mut fifo, &bytes)?;
        written += period;
        // Keep the child's lines flowing (its stdout pipe must not fill up).
        while let Ok(v) = child.lines.try_recv() {
            if v["event"] == "stats" {
                child.stats = v["stats"].clone();
            }
        }
    }
    let fed_s = written as f64 / f64::from(audio::RATE);
    // Let the last period be read, then end capture and take the final counters.
    let _ = write_when_read(&mut fifo, &[]);
    std::thread::sleep(Duration::from_millis(100));
    drop(child.stdin.take());
    let done = loop {
        let v = child.next(Duration::from_secs(10))?;
        if v["event"] == "done" {
            break v;
        }
    };
    let stats: CaptureStats = serde_json::from_value(done["stats"].clone())
        .map_err(|e| format!("the capture child's counters: {e}"))?;
    Ok(CaptureMeasurement {
        stats,
        rate: rate as u32,
        channels: channels as u16,
        fed_s,
        captured: done["samples"].as_u64().unwrap_or(0),
    })
}

/// The capture side of the capture measurement, run by [`run`] as `swictation bench
/// --capture-child` with ALSA pointed at its FIFO: captures from the default input until
/// standard input closes, printing one JSON line per event (audio only counted) and the
/// counters every 20 ms, then `{"event":"done",...}` with the final counters.
pub async fn capture_child() -> Result<()> {
    tokio::task::spawn_blocking(capture_child_blocking)
        .await
        .context("the capture child panicked")?
}

fn capture_child_blocking() -> Result<()> {
    let emit = |v: serde_json::Value| {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{v}");
        let _ = out.flush();
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let handle = capture::start(CaptureConfig::default(), tx).context("starting capture")?;
    let stop = Arc::new(AtomicBool::new(false));
    let stop_reader = Arc::clone(&stop);
    std::thread::spawn(move || {
        // Anything on stdin is ignored; its end is the signal to stop.
        let mut sink = Vec::new();
        let _ = std::io::stdin().lock().read_to_end(&mut sink);
        stop_reader.store(true, Ordering::SeqCst);
    });
    let mut samples = 0u64;
    let record = |ev: CaptureEvent, samples: &mut u64| match ev {
        CaptureEvent::Audio(a) => *samples += a.len() as u64,
        CaptureEvent::Opened {
            device,
            rate,
            channels,
            format,
        } => emit(
            serde_json::json!({"event": "opened", "device": device, "rate": rate,
            "channels": channels, "format": format}),
        ),
        CaptureEvent::Error(message) => {
            emit(serde_json::json!({"event": "error", "message": message}))
        }
    };
    let mut last_stats = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        while let Ok(ev) = rx.try_recv() {
            record(ev, &mut samples);
        }
        if last_stats.elapsed() >= Duration::from_millis(20) {
            last_stats = Instant::now();
            emit(
                serde_json::json!({"event": "stats", "samples": samples, "stats": handle.stats()}),
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let stats = handle.stats();
    handle.stop();
    while let Some(ev) = rx.blocking_recv() {
        record(ev, &mut samples);
    }
    emit(serde_json::json!({"event": "done", "samples": samples, "stats": stats}));
    Ok(())
}
