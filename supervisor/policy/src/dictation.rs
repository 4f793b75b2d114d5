//! Between the recogniser and the output: whole-word replacements and spoken commands, as one
//! pure function of the transcript and the rules ([`Rules::apply`]).
//!
//! - A replacement matches whole words, ignoring case, and keeps the case the speaker's words
//!   came out in: `swiktation = "swictation"` turns `Swiktation` into `Swictation` and
//!   `SWIKTATION` into `SWICTATION` (a replacement written with capitals, `"OpenAI"`, is kept
//!   as written where the match is lower case).
//! - Spoken commands (whole words, any case, with the punctuation the recogniser put after
//!   them): "new line" and "new paragraph" put one or two line breaks in the text; "scratch
//!   that" drops what was said before it in the same utterance, or, said first, asks the output
//!   to delete the last utterance it delivered.
//!
//! Commands are found before replacements, so a replacement never produces a command.

/// The rules, as configured (`[dictation]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    /// (words as heard, text to put instead), applied longest first.
    pub replacements: Vec<(String, String)>,
    /// Phrases for a line break.
    pub new_line: Vec<String>,
    /// Phrases for a paragraph break.
    pub new_paragraph: Vec<String>,
    /// Phrases that delete what was said last.
    pub scratch_that: Vec<String>,
}

/// One transcript after the rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dictated {
    /// Delete the last delivered utterance first ("scratch that" said first).
    pub scratch_last: bool,
    /// The text to deliver (may be empty: nothing to type).
    pub text: String,
}

/// Whether `c` belongs to a word (letters, digits, apostrophes inside words).
fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '\'' || c == '’'
}

/// Length in chars of `pattern` matched at `text[i..]`, whole words, ignoring case; a space in
/// the pattern matches any run of whitespace.
fn match_at(text: &[char], i: usize, pattern: &[char]) -> Option<usize> {
    if pattern.is_empty() || (i > 0 && is_word(text[i - 1])) {
        return None;
    }
    let mut j = i;
    let mut k = 0;
    while k < pattern.len() {
        let p = pattern[k];
        if p.is_whitespace() {
            if j >= text.len() || !text[j].is_whitespace() {
                return None;
            }
            while j < text.len() && text[j].is_whitespace() {
                j += 1;
            }
            while k < pattern.len() && pattern[k].is_whitespace() {
                k += 1;
            }
            continue;
        }
        let c = *text.get(j)?;
        if !c.to_lowercase().eq(p.to_lowercase()) {
            return None;
        }
        j += 1;
        k += 1;
    }
    if j < text.len() && is_word(text[j]) && pattern.last().is_some_and(|c| is_word(*c)) {
        return None;
    }
    Some(j - i)
}

/// `replacement` in the case `heard` came out in.
fn in_case_of(heard: &[char], replacement: &str) -> String {
    let letters: Vec<char> = heard
        .iter()
        .copied()
        .filter(|c| c.is_alphabetic())
        .collect();
    if letters.len() > 1 && letters.iter().all(|c| c.is_uppercase()) {
        return replacement.to_uppercase();
    }
    if letters.first().is_some_and(|c| c.is_uppercase()) {
        let mut chars = replacement.chars();
        return match chars.next() {
            Some(first) => first.to_uppercase().chain(chars).collect(),
            None => String::new(),
        };
    }
    replacement.to_owned()
}

/// What a command does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spoken {
    NewLine,
    NewParagraph,
    Scratch,
}

impl Rules {
    /// Whether there is anything to do (all lists empty: the text passes unchanged).
    pub fn is_empty(&self) -> bool {
        self.replacements.is_empty()
            && self.new_line.is_empty()
            && self.new_paragraph.is_empty()
            && self.scratch_that.is_empty()
    }

    /// The transcript `text` after commands and replacements.
    pub fn apply(&self, text: &str) -> Dictated {
        let mut commands: Vec<(Vec<char>, Spoken)> = Vec::new();
        for (list, what) in [
            (&self.new_line, Spoken::NewLine),
            (&self.new_paragraph, Spoken::NewParagraph),
            (&self.scratch_that, Spoken::Scratch),
        ] {
            commands.extend(list.iter().map(|p| (p.trim().chars().collect(), what)));
        }
        commands.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        let chars: Vec<char> = text.chars().collect();
        let mut scratch_last = false;
        let mut out = String::new();
        let mut piece: Vec<char> = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            let hit = commands
                .iter()
                .find_map(|(p, what)| match_at(&chars, i, p).map(|n| (n, *what)));
            let Some((n, what)) = hit else {
                piece.push(chars[i]);
                i += 1;
                continue;
            };
            out.push_str(&self.replace(&piece));
            piece.clear();
            i += n;
            // The recogniser's punctuation after the command, and the space after that.
            while i < chars.len() && matches!(chars[i], '.' | ',' | '!' | '?' | ';' | ':') {
                i += 1;
            }
            while i < chars.len() && chars[i].is_whitespace() {
                i += 1;
            }
            match what {
                Spoken::NewLine | Spoken::NewParagraph => {
                    let kept = out.trim_end().len();
                    out.truncate(kept);
                    out.push_str(if what == Spoken::NewLine {
                        "\n"
                    } else {
                        "\n\n"
                    });
                }
                Spoken::Scratch if out.trim().is_empty() => {
                    scratch_last = true;
                    out.clear();
                }
                Spoken::Scratch => out.clear(),
            }
        }
        out.push_str(&self.replace(&piece));
        // Spaces at the ends go (the output adds its own separator); line breaks said stay.
        let text = out
            .trim_matches(|c: char| c.is_whitespace() && c != '\n')
            .to_owned();
        Dictated { scratch_last, text }
    }

    /// `text` with the replacements applied (left to right, longest rule first, never
    /// re-scanning what a replacement put in).
    fn replace(&self, text: &[char]) -> String {
        if self.replacements.is_empty() {
            return text.iter().collect();
        }
        let mut rules: Vec<(Vec<char>, &str)> = self
            .replacements
            .iter()
            .map(|(from, to)| (from.trim().chars().collect(), to.as_str()))
            .collect();
        rules.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        let mut out = String::new();
        let mut i = 0;
        while i < text.len() {
            match rules
                .iter()
                .find_map(|(p, to)| match_at(text, i, p).map(|n| (n, *to)))
            {
                Some((n, to)) => {
                    out.push_str(&in_case_of(&text[i..i + n], to));
                    i += n;
                }
                None => {
                    out.push(text[i]);
                    i += 1;
                }
            }
        }
        out
    }
}

/// The English command phrases (`[dictation] commands = true`).
pub fn english_commands() -> Rules {
    Rules {
        replacements: Vec::new(),
        new_line: vec!["new line".into()],
        new_paragraph: vec!["new paragraph".into()],
        scratch_that: vec!["scratch that".into()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(replacements: &[(&str, &str)]) -> Rules {
        Rules {
            replacements: replacements
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            ..english_commands()
        }
    }

    fn said(text: &str) -> Dictated {
        Dictated {
            scratch_last: false,
            text: text.to_owned(),
        }
    }

    #[test]
    fn replacements_are_whole_word_and_case_aware() {
        let r = rules(&[
            ("swiktation", "swictation"),
            ("open ai", "OpenAI"),
            ("cafe", "café"),
            ("em dash", "—"),
        ]);
        let cases: &[(&str, &str)] = &[
            ("swiktation works", "swictation works"),
            ("Swiktation works.", "Swictation works."),
            ("I SAID SWIKTATION!", "I SAID SWICTATION!"),
            // Not inside a longer word.
            (
                "swiktations and reswiktation",
                "swiktations and reswiktation",
            ),
            // Punctuation is a word boundary.
            ("(swiktation), swiktation.", "(swictation), swictation."),
            // Multi-word rules, across any whitespace; a capitalised rule kept as written.
            ("ask open  ai now", "ask OpenAI now"),
            ("Open AI said", "OpenAI said"),
            ("the cafe’s menu", "the cafe’s menu"),
            ("a cafe, a Cafe", "a café, a Café"),
            ("yes em dash no", "yes — no"),
            // What a replacement put in is not matched again.
            ("", ""),
        ];
        for (heard, want) in cases {
            assert_eq!(r.apply(heard), said(want), "{heard:?}");
        }
    }

    #[test]
    fn spoken_commands_edit_the_text() {
        let r = rules(&[]);
        let cases: &[(&str, bool, &str)] = &[
            (
                "Dear John, new line. How are you?",
                false,
                "Dear John,\nHow are you?",
            ),
            (
                "Dear John new line how are you",
                false,
                "Dear John\nhow are you",
            ),
            ("First. New paragraph. Second.", false, "First.\n\nSecond."),
            ("Closing words, new line.", false, "Closing words,\n"),
            ("New line. Hello", false, "\nHello"),
            // Scratch that: what came before in this utterance goes.
            (
                "I like cats. Scratch that. I like dogs.",
                false,
                "I like dogs.",
            ),
            ("one new line two scratch that three", false, "three"),
            // Said first (or alone), it deletes the utterance delivered before.
            ("Scratch that.", true, ""),
            ("scratch that, I meant this", true, "I meant this"),
            // Not commands: other words around them.
            ("a newline character", false, "a newline character"),
            ("scratch thatch", false, "scratch thatch"),
            ("renew lines", false, "renew lines"),
        ];
        for (heard, scratch_last, want) in cases {
            assert_eq!(
                r.apply(heard),
                Dictated {
                    scratch_last: *scratch_last,
                    text: (*want).to_owned()
                },
                "{heard:?}"
            );
        }
    }

    #[test]
    fn commands_come_before_replacements() {
        // A replacement cannot make a command, and a command's words are not replaced.
        let r = rules(&[("line", "row"), ("zap", "scratch that")]);
        assert_eq!(r.apply("zap it"), said("scratch that it"));
        assert_eq!(r.apply("one line, new line two"), said("one row,\ntwo"));
    }

    #[test]
    fn no_rules_pass_text_through() {
        let r = Rules::default();
        assert!(r.is_empty());
        for t in ["New line. Scratch that.", "  spaced  ", "é ’ —"] {
            assert_eq!(r.apply(t), said(t.trim()));
        }
    }

    #[test]
    fn configured_phrases_replace_the_english_ones() {
        let r = Rules {
            new_line: vec!["nouvelle ligne".into()],
            scratch_that: vec!["efface ça".into()],
            ..Rules::default()
        };
        assert_eq!(
            r.apply("Bonjour, nouvelle ligne. Ça va"),
            said("Bonjour,\nÇa va")
        );
        assert_eq!(
            r.apply("Efface ça."),
            Dictated {
                scratch_last: true,
                text: String::new()
            }
        );
        assert_eq!(r.apply("new line"), said("new line"));
    }
}
