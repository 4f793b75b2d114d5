//! When to restart a failed worker: Fibonacci back-off with a cap, reset after a stable period,
//! and an intensity limit after which the decision passes to placement instead of looping.
//!
//! Pure: time comes in as a value (`now`, any monotonic origin), so it is tested as a table.

use std::collections::VecDeque;
use std::time::Duration;

/// Restart tuning.
#[derive(Debug, Clone, PartialEq)]
pub struct RestartPolicy {
    /// Unit of the Fibonacci sequence: delays are 0, 1, 1, 2, 3, 5, 8, ... × `unit`.
    pub unit: Duration,
    /// Longest delay.
    pub cap: Duration,
    /// Ready for this long resets the sequence (a crash after a stable hour is not the sixth in a row).
    pub stable_after: Duration,
    /// More than this many failures within `window` escalates.
    pub max_failures: usize,
    /// The window for `max_failures`.
    pub window: Duration,
    /// A request unanswered this long (plus 2 s per second of ASR audio, 10 ms per VAD frame;
    /// the VAD's part capped at 3 s) kills the worker as hung. Default 5 s.
    pub hang_timeout: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            unit: Duration::from_millis(100),
            cap: Duration::from_secs(30),
            stable_after: Duration::from_secs(60),
            max_failures: 5,
            window: Duration::from_secs(60),
            hang_timeout: Duration::from_secs(5),
        }
    }
}

/// What to do after a failure.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Start the worker again after this delay, in the same place.
    Restart { after: Duration },
    /// Too many failures too fast: placement must choose something else (a smaller model, the
    /// CPU, a degraded mode). `after` is still the delay before the next attempt.
    Escalate {
        failures: usize,
        window: Duration,
        after: Duration,
    },
}

impl Verdict {
    /// The delay before the next attempt, whatever the decision.
    pub fn delay(&self) -> Duration {
        match self {
            Verdict::Restart { after } | Verdict::Escalate { after, .. } => *after,
        }
    }
}

/// One worker's restart history.
#[derive(Debug, Clone, Default)]
pub struct RestartHistory {
    failures: VecDeque<Duration>,
    consecutive: u32,
    ready_since: Option<Duration>,
}

/// The `n`-th Fibonacci number starting 0, 1, 1, 2, 3, 5 (saturating).
fn fib(n: u32) -> u64 {
    let (mut a, mut b) = (0u64, 1u64);
    for _ in 0..n {
        (a, b) = (b, a.saturating_add(b));
    }
    a
}

impl RestartHistory {
    /// The worker became ready (handshake and canary passed) at `now`.
    pub fn on_ready(&mut self, now: Duration) {
        self.ready_since = Some(now);
    }

    /// Failures counted in the current run of consecutive ones.
    pub fn consecutive(&self) -> u32 {
        self.consecutive
    }

    /// The worker failed at `now`: decide when (and whether in the same place) to restart.
    pub fn on_failure(&mut self, now: Duration, policy: &RestartPolicy) -> Verdict {
        if let Some(since) = self.ready_since.take() {
            if now.saturating_sub(since) >= policy.stable_after {
                self.consecutive = 0;
            }
        }
        let after = policy
            .unit
            .saturating_mul(fib(self.consecutive).min(u32::MAX as u64) as u32)
            .min(policy.cap);
        self.consecutive = self.consecutive.saturating_add(1);
        self.failures.push_back(now);
        while self
            .failures
            .front()
            .is_some_and(|t| now.saturating_sub(*t) > policy.window)
        {
            self.failures.pop_front();
        }
        if self.failures.len() > policy.max_failures {
            Verdict::Escalate {
                failures: self.failures.len(),
                window: policy.window,
                after,
            }
        } else {
            Verdict::Restart { after }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn fibonacci_delays_capped() {
        let policy = RestartPolicy {
            unit: ms(100),
            cap: ms(800),
            max_failures: 100,
            ..Default::default()
        };
        let mut h = RestartHistory::default();
        let delays: Vec<u64> = (0..9)
            .map(|i| h.on_failure(ms(i * 10), &policy).delay().as_millis() as u64)
            .collect();
        assert_eq!(delays, vec![0, 100, 100, 200, 300, 500, 800, 800, 800]);
    }

    #[test]
    fn a_stable_period_resets_the_sequence() {
        let policy = RestartPolicy::default();
        let mut h = RestartHistory::default();
        for i in 0..4 {
            h.on_failure(ms(i), &policy);
        }
        h.on_ready(ms(10));
        // Failed again after 59 s: still counting.
        assert_eq!(h.on_failure(ms(59_010), &policy).delay(), ms(300));
        h.on_ready(ms(60_000));
        // Failed after a stable minute: back to an immediate restart.
        assert_eq!(h.on_failure(ms(120_001), &policy).delay(), ms(0));
    }

    #[test]
    fn intensity_limit_escalates_and_the_window_slides() {
        let policy = RestartPolicy {
            max_failures: 3,
            window: Duration::from_secs(10),
            ..Default::default()
        };
        let mut h = RestartHistory::default();
        let table = [
            (0, false),
            (1_000, false),
            (2_000, false),
            (3_000, true), // 4 within 10 s
            (4_000, true),
            (25_000, false), // the earlier ones left the window
        ];
        for (t, escalate) in table {
            let d = h.on_failure(ms(t), &policy);
            assert_eq!(
                matches!(d, Verdict::Escalate { .. }),
                escalate,
                "at {t} ms: {d:?}"
            );
        }
    }

    #[test]
    fn huge_counts_saturate_instead_of_overflowing() {
        let policy = RestartPolicy {
            max_failures: usize::MAX,
            ..Default::default()
        };
        let mut h = RestartHistory::default();
        for i in 0..200 {
            assert!(h.on_failure(ms(i), &policy).delay() <= policy.cap);
        }
    }
}
