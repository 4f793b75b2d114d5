//! Keeping the workers alive and in the right place, and carrying speech through them.

pub mod engine;
pub mod placer;
pub mod sleep;
pub mod stages;
pub mod supervised;
