//! End-to-end tests of `swictation::io::capture` through real ALSA on a machine
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
//! The file plugin (behind `plug`'s rate conversion) consumes exactly one
//! period per FIFO read: a short read is padded with stale buffer contents and
//! a long one loses the excess. So the parent first measures the period
//! (tiny probe writes, each padded to a period, until a callback arrives) and
//! then writes exactly one period per write, each once the FIFO is empty.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use swictation::io::capture::{self, CaptureConfig, CaptureEvent};

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
    // Device listing and matching, against the same ALSA configuration.
    let devices = capture::list_devices().expect("list_devices");
    emit(&json!({"event": "devices", "devices": devices}));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let missing = CaptureConfig {
        device: Some("no such microphone".into()),
        ..CaptureConfig::default()
    };
    match capture::start(missing, tx.clone()) {
        Ok(_) => panic!("a device that does not exist was found"),
        Err(e) => emit(&json!({"event": "not_found", "message": e.to_string()})),
    }
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

/// Handles one event in the child: audio goes to the file, the rest to stdout.
fn record(ev: CaptureEvent, samples: &mut usize, out: &mut BufWriter<File>) {
    match ev {
        CaptureEvent::Audio(a) => {
            for s in &a {
                out.write_all(&s.to_le_bytes())
                    .expect("write captured audio");
            }
            *samples += a.len();
        }
        CaptureEvent::Opened {
            device,
            rate,
            channels,
            format,
        } => emit(
            &json!({"event": "opened", "samples": *samples, "device": device,
            "rate": rate, "channels": channels, "format": format}),
        ),
        CaptureEvent::Error(message) => {
            emit(&json!({"event": "error", "samples": *samples, "message": message}))
        }
    }
}

/// Prints one JSON line for the parent.
fn emit(v: &Value) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{PREFIX}{v}");
    let _ = stdout.flush();
}

/// A capture child process, its FIFO, and what it has reported so far.
struct Rig {
    /// Holds the ALSA configuration, the FIFO and the captured audio; removed on drop.
    _dir: tempfile::TempDir,
    fifo: PathBuf,
    out: PathBuf,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<Value>,
    /// The latest stats line.
    stats: Value,
    /// Every non-stats event, in order.
    events: Vec<Value>,
}

impl Rig {
    /// Sets up ALSA's configuration and the FIFO in a fresh temp dir and
    /// starts the child capturing from them.
    fn start() -> Rig {
        let dir = tempfile::tempdir().expect("temp dir");
        let alsa = dir.path().join("alsa");
        std::fs::create_dir_all(&alsa).expect("alsa config dir");
        std::fs::write(
            alsa.join("asoundrc"),
            include_str!("../../deploy/asoundrc.capture"),
        )
        .expect("write asoundrc");
        let fifo = dir.path().join("mic.raw");
        make_fifo(&fifo);
        let out = dir.path().join("captured.f32");
        let exe = std::env::current_exe().expect("test executable");
        let mut child = Command::new(exe)
            .args([
                "--exact",
                "capture_child",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env("XDG_CONFIG_HOME", dir.path())
            .env("CAPTURE_RAW", &fifo)
            .env(CHILD_ENV, &out)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn capture child");
        let stdout = child.stdout.take().expect("child stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // libtest may print "test capture_child ... " on the same line.
                if let Some(at) = line.find(PREFIX) {
                    let v: Value =
                        serde_json::from_str(&line[at + PREFIX.len()..]).expect("child JSON");
                    if tx.send(v).is_err() {
                        break;
                    }
                }
            }
        });
        let stdin = child.stdin.take();
        Rig {
            _dir: dir,
            fifo,
            out,
            child,
            stdin,
            lines,
            stats: json!({"callbacks": 0, "frames_in": 0}),
            events: Vec::new(),
        }
    }

    /// Waits for the next line satisfying `want` (stats lines are only
    /// recorded unless `want` accepts them), panicking after `timeout`.
    fn wait(&mut self, what: &str, timeout: Duration, want: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let v = match self.lines.recv_timeout(left) {
                Ok(v) => v,
                Err(e) => panic!(
                    "timed out ({e:?}) after {timeout:?} waiting for {what}; events so far: {:?}; last stats: {}",
                    self.events, self.stats
                ),
            };
            if v["event"] == "stats" {
                self.stats = v["stats"].clone();
            } else {
                eprintln!("capture child: {v}");
                self.events.push(v.clone());
            }
            if want(&v) {
                return v;
            }
        }
    }

    /// Waits for a non-stats event named `name`.
    fn wait_event(&mut self, name: &str, timeout: Duration) -> Value {
        self.wait(name, timeout, |v| v["event"] == name)
    }

    /// Opens the FIFO for writing. O_RDWR never blocks and keeps the FIFO
    /// from ever having no reader, so writes cannot fail with EPIPE while
    /// the child reopens the device.
    fn writer(&self) -> File {
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.fifo)
            .expect("open FIFO")
    }

    /// Measures how many 16 kHz samples one FIFO read consumes (one period
    /// of the file plugin): 2-byte probes, each padded by ALSA to a whole
    /// period, are written until a callback arrives. Returns the period and
    /// how many probes it took (each adds one period of padding).
    fn probe_period(&mut self, writer: &mut File, rate: u64) -> (usize, usize) {
        let (cb0, fr0) = (
            count(&self.stats, "callbacks"),
            count(&self.stats, "frames_in"),
        );
        let mut probes = 0;
        while count(&self.stats, "callbacks") == cb0 {
            assert!(
                probes < 20,
                "no callback after {probes} probes (stats {})",
                self.stats
            );
            write_when_empty(writer, &[0, 0]);
            probes += 1;
            // Wait for the next stats line showing the callback (or 100 ms).
            let deadline = Instant::now() + Duration::from_millis(100);
            while Instant::now() < deadline && count(&self.stats, "callbacks") == cb0 {
                self.wait("stats", Duration::from_secs(5), |v| v["event"] == "stats");
            }
        }
        let callbacks = count(&self.stats, "callbacks") - cb0;
        let frames = count(&self.stats, "frames_in") - fr0;
        let per_callback = frames / callbacks;
        assert_eq!(
            per_callback * 16_000 % rate,
            0,
            "a {per_callback}-frame period at {rate} Hz is not a whole number of 16 kHz samples"
        );
        ((per_callback * 16_000 / rate) as usize, probes)
    }

    /// Tells the child to stop; returns its final report and captured audio.
    fn stop(&mut self) -> (Value, Vec<f32>) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.write_all(b"stop\n");
        }
        let done = self.wait_event("done", Duration::from_secs(20));
        let mut bytes = Vec::new();
        File::open(&self.out)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .expect("read captured audio");
        let audio = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        (done, audio)
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        drop(self.stdin.take());
        // A child blocked opening the FIFO waits for a writer: give it one.
        let _ = OpenOptions::new().read(true).write(true).open(&self.fifo);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn make_fifo(path: &Path) {
    nix::unistd::mkfifo(
        path,
        nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR,
    )
    .expect("mkfifo");
}

fn count(stats: &Value, key: &str) -> u64 {
    stats[key].as_u64().unwrap_or(0)
}

/// Writes `bytes` once the reader has taken everything written before, so
/// that each of its reads gets exactly one write.
fn write_when_empty(writer: &mut File, bytes: &[u8]) {
    while swictation::cli::bench::fifo_queued(writer) > 0 {
        std::thread::sleep(Duration::from_micros(200));
    }
    writer.write_all(bytes).expect("write FIFO");
}

/// Writes `samples` as s16le, one `period` per write at real-time pace, each
/// write only once the previous one has been read. The file plugin fills
/// exactly one period per read: a longer read loses the excess, a shorter one
/// is padded with stale data. The last period is padded with silence.
/// Returns the number of samples written.
fn feed(writer: &mut File, samples: &[i16], period: usize) -> usize {
    let mut padded = samples.to_vec();
    padded.resize(samples.len().div_ceil(period) * period, 0);
    let t0 = Instant::now();
    for (i, chunk) in padded.chunks(period).enumerate() {
        let due = t0 + Duration::from_secs_f64((i * period) as f64 / 16_000.0);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let bytes: Vec<u8> = chunk.iter().flat_map(|s| s.to_le_bytes()).collect();
        write_when_empty(writer, &bytes);
    }
    let late = t0.elapsed().as_secs_f64() - padded.len() as f64 / 16_000.0;
    eprintln!(
        "fed {} samples in {:.2} s ({late:+.2} s vs real time)",
        padded.len(),
        t0.elapsed().as_secs_f64()
    );
    padded.len()
}

/// The test clip as 16 kHz s16 samples, or `None` when it is not installed.
/// The test clip's samples; missing is a failure naming the file, never a skip.
fn clip() -> Vec<i16> {
    let path = swictation_e2e::speech().join(CLIP);
    let bytes = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run deploy/setup.sh)", path.display()));
    wav_data(&bytes).expect("clip is a 16-bit WAV with a data chunk")
}

/// The samples of a 16-bit PCM WAV's `data` chunk, found by walking the RIFF
/// chunks rather than assuming a 44-byte header.
fn wav_data(bytes: &[u8]) -> Option<Vec<i16>> {
    if bytes.len() < 12 || &bytes[..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return None;
    }
    let mut at = 12;
    while at + 8 <= bytes.len() {
        let id = &bytes[at..at + 4];
        let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().ok()?) as usize;
        let body = at + 8;
        if id == b"data" {
            let end = (body + len).min(bytes.len());
            return Some(
                bytes[body..end]
                    .chunks_exact(2)
                    .map(|b| i16::from_le_bytes([b[0], b[1]]))
                    .collect(),
            );
        }
        at = body + len + (len & 1);
    }
    None
}

fn to_f32(s: &[i16]) -> Vec<f32> {
    s.iter().map(|&v| f32::from(v) / 32_768.0).collect()
}

/// Normalised cross-correlation of `a` and `b` over their common length.
fn ncc(a: &[f32], b: &[f32]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0.0f64, 0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (f64::from(x), f64::from(y));
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    if aa == 0.0 || bb == 0.0 {
        0.0
    } else {
        ab / (aa * bb).sqrt()
    }
}

/// Finds where `source` starts within `captured` (searching lags up to
/// `max_lag`) and returns that lag and the correlation there: first on 5 ms
/// energy envelopes, then sample by sample around the best envelope lag.
fn align(captured: &[f32], source: &[f32], max_lag: usize) -> (usize, f64) {
    const BLOCK: usize = 80;
    let envelope = |x: &[f32]| -> Vec<f32> {
        let e: Vec<f32> = x
            .chunks(BLOCK)
            .map(|c| c.iter().map(|s| s.abs()).sum::<f32>() / c.len() as f32)
            .collect();
        let mean = e.iter().sum::<f32>() / e.len().max(1) as f32;
        e.iter().map(|v| v - mean).collect()
    };
    let (ec, es) = (envelope(captured), envelope(source));
    let coarse = (0..=max_lag / BLOCK)
        .filter(|&l| l < ec.len())
        .map(|l| (l, ncc(&ec[l..], &es)))
        .fold((0, f64::MIN), |best, c| if c.1 > best.1 { c } else { best })
        .0;
    let centre = coarse * BLOCK;
    (centre.saturating_sub(2 * BLOCK)..=centre + 2 * BLOCK)
        .filter(|&l| l < captured.len())
        .map(|l| (l, ncc(&captured[l..], source)))
        .fold((0, f64::MIN), |best, c| if c.1 > best.1 { c } else { best })
}

/// Checks that `captured` holds `source` (after `lead` samples of probe
/// padding): length within 5 % and correlation above 0.95. Returns the correlation.
fn assert_holds(what: &str, captured: &[f32], source: &[i16], lead: usize) -> f64 {
    let src = to_f32(source);
    let expected = lead + source.len();
    let diff = captured.len().abs_diff(expected);
    assert!(
        diff as f64 <= 0.05 * source.len() as f64,
        "{what}: captured {} samples, expected {expected} ({} probe + {} fed)",
        captured.len(),
        lead,
        source.len()
    );
    let (lag, corr) = align(captured, &src, lead + 8_000);
    eprintln!(
        "{what}: captured {} samples for {} fed (+{lead} probe padding), aligned at lag {lag}, correlation {corr:.4}",
        captured.len(),
        source.len()
    );
    assert!(corr > 0.95, "{what}: correlation {corr:.4} at lag {lag}");
    corr
}

#[test]
fn captures_real_speech_through_alsa() {
    let clip = clip();
    let mut rig = Rig::start();
    let mut writer = rig.writer();
    let devices = rig.wait_event("devices", Duration::from_secs(20));
    let not_found = rig.wait_event("not_found", Duration::from_secs(5));
    let opened = rig.wait_event("opened", Duration::from_secs(20));
    let list = devices["devices"].as_array().expect("device list");
    let default = list
        .iter()
        .find(|d| d["is_default"] == true)
        .unwrap_or_else(|| panic!("no default device in {list:?}"));
    assert_eq!(default["id"], "alsa:default", "{default}");
    assert!(
        default["configs"]
            .as_array()
            .is_some_and(|c| c.iter().any(|r| r["format"] == "F32")),
        "default device configs: {default}"
    );
    let message = not_found["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("no such microphone") && message.contains("alsa:default"),
        "{message}"
    );
    eprintln!(
        "{} input devices listed; --device error: {message}",
        list.len()
    );
    let rate = opened["rate"].as_u64().expect("rate");
    let (period, probes) = rig.probe_period(&mut writer, rate);
    let lead = period * probes;
    eprintln!("opened {opened}; one FIFO read = {period} samples at 16 kHz ({probes} probes)");
    let fed = feed(&mut writer, &clip, period);
    // Let the last period through the resampler's chunking, well within stall_timeout.
    rig.wait("all audio", Duration::from_secs(5), |v| {
        v["event"] == "stats" && count(v, "samples") + 2_000 >= (lead + fed) as u64
    });
    std::thread::sleep(Duration::from_millis(300));
    let (done, audio) = rig.stop();
    drop(writer);
    let stats = &done["stats"];
    eprintln!("final: {done}");
    assert_eq!(done["samples"].as_u64(), Some(audio.len() as u64));
    assert_holds("clip", &audio, &clip[..], lead);
    assert_eq!(count(stats, "overruns"), 0, "samples dropped: {stats}");
    assert!(
        count(stats, "max_callback_us") > 0,
        "callback time not measured: {stats}"
    );
    assert!(
        !rig.events.iter().any(|e| e["event"] == "error"),
        "unexpected errors: {:?}",
        rig.events
    );
}

#[test]
fn reconnects_after_the_source_goes_away() {
    let clip = clip();
    let (first, second) = clip.split_at(clip.len() / 2);
    let mut rig = Rig::start();
    let mut writer = rig.writer();
    let opened = rig.wait_event("opened", Duration::from_secs(20));
    let rate = opened["rate"].as_u64().expect("rate");
    let (period, probes) = rig.probe_period(&mut writer, rate);
    feed(&mut writer, first, period);

    // The source goes away: the FIFO disappears (so reopening fails) and its
    // writer closes (so the open stream hits end of input).
    std::fs::remove_file(&rig.fifo).expect("remove FIFO");
    drop(writer);
    let failed = rig.wait_event("error", Duration::from_secs(10));
    let at_failure = Instant::now();
    // Reopening fails while the FIFO is gone: the child keeps retrying, with
    // growing delays, and says so each time.
    let retry1 = rig.wait_event("error", Duration::from_secs(10));
    let retry2 = rig.wait_event("error", Duration::from_secs(10));
    let retries_took = at_failure.elapsed();
    eprintln!(
        "failure: {failed}\nretry: {retry1}\nretry: {retry2} ({retries_took:?} after the failure)"
    );
    // Back-off: 250 ms then 500 ms (plus the time the attempts take).
    assert!(
        retries_took >= Duration::from_millis(700),
        "retries too fast: {retries_took:?}"
    );

    // The source comes back.
    make_fifo(&rig.fifo);
    let mut writer = rig.writer();
    let reopened = rig.wait_event("opened", Duration::from_secs(20));
    let (period2, probes2) = rig.probe_period(&mut writer, rate);
    let lead2 = period2 * probes2;
    let fed_second = feed(&mut writer, second, period2);
    let boundary = count(&reopened, "samples") as usize;
    rig.wait("all audio", Duration::from_secs(5), |v| {
        v["event"] == "stats"
            && count(v, "samples") + 2_000 >= (boundary + lead2 + fed_second) as u64
    });
    std::thread::sleep(Duration::from_millis(300));
    let (done, audio) = rig.stop();
    drop(writer);
    eprintln!("final: {done}");

    let before = &audio[..count(&failed, "samples") as usize];
    let after = &audio[boundary..];
    let corr_first = align(before, &to_f32(first), period * probes + 8_000).1;
    eprintln!(
        "before the failure: {} samples, correlation {corr_first:.4}",
        before.len()
    );
    assert!(corr_first > 0.95, "first half correlation {corr_first:.4}");
    assert_holds("after reconnecting", after, second, lead2);
    let stats = &done["stats"];
    assert!(count(stats, "errors") >= 3, "errors not counted: {stats}");
}

/// The number before `unit` in `text` (e.g. `0.043` in `0.043 ms`).
fn number_before(text: &str, unit: &str) -> Option<f64> {
    let at = text.find(unit)?;
    text[..at]
        .split_whitespace()
        .last()?
        .trim_start_matches('(')
        .parse()
        .ok()
}

#[test]
fn bench_times_capture_callbacks_through_alsa() {
    let _serial = swictation_e2e::serial();
    let env = swictation_e2e::TestEnv::new();
    let t0 = Instant::now();
    let out = swictation_e2e::run_with_deadline(
        env.cmd()
            .args(["bench", "--frames", "64", "--capture-s", "5"]),
        Duration::from_secs(300),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("bench took {:?}:\n{stdout}", t0.elapsed());
    assert!(
        out.status.success(),
        "bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let row = |what: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(what))
            .unwrap_or_else(|| panic!("no {what:?} row in:\n{stdout}"))
            .to_owned()
    };
    // "capture: longest callback (N callbacks, R Hz C ch)  X ms (period P ms)  RATIO"
    let longest = row("capture: longest callback");
    let callbacks = number_before(&longest, "callbacks,").expect("callback count");
    let x = number_before(&longest, "ms (period").expect("longest callback");
    let period = number_before(&longest, "ms)").expect("callback period");
    let ratio: f64 = longest
        .split_whitespace()
        .last()
        .and_then(|r| r.parse().ok())
        .expect("ratio");
    // 5 s of input in callbacks of `period` ms each (plus the probe's few).
    let expected = 5_000.0 / period;
    assert!(
        (callbacks - expected).abs() <= 0.05 * expected + 20.0,
        "{callbacks} callbacks for 5 s of {period} ms periods: {longest}"
    );
    assert!(
        x > 0.0 && x < period,
        "longest callback {x} ms vs period {period} ms: {longest}"
    );
    assert!(
        (ratio - x / period).abs() < 0.001 + 0.01 * ratio,
        "ratio {ratio} is not {x}/{period}: {longest}"
    );
    let overruns = row("capture: overruns over 5 s");
    assert!(
        overruns.contains(" 0 samples dropped, 0 stream errors"),
        "{overruns}"
    );
    let captured = number_before(&overruns, "s captured").expect("seconds captured");
    assert!(
        (captured - 5.0).abs() < 0.25,
        "{captured} s captured of 5 s fed: {overruns}"
    );
    assert!(
        !stdout.contains("not measured"),
        "a row was not measured:\n{stdout}"
    );
}
