//! Context windows: a segment longer than the model's context is transcribed as windows whose
//! texts are merged, with no word lost or repeated at the joins.
//!
//! [`Windowed`] wraps any [`SpeechModel`], so the worker loop does not change. The supervisor
//! steps the context down (10 → 5 → 3 s) under GPU memory pressure: a shorter window needs less
//! encoder and decoder memory, and Moonshine also stays clear of the length (~30 s) past which it
//! starts inventing text.
//!
//! A model hears a word badly when a window's edge cuts through speech near it (a fragment, or
//! too little sound on one side), and a short window now and then goes wrong as a whole (a
//! loop, an invented phrase). An edge in a pause costs nothing. So:
//!
//! * [`plan`] first cuts the segment in its pauses (at least [`MIN_PAUSE_S`] of quiet): the cuts
//!   that leave the least audio in pieces longer than the context, then the fewest. The windows
//!   either side of such a cut follow each other, each taking in as much of the pause as the
//!   context allows. A piece of continuous speech still longer than the context is covered by
//!   overlapping windows sharing about `overlap_s` (2 s by default, at most two thirds of the
//!   context), each edge at the quietest point near it: with a 3 s context every moment is
//!   heard by about three windows, one of them at least 1 s from its edges.
//! * [`merge`] joins the window texts. Across a pause it concatenates. Across an overlap it
//!   aligns the next window's words with the words heard there so far (compared lowercased,
//!   without punctuation, the parts of a hyphenated word apart, a cut word matching its whole
//!   form) and lets the windows vote, as ROVER does: each counts for the word it heard at a
//!   position, or for none, with a weight that grows from one half at an edge cutting speech to
//!   one at 1 s from it, and each position keeps its most heard word if that beats none. Two
//!   windows that agree outvote one, however well placed. A window the decoder looped in is
//!   left out where others cover it and otherwise believed up to its loop; one that heard other
//!   words than everyone else at the same moments, or more words than anyone says, counts a
//!   quarter. Each word's time is estimated from its position in its window's text, spread over
//!   the window's speech.
//!
//! Measured on the ten arrangements of the LibriVox recording (`tests/window.rs`): base-en
//! hears 1.4 % of words wrong with a 10 s or 5 s context and 1.7 % with 3 s, at about 1.4 and
//! 2.7 times the decoding work of 10 s.

use std::ops::Range;

use swictation_proto::ComponentPlacement;

use crate::model::{InferenceError, SpeechModel, Transcription};

/// Samples per second of the audio every [`SpeechModel`] takes.
pub const SAMPLE_RATE: usize = 16_000;
/// The context the worker uses unless told otherwise, seconds.
pub const DEFAULT_CONTEXT_S: f32 = 10.0;
/// How much overlapping windows share by default, seconds: every word is then at least 1 s
/// from the cut edges of some window.
pub const DEFAULT_OVERLAP_S: f32 = 2.0;
/// ... and at least this much, seconds: a word cut by one edge is then whole in the next.
const MIN_OVERLAP_S: f32 = 0.5;
/// Overlapping windows share at most this share of the context (so they advance by at least a
/// third of it).
const MAX_OVERLAP_SHARE: f32 = 2.0 / 3.0;
/// Shorter contexts are raised to this: below it a window holds barely a word or two.
pub const MIN_CONTEXT_S: f32 = 2.0;
/// The shortest run of quiet that counts as a pause to cut at, seconds: well past the closure
/// of a stop consonant and the breath between words (a cut at 0.2 s cost words on LibriVox),
/// within the pauses between phrases.
pub const MIN_PAUSE_S: f32 = 0.3;
/// A frame is quiet when it is below this share of the way from the segment's quiet level
/// (10th percentile) to its loud level (90th), in decibels.
const QUIET_SHARE: f64 = 0.25;
/// ... and only when those levels are at least this far apart (dB): a segment without clear
/// silence has no pauses to trust.
const MIN_DYNAMIC_RANGE_DB: f64 = 12.0;
/// A pause is only cut at with at least this much audio on either side, seconds.
const MIN_PIECE_S: f32 = 0.3;
/// An overlapping window's edge moves at most this far to sit at the quietest point, seconds.
const EDGE_SEARCH_S: f32 = 0.25;
/// Energy frame: 30 ms.
const FRAME: usize = SAMPLE_RATE * 30 / 1000;
/// Energy frames every 10 ms.
const HOP: usize = SAMPLE_RATE / 100;
/// How far outside two windows' overlap the words compared for the join are taken from,
/// seconds: word times are estimated from their position in the text, not measured.
const SLACK_S: f32 = 0.5;
/// Words matched across two windows must have estimated times at most this far apart: a
/// phrase said twice, seconds apart, is not an overlap.
const MAX_GAP_S: f32 = 1.5;
/// ... and when only one word matches, at most this far: one common word ("he", "the")
/// matches by chance.
const MAX_GAP_ONE_S: f32 = 0.75;
/// A window that comes back empty though it holds at least this much speech (seconds) is
/// transcribed again in halves.
const MIN_SPEECH_TO_RETRY_S: f32 = 0.5;
/// More words than this per second of a window is the decoder looping (fast speech is about 4).
const MAX_WORDS_PER_S: f32 = 5.0;
/// A window that seems to loop, or disagrees with all the windows it overlaps, counts this much
/// less than its edges alone would say.
const LOOP_DISCOUNT: f32 = 0.25;
/// A word heard this far (seconds) from every edge of its window that cuts speech counts fully.
const FULL_TRUST_S: f32 = 1.0;
/// A word heard right at such an edge counts this much: two windows that heard a moment near
/// their edges and agree outvote one that heard it in its middle.
const EDGE_VOTE: f32 = 0.5;
/// Shortest prefix that counts as the same word.
const MIN_PREFIX: usize = 4;

/// A [`SpeechModel`] that transcribes segments longer than `context_s` seconds as windows and
/// merges their texts. A context of 0 (or less) turns windowing off.
pub struct Windowed<M: SpeechModel> {
    inner: M,
    context_s: f32,
    overlap_s: f32,
}

impl<M: SpeechModel> Windowed<M> {
    /// Wrap `inner` with windows of at most `context_s` seconds (0 = no windowing), overlapping
    /// ones sharing [`DEFAULT_OVERLAP_S`].
    pub fn new(inner: M, context_s: f32) -> Self {
        Self::with_overlap(inner, context_s, DEFAULT_OVERLAP_S)
    }

    /// Wrap `inner` with windows of at most `context_s` seconds, overlapping ones sharing about
    /// `overlap_s` (at least 0.5 s, at most two thirds of the context).
    pub fn with_overlap(inner: M, context_s: f32, overlap_s: f32) -> Self {
        Self {
            inner,
            context_s,
            overlap_s,
        }
    }

    /// The longest window, seconds; 0 when windowing is off.
    pub fn context_s(&self) -> f32 {
        if self.context_s > 0.0 {
            self.context_s.max(MIN_CONTEXT_S)
        } else {
            0.0
        }
    }

    /// The wrapped model.
    pub fn inner(&self) -> &M {
        &self.inner
    }

    /// The wrapped model, mutably.
    pub fn inner_mut(&mut self) -> &mut M {
        &mut self.inner
    }

    /// Unwrap the model.
    pub fn into_inner(self) -> M {
        self.inner
    }

    /// Transcribe each window of `samples` on its own (see [`plan`]): the texts, ready for
    /// [`merge`], and the tokens decoded in all.
    pub fn transcribe_windows(
        &mut self,
        samples: &[f32],
    ) -> Result<(Vec<WindowText>, u32), InferenceError> {
        let voiced = voiced_frames(&frame_energies(samples));
        self.transcribe_planned(
            samples,
            plan(samples, self.context_s, self.overlap_s),
            &voiced,
        )
    }

    /// Transcribe each of `windows` (in order) of `samples`, with `voiced` the speech frames of
    /// the whole of `samples`.
    fn transcribe_planned(
        &mut self,
        samples: &[f32],
        windows: Vec<Window>,
        voiced: &[f32],
    ) -> Result<(Vec<WindowText>, u32), InferenceError> {
        let mut texts = Vec::with_capacity(windows.len());
        let mut tokens = 0u32;
        for window in windows {
            let range = window.range.clone();
            let (start_s, end_s) = (seconds(range.start), seconds(range.end));
            let in_window: Vec<f32> = voiced
                .iter()
                .copied()
                .filter(|&t| t >= start_s && t < end_s)
                .collect();
            let out = self.inner.transcribe(&samples[range.clone()])?;
            tokens = tokens.saturating_add(out.tokens);
            let mut text = out.text;
            // Moonshine now and then ends a window at once though it holds speech (seen on
            // conversational audio: 8.7 s of talk, no text). Hear such a window again in two
            // overlapping halves rather than lose it.
            let speech_s = in_window.len() as f32 * HOP as f32 / SAMPLE_RATE as f32;
            if text.trim().is_empty()
                && speech_s >= MIN_SPEECH_TO_RETRY_S
                && range.len() >= 2 * to_samples(MIN_CONTEXT_S)
            {
                let whole = &samples[range.clone()];
                let halves = overlapping(
                    &frame_energies(whole),
                    0..whole.len(),
                    to_samples(seconds(range.len()) * 0.6),
                    to_samples(self.overlap_s.min(seconds(range.len()) * 0.2)),
                    (window.cut_start, window.cut_end),
                )
                .into_iter()
                .map(|w| Window {
                    range: range.start + w.range.start..range.start + w.range.end,
                    ..w
                })
                .collect();
                let (parts, more) = self.transcribe_planned(samples, halves, voiced)?;
                tokens = tokens.saturating_add(more);
                text = merge(&parts);
            }
            texts.push(WindowText {
                text,
                start_s,
                end_s,
                voiced: in_window,
                cut_start: window.cut_start,
                cut_end: window.cut_end,
            });
        }
        Ok((texts, tokens))
    }
}

impl<M: SpeechModel> SpeechModel for Windowed<M> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn placement(&self) -> Vec<ComponentPlacement> {
        self.inner.placement()
    }

    fn transcribe(&mut self, samples: &[f32]) -> Result<Transcription, InferenceError> {
        let windows = plan(samples, self.context_s, self.overlap_s);
        if windows.len() <= 1 {
            return self.inner.transcribe(samples);
        }
        let voiced = voiced_frames(&frame_energies(samples));
        let (texts, tokens) = self.transcribe_planned(samples, windows, &voiced)?;
        Ok(Transcription {
            text: merge(&texts),
            tokens,
        })
    }
}

fn seconds(samples: usize) -> f32 {
    samples as f32 / SAMPLE_RATE as f32
}

fn to_samples(seconds: f32) -> usize {
    (seconds * SAMPLE_RATE as f32).round() as usize
}

/// The centre sample of energy frame `i`.
fn frame_centre(i: usize) -> usize {
    i * HOP + FRAME / 2
}

/// The 10th and 90th percentile of the frames' energies in decibels; `None` without a finite
/// frame.
fn levels_db(energy: &[f64]) -> Option<(f64, f64)> {
    let mut db: Vec<f64> = energy
        .iter()
        .filter(|e| e.is_finite())
        .map(|&e| 10.0 * e.max(1e-12).log10())
        .collect();
    if db.is_empty() {
        return None;
    }
    db.sort_by(f64::total_cmp);
    let at = |q: f64| db[((db.len() - 1) as f64 * q) as usize];
    Some((at(0.1), at(0.9)))
}

/// The centres (seconds) of the 10 ms frames that sound like speech rather than the pauses
/// between it: louder than halfway (in decibels) between the quiet (10th percentile) and loud
/// (90th) frames.
fn voiced_frames(energy: &[f64]) -> Vec<f32> {
    let Some((quiet, loud)) = levels_db(energy) else {
        return Vec::new();
    };
    let threshold = 10f64.powf((quiet + loud) / 20.0).max(1e-10);
    energy
        .iter()
        .enumerate()
        .filter(|(_, &e)| e >= threshold)
        .map(|(i, _)| seconds(frame_centre(i)))
        .collect()
}

/// The pauses inside a segment: runs of quiet frames at least [`MIN_PAUSE_S`] long that touch
/// neither end, each as the samples from its first quiet frame's centre to its last's, in
/// order.
fn pauses(energy: &[f64], n: usize) -> Vec<Range<usize>> {
    let Some((quiet, loud)) = levels_db(energy) else {
        return Vec::new();
    };
    if loud - quiet < MIN_DYNAMIC_RANGE_DB {
        return Vec::new();
    }
    let threshold = 10f64.powf((quiet + QUIET_SHARE * (loud - quiet)) / 10.0);
    let min_frames = (MIN_PAUSE_S * 100.0).round() as usize;
    let mut out = Vec::new();
    let mut run_start = None;
    for i in 0..=energy.len() {
        let is_quiet = energy.get(i).is_some_and(|&e| e < threshold);
        match (is_quiet, run_start) {
            (true, None) => run_start = Some(i),
            (false, Some(a)) => {
                run_start = None;
                let b = i; // frames a..b are quiet
                if a == 0 || b == energy.len() || b - a < min_frames {
                    continue;
                }
                let pause = frame_centre(a)..frame_centre(b - 1);
                let centre = (pause.start + pause.end) / 2;
                if centre < to_samples(MIN_PIECE_S) || centre + to_samples(MIN_PIECE_S) > n {
                    continue;
                }
                out.push(pause);
            }
            _ => {}
        }
    }
    out
}

/// One window of a [`plan`]: where it lies in the segment, and whether each of its edges cuts
/// through speech (rather than lying in a pause or at the segment's end).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// The samples of the segment the window holds.
    pub range: Range<usize>,
    /// The window starts inside speech: its first words may be fragments.
    pub cut_start: bool,
    /// The window ends inside speech: its last words may be fragments.
    pub cut_end: bool,
}

/// Plan the windows of a segment, in order, the first starting at 0 and the last ending at the
/// end, each at most `context_s` seconds (raised to [`MIN_CONTEXT_S`]). One window (the whole
/// segment) when it fits the context or `context_s` is not positive.
///
/// The segment is first cut at pauses: the fewest cuts that leave the least audio in pieces
/// longer than the context, preferring longer pauses. Windows either side of such a cut follow
/// each other. A piece still longer than the context is covered by windows as even as the
/// context allows, consecutive ones sharing `overlap_s` (at most two thirds of the context),
/// each internal edge moved up to [`EDGE_SEARCH_S`] to the quietest 30 ms.
pub fn plan(samples: &[f32], context_s: f32, overlap_s: f32) -> Vec<Window> {
    let n = samples.len();
    let whole = vec![Window {
        range: 0..n,
        cut_start: false,
        cut_end: false,
    }];
    if !context_s.is_finite() || context_s <= 0.0 {
        return whole;
    }
    let context_s = context_s.max(MIN_CONTEXT_S);
    let ctx = to_samples(context_s);
    if n <= ctx {
        return whole;
    }
    let overlap_s = if overlap_s.is_finite() {
        overlap_s
    } else {
        DEFAULT_OVERLAP_S
    };
    let ov = to_samples(overlap_s.clamp(MIN_OVERLAP_S, context_s * MAX_OVERLAP_SHARE));
    let energy = frame_energies(samples);
    let mut windows = Vec::new();
    for (core, room) in pieces(&pauses(&energy, n), n, ctx) {
        if core.len() <= ctx {
            // Give the window as much of the pauses either side as the context allows, so the
            // model hears silence before and after the words, not a cut.
            let spare = ctx - core.len();
            let before = (core.start - room.start).min(spare / 2);
            let after = (room.end - core.end).min(spare - before);
            let before = (core.start - room.start).min(spare - after);
            windows.push(Window {
                range: core.start - before..core.end + after,
                cut_start: false,
                cut_end: false,
            });
        } else {
            windows.extend(overlapping(&energy, room, ctx, ov, (false, false)));
        }
    }
    windows
}

/// The ranges of [`plan`]'s windows.
pub fn split(samples: &[f32], context_s: f32, overlap_s: f32) -> Vec<Range<usize>> {
    plan(samples, context_s, overlap_s)
        .into_iter()
        .map(|w| w.range)
        .collect()
}

/// Cut `0..n` in the middle of some of `pauses`: first the least audio left in pieces longer
/// than `ctx`, then the fewest pieces, then the longest pauses. Each piece comes with the room
/// it may grow into: up to the far side of the pauses it was cut at.
fn pieces(pauses: &[Range<usize>], n: usize, ctx: usize) -> Vec<(Range<usize>, Range<usize>)> {
    // Cut points: the start, the middle of each pause, the end. best[j]: the cheapest cut of
    // 0..point j ending with a cut at j, as (over-length, pieces, -pause length) compared in
    // that order, and the cut before it.
    let points: Vec<Range<usize>> = std::iter::once(0..0)
        .chain(pauses.iter().cloned())
        .chain(std::iter::once(n..n))
        .collect();
    let middle = |p: &Range<usize>| (p.start + p.end) / 2;
    let mut best: Vec<((usize, usize, i64), usize)> = vec![((0, 0, 0), 0); points.len()];
    for j in 1..points.len() {
        let mut choice: Option<((usize, usize, i64), usize)> = None;
        for i in 0..j {
            let len = middle(&points[j]) - middle(&points[i]);
            let ((over, count, pause), _) = best[i];
            let cost = (
                over + len.saturating_sub(ctx),
                count + 1,
                pause - points[j].len() as i64,
            );
            if choice.is_none_or(|(c, _)| cost < c) {
                choice = Some((cost, i));
            }
        }
        best[j] = choice.expect("j > 0 has a predecessor");
    }
    let mut cuts = vec![points.len() - 1];
    while let Some(&j) = cuts.last() {
        if j == 0 {
            break;
        }
        cuts.push(best[j].1);
    }
    cuts.reverse();
    cuts.windows(2)
        .map(|p| {
            let (a, b) = (&points[p[0]], &points[p[1]]);
            (middle(a)..middle(b), a.start..b.end)
        })
        .collect()
}

/// Cover `piece` with windows of at most `ctx` samples, as even as possible, consecutive ones
/// sharing about `ov` samples; the piece's own edges are cut or not as `edges` says, the ones
/// inside it always cut speech.
fn overlapping(
    energy: &[f64],
    piece: Range<usize>,
    ctx: usize,
    ov: usize,
    edges: (bool, bool),
) -> Vec<Window> {
    let len = piece.len();
    let ov = ov.min(ctx * 2 / 3);
    if len <= ctx || ctx <= ov {
        return vec![Window {
            range: piece,
            cut_start: edges.0,
            cut_end: edges.1,
        }];
    }
    // k windows of length w, each `w - ov` after the last: k·w − (k−1)·ov = len.
    let k = (len - ov).div_ceil(ctx - ov).max(2);
    let w = (len + (k - 1) * ov).div_ceil(k).min(ctx);
    let step = (len - w) as f64 / (k - 1) as f64;
    // Moving a start later and the previous end earlier must leave the windows overlapping.
    let search = to_samples(EDGE_SEARCH_S).min(ov / 4);
    let nominal = |i: usize| piece.start + (i as f64 * step).round() as usize;
    let starts: Vec<usize> = (0..k)
        .map(|i| {
            if i == 0 {
                piece.start
            } else {
                let at = nominal(i);
                // The last window still ends at the piece's end.
                let lo = if i == k - 1 {
                    (at - search.min(at)).max(piece.end.saturating_sub(ctx))
                } else {
                    at - search.min(at)
                };
                quietest(energy, lo, (at + search).max(lo), at.max(lo))
            }
        })
        .collect();
    (0..k)
        .map(|i| {
            let start = starts[i];
            let end = if i == k - 1 {
                piece.end
            } else {
                let at = nominal(i) + w;
                let hi = (at + search).min(start + ctx).min(piece.end);
                quietest(energy, at.saturating_sub(search).min(hi), hi, at.min(hi))
            };
            Window {
                range: start..end.max(start + 1),
                cut_start: if i == 0 { edges.0 } else { true },
                cut_end: if i == k - 1 { edges.1 } else { true },
            }
        })
        .collect()
}

/// Mean square of each 30 ms frame, one every 10 ms (frame `i` covers `i*HOP..i*HOP+FRAME`).
/// Non-finite samples count as silence: they are a caller bug, but must not panic here.
fn frame_energies(samples: &[f32]) -> Vec<f64> {
    let mut prefix = Vec::with_capacity(samples.len() + 1);
    let mut sum = 0.0f64;
    prefix.push(0.0);
    for &s in samples {
        if s.is_finite() {
            sum += f64::from(s) * f64::from(s);
        }
        prefix.push(sum);
    }
    (0..samples.len().div_ceil(HOP))
        .map(|i| {
            let (a, b) = (i * HOP, (i * HOP + FRAME).min(samples.len()));
            (prefix[b] - prefix[a]) / (b - a).max(1) as f64
        })
        .collect()
}

/// The sample at the centre of the quietest 30 ms frame centred within `lo..=hi`; of equally
/// quiet frames, the one nearest `prefer`. `prefer` itself when the span holds no frame.
fn quietest(energy: &[f64], lo: usize, hi: usize, prefer: usize) -> usize {
    let mut best: Option<(f64, usize, usize)> = None; // (energy, distance, sample)
    for (i, &e) in energy.iter().enumerate() {
        let at = frame_centre(i);
        if at < lo || at > hi {
            continue;
        }
        let distance = at.abs_diff(prefer);
        let better = match best {
            None => true,
            Some((be, bd, _)) => e < be || (e == be && distance < bd),
        };
        if better {
            best = Some((e, distance, at));
        }
    }
    best.map_or(prefer, |(_, _, at)| at)
}

/// The text of one window and where the window lies in the segment.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowText {
    /// What the model heard in the window.
    pub text: String,
    /// Where the window starts in the segment, seconds.
    pub start_s: f32,
    /// Where the window ends in the segment, seconds.
    pub end_s: f32,
    /// The times (seconds, in order) of the window's 10 ms frames that hold speech, to place
    /// its words in time; empty: spread them evenly over the window.
    pub voiced: Vec<f32>,
    /// The window starts inside speech (see [`Window::cut_start`]).
    pub cut_start: bool,
    /// The window ends inside speech (see [`Window::cut_end`]).
    pub cut_end: bool,
}

impl WindowText {
    /// A window's text and span, both edges cutting speech.
    pub fn new(text: impl Into<String>, start_s: f32, end_s: f32) -> Self {
        Self {
            text: text.into(),
            start_s,
            end_s,
            voiced: Vec::new(),
            cut_start: true,
            cut_end: true,
        }
    }

    /// How much the window's word for the moment `t` (seconds in the segment) counts, from
    /// [`EDGE_VOTE`] right at an edge that cuts speech up to 1 at [`FULL_TRUST_S`] from it or
    /// more; `None` outside the window.
    fn trust(&self, t: f32) -> Option<f32> {
        if t < self.start_s || t > self.end_s {
            return None;
        }
        let from_start = if self.cut_start {
            t - self.start_s
        } else {
            f32::INFINITY
        };
        let from_end = if self.cut_end {
            self.end_s - t
        } else {
            f32::INFINITY
        };
        let d = from_start.min(from_end).clamp(0.0, FULL_TRUST_S);
        Some(EDGE_VOTE + (1.0 - EDGE_VOTE) * d / FULL_TRUST_S)
    }
}

/// One word of a window's text with its estimated time in the segment and how well its window
/// heard that moment.
#[derive(Debug, Clone)]
struct Word<'a> {
    raw: &'a str,
    norm: String,
    time: f32,
    trust: f32,
    /// Which window (by index) and which of its words this is.
    source: (usize, usize),
    /// The word went on after a hyphen in the window's text ("cold-" of "cold-hearted"): the
    /// parts of a hyphenated word are compared on their own and joined again when kept together.
    hyphen_after: bool,
}

/// A word as compared across windows: lowercase letters and digits only.
pub fn normalise(word: &str) -> String {
    word.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

/// The words of a window's text, each timed by where its middle falls in the text (by
/// characters) spread over the window's speech (or the whole window when that is not known).
fn timed_words(k: usize, w: &WindowText) -> Vec<Word<'_>> {
    let (keep, weight) = match decoded(&w.text, w.end_s - w.start_s) {
        Decoded::Heard => (usize::MAX, 1.0),
        Decoded::Loop { keep } => (keep, 1.0),
        Decoded::TooMany => (usize::MAX, LOOP_DISCOUNT),
    };
    let kept: Vec<&str> = w.text.split_whitespace().take(keep).collect();
    let base = w.text.as_ptr() as usize;
    let total = kept
        .last()
        .map_or(1, |last| last.as_ptr() as usize - base + last.len())
        .max(1) as f32;
    let span = (w.end_s - w.start_s).max(0.0);
    // The parts of hyphenated words, each with whether a hyphen follows it in its word.
    let parts = kept.into_iter().flat_map(|word| {
        let pieces: Vec<&str> = word
            .split('-')
            .filter(|p| !normalise(p).is_empty())
            .collect();
        let pieces = if pieces.is_empty() {
            vec![word]
        } else {
            pieces
        };
        let last = pieces.len() - 1;
        pieces
            .into_iter()
            .enumerate()
            .map(move |(i, p)| (p, i < last))
    });
    parts
        .enumerate()
        .map(|(i, (raw, hyphen_after))| {
            let offset = raw.as_ptr() as usize - base;
            let middle = offset as f32 + raw.len() as f32 / 2.0;
            let fraction = (middle / total).min(1.0);
            let time = if w.voiced.is_empty() {
                w.start_s + span * fraction
            } else {
                let i = (fraction * w.voiced.len() as f32) as usize;
                w.voiced[i.min(w.voiced.len() - 1)]
            };
            Word {
                raw,
                norm: normalise(raw),
                time,
                trust: w.trust(time).unwrap_or(0.0) * weight,
                source: (k, i),
                hyphen_after,
            }
        })
        .collect()
}

/// What a window's text looks like as decoder output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded {
    /// Words as heard.
    Heard,
    /// The decoder went round in a loop after its first `keep` words: a run of words said
    /// again and again straight after itself through to the end ("is to be able to selfish, is
    /// to be able to selfish, is to be able to self"; a run of three words or more twice, two
    /// words three times, one word four), as a decoder does until its token limit stops it.
    /// Speech that repeats itself goes on to other words ("did it? did it? did it? I didn't
    /// even check"), and "no, no, no" or "I mean, I mean it" is not a loop.
    Loop {
        /// How many words came before the loop's first repeat.
        keep: usize,
    },
    /// More words than anyone says in that time: looping without a clean repeat.
    TooMany,
}

/// How a window's `text`, heard in `seconds` of audio, looks as decoder output.
pub fn decoded(text: &str, seconds: f32) -> Decoded {
    let words: Vec<String> = text.split_whitespace().map(normalise).collect();
    let spoken = words.iter().filter(|w| !w.is_empty()).count();
    let n = words.len();
    // From word `i` on, the text only says words[i..i + len] again and again to its end (the
    // last copy may stop short, its last word cut off).
    let runs_out = |i: usize, len: usize| {
        (i..n).all(|t| {
            let want = &words[i + (t - i) % len];
            &words[t] == want || (t == n - 1 && !words[t].is_empty() && want.starts_with(&words[t]))
        })
    };
    // One word needs four sayings ("leisurely, leisurely, leisurely, leisurely"), two words
    // three, a longer run two ("John Dashwood had then leisure to convince John Dashwood had
    // then leisure to convince").
    let sayings = |len: usize| match len {
        1 => 4,
        2 => 3,
        _ => 2,
    };
    let repeat = (0..n).find_map(|i| {
        (1..=(n - i) / 2)
            .filter(|&len| n - i >= len * sayings(len))
            .find(|&len| words[i..i + len].iter().all(|w| !w.is_empty()) && runs_out(i, len))
            .map(|len| i + len)
    });
    match repeat {
        Some(keep) => Decoded::Loop { keep },
        None if spoken as f32 > MAX_WORDS_PER_S * seconds.max(0.0) + 2.0 => Decoded::TooMany,
        None => Decoded::Heard,
    }
}

/// Two words the same for joining: equal once normalised (and not punctuation alone), or one
/// a prefix of the other of at least [`MIN_PREFIX`] letters ("leisure" heard as "leisured"
/// where a window cut it).
fn same(a: &Word<'_>, b: &Word<'_>) -> bool {
    let (x, y) = (&a.norm, &b.norm);
    if x.is_empty() || y.is_empty() {
        return false;
    }
    let (short, long) = if x.len() <= y.len() { (x, y) } else { (y, x) };
    short == long || (short.chars().count() >= MIN_PREFIX && long.starts_with(short.as_str()))
}

/// How a slot and a word compare.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Pair {
    /// The slot holds the word, heard this far apart (seconds).
    Same(f32),
    /// A different word.
    Other,
}

/// One column of the alignment of the slots so far (`a`) with the next window's words (`b`).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Column {
    /// A slot and a word: the same word (`true`), or where the two disagree.
    Both(usize, usize, bool),
    /// A slot the next window put no word in.
    OnlyA(usize),
    /// A word of the next window in no slot so far.
    OnlyB(usize),
}

/// Align the next window's words `b` with the tail `a` of the slots so far: a word-level edit
/// alignment of a stretch of each. Before the stretch and after it (past the end of the slots
/// or of the words) slots and words may be left out, for free where `free_a` / `free_b` say so
/// (heard before the window began, or after the text so far ended), else at a cost.
/// `pair(i, j)` says how slot `i` and word `j` compare. Returns where the stretch begins in
/// `a`, its columns, and where it ends in `a` and in `b`.
fn align(
    free_a: &[bool],
    free_b: &[bool],
    pair: impl Fn(usize, usize) -> Pair,
) -> (usize, Vec<Column>, usize, usize) {
    const GAP: f32 = -1.0;
    let (m, k) = (free_a.len(), free_b.len());
    // A match scores 2, less up to a quarter for the time between the two: of two copies of a
    // word, the one heard at the same moment is the same word.
    let gain = |i: usize, j: usize| match pair(i, j) {
        Pair::Same(apart) => (2.0 - 0.5 * (apart / MAX_GAP_S).min(1.0), true),
        Pair::Other => (-1.0, false),
    };
    // Leaving out what the other side should have heard costs half a gap: the times that say
    // so are only estimates.
    let left_out = |free: bool| if free { 0.0 } else { GAP / 2.0 };
    let mut score = vec![vec![0f32; k + 1]; m + 1];
    for (j, cell) in score[0].iter_mut().enumerate() {
        *cell = GAP * j as f32;
    }
    for i in 1..=m {
        // Slots before the stretch.
        score[i][0] = score[i - 1][0] + left_out(free_a[i - 1]);
        for j in 1..=k {
            let diagonal = score[i - 1][j - 1] + gain(i - 1, j - 1).0;
            score[i][j] = diagonal
                .max(score[i - 1][j] + GAP)
                .max(score[i][j - 1] + GAP);
        }
    }
    // Where the stretch ends: at the end of the slots (the rest of the words left out) or of
    // the words (the rest of the slots left out), where it scores best; of equals, the one that
    // compares the most.
    let rest_b = |j: usize| free_b[j..].iter().map(|&f| left_out(f)).sum::<f32>();
    let rest_a = |i: usize| free_a[i..].iter().map(|&f| left_out(f)).sum::<f32>();
    let ends = (0..=k)
        .map(|j| ((m, j), score[m][j] + rest_b(j)))
        .chain((0..m).map(|i| ((i, k), score[i][k] + rest_a(i))));
    let ((mut i, mut j), _) = ends
        .fold(
            None,
            |best: Option<((usize, usize), f32)>, (at, s)| match best {
                Some((b, bs)) if bs > s || (bs == s && b.0 + b.1 >= at.0 + at.1) => Some((b, bs)),
                _ => Some((at, s)),
            },
        )
        .unwrap_or(((m, 0), 0.0));
    let end = (i, j);
    let mut columns = Vec::new();
    while j > 0 {
        let here = score[i][j];
        if i > 0 {
            let (g, matched) = gain(i - 1, j - 1);
            if here == score[i - 1][j - 1] + g {
                columns.push(Column::Both(i - 1, j - 1, matched));
                i -= 1;
                j -= 1;
                continue;
            }
            if here == score[i - 1][j] + GAP {
                columns.push(Column::OnlyA(i - 1));
                i -= 1;
                continue;
            }
        }
        columns.push(Column::OnlyB(j - 1));
        j -= 1;
    }
    columns.reverse();
    (i, columns, end.0, end.1)
}

/// One word position of the merged text: the words windows heard there, each with the votes
/// (summed trust) of the windows that heard it, and the votes of windows that heard nothing
/// there.
#[derive(Debug)]
struct Slot<'a> {
    /// Each alternative as its best-trusted spelling, with its votes.
    words: Vec<Alternative<'a>>,
    none: f32,
}

/// One word heard at a position, by one window or more.
#[derive(Debug)]
struct Alternative<'a> {
    /// As spelt by the window that heard it best.
    word: Word<'a>,
    votes: f32,
    /// Every window's word that said it (see [`Word::source`]).
    sources: Vec<(usize, usize)>,
}

impl<'a> Alternative<'a> {
    fn new(word: Word<'a>) -> Self {
        Self {
            votes: word.trust,
            sources: vec![word.source],
            word,
        }
    }
}

impl<'a> Slot<'a> {
    fn new(word: Word<'a>, none: f32) -> Self {
        Self {
            words: vec![Alternative::new(word)],
            none,
        }
    }

    /// The time of the slot's leading alternative.
    fn time(&self) -> f32 {
        self.leader().map_or(0.0, |a| a.word.time)
    }

    /// The alternative with the most votes.
    fn leader(&self) -> Option<&Alternative<'a>> {
        self.words.iter().max_by(|a, b| a.votes.total_cmp(&b.votes))
    }

    /// How `word` compares with the slot: one of its alternatives heard at about the same time,
    /// or not.
    fn pair(&self, word: &Word<'_>) -> Pair {
        self.words
            .iter()
            .filter(|a| same(&a.word, word))
            .map(|a| (a.word.time - word.time).abs())
            .filter(|&apart| apart <= MAX_GAP_S)
            .min_by(f32::total_cmp)
            .map_or(Pair::Other, Pair::Same)
    }

    /// Count the vote (times `weight`) of a window that put no word here, if it heard the
    /// moment at all.
    fn unheard_by(mut self, w: &WindowText, weight: f32) -> Self {
        self.none += w.trust(self.time()).unwrap_or(0.0) * weight;
        self
    }

    /// Take out an alternative reading (not the leading one) that is `word`, heard about when
    /// it was: a word the alignment put in this slot though it belongs beside it.
    fn take_stray(&mut self, word: &Word<'_>) -> Option<Alternative<'a>> {
        if self.words.len() < 2 {
            return None;
        }
        let leader = self
            .words
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.votes.total_cmp(&b.1.votes))
            .map(|(i, _)| i)?;
        let at = self.words.iter().enumerate().position(|(i, a)| {
            i != leader && same(&a.word, word) && (a.word.time - word.time).abs() <= MAX_GAP_ONE_S
        })?;
        Some(self.words.remove(at))
    }

    /// Add an alternative's votes and sources to this slot's reading of the same word.
    fn absorb(&mut self, other: Alternative<'a>) {
        if let Some(a) = self.words.iter_mut().find(|a| same(&a.word, &other.word)) {
            a.votes += other.votes;
            a.sources.extend(other.sources);
            if other.word.trust > a.word.trust {
                a.word = other.word;
            }
        } else {
            self.words.push(other);
        }
    }

    /// Count a window's vote for `word` in this slot.
    fn vote(&mut self, word: Word<'a>) {
        self.absorb(Alternative::new(word));
    }
}

/// Two runs of slots, each in time order, as one in time order (`a`'s first where equal).
fn interleave<'a>(a: Vec<Slot<'a>>, b: Vec<Slot<'a>>) -> Vec<Slot<'a>> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let mut b = b.into_iter().peekable();
    for slot in a {
        while let Some(earlier) = b.next_if(|x| x.time() < slot.time()) {
            out.push(earlier);
        }
        out.push(slot);
    }
    out.extend(b);
    out
}

/// Whether `windows` together cover `start..end` (seconds) with no gap.
fn covers<'a>(windows: impl Iterator<Item = &'a WindowText>, start: f32, end: f32) -> bool {
    let mut spans: Vec<(f32, f32)> = windows
        .map(|w| (w.start_s, w.end_s))
        .filter(|&(a, b)| b > start && a < end)
        .collect();
    spans.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut reached = start;
    for (a, b) in spans {
        if a > reached + 1e-3 {
            return false;
        }
        reached = reached.max(b);
    }
    reached >= end - 1e-3
}

/// Merge the texts of consecutive windows (in order) into one text. Windows that follow each
/// other (joined in a pause, or not overlapping) are concatenated. Where one overlaps the text
/// so far, its words are aligned with the words already heard there (see [`align`]); each
/// window votes, with its trust in that moment, for the word it heard at each position or for
/// none, and each position keeps the word with the most votes, if that beats none. Empty
/// window texts are skipped.
pub fn merge(windows: &[WindowText]) -> String {
    let mut slots: Vec<Slot<'_>> = Vec::new();
    // The windows merged so far with the weight of their votes, to ask how well they heard a
    // moment.
    let mut heard: Vec<(usize, &WindowText, f32)> = Vec::new();
    let loops: Vec<bool> = windows
        .iter()
        .map(|w| decoded(&w.text, w.end_s - w.start_s) != Decoded::Heard)
        .collect();
    for (k, w) in windows.iter().enumerate() {
        // A window that loops is not heard at all where the others cover its span.
        let others = windows
            .iter()
            .enumerate()
            .filter(|&(i, o)| i != k && !loops[i] && !o.text.trim().is_empty())
            .map(|(_, o)| o);
        if loops[k] && covers(others, w.start_s, w.end_s) {
            continue;
        }
        let next = timed_words(k, w);
        if next.is_empty() {
            continue;
        }
        let so_far_end = heard
            .iter()
            .map(|(_, h, _)| h.end_s)
            .fold(f32::NEG_INFINITY, f32::max);
        // Joined in a pause (each side ends in silence) or not overlapping at all.
        let follows = heard
            .last()
            .is_some_and(|(_, h, _)| !h.cut_end && !w.cut_start)
            || w.start_s >= so_far_end - 1e-3;
        let weight = if slots.is_empty() || follows {
            slots.extend(next.into_iter().map(|x| Slot::new(x, 0.0)));
            1.0
        } else {
            overlap(&mut slots, &heard, w, next, so_far_end)
        };
        heard.push((k, w, weight));
    }
    spell(&slots)
}

/// The votes for no word at `t` of the windows heard so far (but those in `except`).
fn none_before(heard: &[(usize, &WindowText, f32)], t: f32, except: &[usize]) -> f32 {
    heard
        .iter()
        .filter(|(i, _, _)| !except.contains(i))
        .filter_map(|(_, h, weight)| h.trust(t).map(|x| x * weight))
        .sum::<f32>()
}

/// Window `w`'s words (`next`) merged into `slots` where `w` overlaps the text so far (which
/// ends at `so_far_end`): aligned with the words already heard there, each side voting. Returns
/// the weight of `w`'s votes (less than 1 when it is the odd one out).
fn overlap<'a>(
    slots: &mut Vec<Slot<'a>>,
    heard: &[(usize, &'a WindowText, f32)],
    w: &'a WindowText,
    next: Vec<Word<'a>>,
    so_far_end: f32,
) -> f32 {
    let tail_from = slots
        .iter()
        .position(|x| x.time() >= w.start_s - SLACK_S)
        .unwrap_or(slots.len());
    // The window's words heard before the text so far ends, give or take.
    let head_to = next
        .iter()
        .position(|x| x.time > so_far_end + SLACK_S)
        .unwrap_or(next.len());
    let tail = slots.split_off(tail_from);
    let free_a: Vec<bool> = tail
        .iter()
        .map(|x| x.time() < w.start_s || x.time() > w.end_s)
        .collect();
    let free_b: Vec<bool> = next.iter().map(|x| x.time > so_far_end).collect();
    let (skipped, columns, tail_end, words_end) =
        align(&free_a, &free_b, |i, j| tail[i].pair(&next[j]));
    let matched: Vec<f32> = columns
        .iter()
        .filter_map(|c| match *c {
            Column::Both(i, j, true) => Some((tail[i].time() - next[j].time).abs()),
            _ => None,
        })
        .collect();
    let chance = matched.len() == 1 && matched[0] > MAX_GAP_ONE_S;
    let disputed = next[..head_to]
        .iter()
        .filter(|x| tail.iter().any(|s| (s.time() - x.time).abs() <= SLACK_S))
        .count();
    let mut words: Vec<Option<Word<'_>>> = next.into_iter().map(Some).collect();
    if matched.is_empty() || chance {
        // Nothing shared: the window's words take their places by time, and it votes for
        // no word at every position it heard otherwise. Where it heard other words at the
        // same moments as the windows before (which agree among themselves), it is the odd
        // one out: its votes count less.
        let weight = if disputed >= 2 { LOOP_DISCOUNT } else { 1.0 };
        let tail = tail
            .into_iter()
            .map(|slot| slot.unheard_by(w, weight))
            .collect();
        let new: Vec<Slot<'_>> = words
            .into_iter()
            .flatten()
            .map(|mut x| {
                x.trust *= weight;
                let none = none_before(heard, x.time, &[]);
                Slot::new(x, none)
            })
            .collect();
        slots.extend(interleave(tail, new));
        return weight;
    }
    // The slots before the stretch, the stretch column by column, then the slots or the
    // words after it. Slots and words outside the alignment are still voted on: the other
    // side may have heard that moment and said nothing there.
    let mut tail: Vec<Option<Slot<'_>>> = tail.into_iter().map(Some).collect();
    for slot in tail[..skipped].iter_mut().filter_map(Option::take) {
        slots.push(slot.unheard_by(w, 1.0));
    }
    let rest = (tail_end..tail.len())
        .map(Column::OnlyA)
        .chain((words_end..words.len()).map(Column::OnlyB));
    for column in columns.into_iter().chain(rest) {
        match column {
            Column::Both(i, j, _) => {
                if let (Some(mut slot), Some(x)) = (tail[i].take(), words[j].take()) {
                    slot.vote(x);
                    slots.push(slot);
                }
            }
            Column::OnlyA(i) => {
                if let Some(slot) = tail[i].take() {
                    slots.push(slot.unheard_by(w, 1.0));
                }
            }
            Column::OnlyB(j) => {
                if let Some(x) = words[j].take() {
                    // A word an earlier window heard here but put one place back, as
                    // another reading of the word before (it lost a word there), moves
                    // here with its votes: that window heard it, not nothing.
                    let stray = slots.last_mut().and_then(|before| before.take_stray(&x));
                    let from: Vec<usize> = stray
                        .as_ref()
                        .map(|a| a.sources.iter().map(|s| s.0).collect())
                        .unwrap_or_default();
                    let none = none_before(heard, x.time, &from);
                    let mut slot = Slot::new(x, none);
                    if let Some(a) = stray {
                        slot.absorb(a);
                    }
                    slots.push(slot);
                }
            }
        }
    }
    1.0
}

/// The text the slots vote for.
fn spell(slots: &[Slot<'_>]) -> String {
    // Each position keeps its most heard word if more windows heard it than heard nothing
    // there (a plurality vote, as in ROVER).
    let kept: Vec<&Alternative<'_>> = slots
        .iter()
        .filter_map(|slot| slot.leader().filter(|a| a.votes > slot.none))
        .collect();
    let mut text = String::new();
    for (i, now) in kept.iter().enumerate() {
        if i > 0 {
            // The rest of a hyphenated word, if the window that spelt the part before heard it
            // so too.
            let before = &kept[i - 1].word;
            let rest = (before.source.0, before.source.1 + 1);
            let hyphen = before.hyphen_after && now.sources.contains(&rest);
            text.push(if hyphen { '-' } else { ' ' });
        }
        text.push_str(now.word.raw);
    }
    text
}
