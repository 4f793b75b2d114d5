//! Word error rate, for scoring transcripts against references.
//!
//! Both texts are normalised first so that formatting choices the ASR model is
//! free to make (case, punctuation, "10" vs "ten", British vs American
//! spelling of a few common words) are not counted as errors.

/// Spoken forms of the numbers 0-20.
const SMALL_NUMBERS: [&str; 21] = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
    "twenty",
];

/// Spoken forms of 30, 40, ... 90 (index = tens digit - 3).
const TENS: [&str; 7] = [
    "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
];

/// Splits text into normalised words.
///
/// Lowercases; treats every punctuation mark as a word break except `.`
/// (removed, so "Mr." and "U.S." stay one word) and apostrophes inside a word
/// ("don't" stays, quotes around a word go; the typographic ’ counts as ').
/// Then maps digit-only tokens 0-20 and 30, 40, ... 90 to words ("10" =
/// "ten"), and "mr" → "mister", "mrs" → "missus", "metres"/"metre" →
/// "meters"/"meter".
pub fn normalize(text: &str) -> Vec<String> {
    let mut cleaned = String::with_capacity(text.len());
    for c in text.chars().flat_map(char::to_lowercase) {
        match c {
            '\'' | '\u{2019}' => cleaned.push('\''),
            '.' => {}
            c if c.is_alphanumeric() => cleaned.push(c),
            // Everything else (whitespace, hyphens, commas, ...) separates words:
            // "well-known" is scored as the two words an ASR model would emit.
            _ => cleaned.push(' '),
        }
    }
    cleaned
        .split_whitespace()
        .map(|w| w.trim_matches('\''))
        .filter(|w| !w.is_empty())
        .map(canonical)
        .collect()
}

/// Maps one cleaned token to its canonical spelling.
fn canonical(word: &str) -> String {
    if !word.is_empty() && word.bytes().all(|b| b.is_ascii_digit()) {
        // Parse leniently ("007" = 7); long digit strings are left alone.
        if let Ok(n) = word.parse::<u64>() {
            if let Some(w) = number_word(n) {
                return w.to_owned();
            }
        }
        return word.to_owned();
    }
    match word {
        "mr" => "mister",
        "mrs" => "missus",
        "metres" => "meters",
        "metre" => "meter",
        other => other,
    }
    .to_owned()
}

/// The spoken form of `n` when it is 0-20 or a multiple of ten up to 90.
fn number_word(n: u64) -> Option<&'static str> {
    match n {
        0..=20 => SMALL_NUMBERS.get(n as usize).copied(),
        30..=90 if n.is_multiple_of(10) => TENS.get((n / 10 - 3) as usize).copied(),
        _ => None,
    }
}

/// Counts word errors (substitutions + deletions + insertions) of `hypothesis`
/// against `reference`, both normalised with [`normalize`].
///
/// Returns `(errors, reference_words)`: summing both over a test set gives the
/// corpus WER, which weights utterances by length (averaging per-utterance
/// ratios would not).
pub fn word_errors(reference: &str, hypothesis: &str) -> (usize, usize) {
    let r = normalize(reference);
    let h = normalize(hypothesis);
    (edit_distance(&r, &h), r.len())
}

/// Word error rate of `hypothesis` against `reference`: errors divided by the
/// number of reference words.
///
/// It can exceed 1.0 when the hypothesis has many insertions. With an empty
/// reference it is 0.0 for an empty hypothesis and the count of inserted words
/// otherwise (dividing by one rather than by zero).
pub fn wer(reference: &str, hypothesis: &str) -> f64 {
    let (errors, words) = word_errors(reference, hypothesis);
    errors as f64 / words.max(1) as f64
}

/// Levenshtein distance over words, keeping one row: O(|r|·|h|) time, O(|h|) memory.
fn edit_distance(r: &[String], h: &[String]) -> usize {
    let mut row: Vec<usize> = (0..=h.len()).collect();
    for (i, rw) in r.iter().enumerate() {
        let mut diag = row[0];
        row[0] = i + 1;
        for (j, hw) in h.iter().enumerate() {
            let substitute = diag + usize::from(rw != hw);
            let delete = row[j + 1] + 1;
            let insert = row[j] + 1;
            diag = row[j + 1];
            row[j + 1] = substitute.min(delete).min(insert);
        }
    }
    row[h.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_cases() {
        let cases: &[(&str, &[&str])] = &[
            ("Hello, World!", &["hello", "world"]),
            ("Don't 'quote' me", &["don't", "quote", "me"]),
            ("It’s fine", &["it's", "fine"]),
            ("Mr. and Mrs. Smith", &["mister", "and", "missus", "smith"]),
            ("10 metres, 1 metre", &["ten", "meters", "one", "meter"]),
            (
                "0 7 20 21 30 45 90 100 007",
                &[
                    "zero", "seven", "twenty", "21", "thirty", "45", "ninety", "100", "seven",
                ],
            ),
            ("well-known e.g. U.S.", &["well", "known", "eg", "us"]),
            ("  \t\n ", &[]),
            ("''' -- !!", &[]),
            ("Café ÜBER", &["café", "über"]),
            ("99999999999999999999999", &["99999999999999999999999"]),
        ];
        for (input, expected) in cases {
            assert_eq!(normalize(input), *expected, "input {input:?}");
        }
    }

    #[test]
    fn word_error_cases() {
        let cases: &[(&str, &str, usize, usize)] = &[
            ("the cat sat", "the cat sat", 0, 3),
            ("the cat sat", "The cat, sat.", 0, 3),
            ("the cat sat", "the bat sat", 1, 3),
            ("the cat sat", "the sat", 1, 3),
            ("the cat sat", "the big cat sat", 1, 3),
            ("the cat sat", "", 3, 3),
            ("", "hello there", 2, 0),
            ("", "", 0, 0),
            ("a b c d", "b c d e", 2, 4),
            ("I have 10 apples", "i have ten apples", 0, 4),
            (
                "he was not an ill disposed young man",
                "he was not an ill-disposed young man",
                0,
                8,
            ),
        ];
        for &(r, h, errors, words) in cases {
            assert_eq!(word_errors(r, h), (errors, words), "{r:?} vs {h:?}");
        }
    }

    #[test]
    fn wer_values() {
        assert_eq!(wer("a b c d", "a b c d"), 0.0);
        assert_eq!(wer("a b c d", "a x c d"), 0.25);
        assert_eq!(wer("a", "b c d"), 3.0);
        assert_eq!(wer("", ""), 0.0);
        assert_eq!(wer("", "x y"), 2.0);
    }

    #[test]
    fn distance_is_symmetric_in_errors() {
        // S+D+I of r→h equals S+I+D of h→r.
        let pairs = [
            ("a b c", "c b a"),
            ("one two", "one two three four"),
            ("x", ""),
        ];
        for (a, b) in pairs {
            assert_eq!(word_errors(a, b).0, word_errors(b, a).0);
        }
    }
}
