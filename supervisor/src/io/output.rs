//! Where transcripts go: standard output, a file, the focused window (typed by wtype, ydotool or
//! xdotool, or pasted: the clipboard set, the paste key pressed, the user's clipboard put back),
//! or the clipboard (wl-copy or xclip).
//!
//! Text goes to the tools on their standard input, never on their command line, where any user
//! of the machine could read it in `ps`.
//!
//! The tool is chosen from the session (`XDG_SESSION_TYPE`, `WAYLAND_DISPLAY`, `DISPLAY`) by
//! pure functions ([`choose_type_tool`], [`choose_clipboard_tool`]) so the choice is tested
//! without a desktop. [`Output::open`] checks that the chosen tool exists before the daemon says
//! it is ready: a missing tool is an error naming it and how to install it, not a silent
//! transcript lost at the first utterance.
//!
//! Writing may block (a tool that waits on the compositor), so the daemon calls
//! [`Output::write`] from its own thread, never from the main loop.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::config::{KeyName, OutputConfig, OutputMode, PasteKey, TypeTool};

/// How long a typing or clipboard tool may take for one transcript before it is killed: a tool
/// stuck on a compositor must not hold up the transcripts after it forever.
const TOOL_TIMEOUT: Duration = Duration::from_secs(10);

/// The graphical session, as far as choosing a tool goes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Session {
    /// `$XDG_SESSION_TYPE` (`wayland`, `x11`, `tty`), if set and non-empty.
    pub session_type: Option<String>,
    /// `$WAYLAND_DISPLAY`, if set and non-empty.
    pub wayland_display: Option<String>,
    /// `$DISPLAY`, if set and non-empty.
    pub display: Option<String>,
    /// `$XDG_CURRENT_DESKTOP` (`GNOME`, `KDE`, `sway`, ...), if set and non-empty.
    pub desktop: Option<String>,
}

impl Session {
    /// From the process environment.
    pub fn from_env() -> Session {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Session {
            session_type: var("XDG_SESSION_TYPE"),
            wayland_display: var("WAYLAND_DISPLAY"),
            display: var("DISPLAY"),
            desktop: var("XDG_CURRENT_DESKTOP"),
        }
    }

    /// Whether the desktop is GNOME or KDE, whose compositors offer no virtual-keyboard
    /// protocol for wtype.
    pub fn is_gnome_or_kde(&self) -> bool {
        self.desktop.as_deref().is_some_and(|d| {
            d.split(':')
                .any(|p| p.eq_ignore_ascii_case("gnome") || p.eq_ignore_ascii_case("kde"))
        })
    }

    /// Whether this is a Wayland session: the session type says so, or (under a service
    /// manager that does not pass the session type) a Wayland display is set.
    pub fn is_wayland(&self) -> bool {
        match self.session_type.as_deref() {
            Some("wayland") => true,
            Some("x11") => false,
            _ => self.wayland_display.is_some(),
        }
    }

    /// Whether an X server is reachable (`$DISPLAY`; XWayland counts).
    pub fn has_x(&self) -> bool {
        self.display.is_some()
    }
}

/// A typing tool, resolved (never `auto`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Typer {
    /// wtype: Wayland's virtual-keyboard protocol (wlroots compositors: sway, Hyprland, river).
    Wtype,
    /// ydotool: the kernel's uinput, so it works everywhere, but needs its daemon (ydotoold).
    Ydotool,
    /// xdotool: X11 (and XWayland windows only).
    Xdotool,
}

/// A clipboard tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clipper {
    /// wl-copy (wl-clipboard), Wayland.
    WlCopy,
    /// xclip, X11.
    Xclip,
}

/// A program the output needs, with what to tell a user who lacks it.
pub trait Tool {
    /// The executable's name.
    fn program(&self) -> &'static str;
    /// How to install it.
    fn install_hint(&self) -> &'static str;
}

impl Tool for Typer {
    fn program(&self) -> &'static str {
        match self {
            Typer::Wtype => "wtype",
            Typer::Ydotool => "ydotool",
            Typer::Xdotool => "xdotool",
        }
    }
    fn install_hint(&self) -> &'static str {
        match self {
            Typer::Wtype => "sudo apt install wtype",
            Typer::Ydotool => {
                "sudo apt install ydotool, and run ydotoold (it needs access to /dev/uinput)"
            }
            Typer::Xdotool => "sudo apt install xdotool",
        }
    }
}

impl Tool for Clipper {
    fn program(&self) -> &'static str {
        match self {
            Clipper::WlCopy => "wl-copy",
            Clipper::Xclip => "xclip",
        }
    }
    fn install_hint(&self) -> &'static str {
        match self {
            Clipper::WlCopy => "sudo apt install wl-clipboard",
            Clipper::Xclip => "sudo apt install xclip",
        }
    }
}

/// Which typing tool to use: the configured one, or for `auto` wtype under Wayland (ydotool
/// under GNOME's and KDE's Wayland, which do not offer the virtual-keyboard protocol wtype
/// needs), xdotool under X11, and ydotool otherwise (a console or an unknown session: uinput
/// needs no display).
pub fn choose_type_tool(preference: TypeTool, session: &Session) -> Typer {
    type_tool_choice(preference, session).0
}

/// [`choose_type_tool`], with why in words (for `doctor`).
pub fn type_tool_choice(preference: TypeTool, session: &Session) -> (Typer, &'static str) {
    match preference {
        TypeTool::Wtype => (Typer::Wtype, "configured (output.type_tool)"),
        TypeTool::Ydotool => (Typer::Ydotool, "configured (output.type_tool)"),
        TypeTool::Xdotool => (Typer::Xdotool, "configured (output.type_tool)"),
        TypeTool::Auto if session.is_wayland() && session.is_gnome_or_kde() => (
            Typer::Ydotool,
            "a GNOME or KDE Wayland session: their compositors do not offer the virtual-keyboard protocol wtype needs",
        ),
        TypeTool::Auto if session.is_wayland() => (Typer::Wtype, "a Wayland session"),
        TypeTool::Auto if session.has_x() => (Typer::Xdotool, "an X11 display"),
        TypeTool::Auto => (
            Typer::Ydotool,
            "no display (ydotool types through the kernel's uinput)",
        ),
    }
}

/// Which clipboard tool to use: wl-copy under Wayland, xclip under X11; `None` without either
/// display (there is no clipboard on a console).
pub fn choose_clipboard_tool(session: &Session) -> Option<Clipper> {
    if session.is_wayland() {
        Some(Clipper::WlCopy)
    } else if session.has_x() {
        Some(Clipper::Xclip)
    } else {
        None
    }
}

/// The first executable called `name` on `$PATH`.
pub fn find_program(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Why transcripts cannot be output.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// The tool the mode needs is not installed.
    #[error("output.mode = \"{mode}\" needs `{program}`, which is not on PATH: install it ({hint}), or choose another output (--output stdout|file|type|clipboard)")]
    MissingTool {
        /// The mode (`type`, `clipboard`).
        mode: &'static str,
        /// The program.
        program: &'static str,
        /// How to install it.
        hint: &'static str,
    },
    /// There is no display to put a clipboard on.
    #[error("output.mode = \"clipboard\" needs a graphical session (neither WAYLAND_DISPLAY nor DISPLAY is set); under systemd run `systemctl --user import-environment WAYLAND_DISPLAY DISPLAY`")]
    NoDisplay,
    /// `mode = "file"` without a file.
    #[error("output.mode = \"file\" needs output.file (or --output-file PATH)")]
    NoFile,
    /// The file cannot be opened or written.
    #[error("output file {}: {source}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// A tool ran but failed.
    #[error("{program} failed: {reason}")]
    Tool {
        /// The program.
        program: &'static str,
        /// Exit status or error, and its stderr.
        reason: String,
    },
    /// Writing to standard output failed (a closed pipe).
    #[error("standard output: {0}")]
    Stdout(#[source] std::io::Error),
}

/// An opened transcript sink.
#[derive(Debug)]
pub enum Output {
    /// One line per transcript on standard output.
    Stdout,
    /// Appended, one line per transcript.
    File {
        /// The open file (append mode).
        file: File,
        /// Its path, for errors.
        path: PathBuf,
    },
    /// Typed into the focused window.
    Type(Typer),
    /// Copied to the clipboard (each transcript replaces the last).
    Clipboard(Clipper),
    /// Pasted into the focused window.
    Paste {
        /// Presses the paste key.
        typer: Typer,
        /// Holds the text for the paste.
        clipper: Clipper,
        /// The key that pastes.
        key: PasteKey,
        /// How long after the key the user's clipboard is put back.
        restore_after: Duration,
    },
}

impl Output {
    /// Opens the sink `cfg` describes in `session`: opens the file, or checks that the tool is
    /// installed.
    pub fn open(cfg: &OutputConfig, session: &Session) -> Result<Output, OutputError> {
        match cfg.mode {
            OutputMode::Stdout => Ok(Output::Stdout),
            OutputMode::File => {
                let path = cfg.file.clone().ok_or(OutputError::NoFile)?;
                let file = open_append(&path)?;
                Ok(Output::File { file, path })
            }
            OutputMode::Type => {
                let t = choose_type_tool(cfg.type_tool, session);
                require(&t, "type")?;
                Ok(Output::Type(t))
            }
            OutputMode::Clipboard => {
                let c = choose_clipboard_tool(session).ok_or(OutputError::NoDisplay)?;
                require(&c, "clipboard")?;
                Ok(Output::Clipboard(c))
            }
            OutputMode::Paste => {
                let clipper = choose_clipboard_tool(session).ok_or(OutputError::NoDisplay)?;
                require(&clipper, "paste")?;
                let typer = choose_type_tool(cfg.type_tool, session);
                require(&typer, "paste")?;
                Ok(Output::Paste {
                    typer,
                    clipper,
                    key: cfg.paste_key,
                    restore_after: Duration::from_millis(cfg.paste_restore_ms),
                })
            }
        }
    }

    /// A short description for logs (`stdout`, `type via wtype`).
    pub fn describe(&self) -> String {
        match self {
            Output::Stdout => "stdout".into(),
            Output::File { path, .. } => format!("file {}", path.display()),
            Output::Type(t) => format!("typing via {}", t.program()),
            Output::Clipboard(c) => format!("clipboard via {}", c.program()),
            Output::Paste {
                typer,
                clipper,
                key,
                ..
            } => format!(
                "pasting with {key} via {} and {}",
                clipper.program(),
                typer.program()
            ),
        }
    }

    /// Outputs one transcript. Typed text gets a trailing space so that consecutive utterances
    /// do not run together; line-based sinks get a newline.
    pub fn write(&mut self, text: &str) -> Result<(), OutputError> {
        match self {
            Output::Stdout => {
                let mut out = std::io::stdout().lock();
                writeln!(out, "{text}")
                    .and_then(|_| out.flush())
                    .map_err(OutputError::Stdout)
            }
            Output::File { file, path } => writeln!(file, "{text}")
                .and_then(|_| file.flush())
                .map_err(|source| OutputError::File {
                    path: path.clone(),
                    source,
                }),
            Output::Type(t) => {
                let args: &[&str] = match t {
                    Typer::Wtype => &[
                        WTYPE_WAKE[0],
                        WTYPE_WAKE[1],
                        WTYPE_WAKE[2],
                        WTYPE_WAKE[3],
                        "-",
                    ],
                    // `/dev/stdin`, not `-`: ydotool 0.1 reads only a path.
                    Typer::Ydotool => &["type", "--file", "/dev/stdin"],
                    Typer::Xdotool => &["type", "--clearmodifiers", "--file", "-"],
                };
                run_tool(t.program(), args, Some(&typed(text)))
            }
            Output::Clipboard(c) => copy(*c, text),
            Output::Paste {
                typer,
                clipper,
                key,
                restore_after,
            } => paste(*typer, *clipper, *key, *restore_after, &typed(text)),
        }
    }
}

/// What wtype presses before the text: Shift, pressed and released. A new virtual keyboard's first
/// key can reach the window before its keymap does and be lost (seen here under load: the first
/// letter of a segment typed into foot under sway, as voxtype's users saw it in Discord), so that
/// first key is one that types nothing.
pub const WTYPE_WAKE: [&str; 4] = ["-P", "Shift_L", "-p", "Shift_L"];

/// Puts `text` on the clipboard.
pub fn copy(clipper: Clipper, text: &str) -> Result<(), OutputError> {
    match clipper {
        Clipper::WlCopy => run_tool("wl-copy", &[], Some(text)),
        Clipper::Xclip => run_tool("xclip", &["-selection", "clipboard"], Some(text)),
    }
}

/// The clipboard's text, if it holds text (`None`: empty, or something else, such as an image).
pub fn clipboard_text(clipper: Clipper) -> Option<String> {
    let out = match clipper {
        Clipper::WlCopy => run_tool_output("wl-paste", &["--no-newline", "--type", "text"], None),
        Clipper::Xclip => run_tool_output(
            "xclip",
            &["-o", "-selection", "clipboard", "-target", "UTF8_STRING"],
            None,
        ),
    };
    out.ok().and_then(|b| String::from_utf8(b).ok())
}

/// How long the clipboard may take to offer the text just copied before the paste key is pressed.
const CLIPBOARD_READY: Duration = Duration::from_secs(2);

/// Pastes `text` into the focused window: keeps the clipboard's text, puts `text` there (and
/// waits until the clipboard offers it, so the key never pastes what was there before), presses
/// `key`, waits `restore_after` for the window to read it, and puts the kept text back. If
/// anything fails after the copy, the text stays on the clipboard and the error says so.
fn paste(
    typer: Typer,
    clipper: Clipper,
    key: PasteKey,
    restore_after: Duration,
    text: &str,
) -> Result<(), OutputError> {
    let kept = clipboard_text(clipper);
    copy(clipper, text)?;
    let start = Instant::now();
    while clipboard_text(clipper).as_deref() != Some(text) {
        if start.elapsed() > CLIPBOARD_READY {
            return Err(OutputError::Tool {
                program: clipper.program(),
                reason: format!(
                    "the clipboard did not offer the text within {} s, so no paste key was pressed",
                    CLIPBOARD_READY.as_secs()
                ),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let args = paste_key_args(typer, key);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run_tool(typer.program(), &args, None).map_err(|e| OutputError::Tool {
        program: typer.program(),
        reason: format!(
            "pressing {key}: {e}; the text is on the clipboard ({})",
            clipper.program()
        ),
    })?;
    std::thread::sleep(restore_after);
    match kept {
        Some(old) => copy(clipper, &old).map_err(|e| OutputError::Tool {
            program: clipper.program(),
            reason: format!("pasted, but your clipboard could not be put back: {e}"),
        }),
        None => Ok(()),
    }
}

/// The arguments that make `typer` press `key` (modifiers down, the key, modifiers up).
pub fn paste_key_args(typer: Typer, key: PasteKey) -> Vec<String> {
    let mods = [
        (key.ctrl, "ctrl", "ctrl", 29),
        (key.shift, "shift", "shift", 42),
        (key.alt, "alt", "alt", 56),
        (key.super_, "logo", "super", 125),
    ];
    let held = mods.iter().filter(|m| m.0);
    match typer {
        Typer::Wtype => {
            let name = match key.key {
                KeyName::Letter(c) => c.to_string(),
                KeyName::Insert => "Insert".to_owned(),
            };
            let mut a: Vec<String> = held
                .clone()
                .flat_map(|m| ["-M".into(), m.1.into()])
                .collect();
            a.extend(["-k".into(), name]);
            a.extend(held.rev().flat_map(|m| ["-m".into(), m.1.into()]));
            a
        }
        Typer::Xdotool => {
            let name = match key.key {
                KeyName::Letter(c) => c.to_string(),
                KeyName::Insert => "Insert".to_owned(),
            };
            let combo: Vec<&str> = held.map(|m| m.2).chain([name.as_str()]).collect();
            vec!["key".into(), "--clearmodifiers".into(), combo.join("+")]
        }
        Typer::Ydotool => {
            // Linux input key codes, pressed (`:1`) and released (`:0`).
            let code = match key.key {
                KeyName::Letter(c) => linux_letter_code(c),
                KeyName::Insert => 110,
            };
            let mut a = vec!["key".to_owned()];
            a.extend(held.clone().map(|m| format!("{}:1", m.3)));
            a.extend([format!("{code}:1"), format!("{code}:0")]);
            a.extend(held.rev().map(|m| format!("{}:0", m.3)));
            a
        }
    }
}

/// The Linux input key code of a letter on a US layout (`KEY_A` is 30).
fn linux_letter_code(c: char) -> u16 {
    const ROWS: [(&str, u16); 3] = [("qwertyuiop", 16), ("asdfghjkl", 30), ("zxcvbnm", 44)];
    ROWS.iter()
        .find_map(|(row, first)| row.find(c).map(|i| first + i as u16))
        .unwrap_or(47)
}

/// What typing `text` types: the text and a space to keep it apart from the next one (none
/// after a line break the speaker asked for).
pub fn typed(text: &str) -> String {
    if text.ends_with('\n') {
        text.to_owned()
    } else {
        format!("{text} ")
    }
}

fn open_append(path: &Path) -> Result<File, OutputError> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| OutputError::File {
            path: path.to_path_buf(),
            source,
        })
}

fn require(tool: &impl Tool, mode: &'static str) -> Result<(), OutputError> {
    match find_program(tool.program()) {
        Some(_) => Ok(()),
        None => Err(OutputError::MissingTool {
            mode,
            program: tool.program(),
            hint: tool.install_hint(),
        }),
    }
}

/// Runs `program args`, optionally writing `stdin`, and waits at most [`TOOL_TIMEOUT`].
pub(crate) fn run_tool(
    program: &'static str,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<(), OutputError> {
    run(program, args, stdin, false).map(|_| ())
}

/// [`run_tool`], returning what the tool printed.
pub(crate) fn run_tool_output(
    program: &'static str,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<Vec<u8>, OutputError> {
    run(program, args, stdin, true)
}

fn run(
    program: &'static str,
    args: &[&str],
    stdin: Option<&str>,
    capture: bool,
) -> Result<Vec<u8>, OutputError> {
    let fail = |reason: String| OutputError::Tool { program, reason };
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(if capture {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(e.to_string()))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // Closed when written: the tool reads to the end of its input.
        pipe.write_all(text.as_bytes())
            .map_err(|e| fail(format!("writing its input: {e}")))?;
    }
    // Read on the side, so a tool that prints more than a pipe holds cannot stall.
    let printed = child.stdout.take().map(|mut out| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            use std::io::Read;
            let _ = out.read_to_end(&mut buf);
            buf
        })
    });
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if start.elapsed() > TOOL_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(fail(format!(
                    "no exit within {} s; killed",
                    TOOL_TIMEOUT.as_secs()
                )));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(fail(e.to_string())),
        }
    };
    if status.success() {
        return Ok(printed.and_then(|t| t.join().ok()).unwrap_or_default());
    }
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut err);
    }
    Err(fail(format!("{status}: {}", err.trim())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(t: Option<&str>, wayland: bool, x: bool) -> Session {
        Session {
            session_type: t.map(String::from),
            wayland_display: wayland.then(|| "wayland-0".to_owned()),
            display: x.then(|| ":0".to_owned()),
            desktop: None,
        }
    }

    #[test]
    fn gnome_and_kde_wayland_type_through_ydotool() {
        let on = |desktop: &str, wayland: bool| Session {
            desktop: Some(desktop.to_owned()),
            ..session(Some(if wayland { "wayland" } else { "x11" }), wayland, true)
        };
        let cases = [
            (on("GNOME", true), Typer::Ydotool),
            (on("ubuntu:GNOME", true), Typer::Ydotool),
            (on("KDE", true), Typer::Ydotool),
            (on("sway", true), Typer::Wtype),
            (on("Hyprland", true), Typer::Wtype),
            // Under X11 GNOME and KDE take xdotool like any X server.
            (on("GNOME", false), Typer::Xdotool),
        ];
        for (s, want) in cases {
            assert_eq!(choose_type_tool(TypeTool::Auto, &s), want, "{s:?}");
        }
        let (_, why) = type_tool_choice(TypeTool::Auto, &on("KDE", true));
        assert!(why.contains("virtual-keyboard"), "{why}");
    }

    #[test]
    fn auto_typing_tool_follows_the_session() {
        let cases = [
            (session(Some("wayland"), true, true), Typer::Wtype),
            (session(Some("wayland"), false, false), Typer::Wtype),
            (session(Some("x11"), false, true), Typer::Xdotool),
            // X11 declared, even with a stray WAYLAND_DISPLAY: the session type wins.
            (session(Some("x11"), true, true), Typer::Xdotool),
            // Under systemd the session type is often missing: the displays decide.
            (session(None, true, true), Typer::Wtype),
            (session(None, false, true), Typer::Xdotool),
            (session(Some("tty"), false, false), Typer::Ydotool),
            (session(None, false, false), Typer::Ydotool),
        ];
        for (s, want) in cases {
            assert_eq!(choose_type_tool(TypeTool::Auto, &s), want, "{s:?}");
        }
    }

    #[test]
    fn paste_keys_become_each_tools_arguments() {
        let k = |s: &str| s.parse::<PasteKey>().expect(s);
        let cases: [(Typer, &str, &[&str]); 7] = [
            (
                Typer::Wtype,
                "ctrl+v",
                &["-M", "ctrl", "-k", "v", "-m", "ctrl"],
            ),
            (
                Typer::Wtype,
                "ctrl+shift+v",
                &[
                    "-M", "ctrl", "-M", "shift", "-k", "v", "-m", "shift", "-m", "ctrl",
                ],
            ),
            (
                Typer::Wtype,
                "shift+insert",
                &["-M", "shift", "-k", "Insert", "-m", "shift"],
            ),
            (
                Typer::Xdotool,
                "ctrl+shift+v",
                &["key", "--clearmodifiers", "ctrl+shift+v"],
            ),
            (
                Typer::Xdotool,
                "super+insert",
                &["key", "--clearmodifiers", "super+Insert"],
            ),
            (
                Typer::Ydotool,
                "ctrl+v",
                &["key", "29:1", "47:1", "47:0", "29:0"],
            ),
            (
                Typer::Ydotool,
                "ctrl+shift+a",
                &["key", "29:1", "42:1", "30:1", "30:0", "42:0", "29:0"],
            ),
        ];
        for (typer, key, want) in cases {
            assert_eq!(paste_key_args(typer, k(key)), want, "{typer:?} {key}");
        }
        assert_eq!(linux_letter_code('q'), 16);
        assert_eq!(linux_letter_code('l'), 38);
        assert_eq!(linux_letter_code('m'), 50);
    }

    #[test]
    fn an_explicit_typing_tool_is_kept() {
        let s = session(Some("wayland"), true, false);
        assert_eq!(choose_type_tool(TypeTool::Xdotool, &s), Typer::Xdotool);
        assert_eq!(choose_type_tool(TypeTool::Ydotool, &s), Typer::Ydotool);
        assert_eq!(
            choose_type_tool(TypeTool::Wtype, &session(None, false, true)),
            Typer::Wtype
        );
    }

    #[test]
    fn clipboard_tool_follows_the_session() {
        assert_eq!(
            choose_clipboard_tool(&session(Some("wayland"), true, true)),
            Some(Clipper::WlCopy)
        );
        assert_eq!(
            choose_clipboard_tool(&session(None, true, false)),
            Some(Clipper::WlCopy)
        );
        assert_eq!(
            choose_clipboard_tool(&session(Some("x11"), false, true)),
            Some(Clipper::Xclip)
        );
        assert_eq!(
            choose_clipboard_tool(&session(Some("tty"), false, false)),
            None
        );
    }

    #[test]
    fn a_missing_tool_names_it_and_how_to_install_it() {
        // A PATH-independent check: a program that cannot exist.
        struct Nope;
        impl Tool for Nope {
            fn program(&self) -> &'static str {
                "swictation-no-such-tool"
            }
            fn install_hint(&self) -> &'static str {
                "sudo apt install nothing"
            }
        }
        let e = require(&Nope, "type")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.contains("swictation-no-such-tool") && e.contains("sudo apt install nothing"),
            "{e}"
        );
    }

    #[test]
    fn file_output_appends_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("out.txt");
        std::fs::write(&path, "before\n").expect("seed");
        let cfg = OutputConfig {
            mode: OutputMode::File,
            file: Some(path.clone()),
            type_tool: TypeTool::Auto,
            ..OutputConfig::default()
        };
        let mut out = Output::open(&cfg, &Session::default()).expect("open");
        out.write("one").expect("write");
        out.write("two").expect("write");
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            "before\none\ntwo\n"
        );
        let no_file = OutputConfig { file: None, ..cfg };
        assert!(matches!(
            Output::open(&no_file, &Session::default()),
            Err(OutputError::NoFile)
        ));
    }

    #[test]
    fn clipboard_without_a_display_is_a_clear_error() {
        let cfg = OutputConfig {
            mode: OutputMode::Clipboard,
            file: None,
            type_tool: TypeTool::Auto,
            ..OutputConfig::default()
        };
        let e = Output::open(&cfg, &session(Some("tty"), false, false))
            .err()
            .map(|e| e.to_string());
        assert!(
            e.as_deref()
                .is_some_and(|e| e.contains("graphical session")),
            "{e:?}"
        );
    }
}
