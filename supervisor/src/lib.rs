//! The swictation supervisor as a library, in layers; each layer uses only those below it (the
//! `layers` test checks this, and that no two modules import each other):
//!
//! 1. the pure policy, its own crate ([`swictation_policy`]): segmenter, failure, restart, word
//!    error rate, GPU readings and placement;
//! 2. [`config`]: the configuration file and its translation into the policy's tuning;
//! 3. [`report`]: what the daemon says about itself (status, events, the board that holds them);
//! 4. [`io`]: mechanics with no decisions: audio, capture, worker processes and their command
//!    lines, the GPU probe, the control socket, output, notify, the session's D-Bus;
//! 5. [`supervision`]: keeping workers alive and placed: supervised workers, the placer, the
//!    stages that carry speech through them;
//! 6. [`daemon`]: the wiring of one running daemon;
//! 7. [`cli`]: the commands besides `run` (bench, soak, doctor).
//!
//! [`log`] is below them all.

pub mod log;

pub mod cli;
pub mod config;
pub mod daemon;
pub mod io;
pub mod report;
pub mod supervision;
