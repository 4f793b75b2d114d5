//! The commands besides `run`, as functions the binary calls.

pub mod bench;
pub mod doctor;
pub mod soak;
