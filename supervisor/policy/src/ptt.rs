//! Push-to-talk: key presses and releases to what the daemon does, by the tap-vs-hold rule.
//!
//! A press shorter than the threshold is a tap and toggles listening (as `swictation toggle`
//! does); a longer one is push-to-talk: listening (and a held segment, see
//! [`crate::segmenter::HoldMark`]) from the press until the release, plus padding, and then back
//! to what the daemon was doing before the press. Time comes in as milliseconds from any fixed
//! origin; nothing here reads a clock.

/// The tap-vs-hold rule's tuning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PttConfig {
    /// A press at least this long is a hold (push-to-talk); shorter is a tap (toggle).
    pub hold_threshold_ms: u64,
    /// Audio kept after a hold's release, so the last word is not cut.
    pub release_pad_ms: u32,
}

impl Default for PttConfig {
    fn default() -> Self {
        Self {
            hold_threshold_ms: 400,
            release_pad_ms: 500,
        }
    }
}

/// A key event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    /// Pressed.
    Down,
    /// Released.
    Up,
}

/// What the daemon is to do, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Start listening (open capture).
    Listen,
    /// Hold the segment from here: speech is not closed by silence until released.
    Hold,
    /// A tap: drop the hold; the VAD decides again where speech ends.
    LetGo,
    /// A hold ended: the held segment closes `pad_ms` after the release.
    Close {
        /// Audio kept after the release.
        pad_ms: u32,
    },
    /// Stop listening now (a tap while listening).
    Stop,
    /// Stop listening once `pad_ms` of audio after the release has been captured.
    StopAfter {
        /// How much audio after the release to wait for.
        pad_ms: u32,
    },
}

/// A press in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Press {
    at_ms: u64,
    was_listening: bool,
}

/// The push-to-talk state machine.
#[derive(Debug, Clone)]
pub struct PushToTalk {
    cfg: PttConfig,
    pressed: Option<Press>,
}

impl PushToTalk {
    /// No key pressed.
    pub fn new(cfg: PttConfig) -> Self {
        Self { cfg, pressed: None }
    }

    /// Whether the key is down.
    pub fn is_down(&self) -> bool {
        self.pressed.is_some()
    }

    /// Another command (toggle, pause, resume) took over: a press in progress is forgotten, so
    /// its release does nothing.
    pub fn cancel(&mut self) {
        self.pressed = None;
    }

    /// `key` at `now_ms`, with the daemon `listening` or not; returns what to do. A second
    /// press without a release (a compositor's key repeat) and a release without a press do
    /// nothing.
    pub fn key(&mut self, key: Key, now_ms: u64, listening: bool) -> Vec<Action> {
        match (key, self.pressed) {
            (Key::Down, Some(_)) | (Key::Up, None) => Vec::new(),
            (Key::Down, None) => {
                self.pressed = Some(Press {
                    at_ms: now_ms,
                    was_listening: listening,
                });
                if listening {
                    vec![Action::Hold]
                } else {
                    vec![Action::Listen, Action::Hold]
                }
            }
            (Key::Up, Some(p)) => {
                self.pressed = None;
                let pad_ms = self.cfg.release_pad_ms;
                let held = now_ms.saturating_sub(p.at_ms) >= self.cfg.hold_threshold_ms;
                match (held, p.was_listening) {
                    // A tap toggles: it was listening, so it stops; else it keeps listening.
                    (false, true) => vec![Action::LetGo, Action::Stop],
                    (false, false) => vec![Action::LetGo],
                    // A hold talks, then goes back to what it was doing.
                    (true, true) => vec![Action::Close { pad_ms }],
                    (true, false) => vec![Action::Close { pad_ms }, Action::StopAfter { pad_ms }],
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Action::*;
    use Key::*;

    #[test]
    fn tap_toggles_and_hold_talks() {
        let cfg = PttConfig {
            hold_threshold_ms: 400,
            release_pad_ms: 500,
        };
        // (listening at the press, press length ms, actions at the press, actions at the release)
        let cases: &[(bool, u64, &[Action], &[Action])] = &[
            (false, 100, &[Listen, Hold], &[LetGo]),
            (false, 399, &[Listen, Hold], &[LetGo]),
            (true, 100, &[Hold], &[LetGo, Stop]),
            (true, 0, &[Hold], &[LetGo, Stop]),
            (
                false,
                400,
                &[Listen, Hold],
                &[Close { pad_ms: 500 }, StopAfter { pad_ms: 500 }],
            ),
            (
                false,
                180_000,
                &[Listen, Hold],
                &[Close { pad_ms: 500 }, StopAfter { pad_ms: 500 }],
            ),
            (true, 400, &[Hold], &[Close { pad_ms: 500 }]),
            (true, 5_000, &[Hold], &[Close { pad_ms: 500 }]),
        ];
        for &(listening, len, at_press, at_release) in cases {
            let mut p = PushToTalk::new(cfg);
            assert_eq!(p.key(Down, 1_000, listening), at_press, "{listening} {len}");
            assert!(p.is_down());
            // Listening changes with the press; the release is judged by the state at the press.
            assert_eq!(
                p.key(Up, 1_000 + len, true),
                at_release,
                "{listening} {len}"
            );
            assert!(!p.is_down());
        }
    }

    #[test]
    fn repeats_and_strays_do_nothing() {
        let mut p = PushToTalk::new(PttConfig::default());
        assert_eq!(p.key(Up, 0, true), []);
        assert_eq!(p.key(Down, 10, false), [Listen, Hold]);
        // Key repeat: more presses, the first one counts.
        assert_eq!(p.key(Down, 300, true), []);
        assert_eq!(p.key(Down, 600, true), []);
        assert_eq!(
            p.key(Up, 700, true),
            [Close { pad_ms: 500 }, StopAfter { pad_ms: 500 }]
        );
        assert_eq!(p.key(Up, 800, false), []);
    }

    #[test]
    fn a_cancelled_press_is_forgotten() {
        let mut p = PushToTalk::new(PttConfig::default());
        assert_eq!(p.key(Down, 0, true), [Hold]);
        p.cancel();
        assert!(!p.is_down());
        assert_eq!(p.key(Up, 1_000, false), []);
    }

    #[test]
    fn a_clock_going_backwards_is_a_tap() {
        let mut p = PushToTalk::new(PttConfig::default());
        assert_eq!(p.key(Down, 5_000, false), [Listen, Hold]);
        assert_eq!(p.key(Up, 1_000, true), [LetGo]);
    }
}
