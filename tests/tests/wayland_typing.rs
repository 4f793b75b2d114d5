//! Typing into a real Wayland window: a headless sway (wlroots' headless backend and pixman
//! renderer: no GPU, no seat, no screen), the daemon typing the transcripts of real speech with
//! the real `wtype` into a real `foot` terminal whose shell copies its input to a file
//! (`stty raw -echo; cat > FILE`), non-ASCII and a 300-character segment included; and pasting
//! them (`output.mode = "paste"`: `wl-copy`, then ctrl+shift+v through `wtype`), with the
//! clipboard's earlier text put back afterwards.
//!
//! sway refuses to run as root. Run as root (as CI is), the test creates an unprivileged user
//! (`swictation-wl`) and runs sway and foot as that user, in a runtime directory it owns; the
//! daemon and the clipboard checks connect to that compositor by the socket's full path
//! (`WAYLAND_DISPLAY` may be absolute). Run as anyone else, sway runs as that user.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use swictation_e2e::*;

/// The user sway runs as when the test runs as root.
const USER: &str = "swictation-wl";

/// A headless sway of our own.
struct Sway {
    child: Child,
    /// Its runtime directory (owned by the user it runs as), holding its sockets.
    dir: tempfile::TempDir,
    /// The Wayland socket's full path.
    socket: PathBuf,
    /// Whether clients of the compositor's own must run as [`USER`].
    as_user: bool,
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Creates [`USER`] if it does not exist.
fn ensure_user() {
    let known = Command::new("id")
        .args(["-u", USER])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if known {
        return;
    }
    let out = run_with_deadline(
        Command::new("useradd").args([
            "--system",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            USER,
        ]),
        Duration::from_secs(30),
    );
    assert!(
        out.status.success(),
        "creating the user {USER} for sway (which refuses to run as root): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `program` run as sway itself is: as [`USER`] (through `runuser`) when `as_user`, with `dir` as
/// its runtime, home, config and cache directory, connecting to `socket` if given.
fn own_client(dir: &Path, as_user: bool, socket: Option<&Path>, program: &str) -> Command {
    let mut c = if as_user {
        let mut c = Command::new("runuser");
        c.args(["-u", USER, "--", program]);
        c
    } else {
        Command::new(program)
    };
    c.env("XDG_RUNTIME_DIR", dir)
        .env("HOME", dir)
        .env("XDG_CONFIG_HOME", dir)
        .env("XDG_CACHE_HOME", dir)
        .env("LC_ALL", "C.UTF-8")
        .env_remove("WAYLAND_DISPLAY")
        .env_remove("DISPLAY")
        .env_remove("SWAYSOCK");
    if let Some(s) = socket {
        c.env("WAYLAND_DISPLAY", s);
    }
    c
}

impl Sway {
    fn start() -> Sway {
        let as_user = is_root();
        let dir = tempfile::tempdir().expect("sway's runtime dir");
        if as_user {
            ensure_user();
            let out = run_with_deadline(
                Command::new("chown").arg(USER).arg(dir.path()),
                Duration::from_secs(10),
            );
            assert!(out.status.success(), "chown {USER} {:?}", dir.path());
        }
        let config = dir.path().join("sway.conf");
        std::fs::write(
            &config,
            "output HEADLESS-1 resolution 1280x1024\nxwayland disable\n",
        )
        .expect("sway config");
        let log = std::fs::File::create(dir.path().join("sway.log")).expect("sway log");
        let mut child = own_client(dir.path(), as_user, None, "sway")
            .arg("-c")
            .arg(&config)
            .env("WLR_BACKENDS", "headless")
            .env("WLR_RENDERER", "pixman")
            .env("WLR_LIBINPUT_NO_DEVICES", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("sway (deploy/setup.sh installs it)");
        let start = Instant::now();
        loop {
            let found = std::fs::read_dir(dir.path())
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .find(|p| {
                    let name = p.file_name().unwrap_or_default().to_string_lossy();
                    name.starts_with("wayland-") && !name.ends_with(".lock")
                });
            if let Some(socket) = found {
                return Sway {
                    child,
                    dir,
                    socket,
                    as_user,
                };
            }
            let exited = child.try_wait().ok().flatten();
            if exited.is_some() || start.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "headless sway did not start ({exited:?}): {}",
                    std::fs::read_to_string(dir.path().join("sway.log")).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `program` as the compositor's own client (see [`own_client`]).
    fn cmd(&self, program: &str) -> Command {
        own_client(self.dir.path(), self.as_user, Some(&self.socket), program)
    }

    /// `program` as any other client (this test's user), connecting by the socket's full path.
    fn client(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("WAYLAND_DISPLAY", &self.socket)
            .env("LC_ALL", "C.UTF-8")
            .env_remove("DISPLAY");
        c
    }

    /// A file the compositor's clients may write.
    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Whether the focused window is a foot terminal (from sway's IPC tree).
    fn foot_focused(&self) -> bool {
        let Some(ipc) = std::fs::read_dir(self.dir.path())
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("sway-ipc."))
            })
        else {
            return false;
        };
        let out = run_with_deadline(
            self.cmd("swaymsg")
                .env("SWAYSOCK", ipc)
                .args(["-t", "get_tree"]),
            Duration::from_secs(10),
        );
        fn focused_foot(v: &serde_json::Value) -> bool {
            (v["focused"] == true && v["app_id"] == "foot")
                || ["nodes", "floating_nodes"]
                    .iter()
                    .any(|k| v[k].as_array().is_some_and(|n| n.iter().any(focused_foot)))
        }
        serde_json::from_slice(&out.stdout).is_ok_and(|t: serde_json::Value| focused_foot(&t))
    }

    /// A real terminal whose input lands in `file`, focused.
    fn terminal(&self, file: &Path) -> Child {
        let script = format!("stty raw -echo; exec cat > '{}'", file.display());
        let term = self
            .cmd("foot")
            .args(["sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("foot (deploy/setup.sh installs it)");
        let start = Instant::now();
        while !(file.exists() && self.foot_focused()) {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "foot did not start its shell with the focus: {}",
                std::fs::read_to_string(self.dir.path().join("sway.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        term
    }
}

impl Drop for Sway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The daemon dictating `clips` (paced as speech) into the Wayland session `sway`.
fn dictate(env: &TestEnv, sway: &Sway, mode: &str, clips: &[&Path]) -> (Vec<String>, String) {
    let mut daemon = DaemonProcess::spawn(
        env.cmd()
            .env("WAYLAND_DISPLAY", &sway.socket)
            .env("XDG_SESSION_TYPE", "wayland")
            .env("XDG_CURRENT_DESKTOP", "sway")
            .env("LC_ALL", "C.UTF-8")
            .env_remove("DISPLAY")
            .args(["run", "--output", mode, "--input"])
            .args(clips),
    );
    env.wait_socket();
    let sub = DaemonProcess::spawn(env.cmd().arg("subscribe"));
    let (code, _, log) = daemon.wait(Duration::from_secs(180));
    assert!(code.success(), "daemon failed: {log}");
    (subscribed_transcripts(&sub), log)
}

/// Replacements that put non-ASCII text into the first clip's transcript and make it a long
/// segment (300+ characters: peers' users saw wtype drop characters past about 40).
const REPLACEMENTS: &str = r#"
[dictation.replacements]
"young man" = "young man — a café owner’s son"
leisure = "leisure, which he had long meant to spend on a slow walk along the river past the old mill, the church, the orchard and the long row of cottages at the edge of the village, before coming home at last to sit by the fire and"
"#;

#[test]
fn transcripts_of_real_speech_are_typed_into_foot_by_wtype() {
    let _serial = serial();
    let clips = librivox();
    let sway = Sway::start();
    let env = TestEnv::new();
    let typed = sway.file("typed.txt");
    let mut term = sway.terminal(&typed);
    env.write_config(REPLACEMENTS);
    let (texts, log) = dictate(&env, &sway, "type", &[&clips[0].0, &clips[1].0]);
    assert!(log.contains("typing via wtype"), "{log}");
    assert_eq!(texts.len(), 2, "{texts:?}\n{log}");
    let want = format!("{} {} ", texts[0], texts[1]);
    let got = wait_for_text(&typed, &want);
    let _ = term.kill();
    let _ = term.wait();
    eprintln!("typed {} characters: {got:?}", got.chars().count());
    assert_eq!(got, want, "foot did not receive exactly the transcripts");
    assert!(texts[0].chars().count() >= 300, "{}", texts[0].len());
    for c in ['é', '’', '—'] {
        assert!(texts[1].contains(c), "{c} missing from {:?}", texts[1]);
    }
    assert!(!log.contains("café"), "a transcript in the log:\n{log}");
}

#[test]
fn transcripts_are_pasted_into_foot_and_the_clipboard_put_back() {
    let _serial = serial();
    let clips = librivox();
    let sway = Sway::start();
    let env = TestEnv::new();
    let pasted = sway.file("pasted.txt");
    let mut term = sway.terminal(&pasted);
    // What the user had copied before dictating.
    let before = "the user's own clipboard: naïve — kept";
    // (wl-copy leaves a process serving the clipboard, holding any pipe it was given.)
    let mut copy = sway
        .client("wl-copy")
        .arg(before)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("wl-copy (deploy/setup.sh installs wl-clipboard)");
    let start = Instant::now();
    let copied = loop {
        if let Some(s) = copy.try_wait().expect("wl-copy") {
            break s;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "wl-copy hung");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(copied.success(), "wl-copy: {copied}");
    // A terminal pastes with ctrl+shift+v.
    env.write_config(&format!(
        "[output]\npaste_key = \"ctrl+shift+v\"\n{REPLACEMENTS}"
    ));
    let (texts, log) = dictate(&env, &sway, "paste", &[&clips[1].0]);
    assert!(
        log.contains("pasting with ctrl+shift+v via wl-copy and wtype"),
        "{log}"
    );
    assert_eq!(texts.len(), 1, "{texts:?}\n{log}");
    let want = format!("{} ", texts[0]);
    let got = wait_for_text(&pasted, &want);
    let _ = term.kill();
    let _ = term.wait();
    assert_eq!(got, want, "foot did not receive exactly the transcript");
    assert!(texts[0].contains("café owner’s son"), "{texts:?}");
    // The clipboard holds what the user had copied, not the transcript.
    let clip = run_with_deadline(
        sway.client("wl-paste").arg("--no-newline"),
        Duration::from_secs(10),
    );
    assert!(
        clip.status.success(),
        "{}",
        String::from_utf8_lossy(&clip.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&clip.stdout), before);
}
