//! What the daemon says about itself: [`status`] (the snapshot `swictation status` shows and the
//! events it streams), [`bar`] (the status-bar format) and [`board`] (where the supervision layer publishes them).

pub mod bar;
pub mod board;
pub mod status;
