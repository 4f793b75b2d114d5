//! Mechanics, with no decisions of their own: they do what the supervision layer asks and report
//! what happened.

pub mod audio;
pub mod capture;
pub mod control;
pub mod deliver;
pub mod desktop;
pub mod gpu;
pub mod journal;
pub mod launch;
pub mod logind;
pub mod notify;
pub mod output;
pub mod procfs;
pub mod recovered;
pub mod worker;
