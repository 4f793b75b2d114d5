//! Why a worker failed: a pure function of its exit status, the tail of its stderr, its last
//! structured report and what the supervisor saw (a missed deadline, bad bytes).

use serde::Serialize;
use swictation_proto::faults::{classify_message, signature_in};
use swictation_proto::{exit_code, ErrorKind};

/// The failure classes the supervisor acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum FailureClass {
    /// A sticky CUDA error (launch failure, illegal address): the process's context is poisoned.
    CudaFault,
    /// A GPU allocation failure, or the kernel's OOM killer.
    OutOfMemory,
    /// Killed by a signal (SIGSEGV, SIGABRT, SIGKILL from outside, ...).
    Crash(i32),
    /// Exited on its own with this code.
    Exit(i32),
    /// A request not answered within its deadline, or missed heartbeats; the worker was killed.
    Hang,
    /// The worker sent bytes that are not the protocol.
    Protocol,
    /// The runtime library or model could not be loaded (a configuration problem, not a crash).
    Load,
}

impl FailureClass {
    /// Short name for status and counters: `cuda_fault`, `oom`, `crash`, `exit`, `hang`, ...
    pub fn key(&self) -> &'static str {
        match self {
            FailureClass::CudaFault => "cuda_fault",
            FailureClass::OutOfMemory => "oom",
            FailureClass::Crash(_) => "crash",
            FailureClass::Exit(_) => "exit",
            FailureClass::Hang => "hang",
            FailureClass::Protocol => "protocol",
            FailureClass::Load => "load",
        }
    }
}

impl std::fmt::Display for FailureClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FailureClass::Crash(sig) => match signal_name(*sig) {
                Some(s) => write!(f, "crash ({s})"),
                None => write!(f, "crash (signal {sig})"),
            },
            FailureClass::Exit(code) => write!(f, "exit ({code})"),
            other => f.write_str(other.key()),
        }
    }
}

/// The name of a Linux signal by number (`SIGSEGV` for 11), as the kernel's headers spell it.
pub fn signal_name(sig: i32) -> Option<&'static str> {
    const NAMES: [&str; 31] = [
        "SIGHUP",
        "SIGINT",
        "SIGQUIT",
        "SIGILL",
        "SIGTRAP",
        "SIGABRT",
        "SIGBUS",
        "SIGFPE",
        "SIGKILL",
        "SIGUSR1",
        "SIGSEGV",
        "SIGUSR2",
        "SIGPIPE",
        "SIGALRM",
        "SIGTERM",
        "SIGSTKFLT",
        "SIGCHLD",
        "SIGCONT",
        "SIGSTOP",
        "SIGTSTP",
        "SIGTTIN",
        "SIGTTOU",
        "SIGURG",
        "SIGXCPU",
        "SIGXFSZ",
        "SIGVTALRM",
        "SIGPROF",
        "SIGWINCH",
        "SIGIO",
        "SIGPWR",
        "SIGSYS",
    ];
    usize::try_from(sig)
        .ok()
        .and_then(|n| n.checked_sub(1))
        .and_then(|i| NAMES.get(i).copied())
}

/// What was observed when a worker failed.
#[derive(Debug, Clone, Default)]
pub struct Observation<'a> {
    /// Exit code, if it exited.
    pub code: Option<i32>,
    /// Terminating signal, if killed.
    pub signal: Option<i32>,
    /// The kept tail of its stderr.
    pub stderr_tail: &'a str,
    /// The last error it reported over the socket.
    pub last_report: Option<ErrorKind>,
    /// The supervisor killed it for missing a deadline.
    pub deadline_missed: bool,
    /// The supervisor saw bytes that are not the protocol.
    pub protocol_violation: bool,
    /// The kernel's OOM killer chose it (from the cgroup's memory events or the kernel log).
    pub oom_killed: bool,
}

/// Classify a failure. Order matters: what the worker or the supervisor knew for certain comes
/// before what the exit status and stderr suggest.
pub fn classify(o: &Observation<'_>) -> FailureClass {
    if o.deadline_missed {
        return FailureClass::Hang;
    }
    if o.protocol_violation {
        return FailureClass::Protocol;
    }
    match o.last_report {
        Some(ErrorKind::CudaFault) => return FailureClass::CudaFault,
        Some(ErrorKind::OutOfMemory) => return FailureClass::OutOfMemory,
        Some(ErrorKind::Load) => return FailureClass::Load,
        _ => {}
    }
    match o.code {
        Some(exit_code::CUDA_FAULT) => return FailureClass::CudaFault,
        Some(exit_code::OUT_OF_MEMORY) => return FailureClass::OutOfMemory,
        Some(exit_code::RUNTIME | exit_code::MODEL | exit_code::PROVIDER) => {
            return FailureClass::Load
        }
        Some(exit_code::PROTOCOL) => return FailureClass::Protocol,
        _ => {}
    }
    // The same signatures the worker classifies its own errors by (`swictation_proto::faults`).
    match classify_message(o.stderr_tail) {
        ErrorKind::CudaFault => return FailureClass::CudaFault,
        ErrorKind::OutOfMemory => return FailureClass::OutOfMemory,
        _ if o.oom_killed => return FailureClass::OutOfMemory,
        _ => {}
    }
    match (o.signal, o.code) {
        (Some(sig), _) => FailureClass::Crash(sig),
        (None, Some(code)) => FailureClass::Exit(code),
        (None, None) => FailureClass::Exit(-1),
    }
}

/// The last stderr line that carries one of the known signatures, to quote in status.
pub fn explaining_line(stderr_tail: &str) -> Option<&str> {
    stderr_tail.lines().rev().find(|l| {
        let l = l.to_ascii_lowercase();
        signature_in(&l).is_some() || l.contains("panicked at") || l.contains("error")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIGSEGV: i32 = 11;
    const SIGKILL: i32 = 9;
    const SIGABRT: i32 = 6;

    #[test]
    fn classification_table() {
        let ort_cuda =
            "2026-11-28 [E:onnxruntime] CUDA failure 719: unspecified launch failure ; GPU=0";
        let oom = "[E:onnxruntime:, bfc_arena.cc] BFCArena: Failed to allocate memory for requested buffer";
        let base = Observation::default;
        let table: Vec<(&str, Observation, FailureClass)> = vec![
            (
                "reported CUDA fault, distinct exit",
                Observation {
                    code: Some(70),
                    last_report: Some(ErrorKind::CudaFault),
                    ..base()
                },
                FailureClass::CudaFault,
            ),
            (
                "CUDA exit code alone",
                Observation {
                    code: Some(70),
                    ..base()
                },
                FailureClass::CudaFault,
            ),
            (
                "CUDA text then abort",
                Observation {
                    signal: Some(SIGABRT),
                    stderr_tail: ort_cuda,
                    ..base()
                },
                FailureClass::CudaFault,
            ),
            (
                "CUDA text then segfault",
                Observation {
                    signal: Some(SIGSEGV),
                    stderr_tail: ort_cuda,
                    ..base()
                },
                FailureClass::CudaFault,
            ),
            (
                "reported OOM",
                Observation {
                    code: Some(71),
                    last_report: Some(ErrorKind::OutOfMemory),
                    ..base()
                },
                FailureClass::OutOfMemory,
            ),
            (
                "OOM exit code",
                Observation {
                    code: Some(71),
                    ..base()
                },
                FailureClass::OutOfMemory,
            ),
            (
                "arena text then abort",
                Observation {
                    signal: Some(SIGABRT),
                    stderr_tail: oom,
                    ..base()
                },
                FailureClass::OutOfMemory,
            ),
            (
                "kernel OOM killer",
                Observation {
                    signal: Some(SIGKILL),
                    oom_killed: true,
                    ..base()
                },
                FailureClass::OutOfMemory,
            ),
            (
                "plain segfault",
                Observation {
                    signal: Some(SIGSEGV),
                    stderr_tail: "loading\n",
                    ..base()
                },
                FailureClass::Crash(SIGSEGV),
            ),
            (
                "SIGKILL from outside",
                Observation {
                    signal: Some(SIGKILL),
                    ..base()
                },
                FailureClass::Crash(SIGKILL),
            ),
            (
                "abort",
                Observation {
                    signal: Some(SIGABRT),
                    ..base()
                },
                FailureClass::Crash(SIGABRT),
            ),
            (
                "exit 3 is a load failure",
                Observation {
                    code: Some(3),
                    ..base()
                },
                FailureClass::Load,
            ),
            (
                "exit 4 is a load failure",
                Observation {
                    code: Some(4),
                    ..base()
                },
                FailureClass::Load,
            ),
            (
                "reported load failure",
                Observation {
                    code: Some(5),
                    last_report: Some(ErrorKind::Load),
                    ..base()
                },
                FailureClass::Load,
            ),
            (
                "exit 42",
                Observation {
                    code: Some(42),
                    ..base()
                },
                FailureClass::Exit(42),
            ),
            (
                "exit 0 unasked",
                Observation {
                    code: Some(0),
                    ..base()
                },
                FailureClass::Exit(0),
            ),
            (
                "protocol exit",
                Observation {
                    code: Some(7),
                    ..base()
                },
                FailureClass::Protocol,
            ),
            (
                "bad bytes seen",
                Observation {
                    protocol_violation: true,
                    signal: Some(SIGKILL),
                    ..base()
                },
                FailureClass::Protocol,
            ),
            (
                "deadline missed beats everything",
                Observation {
                    deadline_missed: true,
                    signal: Some(SIGKILL),
                    stderr_tail: ort_cuda,
                    ..base()
                },
                FailureClass::Hang,
            ),
            (
                "inference error report is not a class of its own",
                Observation {
                    code: Some(1),
                    last_report: Some(ErrorKind::Inference),
                    ..base()
                },
                FailureClass::Exit(1),
            ),
        ];
        for (name, obs, want) in table {
            assert_eq!(classify(&obs), want, "{name}");
        }
    }

    #[test]
    fn explaining_line_quotes_the_signature() {
        let tail = "loading model\nsome noise\nCUDA failure 719: unspecified launch failure\nbye\n";
        assert_eq!(
            explaining_line(tail),
            Some("CUDA failure 719: unspecified launch failure")
        );
        assert_eq!(explaining_line("all fine\n"), None);
    }

    #[test]
    fn display_names_signals() {
        assert_eq!(FailureClass::Crash(SIGSEGV).to_string(), "crash (SIGSEGV)");
        assert_eq!(FailureClass::Exit(3).to_string(), "exit (3)");
        assert_eq!(FailureClass::OutOfMemory.to_string(), "oom");
    }
}
