//! Push-to-talk in the running daemon: `swictation ptt down|up` through the pure state machine
//! ([`swictation_policy::ptt`]), carried out on capture (pause, resume) and on the VAD stage's
//! segmenter (hold marks at the stream position of the key event).
//!
//! Positions are samples fed to the pipeline, counted where they are fed (the tap) plus what
//! capture has batched but not yet sent, so a mark lands where the key event happened in the
//! audio, however far behind the VAD stage is. Audio still in the sound system's buffers when the
//! key comes up arrives just after that position; the release padding covers it.

use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};
use swictation_policy::ptt::{Action, Key};
use swictation_policy::segmenter::HoldMark;
use swictation_proto::SAMPLE_RATE;

use super::Daemon;
use crate::supervision::stages::StageCommand;

/// How often a pending stop after a release checks whether the padding has been captured.
pub(super) const STOP_POLL: Duration = Duration::from_millis(50);

/// How long past the padding a stop waits for audio that does not come (a stalled device).
const STOP_GRACE: Duration = Duration::from_secs(2);

/// Stop listening once the stream reaches `at` (or at `deadline`).
#[derive(Debug, Clone, Copy)]
pub(super) struct PendingStop {
    at: u64,
    deadline: Instant,
}

impl Daemon {
    /// Samples fed to the pipeline so far, including capture's unsent batch.
    fn stream_position(&self) -> u64 {
        let fed = self.tap.lock().map(|t| t.position).unwrap_or(0);
        fed + self.capture.as_ref().map_or(0, |c| c.pending.len() as u64)
    }

    /// Sends `mark` to the VAD stage at the current stream position.
    fn hold_mark(&self, mark: HoldMark) {
        let at = self.stream_position();
        if self
            .stage
            .vad
            .send(StageCommand::Hold { at, mark })
            .is_err()
        {
            crate::log_warn!("push-to-talk: the VAD stage is not running");
        }
    }

    /// A push-to-talk key event; answers with the state and whether it was taken as a hold.
    pub(super) fn ptt_key(&mut self, key: Key) -> Map<String, Value> {
        let now_ms = self.started.elapsed().as_millis() as u64;
        // Listening only until a pending stop counts as not listening: a new press is then
        // push-to-talk from a paused daemon, as the previous one was.
        let listening = !self.paused && self.ptt_stop.is_none();
        let actions = self.ptt.key(key, now_ms, listening);
        let mut taken = "ignored";
        for a in actions {
            match a {
                Action::Listen => {
                    self.ptt_stop = None;
                    self.resume();
                }
                Action::Hold => {
                    taken = "held";
                    self.hold_mark(HoldMark::Start);
                }
                Action::LetGo => {
                    taken = "tap";
                    self.hold_mark(HoldMark::LetGo);
                }
                Action::Close { pad_ms } => {
                    taken = "released";
                    self.hold_mark(HoldMark::Close { pad_ms });
                }
                Action::Stop => self.pause(),
                Action::StopAfter { pad_ms } => {
                    let pad = Duration::from_millis(u64::from(pad_ms));
                    self.ptt_stop = Some(PendingStop {
                        at: self.stream_position()
                            + pad.as_millis() as u64 * SAMPLE_RATE as u64 / 1000,
                        deadline: Instant::now() + pad + STOP_GRACE,
                    });
                }
            }
        }
        crate::log_debug!("push-to-talk {key:?}: {taken}");
        let mut m = Map::new();
        m.insert("ptt".into(), json!(taken));
        m
    }

    /// Another command (toggle, pause, resume, stop) takes over from a press in progress: the
    /// held segment closes where it is, and nothing waits for the release.
    pub(super) fn ptt_cancel(&mut self) {
        if self.ptt.is_down() {
            self.ptt.cancel();
            self.hold_mark(HoldMark::Close { pad_ms: 0 });
        }
        self.ptt_stop = None;
    }

    /// Called every [`STOP_POLL`] while a stop is pending: pauses once the padding after the
    /// release has been fed to the pipeline.
    pub(super) fn ptt_tick(&mut self) {
        let Some(stop) = self.ptt_stop else { return };
        if self.stream_position() >= stop.at || Instant::now() >= stop.deadline {
            self.ptt_stop = None;
            self.pause();
        }
    }
}
