//! Loading the ONNX Runtime shared library and creating sessions on an explicit device.
//!
//! Every failure names the path involved and what to do; nothing here panics on a missing or
//! wrong library. The CUDA execution provider is always registered with error-on-failure, so a
//! session never silently falls back to the CPU.

use std::path::{Path, PathBuf};

pub use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use swictation_proto::{Device, ErrorKind};

/// Why the ONNX Runtime library could not be used.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// No file at the configured path.
    #[error("ONNX Runtime library not found at {0}: run deploy/setup.sh, or point --ort-lib / SWICTATION_ORT_LIB at libonnxruntime.so (1.31 or newer)")]
    Missing(PathBuf),
    /// The file exists but could not be loaded (wrong version, wrong architecture, not a library).
    #[error("cannot load ONNX Runtime from {path}: {reason}. swictation needs ONNX Runtime 1.31 or newer; run deploy/setup.sh for a known-good copy")]
    Load { path: PathBuf, reason: String },
}

/// Why a model session could not be created.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The model file does not exist.
    #[error("model file not found: {0}: run deploy/setup.sh, or point --model at a directory holding it")]
    Missing(PathBuf),
    /// The requested execution provider could not be registered.
    #[error("cannot run {path} on {device}: {reason}")]
    Provider {
        path: PathBuf,
        device: Device,
        reason: String,
    },
    /// ONNX Runtime refused the file (corrupt, truncated, wrong format).
    #[error("cannot load model {path}: {reason}. The file may be corrupt: run deploy/setup.sh to re-verify it")]
    Load { path: PathBuf, reason: String },
}

/// A session, and the model bytes it may use in place (ORT-format files).
pub struct ModelSession {
    // Declared first, so it is dropped before the bytes it points into.
    session: Session,
    _bytes: Option<Box<[u8]>>,
}

impl std::ops::Deref for ModelSession {
    type Target = Session;
    fn deref(&self) -> &Session {
        &self.session
    }
}

impl std::ops::DerefMut for ModelSession {
    fn deref_mut(&mut self) -> &mut Session {
        &mut self.session
    }
}

/// A loaded ONNX Runtime library and its one environment for this process.
pub struct Runtime {
    env: ort::environment::Environment,
    version: String,
    threads: usize,
}

impl Runtime {
    /// Load the library at `lib`; `threads` is the intra-op thread count for every session.
    pub fn load(lib: &Path, threads: usize) -> Result<Self, RuntimeError> {
        if !lib.is_file() {
            return Err(RuntimeError::Missing(lib.to_path_buf()));
        }
        let load_err = |reason: String| RuntimeError::Load {
            path: lib.to_path_buf(),
            reason,
        };
        let builder = ort::init_from(lib).map_err(|e| load_err(e.to_string()))?;
        let env = builder
            .with_name("swictation")
            .build()
            .map_err(|e| load_err(e.to_string()))?;
        // The loaded library passed ort's own version check (>= 1.31); its soname carries the
        // exact version (`libonnxruntime.so.1.32.0`), which is what status should show.
        let real = std::fs::canonicalize(lib).unwrap_or_else(|_| lib.to_path_buf());
        let version = real
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.split_once(".so.").map(|(_, v)| v.to_string()))
            .unwrap_or_else(|| "1.31+".to_string());
        Ok(Self {
            env,
            version,
            threads: threads.max(1),
        })
    }

    /// The library's version, e.g. `1.32.0`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Create a session for the model at `path` on `device`, or say exactly why not.
    pub fn session(&self, path: &Path, device: Device) -> Result<ModelSession, ModelError> {
        if !path.is_file() {
            return Err(ModelError::Missing(path.to_path_buf()));
        }
        let load = |reason: String| ModelError::Load {
            path: path.to_path_buf(),
            reason,
        };
        let mut builder = Session::builder(&self.env)
            .map_err(|e| load(e.to_string()))?
            .with_optimization_level(GraphOptimizationLevel::Level3)
            .map_err(|e| load(e.to_string()))?
            .with_intra_threads(self.threads)
            .map_err(|e| load(e.to_string()))?
            .with_inter_threads(1)
            .map_err(|e| load(e.to_string()))?;
        if let Device::Cuda(n) = device {
            let ep = ort::ep::CUDA::default()
                .with_device_id(n as i32)
                .build()
                .error_on_failure();
            builder = builder
                .with_execution_providers([ep])
                .map_err(|e| ModelError::Provider {
                    path: path.to_path_buf(),
                    device,
                    reason: e.to_string(),
                })?;
        }
        let commit = if path.extension().is_some_and(|e| e == "ort") {
            // An ORT-format file is read into memory that the session's initializers then use
            // in place (no second copy, no per-tensor allocation): a prepared decoder holds
            // 275 MB of folded weights, and copying them dominated its load time.
            let bytes = std::fs::read(path)
                .map_err(|e| load(format!("cannot read the file: {e}")))?
                .into_boxed_slice();
            builder = builder
                .with_config_entry("session.use_ort_model_bytes_directly", "1")
                .map_err(|e| load(e.to_string()))?
                .with_config_entry("session.use_ort_model_bytes_for_initializers", "1")
                .map_err(|e| load(e.to_string()))?;
            builder
                .commit_from_memory(&bytes)
                .map(|session| ModelSession {
                    session,
                    _bytes: Some(bytes),
                })
        } else {
            builder.commit_from_file(path).map(|session| ModelSession {
                session,
                _bytes: None,
            })
        };
        commit.map_err(|e| {
            let reason = e.to_string();
            if device != Device::Cpu && classify_message(&reason) != ErrorKind::Inference {
                ModelError::Provider {
                    path: path.to_path_buf(),
                    device,
                    reason,
                }
            } else {
                load(reason)
            }
        })
    }
}

impl Runtime {
    /// Load the model at `src` on the CPU with `level` graph optimisation and have ONNX Runtime
    /// write the graph it ends up with to `dst` (ORT format when `dst` ends in `.ort`, else
    /// ONNX). Used only to prepare models at set-up, never on the request path.
    pub fn write_optimized(
        &self,
        src: &Path,
        dst: &Path,
        level: GraphOptimizationLevel,
    ) -> Result<(), ModelError> {
        if !src.is_file() {
            return Err(ModelError::Missing(src.to_path_buf()));
        }
        let load = |reason: String| ModelError::Load {
            path: src.to_path_buf(),
            reason,
        };
        let format = if dst.extension().is_some_and(|e| e == "ort") {
            "ORT"
        } else {
            "ONNX"
        };
        let _session = Session::builder(&self.env)
            .map_err(|e| load(e.to_string()))?
            .with_optimization_level(level)
            .map_err(|e| load(e.to_string()))?
            .with_intra_threads(self.threads)
            .map_err(|e| load(e.to_string()))?
            .with_config_entry("session.save_model_format", format)
            .map_err(|e| load(e.to_string()))?
            .with_optimized_model_path(dst)
            .map_err(|e| load(e.to_string()))?
            .commit_from_file(src)
            .map_err(|e| load(e.to_string()))?;
        if !dst.is_file() {
            return Err(load(format!(
                "ONNX Runtime did not write {}",
                dst.display()
            )));
        }
        Ok(())
    }
}

pub use swictation_proto::faults::classify_message;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_classified() {
        let table = [
            (
                "CUDA failure 719: unspecified launch failure ; GPU=0",
                ErrorKind::CudaFault,
            ),
            (
                "CUDA error cudaErrorIllegalAddress:an illegal memory access was encountered",
                ErrorKind::CudaFault,
            ),
            (
                "Failed to allocate memory for requested buffer of size 123",
                ErrorKind::OutOfMemory,
            ),
            (
                "CUDA error cudaErrorMemoryAllocation:out of memory",
                ErrorKind::OutOfMemory,
            ),
            (
                "Got invalid dimensions for input: input for the following indices",
                ErrorKind::Inference,
            ),
        ];
        for (msg, want) in table {
            assert_eq!(classify_message(msg), want, "{msg}");
        }
    }

    #[test]
    fn missing_library_names_the_path() {
        let err = Runtime::load(Path::new("/nonexistent/libonnxruntime.so"), 1)
            .err()
            .unwrap();
        let text = err.to_string();
        assert!(text.contains("/nonexistent/libonnxruntime.so"), "{text}");
        assert!(text.contains("deploy/setup.sh"), "{text}");
    }

    #[test]
    fn a_file_that_is_not_a_library_is_an_error_not_a_panic() {
        let dir = std::env::temp_dir().join(format!("swictation-kit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fake = dir.join("libonnxruntime.so");
        std::fs::write(&fake, b"not a library").unwrap();
        let err = Runtime::load(&fake, 1).err().unwrap();
        assert!(matches!(err, RuntimeError::Load { .. }), "{err}");
        assert!(err.to_string().contains(fake.to_str().unwrap()));
        std::fs::remove_dir_all(&dir).ok();
    }
}
