//! Telling the person at the desk: desktop notifications over the session bus
//! (`org.freedesktop.Notifications`, through zbus) for what the log and `status` already say:
//! a worker failed, a worker moved off the GPU and why, speech held, a segment quarantined,
//! running degraded, speech recovered after a restart.
//!
//! Which events become notices, and how often, is pure ([`notice_for`], [`RateLimit`]): one
//! notice per kind at most every `notify.min_interval_s` (a crash loop is one notice, not
//! fifty). Transcripts are never notified. Without a session bus (a service started before the
//! desktop, a container) the daemon says so once and goes on.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tokio::sync::broadcast;

use crate::report::status::{DaemonState, Event};

/// What kind of notice, for rate limiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A worker failed.
    Fault,
    /// A worker moved between devices.
    Moved,
    /// A GPU notice (speech held, released, thresholds).
    Gpu,
    /// The daemon runs degraded.
    Degraded,
    /// Speech from before a restart was recovered from the journal.
    Recovered,
    /// A segment was set aside instead of transcribed.
    Quarantined,
}

/// A notice: its kind, summary and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// For rate limiting.
    pub kind: Kind,
    /// The title.
    pub summary: String,
    /// The detail.
    pub body: String,
}

/// The notice an event deserves, if any.
pub fn notice_for(ev: &Event) -> Option<Notice> {
    match ev {
        Event::WorkerFailed {
            role,
            class,
            reason,
        } => Some(Notice {
            kind: Kind::Fault,
            summary: format!("swictation: the {role} worker failed ({class})"),
            body: format!("{reason}. It is being restarted; nothing said is lost."),
        }),
        Event::PlacementChanged {
            role,
            from,
            to,
            reason,
        } if from.contains("cuda") && !to.contains("cuda") => Some(Notice {
            kind: Kind::Moved,
            summary: format!("swictation: {role} moved off the GPU"),
            body: format!("{from} → {to}: {reason}"),
        }),
        Event::GpuNotice { message } if message.contains("hold") => Some(Notice {
            kind: Kind::Gpu,
            summary: "swictation: speech held".to_owned(),
            body: message.clone(),
        }),
        Event::StateChanged {
            state: DaemonState::Degraded,
        } => Some(Notice {
            kind: Kind::Degraded,
            summary: "swictation is running degraded".to_owned(),
            body: "A worker keeps failing; see `swictation status`.".to_owned(),
        }),
        Event::Quarantined { reason, path, .. } => Some(Notice {
            kind: Kind::Quarantined,
            summary: "swictation: a piece of speech was set aside".to_owned(),
            body: format!("It could not be transcribed ({reason}); its audio is kept at {path}."),
        }),
        // Never the text: that it exists, and where to find it.
        Event::Recovered { .. } => Some(Notice {
            kind: Kind::Recovered,
            summary: "swictation: speech recovered after a restart".to_owned(),
            body: "What was said before swictation stopped has been transcribed; `swictation recovered` shows what was kept.".to_owned(),
        }),
        _ => None,
    }
}

/// At most one notice per kind every `every`.
#[derive(Debug, Clone)]
pub struct RateLimit {
    every: Duration,
    last: HashMap<Kind, Instant>,
}

impl RateLimit {
    /// A limit of one per kind every `every`.
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            last: HashMap::new(),
        }
    }

    /// Whether a notice of `kind` may go out at `now` (and, if so, it counts from now).
    pub fn allow(&mut self, kind: Kind, now: Instant) -> bool {
        match self.last.get(&kind) {
            Some(t) if now.saturating_duration_since(*t) < self.every => false,
            _ => {
                self.last.insert(kind, now);
                true
            }
        }
    }
}

/// Sends notices for the daemon's events until the event stream ends.
pub async fn run(events: broadcast::Sender<Event>, min_interval: Duration) {
    // Subscribe before connecting, so nothing is missed while the bus is being reached.
    let mut rx = events.subscribe();
    let conn = match zbus::Connection::session().await {
        Ok(c) => c,
        Err(e) => {
            crate::log_info!("no desktop notifications: no session bus ({e})");
            return;
        }
    };
    let mut limit = RateLimit::new(min_interval);
    let mut failures = 0u32;
    loop {
        let ev = match rx.recv().await {
            Ok(ev) => ev,
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let Some(n) = notice_for(&ev) else { continue };
        if !limit.allow(n.kind, Instant::now()) {
            continue;
        }
        let hints: HashMap<&str, zbus::Variant<'_>> = HashMap::new();
        let sent = conn
            .call_method(
                Some("org.freedesktop.Notifications"),
                "/org/freedesktop/Notifications",
                Some("org.freedesktop.Notifications"),
                "Notify",
                &(
                    "swictation",
                    0u32,
                    "audio-input-microphone",
                    n.summary.as_str(),
                    n.body.as_str(),
                    Vec::<&str>::new(),
                    hints,
                    -1i32,
                ),
            )
            .await;
        match sent {
            Ok(_) => crate::log_debug!("notified: {}", n.summary),
            Err(e) => {
                failures += 1;
                if failures <= 3 {
                    crate::log_warn!("desktop notification not shown: {e}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_moves_off_the_gpu_held_speech_and_degraded_are_noticed() {
        let fault = Event::WorkerFailed {
            role: "asr".into(),
            class: "cuda_fault".into(),
            reason: "CUDA error 719".into(),
        };
        let n = notice_for(&fault).expect("a fault is noticed");
        assert_eq!(n.kind, Kind::Fault);
        assert!(n.summary.contains("asr") && n.summary.contains("cuda_fault"));
        let off = Event::PlacementChanged {
            role: "asr".into(),
            from: "enc cuda:0 dec cpu base 10s".into(),
            to: "cpu base 10s".into(),
            reason: "cuda:0 at 96%".into(),
        };
        assert_eq!(notice_for(&off).map(|n| n.kind), Some(Kind::Moved));
        let down_a_rung = Event::PlacementChanged {
            role: "asr".into(),
            from: "enc cuda:0 dec cpu base 10s".into(),
            to: "enc cuda:0 dec cpu base 5s".into(),
            reason: "x".into(),
        };
        assert_eq!(notice_for(&down_a_rung), None);
        let held = Event::GpuNotice {
            message: "holding ASR requests: emergency".into(),
        };
        assert_eq!(notice_for(&held).map(|n| n.kind), Some(Kind::Gpu));
        let degraded = Event::StateChanged {
            state: DaemonState::Degraded,
        };
        assert_eq!(notice_for(&degraded).map(|n| n.kind), Some(Kind::Degraded));
        let recovered = Event::Recovered {
            entry: "a.seg".into(),
            text: "my secret words".into(),
        };
        let n = notice_for(&recovered).expect("recovered speech is noticed");
        assert_eq!(n.kind, Kind::Recovered);
        assert!(n.body.contains("swictation recovered"), "{}", n.body);
        assert!(!format!("{}{}", n.summary, n.body).contains("secret"));
        let set_aside = Event::Quarantined {
            segment: 3,
            reason: "the asr worker died twice on it".into(),
            path: "/q/3.wav".into(),
        };
        let n = notice_for(&set_aside).expect("a quarantine is noticed");
        assert_eq!(n.kind, Kind::Quarantined);
        assert!(
            n.body.contains("died twice") && n.body.contains("/q/3.wav"),
            "{}",
            n.body
        );
        for quiet in [
            Event::Transcript {
                index: 0,
                text: "secret".into(),
            },
            Event::StateChanged {
                state: DaemonState::Listening,
            },
        ] {
            assert_eq!(notice_for(&quiet), None, "{quiet:?}");
        }
    }

    #[test]
    fn one_notice_per_kind_per_interval() {
        let t0 = Instant::now();
        let mut l = RateLimit::new(Duration::from_secs(30));
        assert!(l.allow(Kind::Fault, t0));
        assert!(!l.allow(Kind::Fault, t0 + Duration::from_secs(5)));
        assert!(l.allow(Kind::Moved, t0 + Duration::from_secs(5)));
        assert!(l.allow(Kind::Fault, t0 + Duration::from_secs(30)));
    }
}
