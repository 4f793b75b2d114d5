//! Issue 5, sleep and wake: the daemon follows logind's `PrepareForSleep` over the system bus.
//! Before the machine sleeps it holds new ASR requests and gives back its delay lock once the
//! request in flight is done; after the wake it restarts its GPU workers before speech needs
//! them, and what was said meanwhile is transcribed once, by the fresh workers. Without logind
//! it says so, and notices a sleep from the clocks instead.
//!
//! No machine here runs systemd, so the system bus is a private `dbus-daemon` started by the
//! test and logind is `fake-logind` (a binary of this crate that answers `Inhibit` and sends
//! `PrepareForSleep` as logind does); the daemon, its workers, the bus and the signals are real.
//! The GPU readings are scripted, as in `placement.rs`: "GPU" placements run on the CPU.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;
use swictation_e2e::*;

/// A private message bus, killed on drop.
struct Bus {
    child: Child,
    address: String,
}

impl Bus {
    /// A bus with a socket in `dir`, on which anyone may own any name (as the session bus).
    fn start(dir: &Path) -> Bus {
        let socket = dir.join("system_bus_socket");
        let config = dir.join("bus.conf");
        std::fs::write(
            &config,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"#,
                socket.display()
            ),
        )
        .expect("write the bus config");
        let mut child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config.display()))
            .args(["--nofork", "--print-address"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start dbus-daemon (deploy/setup.sh installs it)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("bus stdout"))
            .read_line(&mut line)
            .expect("the bus address");
        if !line.starts_with("unix:") {
            let mut why = String::new();
            let _ = std::io::Read::read_to_string(
                &mut child.stderr.take().expect("bus stderr"),
                &mut why,
            );
            panic!("dbus-daemon printed {line:?}: {why}");
        }
        Bus {
            child,
            address: line.trim().to_owned(),
        }
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The stand-in logind, driven line by line.
struct Logind {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
}

impl Logind {
    fn start(bus: &Bus) -> Logind {
        let mut child = Command::new(bin("fake-logind"))
            .env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start fake-logind");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut logind = Logind {
            child,
            stdin,
            lines,
        };
        logind.expect("ready", Duration::from_secs(10));
        logind
    }

    fn send(&mut self, command: &str) {
        writeln!(self.stdin, "{command}").expect("tell fake-logind");
        self.stdin.flush().expect("flush");
    }

    /// The next line, which must start with `prefix`, within `limit`.
    fn expect(&mut self, prefix: &str, limit: Duration) -> String {
        match self.lines.recv_timeout(limit) {
            Ok(line) if line.starts_with(prefix) => line,
            Ok(line) => panic!("fake-logind said {line:?}, expected {prefix:?}"),
            Err(_) => panic!("fake-logind said nothing in {limit:?}, expected {prefix:?}"),
        }
    }

    /// Nothing more said within `limit`.
    fn quiet(&mut self, limit: Duration) {
        if let Ok(line) = self.lines.recv_timeout(limit) {
            panic!("fake-logind said {line:?}, expected nothing");
        }
    }
}

impl Drop for Logind {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Replace the scripted reading: one roomy 8 GB card.
fn roomy_gpu(path: &Path) {
    std::fs::write(
        path,
        "{\"at_s\": 0, \"devices\": [{\"index\": 0, \"name\": \"Scripted 8 GB\", \"total_mb\": 8192, \"used_mb\": 1000}]}\n",
    )
    .expect("write the GPU script");
}

fn serving_on_gpu(s: &Value) -> bool {
    ["vad", "asr"].iter().all(|role| {
        let w = worker(s, role);
        w["placement"]
            .as_str()
            .is_some_and(|p| p.contains("cuda:0"))
            && (w["state"] == "ready" || w["state"] == "busy")
            && w["pid"].is_u64()
    })
}

#[test]
fn sleep_holds_speech_and_wake_restarts_gpu_workers() {
    let _serial = serial();
    let clips = librivox();
    let env = TestEnv::new();
    let bus = Bus::start(env.dir.path());
    let mut logind = Logind::start(&bus);
    let script = env.dir.path().join("gpu.jsonl");
    roomy_gpu(&script);
    let mut daemon = DaemonProcess::spawn(
        env.cmd()
            .env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)
            .args(["run", "--input", "-", "--gpu-script"])
            .arg(&script)
            .stdin(Stdio::piped()),
    );
    let mut stdin = daemon.child.stdin.take().expect("stdin");
    let mut speak = |i: usize| speak(&mut stdin, &clips[i].0);

    // At start the daemon takes a delay lock, and says so.
    logind.expect("inhibit swictation sleep delay", Duration::from_secs(30));
    let s = env.wait_status("both workers on the GPU", Duration::from_secs(90), |s| {
        serving_on_gpu(s)
            && s["sleep"]
                .as_str()
                .is_some_and(|z| z.contains("delay lock"))
    });
    let pids = [
        worker(&s, "vad")["pid"].clone(),
        worker(&s, "asr")["pid"].clone(),
    ];
    speak(0);
    daemon.wait_transcripts(1, Duration::from_secs(60));

    // A signal from anyone but logind changes nothing.
    logind.send("spoof");
    logind.expect("spoofed", Duration::from_secs(5));
    std::thread::sleep(Duration::from_secs(1));
    let s = env.status().expect("status");
    assert_eq!(
        s["asr_held"], false,
        "a spoofed PrepareForSleep was obeyed: {s}"
    );

    // logind is about to sleep: the lock comes back at once (no request in flight), and new
    // speech waits.
    logind.send("sleep");
    let released = logind.expect("released after", Duration::from_secs(10));
    let ms: u64 = released
        .trim_start_matches("released after ")
        .trim_end_matches(" ms")
        .parse()
        .expect("milliseconds");
    assert!(ms < 3_500, "{released}: longer than the 3 s drain");
    logind.expect("slept", Duration::from_secs(1));
    let s = env.status().expect("status");
    assert_eq!(s["asr_held"], true, "{s}");
    assert!(
        s["sleep"]
            .as_str()
            .is_some_and(|z| z.starts_with("going to sleep")),
        "{s}"
    );
    speak(1);
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        transcript_lines(&daemon.stdout()).len(),
        1,
        "speech was transcribed on the way to sleep"
    );

    // Awake: both GPU workers restart before anything else, the held speech is transcribed by
    // the fresh worker, and a new lock is taken for the next sleep.
    logind.send("wake");
    logind.expect("woke", Duration::from_secs(5));
    logind.expect("inhibit swictation sleep delay", Duration::from_secs(10));
    let got = daemon.wait_transcripts(2, Duration::from_secs(60));
    let s = env.wait_status("fresh GPU workers", Duration::from_secs(30), |s| {
        serving_on_gpu(s) && s["asr_held"] == false
    });
    for (role, old) in ["vad", "asr"].iter().zip(&pids) {
        let w = worker(&s, role);
        assert_ne!(&w["pid"], old, "{role} was not restarted: {s}");
        assert!(
            w["placement_reason"]
                .as_str()
                .is_some_and(|r| r.contains("resumed from suspend")),
            "{role}: {s}"
        );
    }
    assert_eq!(got.len(), 2, "{got:?}");
    logind.quiet(Duration::from_millis(500));

    drop(stdin);
    let (code, out, log) = daemon.wait(Duration::from_secs(60));
    assert!(code.success(), "{log}");
    eprintln!("{log}");
    let got = transcript_lines(&out);
    assert_eq!(got.len(), 2, "each utterance once: {got:?}");
    assert_recognised(&got, &clips);
    assert_eq!(log.matches("going to sleep (logind)").count(), 1, "{log}");
    assert!(log.contains("woke from sleep (told by logind"), "{log}");
}

/// Without logind on the bus, or without a bus, status says a sleep is noticed from the clocks.
#[test]
fn without_logind_sleep_is_noticed_from_the_clocks() {
    let _serial = serial();
    let env = TestEnv::new();
    let bus = Bus::start(env.dir.path());
    let goforward = speech().join("goforward.raw");
    for (address, why) in [
        (Some(bus.address.as_str()), "logind is not running"),
        (None, "no system bus"),
    ] {
        let mut cmd = env.cmd();
        if let Some(a) = address {
            cmd.env("DBUS_SYSTEM_BUS_ADDRESS", a);
        }
        let mut daemon = DaemonProcess::spawn(
            cmd.args(["run", "--input"])
                .arg(&goforward)
                .stdin(Stdio::null()),
        );
        let s = env.wait_status("the sleep row", Duration::from_secs(60), |s| {
            s["sleep"].as_str().is_some()
        });
        let sleep = s["sleep"].as_str().unwrap_or_default();
        assert!(
            sleep.contains("noticed from the clocks") && sleep.contains(why),
            "{why}: {s}"
        );
        let (code, _, log) = daemon.wait(Duration::from_secs(60));
        assert!(code.success(), "{log}");
        assert!(log.contains(why), "{log}");
    }
}
