//! The transcript history end to end: off by default (no file is written), and with
//! `[history] enabled = true` every transcript of real speech kept (0600) and read back, and
//! cleared, through `swictation history`.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use swictation_e2e::*;

#[test]
fn the_history_is_opt_in_kept_private_read_and_cleared() {
    let clips = librivox();
    let env = TestEnv::new();
    let history = env.state.join("swictation/history.jsonl");
    let dictate = |env: &TestEnv| {
        let run = run_with_deadline(
            env.cmd()
                .args(["run", "--fast", "--input"])
                .arg(&clips[0].0)
                .arg(&clips[1].0),
            Duration::from_secs(180),
        );
        let log = String::from_utf8_lossy(&run.stderr).into_owned();
        assert!(run.status.success(), "run failed: {log}");
        (transcript_lines(&String::from_utf8_lossy(&run.stdout)), log)
    };

    // Off by default: nothing kept, and `history` says how to turn it on.
    let (said, _) = dictate(&env);
    assert_eq!(said.len(), 2, "{said:?}");
    assert!(
        !history.exists(),
        "a history was written without being asked for"
    );
    let off = env.cli(&["history"]);
    assert!(off.status.success());
    assert!(
        String::from_utf8_lossy(&off.stderr).contains("[history] enabled = true"),
        "{}",
        String::from_utf8_lossy(&off.stderr)
    );

    env.write_config("[history]\nenabled = true\n");
    let (said, log) = dictate(&env);
    assert!(log.contains("keeping the transcript history"), "{log}");
    let mode = std::fs::metadata(&history)
        .expect("the history file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let read = env.cli(&["history"]);
    assert!(read.status.success());
    assert_eq!(
        transcript_lines(&String::from_utf8_lossy(&read.stdout)),
        said
    );
    let last = env.cli(&["history", "--json", "--last", "1"]);
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&last.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["text"], said[1].as_str());
    assert_eq!(lines[0]["delivered"], true);
    assert!(!log.contains(&said[1]), "a transcript in the log:\n{log}");

    let clear = env.cli(&["history", "--clear"]);
    assert!(clear.status.success());
    assert!(String::from_utf8_lossy(&clear.stderr).contains("cleared 2"));
    assert!(transcript_lines(&String::from_utf8_lossy(&env.cli(&["history"]).stdout)).is_empty());
}
