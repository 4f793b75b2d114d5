//! Desktop notifications end to end: the daemon's notices reach a real notification server
//! (`dunst`, on an `Xvfb` display) over a private session bus (`dbus-daemon --session`): a
//! worker fault (the ASR worker killed with SIGABRT) and a move off the GPU (scripted GPU
//! readings at 96 %, as in `placement.rs`).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use swictation_e2e::*;

/// Kills and reaps on drop.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_quiet(cmd: &mut Command) -> Reaped {
    Reaped(
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn (deploy/setup.sh installs it)"),
    )
}

fn wait_for(what: &str, limit: Duration, cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out after {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_worker_fault_and_a_move_off_the_gpu_reach_the_notification_server() {
    let _serial = serial();
    let env = TestEnv::new();
    let dir = env.dir.path();
    // A private session bus and an X display for dunst.
    let bus = format!("unix:path={}", dir.join("session-bus").display());
    let _dbus = spawn_quiet(
        Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--address"])
            .arg(&bus),
    );
    wait_for("the session bus", Duration::from_secs(10), || {
        dir.join("session-bus").exists()
    });
    // A display number nobody uses (a killed server leaves its socket and lock behind).
    let n = (300 + std::process::id() % 600..1000)
        .find(|n| {
            !Path::new(&format!("/tmp/.X11-unix/X{n}")).exists()
                && !Path::new(&format!("/tmp/.X{n}-lock")).exists()
        })
        .expect("a free X display number");
    let display = format!(":{n}");
    let _x = spawn_quiet(Command::new("Xvfb").args([&display, "-nolisten", "tcp"]));
    wait_for("the X display", Duration::from_secs(10), || {
        Path::new(&format!("/tmp/.X11-unix/X{n}")).exists()
    });
    let dunst = DaemonProcess::spawn(
        Command::new("stdbuf")
            .args(["-oL", "dunst", "-print"])
            .env("DBUS_SESSION_BUS_ADDRESS", &bus)
            .env("DISPLAY", &display)
            .stdin(Stdio::null()),
    );
    wait_for("dunst on the bus", Duration::from_secs(15), || {
        Command::new("dbus-send")
            .arg(format!("--bus={bus}"))
            .args([
                "--print-reply",
                "--dest=org.freedesktop.DBus",
                "/org/freedesktop/DBus",
                "org.freedesktop.DBus.NameHasOwner",
                "string:org.freedesktop.Notifications",
            ])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("true"))
    });

    let script = dir.join("gpu.jsonl");
    TestEnv::set_gpu(&script, 1000);
    let mut daemon = DaemonProcess::spawn(
        env.cmd()
            .env("DBUS_SESSION_BUS_ADDRESS", &bus)
            .args(["run", "--input", "-", "--gpu-script"])
            .arg(&script)
            .stdin(Stdio::piped()),
    );
    let s = env.wait_status("both workers on the GPU", Duration::from_secs(90), |s| {
        ["asr", "vad"].iter().all(|r| {
            s["workers"].as_array().is_some_and(|ws| {
                ws.iter().any(|w| {
                    w["role"] == *r
                        && w["state"] == "ready"
                        && w["placement"].as_str().is_some_and(|p| p.contains("cuda"))
                })
            })
        })
    });
    // A fault: the ASR worker dies of SIGABRT.
    let pid = worker(&s, "asr")["pid"].as_u64().expect("asr pid") as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGABRT,
    )
    .expect("kill the ASR worker");
    let start = Instant::now();
    while !dunst
        .stdout()
        .contains("the asr worker failed (crash (SIGABRT))")
    {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no notification of the ASR worker's fault; dunst saw:\n{}\ndaemon log:\n{}",
            dunst.stdout(),
            daemon.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Memory pressure: the workers leave the GPU, and the notice says why.
    TestEnv::set_gpu(&script, 7_900);
    wait_for(
        "a notification of a move off the GPU",
        Duration::from_secs(30),
        || dunst.stdout().contains("moved off the GPU"),
    );
    let shown = dunst.stdout();
    eprintln!("dunst saw:\n{shown}");
    assert!(shown.contains("appname: 'swictation'"), "{shown}");
    assert!(
        shown
            .lines()
            .any(|l| l.contains("body:") && l.contains("≥ emergency 95%")),
        "the move's reason (the emergency threshold) is not in its body:\n{shown}"
    );
    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    drop(daemon.child.stdin.take());
    let (code, _, log) = daemon.wait(Duration::from_secs(60));
    assert!(code.success(), "{log}");
}
