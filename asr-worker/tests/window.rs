//! Context windows: planning the windows of a long segment and merging their texts.
//!
//! The pure parts (planning the windows, merging texts, spotting a decoder loop) are
//! table-tested; a scripted model checks the joins end to end, also when one window mishears
//! or invents; the real Moonshine models (run `deploy/setup.sh` first, and use `--release`)
//! check that a 5 s or 3 s context transcribes a long recording as well as a 10 s one, without
//! repeating words at the joins, and measure time and peak memory.

use std::{
    collections::HashMap,
    ops::Range,
    path::{Path, PathBuf},
    sync::{Mutex, MutexGuard, OnceLock},
    time::Instant,
};

use swictation_asr_worker::window::{
    decoded, merge, normalise, plan, split, Decoded, Window, WindowText, SAMPLE_RATE,
};
use swictation_asr_worker::{InferenceError, Moonshine, SpeechModel, Transcription, Windowed};
use swictation_proto::{ComponentPlacement, Device};
use swictation_worker_kit::{data_dir, default_ort_lib, Runtime};

const CLIPS: [&str; 5] = ["0870", "0880", "0890", "0920", "0930"];
const CONTEXTS: [f32; 3] = [10.0, 5.0, 3.0];
/// The bound: a shorter context may cost at most 2 points of word error rate.
const MAX_WER_LOSS: f64 = 0.02;
/// tiny-en at 3 s, a regression bound: tiny is on no 3 s rung (the default ladder ends with
/// `cpu tiny` at 10 s), and it mishears more in 3 s windows than any vote can mend (7.7 %
/// against 2.4 % at 10 s over the ten arrangements of the LibriVox recording).
const MAX_WER_LOSS_TINY_3S: f64 = 0.07;

// ---------------------------------------------------------------------------------------------
// Merging

fn w(text: &str, start_s: f32, end_s: f32) -> WindowText {
    WindowText::new(text, start_s, end_s)
}

/// A window whose start is the recording's (not a cut).
fn first(text: &str, start_s: f32, end_s: f32) -> WindowText {
    WindowText {
        cut_start: false,
        ..w(text, start_s, end_s)
    }
}

/// A window whose end is the recording's (not a cut).
fn last(text: &str, start_s: f32, end_s: f32) -> WindowText {
    WindowText {
        cut_end: false,
        ..w(text, start_s, end_s)
    }
}

/// A window cut in pauses at both ends, or the whole recording.
fn clean(text: &str, start_s: f32, end_s: f32) -> WindowText {
    WindowText {
        cut_start: false,
        ..last(text, start_s, end_s)
    }
}

#[test]
fn merge_table() {
    // (case, windows, expected)
    let cases: Vec<(&str, Vec<WindowText>, &str)> = vec![
        ("nothing", vec![], ""),
        (
            "one window",
            vec![w("Hello there.", 0.0, 3.0)],
            "Hello there.",
        ),
        (
            "exact overlap",
            vec![
                w("he was not an ill disposed", 0.0, 3.0),
                w("ill disposed young man", 2.0, 5.0),
            ],
            "he was not an ill disposed young man",
        ),
        (
            "overlap differs in case and punctuation: the spelling heard farther from a cut",
            vec![
                w("He was not an ill", 0.0, 3.0),
                w("Ill, disposed young man.", 2.0, 5.0),
            ],
            "He was not an ill disposed young man.",
        ),
        (
            "overlap with a differing word at the edge",
            vec![
                w("to consider how much there might be prudent", 0.0, 4.0),
                w("much there might be prudently in his power", 2.5, 6.5),
            ],
            "to consider how much there might be prudently in his power",
        ),
        (
            "overlap with a differing word inside: the side farther from its edge wins",
            vec![
                w("a b c d e f g", 0.0, 4.0),
                w("d x f g h i j k l m", 2.5, 6.5),
            ],
            "a b c d e f g h i j k l m",
        ),
        (
            "partial words at both edges",
            vec![
                w("had then leisure to consi", 0.0, 3.0),
                w("sure to consider how much", 2.0, 5.0),
            ],
            "had then leisure to consider how much",
        ),
        (
            "no overlap, silence in the overlap: words placed on the speech are all kept",
            vec![
                WindowText {
                    voiced: (0..340).map(|i| i as f32 / 100.0).collect(),
                    ..w("one two three four", 0.0, 4.0)
                },
                WindowText {
                    voiced: (360..700).map(|i| i as f32 / 100.0).collect(),
                    ..w("five six seven eight", 3.0, 7.0)
                },
            ],
            "one two three four five six seven eight",
        ),
        (
            "empty texts are skipped",
            vec![
                w("", 0.0, 3.0),
                w("first words here", 2.0, 5.0),
                w("", 4.0, 7.0),
                w("", 6.0, 9.0),
            ],
            "first words here",
        ),
        (
            "an empty window between two",
            vec![
                w("we waited", 0.0, 3.0),
                w("", 2.0, 5.0),
                w("and then left", 4.0, 7.0),
            ],
            "we waited and then left",
        ),
        (
            "repeated word, both copies in both windows",
            vec![
                w("he said that that", 0.0, 3.0),
                w("that that was all", 2.0, 5.0),
            ],
            "he said that that was all",
        ),
        (
            "repeated word, the second copy only in the next window",
            vec![
                w("he said that", 0.0, 3.0),
                w("that that was all", 2.0, 5.0),
            ],
            "he said that that was all",
        ),
        (
            "repeated word, the first copy only in the previous window",
            vec![
                w("he said that that", 0.0, 3.0),
                w("that was all", 2.5, 5.0),
            ],
            "he said that that was all",
        ),
        (
            "three windows",
            vec![
                w("and mister john dashwood had then", 0.0, 3.0),
                w("had then leisure to consider how", 2.0, 5.0),
                w("how much there might be", 4.0, 7.0),
            ],
            "and mister john dashwood had then leisure to consider how much there might be",
        ),
        (
            "windows joined in a pause follow each other, whatever words they share",
            vec![
                clean("he might have been made", 0.0, 3.0),
                clean("he might even have been made", 2.6, 5.6),
            ],
            "he might have been made he might even have been made",
        ),
        // Ten words 0.5 s apart heard by three windows 1 s apart; w5 (2.75 s) lies near the end
        // of the first, in the middle of the second, past the start of the third.
        (
            "two windows that agree outvote one that heard the word in its middle",
            vec![
                first("w0 w1 w2 w3 w4 w5", 0.0, 3.0),
                w("w2 w3 w4 x5 w6 w7", 1.0, 4.0),
                last("w4 w5 w6 w7 w8 w9", 2.0, 5.0),
            ],
            "w0 w1 w2 w3 w4 w5 w6 w7 w8 w9",
        ),
        (
            "a window that loops is left out where the others cover it",
            vec![
                first("w0 w1 w2 w3 w4 w5", 0.0, 3.0),
                w("w2 w3 w4 w5 w4 w5 w4 w5 w4 w5", 1.0, 4.0),
                last("w4 w5 w6 w7 w8 w9", 2.0, 5.0),
            ],
            "w0 w1 w2 w3 w4 w5 w6 w7 w8 w9",
        ),
        (
            "a loop no other window covers is believed up to its repeat",
            vec![
                first("w0 w1 w2 w3 w4 w5", 0.0, 3.0),
                last("w4 w5 w6 w7 w8 w9 w8 w9 w8 w9", 2.0, 5.0),
            ],
            "w0 w1 w2 w3 w4 w5 w6 w7 w8 w9",
        ),
        (
            "the parts of a hyphenated word are voted on apart and joined again",
            vec![
                w("he was not an ill-disposed", 0.0, 3.0),
                w("old-disposed young man", 2.0, 5.0),
            ],
            "he was not an ill-disposed young man",
        ),
        (
            "punctuation-only words never anchor a join",
            vec![w("well - then we", 0.0, 3.0), w("- we went home", 2.0, 5.0)],
            "well - then we went home",
        ),
    ];
    let mut bad = Vec::new();
    for (case, windows, expected) in cases {
        let got = merge(&windows);
        if got != expected {
            bad.push(format!("{case}: got {got:?}, want {expected:?}"));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn decoder_loops_are_told_from_speech() {
    use Decoded::{Heard, Loop, TooMany};
    // (text, seconds, what it looks like)
    let cases: [(&str, f32, Decoded); 14] = [
        ("", 1.0, Heard),
        ("he said that that that was all", 3.0, Heard),
        ("- - - - - - - - -", 1.0, Heard),
        (
            "The hardened and rather selfish is to be able to selfish, is to be able to selfish, is to be able to self",
            2.9,
            Loop { keep: 10 },
        ),
        ("and then and then and then and then", 3.0, Loop { keep: 2 }),
        (
            "And Mr. John Dashwood had then leisurely, leisurely, leisurely, leisurely",
            2.7,
            Loop { keep: 7 },
        ),
        ("he said no, no, no", 2.0, Heard),
        // Saying a phrase twice is speech, not a loop; so is a repeat that goes on to other
        // words.
        ("I mean, I mean it", 2.0, Heard),
        (
            "Did it? Did it? Did it? I didn't even check yesterday whether it was moving. So?",
            5.0,
            Heard,
        ),
        (
            "Unless to be rather cold-hearted and rather rather cold-hearted and rather.",
            2.6,
            Loop { keep: 7 },
        ),
        (
            "Mr. John Dashwood had then leisure to convince Mr. John Dashwood had then leisure to convince",
            2.8,
            Loop { keep: 8 },
        ),
        ("and so I said go on, go on", 2.5, Heard),
        (
            "one two three four five six seven eight nine ten eleven twelve thirteen",
            2.0,
            TooMany,
        ),
        ("one two three four five six seven eight nine ten", 2.0, Heard),
    ];
    for (text, seconds, expected) in cases {
        assert_eq!(decoded(text, seconds), expected, "{text:?} in {seconds} s");
    }
}

#[test]
fn normalise_drops_case_and_punctuation() {
    for (raw, norm) in [
        ("Hello,", "hello"),
        ("ill-disposed", "illdisposed"),
        ("--", ""),
        ("Don't", "dont"),
    ] {
        assert_eq!(normalise(raw), norm);
    }
}

// ---------------------------------------------------------------------------------------------
// Planning

fn secs(s: f32) -> usize {
    (s * SAMPLE_RATE as f32) as usize
}

/// Speech-like noise (no quiet point in it) over `range` of a buffer of `n` silent samples.
fn noise(n: usize, bursts: &[Range<f32>]) -> Vec<f32> {
    let mut audio = vec![0.0; n];
    for b in bursts {
        for (i, x) in audio
            .iter_mut()
            .enumerate()
            .take(secs(b.end).min(n))
            .skip(secs(b.start))
        {
            *x = ((i * 7919) % 997) as f32 / 997.0 - 0.5;
        }
    }
    audio
}

/// Windows are in order, cover the segment with no gap, keep within the context, and agree at
/// each join: both sides cut speech there (and overlap), or neither does.
fn check_plan(n: usize, windows: &[Window], context_s: f32) {
    assert_eq!(windows.first().map(|w| w.range.start), Some(0));
    assert_eq!(windows.last().map(|w| w.range.end), Some(n));
    assert!(!windows[0].cut_start && !windows[windows.len() - 1].cut_end);
    for w in windows {
        assert!(
            w.range.len() <= secs(context_s) + 1,
            "{w:?} longer than {context_s} s"
        );
    }
    for pair in windows.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        assert!(b.range.start > a.range.start, "{pair:?}: no progress");
        assert!(
            b.range.start <= a.range.end,
            "{pair:?}: gap between windows"
        );
        assert_eq!(
            a.cut_end, b.cut_start,
            "{pair:?}: the join is cut on one side only"
        );
        if a.cut_end {
            assert!(
                b.range.start < a.range.end,
                "{pair:?}: a cut join must overlap"
            );
        }
    }
}

#[test]
fn short_or_unwindowed_segments_are_one_window() {
    let audio = vec![0.1; secs(9.5)];
    assert_eq!(split(&audio, 10.0, 1.0), vec![0..audio.len()]);
    assert_eq!(split(&audio, 0.0, 1.0), vec![0..audio.len()]);
    assert_eq!(split(&audio, f32::NAN, 1.0), vec![0..audio.len()]);
    assert_eq!(split(&audio, -3.0, 1.0), vec![0..audio.len()]);
    assert_eq!(split(&[], 3.0, 1.0), vec![0..0]);
    let one = plan(&audio, 10.0, 2.0);
    assert!(!one[0].cut_start && !one[0].cut_end);
}

#[test]
fn plans_cover_the_segment_for_any_length() {
    for context in [2.0, 3.0, 5.0, 10.0] {
        for tenths in [21, 31, 49, 51, 99, 101, 150, 247, 600] {
            let n = secs(tenths as f32 / 10.0);
            let audio = noise(n, &[0.0..tenths as f32]);
            for overlap in [0.0, 1.0, 2.0, 9.0] {
                let windows = plan(&audio, context, overlap);
                check_plan(n, &windows, context);
                if n > secs(context) {
                    assert!(windows.len() >= 2);
                    assert!(
                        windows[1..].iter().all(|w| w.cut_start),
                        "no pause to cut at"
                    );
                    // Even: no scrap of a window at the end.
                    let shortest = windows.iter().map(|w| w.range.len()).min().unwrap();
                    assert!(
                        shortest >= secs(context / 3.0),
                        "{context} s, {n}: {windows:?}"
                    );
                }
            }
        }
    }
    // Non-finite samples must not panic.
    let audio = vec![f32::NAN; secs(25.0)];
    check_plan(audio.len(), &plan(&audio, 3.0, 2.0), 3.0);
}

/// Every moment of continuous speech is heard by some window at least `overlap / 2` (less the
/// edge's move to a quiet point) from its edges that cut speech.
#[test]
fn every_moment_is_heard_away_from_cut_edges() {
    for (context, least) in [(3.0, 0.7), (5.0, 0.7), (10.0, 0.7)] {
        let n = secs(24.0);
        let windows = plan(&noise(n, &[0.0..24.0]), context, 2.0);
        check_plan(n, &windows, context);
        for t in (0..n).step_by(secs(0.01)) {
            let margin = windows
                .iter()
                .filter(|w| w.range.contains(&t))
                .map(|w| {
                    let from_start = if w.cut_start { t - w.range.start } else { n };
                    let from_end = if w.cut_end { w.range.end - t } else { n };
                    from_start.min(from_end)
                })
                .max()
                .unwrap();
            assert!(
                margin >= secs(least),
                "{context} s: {:.2} s is heard at most {:.2} s from a cut: {windows:?}",
                t as f32 / 16000.0,
                margin as f32 / 16000.0
            );
        }
    }
}

#[test]
fn pauses_are_cut_cleanly() {
    // Three phrases, 0.5 s and 0.35 s apart: each fits a 3 s context on its own.
    let phrases = [0.3..2.3, 2.8..4.3, 4.65..6.85];
    let n = secs(7.1);
    let audio = noise(n, &phrases);
    let windows = plan(&audio, 3.0, 2.0);
    check_plan(n, &windows, 3.0);
    assert_eq!(windows.len(), 3, "{windows:?}");
    for (w, phrase) in windows.iter().zip(&phrases) {
        assert!(!w.cut_start && !w.cut_end, "{w:?}");
        assert!(
            w.range.start <= secs(phrase.start) && w.range.end >= secs(phrase.end),
            "{w:?} does not hold {phrase:?}"
        );
        // Each window takes in silence beyond its words where the context allows.
        assert!(w.range.end > secs(phrase.end) || w.range.end == n, "{w:?}");
    }
    // Gaps shorter than a pause are not cut at: the same phrases 0.15 s apart overlap.
    let close = [0.3..2.3, 2.45..3.95, 4.1..6.3];
    let audio = noise(n, &close);
    let windows = plan(&audio, 3.0, 2.0);
    check_plan(n, &windows, 3.0);
    assert!(windows[1..].iter().all(|w| w.cut_start), "{windows:?}");
}

#[test]
fn the_fewest_cuts_that_fit_the_context() {
    // 13 s with pauses at 1.5 s (0.6 s long) and 6.5 s (0.4 s): with 10 s, the one cut at
    // 6.5 s leaves two pieces within the context; the longer pause alone would not.
    let n = secs(13.0);
    let audio = noise(n, &[0.5..1.2, 1.8..6.3, 6.7..12.5]);
    let windows = plan(&audio, 10.0, 2.0);
    check_plan(n, &windows, 10.0);
    assert_eq!(windows.len(), 2, "{windows:?}");
    assert!(!windows[0].cut_end);
    let middle = (windows[1].range.start + windows[0].range.end) as f32 / 2.0 / 16000.0;
    assert!(
        (6.3..6.7).contains(&middle),
        "cut at {middle} s: {windows:?}"
    );
    // With 3 s, both pauses are cut at and only the long stretches overlap.
    let windows = plan(&audio, 3.0, 2.0);
    check_plan(n, &windows, 3.0);
    let clean: Vec<f32> = windows
        .windows(2)
        .filter(|p| !p[0].cut_end)
        .map(|p| (p[1].range.start + p[0].range.end) as f32 / 2.0 / 16000.0)
        .collect();
    assert_eq!(clean.len(), 2, "{windows:?}");
    assert!(
        (1.2..1.8).contains(&clean[0]) && (6.3..6.7).contains(&clean[1]),
        "{clean:?}"
    );
}

/// "Words" of noise 0.3 s long with 0.1 s of silence between them.
fn words_and_pauses(seconds: f32) -> Vec<f32> {
    (0..secs(seconds))
        .map(|i| {
            if i % secs(0.4) < secs(0.3) {
                ((i * 7919) % 997) as f32 / 997.0 - 0.5
            } else {
                0.0
            }
        })
        .collect()
}

#[test]
fn overlapping_edges_seek_the_gaps_between_words() {
    // 0.1 s gaps are too short to cut at, but the edges of overlapping windows move to them:
    // a plan blind to the audio would put one edge in four there.
    let audio = words_and_pauses(24.7);
    for context in CONTEXTS {
        let windows = plan(&audio, context, 2.0);
        check_plan(audio.len(), &windows, context);
        let edges: Vec<usize> = windows
            .iter()
            .flat_map(|w| [w.range.start, w.range.end])
            .filter(|&e| e != 0 && e != audio.len())
            .collect();
        let in_gaps = edges.iter().filter(|&&e| audio[e] == 0.0).count();
        assert!(
            in_gaps * 4 >= edges.len() * 3,
            "{context} s: {in_gaps} of {} edges between words",
            edges.len()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// A scripted model: "word k" is spoken over a known span of the segment.

/// Changes what one window heard.
type Corruption = fn(&mut Vec<String>);

/// Hears the words whose span lies inside the window; a word cut by the window's edge comes out
/// as a fragment. Finds where the window is in the segment from the slice's address.
struct Scripted {
    base: usize,
    /// (start, end, word) in samples.
    words: Vec<(usize, usize, String)>,
    windows: Vec<(usize, usize)>,
    /// Changes what the window with this index (counting from 0) heard.
    corrupt: Option<(usize, Corruption)>,
}

impl SpeechModel for Scripted {
    fn name(&self) -> &str {
        "scripted"
    }

    fn placement(&self) -> Vec<ComponentPlacement> {
        Vec::new()
    }

    fn transcribe(&mut self, samples: &[f32]) -> Result<Transcription, InferenceError> {
        let start = (samples.as_ptr() as usize - self.base) / std::mem::size_of::<f32>();
        let end = start + samples.len();
        self.windows.push((start, end));
        let mut heard: Vec<String> = self
            .words
            .iter()
            .filter(|(a, b, _)| *b > start && *a < end)
            .map(|(a, b, word)| {
                if *a >= start && *b <= end {
                    word.clone()
                } else if *a < start {
                    // The end of a word: not what the previous window heard of it.
                    format!("-{}", &word[word.len() - 2..])
                } else {
                    format!("{}-", &word[..2])
                }
            })
            .collect();
        if let Some((k, change)) = self.corrupt {
            if k + 1 == self.windows.len() {
                change(&mut heard);
            }
        }
        Ok(Transcription {
            tokens: heard.len() as u32,
            text: heard.join(" "),
        })
    }
}

/// 30 s of scripted speech: words `word_s` long, `pause_s` apart, some repeating, as speech
/// does (but not a whole phrase over and over, as a looping decoder does: the 36 words go
/// round once in more than 12 s); the audio, and each word's span and text.
fn scripted_speech(pause_s: f32, word_s: f32) -> (Vec<f32>, Vec<(usize, usize, String)>) {
    let n = secs(30.0);
    let step = secs(word_s + pause_s);
    let audio: Vec<f32> = (0..n)
        .map(|i| {
            if i % step < secs(word_s) {
                ((i * 7919) % 997) as f32 / 997.0 - 0.5
            } else {
                0.0
            }
        })
        .collect();
    let vocabulary = [
        "that", "that", "was", "the", "thing", "the", "man", "said", "word",
    ];
    let words = (0..n / step)
        .map(|k| {
            (
                k * step,
                k * step + secs(word_s),
                format!("{}{}", vocabulary[k % vocabulary.len()], k % 4),
            )
        })
        .collect();
    (audio, words)
}

/// Transcribe scripted speech through [`Windowed`]: the words out, and the windows heard.
fn scripted_run(
    audio: &[f32],
    words: &[(usize, usize, String)],
    context: f32,
    corrupt: Option<(usize, Corruption)>,
) -> (Vec<String>, Vec<(usize, usize)>) {
    let mut model = Windowed::new(
        Scripted {
            base: audio.as_ptr() as usize,
            words: words.to_vec(),
            windows: Vec::new(),
            corrupt,
        },
        context,
    );
    let out = model.transcribe(audio).unwrap();
    (
        out.text.split_whitespace().map(String::from).collect(),
        model.inner().windows.clone(),
    )
}

#[test]
fn scripted_speech_merges_exactly() {
    for (pause_s, word_s) in [(0.1, 0.3), (0.0, 0.35), (0.05, 0.6), (0.35, 0.5)] {
        let (audio, words) = scripted_speech(pause_s, word_s);
        let expected: Vec<String> = words.iter().map(|(_, _, w)| w.clone()).collect();
        for context in CONTEXTS {
            let (got, windows) = scripted_run(&audio, &words, context, None);
            assert_eq!(
                got, expected,
                "pause {pause_s} s, word {word_s} s, context {context} s, windows {windows:?}"
            );
            assert!(windows.len() > 1);
        }
    }
}

/// One window of the three that hear each moment of a 3 s context goes wrong; the other two
/// outvote it.
#[test]
fn scripted_mishearing_loops_and_inventions_are_outvoted() {
    // Every corruption has the one signature `Corruption`, though this one needs no Vec.
    #[allow(clippy::ptr_arg)]
    fn mishear(words: &mut Vec<String>) {
        let middle = words.len() / 2;
        words[middle] = "wrong".into();
    }
    fn lose(words: &mut Vec<String>) {
        let middle = words.len() / 2;
        words.remove(middle);
    }
    fn invent(words: &mut Vec<String>) {
        let middle = words.len() / 2;
        words.insert(middle, "invented".into());
    }
    fn make_up(words: &mut Vec<String>) {
        *words = "i am not a man of faith but i have faith in it"
            .split(' ')
            .map(String::from)
            .collect();
    }
    fn run_away(words: &mut Vec<String>) {
        let tail: Vec<String> = words[words.len() / 2..].to_vec();
        for _ in 0..3 {
            words.extend(tail.iter().cloned());
        }
    }
    let (audio, words) = scripted_speech(0.1, 0.3);
    let expected: Vec<String> = words.iter().map(|(_, _, w)| w.clone()).collect();
    let cases: [(&str, Corruption); 5] = [
        ("a word misheard", mishear),
        ("a word lost", lose),
        ("a word invented", invent),
        ("the whole window made up", make_up),
        ("the decoder looping", run_away),
    ];
    for (case, change) in cases {
        for window in [3, 10, 17] {
            let (got, windows) = scripted_run(&audio, &words, 3.0, Some((window, change)));
            assert!(windows.len() > 20, "{windows:?}");
            assert_eq!(got, expected, "{case} in window {window}: {windows:?}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The real models

fn runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        Runtime::load(&default_ort_lib(), 2).unwrap_or_else(|e| panic!("{e} (run deploy/setup.sh)"))
    })
}

/// Serialise inference so timings are not two models fighting over two cores.
fn exclusive() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn load(name: &str) -> Moonshine {
    Moonshine::load(
        runtime(),
        &data_dir().join("models").join(name),
        Device::Cpu,
        Device::Cpu,
    )
    .map(|(model, _)| model)
    .unwrap_or_else(|e| panic!("loading {name}: {e}"))
}

fn speech(name: &str) -> PathBuf {
    data_dir().join("speech").join(name)
}

/// The samples of a mono 16-bit PCM WAV, resampled to 16 kHz.
fn read_wav(path: &Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(bytes.len() >= 12 && &bytes[0..4] == b"RIFF" && &bytes[8..12] == b"WAVE");
    let (mut at, mut rate) = (12, 0);
    while at + 8 <= bytes.len() {
        let id = &bytes[at..at + 4];
        let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
        let body = &bytes[at + 8..(at + 8 + len).min(bytes.len())];
        match id {
            b"fmt " => {
                let u16_at = |i: usize| u16::from_le_bytes([body[i], body[i + 1]]);
                rate = u32::from_le_bytes(body[4..8].try_into().unwrap());
                assert_eq!(
                    (u16_at(0), u16_at(2), u16_at(14)),
                    (1, 1, 16),
                    "{}",
                    path.display()
                );
            }
            b"data" => {
                let samples: Vec<f32> = body
                    .chunks_exact(2)
                    .map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0)
                    .collect();
                return resample(&samples, rate, SAMPLE_RATE as u32);
            }
            _ => {}
        }
        at += 8 + len + (len & 1);
    }
    panic!("{}: no data chunk", path.display());
}

/// Windowed-sinc (Hann, 32 taps) resampling; the cut-off is the lower of the two Nyquists.
fn resample(x: &[f32], from: u32, to: u32) -> Vec<f32> {
    if from == to {
        return x.to_vec();
    }
    const HALF: i64 = 16;
    let ratio = f64::from(from) / f64::from(to);
    let cutoff = (f64::from(to) / f64::from(from)).min(1.0);
    let n = (x.len() as f64 / ratio).floor() as usize;
    (0..n)
        .map(|k| {
            let t = k as f64 * ratio;
            let centre = t.floor() as i64;
            let mut acc = 0.0;
            for i in centre - HALF + 1..=centre + HALF {
                if i < 0 || i as usize >= x.len() {
                    continue;
                }
                let d = t - i as f64;
                let arg = std::f64::consts::PI * d * cutoff;
                let sinc = if arg.abs() < 1e-9 {
                    1.0
                } else {
                    arg.sin() / arg
                };
                let hann = 0.5 + 0.5 * (std::f64::consts::PI * d / HALF as f64).cos();
                acc += f64::from(x[i as usize]) * sinc * cutoff * hann;
            }
            acc as f32
        })
        .collect()
}

/// One LibriVox clip: its samples, its reference text, and when its first word starts and its
/// last word ends (seconds), from the word timings beside it.
fn clip(name: &str) -> (Vec<f32>, String, (f32, f32)) {
    let base = speech(&format!(
        "librivox/sense_and_sensibility_01_austen_64kb-{name}"
    ));
    let audio = read_wav(&base.with_extension("wav"));
    let reference = std::fs::read_to_string(base.with_extension("txt")).expect("reference");
    let timings: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(base.with_extension("json")).expect("word timings"),
    )
    .expect("word timings are JSON");
    let spans: Vec<(f32, f32)> = timings["w"]
        .as_array()
        .expect("a word list")
        .iter()
        .filter(|w| w["t"] != "<sil>")
        .map(|w| {
            let b = w["b"].as_f64().expect("begin") as f32;
            (b, b + w["d"].as_f64().expect("duration") as f32)
        })
        .collect();
    let words = (spans[0].0, spans[spans.len() - 1].1);
    (audio, reference, words)
}

/// A recording with its reference words.
struct Recording {
    label: String,
    audio: Vec<f32>,
    reference: Vec<String>,
}

/// The LibriVox recording (five clips of *Sense and Sensibility*, 71 words, about 25 s) in ten
/// arrangements, so that windows fall differently on the words: the clips end to end as
/// recorded (with their own pauses of about 0.45 s between sentences) starting from each clip
/// in turn, and the same trimmed to their words and joined with 0.12 s of their own silence,
/// which leaves no pause long enough to cut at.
fn arrangements() -> Vec<Recording> {
    let clips: Vec<_> = CLIPS.iter().map(|c| clip(c)).collect();
    let mut out = Vec::new();
    for gap_s in [None, Some(0.12f32)] {
        for first in 0..clips.len() {
            let (mut audio, mut reference) = (Vec::new(), String::new());
            for k in 0..clips.len() {
                let (samples, text, (from, to)) = &clips[(first + k) % clips.len()];
                match gap_s {
                    None => audio.extend(samples),
                    Some(gap) => {
                        let half = secs(gap / 2.0);
                        let (from, to) = (secs(*from), secs(*to).min(samples.len()));
                        // The silence just before the first word, then the words.
                        audio.extend(&samples[from.saturating_sub(half)..from]);
                        audio.extend(&samples[from..(to + half).min(samples.len())]);
                    }
                }
                reference.push_str(text);
                reference.push(' ');
            }
            out.push(Recording {
                label: format!(
                    "librivox from {}{}",
                    CLIPS[first],
                    if gap_s.is_some() { ", close" } else { "" }
                ),
                audio,
                reference: words(&reference),
            });
        }
    }
    out
}

/// Lowercase words without punctuation; hyphenated words split, as the references write them.
fn words(text: &str) -> Vec<String> {
    text.to_lowercase()
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c == '\'' {
                c
            } else {
                ' '
            }
        })
        .collect::<String>()
        .split_whitespace()
        .map(|w| match w.trim_matches('\'') {
            "mr" => "mister".to_string(),
            "10" => "ten".to_string(),
            "metres" => "meters".to_string(),
            w => w.to_string(),
        })
        .filter(|w| !w.is_empty())
        .collect()
}

/// Word-level Levenshtein distance.
fn errors(reference: &[String], hypothesis: &[String]) -> usize {
    let mut prev: Vec<usize> = (0..=hypothesis.len()).collect();
    for (i, r) in reference.iter().enumerate() {
        let mut row = vec![i + 1; hypothesis.len() + 1];
        for (j, h) in hypothesis.iter().enumerate() {
            row[j + 1] = (prev[j] + usize::from(r != h))
                .min(prev[j + 1] + 1)
                .min(row[j] + 1);
        }
        prev = row;
    }
    prev[hypothesis.len()]
}

/// Bigrams of the output that occur more often than in the reference, in any one window's own
/// text, and once: the trace of words repeated at a join (a model repeating itself inside a
/// window is not a join's doing).
fn repeated_bigrams(
    reference: &[String],
    windows: &[String],
    hypothesis: &[String],
) -> Vec<(String, String)> {
    let count = |ws: &[String]| {
        let mut m: HashMap<(String, String), usize> = HashMap::new();
        for p in ws.windows(2) {
            *m.entry((p[0].clone(), p[1].clone())).or_default() += 1;
        }
        m
    };
    let (r, h) = (count(reference), count(hypothesis));
    let w: Vec<_> = windows.iter().map(|t| count(&words(t))).collect();
    let allowed = |b: &(String, String)| {
        w.iter()
            .map(|m| m.get(b).copied().unwrap_or(0))
            .chain([r.get(b).copied().unwrap_or(0), 1])
            .max()
            .unwrap_or(1)
    };
    let mut out: Vec<_> = h
        .into_iter()
        .filter(|(b, n)| *n > allowed(b))
        .map(|(b, _)| b)
        .collect();
    out.sort();
    out
}

/// One model and context over a set of recordings.
struct Run {
    context_s: f32,
    texts: Vec<String>,
    window_texts: Vec<Vec<String>>,
    windows: usize,
    seconds: f64,
}

/// Transcribe every recording with each context (after a warm-up), printing each text.
fn run_contexts(name: &str, recordings: &[Recording], contexts: &[f32]) -> Vec<Run> {
    let mut model = load(name);
    model
        .transcribe(&recordings[0].audio[..secs(5.0)])
        .expect("warm-up");
    let mut runs = Vec::new();
    for &context_s in contexts {
        let mut windowed = Windowed::new(model, context_s);
        let mut run = Run {
            context_s,
            texts: Vec::new(),
            window_texts: Vec::new(),
            windows: 0,
            seconds: 0.0,
        };
        for r in recordings {
            // What `Windowed::transcribe` does, keeping the windows' texts for the repeat check.
            let start = Instant::now();
            let (texts, _) = windowed
                .transcribe_windows(&r.audio)
                .unwrap_or_else(|e| panic!("{name} {context_s} s, {}: {e}", r.label));
            let text = merge(&texts);
            run.seconds += start.elapsed().as_secs_f64();
            run.windows += texts.len();
            eprintln!("{name} {context_s} s, {}: {text:?}", r.label);
            run.texts.push(text);
            run.window_texts
                .push(texts.into_iter().map(|t| t.text).collect());
        }
        runs.push(run);
        model = windowed.into_inner();
    }
    runs
}

/// Check the shorter contexts against the 10 s one over all `recordings`: word error rate
/// within `loss(context)` and no bigram repeated beyond the reference. Prints a line per
/// context.
fn check_runs(name: &str, recordings: &[Recording], runs: &[Run], loss: impl Fn(f32) -> f64) {
    let audio_s: f64 = recordings
        .iter()
        .map(|r| r.audio.len() as f64 / SAMPLE_RATE as f64)
        .sum();
    let words: usize = recordings.iter().map(|r| r.reference.len()).sum();
    let rate = |run: &Run| {
        let wrong: usize = recordings
            .iter()
            .zip(&run.texts)
            .map(|(r, text)| errors(&r.reference, &self::words(text)))
            .sum();
        (wrong, wrong as f64 / words.max(1) as f64)
    };
    let ten = runs
        .iter()
        .find(|r| r.context_s == 10.0)
        .expect("a 10 s run");
    let (_, ten_wer) = rate(ten);
    for run in runs {
        let (wrong, wer) = rate(run);
        eprintln!(
            "RESULT {name}: context {:>4} s, {:>3} windows, {wrong:>3} errors in {words} words, WER {:5.1} %, {:.1} s for {audio_s:.0} s of audio (RTF {:.3})",
            run.context_s,
            run.windows,
            wer * 100.0,
            run.seconds,
            run.seconds / audio_s
        );
        for ((r, text), windows) in recordings.iter().zip(&run.texts).zip(&run.window_texts) {
            let repeated = repeated_bigrams(&r.reference, windows, &self::words(text));
            assert!(
                repeated.is_empty(),
                "{name} {} s, {}: repeated {repeated:?} in {text:?}",
                run.context_s,
                r.label
            );
        }
        assert!(
            wer <= ten_wer + loss(run.context_s) + 1e-9,
            "{name} {} s: WER {:.1} % vs {:.1} % at 10 s",
            run.context_s,
            wer * 100.0,
            ten_wer * 100.0
        );
    }
}

/// base-en is what the 3 s and 5 s rungs of the default ladder run: both within the issue's
/// 2 points of the 10 s context.
#[test]
fn base_short_contexts_match_ten_seconds() {
    let _guard = exclusive();
    let recordings = arrangements();
    let runs = run_contexts("moonshine-base-en", &recordings, &CONTEXTS);
    check_runs("moonshine-base-en", &recordings, &runs, |_| MAX_WER_LOSS);
}

#[test]
fn tiny_short_contexts_match_ten_seconds() {
    let _guard = exclusive();
    let recordings = arrangements();
    let runs = run_contexts("moonshine-tiny-en", &recordings, &CONTEXTS);
    check_runs("moonshine-tiny-en", &recordings, &runs, |context| {
        if context < 5.0 {
            MAX_WER_LOSS_TINY_3S
        } else {
            MAX_WER_LOSS
        }
    });
}

/// Conversational audio too: chan3 (meeting speech at 11 kHz) has no transcript, so base-en
/// over the whole recording (20.9 s, within what Moonshine handles at once) serves as the
/// reference. (tiny-en hears it badly at any context: 27 % at 10 s, 39 % at 3 s.)
#[test]
fn chan3_short_contexts_match_ten_seconds() {
    let _guard = exclusive();
    let audio = read_wav(&speech("chan3.wav"));
    let mut whole = Recording {
        label: "chan3".into(),
        audio,
        reference: Vec::new(),
    };
    let text = run_contexts("moonshine-base-en", std::slice::from_ref(&whole), &[0.0])
        .remove(0)
        .texts
        .remove(0);
    whole.reference = words(&text);
    let recordings = [whole];
    let runs = run_contexts("moonshine-base-en", &recordings, &CONTEXTS);
    check_runs("moonshine-base-en chan3", &recordings, &runs, |_| {
        MAX_WER_LOSS
    });
}

// ---------------------------------------------------------------------------------------------
// Memory: each context in a fresh process, since the peak resident size only ever grows.

fn vm_hwm_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

const CHILD_ENV: &str = "SWICTATION_WINDOW_MEMORY_CHILD";

/// Run by [`peak_memory_by_context`] in a child process: loads the model, transcribes the
/// LibriVox recording once with the context in the environment and prints VmHWM before and
/// after.
#[test]
fn memory_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (name, context) = spec.split_once(' ').expect("MODEL CONTEXT");
    let context: f32 = context.parse().expect("context");
    let audio = arrangements().swap_remove(0).audio;
    let mut model = Windowed::new(load(name), context);
    let before = vm_hwm_kib();
    let start = Instant::now();
    model.transcribe(&audio).expect("transcribe");
    let seconds = start.elapsed().as_secs_f64();
    println!("MEMORY {before} {} {seconds:.2}", vm_hwm_kib());
}

#[test]
fn peak_memory_by_context() {
    let _guard = exclusive();
    let exe = std::env::current_exe().expect("test binary");
    for name in ["moonshine-tiny-en", "moonshine-base-en"] {
        for context in [0.0, 10.0, 5.0, 3.0] {
            let out = std::process::Command::new(&exe)
                .args(["memory_child", "--exact", "--nocapture", "--test-threads=1"])
                .env(CHILD_ENV, format!("{name} {context}"))
                .output()
                .expect("run the child");
            let stdout = String::from_utf8_lossy(&out.stdout);
            let line = stdout
                .lines()
                .find_map(|l| l.split_once("MEMORY ").map(|(_, v)| v))
                .unwrap_or_else(|| {
                    panic!(
                        "{name} {context} s: no MEMORY line:\n{stdout}\n{}",
                        String::from_utf8_lossy(&out.stderr)
                    )
                });
            let v: Vec<f64> = line.split(' ').map(|x| x.parse().unwrap()).collect();
            eprintln!(
                "RESULT {name} memory: context {context:>4} s: VmHWM {:.0} MiB after load, {:.0} MiB after 24.7 s (+{:.0} MiB), {:.2} s (cold)",
                v[0] / 1024.0,
                v[1] / 1024.0,
                (v[1] - v[0]) / 1024.0,
                v[2]
            );
        }
    }
}
