//! Speech segmentation: a pure state machine that turns per-frame VAD
//! probabilities into padded speech segments.
//!
//! It has no clock and does no I/O: time is the index of a sample in the
//! 16 kHz stream, so the same input always gives the same segments, whether it
//! comes from a microphone, a file or a test.

use std::collections::VecDeque;

/// Samples per VAD frame at 16 kHz (32 ms), the Silero window size.
///
/// [`Segmenter::push`] accepts frames of any length; this is what the VAD
/// worker produces.
pub const FRAME_SAMPLES: usize = 512;

/// Samples per millisecond at 16 kHz.
const SAMPLES_PER_MS: u64 = 16;

/// Upper bound for [`SegmenterConfig::max_segment_ms`]: the open segment is
/// held in memory, and no ASR model handles ten minutes in one pass anyway.
pub const MAX_SEGMENT_LIMIT_MS: u32 = 600_000;

/// Longest piece of a held segment (push-to-talk) sent to ASR at once: 90 s
/// of f32 samples is 5.8 MB, inside the wire's 8 MiB frame. A longer hold is
/// sent as several pieces, cut in a pause where there is one, never dropped.
pub const HOLD_PIECE_MS: u32 = 90_000;

/// Silence inside a held segment that is a good place to cut it into pieces.
const HOLD_CUT_SILENCE_MS: u64 = 300;

/// What push-to-talk tells the segmenter, at a stream position (see
/// [`Segmenter::mark`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldMark {
    /// The key went down: a segment is open from here (with the pre-roll) and
    /// silence does not close it, nor does `max_segment_ms` cut it.
    Start,
    /// It was a tap: the VAD decides again where the open segment ends.
    LetGo,
    /// The key came up after a hold: the held segment ends `pad_ms` after
    /// this position, whatever the VAD says.
    Close {
        /// Audio kept after the release, so the last word is not cut.
        pad_ms: u32,
    },
}

/// Where a hold stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hold {
    Off,
    On,
    /// Closing at this stream position.
    Until(u64),
}

/// Tuning of the segmenter. All durations are in milliseconds of audio.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
#[serde(default)]
pub struct SegmenterConfig {
    /// A frame with probability at or above this starts speech.
    pub start_threshold: f32,
    /// While in speech, a frame below this counts as silence. Lower than
    /// `start_threshold` (hysteresis) so that a wavering probability in the
    /// middle of a word neither starts nor ends speech.
    pub stop_threshold: f32,
    /// Bursts of speech shorter than this (first speech frame to last) are
    /// dropped as clicks and noise.
    pub min_speech_ms: u32,
    /// Continuous silence needed to close a segment; shorter pauses stay
    /// inside it.
    pub min_silence_ms: u32,
    /// Audio kept before the first speech frame, so soft onsets are not clipped.
    pub pad_before_ms: u32,
    /// Audio kept after the last speech frame. Must not exceed
    /// `min_silence_ms`: it is taken from the silence that closes the
    /// segment, so closing never waits for more audio.
    pub pad_after_ms: u32,
    /// A segment reaching this length is emitted and continued in a new one.
    pub max_segment_ms: u32,
}

impl Default for SegmenterConfig {
    /// Defaults tuned for dictation with Silero VAD and Moonshine.
    fn default() -> Self {
        Self {
            start_threshold: 0.5,
            stop_threshold: 0.35,
            min_speech_ms: 250,
            min_silence_ms: 500,
            pad_before_ms: 300,
            pad_after_ms: 300,
            max_segment_ms: 20_000,
        }
    }
}

impl SegmenterConfig {
    /// Checks the configuration; the error names the offending field and why.
    pub fn validate(&self) -> Result<(), String> {
        let (start, stop) = (self.start_threshold, self.stop_threshold);
        if !(start > 0.0 && start <= 1.0) {
            return Err(format!("start_threshold must be in (0, 1], got {start}"));
        }
        if !(stop >= 0.0 && stop <= start) {
            return Err(format!(
                "stop_threshold must be between 0 and start_threshold ({start}), got {stop}"
            ));
        }
        if self.min_silence_ms == 0 {
            return Err(
                "min_silence_ms must be positive, got 0: segments could never stay open \
                        across a silent frame"
                    .to_owned(),
            );
        }
        if self.pad_after_ms > self.min_silence_ms {
            return Err(format!(
                "pad_after_ms ({}) must not exceed min_silence_ms ({}): the post-pad is taken \
                 from the silence that closes a segment",
                self.pad_after_ms, self.min_silence_ms
            ));
        }
        let floor = u64::from(self.pad_before_ms)
            + u64::from(self.min_speech_ms)
            + u64::from(self.min_silence_ms);
        if u64::from(self.max_segment_ms) < floor {
            return Err(format!(
                "max_segment_ms ({}) must be at least pad_before_ms + min_speech_ms + \
                 min_silence_ms ({floor}), so that a segment is never split before it can \
                 be judged",
                self.max_segment_ms
            ));
        }
        if self.max_segment_ms > MAX_SEGMENT_LIMIT_MS {
            return Err(format!(
                "max_segment_ms ({}) must be at most {MAX_SEGMENT_LIMIT_MS}",
                self.max_segment_ms
            ));
        }
        Ok(())
    }
}

/// A closed stretch of speech with its padding.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    /// Position among the segments emitted by this segmenter: 0, 1, 2, ...
    pub index: u64,
    /// First sample, as an index into the 16 kHz stream.
    pub start: u64,
    /// One past the last sample.
    pub end: u64,
    /// The audio of `start..end`.
    pub samples: Vec<f32>,
    /// True when the segment was cut at `max_segment_ms`. Speech normally
    /// continues in the next segment, which then starts exactly at this `end`;
    /// if the cut fell in trailing silence and nothing but silence followed,
    /// that speechless remainder is dropped and no continuation comes.
    pub forced_split: bool,
    /// Where speech was first detected in this segment (without the pre-pad).
    pub speech_start: u64,
    /// Where the last speech frame of this segment ends (without the post-pad).
    pub speech_end: u64,
}

impl Segment {
    /// Start time in seconds.
    pub fn start_secs(&self) -> f64 {
        self.start as f64 / (SAMPLES_PER_MS * 1000) as f64
    }

    /// End time in seconds.
    pub fn end_secs(&self) -> f64 {
        self.end as f64 / (SAMPLES_PER_MS * 1000) as f64
    }
}

/// The segment being accumulated while in speech.
#[derive(Debug)]
struct Open {
    /// Stream index of `samples[0]`.
    start: u64,
    /// Audio from `start` to the current position.
    samples: Vec<f32>,
    /// Start of the first speech frame.
    speech_start: u64,
    /// End of the most recent speech frame.
    last_speech_end: u64,
    /// Samples of continuous silence since `last_speech_end`.
    silence_run: u64,
    /// True after a forced split: this part continues an accepted utterance,
    /// so it is not subject to `min_speech`.
    continuation: bool,
    /// A frame at or above `start_threshold` is in it (false only for a
    /// segment a hold opened before any speech).
    voiced: bool,
    /// The middle of the latest silence of at least [`HOLD_CUT_SILENCE_MS`],
    /// where a long held segment is best cut.
    pause_mid: Option<u64>,
}

/// Turns a stream of (frame, speech probability) pairs into [`Segment`]s.
///
/// Memory is bounded by the open segment (at most `max_segment_ms` plus one
/// frame) and a pre-roll ring of `pad_before_ms`, however long the stream.
#[derive(Debug)]
pub struct Segmenter {
    cfg: SegmenterConfig,
    min_speech: u64,
    min_silence: u64,
    pad_before: usize,
    pad_after: u64,
    max_segment: usize,
    /// Samples consumed so far.
    pos: u64,
    /// Index of the next emitted segment.
    next_index: u64,
    /// While idle: the most recent audio not in any segment, at most
    /// `pad_before` samples, ending at `pos`.
    preroll: VecDeque<f32>,
    open: Option<Open>,
    /// Push-to-talk: whether the open segment is held.
    hold: Hold,
    /// Marks for positions not reached yet, in order.
    marks: VecDeque<(u64, HoldMark)>,
}

impl Segmenter {
    /// Creates a segmenter at stream position 0.
    ///
    /// The configuration should have passed [`SegmenterConfig::validate`]; an
    /// invalid one never causes a panic, but its segments may not honour all
    /// the documented guarantees.
    pub fn new(cfg: SegmenterConfig) -> Self {
        let ms = |v: u32| u64::from(v) * SAMPLES_PER_MS;
        let pad_before = usize::try_from(ms(cfg.pad_before_ms)).unwrap_or(usize::MAX);
        Self {
            min_speech: ms(cfg.min_speech_ms),
            min_silence: ms(cfg.min_silence_ms),
            pad_before,
            // Clamped so that closing never needs audio that has not arrived.
            pad_after: ms(cfg.pad_after_ms).min(ms(cfg.min_silence_ms)),
            max_segment: usize::try_from(ms(cfg.max_segment_ms))
                .unwrap_or(usize::MAX)
                .max(1),
            pos: 0,
            next_index: 0,
            preroll: VecDeque::with_capacity(pad_before.min(1 << 20)),
            open: None,
            hold: Hold::Off,
            marks: VecDeque::new(),
            cfg,
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> &SegmenterConfig {
        &self.cfg
    }

    /// Feeds one frame (normally [`FRAME_SAMPLES`] samples) with its speech
    /// probability; returns the segments it closed, in order (usually none,
    /// at most a few when a frame both splits and closes).
    ///
    /// A NaN probability counts as silence.
    pub fn push(&mut self, frame: &[f32], prob: f32) -> Vec<Segment> {
        let mut out = Vec::new();
        if frame.is_empty() {
            return out;
        }
        self.apply_due_marks(&mut out);
        let frame_start = self.pos;
        self.pos += frame.len() as u64;
        let pos = self.pos;
        let cut_silence = HOLD_CUT_SILENCE_MS * SAMPLES_PER_MS;
        // Comparisons are written so that NaN is never speech.
        match &mut self.open {
            None => {
                if prob >= self.cfg.start_threshold {
                    let mut samples = Vec::with_capacity(self.preroll.len() + frame.len());
                    samples.extend(self.preroll.drain(..));
                    let start = frame_start - samples.len() as u64;
                    samples.extend_from_slice(frame);
                    self.open = Some(Open {
                        start,
                        samples,
                        speech_start: frame_start,
                        last_speech_end: pos,
                        silence_run: 0,
                        continuation: false,
                        voiced: true,
                        pause_mid: None,
                    });
                } else {
                    self.remember(frame);
                }
            }
            Some(open) if !open.voiced => {
                // Held open before any speech: speech starts at the first voiced frame.
                open.samples.extend_from_slice(frame);
                if prob >= self.cfg.start_threshold {
                    open.voiced = true;
                    open.speech_start = frame_start;
                    open.last_speech_end = pos;
                    open.silence_run = 0;
                } else {
                    open.silence_run += frame.len() as u64;
                }
            }
            Some(open) => {
                open.samples.extend_from_slice(frame);
                if prob >= self.cfg.stop_threshold {
                    open.last_speech_end = pos;
                    open.silence_run = 0;
                } else {
                    open.silence_run += frame.len() as u64;
                    if open.silence_run >= cut_silence {
                        open.pause_mid = Some(open.last_speech_end + open.silence_run / 2);
                    }
                }
            }
        }
        match self.hold {
            Hold::Off => {
                self.split_if_long(&mut out);
                if let Some(open) = &self.open {
                    if open.silence_run > 0 && open.silence_run >= self.min_silence {
                        self.close(&mut out);
                    }
                }
            }
            Hold::On => self.split_held(&mut out),
            Hold::Until(end) => {
                self.split_held(&mut out);
                if self.pos >= end {
                    self.close_held(end, &mut out);
                }
            }
        }
        out
    }

    /// Push-to-talk: applies `mark` at stream position `at` (now, if `at` has
    /// been reached, else when a frame starting at or after it is pushed);
    /// returns the segments that closed. Marks must come in position order.
    pub fn mark(&mut self, at: u64, mark: HoldMark) -> Vec<Segment> {
        let mut out = Vec::new();
        self.marks.push_back((at, mark));
        self.apply_due_marks(&mut out);
        out
    }

    /// Whether a hold is in force (a segment is kept open for push-to-talk).
    pub fn held(&self) -> bool {
        self.hold != Hold::Off
    }

    fn apply_due_marks(&mut self, out: &mut Vec<Segment>) {
        while let Some(&(at, mark)) = self.marks.front() {
            if at > self.pos {
                break;
            }
            self.marks.pop_front();
            match mark {
                HoldMark::Start => {
                    if self.open.is_none() {
                        let samples: Vec<f32> = self.preroll.drain(..).collect();
                        self.open = Some(Open {
                            start: self.pos - samples.len() as u64,
                            samples,
                            speech_start: self.pos,
                            last_speech_end: self.pos,
                            silence_run: 0,
                            continuation: false,
                            voiced: false,
                            pause_mid: None,
                        });
                    }
                    self.hold = Hold::On;
                }
                HoldMark::LetGo => {
                    self.hold = Hold::Off;
                    // Nothing said yet: back to idle, the audio held so far is pre-roll again.
                    if let Some(open) = self.open.take_if(|o| !o.voiced) {
                        self.remember(&open.samples);
                    }
                }
                HoldMark::Close { pad_ms } => {
                    if self.hold == Hold::Off {
                        continue;
                    }
                    let end = at + u64::from(pad_ms) * SAMPLES_PER_MS;
                    if self.pos >= end {
                        self.close_held(end, out);
                    } else {
                        self.hold = Hold::Until(end);
                    }
                }
            }
        }
    }

    /// Emits pieces of a held segment once it reaches [`HOLD_PIECE_MS`]: cut
    /// in its latest pause of [`HOLD_CUT_SILENCE_MS`] or more in the second
    /// half of the piece, else at the limit. The rest stays open and held.
    fn split_held(&mut self, out: &mut Vec<Segment>) {
        let max = u64::from(HOLD_PIECE_MS) * SAMPLES_PER_MS;
        loop {
            let Some(open) = self.open.as_mut() else {
                return;
            };
            if (open.samples.len() as u64) < max {
                return;
            }
            let start = open.start;
            let end = match open.pause_mid {
                Some(m) if m > start + max / 2 && m < start + max => m,
                _ => start + max,
            };
            let rest = open.samples.split_off((end - start) as usize);
            let part = std::mem::replace(&mut open.samples, rest);
            open.start = end;
            open.pause_mid = None;
            let voiced = open.voiced;
            let was_continuation = open.continuation;
            open.continuation = true;
            let speech = (open.speech_start.max(start), open.last_speech_end.min(end));
            if voiced || was_continuation {
                out.push(self.segment(start, end, part, true, speech));
            }
        }
    }

    /// Closes the held segment at `end` (at most the current position): all of
    /// its audio up to there is kept if any of it was speech; what follows
    /// `end` becomes pre-roll. The hold is over.
    fn close_held(&mut self, end: u64, out: &mut Vec<Segment>) {
        self.hold = Hold::Off;
        let Some(mut open) = self.open.take() else {
            return;
        };
        let end = end.min(self.pos).max(open.start);
        let len = usize::try_from(end - open.start)
            .unwrap_or(usize::MAX)
            .min(open.samples.len());
        let tail = open.samples.split_off(len);
        if (open.voiced || open.continuation) && end > open.start {
            self.remember(&tail);
            let speech = (
                open.speech_start.max(open.start),
                open.last_speech_end.min(end).max(open.start),
            );
            out.push(self.segment(open.start, end, open.samples, false, speech));
        } else {
            open.samples.extend(tail);
            self.remember(&open.samples);
        }
    }

    /// Ends the stream: closes the open segment, emitting it if it holds at
    /// least `min_speech_ms` of speech (or continues a split one).
    ///
    /// The post-pad is limited to the audio already received. The segmenter
    /// stays usable: later frames continue the same timeline.
    pub fn finish(&mut self) -> Vec<Segment> {
        let mut out = Vec::new();
        self.marks.clear();
        if self.hold != Hold::Off {
            // The stream ended while the key was held: keep everything heard.
            let end = match self.hold {
                Hold::Until(e) => e,
                _ => self.pos,
            };
            self.close_held(end, &mut out);
        }
        self.close(&mut out);
        out
    }

    /// True while a segment is open (speech started and has not yet closed).
    pub fn in_speech(&self) -> bool {
        self.open.is_some()
    }

    /// The open segment's audio so far, while one is open: `(start, speech_start, samples)`
    /// (what a crash would lose; the journal keeps it as a draft).
    pub fn open_audio(&self) -> Option<(u64, u64, &[f32])> {
        self.open
            .as_ref()
            .map(|o| (o.start, o.speech_start, o.samples.as_slice()))
    }

    /// Samples consumed so far, i.e. the stream index of the next sample.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Appends idle audio to the pre-roll ring, keeping only the newest `pad_before`.
    fn remember(&mut self, audio: &[f32]) {
        let keep = &audio[audio.len().saturating_sub(self.pad_before)..];
        let excess = (self.preroll.len() + keep.len()).saturating_sub(self.pad_before);
        self.preroll.drain(..excess.min(self.preroll.len()));
        self.preroll.extend(keep);
    }

    /// Emits `max_segment`-long parts while the open segment is that long; the
    /// rest stays open, starting exactly where the emitted part ends.
    fn split_if_long(&mut self, out: &mut Vec<Segment>) {
        let max = self.max_segment;
        while let Some(open) = self.open.as_mut() {
            if open.samples.len() < max {
                break;
            }
            let rest = open.samples.split_off(max);
            let part = std::mem::replace(&mut open.samples, rest);
            let start = open.start;
            let end = start + max as u64;
            open.start = end;
            open.continuation = true;
            // With a valid config a part always holds speech; the check only
            // keeps an invalid one from emitting pure padding.
            let has_speech = open.voiced && open.speech_start < end && open.last_speech_end > start;
            let speech = (open.speech_start.max(start), open.last_speech_end.min(end));
            if has_speech {
                out.push(self.segment(start, end, part, true, speech));
            }
        }
    }

    /// Closes the open segment (if any) at its last speech frame plus the
    /// post-pad, emits it if it qualifies, and hands the unused tail to the
    /// pre-roll ring.
    fn close(&mut self, out: &mut Vec<Segment>) {
        let Some(mut open) = self.open.take() else {
            return;
        };
        let end = (open.last_speech_end + self.pad_after)
            .min(self.pos)
            .max(open.start);
        let keep = if !open.voiced {
            false
        } else if open.continuation {
            open.last_speech_end > open.start
        } else {
            let speech = open
                .last_speech_end
                .saturating_sub(open.speech_start.max(open.start));
            speech >= self.min_speech
        };
        if keep && end > open.start {
            let len = usize::try_from(end - open.start)
                .unwrap_or(usize::MAX)
                .min(open.samples.len());
            let tail = open.samples.split_off(len);
            self.remember(&tail);
            let speech = (
                open.speech_start.max(open.start),
                open.last_speech_end.min(end),
            );
            out.push(self.segment(open.start, end, open.samples, false, speech));
        } else {
            // Dropped: its audio is still the most recent, so it is valid pre-roll.
            self.remember(&open.samples);
        }
    }

    /// Builds the next numbered segment.
    fn segment(
        &mut self,
        start: u64,
        end: u64,
        samples: Vec<f32>,
        forced_split: bool,
        (speech_start, speech_end): (u64, u64),
    ) -> Segment {
        let index = self.next_index;
        self.next_index += 1;
        Segment {
            index,
            start,
            end,
            samples,
            forced_split,
            speech_start,
            speech_end,
        }
    }

    /// Samples held in memory (open segment plus pre-roll), for the bounded-memory test.
    #[cfg(test)]
    fn buffered(&self) -> usize {
        self.preroll.len() + self.open.as_ref().map_or(0, |o| o.samples.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const F: u64 = FRAME_SAMPLES as u64;

    /// Runs probabilities through a segmenter with audio whose sample value
    /// is its own stream index, so positions can be checked from the samples.
    /// Returns the segments and, for each, the frame index whose push emitted it
    /// (`None` when emitted by `finish`).
    fn run(
        cfg: &SegmenterConfig,
        probs: &[f32],
        frame_len: usize,
    ) -> (Vec<Segment>, Vec<Option<usize>>) {
        let mut seg = Segmenter::new(cfg.clone());
        let mut out = Vec::new();
        let mut when = Vec::new();
        for (i, &p) in probs.iter().enumerate() {
            let start = i * frame_len;
            let frame: Vec<f32> = (start..start + frame_len).map(|x| x as f32).collect();
            for s in seg.push(&frame, p) {
                out.push(s);
                when.push(Some(i));
            }
        }
        for s in seg.finish() {
            out.push(s);
            when.push(None);
        }
        (out, when)
    }

    /// Builds a probability sequence from (probability, frame count) runs.
    fn probs(runs: &[(f32, usize)]) -> Vec<f32> {
        runs.iter()
            .flat_map(|&(p, n)| std::iter::repeat_n(p, n))
            .collect()
    }

    fn bounds(segs: &[Segment]) -> Vec<(u64, u64, bool)> {
        segs.iter()
            .map(|s| (s.start, s.end, s.forced_split))
            .collect()
    }

    #[test]
    fn default_config_is_valid() {
        assert_eq!(SegmenterConfig::default().validate(), Ok(()));
    }

    #[test]
    fn validate_names_the_bad_field() {
        let d = SegmenterConfig::default;
        let cases: Vec<(SegmenterConfig, &str)> = vec![
            (
                SegmenterConfig {
                    start_threshold: 0.0,
                    ..d()
                },
                "start_threshold",
            ),
            (
                SegmenterConfig {
                    start_threshold: f32::NAN,
                    ..d()
                },
                "start_threshold",
            ),
            (
                SegmenterConfig {
                    start_threshold: 1.5,
                    ..d()
                },
                "start_threshold",
            ),
            (
                SegmenterConfig {
                    stop_threshold: 0.6,
                    ..d()
                },
                "stop_threshold",
            ),
            (
                SegmenterConfig {
                    stop_threshold: -0.1,
                    ..d()
                },
                "stop_threshold",
            ),
            (
                SegmenterConfig {
                    min_silence_ms: 0,
                    pad_after_ms: 0,
                    ..d()
                },
                "min_silence_ms",
            ),
            (
                SegmenterConfig {
                    pad_after_ms: 600,
                    ..d()
                },
                "pad_after_ms",
            ),
            (
                SegmenterConfig {
                    max_segment_ms: 1000,
                    ..d()
                },
                "max_segment_ms",
            ),
            (
                SegmenterConfig {
                    max_segment_ms: 700_000,
                    ..d()
                },
                "max_segment_ms",
            ),
        ];
        for (cfg, field) in cases {
            let err = cfg.validate().unwrap_err();
            assert!(err.starts_with(field), "{cfg:?}: {err}");
        }
    }

    #[test]
    fn config_deserializes_with_defaults_for_missing_fields() {
        let cfg: SegmenterConfig = serde_json::from_str(r#"{"min_silence_ms": 700}"#).unwrap();
        assert_eq!(
            cfg,
            SegmenterConfig {
                min_silence_ms: 700,
                ..SegmenterConfig::default()
            }
        );
        let back: SegmenterConfig =
            serde_json::from_str(&serde_json::to_string(&cfg).unwrap()).unwrap();
        assert_eq!(back, cfg);
    }

    #[test]
    fn single_burst_has_exact_boundaries_and_closes_on_time() {
        let cfg = SegmenterConfig::default();
        // Speech in frames 10..30; min_silence 500 ms = 8000 samples = 16 frames
        // (15.6 rounded up), so frame 30 + 15 = 45 closes it.
        let p = probs(&[(0.0, 10), (0.9, 20), (0.0, 30)]);
        let (segs, when) = run(&cfg, &p, FRAME_SAMPLES);
        assert_eq!(bounds(&segs), vec![(10 * F - 4800, 30 * F + 4800, false)]);
        assert_eq!(when, vec![Some(45)]);
        let s = &segs[0];
        assert_eq!(s.index, 0);
        assert_eq!(s.samples.len() as u64, s.end - s.start);
        assert_eq!(s.samples[0], s.start as f32);
    }

    /// A scenario: name, config, probabilities, expected (start, end, forced_split).
    type Case = (
        &'static str,
        SegmenterConfig,
        Vec<f32>,
        Vec<(u64, u64, bool)>,
    );

    #[test]
    fn table_of_scenarios() {
        let d = SegmenterConfig::default();
        let cases: Vec<Case> = vec![
            (
                "short blip dropped (7 frames = 224 ms < 250 ms)",
                d.clone(),
                probs(&[(0.0, 20), (0.9, 7), (0.0, 40)]),
                vec![],
            ),
            (
                "8 frames = 256 ms is kept",
                d.clone(),
                probs(&[(0.0, 20), (0.9, 8), (0.0, 40)]),
                vec![(20 * F - 4800, 28 * F + 4800, false)],
            ),
            (
                "gap shorter than min_silence merges two bursts",
                d.clone(),
                probs(&[(0.0, 20), (0.9, 10), (0.0, 15), (0.9, 10), (0.0, 40)]),
                vec![(20 * F - 4800, 55 * F + 4800, false)],
            ),
            (
                "gap of min_silence splits two bursts",
                d.clone(),
                probs(&[(0.0, 20), (0.9, 10), (0.0, 16), (0.9, 10), (0.0, 40)]),
                vec![
                    (20 * F - 4800, 30 * F + 4800, false),
                    // The second pre-pad is clamped to the end of the first segment.
                    (30 * F + 4800, 56 * F + 4800, false),
                ],
            ),
            (
                "hysteresis: 0.4 keeps speech going",
                d.clone(),
                probs(&[(0.0, 20), (0.9, 10), (0.4, 30), (0.0, 40)]),
                vec![(20 * F - 4800, 60 * F + 4800, false)],
            ),
            (
                "hysteresis: 0.4 does not start speech",
                d.clone(),
                probs(&[(0.0, 5), (0.4, 60), (0.0, 5)]),
                vec![],
            ),
            (
                "exactly start_threshold starts, exactly stop_threshold continues",
                d.clone(),
                probs(&[(0.0, 20), (0.5, 1), (0.35, 9), (0.0, 40)]),
                vec![(20 * F - 4800, 30 * F + 4800, false)],
            ),
            (
                "pre-pad clamped at stream start",
                d.clone(),
                probs(&[(0.0, 2), (0.9, 10), (0.0, 40)]),
                vec![(0, 12 * F + 4800, false)],
            ),
            (
                "finish closes an open segment, post-pad limited to the stream",
                d.clone(),
                probs(&[(0.0, 20), (0.9, 10), (0.0, 3)]),
                vec![(20 * F - 4800, 33 * F, false)],
            ),
            (
                "finish drops an open burst shorter than min_speech",
                d.clone(),
                probs(&[(0.0, 20), (0.9, 5)]),
                vec![],
            ),
            (
                "NaN probability is silence",
                d.clone(),
                probs(&[(0.0, 20), (0.9, 10), (f32::NAN, 40)]),
                vec![(20 * F - 4800, 30 * F + 4800, false)],
            ),
            (
                "max length split: contiguous parts, continuation without pre-pad",
                SegmenterConfig {
                    max_segment_ms: 2000,
                    ..d.clone()
                },
                probs(&[(0.0, 20), (0.9, 150), (0.0, 40)]),
                vec![
                    (20 * F - 4800, 20 * F - 4800 + 32_000, true),
                    (20 * F - 4800 + 32_000, 20 * F - 4800 + 64_000, true),
                    (20 * F - 4800 + 64_000, 170 * F + 4800, false),
                ],
            ),
            (
                "split in trailing silence: the speechless rest is dropped",
                SegmenterConfig {
                    max_segment_ms: 2000,
                    pad_before_ms: 0,
                    ..d.clone()
                },
                probs(&[(0.9, 60), (0.0, 40)]),
                vec![(0, 32_000, true)],
            ),
            (
                "short continuation after a split is still emitted",
                SegmenterConfig {
                    max_segment_ms: 2000,
                    pad_before_ms: 0,
                    ..d.clone()
                },
                probs(&[(0.9, 63), (0.0, 40)]),
                vec![(0, 32_000, true), (32_000, 63 * F + 4800, false)],
            ),
        ];
        for (name, cfg, p, expected) in cases {
            cfg.validate().unwrap();
            let (segs, _) = run(&cfg, &p, FRAME_SAMPLES);
            assert_eq!(bounds(&segs), expected, "{name}");
            for (i, s) in segs.iter().enumerate() {
                assert_eq!(s.index, i as u64, "{name}");
                assert_eq!(s.samples.len() as u64, s.end - s.start, "{name}");
                for (k, &v) in s.samples.iter().enumerate() {
                    assert_eq!(v, (s.start + k as u64) as f32, "{name}");
                }
            }
        }
    }

    #[test]
    fn in_speech_and_position_track_state() {
        let mut seg = Segmenter::new(SegmenterConfig::default());
        let frame = [0.0f32; FRAME_SAMPLES];
        assert!(!seg.in_speech());
        seg.push(&frame, 0.1);
        assert_eq!(seg.position(), F);
        seg.push(&frame, 0.9);
        assert!(seg.in_speech());
        for _ in 0..20 {
            seg.push(&frame, 0.9);
        }
        let mut closed = Vec::new();
        while seg.in_speech() {
            closed.extend(seg.push(&frame, 0.0));
        }
        assert_eq!(closed.len(), 1);
        assert!(seg.finish().is_empty());
        assert!(seg.push(&[], 0.9).is_empty());
        assert!(!seg.in_speech());
    }

    #[test]
    fn memory_is_bounded_on_long_streams() {
        let cfg = SegmenterConfig::default();
        let max = (cfg.max_segment_ms as usize + cfg.pad_before_ms as usize) * 16 + FRAME_SAMPLES;
        let mut seg = Segmenter::new(cfg);
        let frame = [0.1f32; FRAME_SAMPLES];
        // 10 minutes alternating 40 s of speech and 10 s of silence.
        let mut emitted = 0;
        for i in 0..18_750 {
            let p = if i % 1_562 < 1_250 { 0.9 } else { 0.0 };
            emitted += seg.push(&frame, p).len();
            assert!(seg.buffered() <= max);
        }
        assert!(emitted >= 24);
    }

    /// Random configurations that pass validation, with small durations so
    /// that short sequences exercise every transition.
    fn config_strategy() -> impl Strategy<Value = SegmenterConfig> {
        (
            0.3f32..=1.0,
            0.0f32..=1.0,
            0u32..400,
            1u32..800,
            0u32..500,
            0.0f64..=1.0,
            0u32..1500,
        )
            .prop_map(
                |(start, stop_frac, min_speech, min_silence, pad_before, pad_after_frac, extra)| {
                    SegmenterConfig {
                        start_threshold: start,
                        stop_threshold: start * stop_frac,
                        min_speech_ms: min_speech,
                        min_silence_ms: min_silence,
                        pad_before_ms: pad_before,
                        pad_after_ms: (f64::from(min_silence) * pad_after_frac) as u32,
                        max_segment_ms: pad_before + min_speech + min_silence + extra,
                    }
                },
            )
    }

    fn probs_strategy() -> impl Strategy<Value = Vec<f32>> {
        prop::collection::vec(
            (
                prop::sample::select(vec![0.0f32, 0.2, 0.35, 0.45, 0.5, 0.7, 1.0, f32::NAN]),
                1usize..25,
            ),
            0..40,
        )
        .prop_map(|runs| {
            runs.into_iter()
                .flat_map(|(p, n)| std::iter::repeat_n(p, n))
                .collect()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 200,
            // Keep failures in the output rather than in files next to the crate.
            failure_persistence: None,
            ..ProptestConfig::default()
        })]
        #[test]
        fn segments_are_well_formed(
            cfg in config_strategy(),
            p in probs_strategy(),
            frame_len in prop::sample::select(vec![FRAME_SAMPLES, 160, 1000]),
        ) {
            prop_assert_eq!(cfg.validate(), Ok(()));
            let (segs, _) = run(&cfg, &p, frame_len);
            let total = (p.len() * frame_len) as u64;
            let max = u64::from(cfg.max_segment_ms) * 16;
            let mut prev_end = 0;
            for (i, s) in segs.iter().enumerate() {
                prop_assert_eq!(s.index, i as u64);
                prop_assert!(s.start < s.end && s.end <= total);
                prop_assert!(s.start >= prev_end, "overlap: {} < {}", s.start, prev_end);
                prop_assert_eq!(s.samples.len() as u64, s.end - s.start);
                if s.forced_split {
                    prop_assert_eq!(s.end - s.start, max);
                } else {
                    prop_assert!(s.end - s.start <= max);
                }
                // A continuation normally starts exactly at its predecessor's
                // end (checked in the table tests); it may start later only when
                // the split fell in trailing silence and the speechless rest was
                // dropped, which the coverage check below keeps honest.
                for (k, &v) in s.samples.iter().enumerate() {
                    prop_assert_eq!(v, (s.start + k as u64) as f32);
                }
                prev_end = s.end;
            }
            // No speech is lost: every frame of a contiguous run at or above
            // start_threshold that is at least min_speech long lies in a segment.
            let min_speech = u64::from(cfg.min_speech_ms) * 16;
            let starts = |x: f32| x >= cfg.start_threshold; // false for NaN
            let mut i = 0;
            while i < p.len() {
                if starts(p[i]) {
                    let j = (i..p.len()).find(|&j| !starts(p[j])).unwrap_or(p.len());
                    let (a, b) = ((i * frame_len) as u64, (j * frame_len) as u64);
                    if b - a >= min_speech {
                        for x in (a..b).step_by(frame_len.max(1)) {
                            prop_assert!(
                                segs.iter().any(|s| s.start <= x && x < s.end),
                                "speech sample {} not covered", x
                            );
                        }
                    }
                    i = j;
                } else {
                    i += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod hold_tests {
    use super::*;

    const F: usize = FRAME_SAMPLES;

    /// What happens at a frame index: a probability, and optionally a mark
    /// applied just before that frame.
    struct Script {
        probs: Vec<f32>,
        marks: Vec<(usize, HoldMark)>,
    }

    fn runs(runs: &[(f32, usize)]) -> Vec<f32> {
        runs.iter()
            .flat_map(|&(p, n)| std::iter::repeat_n(p, n))
            .collect()
    }

    /// Runs the script with audio whose sample values are their stream indices.
    fn play(cfg: SegmenterConfig, s: &Script) -> Vec<Segment> {
        let mut seg = Segmenter::new(cfg);
        let mut out = Vec::new();
        for (i, &p) in s.probs.iter().enumerate() {
            for &(at, m) in s.marks.iter().filter(|(at, _)| *at == i) {
                out.extend(seg.mark((at * F) as u64, m));
            }
            let frame: Vec<f32> = (i * F..(i + 1) * F).map(|x| x as f32).collect();
            out.extend(seg.push(&frame, p));
        }
        out.extend(seg.finish());
        for s in &out {
            for (k, &v) in s.samples.iter().enumerate() {
                assert_eq!(v, (s.start + k as u64) as f32, "segment {}", s.index);
            }
        }
        out
    }

    fn bounds(segs: &[Segment]) -> Vec<(u64, u64, bool)> {
        segs.iter()
            .map(|s| (s.start, s.end, s.forced_split))
            .collect()
    }

    /// Two bursts of speech 1.3 s apart (frames 20-49 and 90-119).
    fn two_bursts() -> Vec<f32> {
        runs(&[(0.0, 20), (0.9, 30), (0.0, 40), (0.9, 30), (0.0, 60)])
    }

    #[test]
    fn a_hold_keeps_pauses_inside_and_closes_at_release_plus_pad() {
        let cfg = SegmenterConfig::default();
        let pre = u64::from(cfg.pad_before_ms) * 16;
        // Without a hold the pause splits the speech in two.
        let free = play(
            cfg.clone(),
            &Script {
                probs: two_bursts(),
                marks: vec![],
            },
        );
        assert_eq!(free.len(), 2, "{:?}", bounds(&free));
        // Held from frame 10 to frame 120 (speech ends at 120: the release comes
        // with the last word), with 500 ms of padding.
        let held = play(
            cfg,
            &Script {
                probs: two_bursts(),
                marks: vec![
                    (10, HoldMark::Start),
                    (120, HoldMark::Close { pad_ms: 500 }),
                ],
            },
        );
        assert_eq!(
            bounds(&held),
            vec![((10 * F) as u64 - pre, (120 * F + 500 * 16) as u64, false)]
        );
    }

    #[test]
    fn release_padding_is_kept_even_past_min_silence() {
        // pad 800 ms > min_silence 500 ms: silence after the release does not close it early.
        let held = play(
            SegmenterConfig::default(),
            &Script {
                probs: runs(&[(0.9, 30), (0.0, 100)]),
                marks: vec![(0, HoldMark::Start), (30, HoldMark::Close { pad_ms: 800 })],
            },
        );
        assert_eq!(bounds(&held), vec![(0, (30 * F + 800 * 16) as u64, false)]);
    }

    #[test]
    fn a_tap_lets_the_vad_decide_again() {
        let cfg = SegmenterConfig::default();
        // A tap before the speech: the segments are those the VAD finds alone.
        let free = play(
            cfg.clone(),
            &Script {
                probs: two_bursts(),
                marks: vec![],
            },
        );
        let tapped = play(
            cfg.clone(),
            &Script {
                probs: two_bursts(),
                marks: vec![(5, HoldMark::Start), (10, HoldMark::LetGo)],
            },
        );
        assert_eq!(bounds(&tapped), bounds(&free));
        // A tap in silence, nothing said: nothing.
        let silent = play(
            cfg,
            &Script {
                probs: runs(&[(0.0, 100)]),
                marks: vec![(5, HoldMark::Start), (10, HoldMark::LetGo)],
            },
        );
        assert!(silent.is_empty(), "{:?}", bounds(&silent));
    }

    #[test]
    fn a_hold_over_silence_gives_nothing() {
        let held = play(
            SegmenterConfig::default(),
            &Script {
                probs: runs(&[(0.1, 200)]),
                marks: vec![(5, HoldMark::Start), (150, HoldMark::Close { pad_ms: 500 })],
            },
        );
        assert!(held.is_empty(), "{:?}", bounds(&held));
    }

    #[test]
    fn a_late_release_mark_cuts_at_its_own_position() {
        // The release mark arrives when the segmenter is already 2 s past it.
        let cfg = SegmenterConfig::default();
        let mut seg = Segmenter::new(cfg);
        let mut out = seg.mark(0, HoldMark::Start);
        let probs = runs(&[(0.9, 40), (0.0, 100)]);
        for (i, &p) in probs.iter().enumerate() {
            let frame: Vec<f32> = (i * F..(i + 1) * F).map(|x| x as f32).collect();
            out.extend(seg.push(&frame, p));
        }
        assert!(out.is_empty(), "closed while held");
        out.extend(seg.mark((40 * F) as u64, HoldMark::Close { pad_ms: 500 }));
        assert_eq!(bounds(&out), vec![(0, (40 * F + 8000) as u64, false)]);
        assert!(!seg.held());
        // The audio after the cut is pre-roll for what comes next, not lost.
        assert_eq!(seg.preroll.len(), 300 * 16);
    }

    #[test]
    fn a_mark_ahead_of_the_audio_waits_for_it() {
        let mut seg = Segmenter::new(SegmenterConfig::default());
        assert!(seg.mark((10 * F) as u64, HoldMark::Start).is_empty());
        assert!(!seg.held());
        let mut out = Vec::new();
        for i in 0..200 {
            let frame: Vec<f32> = (i * F..(i + 1) * F).map(|x| x as f32).collect();
            let p = if (20..40).contains(&i) || (100..120).contains(&i) {
                0.9
            } else {
                0.0
            };
            if i == 11 {
                assert!(seg.held());
                out.extend(seg.mark((120 * F) as u64, HoldMark::Close { pad_ms: 500 }));
            }
            out.extend(seg.push(&frame, p));
        }
        assert_eq!(
            bounds(&out),
            vec![((10 * F - 4800) as u64, (120 * F + 8000) as u64, false)]
        );
    }

    #[test]
    fn a_hold_of_five_minutes_is_transcribed_whole_in_pieces_cut_in_pauses() {
        // 5 minutes: 6.4 s of speech, 0.48 s of pause, over and over.
        let cycle = runs(&[(0.9, 200), (0.0, 15)]);
        let frames = 5 * 60 * 16_000 / F;
        let probs: Vec<f32> = cycle.iter().copied().cycle().take(frames).collect();
        let release = frames - 1;
        let segs = play(
            SegmenterConfig::default(),
            &Script {
                probs: probs.clone(),
                marks: vec![
                    (0, HoldMark::Start),
                    (release, HoldMark::Close { pad_ms: 500 }),
                ],
            },
        );
        assert!(segs.len() >= 4, "{:?}", bounds(&segs));
        // Contiguous from the press to the end of the stream (the pad runs past it).
        assert_eq!(segs[0].start, 0);
        for w in segs.windows(2) {
            assert_eq!(w[0].end, w[1].start, "{:?}", bounds(&segs));
        }
        assert_eq!(segs.last().map(|s| s.end), Some((frames * F) as u64));
        let limit = u64::from(HOLD_PIECE_MS) * 16;
        for s in &segs[..segs.len() - 1] {
            assert!(s.end - s.start <= limit, "{:?}", bounds(&segs));
            // Each cut lies in a pause, not in a word.
            let frame = (s.end as usize) / F;
            assert_eq!(probs[frame], 0.0, "cut at {} is in speech", s.end);
        }
    }

    #[test]
    fn a_hold_without_pauses_is_cut_at_the_piece_limit_and_nothing_is_lost() {
        let frames = 200 * 16_000 / F;
        let segs = play(
            SegmenterConfig::default(),
            &Script {
                probs: vec![0.9; frames],
                marks: vec![(0, HoldMark::Start)],
            },
        );
        let limit = u64::from(HOLD_PIECE_MS) * 16;
        assert_eq!(
            bounds(&segs),
            vec![
                (0, limit, true),
                (limit, 2 * limit, true),
                (2 * limit, (frames * F) as u64, false)
            ]
        );
    }

    #[test]
    fn the_stream_ending_during_a_hold_keeps_everything() {
        let segs = play(
            SegmenterConfig::default(),
            &Script {
                probs: runs(&[(0.0, 10), (0.9, 20), (0.0, 50)]),
                marks: vec![(0, HoldMark::Start)],
            },
        );
        assert_eq!(bounds(&segs), vec![(0, (80 * F) as u64, false)]);
    }
}
