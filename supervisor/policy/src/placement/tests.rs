use std::time::Duration;

use swictation_proto::{Device, Role};

use super::*;
use crate::failure::FailureClass;
use crate::gpu::GpuReading;
use crate::gpu::{Availability, DeviceReading};

const NO_DRIVER: &str = "no NVIDIA driver (libnvidia-ml.so.1 not found)";

/// The ladder the stepping tests are written against: the default without its first rung
/// (the whole model on the GPU), so every GPU rung keeps the decoder on the CPU. How the
/// ladder is walked does not depend on which rung is first; the default is tested apart.
fn encoder_ladder() -> Ladder {
    let mut ladder = Ladder::default();
    assert_eq!(ladder.asr[0].label(), "cuda base 10s");
    ladder.asr.remove(0);
    ladder
}

fn config() -> PlacementConfig {
    PlacementConfig {
        ladder: encoder_ladder(),
        ..PlacementConfig::default()
    }
}

fn s(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn card(index: u32, total_mb: u64, used_mb: u64) -> DeviceReading {
    DeviceReading {
        index,
        name: "Scripted GPU".to_owned(),
        total_mb,
        used_mb,
        free_mb: total_mb - used_mb,
        utilization_pct: None,
        processes: vec![],
    }
}

fn cards(list: &[(u64, u64)]) -> Availability {
    let devices = list
        .iter()
        .enumerate()
        .map(|(i, (t, u))| card(i as u32, *t, *u))
        .collect();
    Availability::Available(GpuReading {
        devices,
        ..Default::default()
    })
}

/// One 4 GB card (the seed's RTX A1000) with `used` MB in use.
fn a1000(used: u64) -> Availability {
    cards(&[(4096, used)])
}

fn with_xid(mut a: Availability, dev: u32, xid: u64) -> Availability {
    if let Availability::Available(r) = &mut a {
        r.xid_errors.push((dev, xid));
    }
    a
}

fn rung(i: usize, gpu: Option<u32>) -> Placement {
    encoder_ladder().asr[i].resolve(gpu)
}

fn fail(role: Role, class: FailureClass, after_ready: bool) -> FailureEvent {
    FailureEvent {
        role,
        class,
        at: s(0),
        after_ready,
        escalated: false,
    }
}

/// The policy with an instant caller: every change is carried out at once and is Ready by
/// the next tick, which is one second later.
struct Sim {
    cfg: PlacementConfig,
    h: History,
    cur: Current,
    t: Duration,
    /// `(second, role, new placement, switch)` for every change.
    changes: Vec<(u64, Role, String, Switch)>,
    reasons: Vec<String>,
    reports: Vec<String>,
}

impl Sim {
    fn new() -> Self {
        Self::with(config())
    }

    fn with(cfg: PlacementConfig) -> Self {
        Self {
            cfg,
            h: History::default(),
            cur: Current {
                vad: Slot::unplaced(),
                asr: Slot::unplaced(),
            },
            t: s(0),
            changes: vec![],
            reasons: vec![],
            reports: vec![],
        }
    }

    /// Both workers already serving on the GPU's default top rungs.
    fn on_gpu(gpu: u32) -> Self {
        let mut sim = Self::new();
        sim.cur.asr = Slot::ready(rung(0, Some(gpu)), None);
        sim.cur.vad = Slot::ready(Device::Cuda(gpu), None);
        sim
    }

    fn tick(&mut self, readings: &Availability, event: Option<FailureEvent>) -> Decision {
        let d = decide(
            readings,
            &self.h,
            &self.cur,
            event.as_ref(),
            &self.cfg,
            self.t,
        );
        let sec = self.t.as_secs();
        if let Some(c) = &d.asr {
            self.cur.asr = Slot::ready(c.to, None);
            self.changes
                .push((sec, Role::Asr, c.to.to_string(), c.switch));
            self.reasons.push(c.reason.to_string());
        }
        if let Some(c) = &d.vad {
            self.cur.vad = Slot::ready(c.to, None);
            self.changes
                .push((sec, Role::Vad, c.to.to_string(), c.switch));
            self.reasons.push(c.reason.to_string());
        }
        self.reports.extend(d.report.iter().cloned());
        self.h = d.history.clone();
        self.t += s(1);
        d
    }

    fn run(&mut self, seconds: u64, readings: impl Fn(u64) -> Availability) {
        for _ in 0..seconds {
            let r = readings(self.t.as_secs());
            self.tick(&r, None);
        }
    }

    fn asr(&self) -> String {
        self.cur
            .asr
            .placement
            .map(|p| p.to_string())
            .unwrap_or_default()
    }

    fn vad(&self) -> String {
        self.cur
            .vad
            .placement
            .map(|p| p.to_string())
            .unwrap_or_default()
    }
}

#[test]
fn by_default_the_whole_model_starts_on_the_gpu_and_a_faulting_decoder_leaves_the_encoder_there() {
    let mut sim = Sim::with(PlacementConfig::default());
    let d = sim.tick(&a1000(300), None);
    let a = d.asr.expect("start");
    assert_eq!(a.to.to_string(), "cuda:0 base 10s");
    assert!(
        a.reason.to_string().contains("1.4 GB estimated need"),
        "{}",
        a.reason
    );
    sim.cur.asr = Slot::ready(a.to, None);
    let fault = || Some(fail(Role::Asr, FailureClass::CudaFault, true));
    let c = sim.tick(&a1000(1000), fault()).asr.expect("retry");
    assert_eq!(c.to.to_string(), "cuda:0 base 10s");
    let c = sim.tick(&a1000(1000), fault()).asr.expect("step down");
    assert_eq!(c.to.to_string(), "enc cuda:0 dec cpu base 10s");
    // Too little room for the whole model, enough for the encoder: the next rung.
    let mut sim = Sim::with(PlacementConfig::default());
    let a = sim.tick(&cards(&[(2048, 700)]), None).asr.expect("start");
    assert_eq!(a.to.to_string(), "enc cuda:0 dec cpu base 10s");
}

#[test]
fn first_start_puts_asr_then_vad_where_they_fit() {
    // (readings, asr, vad, words in the asr reason)
    let table: Vec<(&str, Availability, &str, &str, &str)> = vec![
        ("empty 4 GB card", a1000(300), "enc cuda:0 dec cpu base 10s", "cuda:0", "3.7 GB free ≥ 760 MB estimated need + 300 MB margin"),
        ("room for asr only", a1000(2750), "enc cuda:0 dec cpu base 10s", "cpu", "free ≥ 760 MB"),
        ("room for a smaller context only", cards(&[(2048, 1000)]), "enc cuda:0 dec cpu base 5s", "cpu", "passed over enc cuda dec cpu base 10s: 1.0 GB free < 760 MB estimated need + 300 MB margin"),
        ("already critical", a1000(3600), "cpu base 10s", "cpu", "496 MB free < 760 MB estimated need"),
        ("no driver", Availability::NoGpu(NO_DRIVER.to_owned()), "cpu base 10s", "cpu", NO_DRIVER),
        ("most free of several", cards(&[(8192, 6000), (8192, 1000), (8192, 3000)]), "enc cuda:1 dec cpu base 10s", "cuda:1", "7.0 GB free"),
    ];
    for (name, readings, asr, vad, why) in table {
        let mut sim = Sim::new();
        let d = sim.tick(&readings, None);
        let (a, v) = (d.asr.expect(name), d.vad.expect(name));
        assert_eq!(
            (a.to.to_string().as_str(), v.to.to_string().as_str()),
            (asr, vad),
            "{name}"
        );
        assert_eq!(
            (a.switch, v.switch),
            (Switch::Start, Switch::Start),
            "{name}"
        );
        assert!(a.reason.to_string().contains(why), "{name}: {}", a.reason);
        assert!(!d.hold_asr_requests, "{name}");
    }
}

#[test]
fn without_a_gpu_everything_runs_on_the_cpu_and_says_why() {
    let mut sim = Sim::new();
    let none = Availability::NoGpu(NO_DRIVER.to_owned());
    let d = sim.tick(&none, None);
    assert_eq!(
        d.asr.expect("asr").reason.to_string(),
        format!("asr: start on cpu base 10s: no GPU: {NO_DRIVER}")
    );
    assert_eq!(
        d.vad.expect("vad").reason.to_string(),
        format!("vad: start on cpu: no GPU: {NO_DRIVER}")
    );
    assert_eq!(
        d.report,
        vec![format!("no GPU: {NO_DRIVER}: everything runs on the CPU")]
    );
    assert_eq!(d.history.no_gpu_reason(), Some(NO_DRIVER));
    // Said once; nothing moves afterwards, and no step-up without a GPU.
    sim.run(100, |_| none.clone());
    assert_eq!(sim.changes.len(), 2);
    assert_eq!(sim.reports.len(), 1);
}

#[test]
fn nvml_vanishing_moves_gpu_workers_to_the_cpu_after_a_grace_period() {
    let mut sim = Sim::on_gpu(0);
    sim.run(5, |_| a1000(1200));
    assert!(sim.changes.is_empty());
    let gone = Availability::NoGpu("NVML cannot count devices: GPU is lost".to_owned());
    // t = 5, 6, 7: within the grace period, a missing reading moves nothing.
    sim.run(3, |_| gone.clone());
    assert!(sim.changes.is_empty(), "{:?}", sim.changes);
    sim.run(1, |_| gone.clone());
    assert_eq!(
        sim.changes,
        vec![
            (
                8,
                Role::Asr,
                "cpu base 10s".to_owned(),
                Switch::MakeBeforeBreak
            ),
            (8, Role::Vad, "cpu".to_owned(), Switch::MakeBeforeBreak)
        ]
    );
    assert!(
        sim.reasons[0].ends_with("no GPU: NVML cannot count devices: GPU is lost"),
        "{}",
        sim.reasons[0]
    );
    // One good reading inside the grace period restarts the grace clock.
    let mut sim = Sim::on_gpu(0);
    sim.run(10, |t| if t == 2 { a1000(1200) } else { gone.clone() });
    assert_eq!(sim.changes.first().map(|c| c.0), Some(6));
}

#[test]
fn out_of_memory_steps_down_to_the_next_rung_that_fits() {
    // (free memory after the failure, learned need of the failed rung, expected placement, reason)
    let table = [
        (
            310,
            "asr: enc cuda:0 dec cpu base 10s → cpu base 10s: out of memory at load, 310 MB free < 1.2 GB learned need",
            "cpu base 10s",
        ),
        (2000, "asr: enc cuda:0 dec cpu base 10s → enc cuda:0 dec cpu base 5s: out of memory at load, 2.0 GB free ≥ 1.2 GB learned need", "enc cuda:0 dec cpu base 5s"),
    ];
    for (free, reason, want) in table {
        let mut sim = Sim::new();
        sim.h.learn_asr(&rung(0, Some(0)), 1200);
        sim.cur.asr = Slot {
            placement: Some(rung(0, Some(0))),
            state: Phase::Absent,
            pid: None,
        };
        sim.cur.vad = Slot::ready(Device::Cpu, None);
        let d = sim.tick(
            &a1000(4096 - free),
            Some(fail(Role::Asr, FailureClass::OutOfMemory, false)),
        );
        let c = d.asr.expect("a new place");
        assert_eq!(c.to.to_string(), want);
        assert_eq!(c.switch, Switch::Start);
        assert!(c.reason.to_string().starts_with(reason), "{}", c.reason);
        assert!(d.vad.is_none());
    }
}

#[test]
fn a_cuda_fault_retries_the_same_rung_once_then_abandons_it() {
    let mut sim = Sim::on_gpu(0);
    let fault = || Some(fail(Role::Asr, FailureClass::CudaFault, true));
    let plenty = a1000(1000);
    let d = sim.tick(&plenty, fault());
    let c = d.asr.expect("retry");
    assert_eq!(c.to, rung(0, Some(0)));
    assert!(
        c.reason.to_string().contains(
            "CUDA fault while serving, 3.0 GB free ≥ 760 MB estimated need: retrying once"
        ),
        "{}",
        c.reason
    );
    let d = sim.tick(&plenty, fault());
    let c = d.asr.expect("step down");
    assert_eq!(c.to, rung(1, Some(0)));
    assert!(
        c.reason.to_string().contains("rung abandoned"),
        "{}",
        c.reason
    );
    assert_eq!(
        d.history
            .banned()
            .get(&encoder_ladder().asr[0].key())
            .map(String::as_str),
        Some("CUDA fault 2 times")
    );
    // Remembered: however long memory stays plentiful, the abandoned rung is not used again.
    sim.run(600, |_| plenty.clone());
    assert_eq!(sim.asr(), "enc cuda:0 dec cpu base 5s");
    // A CUDA fault with memory too short to retry steps down at once, without a ban.
    let mut sim = Sim::on_gpu(0);
    sim.cur.vad = Slot::ready(Device::Cpu, None);
    let d = sim.tick(&a1000(3400), fault());
    assert_eq!(
        d.asr.expect("down").to,
        Placement::cpu(ModelSize::Base, 10.0)
    );
    assert!(d.history.banned().is_empty());
}

#[test]
fn faults_far_apart_each_get_their_retry() {
    let mut sim = Sim::on_gpu(0);
    let fault = || Some(fail(Role::Asr, FailureClass::CudaFault, true));
    sim.tick(&a1000(1000), fault());
    sim.run(700, |_| a1000(1000));
    let d = sim.tick(&a1000(1000), fault());
    assert_eq!(d.asr.expect("retry").to, rung(0, Some(0)));
}

#[test]
fn other_failures_restart_in_place_until_the_restart_policy_escalates() {
    let table = [
        (
            FailureClass::Crash(11),
            false,
            "enc cuda:0 dec cpu base 10s",
            "crash (SIGSEGV) while serving: restarting in place",
        ),
        (
            FailureClass::Hang,
            false,
            "enc cuda:0 dec cpu base 10s",
            "hang while serving: restarting in place",
        ),
        (
            FailureClass::Crash(11),
            true,
            "enc cuda:0 dec cpu base 5s",
            "crash (SIGSEGV) while serving, restart limit reached",
        ),
        (
            FailureClass::Load,
            false,
            "enc cuda:0 dec cpu base 5s",
            "failed to load",
        ),
    ];
    for (class, escalated, want, why) in table {
        let mut sim = Sim::on_gpu(0);
        let ev = FailureEvent {
            escalated,
            ..fail(Role::Asr, class, true)
        };
        let c = sim.tick(&a1000(1000), Some(ev)).asr.expect("a place");
        assert_eq!(c.to.to_string(), want, "{class}");
        assert!(c.reason.to_string().contains(why), "{}", c.reason);
    }
}

#[test]
fn a_rung_that_cannot_load_on_cuda_is_abandoned_for_good() {
    // A rung whose model cannot initialise on CUDA (the shipped tiny-en encoder did not).
    let mut cfg = config();
    cfg.ladder.asr = Ladder::parse_asr(&["device=cuda model=tiny", "model=tiny"]).expect("parses");
    let mut sim = Sim::with(cfg);
    sim.tick(&a1000(300), None);
    assert_eq!(sim.asr(), "cuda:0 tiny 10s");
    sim.cur.asr.state = Phase::Absent;
    let d = sim.tick(
        &a1000(300),
        Some(fail(Role::Asr, FailureClass::Load, false)),
    );
    assert_eq!(d.asr.expect("down").reason.to_string(), "asr: cuda:0 tiny 10s → cpu tiny 10s: failed to load, 3.7 GB free ≥ 750 MB estimated need: rung abandoned");
    sim.run(300, |_| a1000(300));
    assert_eq!(sim.asr(), "cpu tiny 10s");
}

#[test]
fn a_memory_hog_moves_the_vad_first_then_steps_asr_down_holding_requests() {
    let mut sim = Sim::new();
    // Ours: 760 (asr) + 100 (vad) over a desktop's 300; the hog's share is on top.
    let ours = |sim: &Sim| {
        (if sim.vad() == "cuda:0" { 100 } else { 0 })
            + if sim.asr().contains("cuda:0") { 760 } else { 0 }
    };
    sim.tick(&a1000(300), None);
    assert_eq!(
        (sim.asr().as_str(), sim.vad().as_str()),
        ("enc cuda:0 dec cpu base 10s", "cuda:0")
    );
    // (second, hog MB, asr, vad, hold)
    let table = [
        (1, 2000, "enc cuda:0 dec cpu base 10s", "cuda:0", false), // 83 %: warning only
        (2, 2500, "enc cuda:0 dec cpu base 10s", "cpu", false),    // 89 %: critical, VAD leaves
        (3, 2500, "enc cuda:0 dec cpu base 10s", "cpu", false),
        (4, 2900, "enc cuda:0 dec cpu base 10s", "cpu", true), // 97 %: emergency, settling
        (5, 2900, "cpu base 10s", "cpu", true),                // settled: ASR steps down
        (6, 2900, "cpu base 10s", "cpu", false),               // off the GPU: requests flow
    ];
    for (t, hog, asr, vad, hold) in table {
        assert_eq!(sim.t, s(t));
        let used = 300 + hog + ours(&sim);
        let d = sim.tick(&a1000(used), None);
        assert_eq!(
            (sim.asr().as_str(), sim.vad().as_str(), d.hold_asr_requests),
            (asr, vad, hold),
            "at {t} s, {used} MB used"
        );
    }
    assert_eq!(
        sim.changes[2],
        (2, Role::Vad, "cpu".to_owned(), Switch::MakeBeforeBreak)
    );
    assert_eq!(
        sim.changes[3],
        (
            5,
            Role::Asr,
            "cpu base 10s".to_owned(),
            Switch::MakeBeforeBreak
        )
    );
    assert!(
        sim.reasons[2]
            .starts_with("vad: cuda:0 → cpu: cuda:0 at 89.3% (3.6 GB of 4.0 GB) ≥ critical 87.5%"),
        "{}",
        sim.reasons[2]
    );
    assert!(sim.reasons[3].starts_with("asr: enc cuda:0 dec cpu base 10s → cpu base 10s: cuda:0 at 96.6% (3.9 GB of 4.0 GB) ≥ emergency 95%"), "{}", sim.reasons[3]);
    for want in [
        "warning (≥ 80%)",
        "critical (≥ 87.5%)",
        "emergency (≥ 95%)",
        "asr requests held",
        "asr requests released",
    ] {
        assert!(
            sim.reports.iter().any(|r| r.contains(want)),
            "{want} not in {:?}",
            sim.reports
        );
    }
}

#[test]
fn under_emergency_asr_steps_one_rung_when_that_rung_clears_it() {
    // Learned footprints that make the 5 s context worth it on a 16 GB card.
    let mut sim = Sim::on_gpu(0);
    sim.cur.vad = Slot::ready(Device::Cpu, None);
    sim.h.learn_asr(&rung(0, Some(0)), 1500);
    sim.h.learn_asr(&rung(1, Some(0)), 900);
    let d = sim.tick(&cards(&[(16384, 15600)]), None);
    let c = d.asr.expect("step down");
    assert_eq!(
        (c.to, c.switch),
        (rung(1, Some(0)), Switch::BreakBeforeMake)
    );
    assert!(d.hold_asr_requests);
}

#[test]
fn the_hog_leaving_brings_workers_back_after_hysteresis_and_the_sustained_period() {
    let mut sim = Sim::new();
    sim.cur.asr = Slot::ready(Placement::cpu(ModelSize::Base, 10.0), None);
    sim.cur.vad = Slot::ready(Device::Cpu, None);
    // Free 1.4 GB: the ASR's top rung fits (760 + 300) but not with the 500 MB hysteresis,
    // so only the small VAD goes back, after the sustained 30 s.
    sim.run(120, |_| a1000(2700));
    assert!(fits(&rung(0, Some(0)), &a1000(2700), &sim.h, &sim.cfg).is_ok());
    assert_eq!(
        sim.changes,
        vec![(30, Role::Vad, "cuda:0".to_owned(), Switch::MakeBeforeBreak)]
    );
    // The hog leaves at 120 s: ASR back up 30 s later, not before, make-before-break.
    sim.run(30, |_| a1000(300));
    assert_eq!(sim.changes.len(), 1, "{:?}", sim.changes);
    sim.run(1, |_| a1000(300));
    assert_eq!(
        sim.changes[1],
        (
            150,
            Role::Asr,
            "enc cuda:0 dec cpu base 10s".to_owned(),
            Switch::MakeBeforeBreak
        )
    );
    assert!(sim.reasons[1].contains("stepping up: cuda:0 has had ≥ 760 MB estimated need + 300 MB margin + 500 MB hysteresis free for 30 s"), "{}", sim.reasons[1]);
}

#[test]
fn a_rung_left_by_out_of_memory_waits_twice_as_long_to_come_back() {
    let mut sim = Sim::new();
    sim.cur.asr = Slot {
        placement: Some(rung(0, Some(0))),
        state: Phase::Absent,
        pid: None,
    };
    sim.cur.vad = Slot::ready(Device::Cpu, None);
    sim.tick(
        &a1000(1000),
        Some(fail(Role::Asr, FailureClass::OutOfMemory, false)),
    );
    assert_eq!(sim.asr(), "enc cuda:0 dec cpu base 5s");
    sim.run(60, |_| a1000(1000));
    assert_eq!(sim.changes.len(), 2, "promoted early: {:?}", sim.changes);
    sim.run(1, |_| a1000(1000));
    assert_eq!(sim.asr(), "enc cuda:0 dec cpu base 10s");
    assert_eq!(sim.changes[2].0, 61);
}

#[test]
fn flapping_readings_never_make_the_placement_oscillate() {
    // Memory flapping every second between roomy and critical: the VAD leaves once and
    // nothing comes back up.
    let mut sim = Sim::on_gpu(0);
    sim.run(300, |t| a1000(if t % 2 == 0 { 1000 } else { 3700 }));
    assert_eq!(
        sim.changes,
        vec![(1, Role::Vad, "cpu".to_owned(), Switch::MakeBeforeBreak)]
    );
    // Hovering around the VAD's critical threshold: one move, no return (coming back would
    // need the hysteresis below critical).
    let mut sim = Sim::on_gpu(0);
    sim.run(300, |t| a1000(if t % 3 == 0 { 3600 } else { 3500 }));
    assert_eq!(sim.changes.len(), 1, "{:?}", sim.changes);
    // Flapping into emergency: ASR only ever steps down, at most once per rung.
    let mut sim = Sim::on_gpu(0);
    sim.run(300, |t| a1000(if t % 2 == 0 { 600 } else { 4000 }));
    let asr: Vec<_> = sim.changes.iter().filter(|c| c.1 == Role::Asr).collect();
    assert!(asr.len() <= encoder_ladder().asr.len(), "{asr:?}");
    let ladder = encoder_ladder();
    let rungs: Vec<usize> = sim
        .changes
        .iter()
        .filter(|c| c.1 == Role::Asr)
        .map(|c| {
            (0..ladder.asr.len())
                .find(|i| ladder.asr[*i].resolve(Some(0)).to_string() == c.2)
                .expect("on the ladder")
        })
        .collect();
    assert!(rungs.windows(2).all(|w| w[0] < w[1]), "{rungs:?}");
}

#[test]
fn several_gpus_most_free_wins_and_pins_are_kept() {
    let readings = cards(&[(8192, 6000), (8192, 1000)]);
    assert_eq!(
        fits(&rung(0, Some(0)), &readings, &History::default(), &config()),
        Ok(())
    );
    let mut sim = Sim::new();
    sim.tick(&readings, None);
    assert_eq!(
        (sim.asr().as_str(), sim.vad().as_str()),
        ("enc cuda:1 dec cpu base 10s", "cuda:1")
    );
    let mut cfg = config();
    cfg.ladder.asr[0] = "encoder=cuda:0 decoder=cpu model=base context=10"
        .parse()
        .expect("parses");
    cfg.ladder.vad = Ladder::parse_vad("cuda:0, cpu").expect("parses");
    let mut sim = Sim::with(cfg);
    sim.tick(&readings, None);
    assert_eq!(
        (sim.asr().as_str(), sim.vad().as_str()),
        ("enc cuda:0 dec cpu base 10s", "cuda:0")
    );
}

#[test]
fn an_xid_marks_the_device_suspect_and_workers_move_off_it() {
    // Two GPUs: both workers move to the other one.
    let mut sim = Sim::on_gpu(0);
    let d = sim.tick(&with_xid(cards(&[(8192, 2000), (8192, 1000)]), 0, 79), None);
    let (a, v) = (d.asr.expect("asr moves"), d.vad.expect("vad moves"));
    assert_eq!(
        (a.to, v.to, a.switch),
        (rung(0, Some(1)), Device::Cuda(1), Switch::MakeBeforeBreak)
    );
    assert_eq!(
        a.reason.to_string(),
        "asr: enc cuda:0 dec cpu base 10s → enc cuda:1 dec cpu base 10s: cuda:0 suspect (Xid 79)"
    );
    assert!(
        d.report
            .iter()
            .any(|r| r.contains("cuda:0: Xid 79: device suspect")),
        "{:?}",
        d.report
    );
    assert_eq!(
        d.history.suspect_devices().get(&0).map(String::as_str),
        Some("Xid 79")
    );
    // Remembered: nothing goes back, however empty the device looks.
    sim.run(300, |_| cards(&[(8192, 0), (8192, 2000)]));
    assert_eq!(
        (sim.asr().as_str(), sim.vad().as_str()),
        ("enc cuda:1 dec cpu base 10s", "cuda:1")
    );
    // One GPU: to the CPU.
    let mut sim = Sim::on_gpu(0);
    sim.tick(&with_xid(a1000(1000), 0, 48), None);
    assert_eq!(
        (sim.asr().as_str(), sim.vad().as_str()),
        ("cpu base 10s", "cpu")
    );
    // An application Xid (our own worker's fault: a trapping kernel raised Xid 43 on the
    // H100) is reported, not held against the device.
    let mut sim = Sim::on_gpu(0);
    let d = sim.tick(&with_xid(a1000(1000), 0, 43), None);
    assert!(d.asr.is_none() && d.vad.is_none());
    assert!(d.history.suspect_devices().is_empty());
    assert!(
        d.report
            .iter()
            .any(|r| r.contains("Xid 43 (an application fault")),
        "{:?}",
        d.report
    );
}

#[test]
fn emergency_holds_asr_requests_only_while_asr_is_on_that_device() {
    let cfg = config();
    // (asr placement, asr state, hold)
    let table = [
        (rung(0, Some(0)), Phase::Ready, true),
        (rung(0, Some(0)), Phase::Starting, true),
        (rung(0, Some(0)), Phase::Absent, false),
        (Placement::cpu(ModelSize::Base, 10.0), Phase::Ready, false),
    ];
    for (p, state, hold) in table {
        let cur = Current {
            vad: Slot::ready(Device::Cpu, None),
            asr: Slot {
                placement: Some(p),
                state,
                pid: None,
            },
        };
        let d = decide(&a1000(4000), &History::default(), &cur, None, &cfg, s(100));
        assert_eq!(d.hold_asr_requests, hold, "{p} {state:?}");
        if state == Phase::Starting {
            assert!(
                d.asr.is_none(),
                "no new change while one is being carried out"
            );
        }
    }
    // On another device's emergency, ASR keeps serving.
    let cur = Current {
        vad: Slot::ready(Device::Cpu, None),
        asr: Slot::ready(rung(0, Some(1)), None),
    };
    let d = decide(
        &cards(&[(4096, 4000), (4096, 1000)]),
        &History::default(),
        &cur,
        None,
        &cfg,
        s(100),
    );
    assert!(!d.hold_asr_requests && d.asr.is_none());
}

#[test]
fn measured_footprints_replace_estimates() {
    let cfg = config();
    let p = rung(0, Some(0));
    let mut h = History::default();
    // 1.3 GB free: the 760 MB estimate fits, a measured 1.2 GB does not.
    let readings = a1000(2800);
    assert_eq!(fits(&p, &readings, &h, &cfg), Ok(()));
    h.learn_asr(&p, 1200);
    assert_eq!(
        fits(&p, &readings, &h, &cfg),
        Err("1.3 GB free < 1.2 GB learned need + 300 MB margin".to_owned())
    );
    // Keys ignore which GPU: what was learned on cuda:0 holds for cuda:1.
    assert_eq!(h.footprint(&rung(0, Some(1)).key()), Some(1200));
    h.learn_asr(&Placement::cpu(ModelSize::Base, 10.0), 999);
    assert_eq!(
        h.footprint(&Placement::cpu(ModelSize::Base, 10.0).key()),
        None
    );
    h.learn_vad(Device::Cuda(0), 120);
    assert_eq!(h.footprint("vad cuda"), Some(120));
    // A running worker's own measured use counts as released when it steps down.
    let cur = Current {
        vad: Slot::ready(Device::Cpu, None),
        asr: Slot::ready(p, Some(4242)),
    };
    let mut r = cards(&[(16384, 15600)]);
    if let Availability::Available(g) = &mut r {
        g.devices[0].processes.push((4242, 1500));
    }
    h.learn_asr(&rung(1, None), 900);
    let d = decide(&r, &h, &cur, None, &cfg, s(100));
    assert_eq!(d.asr.expect("down").to, rung(1, Some(0)));
}

#[test]
fn fits_table() {
    let cfg = config();
    // Thresholds out of the way, to test the margin alone.
    let loose = PlacementConfig {
        thresholds: Thresholds {
            critical: Threshold::Pct(100.0),
            emergency: Threshold::Pct(100.0),
            ..Thresholds::default()
        },
        ..PlacementConfig::default()
    };
    let h = History::default();
    let mut suspect = History::default();
    suspect.suspect.insert(0, "Xid 79".to_owned());
    let p = rung(0, Some(0));
    type Row<'a> = (
        &'a str,
        Placement,
        Availability,
        &'a History,
        &'a PlacementConfig,
        Result<(), &'a str>,
    );
    let table: Vec<Row> = vec![
        (
            "cpu always fits",
            Placement::cpu(ModelSize::Tiny, 3.0),
            Availability::NoGpu("x".into()),
            &h,
            &cfg,
            Ok(()),
        ),
        ("roomy", p, a1000(1000), &h, &cfg, Ok(())),
        (
            "exactly need + margin",
            p,
            a1000(4096 - 1060),
            &h,
            &loose,
            Ok(()),
        ),
        (
            "one short",
            p,
            a1000(4096 - 1059),
            &h,
            &loose,
            Err("1.0 GB free < 760 MB estimated need + 300 MB margin"),
        ),
        (
            "no gpu",
            p,
            Availability::NoGpu("no devices".into()),
            &h,
            &cfg,
            Err("no GPU: no devices"),
        ),
        (
            "missing device",
            rung(0, Some(3)),
            a1000(0),
            &h,
            &cfg,
            Err("cuda:3 not found"),
        ),
        (
            "suspect",
            p,
            a1000(0),
            &suspect,
            &cfg,
            Err("cuda:0 is suspect (Xid 79)"),
        ),
        (
            "fits but crosses critical",
            p,
            cards(&[(81920, 71000)]),
            &h,
            &cfg,
            Err("would leave cuda:0 at 87.5% ≥ critical 87.5%"),
        ),
    ];
    for (name, p, r, h, cfg, want) in table {
        let got = fits(&p, &r, h, cfg);
        match want {
            Ok(()) => assert_eq!(got, Ok(()), "{name}"),
            Err(w) => assert!(
                got.as_ref().is_err_and(|e| e.contains(w)),
                "{name}: {got:?}"
            ),
        }
    }
    assert_eq!(
        fits_vad(Device::Cuda(0), &a1000(3600), &h, &cfg).map_err(|e| e.contains("critical")),
        Err(true)
    );
    assert_eq!(fits_vad(Device::Cpu, &a1000(4096), &h, &cfg), Ok(()));
}

#[test]
fn memory_recovery_table() {
    // (free before stop, free now, released by the worker, recovered)
    let table = [
        (1000, 1000, 800, false),
        (1000, 1599, 800, false),
        (1000, 1600, 800, true), // exactly 75 %
        (1000, 1900, 800, true),
        (1000, 900, 800, false), // something else allocated meanwhile
        (1000, 1000, 0, true),   // nothing to wait for
        (u64::MAX, u64::MAX, u64::MAX, false),
    ];
    for (before, now, released, want) in table {
        assert_eq!(
            memory_recovered(before, now, released),
            want,
            "{before} {now} {released}"
        );
    }
}

#[test]
fn thresholds_in_percent_or_megabytes() {
    let d = card(0, 4096, 3600);
    let table = [
        (Thresholds::default(), Pressure::Critical),
        (
            Thresholds {
                warning: Threshold::UsedMb(1000),
                critical: Threshold::UsedMb(3000),
                emergency: Threshold::UsedMb(3500),
            },
            Pressure::Emergency,
        ),
        (
            Thresholds {
                warning: Threshold::UsedMb(3600),
                critical: Threshold::UsedMb(3700),
                emergency: Threshold::UsedMb(3800),
            },
            Pressure::Warning,
        ),
        (
            Thresholds {
                warning: Threshold::Pct(90.0),
                ..Thresholds::default()
            },
            Pressure::Critical,
        ),
    ];
    for (t, want) in table {
        assert_eq!(pressure(&d, &t), want, "{t:?}");
    }
    assert_eq!(
        pressure(&card(0, 4096, 0), &Thresholds::default()),
        Pressure::Normal
    );
}

#[test]
fn rungs_parse_and_print_round_trip() {
    for text in [
        "encoder=cuda decoder=cpu model=base context=10",
        "encoder=cuda:1 decoder=cpu model=tiny context=2.5",
        "encoder=cpu decoder=cpu model=base context=3",
    ] {
        let r: Rung = text.parse().expect(text);
        assert_eq!(r.to_string(), text);
    }
    let short: Rung = "device=cuda model=tiny context=5s".parse().expect("parses");
    assert_eq!(
        short.to_string(),
        "encoder=cuda decoder=cuda model=tiny context=5"
    );
    assert_eq!(
        Ladder::default()
            .asr
            .iter()
            .map(Rung::label)
            .collect::<Vec<_>>(),
        [
            "cuda base 10s",
            "enc cuda dec cpu base 10s",
            "enc cuda dec cpu base 5s",
            "enc cuda dec cpu base 3s",
            "cpu base 10s",
            "cpu tiny 10s"
        ]
    );
    let bad = [
        ("encoder=tpu", "unknown device"),
        ("model=large", "unknown model"),
        ("context=0", "more than 0"),
        ("context=ten", "expected seconds"),
        ("colour=red", "unknown key"),
        ("encoder", "key=value"),
        ("encoder=cuda:0 decoder=cuda:1", "at most one GPU"),
    ];
    for (text, want) in bad {
        let err = text.parse::<Rung>().expect_err(text);
        assert!(err.contains(want), "{text}: {err}");
    }
    assert!(Ladder::parse_asr(&["model=base", "model=huge"])
        .is_err_and(|e| e.starts_with("asr rung 2:")));
    assert_eq!(
        Ladder::parse_vad("cuda cpu"),
        Ok(vec![Target::Gpu(None), Target::Cpu])
    );
    let d = Ladder::default();
    assert!(Ladder::validate_asr(&d.asr).is_ok() && Ladder::validate_vad(&d.vad).is_ok());
    let gpu_only = Ladder {
        asr: Ladder::parse_asr(&["device=cuda"]).expect("parses"),
        vad: vec![Target::Cpu],
    };
    assert!(Ladder::validate_asr(&gpu_only.asr).is_err());
    let vad_gpu_only = Ladder {
        vad: vec![Target::Gpu(None)],
        ..Ladder::default()
    };
    assert!(Ladder::validate_vad(&vad_gpu_only.vad).is_err());
}

#[test]
fn reasons_render_for_status() {
    let r = Reason {
        role: Role::Asr,
        from: Some("cuda:0 base 10s".into()),
        to: "cuda:0 base 5s".into(),
        why: "out of memory at load, 310 MB free < 1.2 GB learned need".into(),
    };
    assert_eq!(r.to_string(), "asr: cuda:0 base 10s → cuda:0 base 5s: out of memory at load, 310 MB free < 1.2 GB learned need");
    let p = Placement {
        encoder: Device::Cuda(0),
        decoder: Device::Cuda(0),
        model: ModelSize::Base,
        context_s: 10.0,
    };
    assert_eq!(p.to_string(), "cuda:0 base 10s");
    assert_eq!(rung(2, Some(1)).to_string(), "enc cuda:1 dec cpu base 3s");
    assert_eq!(
        Placement::cpu(ModelSize::Tiny, 2.5).to_string(),
        "cpu tiny 2.5s"
    );
    assert_eq!(mb_str(310), "310 MB");
    assert_eq!(mb_str(1229), "1.2 GB");
}

#[test]
fn a_placement_off_the_ladder_is_brought_back_onto_it() {
    let cur = Current {
        vad: Slot::ready(Device::Cpu, None),
        asr: Slot::ready(Placement::cpu(ModelSize::Base, 7.0), None),
    };
    let d = decide(
        &a1000(300),
        &History::default(),
        &cur,
        None,
        &config(),
        s(0),
    );
    let c = d.asr.expect("moved");
    assert_eq!(
        (c.to, c.switch),
        (rung(0, Some(0)), Switch::MakeBeforeBreak)
    );
    assert!(
        c.reason.why.starts_with("not on the configured ladder"),
        "{}",
        c.reason
    );
}
