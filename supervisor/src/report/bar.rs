//! The status as a status-bar module sees it: waybar's custom-module JSON, one object per line
//! (`{"text","tooltip","class"}`), from `swictation status --watch --format waybar`.
//!
//! `class` is the daemon's state (`listening`, `paused`, `degraded`, `starting`, `stopping`),
//! plus `held` while ASR requests are held and `cpu` when the ASR worker runs on the CPU only,
//! so a stylesheet can colour each; the tooltip names the workers' devices and any problem.

use serde_json::{json, Value};

use crate::report::status::{DaemonState, Status};

/// waybar's JSON for `s`.
pub fn waybar(s: &Status) -> Value {
    let text = match s.state {
        DaemonState::Listening => "● listening",
        DaemonState::Paused => "⏸ paused",
        DaemonState::Degraded => "⚠ degraded",
        DaemonState::Starting => "… starting",
        DaemonState::Stopping => "… stopping",
    };
    let mut class = vec![s.state.as_str().to_owned()];
    if s.asr_held {
        class.push("held".to_owned());
    }
    let asr = s.workers.iter().find(|w| w.role == "asr");
    if asr.is_some_and(|w| w.pid.is_some() && !w.device.contains("cuda")) {
        class.push("cpu".to_owned());
    }
    let mut tooltip: Vec<String> = s
        .workers
        .iter()
        .map(|w| format!("{}: {} on {} ({})", w.role, w.model, w.device, w.state))
        .collect();
    if let Some(why) = &s.asr_held_why {
        tooltip.push(format!("speech held: {why}"));
    }
    if let Some(why) = &s.gpu_unavailable {
        tooltip.push(format!("no GPU: {why}"));
    }
    if s.quarantined > 0 {
        tooltip.push(format!("{} segment(s) quarantined", s.quarantined));
    }
    if s.queue_depth > 0 {
        tooltip.push(format!("{} segment(s) waiting for ASR", s.queue_depth));
    }
    json!({ "text": text, "tooltip": tooltip.join("\n"), "class": class })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::status::WorkerStatus;

    fn worker(role: &str, device: &str) -> WorkerStatus {
        WorkerStatus {
            role: role.into(),
            pid: Some(42),
            state: "ready".into(),
            device: device.into(),
            model: "m".into(),
            ..WorkerStatus::default()
        }
    }

    #[test]
    fn states_and_problems_become_classes_and_tooltip_lines() {
        let mut s = Status::starting();
        assert_eq!(waybar(&s)["class"], json!(["starting"]));
        s.state = DaemonState::Listening;
        s.workers = vec![worker("vad", "cpu"), worker("asr", "enc cuda:0 dec cpu")];
        let w = waybar(&s);
        assert_eq!(w["text"], "● listening");
        assert_eq!(w["class"], json!(["listening"]));
        assert_eq!(
            w["tooltip"],
            "vad: m on cpu (ready)\nasr: m on enc cuda:0 dec cpu (ready)"
        );
        s.state = DaemonState::Degraded;
        s.workers[1].device = "cpu".into();
        s.asr_held = true;
        s.asr_held_why = Some("GPU memory emergency".into());
        s.quarantined = 1;
        let w = waybar(&s);
        assert_eq!(w["class"], json!(["degraded", "held", "cpu"]));
        let tip = w["tooltip"].as_str().unwrap_or_default();
        assert!(tip.contains("speech held: GPU memory emergency"), "{tip}");
        assert!(tip.contains("1 segment(s) quarantined"), "{tip}");
    }
}
