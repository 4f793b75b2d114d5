//! What both swictation workers share: loading ONNX Runtime, creating sessions on an explicit
//! device, the request loop over the supervisor's socket, and test-only fault injection.
//!
//! The supervisor never links this crate: ONNX Runtime (and with it CUDA) lives only in worker
//! processes, so a fault there cannot reach the process that holds the user's audio.

pub mod runtime;

pub use runtime::{classify_message, ModelError, Runtime, RuntimeError};

/// Locate a test asset installed by `deploy/setup.sh` (for tests and benches of the workers).
pub fn data_dir() -> std::path::PathBuf {
    if let Some(d) = std::env::var_os("SWICTATION_DATA_DIR") {
        return d.into();
    }
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".local/share")
        });
    base.join("swictation")
}

/// The ONNX Runtime library `deploy/setup.sh` installs, unless `SWICTATION_ORT_LIB` says otherwise.
pub fn default_ort_lib() -> std::path::PathBuf {
    std::env::var_os("SWICTATION_ORT_LIB")
        .map(Into::into)
        .unwrap_or_else(|| data_dir().join("onnxruntime/libonnxruntime.so.1.32.0"))
}
