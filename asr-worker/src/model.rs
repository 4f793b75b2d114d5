//! The seam between the worker loop and a speech-recognition model family.
//!
//! The worker only ever talks to a [`SpeechModel`], so another family (an NVIDIA Canary
//! encoder-decoder, a Parakeet transducer) can be added beside [`crate::Moonshine`] without
//! touching the request loop.

use swictation_proto::{ComponentPlacement, ErrorKind};

/// The text recognised in one segment of audio.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Transcription {
    /// The recognised text, trimmed; empty when nothing was said (or the audio was too short).
    pub text: String,
    /// How many text tokens the decoder produced (start and end-of-text markers not counted).
    pub tokens: u32,
}

/// Why a transcription failed, classified for the supervisor.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct InferenceError {
    /// What kind of failure this is: the supervisor restarts the worker on a CUDA fault.
    pub kind: ErrorKind,
    /// Human-readable detail; never contains audio or transcript text.
    pub message: String,
}

impl InferenceError {
    /// An error whose kind is classified from its message (CUDA fault, out of memory, or
    /// an ordinary inference error).
    pub fn new(message: impl Into<String>) -> Self {
        let message = message.into();
        Self {
            kind: swictation_worker_kit::classify_message(&message),
            message,
        }
    }
}

/// A loaded speech-to-text model, ready to transcribe 16 kHz mono audio.
///
/// `Send` so the worker can own it on whichever thread serves requests; `&mut self` because an
/// ONNX Runtime session run is not thread-safe.
pub trait SpeechModel: Send {
    /// The model's name, e.g. `moonshine-base-en`.
    fn name(&self) -> &str;

    /// Where each component actually runs, e.g. `[encoder on cuda:0, decoder on cpu]`.
    fn placement(&self) -> Vec<ComponentPlacement>;

    /// Transcribe one segment of 16 kHz mono samples in [-1, 1].
    ///
    /// Empty or very short input gives an empty transcription, not an error.
    fn transcribe(&mut self, samples: &[f32]) -> Result<Transcription, InferenceError>;
}
