//! End-to-end tests of `swictation::capture` through real ALSA on a machine
//! with no sound card.
//!
//! ALSA's `file` plugin (configured by `deploy/asoundrc.capture`) turns a FIFO
//! into a capture device. ALSA reads its configuration and `CAPTURE_RAW` when
//! the process first opens a device, so each test runs capture in a child
//! process (this test binary re-executed on [`capture_child`]) whose
//! environment points ALSA at the test's own temp dir; nothing outside it is
//! touched. The parent feeds real speech into the FIFO at real-time pace and
//! reads the child's events, as JSON lines on stdout, and its captured audio,
//! as raw `f32` in a file.
//!
//! The file plugin fills one period per FIFO read and pads a short read with
//! stale buffer contents, so the parent first measures the period (one probe
//! write produces one callback) and then writes exactly one period per write.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use swictation::capture::{self, CaptureConfig, CaptureEvent};

/// Set in the child's environment to the file it writes captured audio to.
const CHILD_ENV: &str = "SWICTATION_CAPTURE_CHILD";
/// Prefix of the child's JSON lines, to tell them from libtest's output.
const PREFIX: &str = "CAPTURE_JSON ";
/// The speech clip fed through ALSA (7.1 s of a LibriVox reading, 16 kHz mono).
const CLIP: &str = "librivox/sense_and_sensibility_01_austen_64kb-0870.wav";

/// The capture side, run in a child process by the tests below; a no-op in a
/// normal test run. It captures until its stdin says `stop` (or closes),
/// printing every event and a stats line every 20 ms.
#[test]
fn capture_child() {
    let Some(out_path) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let mut out = BufWriter::new(File::create(out_path).expect("child output file"));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let handle = capture::start(CaptureConfig::default(), tx).expect("capture::start");
    let stop = Arc::new(AtomicBool::new(false));
    let stop_reader = Arc::clone(&stop);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            match line {
                Ok(l) if l.trim() != "stop" => continue,
                _ => break,
            }
        }
        stop_reader.store(true, Ordering::SeqCst);
    });
    let mut samples = 0usize;
    let mut record = |ev: CaptureEvent, samples: &mut usize, out: &mut BufWriter<File>| match ev {
        CaptureEvent::Audio(a) => {
            for s in &a {
                out.write_all(&s.to_le_bytes()).expect("write captured audio");
            }
            *samples += a.len();
        }
        CaptureEvent::Opened {
            device,
            rate,
            channels,
            format,
        } => emit(&json!({"event": "opened", "samples": *samples, "device": device,
            "rate": rate, "channels": channels, "format": format})),
        CaptureEvent::Error(message) => {
            emit(&json!({"event": "error", "samples": *samples, "message": message}))
        }
    };
    let mut last_stats = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        while let Ok(ev) = rx.try_recv() {
            record(ev, &mut samples, &mut out);
        }
        if last_stats.elapsed() >= Duration::from_millis(20) {
            last_stats = Instant::now();
            emit(&json!({"event": "stats", "samples": samples, "stats": handle.stats()}));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    // Counters before stop: the stream is idle by now, and stop() consumes the handle.
    let stats = handle.stats();
    let t = Instant::now();
    handle.stop();
    let stop_ms = t.elapsed().as_millis() as u64;
    // The capture thread has ended and dropped its sender: this drains the rest.
    while let Some(ev) = rx.blocking_recv() {
        record(ev, &mut samples, &mut out);
    }
    out.flush().expect("flush captured audio");
    emit(&json!({"event": "done", "samples": samples, "stop_ms": stop_ms, "stats": stats}));
}

fn emit(v: &Value) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{PREFIX}{v}");
    let _ = stdout.flush();
}
