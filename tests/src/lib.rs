//! Helpers for the end-to-end tests in `tests/tests/`: locating the real binaries and the data
//! `deploy/setup.sh` installs, running commands with a deadline, and acting as a supervisor
//! towards a single worker.

use std::io::Read;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub use swictation_policy::wer;
pub use swictation_proto as proto;

/// The directory holding the built binaries (the test executable's profile directory).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> → target/<profile>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf();
    for b in [
        "swictation",
        "swictation-vad-worker",
        "swictation-asr-worker",
    ] {
        assert!(
            dir.join(b).is_file(),
            "{} is missing: build the binaries first (cargo build --workspace --bins, same profile as the tests)",
            dir.join(b).display()
        );
    }
    dir
}

/// A path to one binary.
pub fn bin(name: &str) -> PathBuf {
    bin_dir().join(name)
}

/// Installed speech data directory.
pub fn speech() -> PathBuf {
    proto::paths::speech_dir()
}

/// Installed models directory.
pub fn models() -> PathBuf {
    proto::paths::models_dir()
}

/// The five LibriVox clips with their reference transcripts.
pub fn librivox() -> Vec<(PathBuf, String)> {
    swictation::cli::bench::librivox_clips(&speech().join("librivox"))
        .expect("LibriVox clips (run deploy/setup.sh)")
}

/// Each of `texts` is its clip of `clips`, in order: at most 10 % of the clip's words wrong.
pub fn assert_recognised(texts: &[String], clips: &[(PathBuf, String)]) {
    for (i, text) in texts.iter().enumerate() {
        let (errors, words) = swictation_policy::wer::word_errors(&clips[i].1, text);
        assert!(
            errors * 10 <= words,
            "clip {i}: {errors} errors in {words} words: {text:?}"
        );
    }
}

/// `swictation` with a private runtime dir, so tests never share sockets.
pub fn swictation(runtime_dir: &Path) -> Command {
    let mut c = Command::new(bin("swictation"));
    c.env("XDG_RUNTIME_DIR", runtime_dir)
        .env_remove("SWICTATION_LOG");
    c
}

/// Run a command to completion, failing the test if it takes longer than `limit`.
pub fn run_with_deadline(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    wait_with_deadline(&mut child, limit)
}

/// Wait for a spawned child (with piped output), killing it and failing past `limit`.
pub fn wait_with_deadline(child: &mut Child, limit: Duration) -> Output {
    let start = Instant::now();
    let mut out = child.stdout.take();
    let mut err = child.stderr.take();
    let t_out = std::thread::spawn(move || {
        let mut s = Vec::new();
        if let Some(o) = out.as_mut() {
            let _ = o.read_to_end(&mut s);
        }
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = Vec::new();
        if let Some(e) = err.as_mut() {
            let _ = e.read_to_end(&mut s);
        }
        s
    });
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = String::from_utf8_lossy(&t_err.join().unwrap_or_default()).into_owned();
            panic!("command did not finish within {limit:?}; stderr:\n{stderr}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: t_out.join().unwrap_or_default(),
        stderr: t_err.join().unwrap_or_default(),
    }
}

/// A test acting as the supervisor for one worker: a listening socket and the spawned worker.
pub struct FakeSupervisor {
    /// The worker process.
    pub child: Child,
    /// The accepted connection.
    pub conn: UnixStream,
    _dir: tempfile::TempDir,
}

impl FakeSupervisor {
    /// Spawn `program` with `args` plus `--connect SOCK` and accept its connection.
    pub fn start(program: &str, args: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let sock = dir.path().join("w.sock");
        let listener = UnixListener::bind(&sock).expect("bind");
        let child = Command::new(bin(program))
            .args(args)
            .arg("--connect")
            .arg(&sock)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn worker");
        listener.set_nonblocking(true).expect("nonblocking");
        let start = Instant::now();
        let conn = loop {
            match listener.accept() {
                Ok((c, _)) => break c,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    assert!(
                        start.elapsed() < Duration::from_secs(30),
                        "worker never connected"
                    );
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => panic!("accept: {e}"),
            }
        };
        conn.set_nonblocking(false).expect("blocking");
        conn.set_read_timeout(Some(Duration::from_secs(60)))
            .expect("timeout");
        Self {
            child,
            conn,
            _dir: dir,
        }
    }

    /// Send one request.
    pub fn send(&mut self, req: &proto::Request) {
        proto::codec::write_frame(&mut self.conn, req).expect("send");
    }

    /// Send raw bytes.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        use std::io::Write;
        self.conn.write_all(bytes).expect("send raw");
    }

    /// Read one reply.
    pub fn recv(&mut self) -> Result<proto::Reply, proto::codec::CodecError> {
        proto::codec::read_frame(&mut self.conn)
    }

    /// Wait for the worker to exit (at most `limit`) and return its exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let start = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                return s.code();
            }
            if start.elapsed() > limit {
                let _ = self.child.kill();
                panic!("worker did not exit within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for FakeSupervisor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Raw s16le file → f32 samples.
pub fn read_raw(path: &Path) -> Vec<f32> {
    let bytes = std::fs::read(path).expect("read raw");
    bytes
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]) as f32 / 32768.0)
        .collect()
}

/// Serialises the tests of one test binary that time real-time behaviour: libtest runs tests in
/// parallel threads, and two daemons sharing two cores would each miss their deadlines.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A private environment for one daemon: its own runtime (control socket), state (quarantine)
/// and config directories under a temp dir, so tests never share or touch the user's.
pub struct TestEnv {
    /// The temp dir holding everything; removed on drop.
    pub dir: tempfile::TempDir,
    /// `$XDG_RUNTIME_DIR`.
    pub runtime: PathBuf,
    /// `$XDG_STATE_HOME`.
    pub state: PathBuf,
    /// `$XDG_CONFIG_HOME` (the daemon's `swictation/config.toml` and ALSA's `alsa/asoundrc`).
    pub config: PathBuf,
    /// The capture FIFO, once [`TestEnv::with_alsa`] made one.
    pub fifo: Option<PathBuf>,
}

impl TestEnv {
    /// Fresh directories (the runtime dir mode 0700, as a real one is).
    pub fn new() -> TestEnv {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("temp dir");
        let (runtime, state, config) = (
            dir.path().join("run"),
            dir.path().join("state"),
            dir.path().join("config"),
        );
        for d in [&runtime, &state, &config] {
            std::fs::create_dir_all(d).expect("create dir");
        }
        std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o700))
            .expect("chmod runtime dir");
        TestEnv {
            dir,
            runtime,
            state,
            config,
            fifo: None,
        }
    }

    /// Routes ALSA's default capture device to a FIFO (see `deploy/asoundrc.capture`) and
    /// returns the FIFO's path.
    pub fn with_alsa(&mut self) -> PathBuf {
        let alsa = self.config.join("alsa");
        std::fs::create_dir_all(&alsa).expect("alsa config dir");
        std::fs::write(
            alsa.join("asoundrc"),
            include_str!("../../deploy/asoundrc.capture"),
        )
        .expect("write asoundrc");
        let fifo = self.dir.path().join("mic.raw");
        alsa_feed::make_fifo(&fifo);
        self.fifo = Some(fifo.clone());
        fifo
    }

    /// Writes the daemon's config file.
    pub fn write_config(&self, toml: &str) -> PathBuf {
        let path = self.config.join("swictation/config.toml");
        std::fs::create_dir_all(path.parent().expect("parent")).expect("config dir");
        std::fs::write(&path, toml).expect("write config");
        path
    }

    /// `swictation` in this environment.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(bin("swictation"));
        c.env("XDG_RUNTIME_DIR", &self.runtime)
            .env("XDG_STATE_HOME", &self.state)
            .env("XDG_CONFIG_HOME", &self.config)
            .env_remove("SWICTATION_LOG")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            // Never the machine's real system bus (and its logind): a test that wants one
            // starts its own and names it.
            .env(
                "DBUS_SYSTEM_BUS_ADDRESS",
                format!(
                    "unix:path={}",
                    self.dir.path().join("no-system-bus").display()
                ),
            )
            .stdin(Stdio::null());
        if let Some(f) = &self.fifo {
            c.env("CAPTURE_RAW", f);
        }
        c
    }

    /// `swictation stop`, then wait (at most `limit`) for `daemon` to exit: both must succeed.
    /// Returns the daemon's stdout and log.
    pub fn stop(&self, daemon: &mut DaemonProcess, limit: Duration) -> (String, String) {
        let stop = self.cli(&["stop"]);
        assert!(
            stop.status.success(),
            "stop: {}",
            String::from_utf8_lossy(&stop.stderr)
        );
        let (code, out, log) = daemon.wait(limit);
        assert!(code.success(), "daemon failed: {log}");
        (out, log)
    }

    /// Replace the scripted GPU reading (`--gpu-script PATH`) from now on: one 8 GB card with
    /// `used_mb` in use, written whole and renamed into place so the daemon never reads half.
    pub fn set_gpu(path: &std::path::Path, used_mb: u64) {
        let tmp = path.with_extension("tmp");
        std::fs::write(
            &tmp,
            format!(
                "{{\"at_s\": 0, \"devices\": [{{\"index\": 0, \"name\": \"Scripted 8 GB\", \"total_mb\": 8192, \"used_mb\": {used_mb}}}]}}\n"
            ),
        )
        .expect("write the GPU script");
        std::fs::rename(&tmp, path).expect("replace the GPU script");
    }

    /// Runs `swictation ARGS` to completion (20 s at most).
    pub fn cli(&self, args: &[&str]) -> Output {
        run_with_deadline(self.cmd().args(args), Duration::from_secs(20))
    }

    /// The daemon's status document (`swictation status --json`), or `None` if it does not answer.
    pub fn status(&self) -> Option<serde_json::Value> {
        let out = self.cli(&["status", "--json"]);
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    /// Waits (30 s at most) until the daemon's control socket answers: it has started.
    pub fn wait_socket(&self) {
        let start = Instant::now();
        while self.status().is_none() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "no control socket"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Polls the status until `want` accepts it, failing after `limit`.
    pub fn wait_status(
        &self,
        what: &str,
        limit: Duration,
        want: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let start = Instant::now();
        let mut last = None;
        while start.elapsed() < limit {
            if let Some(s) = self.status() {
                if want(&s) {
                    return s;
                }
                last = Some(s);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("timed out after {limit:?} waiting for {what}; last status: {last:?}");
    }
}

impl Default for TestEnv {
    fn default() -> Self {
        Self::new()
    }
}

/// The `role` worker's entry in a status document.
pub fn worker<'a>(status: &'a serde_json::Value, role: &str) -> &'a serde_json::Value {
    status["workers"]
        .as_array()
        .and_then(|w| w.iter().find(|w| w["role"] == role))
        .unwrap_or_else(|| panic!("no {role} worker in {status}"))
}

/// Write a recording to a daemon reading `--input -` (raw s16le 16 kHz), then 2 s of silence to
/// close its segment.
pub fn speak(stdin: &mut impl std::io::Write, clip: &Path) {
    let mut samples = samples_i16(clip);
    samples.extend(std::iter::repeat_n(0i16, 16_000 * 2));
    let bytes: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
    stdin.write_all(&bytes).expect("feed speech");
    stdin.flush().expect("flush");
}

/// The transcripts a `swictation subscribe` process has printed (its `transcript` events).
pub fn subscribed_transcripts(sub: &DaemonProcess) -> Vec<String> {
    sub.stdout()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "transcript")
        .filter_map(|v| v["text"].as_str().map(String::from))
        .collect()
}

/// Waits (10 s at most: the terminal copies at its pace) for `file` to hold `want`; what it holds.
pub fn wait_for_text(file: &Path, want: &str) -> String {
    let start = Instant::now();
    let mut got = String::new();
    while start.elapsed() < Duration::from_secs(10) {
        got = std::fs::read_to_string(file).unwrap_or_default();
        if got == want {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    got
}

/// The non-empty lines of a daemon's output, trimmed: its transcripts.
pub fn transcript_lines(out: &str) -> Vec<String> {
    out.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

/// A running daemon whose output is collected as it comes, so a test can look at its log while
/// it runs. Killed on drop.
pub struct DaemonProcess {
    /// The process.
    pub child: Child,
    stdout: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    stderr: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl DaemonProcess {
    /// The transcripts printed so far, once there are at least `n`; fails after `limit`.
    pub fn wait_transcripts(&self, n: usize, limit: Duration) -> Vec<String> {
        let start = Instant::now();
        loop {
            let got = transcript_lines(&self.stdout());
            if got.len() >= n {
                return got;
            }
            assert!(
                start.elapsed() < limit,
                "only {} of {n} transcripts after {limit:?}; log:\n{}",
                got.len(),
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Spawns `cmd` with piped output.
    pub fn spawn(cmd: &mut Command) -> DaemonProcess {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn swictation");
        let stdout = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut readers = Vec::new();
        let pipes: [(Option<Box<dyn Read + Send>>, _); 2] = [
            (
                child
                    .stdout
                    .take()
                    .map(|p| Box::new(p) as Box<dyn Read + Send>),
                stdout.clone(),
            ),
            (
                child
                    .stderr
                    .take()
                    .map(|p| Box::new(p) as Box<dyn Read + Send>),
                stderr.clone(),
            ),
        ];
        for (pipe, buf) in pipes {
            if let Some(mut pipe) = pipe {
                readers.push(std::thread::spawn(move || {
                    let mut chunk = [0u8; 4096];
                    while let Ok(n) = pipe.read(&mut chunk) {
                        if n == 0 {
                            break;
                        }
                        buf.lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .extend_from_slice(&chunk[..n]);
                    }
                }));
            }
        }
        DaemonProcess {
            child,
            stdout,
            stderr,
            readers,
        }
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Standard output so far.
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }

    /// Standard error (the log) so far.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }

    /// Sends `signal` to the daemon.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid() as i32), signal)
            .expect("signal the daemon");
    }

    /// Waits for the daemon to exit (failing past `limit`) and returns its status, stdout and stderr.
    pub fn wait(&mut self, limit: Duration) -> (std::process::ExitStatus, String, String) {
        let start = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                break s;
            }
            if start.elapsed() > limit {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "the daemon did not exit within {limit:?}; log:\n{}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        (status, self.stdout(), self.stderr())
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Whether process `pid` exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit_once(')')
                .map(|(_, r)| r.trim_start().starts_with('Z'))
                .unwrap_or(false)
        })
        .unwrap_or(false)
}

/// A recording as 16 kHz mono s16 samples (any format `swictation::io::audio` reads).
pub fn samples_i16(path: &Path) -> Vec<i16> {
    let audio = swictation::io::audio::load(path).expect("load recording");
    audio
        .samples
        .iter()
        .map(|&s| (s.clamp(-1.0, 1.0) * 32767.0).round() as i16)
        .collect()
}

/// Feeding ALSA's `file` capture plugin from a FIFO at real-time pace, as a microphone would.
///
/// The plugin fills exactly one period per FIFO read (80 samples at 16 kHz for cpal's default
/// stream through `plug`, as `tests/tests/capture.rs` measures): a short read is padded with
/// stale data and a long one loses the excess. So the feeder writes one period per write, each
/// once the FIFO is empty, and writes silence whenever it has nothing queued, so that capture
/// never sees a stall between utterances.
pub mod alsa_feed {
    use std::collections::VecDeque;
    use std::fs::OpenOptions;
    use std::io::Write;
    use std::path::Path;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    /// Samples (16 kHz) the file plugin consumes per read.
    pub const PERIOD: usize = 80;

    /// Creates a FIFO (mode 0600).
    pub fn make_fifo(path: &Path) {
        nix::unistd::mkfifo(
            path,
            nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR,
        )
        .expect("mkfifo");
    }

    /// How long a microphone-like feeder ([`Feeder::start_mic`]) waits for the reader to take
    /// a period before that period is lost.
    pub const UNREAD_GRACE: Duration = Duration::from_millis(500);

    /// A thread writing queued speech, else silence, into a FIFO in real time.
    pub struct Feeder {
        queue: Arc<Mutex<VecDeque<i16>>>,
        stop: Arc<AtomicBool>,
        fed: Arc<AtomicU64>,
        lost: Arc<AtomicU64>,
        thread: Option<std::thread::JoinHandle<()>>,
    }

    impl Feeder {
        /// Opens `fifo` for writing (read-write, so opening never blocks and writes never fail
        /// while the reader reopens it) and starts feeding silence. While nobody reads, what is
        /// queued waits.
        pub fn start(fifo: &Path) -> Feeder {
            Feeder::spawn(fifo, false)
        }

        /// As [`Feeder::start`], but like a microphone: time passes whether or not anyone
        /// listens, so a period the reader has not taken within [`UNREAD_GRACE`] of when it is
        /// due is lost (counted by [`Feeder::lost`]) instead of waiting for the reader.
        pub fn start_mic(fifo: &Path) -> Feeder {
            Feeder::spawn(fifo, true)
        }

        fn spawn(fifo: &Path, mic: bool) -> Feeder {
            let mut writer = OpenOptions::new()
                .read(true)
                .write(true)
                .open(fifo)
                .expect("open FIFO");
            let queue: Arc<Mutex<VecDeque<i16>>> = Arc::default();
            let stop = Arc::new(AtomicBool::new(false));
            let fed = Arc::new(AtomicU64::new(0));
            let lost = Arc::new(AtomicU64::new(0));
            let (q, s, f, l) = (queue.clone(), stop.clone(), fed.clone(), lost.clone());
            let thread = std::thread::spawn(move || {
                let mut t0 = Instant::now();
                // Samples of time elapsed (written or lost), and samples written.
                let mut clock: u64 = 0;
                let mut written: u64 = 0;
                let mut period = [0i16; PERIOD];
                while !s.load(Ordering::SeqCst) {
                    let due = t0 + Duration::from_secs_f64(clock as f64 / 16_000.0);
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    {
                        let mut q = q.lock().unwrap_or_else(|p| p.into_inner());
                        for slot in period.iter_mut() {
                            *slot = q.pop_front().unwrap_or(0);
                        }
                    }
                    let bytes: Vec<u8> = period.iter().flat_map(|v| v.to_le_bytes()).collect();
                    // Each write only once the reader has taken the previous one.
                    let mut taken = true;
                    while swictation::cli::bench::fifo_queued(&writer) > 0
                        && !s.load(Ordering::SeqCst)
                    {
                        if mic && Instant::now() >= due + UNREAD_GRACE {
                            taken = false;
                            break;
                        }
                        std::thread::sleep(Duration::from_micros(200));
                    }
                    clock += PERIOD as u64;
                    if !taken {
                        // Nobody listened: this period is gone, as with a microphone.
                        l.fetch_add(PERIOD as u64, Ordering::SeqCst);
                        continue;
                    }
                    if writer.write_all(&bytes).is_err() {
                        break;
                    }
                    written += PERIOD as u64;
                    f.store(written, Ordering::SeqCst);
                    // While nobody reads (the device is being reopened) time passes without
                    // writes. A microphone does not catch up afterwards, and a burst faster than
                    // real time looks like a file at its end to capture: slip the clock instead.
                    let late = Instant::now().saturating_duration_since(due);
                    if late > Duration::from_millis(50) {
                        t0 += late;
                    }
                }
            });
            Feeder {
                queue,
                stop,
                fed,
                lost,
                thread: Some(thread),
            }
        }

        /// Queues speech to be played after what is already queued.
        pub fn push(&self, samples: &[i16]) {
            self.queue
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(samples.iter().copied());
        }

        /// Samples queued and not yet written.
        pub fn pending(&self) -> usize {
            self.queue.lock().unwrap_or_else(|p| p.into_inner()).len()
        }

        /// Samples written so far (speech and silence).
        pub fn fed(&self) -> u64 {
            self.fed.load(Ordering::SeqCst)
        }

        /// Samples a microphone-like feeder dropped because nobody read them in time.
        pub fn lost(&self) -> u64 {
            self.lost.load(Ordering::SeqCst)
        }

        /// Waits until everything queued has been written, failing after `limit`.
        pub fn drain(&self, limit: Duration) {
            let start = Instant::now();
            while self.pending() > 0 {
                assert!(
                    start.elapsed() < limit,
                    "feeding did not finish within {limit:?} ({} samples left)",
                    self.pending()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }

        /// Stops feeding and closes the FIFO's writer (the reader then sees the end of input).
        pub fn close(mut self) {
            self.shutdown();
        }

        fn shutdown(&mut self) {
            self.stop.store(true, Ordering::SeqCst);
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }

    impl Drop for Feeder {
        fn drop(&mut self) {
            self.shutdown();
        }
    }
}
