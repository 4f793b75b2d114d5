//! Starting, talking to and stopping one worker process.
//!
//! This module is mechanics only: it knows how to spawn a worker, accept its connection, read
//! its handshake, send a request and wait for the answer within a deadline, and explain a death.
//! It knows nothing about VRAM, placement or restart policy.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use interprocess::local_socket::tokio::{prelude::*, Stream};
use interprocess::local_socket::{GenericFilePath, ListenerOptions};
use swictation_proto::codec::{tokio_io, CodecError};
use swictation_proto::{ErrorKind, Hello, Reply, Request, Role, PROTOCOL_VERSION};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Bytes of a worker's stderr kept to explain its death.
pub const STDERR_RING: usize = 8 * 1024;

/// How to start a worker.
#[derive(Debug, Clone)]
pub struct WorkerCommand {
    /// Which worker.
    pub role: Role,
    /// The worker binary.
    pub program: PathBuf,
    /// Arguments besides `--connect`.
    pub args: Vec<OsString>,
}

/// Everything that can go wrong with a worker, each naming the worker and what was seen.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The binary could not be started.
    #[error("cannot start the {role} worker {program}: {source}. Build it (cargo build --release) or set --workers-dir")]
    Spawn {
        role: Role,
        program: PathBuf,
        source: std::io::Error,
    },
    /// The worker reported that it could not load its runtime or model.
    #[error("{role} worker failed to load: {message}")]
    Load {
        role: Role,
        kind: ErrorKind,
        message: String,
        status: Option<ExitStatus>,
    },
    /// The process ended (or closed its socket) unexpectedly.
    #[error("{role} worker died ({description}){}", tail_suffix(.stderr_tail))]
    Died {
        role: Role,
        description: String,
        status: Option<ExitStatus>,
        stderr_tail: String,
    },
    /// No answer within the deadline; the worker has been killed.
    #[error("{role} worker did not answer {what} within {after:?}; killed it")]
    Timeout {
        role: Role,
        what: &'static str,
        after: Duration,
    },
    /// The worker sent something that is not the protocol.
    #[error("{role} worker broke the protocol: {message}")]
    Protocol { role: Role, message: String },
    /// The worker answered with an error.
    #[error("{role} worker error ({kind:?}): {message}")]
    Reported {
        role: Role,
        kind: ErrorKind,
        message: String,
    },
}

fn tail_suffix(tail: &str) -> String {
    let last: Vec<&str> = tail.lines().rev().take(3).collect();
    if last.is_empty() {
        String::new()
    } else {
        format!(
            "; last stderr: {}",
            last.into_iter().rev().collect::<Vec<_>>().join(" | ")
        )
    }
}

/// The last [`STDERR_RING`] bytes of a worker's stderr.
#[derive(Debug, Default)]
pub struct StderrRing {
    lines: VecDeque<String>,
    bytes: usize,
}

impl StderrRing {
    fn push(&mut self, line: String) {
        self.bytes += line.len() + 1;
        self.lines.push_back(line);
        while self.bytes > STDERR_RING {
            match self.lines.pop_front() {
                Some(l) => self.bytes -= l.len() + 1,
                None => break,
            }
        }
    }

    /// The kept lines, oldest first.
    pub fn text(&self) -> String {
        self.lines.iter().map(|l| format!("{l}\n")).collect()
    }
}

static SOCKET_SEQ: AtomicU64 = AtomicU64::new(0);

/// The directory for worker sockets: `$XDG_RUNTIME_DIR/swictation`, else `/tmp/swictation-UID`,
/// created with mode 0700.
pub fn socket_dir() -> std::io::Result<PathBuf> {
    let dir = swictation_proto::paths::runtime_dir().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("swictation-{}", nix::unistd::getuid()))
    });
    // The control socket's check: ours, a real directory, 0700 (a /tmp directory made
    // beforehand by another user is refused, never chmod-ed and used).
    crate::io::control::prepare_dir(&dir)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::PermissionDenied, format!("{e:#}")))?;
    Ok(dir)
}

/// Whether the peer on `stream` is the process we spawned (pid) and runs as us (uid): only our
/// own child may speak as a worker.
fn peer_is_child(stream: &Stream, child_pid: Option<u32>) -> Result<(), String> {
    use interprocess::local_socket::traits::StreamCommon;
    let cred = stream
        .peer_creds()
        .map_err(|e| format!("cannot read its credentials: {e}"))?;
    let me = nix::unistd::geteuid().as_raw();
    if cred.euid() != Some(me) {
        return Err(format!("uid {:?} is not ours ({me})", cred.euid()));
    }
    if cred.pid().map(|p| p as u32) != child_pid || child_pid.is_none() {
        return Err(format!(
            "pid {:?} is not the spawned worker ({child_pid:?})",
            cred.pid()
        ));
    }
    Ok(())
}

/// A running worker with an established connection.
pub struct Worker {
    role: Role,
    deadlines: Deadlines,
    child: Child,
    hello: Hello,
    stream: Stream,
    stderr: Arc<Mutex<StderrRing>>,
    next_id: u64,
    ready_ms: f64,
}

/// How long a typed request may take: the one place request deadlines are computed, from the
/// supervision config's `hang_timeout_s` (the supervised workers and their canary use the
/// configured one; bench and `transcribe` the default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    /// The base allowance of every request.
    pub hang: Duration,
}

impl Default for Deadlines {
    fn default() -> Self {
        Self {
            hang: Duration::from_secs(5),
        }
    }
}

impl Deadlines {
    /// For `frames` VAD frames: at most 3 s of allowance, plus 10 ms a frame.
    pub fn vad(&self, frames: usize) -> Duration {
        self.hang.min(Duration::from_secs(3)) + Duration::from_millis(10 * frames as u64)
    }

    /// For transcribing `seconds` of speech: the allowance plus twice the speech.
    pub fn transcribe(&self, seconds: f64) -> Duration {
        self.hang + Duration::from_secs_f64(2.0 * seconds.max(0.0))
    }
}

impl Worker {
    /// Use `deadlines` for this worker's typed requests from now on.
    pub fn set_deadlines(&mut self, deadlines: Deadlines) {
        self.deadlines = deadlines;
    }

    /// Start the worker, wait for its connection and handshake (at most `load_timeout`).
    pub async fn spawn(cmd: &WorkerCommand, load_timeout: Duration) -> Result<Self, WorkerError> {
        let role = cmd.role;
        let started = Instant::now();
        let spawn_err = |source| WorkerError::Spawn {
            role,
            program: cmd.program.clone(),
            source,
        };
        let dir = socket_dir().map_err(spawn_err)?;
        let seq = SOCKET_SEQ.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!("{role}-{}-{seq}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let name = path
            .as_path()
            .to_fs_name::<GenericFilePath>()
            .map_err(spawn_err)?;
        let listener = ListenerOptions::new()
            .name(name)
            .create_tokio()
            .map_err(spawn_err)?;

        let mut command = Command::new(&cmd.program);
        command
            .args(&cmd.args)
            .arg("--connect")
            .arg(&path)
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            // CUDA numbers devices by PCI bus, as NVML does, so `cuda:N` is the card NVML read.
            .env("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .process_group(0);
        // SAFETY: only async-signal-safe calls (prctl, setrlimit) between fork and exec.
        unsafe {
            command.pre_exec(|| {
                // Die with the supervisor, whatever kills it.
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                    .map_err(std::io::Error::from)?;
                // No multi-gigabyte core files from a crashed model.
                nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0)
                    .map_err(std::io::Error::from)?;
                Ok(())
            });
        }
        // Prime the OOM-kill counter so a later death compares against this start.
        let _ = oom_kill_seen();
        let mut child = command.spawn().map_err(spawn_err)?;
        let stderr = Arc::new(Mutex::new(StderrRing::default()));
        if let Some(pipe) = child.stderr.take() {
            let ring = stderr.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(pipe).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    crate::log_debug!("[{role} worker] {line}");
                    // A worker's `notice:` lines (e.g. unprepared model files) are for the
                    // user: logged once per daemon, however often the worker restarts.
                    if let Some(notice) = line.strip_prefix("notice: ") {
                        static SEEN: Mutex<Vec<String>> = Mutex::new(Vec::new());
                        if let Ok(mut seen) = SEEN.lock() {
                            if !seen.iter().any(|s| s == notice) {
                                seen.push(notice.to_owned());
                                crate::log_warn!("{role} worker: {notice}");
                            }
                        }
                    }
                    if let Ok(mut r) = ring.lock() {
                        r.push(line);
                    }
                }
            });
        }

        let deadline = tokio::time::Instant::now() + load_timeout;
        let stream = loop {
            let stream = tokio::select! {
                s = listener.accept() => s.map_err(spawn_err)?,
                status = child.wait() => {
                    drop(listener);
                    return Err(died_early(role, status, &stderr).await);
                }
                _ = tokio::time::sleep_until(deadline) => {
                    let _ = child.start_kill();
                    return Err(WorkerError::Timeout { role, what: "its connection", after: load_timeout });
                }
            };
            match peer_is_child(&stream, child.id()) {
                Ok(()) => break stream,
                // Someone else connected first: refused, and the real worker still awaited.
                Err(why) => crate::log_warn!("refused a {role} worker connection: {why}"),
            }
        };
        drop(listener);
        let _ = std::fs::remove_file(&path);
        let mut stream_ref = &stream;
        let first = tokio::select! {
            r = tokio_io::read_frame::<_, Reply>(&mut stream_ref) => r,
            _ = tokio::time::sleep_until(deadline) => {
                let _ = child.start_kill();
                return Err(WorkerError::Timeout { role, what: "its handshake", after: load_timeout });
            }
        };
        let hello = match first {
            Ok(Reply::Hello(h)) => h,
            Ok(Reply::Error(e)) => {
                let status = tokio::time::timeout(Duration::from_secs(5), child.wait())
                    .await
                    .ok()
                    .and_then(|s| s.ok());
                return Err(WorkerError::Load {
                    role,
                    kind: e.kind,
                    message: e.message,
                    status,
                });
            }
            Ok(other) => {
                let _ = child.start_kill();
                return Err(WorkerError::Protocol {
                    role,
                    message: format!("expected a handshake, got {other:?}"),
                });
            }
            Err(CodecError::Closed | CodecError::Truncated { .. } | CodecError::Io(_)) => {
                return Err(died_early(role, child.wait().await, &stderr).await);
            }
            Err(e) => {
                let _ = child.start_kill();
                return Err(WorkerError::Protocol {
                    role,
                    message: e.to_string(),
                });
            }
        };
        if hello.protocol != PROTOCOL_VERSION || hello.role != role {
            let _ = child.start_kill();
            return Err(WorkerError::Protocol {
                role,
                message: format!(
                    "handshake from a {} worker speaking protocol {} (expected {role}, protocol {PROTOCOL_VERSION}): the worker binaries do not match this supervisor",
                    hello.role, hello.protocol
                ),
            });
        }
        Ok(Self {
            role,
            deadlines: Deadlines::default(),
            child,
            hello,
            stream,
            stderr,
            next_id: 1,
            ready_ms: started.elapsed().as_secs_f64() * 1e3,
        })
    }

    /// The worker's handshake.
    pub fn hello(&self) -> &Hello {
        &self.hello
    }

    /// Milliseconds from spawn to handshake.
    pub fn ready_ms(&self) -> f64 {
        self.ready_ms
    }

    /// The worker's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// The kept tail of the worker's stderr.
    pub fn stderr_tail(&self) -> String {
        self.stderr.lock().map(|r| r.text()).unwrap_or_default()
    }

    /// A fresh request id.
    pub fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Send one request and wait for its answer, at most `timeout`. On timeout the worker is
    /// killed: a request it cannot answer in time means it is hung or its device is.
    pub async fn call(
        &mut self,
        request: Request,
        timeout: Duration,
    ) -> Result<Reply, WorkerError> {
        let role = self.role;
        let what = match &request {
            Request::Ping { .. } => "a ping",
            Request::VadFrames { .. } => "VAD frames",
            Request::VadReset { .. } => "a VAD reset",
            Request::Transcribe { .. } => "a transcription",
            Request::InjectFault { .. } => "a fault injection",
            Request::Shutdown => "a shutdown",
        };
        let stream = &self.stream;
        let exchange = async move {
            tokio_io::write_frame(&mut &*stream, &request).await?;
            tokio_io::read_frame::<_, Reply>(&mut &*stream).await
        };
        match tokio::time::timeout(timeout, exchange).await {
            Err(_) => {
                let _ = self.child.start_kill();
                let _ = self.child.wait().await;
                Err(WorkerError::Timeout {
                    role,
                    what,
                    after: timeout,
                })
            }
            Ok(Ok(Reply::Error(e))) => Err(WorkerError::Reported {
                role,
                kind: e.kind,
                message: e.message,
            }),
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(CodecError::Malformed(e))) => {
                let _ = self.child.start_kill();
                Err(WorkerError::Protocol {
                    role,
                    message: e.to_string(),
                })
            }
            Ok(Err(_)) => {
                let status = tokio::time::timeout(Duration::from_secs(2), self.child.wait()).await;
                let (description, status) = match status {
                    Ok(Ok(s)) => (describe_status(s), Some(s)),
                    _ => {
                        let _ = self.child.start_kill();
                        ("closed its socket".to_string(), None)
                    }
                };
                // Let the stderr reader catch the last lines before they are quoted.
                tokio::time::sleep(Duration::from_millis(20)).await;
                Err(WorkerError::Died {
                    role,
                    description,
                    status,
                    stderr_tail: self.stderr_tail(),
                })
            }
        }
    }

    /// Speech probability per 512-sample frame.
    pub async fn vad_frames(&mut self, samples: Vec<f32>) -> Result<(Vec<f32>, u64), WorkerError> {
        let id = self.next_id();
        let frames = samples.len() / swictation_proto::VAD_FRAME;
        let timeout = self.deadlines.vad(frames);
        match self
            .call(Request::VadFrames { id, samples }, timeout)
            .await?
        {
            Reply::VadProbs {
                id: got,
                probs,
                micros,
            } if got == id && probs.len() == frames => Ok((probs, micros)),
            other => Err(self.unexpected(other)),
        }
    }

    /// Forget the VAD's stream state.
    pub async fn vad_reset(&mut self) -> Result<(), WorkerError> {
        let id = self.next_id();
        match self
            .call(Request::VadReset { id }, Duration::from_secs(5))
            .await?
        {
            Reply::Done { id: got } if got == id => Ok(()),
            other => Err(self.unexpected(other)),
        }
    }

    /// Transcribe one segment; the deadline scales with its length.
    pub async fn transcribe(
        &mut self,
        segment: u64,
        samples: Vec<f32>,
    ) -> Result<(String, u64), WorkerError> {
        let id = self.next_id();
        let seconds = samples.len() as f64 / swictation_proto::SAMPLE_RATE as f64;
        let timeout = self.deadlines.transcribe(seconds);
        match self
            .call(
                Request::Transcribe {
                    id,
                    segment,
                    samples,
                },
                timeout,
            )
            .await?
        {
            Reply::Transcript {
                id: got,
                segment: s,
                text,
                micros,
                ..
            } if got == id && s == segment => Ok((text, micros)),
            other => Err(self.unexpected(other)),
        }
    }

    fn unexpected(&mut self, reply: Reply) -> WorkerError {
        let _ = self.child.start_kill();
        WorkerError::Protocol {
            role: self.role,
            message: format!("unexpected reply {}", reply.kind()),
        }
    }

    /// Resolves when the process has exited.
    pub async fn wait_exit(&mut self) {
        let _ = self.child.wait().await;
    }

    /// Make sure the process is gone and return how it ended (killing it if it still runs).
    pub async fn reap(&mut self) -> Option<ExitStatus> {
        match tokio::time::timeout(Duration::from_millis(500), self.child.wait()).await {
            Ok(Ok(status)) => Some(status),
            _ => {
                let _ = self.child.start_kill();
                self.child.wait().await.ok()
            }
        }
    }

    /// Ask the worker to exit and wait for it (killing it after a grace period).
    pub async fn shutdown(mut self) -> Option<ExitStatus> {
        let stream = &self.stream;
        let _ = tokio::time::timeout(Duration::from_secs(2), async move {
            tokio_io::write_frame(&mut &*stream, &Request::Shutdown).await?;
            tokio_io::read_frame::<_, Reply>(&mut &*stream).await
        })
        .await;
        match tokio::time::timeout(Duration::from_secs(3), self.child.wait()).await {
            Ok(Ok(status)) => Some(status),
            _ => {
                let _ = self.child.start_kill();
                self.child.wait().await.ok()
            }
        }
    }
}

async fn died_early(
    role: Role,
    status: std::io::Result<ExitStatus>,
    stderr: &Arc<Mutex<StderrRing>>,
) -> WorkerError {
    tokio::time::sleep(Duration::from_millis(20)).await;
    let tail = stderr.lock().map(|r| r.text()).unwrap_or_default();
    let description = status
        .as_ref()
        .map(|s| describe_status(*s))
        .unwrap_or_else(|e| e.to_string());
    WorkerError::Died {
        role,
        description,
        status: status.ok(),
        stderr_tail: tail,
    }
}

/// "exit code 4", "killed by SIGSEGV".
pub fn describe_status(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    if let Some(code) = status.code() {
        format!("exit code {code}")
    } else if let Some(sig) = status.signal() {
        match nix::sys::signal::Signal::try_from(sig) {
            Ok(s) => format!("killed by {s}"),
            Err(_) => format!("killed by signal {sig}"),
        }
    } else {
        "ended".into()
    }
}

/// True when the kernel's OOM killer has killed a process in our cgroup since the last call
/// (the `oom_kill` counter of cgroup v2 `memory.events` went up).
pub fn oom_kill_seen() -> bool {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let Some(now) = cgroup_oom_kills() else {
        return false;
    };
    LAST.swap(now, Ordering::Relaxed) < now
}

fn cgroup_oom_kills() -> Option<u64> {
    let cg = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let rel = cg.lines().find_map(|l| l.strip_prefix("0::"))?;
    let events =
        std::fs::read_to_string(format!("/sys/fs/cgroup{}/memory.events", rel.trim())).ok()?;
    events
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|v| v.trim().parse().ok())
}

/// Where the worker binaries are: `dir` if given, else beside this executable.
pub fn worker_program(dir: Option<&Path>, role: Role) -> PathBuf {
    let name = format!("swictation-{role}-worker");
    match dir {
        Some(d) => d.join(name),
        None => std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(|d| d.join(&name)))
            .unwrap_or_else(|| PathBuf::from(name)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stderr_ring_keeps_only_the_tail() {
        let mut ring = StderrRing::default();
        for i in 0..2000 {
            ring.push(format!("line {i:05}"));
        }
        let text = ring.text();
        assert!(text.len() <= STDERR_RING);
        assert!(text.ends_with("line 01999\n"));
        assert!(!text.contains("line 00000"));
    }

    #[test]
    fn tail_suffix_quotes_the_last_lines() {
        assert_eq!(tail_suffix(""), "");
        assert_eq!(tail_suffix("a\nb\nc\nd\n"), "; last stderr: b | c | d");
    }
}
