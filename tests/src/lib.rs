//! Helpers for the end-to-end tests in `tests/tests/`: locating the real binaries and the data
//! `deploy/setup.sh` installs, running commands with a deadline, and acting as a supervisor
//! towards a single worker.

use std::io::Read;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub use swictation::wer;
pub use swictation_proto as proto;

/// The directory holding the built binaries (the test executable's profile directory).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> → target/<profile>
    let dir = exe.parent().and_then(Path::parent).expect("target dir").to_path_buf();
    for b in ["swictation", "swictation-vad-worker", "swictation-asr-worker"] {
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
    swictation::bench::librivox_clips(&speech().join("librivox")).expect("LibriVox clips (run deploy/setup.sh)")
}

/// `swictation` with a private runtime dir, so tests never share sockets.
pub fn swictation(runtime_dir: &Path) -> Command {
    let mut c = Command::new(bin("swictation"));
    c.env("XDG_RUNTIME_DIR", runtime_dir).env_remove("SWICTATION_LOG");
    c
}

/// Run a command to completion, failing the test if it takes longer than `limit`.
pub fn run_with_deadline(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
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
    Output { status, stdout: t_out.join().unwrap_or_default(), stderr: t_err.join().unwrap_or_default() }
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
                    assert!(start.elapsed() < Duration::from_secs(30), "worker never connected");
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => panic!("accept: {e}"),
            }
        };
        conn.set_nonblocking(false).expect("blocking");
        conn.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
        Self { child, conn, _dir: dir }
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
    bytes.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]]) as f32 / 32768.0).collect()
}
