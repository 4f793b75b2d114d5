//! Context windows: a segment longer than the model's context is transcribed as overlapping
//! windows whose texts are merged, with no word lost or repeated at the joins.
//!
//! [`Windowed`] wraps any [`SpeechModel`], so the worker loop does not change. The supervisor
//! steps the context down (10 → 5 → 3 s) under GPU memory pressure: a shorter window needs less
//! encoder and decoder memory, and Moonshine also stays clear of the length (~30 s) past which it
//! starts inventing text.
//!
//! * [`split`] plans the windows: as even as the context allows, each cut at the quietest 30 ms
//!   near the window's edge (so words are not cut), consecutive windows overlapping by about
//!   `overlap_s`.
//! * [`merge`] joins the window texts: the longest word-level run shared by the tail of the text
//!   so far and the head of the next window (compared lowercased, without punctuation, one
//!   differing word tolerated) is where they are joined, in the middle of the run; when no word
//!   is shared, the join falls back to time, each word's time estimated from its position in
//!   its window's text.

use std::ops::Range;

use swictation_proto::ComponentPlacement;

use crate::model::{InferenceError, SpeechModel, Transcription};

/// Samples per second of the audio every [`SpeechModel`] takes.
pub const SAMPLE_RATE: usize = 16_000;
/// The context the worker uses unless told otherwise, seconds.
pub const DEFAULT_CONTEXT_S: f32 = 10.0;
/// How much consecutive windows share by default, seconds.
pub const DEFAULT_OVERLAP_S: f32 = 1.5;
/// Shorter contexts are raised to this: below it a window holds barely a word or two.
pub const MIN_CONTEXT_S: f32 = 2.0;
/// The quiet point ending a window is searched for over at most this long before its edge.
const SEARCH_S: f32 = 1.0;
/// ... but at most this share of the context.
const SEARCH_SHARE: f32 = 0.35;
/// Energy frame: 30 ms.
const FRAME: usize = SAMPLE_RATE * 30 / 1000;
/// Energy frames every 10 ms.
const HOP: usize = SAMPLE_RATE / 100;
/// How far outside the windows' overlap a join is still looked for, seconds: word times are
/// estimated from their position in the text, not measured.
const SLACK_S: f32 = 1.0;
/// Words matched across two windows must have estimated times at most this far apart: a
/// phrase said twice, seconds apart, is not an overlap.
const MAX_GAP_S: f32 = 1.5;
/// ... and a single word at most this far: one common word ("he", "the") matches by chance.
const MAX_GAP_ONE_S: f32 = 0.75;
/// A window that comes back empty though it holds at least this much speech (seconds) is
/// transcribed again in halves.
const MIN_SPEECH_TO_RETRY_S: f32 = 0.5;
/// Shortest prefix that counts as the same word.
const MIN_PREFIX: usize = 4;

/// A [`SpeechModel`] that transcribes segments longer than `context_s` seconds as overlapping
/// windows and merges their texts. A context of 0 (or less) turns windowing off.
pub struct Windowed<M: SpeechModel> {
    inner: M,
    context_s: f32,
    overlap_s: f32,
}

impl<M: SpeechModel> Windowed<M> {
    /// Wrap `inner` with windows of at most `context_s` seconds (0 = no windowing) overlapping
    /// by [`DEFAULT_OVERLAP_S`].
    pub fn new(inner: M, context_s: f32) -> Self {
        Self::with_overlap(inner, context_s, DEFAULT_OVERLAP_S)
    }

    /// Wrap `inner` with windows of at most `context_s` seconds overlapping by about
    /// `overlap_s` (at most half the context).
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

    /// Transcribe each window of `samples` on its own (see [`split`]): the texts, ready for
    /// [`merge`], and the tokens decoded in all.
    pub fn transcribe_windows(
        &mut self,
        samples: &[f32],
    ) -> Result<(Vec<WindowText>, u32), InferenceError> {
        let voiced = voiced_frames(&frame_energies(samples));
        self.transcribe_ranges(
            samples,
            split(samples, self.context_s, self.overlap_s),
            &voiced,
        )
    }

    /// Transcribe each of `ranges` (in order) of `samples`, with `voiced` the speech frames of
    /// the whole of `samples`.
    fn transcribe_ranges(
        &mut self,
        samples: &[f32],
        ranges: Vec<Range<usize>>,
        voiced: &[f32],
    ) -> Result<(Vec<WindowText>, u32), InferenceError> {
        let mut texts = Vec::with_capacity(ranges.len());
        let mut tokens = 0u32;
        for range in ranges {
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
                let halves = split(
                    &samples[range.clone()],
                    seconds(range.len()) * 0.6,
                    self.overlap_s,
                )
                .into_iter()
                .map(|r| range.start + r.start..range.start + r.end)
                .collect();
                let (parts, more) = self.transcribe_ranges(samples, halves, voiced)?;
                tokens = tokens.saturating_add(more);
                text = merge(&parts);
            }
            texts.push(WindowText {
                text,
                start_s,
                end_s,
                voiced: in_window,
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
        if split(samples, self.context_s, self.overlap_s).len() <= 1 {
            return self.inner.transcribe(samples);
        }
        let (texts, tokens) = self.transcribe_windows(samples)?;
        Ok(Transcription {
            text: merge(&texts),
            tokens,
        })
    }
}

fn seconds(samples: usize) -> f32 {
    samples as f32 / SAMPLE_RATE as f32
}

/// The centres (seconds) of the 10 ms frames that sound like speech rather than the pauses
/// between it: louder than the geometric mean of the quiet (10th percentile) and loud (90th)
/// frames, i.e. halfway between them in decibels.
fn voiced_frames(energy: &[f64]) -> Vec<f32> {
    let mut sorted: Vec<f64> = energy.iter().copied().filter(|e| e.is_finite()).collect();
    if sorted.is_empty() {
        return Vec::new();
    }
    sorted.sort_by(f64::total_cmp);
    let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q) as usize];
    let threshold = (at(0.1) * at(0.9)).sqrt().max(1e-10);
    energy
        .iter()
        .enumerate()
        .filter(|(_, &e)| e >= threshold)
        .map(|(i, _)| seconds(i * HOP + FRAME / 2))
        .collect()
}

fn to_samples(seconds: f32) -> usize {
    (seconds * SAMPLE_RATE as f32).round() as usize
}

/// Plan the windows of a segment: ranges of `samples`, in order, each at most `context_s`
/// seconds (raised to [`MIN_CONTEXT_S`]), consecutive ones overlapping by about `overlap_s`
/// (between half of it and it plus half the search span; at most half the context), the
/// first starting at 0 and the last ending at the end. One range (the whole segment) when it
/// fits the context or `context_s` is not positive.
pub fn split(samples: &[f32], context_s: f32, overlap_s: f32) -> Vec<Range<usize>> {
    let n = samples.len();
    let whole = std::iter::once(0..n).collect();
    if context_s.is_nan() || context_s <= 0.0 || !context_s.is_finite() {
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
    let ov = to_samples(overlap_s.clamp(0.0, context_s / 2.0));
    let search = to_samples(SEARCH_S.min(context_s * SEARCH_SHARE));
    let energy = frame_energies(samples);

    let mut windows = Vec::new();
    let mut start = 0;
    loop {
        let remaining = n - start;
        if remaining <= ctx {
            windows.push(start..n);
            return windows;
        }
        // Windows still needed for the rest, each at most `ctx` and sharing `ov` with the next:
        // make them even rather than leave a scrap at the end.
        let k = (remaining - ov).div_ceil(ctx - ov).max(2);
        let target = (start + (remaining + (k - 1) * ov).div_ceil(k)).min(start + ctx);
        let end = quietest(
            &energy,
            target.saturating_sub(search).max(start + ov + 1),
            target,
            target,
        );
        // The next window starts about `ov` before this one ends, also at a quiet point, and
        // always after this one's start.
        let lo = end
            .saturating_sub(ov + search / 2)
            .max(start + (end - start) / 2);
        let hi = end.saturating_sub(ov / 2).max(lo);
        let next = quietest(&energy, lo, hi, end.saturating_sub(ov).clamp(lo, hi));
        windows.push(start..end);
        start = next.max(start + 1);
    }
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
    let centre = |i: usize| i * HOP + FRAME / 2;
    let mut best: Option<(f64, usize, usize)> = None; // (energy, distance, sample)
    for (i, &e) in energy.iter().enumerate() {
        let at = centre(i);
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
#[derive(Debug, Clone, PartialEq, Default)]
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
}

impl WindowText {
    /// A window's text and span.
    pub fn new(text: impl Into<String>, start_s: f32, end_s: f32) -> Self {
        Self {
            text: text.into(),
            start_s,
            end_s,
            voiced: Vec::new(),
        }
    }
}

/// One word of a window's text with its estimated time in the segment.
#[derive(Debug, Clone)]
struct Word<'a> {
    raw: &'a str,
    norm: String,
    time: f32,
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
fn timed_words(w: &WindowText) -> Vec<Word<'_>> {
    let total = w.text.trim_end().len().max(1) as f32;
    let span = (w.end_s - w.start_s).max(0.0);
    let base = w.text.as_ptr() as usize;
    w.text
        .split_whitespace()
        .map(|raw| {
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
            }
        })
        .collect()
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

/// The run of matching words starting at `a[i]` and `b[j]`: (matches, length). One differing
/// word inside the run is tolerated (a substitution), not at its end.
fn run(a: &[Word<'_>], b: &[Word<'_>], i: usize, j: usize) -> (usize, usize) {
    let (mut matches, mut len, mut mismatched) = (0, 0, false);
    let mut m = 0;
    while i + m < a.len() && j + m < b.len() {
        if same(&a[i + m], &b[j + m]) {
            matches += 1;
            len = m + 1;
        } else if mismatched || matches == 0 {
            break;
        } else {
            mismatched = true;
        }
        m += 1;
    }
    (matches, len)
}

/// Merge the texts of consecutive overlapping windows (in order) into one text, joining each
/// pair where the end of the text so far and the start of the next window say the same words;
/// when they share none, each keeps the words estimated to lie on its side of the middle of the
/// overlap. Empty window texts are skipped.
pub fn merge(windows: &[WindowText]) -> String {
    let mut out: Vec<Word<'_>> = Vec::new();
    let mut prev_end = f32::NEG_INFINITY;
    for w in windows {
        let next = timed_words(w);
        if next.is_empty() {
            continue;
        }
        if out.is_empty() {
            out = next;
            prev_end = w.end_s;
            continue;
        }
        // The overlap is [w.start_s, prev_end]; look for the join a little either side of it.
        let tail_from = out
            .iter()
            .position(|x| x.time >= w.start_s - SLACK_S)
            .unwrap_or(out.len());
        let head_to = next
            .iter()
            .position(|x| x.time > prev_end + SLACK_S)
            .unwrap_or(next.len());
        // Most matching words wins; of equals, the run that leaves out fewest words around it
        // (true overlaps sit at the end of the text so far and the start of the next), then the
        // pair whose estimated times agree best.
        // ((matches, dropped, gap), i, j, run length)
        type Candidate = ((usize, usize, f32), usize, usize, usize);
        let mut best: Option<Candidate> = None;
        for i in tail_from..out.len() {
            for j in 0..head_to {
                let (matches, len) = run(&out, &next, i, j);
                if matches == 0 {
                    continue;
                }
                let dropped = (out.len() - (i + len)) + j;
                let gap = (out[i].time - next[j].time).abs();
                if gap
                    > if matches > 1 {
                        MAX_GAP_S
                    } else {
                        MAX_GAP_ONE_S
                    }
                {
                    continue;
                }
                let better = match best {
                    None => true,
                    Some(((bm, bd, bg), ..)) => {
                        matches > bm
                            || (matches == bm && (dropped < bd || (dropped == bd && gap < bg)))
                    }
                };
                if better {
                    best = Some(((matches, dropped, gap), i, j, len));
                }
            }
        }
        match best {
            Some((_, i, j, len)) => {
                // Join in the middle of the run: each side keeps the words farther from its
                // window's edge.
                let half = len / 2;
                out.truncate(i + half);
                out.extend(next.into_iter().skip(j + half));
            }
            None => {
                // Nothing shared: the words estimated to lie in the overlap are the same speech
                // heard twice (or misheard); each side keeps those on its half of the overlap.
                let middle = (w.start_s + prev_end) / 2.0;
                let cut = out[tail_from..]
                    .iter()
                    .position(|x| x.time >= middle)
                    .map_or(out.len(), |p| tail_from + p);
                out.truncate(cut);
                out.extend(next.into_iter().filter(|x| x.time >= middle));
            }
        }
        prev_end = w.end_s;
    }
    out.iter().map(|w| w.raw).collect::<Vec<_>>().join(" ")
}
