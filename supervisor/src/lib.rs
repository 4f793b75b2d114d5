//! The swictation supervisor as a library: every module the `swictation` binary wires together,
//! each testable on its own.

pub mod audio;
pub mod bench;
pub mod capture;
pub mod config;
pub mod control;
pub mod daemon;
pub mod doctor;
pub mod failure;
pub mod gpu;
pub mod log;
pub mod notify;
pub mod output;
pub mod pipeline;
pub mod placement;
pub mod placer;
pub mod restart;
pub mod segmenter;
pub mod sleep;
pub mod soak;
pub mod stages;
pub mod status;
pub mod supervised;
pub mod wer;
pub mod worker;
