//! The wire contract between the swictation supervisor and its workers.
//!
//! The supervisor listens on a Unix domain socket and spawns a worker with `--connect PATH`.
//! The worker connects, sends [`Reply::Hello`], and then answers [`Request`]s one at a time, in
//! order. Every message travels as one length-prefixed postcard frame (see [`codec`]).
//!
//! Nothing here knows about ONNX Runtime, processes or audio devices: this crate is only the
//! vocabulary both sides compile against.

pub mod codec;
pub mod faults;
pub mod paths;

use serde::{Deserialize, Serialize};

/// Bumped whenever a message changes shape; a worker of another version is refused at handshake.
pub const PROTOCOL_VERSION: u32 = 1;

/// Sample rate of every audio buffer on the wire.
pub const SAMPLE_RATE: u32 = 16_000;

/// Samples in one Silero VAD frame at 16 kHz (32 ms).
pub const VAD_FRAME: usize = 512;

/// Which job a worker does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    /// Voice activity detection (Silero).
    Vad,
    /// Speech recognition (Moonshine).
    Asr,
}

impl Role {
    /// Lower-case name used in logs, paths and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Vad => "vad",
            Role::Asr => "asr",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a model component actually runs (never what was merely asked for).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Device {
    /// ONNX Runtime's CPU execution provider.
    Cpu,
    /// ONNX Runtime's CUDA execution provider on the given device ordinal.
    Cuda(u32),
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl std::str::FromStr for Device {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Device::Cuda)
                .ok_or_else(|| format!("unknown device {s:?}: expected cpu, cuda or cuda:N")),
        }
    }
}

/// One model component and the device it was loaded on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentPlacement {
    /// Component name: `vad`, `encoder`, `decoder`.
    pub component: String,
    /// The execution provider actually registered for it.
    pub device: Device,
}

/// First message of every worker: who it is and what it actually loaded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// Must equal [`PROTOCOL_VERSION`].
    pub protocol: u32,
    /// The worker's job.
    pub role: Role,
    /// Model name, e.g. `silero-vad-v6.2`, `moonshine-base-en`.
    pub model: String,
    /// Execution provider per component, as registered (no silent CPU fallback).
    pub placement: Vec<ComponentPlacement>,
    /// Time from process start to model loaded, milliseconds.
    pub load_ms: u32,
    /// The worker's process id.
    pub pid: u32,
    /// ONNX Runtime version string in use.
    pub runtime: String,
}

/// A fault a worker is told to inject (honoured only when it was started with `--allow-faults`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Fault {
    /// `abort()`: SIGABRT.
    Abort,
    /// Write through a null pointer: SIGSEGV.
    Segfault,
    /// `exit(code)` without a reply.
    Exit(i32),
    /// Stop answering (sleep forever).
    Hang,
    /// Report the error text ONNX Runtime gives on a sticky CUDA fault, then exit as a real one.
    CudaFault,
    /// Allocate and touch this many MiB of memory, then keep working; an allocation that fails
    /// is reported as [`ErrorKind::OutOfMemory`], as a real one would be.
    GrowMemory(u32),
    /// Answer with bytes that are not a frame (a corrupted worker).
    Garbage,
}

/// What the supervisor asks of a worker.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// Liveness probe; answered with [`Reply::Pong`] carrying the same id.
    Ping { id: u64 },
    /// VAD: speech probability of each [`VAD_FRAME`]-sample frame, in order. The recurrent state
    /// and the 64-sample context carry over from the previous request until [`Request::VadReset`].
    VadFrames { id: u64, samples: Vec<f32> },
    /// VAD: forget the recurrent state and context (a new, unrelated stream starts).
    VadReset { id: u64 },
    /// ASR: transcribe one speech segment (16 kHz mono f32 in [-1, 1]).
    Transcribe {
        id: u64,
        segment: u64,
        samples: Vec<f32>,
    },
    /// Test-only fault injection.
    InjectFault { id: u64, fault: Fault },
    /// Finish the current request, answer [`Reply::Bye`], and exit 0.
    Shutdown,
}

/// Never the audio (privacy: Debug output reaches logs and panics): its length only.
impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Request::Ping { id } => write!(f, "Ping {{ id: {id} }}"),
            Request::VadFrames { id, samples } => {
                write!(f, "VadFrames {{ id: {id}, samples: {} }}", samples.len())
            }
            Request::VadReset { id } => write!(f, "VadReset {{ id: {id} }}"),
            Request::Transcribe {
                id,
                segment,
                samples,
            } => write!(
                f,
                "Transcribe {{ id: {id}, segment: {segment}, samples: {} }}",
                samples.len()
            ),
            Request::InjectFault { id, fault } => {
                write!(f, "InjectFault {{ id: {id}, fault: {fault:?} }}")
            }
            Request::Shutdown => f.write_str("Shutdown"),
        }
    }
}

/// Never a transcript's text or the probabilities: [`Reply::kind`], and an error in full (its
/// message never holds text).
impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reply::Error(e) => write!(f, "Error({e:?})"),
            other => f.write_str(&other.kind()),
        }
    }
}

impl Request {
    /// The request id, where it has one.
    pub fn id(&self) -> Option<u64> {
        match self {
            Request::Ping { id }
            | Request::VadFrames { id, .. }
            | Request::VadReset { id }
            | Request::Transcribe { id, .. }
            | Request::InjectFault { id, .. } => Some(*id),
            Request::Shutdown => None,
        }
    }
}

/// Category of an error a worker reports; the supervisor's failure classes build on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorKind {
    /// The request was well-formed but wrong (e.g. samples not a multiple of the frame size).
    BadRequest,
    /// The bytes received were not a valid frame; the connection is closed after this reply.
    Protocol,
    /// Inference failed for a reason other than the ones below.
    Inference,
    /// A sticky CUDA error (launch failure, illegal address): the worker exits after reporting.
    CudaFault,
    /// A device or host allocation failed.
    OutOfMemory,
    /// The runtime library or the model could not be loaded; the worker exits after reporting.
    Load,
}

/// A structured error from a worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerError {
    /// The request it answers, if it could be identified.
    pub id: Option<u64>,
    /// What kind of failure.
    pub kind: ErrorKind,
    /// Human-readable detail (never contains audio or transcript text).
    pub message: String,
}

/// What a worker sends back.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub enum Reply {
    /// Handshake, sent once right after connecting.
    Hello(Hello),
    /// Answer to [`Request::Ping`].
    Pong { id: u64 },
    /// One probability per frame of [`Request::VadFrames`], plus the inference time.
    VadProbs {
        id: u64,
        probs: Vec<f32>,
        micros: u64,
    },
    /// Answer to [`Request::VadReset`] and [`Request::InjectFault`] (`GrowMemory`).
    Done { id: u64 },
    /// Answer to [`Request::Transcribe`].
    Transcript {
        id: u64,
        segment: u64,
        text: String,
        tokens: u32,
        micros: u64,
    },
    /// Something went wrong.
    Error(WorkerError),
    /// Answer to [`Request::Shutdown`]; the worker exits 0 right after.
    Bye,
}

impl Reply {
    /// What kind of reply this is, for messages: never its payload (a transcript's text, the
    /// probabilities), which must not reach logs, status or events.
    pub fn kind(&self) -> String {
        match self {
            Reply::Hello(h) => format!("Hello from {} pid {}", h.role, h.pid),
            Reply::Pong { id } => format!("Pong {id}"),
            Reply::VadProbs { id, probs, .. } => format!("VadProbs {id} ({} frames)", probs.len()),
            Reply::Done { id } => format!("Done {id}"),
            Reply::Transcript { id, segment, .. } => {
                format!("Transcript {id} (segment {segment}, text withheld)")
            }
            Reply::Error(_) => "Error".into(),
            Reply::Bye => "Bye".into(),
        }
    }
}

/// Exit codes a worker uses, so a death can be explained from its status alone.
pub mod exit_code {
    /// Bad command line.
    pub const USAGE: i32 = 2;
    /// The ONNX Runtime library could not be loaded (missing, wrong version).
    pub const RUNTIME: i32 = 3;
    /// A model file is missing or corrupt, or its session could not be created.
    pub const MODEL: i32 = 4;
    /// The requested execution provider could not be registered.
    pub const PROVIDER: i32 = 5;
    /// The supervisor's socket could not be reached or the handshake failed.
    pub const CONNECT: i32 = 6;
    /// The request stream lost its framing (oversized or truncated frame).
    pub const PROTOCOL: i32 = 7;
    /// A sticky CUDA error poisoned the process's context.
    pub const CUDA_FAULT: i32 = 70;
    /// An allocation failed (device or host).
    pub const OUT_OF_MEMORY: i32 = 71;
}
