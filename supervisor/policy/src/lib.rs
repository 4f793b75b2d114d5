//! The supervisor's pure policy: every decision the daemon makes that can be stated as a function
//! of plain data. A crate of its own so that the compiler, not a comment, keeps it free of
//! processes, sockets, clocks and devices: it depends only on the wire contract
//! (`swictation-proto`) and serde, and time comes in as arguments.
//!
//! - [`segmenter`]: speech probabilities to utterance segments.
//! - [`failure`]: a worker's end (exit status, signal, stderr, error reply) to a failure class.
//! - [`restart`]: the restart budget and backoff.
//! - [`wer`]: word error rate, for the canary and the soak.
//! - [`gpu`]: what a GPU probe reads.
//! - [`placement`]: where each worker runs, from readings, failures and the configured ladders.
//! - [`dictation`]: replacements and spoken commands between the recogniser and the output.
//! - [`ptt`]: push-to-talk key events to actions, by the tap-vs-hold rule.

pub mod dictation;
pub mod failure;
pub mod gpu;
pub mod placement;
pub mod ptt;
pub mod restart;
pub mod segmenter;
pub mod wer;
