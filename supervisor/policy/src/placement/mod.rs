//! Where each worker runs: the GPU-aware placement policy, a pure function.
//!
//! [`decide`] takes GPU readings, the remembered [`History`], the workers' [`Current`]
//! placements, an optional [`FailureEvent`], the [`PlacementConfig`] and the time, and returns a
//! [`Decision`]: a new place for the VAD and/or the ASR worker (each with a human [`Reason`]),
//! whether to hold new ASR requests (the circuit breaker), warnings to report, and the history to
//! keep. It starts and stops nothing: the caller (the pipeline) carries the decision out, and the
//! policy never touches a process, a clock or a device, so it is tested as tables.
//!
//! The shape, from the project's out-of-memory research and what was seen on the GPU machine
//! (the README's GPU section):
//! - ASR walks down a configurable ladder of rungs (device per component × model × context);
//!   the VAD walks down its own (GPU, then CPU), and it is the first thing moved under pressure.
//! - A worker goes on a GPU only if free memory ≥ its need (learned from NVML after a load, else
//!   an estimate) + a margin, and only if that leaves the device below the critical threshold.
//! - warning → report; critical → VAD off the GPU, no growth; emergency → hold ASR requests and
//!   step ASR down.
//! - `OutOfMemory` → next rung; `CudaFault` with plenty of memory → same rung once, then the rung
//!   is banned; `Load` → banned at once (retrying a provider that cannot load the model is
//!   pointless); a critical Xid marks the device suspect; no GPU → CPU, saying why.
//! - Promotion only after free memory stayed above the upper rung's need + hysteresis for a
//!   sustained period, longer after each failure at that rung, so flapping readings never make
//!   it oscillate.

mod decide;
mod inputs;
#[cfg(test)]
mod tests;
mod tuning;
mod vocab;

pub use decide::*;
pub use inputs::*;
pub use tuning::*;
pub use vocab::*;
