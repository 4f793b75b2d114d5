//! Replacements and spoken commands end to end: real speech through `swictation run` with the
//! real workers and models, `[dictation]` rules, and the text that lands in the output file.
//!
//! Nobody in the bundled recordings says "scratch that", so the test names phrases they do say
//! as the commands (the phrases are configuration, as they are for speakers of other languages).

use std::time::Duration;

use swictation_e2e::*;

#[test]
fn replacements_and_spoken_commands_shape_the_output() {
    let clips = librivox();
    let env = TestEnv::new();
    let out = env.dir.path().join("dictated.txt");
    env.write_config(
        r#"
[dictation]
commands = true
new_paragraph = ["new paragraph", "had then leisure"]
scratch_that = ["scratch that", "unless to be rather"]
[dictation.replacements]
john = "jöhn"
"young man" = "young man—truly"
"#,
    );
    let files: Vec<&std::path::Path> = clips[..3].iter().map(|(p, _)| p.as_path()).collect();
    let run = run_with_deadline(
        env.cmd()
            .args(["run", "--fast", "--output-file"])
            .arg(&out)
            .arg("--input")
            .args(&files),
        Duration::from_secs(240),
    );
    let log = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "run failed: {log}");
    let text = std::fs::read_to_string(&out).expect("the output file");
    eprintln!("output file:\n{text}");
    // Clip 0, "And Mr. John Dashwood had then leisure to consider ... for them.": the name
    // replaced in the case it was heard in, and a paragraph break where the phrase was said.
    // Clip 1, "He was not an ill-disposed young man,": delivered, then deleted by clip 2's
    // command, which keeps what followed it: "cold-hearted and rather selfish ...".
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text:?}");
    assert!(lines[0].ends_with("Jöhn Dashwood"), "{text:?}");
    assert_eq!(lines[1], "", "{text:?}");
    assert!(lines[2].starts_with("to consider"), "{text:?}");
    assert!(lines[2].ends_with("for them."), "{text:?}");
    assert!(
        lines[3].to_lowercase().starts_with("cold") && lines[3].contains("selfish"),
        "{text:?}"
    );
    assert!(
        !text.contains("young man"),
        "the scratched line is still there: {text:?}"
    );
    assert!(!text.to_lowercase().contains("unless"), "{text:?}");
}
