//! The VAD worker's model: Silero VAD v6.2 through ONNX Runtime.
//!
//! Silero v6.2 must see the last 64 samples of the previous chunk in front of every 512-sample
//! chunk (576 in all) and its recurrent state carried from chunk to chunk; fed 512 samples alone
//! it answers ~0.001 on clear speech. [`Silero`] keeps both, so callers just stream frames.

use std::path::Path;

use ort::value::TensorRef;
use swictation_proto::{Device, VAD_FRAME};
use swictation_worker_kit::{ModelError, Runtime};

/// Samples of the previous chunk prepended to each frame.
pub const CONTEXT: usize = 64;
const STATE: usize = 2 * 128;

/// Model name reported in the handshake.
pub const MODEL_NAME: &str = "silero-vad-v6.2";

/// A Silero VAD session with its streaming state.
pub struct Silero {
    session: swictation_worker_kit::ModelSession,
    device: Device,
    input: Vec<f32>,
    state: Vec<f32>,
}

impl Silero {
    /// Load `silero_vad.onnx` on `device`.
    pub fn load(rt: &Runtime, path: &Path, device: Device) -> Result<Self, ModelError> {
        let session = rt.session(path, device)?;
        let names: Vec<&str> = session.inputs().iter().map(|i| i.name()).collect();
        if !["input", "state", "sr"].iter().all(|n| names.contains(n)) {
            return Err(ModelError::Load {
                path: path.to_path_buf(),
                reason: format!(
                    "expected inputs input, state, sr (Silero VAD v6), found {names:?}"
                ),
            });
        }
        let outputs: Vec<&str> = session.outputs().iter().map(|o| o.name()).collect();
        if !["output", "stateN"].iter().all(|n| outputs.contains(n)) {
            return Err(ModelError::Load {
                path: path.to_path_buf(),
                reason: format!(
                    "expected outputs output, stateN (Silero VAD v6), found {outputs:?}"
                ),
            });
        }
        Ok(Self {
            session,
            device,
            input: vec![0.0; CONTEXT + VAD_FRAME],
            state: vec![0.0; STATE],
        })
    }

    /// Where the model runs.
    pub fn device(&self) -> Device {
        self.device
    }

    /// Forget the recurrent state and the context: the next frame starts a new stream.
    pub fn reset(&mut self) {
        self.input.fill(0.0);
        self.state.fill(0.0);
    }

    /// Speech probability of one frame of [`VAD_FRAME`] samples.
    pub fn frame(&mut self, frame: &[f32]) -> Result<f32, String> {
        if frame.len() != VAD_FRAME {
            return Err(format!(
                "a VAD frame is {VAD_FRAME} samples, got {}",
                frame.len()
            ));
        }
        // input = [last 64 samples of the previous frame | this frame]
        self.input.copy_within(VAD_FRAME.., 0);
        self.input[CONTEXT..].copy_from_slice(frame);
        let sr = [16_000i64];
        let outputs = self
            .session
            .run(ort::inputs! {
                "input" => TensorRef::from_array_view(([1usize, CONTEXT + VAD_FRAME], &self.input[..])).map_err(|e| e.to_string())?,
                "state" => TensorRef::from_array_view(([2usize, 1, 128], &self.state[..])).map_err(|e| e.to_string())?,
                "sr" => TensorRef::from_array_view(((), &sr[..])).map_err(|e| e.to_string())?,
            })
            .map_err(|e| e.to_string())?;
        let (_, prob) = outputs
            .get("output")
            .ok_or("Silero returned no output named output")?
            .try_extract_tensor::<f32>()
            .map_err(|e| e.to_string())?;
        let prob = *prob.first().ok_or("Silero returned an empty output")?;
        let (_, state) = outputs
            .get("stateN")
            .ok_or("Silero returned no output named stateN")?
            .try_extract_tensor::<f32>()
            .map_err(|e| e.to_string())?;
        if state.len() != STATE {
            return Err(format!(
                "Silero returned a state of {} values, expected {STATE}",
                state.len()
            ));
        }
        self.state.copy_from_slice(state);
        Ok(prob)
    }

    /// Speech probability of each consecutive frame of `samples` (a multiple of [`VAD_FRAME`]).
    pub fn frames(&mut self, samples: &[f32]) -> Result<Vec<f32>, String> {
        if !samples.len().is_multiple_of(VAD_FRAME) {
            return Err(format!(
                "VAD input must be a multiple of {VAD_FRAME} samples, got {}",
                samples.len()
            ));
        }
        samples
            .chunks_exact(VAD_FRAME)
            .map(|f| self.frame(f))
            .collect()
    }
}
