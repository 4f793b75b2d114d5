//! Where `deploy/setup.sh` installs the runtime library, models and speech data: a convention
//! the supervisor, the workers and the tests share.

use std::path::PathBuf;

/// `$SWICTATION_DATA_DIR`, else `$XDG_DATA_HOME/swictation`, else `~/.local/share/swictation`.
pub fn data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("SWICTATION_DATA_DIR").filter(|d| !d.is_empty()) {
        return d.into();
    }
    let base = std::env::var_os("XDG_DATA_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".local/share")
        });
    base.join("swictation")
}

/// The ONNX Runtime library: `$SWICTATION_ORT_LIB`, else the one `deploy/setup.sh` installs.
pub fn ort_lib() -> PathBuf {
    std::env::var_os("SWICTATION_ORT_LIB")
        .filter(|d| !d.is_empty())
        .map(Into::into)
        .unwrap_or_else(|| data_dir().join("onnxruntime/libonnxruntime.so.1.32.0"))
}

/// The installed models directory.
pub fn models_dir() -> PathBuf {
    std::env::var_os("SWICTATION_MODELS")
        .filter(|d| !d.is_empty())
        .map(Into::into)
        .unwrap_or_else(|| data_dir().join("models"))
}

/// The installed speech clips directory.
pub fn speech_dir() -> PathBuf {
    data_dir().join("speech")
}
