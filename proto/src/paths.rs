//! Every place swictation keeps something: the XDG directories (config, data, state, runtime)
//! and the install layout `deploy/setup.sh` creates (runtime library, models, speech clips). One
//! module, shared by the supervisor, the workers and the tests, so no path is spelt twice.

use std::path::PathBuf;

/// The Silero VAD model, relative to [`models_dir`].
pub const SILERO_VAD: &str = "silero-vad/silero_vad.onnx";
/// The Moonshine base-en model directory, relative to [`models_dir`].
pub const MOONSHINE_BASE_EN: &str = "moonshine-base-en";
/// The Moonshine tiny-en model directory, relative to [`models_dir`].
pub const MOONSHINE_TINY_EN: &str = "moonshine-tiny-en";
/// The canary clip ("go forward ten meters"), relative to [`speech_dir`].
pub const CANARY_CLIP: &str = "goforward.raw";

/// `$VAR` if set and not empty, else `~/fallback` (the XDG base-directory rule).
fn xdg(var: &str, fallback: &str) -> PathBuf {
    std::env::var_os(var)
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(fallback)
        })
}

/// `$XDG_CONFIG_HOME/swictation`, else `~/.config/swictation`.
pub fn config_dir() -> PathBuf {
    xdg("XDG_CONFIG_HOME", ".config").join("swictation")
}

/// `$XDG_STATE_HOME/swictation`, else `~/.local/state/swictation`.
pub fn state_dir() -> PathBuf {
    xdg("XDG_STATE_HOME", ".local/state").join("swictation")
}

/// `$XDG_RUNTIME_DIR/swictation` when the runtime directory is set; `None` otherwise (callers
/// choose their own fallback and check its ownership).
pub fn runtime_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_RUNTIME_DIR")
        .filter(|d| !d.is_empty())
        .map(|d| PathBuf::from(d).join("swictation"))
}

/// `$SWICTATION_DATA_DIR`, else `$XDG_DATA_HOME/swictation`, else `~/.local/share/swictation`.
pub fn data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("SWICTATION_DATA_DIR").filter(|d| !d.is_empty()) {
        return d.into();
    }
    xdg("XDG_DATA_HOME", ".local/share").join("swictation")
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

/// The installed canary clip.
pub fn canary_clip() -> PathBuf {
    speech_dir().join(CANARY_CLIP)
}
