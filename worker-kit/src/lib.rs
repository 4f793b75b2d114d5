//! What both swictation workers share: loading ONNX Runtime, creating sessions on an explicit
//! device, the request loop over the supervisor's socket, and test-only fault injection.
//!
//! The supervisor never links this crate: ONNX Runtime (and with it CUDA) lives only in worker
//! processes, so a fault there cannot reach the process that holds the user's audio.

pub mod runtime;
pub mod serve;

use std::path::PathBuf;
use std::time::Instant;

pub use runtime::{
    classify_message, GraphOptimizationLevel, ModelError, ModelSession, Runtime, RuntimeError,
};
pub use serve::{error, Handler, Outcome};
use swictation_proto::{
    codec, exit_code, ComponentPlacement, Device, ErrorKind, Hello, Reply, Role, PROTOCOL_VERSION,
};

/// Command-line options every worker takes.
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// The supervisor's Unix socket to connect to.
    #[arg(long, value_name = "PATH")]
    pub connect: Option<PathBuf>,
    /// The ONNX Runtime shared library (1.31 or newer).
    #[arg(long, value_name = "PATH", env = "SWICTATION_ORT_LIB")]
    pub ort_lib: Option<PathBuf>,
    /// Intra-op threads per session.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Honour fault-injection requests (tests only).
    #[arg(long)]
    pub allow_faults: bool,
    /// Cap this worker's address space (MiB): an allocation beyond it fails instead of pushing
    /// the machine into swap or the kernel's OOM killer.
    #[arg(long, value_name = "MIB")]
    pub memory_limit_mb: Option<u64>,
}

impl CommonArgs {
    /// The library to load: `--ort-lib`, else the one `deploy/setup.sh` installs.
    pub fn ort_lib(&self) -> PathBuf {
        self.ort_lib.clone().unwrap_or_else(default_ort_lib)
    }
}

/// What a worker's loader returns: the handler, the model's name and where each part runs.
pub struct Loaded {
    /// Answers model requests.
    pub handler: Box<dyn Handler>,
    /// Model name for the handshake.
    pub model: String,
    /// Device per component, as actually registered.
    pub placement: Vec<ComponentPlacement>,
}

/// A load failure, with the exit code that explains it.
pub struct LoadFailure {
    /// Exit status the worker will die with.
    pub code: i32,
    /// Message for the supervisor (names the file or library and the fix).
    pub message: String,
}

impl From<RuntimeError> for LoadFailure {
    fn from(e: RuntimeError) -> Self {
        LoadFailure {
            code: exit_code::RUNTIME,
            message: e.to_string(),
        }
    }
}

impl From<ModelError> for LoadFailure {
    fn from(e: ModelError) -> Self {
        let code = match &e {
            ModelError::Provider { reason, .. } | ModelError::Load { reason, .. } => {
                match classify_message(reason) {
                    ErrorKind::CudaFault => exit_code::CUDA_FAULT,
                    ErrorKind::OutOfMemory => exit_code::OUT_OF_MEMORY,
                    _ if matches!(e, ModelError::Provider { .. }) => exit_code::PROVIDER,
                    _ => exit_code::MODEL,
                }
            }
            _ => exit_code::MODEL,
        };
        LoadFailure {
            code,
            message: e.to_string(),
        }
    }
}

/// The whole life of a worker process: connect, load, say hello, serve, exit with a status that
/// explains how it ended. Load failures are reported over the socket before exiting, so the
/// supervisor gets a structured reason and not only an exit code.
pub fn worker_main(
    role: Role,
    args: &CommonArgs,
    load: impl FnOnce(&Runtime) -> Result<Loaded, LoadFailure>,
) -> ! {
    let started = Instant::now();
    let Some(socket) = args.connect.as_ref() else {
        eprintln!(
            "swictation-{role}-worker: --connect PATH is required (the supervisor starts workers)"
        );
        std::process::exit(exit_code::USAGE);
    };
    if let Some(mib) = args.memory_limit_mb {
        if let Err(e) = set_memory_limit(mib) {
            eprintln!("swictation-{role}-worker: cannot set the memory limit: {e}");
        }
    }
    let stream = match serve::connect(socket) {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "swictation-{role}-worker: cannot connect to {}: {e}",
                socket.display()
            );
            std::process::exit(exit_code::CONNECT);
        }
    };
    let loaded = Runtime::load(&args.ort_lib(), args.threads)
        .map_err(LoadFailure::from)
        .and_then(|rt| load(&rt).map(|l| (rt, l)));
    let (runtime, mut loaded) = match loaded {
        Ok(ok) => ok,
        Err(fail) => {
            eprintln!("swictation-{role}-worker: {}", fail.message);
            let mut w = std::io::BufWriter::new(&stream);
            let kind = match fail.code {
                exit_code::CUDA_FAULT => ErrorKind::CudaFault,
                exit_code::OUT_OF_MEMORY => ErrorKind::OutOfMemory,
                _ => ErrorKind::Load,
            };
            let _ = codec::write_frame(&mut w, &error(None, kind, fail.message));
            std::process::exit(fail.code);
        }
    };
    let hello = Hello {
        protocol: PROTOCOL_VERSION,
        role,
        model: loaded.model.clone(),
        placement: loaded.placement.clone(),
        load_ms: started.elapsed().as_millis().min(u32::MAX as u128) as u32,
        pid: std::process::id(),
        runtime: runtime.version().to_string(),
    };
    let outcome = serve::serve(stream, hello, args.allow_faults, loaded.handler.as_mut());
    match outcome {
        Outcome::Clean => std::process::exit(0),
        Outcome::Exit(code) => std::process::exit(code),
    }
}

fn set_memory_limit(mib: u64) -> nix::Result<()> {
    let bytes = mib.saturating_mul(1 << 20);
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_AS, bytes, bytes)
}

/// Parse `cpu`, `cuda`, `cuda:N` for clap.
pub fn parse_device(s: &str) -> Result<Device, String> {
    s.parse()
}

/// Reply for a model error, classified by its message.
pub fn inference_error(id: u64, message: String) -> Reply {
    error(Some(id), classify_message(&message), message)
}

pub use swictation_proto::paths::{data_dir, ort_lib as default_ort_lib};
