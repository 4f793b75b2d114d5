//! `swictation bench`: measurements taken side by side in one run, printed as a table of ratios.
//!
//! - Silero per-frame time in the worker's own process vs. one frame per request through the
//!   socket (what isolation costs), and a batched request for comparison.
//! - ASR real-time factor (processing time / audio time) of base-en and tiny-en on the LibriVox
//!   clips, each clip as one segment, with the word error rate.
//! - Model load times (reported by the worker) and spawn-to-ready times.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use swictation_proto::{Role, VAD_FRAME};

use crate::audio;
use crate::pipeline::EngineConfig;
use crate::wer;
use crate::worker::{worker_program, Worker};

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

/// Run every measurement and print the table.
pub async fn run(cfg: &EngineConfig, clips: Option<PathBuf>, frames: usize) -> Result<()> {
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
    for (name, load, ready) in &loads {
        rows.push(Row {
            what: format!("load {name}"),
            value: format!("{load:.0} ms in worker, {ready:.0} ms spawn→ready"),
            ratio: format!("{:.2}", ready / loads[0].2),
        });
    }

    let w = rows.iter().map(|r| r.what.len()).max().unwrap_or(0);
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
    println!("\nratios: VAD rows vs in-process; ASR rows vs base-en RTF; load rows vs Silero spawn→ready");
    Ok(())
}
