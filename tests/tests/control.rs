//! Issue 6, end to end: the control socket and `swictation status|toggle|pause|resume|stop`
//! against a real daemon with real workers.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::Value;
use swictation_e2e::*;

/// A worker's state, `Null` before the worker is listed.
fn state_of<'a>(status: &'a Value, role: &str) -> &'a Value {
    status["workers"]
        .as_array()
        .and_then(|w| w.iter().find(|w| w["role"] == role))
        .map_or(&Value::Null, |w| &w["state"])
}

fn pid_of(status: &Value, role: &str) -> Option<u32> {
    worker(status, role)["pid"].as_u64().map(|p| p as u32)
}

fn both_ready(s: &Value) -> bool {
    s["workers"].as_array().is_some_and(|w| {
        w.len() == 2 && w.iter().all(|w| w["state"] == "ready" && w["pid"].is_u64())
    })
}

fn clip_paths() -> Vec<std::path::PathBuf> {
    librivox().into_iter().map(|(p, _)| p).collect()
}

#[test]
fn status_after_start_and_after_a_worker_crash() {
    let _serial = serial();
    let t0 = Instant::now();
    let env = TestEnv::new();
    let mut daemon = DaemonProcess::spawn(env.cmd().arg("run").arg("--input").args(clip_paths()));
    let s = env.wait_status("both workers ready", Duration::from_secs(90), |s| {
        s["state"] == "listening" && both_ready(s)
    });
    eprintln!("ready after {:?}: {s}", t0.elapsed());

    for role in ["vad", "asr"] {
        let w = worker(&s, role);
        for key in [
            "role",
            "pid",
            "state",
            "device",
            "model",
            "context_s",
            "restarts",
            "last_failure",
        ] {
            assert!(w.get(key).is_some(), "{role} worker has no `{key}`: {w}");
        }
        let pid = pid_of(&s, role).unwrap_or(0);
        assert!(alive(pid), "{role} worker pid {pid} does not exist");
        assert_eq!(w["device"], "cpu", "{w}");
        assert!(w["model"].as_str().is_some_and(|m| !m.is_empty()), "{w}");
        assert_eq!(w["restarts"], serde_json::json!({}), "{w}");
        assert!(w["last_failure"].is_null(), "{w}");
    }
    assert_eq!(worker(&s, "asr")["context_s"], 10.0, "{s}");
    assert!(worker(&s, "vad")["context_s"].is_null(), "{s}");
    assert!(
        worker(&s, "asr")["model"]
            .as_str()
            .is_some_and(|m| m.contains("moonshine")),
        "{s}"
    );
    // No GPU on this machine: everything on the CPU, and status says why.
    assert!(
        s["gpu"].is_null()
            && s["gpu_unavailable"]
                .as_str()
                .is_some_and(|w| w.contains("everything runs on the CPU")),
        "{s}"
    );
    assert_eq!(worker(&s, "asr")["placement"], "cpu base 10s", "{s}");
    assert_eq!(worker(&s, "vad")["placement"], "cpu", "{s}");
    for role in ["vad", "asr"] {
        assert!(
            worker(&s, role)["placement_reason"]
                .as_str()
                .is_some_and(|r| r.contains("no GPU")),
            "{s}"
        );
    }
    assert!(s["queue_depth"].is_u64() && s["quarantined"] == 0, "{s}");
    assert!(
        s["audio"]["source"]
            .as_str()
            .is_some_and(|src| src.contains("0870")),
        "{s}"
    );

    // A crash: SIGKILL the ASR worker named by the status.
    let old = pid_of(&s, "asr").unwrap_or(0);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(old as i32), Signal::SIGKILL)
        .expect("kill the ASR worker");
    let killed_at = Instant::now();
    let s = env.wait_status(
        "a new ASR worker after the crash",
        Duration::from_secs(60),
        |s| {
            let w = worker(s, "asr");
            w["state"] == "ready"
                && pid_of(s, "asr").is_some_and(|p| p != old)
                && w["restarts"]["crash"].as_u64() >= Some(1)
        },
    );
    let w = worker(&s, "asr");
    eprintln!("after the crash ({:?}): {w}", killed_at.elapsed());
    assert_eq!(w["restarts"], serde_json::json!({"crash": 1}), "{w}");
    let failure = &w["last_failure"];
    assert!(
        failure["class"]
            .as_str()
            .is_some_and(|c| c.contains("crash") && c.contains("SIGKILL")),
        "{failure}"
    );
    assert!(
        failure["at_unix_s"].as_u64().is_some_and(|t| t > 0) && failure["reason"].is_string(),
        "{failure}"
    );
    let new = pid_of(&s, "asr").unwrap_or(0);
    assert!(alive(new) && !alive(old), "old {old}, new {new}");
    assert_eq!(
        worker(&s, "vad")["restarts"],
        serde_json::json!({}),
        "the VAD worker was not touched: {s}"
    );
    // The human rendering shows the same.
    let text = env.cli(&["status"]);
    let text = String::from_utf8_lossy(&text.stdout);
    eprintln!("{text}");
    assert!(
        text.contains("crash:1") && text.contains(&new.to_string()),
        "{text}"
    );

    env.stop(&mut daemon, Duration::from_secs(90));
    eprintln!("total {:?}", t0.elapsed());
}

#[test]
fn commands_answer_at_once_while_the_asr_worker_is_busy() {
    let _serial = serial();
    let t0 = Instant::now();
    let env = TestEnv::new();
    // Long silences stay inside a segment, so segments run to the 20 s maximum: the ASR worker
    // spends seconds on each. The stop below waits for that pending speech: its bound
    // (`stop_timeout_s`, 10 s by default) is raised so it covers the whole queue.
    env.write_config("[vad]\nmin_silence_ms = 2500\n[supervision]\nstop_timeout_s = 120\n");
    let mut files = clip_paths();
    files.extend(clip_paths());
    let mut daemon =
        DaemonProcess::spawn(env.cmd().args(["run", "--fast", "--input"]).args(&files));
    // The ASR worker's state is published as `busy` while it works on a segment.
    let s = env.wait_status(
        "the ASR worker busy with a queue",
        Duration::from_secs(90),
        |s| {
            s["state"] == "listening"
                && state_of(s, "vad") == "ready"
                && state_of(s, "asr") == "busy"
                && s["queue_depth"].as_u64() >= Some(1)
        },
    );
    eprintln!("busy after {:?}: queue {}", t0.elapsed(), s["queue_depth"]);

    for (cmd, want) in [
        ("pause", "paused"),
        ("toggle", "listening"),
        ("toggle", "paused"),
        ("resume", "listening"),
    ] {
        let start = Instant::now();
        let out = env.cli(&[cmd]);
        let took = start.elapsed();
        let answer = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        eprintln!("{cmd}: {answer} in {took:?}");
        assert!(
            out.status.success(),
            "{cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(answer, want, "{cmd}");
        assert!(took < Duration::from_millis(500), "{cmd} took {took:?}");
        let s = env.status().expect("status");
        assert_eq!(s["state"], want, "{cmd}: {s}");
    }
    let s = env.status().expect("status");
    assert!(
        s["queue_depth"].as_u64() >= Some(1),
        "the ASR worker was no longer busy, so this proved nothing: {s}"
    );
    eprintln!("still busy after the commands: queue {}", s["queue_depth"]);

    // A restart request is answered at once too (the restart itself happens between requests).
    let start = Instant::now();
    let out = env.cli(&["restart", "asr"]);
    assert!(
        out.status.success() && start.elapsed() < Duration::from_millis(500),
        "{out:?}"
    );

    let (out, _) = env.stop(&mut daemon, Duration::from_secs(180));
    assert!(
        out.lines().count() >= 2,
        "pending speech was not transcribed on stop: {out:?}"
    );
    // After stop, the socket is gone and the CLI says how to start the daemon.
    let status = env.cli(&["status"]);
    let err = String::from_utf8_lossy(&status.stderr);
    assert!(
        !status.status.success() && err.contains("not running") && err.contains("start it with"),
        "{err}"
    );
    eprintln!("total {:?}", t0.elapsed());
}

/// Creates (or reuses) an unprivileged test user; `Err` says why one cannot be had.
fn test_user() -> Result<(u32, u32), String> {
    const NAME: &str = "swictation-e2e";
    if !nix::unistd::geteuid().is_root() {
        return Err("not running as root, so no second user can be created".into());
    }
    let out = Command::new("useradd")
        .args([
            "--system",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            NAME,
        ])
        .output()
        .map_err(|e| format!("useradd: {e}"))?;
    // Exit status 9: the user exists already (from an earlier run).
    if !out.status.success() && out.status.code() != Some(9) {
        return Err(format!(
            "useradd failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let user = nix::unistd::User::from_name(NAME)
        .map_err(|e| e.to_string())?
        .ok_or("user not found after useradd")?;
    Ok((user.uid.as_raw(), user.gid.as_raw()))
}

/// `swictation ARGS` as `uid`, in `env`'s environment.
fn as_user(env: &TestEnv, uid: u32, gid: u32, args: &[&str]) -> std::process::Output {
    let mut c = Command::new("setpriv");
    c.arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"))
        .arg("--clear-groups")
        .arg("--")
        .arg(bin("swictation"))
        .args(args)
        .env("XDG_RUNTIME_DIR", &env.runtime)
        .env("XDG_CONFIG_HOME", &env.config)
        .env_remove("SWICTATION_LOG");
    run_with_deadline(&mut c, Duration::from_secs(20))
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

#[test]
fn another_user_is_refused() {
    let _serial = serial();
    // Never a silent pass: without a second user this test cannot say anything.
    let (uid, gid) = test_user().unwrap_or_else(|why| {
        panic!("cannot test a second user: {why} (run the tests as root, as CI does)")
    });
    let env = TestEnv::new();
    let mut daemon = DaemonProcess::spawn(env.cmd().arg("run").arg("--input").args(clip_paths()));
    env.wait_status("the daemon answering", Duration::from_secs(90), |_| true);

    // As set up, the socket's directory (0700) keeps the other user out.
    let out = as_user(&env, uid, gid, &["status", "--json"]);
    let err = String::from_utf8_lossy(&out.stderr);
    eprintln!("other user, private directory: {err}");
    assert!(
        !out.status.success() && err.to_lowercase().contains("permission denied"),
        "{out:?}"
    );

    // Even with every directory and the socket opened up, the daemon checks the peer's uid.
    let sock_dir = env.runtime.join("swictation");
    for (p, mode) in [
        (env.dir.path(), 0o711),
        (env.runtime.as_path(), 0o711),
        (sock_dir.as_path(), 0o711),
        (&sock_dir.join("control.sock"), 0o666),
    ] {
        chmod(p, mode);
    }
    for args in [
        &["status", "--json"][..],
        &["pause"][..],
        &["subscribe"][..],
    ] {
        let out = as_user(&env, uid, gid, args);
        let err = String::from_utf8_lossy(&out.stderr);
        eprintln!("other user, opened socket, {args:?}: {err}");
        assert!(!out.status.success(), "{args:?} was accepted: {out:?}");
        // The daemon answers the refusal and closes at once without reading the request; a
        // client whose write then fails still reads and shows that answer.
        assert!(
            err.contains(&format!("permission denied: uid {uid} may not control")),
            "{args:?}: {err}"
        );
        assert!(
            !err.contains("Broken pipe") && !err.contains("Connection reset"),
            "{args:?}: {err}"
        );
    }
    // The owner still can, and nothing was paused.
    let s = env.status().expect("status as the owner");
    assert_ne!(s["state"], "paused", "{s}");
    for (p, mode) in [(env.dir.path(), 0o700), (env.runtime.as_path(), 0o700)] {
        chmod(p, mode);
    }
    daemon.signal(Signal::SIGTERM);
    let (code, _, log) = daemon.wait(Duration::from_secs(60));
    assert!(code.success(), "{log}");
}
