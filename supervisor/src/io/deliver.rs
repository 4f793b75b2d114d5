//! Delivering what the dictation rules made of a transcript to the [`Output`]: text, and the
//! deletion of the last delivered utterance ("scratch that") where the output can take one
//! back: typed text is erased with backspaces, a file is cut back to before its last line.
//! Standard output and the clipboard cannot take text back; asking them is an error that
//! says so.
//!
//! Typing that fails (a tool that hangs is killed after its deadline, see
//! [`crate::io::output`]) is never tried again, since part of the text may have been typed: the
//! whole text goes to the clipboard instead, and the error says where it is.

use std::io::Write as _;

use crate::io::output::{
    choose_clipboard_tool, copy, run_tool, typed, Output, OutputError, Session, Tool, Typer,
    WTYPE_WAKE,
};

/// One thing for the output thread to do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing {
    /// Deliver this text.
    Text(String),
    /// Delete the last text delivered.
    ScratchLast,
}

/// What was delivered last, as far as taking it back goes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Last {
    /// Characters typed (the separator included).
    Typed(usize),
    /// The file's length before the last line was appended.
    FileLen(u64),
}

/// An [`Output`] that remembers its last delivery.
#[derive(Debug)]
pub struct Deliverer {
    output: Output,
    last: Option<Last>,
}

impl Deliverer {
    /// Delivers to `output`.
    pub fn new(output: Output) -> Self {
        Self { output, last: None }
    }

    /// The output's description, for logs.
    pub fn describe(&self) -> String {
        self.output.describe()
    }

    /// Carries out one [`Outgoing`].
    pub fn deliver(&mut self, what: &Outgoing) -> Result<(), OutputError> {
        match what {
            Outgoing::Text(text) => {
                let before = match &self.output {
                    Output::File { file, .. } => file.metadata().ok().map(|m| m.len()),
                    _ => None,
                };
                if let Err(e) = self.output.write(text) {
                    self.last = None;
                    return Err(match (&self.output, e) {
                        (Output::Type(_), OutputError::Tool { program, reason }) => {
                            OutputError::Tool {
                                program,
                                reason: format!("{reason}; {}", keep_on_clipboard(text)),
                            }
                        }
                        (_, e) => e,
                    });
                }
                self.last = match (&self.output, before) {
                    (Output::Type(_) | Output::Paste { .. }, _) => {
                        Some(Last::Typed(typed(text).chars().count()))
                    }
                    (Output::File { .. }, Some(len)) => Some(Last::FileLen(len)),
                    _ => None,
                };
                Ok(())
            }
            Outgoing::ScratchLast => self.scratch(),
        }
    }

    fn scratch(&mut self) -> Result<(), OutputError> {
        let fail = |reason: &str| OutputError::Tool {
            program: "scratch that",
            reason: reason.to_owned(),
        };
        match (&mut self.output, self.last.take()) {
            (_, None) => Err(fail("nothing delivered to take back")),
            (Output::Type(t) | Output::Paste { typer: t, .. }, Some(Last::Typed(n))) => {
                let t = *t;
                let n_s = n.to_string();
                let args: Vec<&str> = match t {
                    Typer::Xdotool => vec![
                        "key",
                        "--clearmodifiers",
                        "--delay",
                        "0",
                        "--repeat",
                        &n_s,
                        "BackSpace",
                    ],
                    Typer::Wtype => WTYPE_WAKE
                        .into_iter()
                        .chain(std::iter::repeat_n(["-k", "BackSpace"], n).flatten())
                        .collect(),
                    // Linux key code 14 is Backspace: press, release.
                    Typer::Ydotool => std::iter::once("key")
                        .chain(std::iter::repeat_n(["14:1", "14:0"], n).flatten())
                        .collect(),
                };
                run_tool(t.program(), &args, None)
            }
            (Output::File { file, path }, Some(Last::FileLen(len))) => file
                .set_len(len)
                .and_then(|_| file.flush())
                .map_err(|source| OutputError::File {
                    path: path.clone(),
                    source,
                }),
            (Output::Stdout, _) => Err(fail(
                "standard output cannot take back what it printed (use output.mode = \"type\" or \"file\")",
            )),
            (Output::Clipboard(_), _) => Err(fail(
                "the clipboard cannot take back what was pasted from it (use output.mode = \"type\" or \"file\")",
            )),
            _ => Err(fail("the output changed since the last delivery")),
        }
    }
}

/// Puts `text` on the clipboard after typing failed; says where the text is.
fn keep_on_clipboard(text: &str) -> String {
    let Some(c) = choose_clipboard_tool(&Session::from_env()) else {
        return "the text could not be kept on a clipboard (no display)".to_owned();
    };
    let copied = copy(c, text);
    match copied {
        Ok(()) => format!(
            "not typed again; the whole text is on the clipboard ({}) instead",
            c.program()
        ),
        Err(e) => format!("not typed again, and it could not be kept on the clipboard: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{OutputConfig, OutputMode, TypeTool};
    use crate::io::output::Session;

    #[test]
    fn a_file_loses_its_last_line_on_scratch() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("out.txt");
        let cfg = OutputConfig {
            mode: OutputMode::File,
            file: Some(path.clone()),
            type_tool: TypeTool::Auto,
            ..OutputConfig::default()
        };
        let mut d = Deliverer::new(Output::open(&cfg, &Session::default()).expect("open"));
        d.deliver(&Outgoing::Text("one".into())).expect("one");
        d.deliver(&Outgoing::Text("two\nlines".into()))
            .expect("two");
        d.deliver(&Outgoing::ScratchLast).expect("scratch");
        d.deliver(&Outgoing::Text("three".into())).expect("three");
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            "one\nthree\n"
        );
        // Only one level: a second scratch has nothing to take back... after a scratch.
        d.deliver(&Outgoing::ScratchLast).expect("scratch three");
        let e = d
            .deliver(&Outgoing::ScratchLast)
            .err()
            .map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("nothing delivered")));
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "one\n");
    }

    #[test]
    fn stdout_cannot_scratch_and_says_so() {
        let mut d = Deliverer::new(Output::Stdout);
        d.last = Some(Last::Typed(3));
        let e = d
            .deliver(&Outgoing::ScratchLast)
            .err()
            .map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("cannot take back")));
    }
}
