//! The daemon towards systemd and the user, end to end: sd_notify messages and their order, the
//! configuration file's errors, the client without a daemon, `devices` and `doctor`.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use serde_json::Value;
use swictation_e2e::*;

#[test]
fn sd_notify_messages_arrive_in_order() {
    let _serial = serial();
    let clips = librivox();
    let env = TestEnv::new();
    let sock_path = env.dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("bind the notify socket");
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let t0 = Instant::now();
    let mut daemon = DaemonProcess::spawn(
        env.cmd()
            .arg("run")
            .arg("--input")
            .arg(&clips[1].0)
            .env("NOTIFY_SOCKET", &sock_path)
            // Pings every 0.5 s.
            .env("WATCHDOG_USEC", "1000000"),
    );
    let mut messages: Vec<(Duration, String)> = Vec::new();
    let mut checked_workers = false;
    let mut buf = [0u8; 4096];
    while daemon.child.try_wait().expect("wait").is_none() {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "the daemon did not finish; messages: {messages:?}"
        );
        if let Ok(n) = sock.recv(&mut buf) {
            messages.push((
                t0.elapsed(),
                String::from_utf8_lossy(&buf[..n]).into_owned(),
            ));
        }
        // Once ready, the workers must not have inherited the notify socket.
        if !checked_workers && messages.iter().any(|(_, m)| m == "READY=1") {
            if let Some(s) = env.status() {
                for w in s["workers"].as_array().into_iter().flatten() {
                    let pid = w["pid"].as_u64().unwrap_or(0);
                    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
                    let environ = String::from_utf8_lossy(&environ);
                    assert!(
                        pid > 0
                            && !environ.contains("NOTIFY_SOCKET")
                            && !environ.contains("WATCHDOG_USEC"),
                        "worker {w} inherited sd_notify variables"
                    );
                }
                checked_workers = true;
            }
        }
    }
    while let Ok(n) = sock.recv(&mut buf) {
        messages.push((
            t0.elapsed(),
            String::from_utf8_lossy(&buf[..n]).into_owned(),
        ));
    }
    let (code, out, log) = daemon.wait(Duration::from_secs(10));
    assert!(code.success(), "{log}");
    assert!(!out.trim().is_empty(), "nothing transcribed");
    for (t, m) in &messages {
        eprintln!("{:>6.2} s  {m}", t.as_secs_f64());
    }
    assert!(
        checked_workers,
        "the workers' environment was never checked"
    );
    let texts: Vec<&str> = messages.iter().map(|(_, m)| m.as_str()).collect();
    assert_eq!(
        texts.first(),
        Some(&"READY=1"),
        "READY=1 must come first: {texts:?}"
    );
    assert_eq!(
        texts.last(),
        Some(&"STOPPING=1"),
        "STOPPING=1 must come last: {texts:?}"
    );
    assert_eq!(
        texts.iter().filter(|m| **m == "READY=1").count(),
        1,
        "{texts:?}"
    );
    assert_eq!(
        texts.iter().filter(|m| **m == "STOPPING=1").count(),
        1,
        "{texts:?}"
    );
    assert!(
        texts.contains(&"STATUS=listening; vad cpu, asr moonshine-base-en on cpu"),
        "no STATUS line naming the placements: {texts:?}"
    );
    let pings = texts.iter().filter(|m| **m == "WATCHDOG=1").count();
    // The clip is 3 s and plays in real time: at a ping every 0.5 s there are several.
    assert!(pings >= 3, "{pings} watchdog pings: {texts:?}");
    assert!(
        texts
            .iter()
            .all(|m| matches!(*m, "READY=1" | "WATCHDOG=1" | "STOPPING=1")
                || m.starts_with("STATUS=")),
        "{texts:?}"
    );
}

#[test]
fn a_config_with_an_unknown_key_fails_naming_it() {
    let env = TestEnv::new();
    let bad = env.dir.path().join("bad.toml");
    std::fs::write(&bad, "[vad]\nstart_threshold = 0.6\nstop_treshold = 0.3\n")
        .expect("write config");

    let out = env.cli(&["config", "check", bad.to_str().unwrap_or_default()]);
    let err = String::from_utf8_lossy(&out.stderr);
    eprintln!("config check: {err}");
    assert!(
        !out.status.success() && err.contains("vad.stop_treshold") && err.contains("line 3"),
        "{err}"
    );

    // `run --config` refuses it before starting anything (no workers, no socket).
    let clip = &librivox()[1].0;
    let start = Instant::now();
    let out = run_with_deadline(
        env.cmd()
            .arg("--config")
            .arg(&bad)
            .arg("run")
            .arg("--input")
            .arg(clip),
        Duration::from_secs(20),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    eprintln!("run --config: {err} ({:?})", start.elapsed());
    assert!(
        !out.status.success() && err.contains("vad.stop_treshold"),
        "{err}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "refusing took {:?}",
        start.elapsed()
    );
    assert!(!env.runtime.join("swictation/control.sock").exists());

    // The same key at the default path is refused by the daemon too, and a bad value names its key.
    env.write_config("[asr]\nthreads = 257\n");
    let out = env.cli(&["config", "check"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("asr.threads"),
        "{err}"
    );

    // The documented default file passes the check.
    let default = env.cli(&["config", "default"]);
    assert!(default.status.success());
    let good = env.dir.path().join("default.toml");
    std::fs::write(&good, &default.stdout).expect("write default config");
    let out = env.cli(&["config", "check", good.to_str().unwrap_or_default()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok"));
}

#[test]
fn clients_without_a_daemon_say_how_to_start_it() {
    let env = TestEnv::new();
    for args in [
        &["status"][..],
        &["status", "--json"],
        &["toggle"],
        &["pause"],
        &["resume"],
        &["stop"],
        &["subscribe"],
        &["restart", "asr"],
    ] {
        let out = env.cli(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded without a daemon");
        assert!(
            err.contains("not running") && err.contains("start it with"),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn devices_lists_the_capture_device_condensed() {
    let mut env = TestEnv::new();
    let fifo = env.with_alsa();
    // Opening the file plugin opens the FIFO, which blocks until it has a writer.
    let _writer = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&fifo)
        .expect("open FIFO");
    let out = env.cli(&["devices"]);
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let default = text
        .lines()
        .find(|l| l.starts_with("* "))
        .unwrap_or_else(|| panic!("no default device marked: {text}"));
    assert!(default.contains("alsa:default"), "{text}");
    // A few lines per device: channel counts with the same formats and rates are joined.
    let lines: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("* "))
        .skip(1)
        .take_while(|l| l.starts_with("      "))
        .collect();
    assert!(
        lines.iter().any(|l| l.contains("F32") && l.contains(" Hz")),
        "{text}"
    );
    assert!(lines.len() <= 8, "not condensed: {lines:?}");
    let json = env.cli(&["devices", "--json"]);
    let v: Value = serde_json::from_slice(&json.stdout).expect("devices --json");
    assert!(
        v.as_array()
            .is_some_and(|d| d.iter().any(|d| d["id"] == "alsa:default")),
        "{v}"
    );
}

#[test]
fn doctor_reports_every_check_with_fixes() {
    let _serial = serial();
    let env = TestEnv::new();
    let out = run_with_deadline(
        env.cmd().args(["doctor", "--json"]),
        Duration::from_secs(180),
    );
    let rows: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "doctor --json: {e}: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let rows = rows.as_array().cloned().unwrap_or_default();
    for r in &rows {
        eprintln!(
            "{:<5} {:<26} {}  {}",
            r["verdict"].as_str().unwrap_or("?"),
            r["name"].as_str().unwrap_or("?"),
            r["detail"],
            r["fix"]
        );
    }
    let names: Vec<&str> = rows.iter().filter_map(|r| r["name"].as_str()).collect();
    for want in [
        "configuration",
        "ONNX Runtime",
        "model silero-vad",
        "model moonshine-base-en",
        "NVML / GPU",
        "CUDA execution provider",
        "audio input",
        "output",
        "output tools",
        "typing tool",
        "control socket",
    ] {
        assert!(names.contains(&want), "no `{want}` row: {names:?}");
    }
    let row = |name: &str| {
        rows.iter()
            .find(|r| r["name"] == name)
            .cloned()
            .unwrap_or_default()
    };
    // On this machine the runtime and models are installed (the other e2e tests need them).
    for name in [
        "ONNX Runtime",
        "model silero-vad",
        "model moonshine-base-en",
        "configuration",
        "control socket",
    ] {
        assert_eq!(row(name)["verdict"], "pass", "{}", row(name));
    }
    for r in &rows {
        if r["verdict"] != "pass" {
            assert!(
                r["fix"].as_str().is_some_and(|f| !f.is_empty()),
                "a {} row without a fix: {r}",
                r["verdict"]
            );
        }
    }
    let failed = rows.iter().any(|r| r["verdict"] == "fail");
    assert_eq!(
        out.status.success(),
        !failed,
        "exit status must say whether a check failed"
    );
}
