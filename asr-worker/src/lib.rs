//! The swictation ASR worker's models: speech-to-text that runs in the worker process.
//!
//! The worker loop (in the binary) only sees [`SpeechModel`]; [`Moonshine`] is the one family
//! implemented so far.

pub mod files;
pub mod model;
pub mod moonshine;
pub mod prepare;
pub mod tokenizer;
pub mod window;

pub use model::{InferenceError, SpeechModel, Transcription};
pub use moonshine::{Moonshine, Timing};
pub use tokenizer::Tokenizer;
pub use window::{WindowText, Windowed};
