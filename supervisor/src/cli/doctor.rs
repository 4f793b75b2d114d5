//! `swictation doctor`: checks everything the daemon depends on, one row each, pass or fail
//! with the fix.
//!
//! Checks run the real thing where that is cheap: the ONNX Runtime check starts the VAD
//! worker's in-process benchmark (which loads the library and the model), the CUDA check does
//! the same on `cuda`, and models are hashed against the pins `deploy/setup.sh` downloads with.

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use swictation_proto::Role;

use crate::config::{Config, OutputMode};
use crate::io::output::{self, Clipper, Session, Tool, Typer};

/// How long a worker check may take (a first ONNX Runtime load from a cold disk is slow).
const WORKER_CHECK_TIMEOUT: Duration = Duration::from_secs(60);

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Works.
    Pass,
    /// Not needed for the default setup, but something is missing (no GPU, no typing tool).
    Warn,
    /// The daemon cannot work until this is fixed.
    Fail,
}

/// One row of the report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Check {
    /// What was checked.
    pub name: String,
    /// The outcome.
    pub verdict: Verdict,
    /// What was found.
    pub detail: String,
    /// What to do about it (empty when it passed).
    pub fix: String,
}

impl Check {
    fn new(
        name: &str,
        verdict: Verdict,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Check {
        Check {
            name: name.into(),
            verdict,
            detail: detail.into(),
            fix: fix.into(),
        }
    }
}

/// The model files `deploy/setup.sh` installs, with their pinned sha256, grouped by model.
pub const MODELS: &[(&str, &[(&str, &str)])] = &[
    (
        "silero-vad",
        &[(
            "silero-vad/silero_vad.onnx",
            "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3",
        )],
    ),
    (
        "moonshine-base-en",
        &[
            (
                "moonshine-base-en/encoder_model.ort",
                "9d1a19e044cbf89a207723d1adb667de89a5671a1e3e611b8ebe721b2c31219c",
            ),
            (
                "moonshine-base-en/decoder_model_merged.ort",
                "370e0c1f161d68dc1c2264c1a82024fb123380da3b73f47f05531d1e8d3308c3",
            ),
            (
                "moonshine-base-en/tokenizer.bin",
                "04670d78994d030185c3dd843c60591788fed0a56cc6750747bd326825f13ca9",
            ),
        ],
    ),
    (
        "moonshine-tiny-en",
        &[
            (
                "moonshine-tiny-en/encoder_model.ort",
                "94e90a4654fc45cdfedb77c4c08e1739f48862998e58fada384b25118134f221",
            ),
            (
                "moonshine-tiny-en/decoder_model_merged.ort",
                "cf524c4862d36e9e5ab032eddc73637efd822d70e868ac575cf1a46e1e4708a0",
            ),
            (
                "moonshine-tiny-en/tokenizer.bin",
                "6884b35fd6377d4c4d32336a0bc152f36b64d1e45b6503683cdc238250a8472d",
            ),
        ],
    ),
];

/// Runs every check. `config` is the result of loading the configuration (a broken file is a
/// row of its own; the other checks then use the defaults).
pub fn run(config: Result<(Config, PathBuf), crate::config::ConfigError>) -> Vec<Check> {
    let mut rows = Vec::new();
    let cfg = match config {
        Ok((cfg, path)) => {
            let detail = if path.exists() {
                format!("{} is valid", path.display())
            } else {
                format!(
                    "{} does not exist: defaults apply (`swictation config default` prints them)",
                    path.display()
                )
            };
            rows.push(Check::new("configuration", Verdict::Pass, detail, ""));
            cfg
        }
        Err(e) => {
            rows.push(Check::new(
                "configuration",
                Verdict::Fail,
                e.to_string(),
                "fix the key named (see `swictation config default` for every key and its default)",
            ));
            Config::default()
        }
    };
    let vad_worker =
        crate::io::worker::worker_program(cfg.runtime.workers_dir.as_deref(), Role::Vad);
    let asr_worker =
        crate::io::worker::worker_program(cfg.runtime.workers_dir.as_deref(), Role::Asr);
    rows.push(workers_present(&[&vad_worker, &asr_worker]));
    let models = cfg.runtime.models_dir();
    rows.extend(models_rows(&models, &cfg.asr.model));
    rows.push(prepared_row(
        &models.join(format!("moonshine-{}-en", cfg.asr.model)),
    ));
    let canary = swictation_proto::paths::speech_dir().join("goforward.raw");
    let ort = worker_bench(&vad_worker, &cfg, &canary, "cpu");
    rows.push(match ort {
        Ok(detail) => Check::new("ONNX Runtime", Verdict::Pass, detail, ""),
        Err(e) => Check::new(
            "ONNX Runtime",
            Verdict::Fail,
            e,
            "run deploy/setup.sh (installs ONNX Runtime 1.32 and the models), or point SWICTATION_ORT_LIB / runtime.ort_lib at libonnxruntime.so",
        ),
    });
    let gpu = gpu_row();
    let has_gpu = gpu.verdict == Verdict::Pass;
    rows.push(gpu);
    rows.push(match worker_bench(&vad_worker, &cfg, &canary, "cuda") {
        Ok(detail) => Check::new("CUDA execution provider", Verdict::Pass, detail, ""),
        Err(e) => Check::new(
            "CUDA execution provider",
            // Without a GPU, CUDA failing is expected: everything runs on the CPU.
            if has_gpu { Verdict::Fail } else { Verdict::Warn },
            e,
            if has_gpu {
                "install an ONNX Runtime built with CUDA (onnxruntime-gpu) plus CUDA 12 and cuDNN 9 libraries, or keep devices on cpu"
            } else {
                "none needed on a machine without an NVIDIA GPU (devices stay on cpu)"
            },
        ),
    });
    rows.push(audio_row());
    rows.push(sleep_row());
    rows.extend(output_rows(&cfg));
    rows.push(socket_row());
    rows
}

/// The report as an aligned table.
pub fn render(rows: &[Check]) -> String {
    let name_w = rows.iter().map(|r| r.name.len()).max().unwrap_or(0);
    let mut out = String::new();
    for r in rows {
        let v = match r.verdict {
            Verdict::Pass => "pass",
            Verdict::Warn => "warn",
            Verdict::Fail => "FAIL",
        };
        out.push_str(&format!("{v}  {:<name_w$}  {}\n", r.name, r.detail));
        if !r.fix.is_empty() {
            out.push_str(&format!("      {:<name_w$}  fix: {}\n", "", r.fix));
        }
    }
    out
}

fn workers_present(programs: &[&Path]) -> Check {
    let missing: Vec<String> = programs
        .iter()
        .filter(|p| !p.is_file())
        .map(|p| p.display().to_string())
        .collect();
    if missing.is_empty() {
        Check::new(
            "worker binaries",
            Verdict::Pass,
            programs
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            "",
        )
    } else {
        Check::new(
            "worker binaries",
            Verdict::Fail,
            format!("missing: {}", missing.join(", ")),
            "run deploy/install.sh, or set runtime.workers_dir / --workers-dir to where they are",
        )
    }
}

/// One row per model: present and matching its pinned hash. The configured ASR model must be
/// there; the other Moonshine model is optional.
fn models_rows(dir: &Path, asr_model: &str) -> Vec<Check> {
    MODELS
        .iter()
        .map(|(name, files)| {
            let needed = *name == "silero-vad" || name.ends_with(&format!("{asr_model}-en"));
            let mut problems = Vec::new();
            for (rel, want) in *files {
                let path = dir.join(rel);
                match sha256_file(&path) {
                    Ok(got) if got == *want => {}
                    Ok(got) => problems.push(format!(
                        "{} has sha256 {got}, expected {want}",
                        path.display()
                    )),
                    Err(e) => problems.push(format!("{}: {e}", path.display())),
                }
            }
            let label = format!("model {name}");
            if problems.is_empty() {
                Check::new(
                    &label,
                    Verdict::Pass,
                    format!(
                        "{} file(s) in {}, sha256 verified",
                        files.len(),
                        dir.join(name).display()
                    ),
                    "",
                )
            } else {
                Check::new(
                    &label,
                    if needed { Verdict::Fail } else { Verdict::Warn },
                    problems.join("; "),
                    "run deploy/setup.sh (it re-downloads and verifies every model)",
                )
            }
        })
        .collect()
}

/// Whether the ASR model's prepared files (made by `deploy/prepare.sh`) are in place and match
/// the shipped files; without them the worker still runs, on the slower shipped files.
fn prepared_row(dir: &Path) -> Check {
    let label = format!(
        "prepared {}",
        dir.file_name().unwrap_or_default().to_string_lossy()
    );
    let warn = |why: String| {
        Check::new(
            &label,
            Verdict::Warn,
            format!(
                "{why}: the ASR worker uses the shipped files, whose decoder is about 4x slower"
            ),
            "run deploy/prepare.sh after building (deploy/run.sh, test.sh and install.sh do)",
        )
    };
    let manifest = dir.join("prepared/manifest.json");
    let Ok(text) = std::fs::read_to_string(&manifest) else {
        return warn(format!("{} has no prepared models", dir.display()));
    };
    let Ok(m) = serde_json::from_str::<serde_json::Value>(&text) else {
        return warn(format!("{} is unreadable", manifest.display()));
    };
    let mut sizes = Vec::new();
    for f in m["files"].as_array().into_iter().flatten() {
        let name = f["name"].as_str().unwrap_or_default();
        let size = |p: PathBuf| std::fs::metadata(p).map(|m| m.len()).ok();
        if size(dir.join(name)) != f["source_bytes"].as_u64() {
            return warn(format!(
                "{} changed since it was prepared",
                dir.join(name).display()
            ));
        }
        let prepared = dir.join("prepared").join(name);
        if size(prepared.clone()) != f["bytes"].as_u64() {
            return warn(format!("{} is missing or truncated", prepared.display()));
        }
        if sha256_file(&prepared).ok().as_deref() != f["sha256"].as_str() {
            return warn(format!(
                "{} does not match the sha256 in its manifest",
                prepared.display()
            ));
        }
        sizes.push(format!(
            "{name} {} MB",
            f["bytes"].as_u64().unwrap_or(0) / 1_000_000
        ));
    }
    if sizes.len() < 2 {
        return warn(format!("{} lists too few files", manifest.display()));
    }
    Check::new(
        &label,
        Verdict::Pass,
        format!(
            "{} for ONNX Runtime {}, sha256 verified, checked on {} clips",
            sizes.join(", "),
            m["ort_version"].as_str().unwrap_or("?"),
            m["checked_clips"].as_array().map_or(0, Vec::len)
        ),
        "",
    )
}

/// Runs `swictation-vad-worker --bench CANARY --bench-frames 10 --device DEVICE`, which loads
/// ONNX Runtime and the VAD model on that device; returns its summary or why it failed.
fn worker_bench(
    program: &Path,
    cfg: &Config,
    canary: &Path,
    device: &str,
) -> Result<String, String> {
    if !canary.is_file() {
        return Err(format!(
            "{} is missing (run deploy/setup.sh)",
            canary.display()
        ));
    }
    let mut cmd = Command::new(program);
    cmd.arg("--bench")
        .arg(canary)
        .args(["--bench-frames", "10", "--device", device]);
    cmd.arg("--model")
        .arg(cfg.vad.model_path(&cfg.runtime.models_dir()));
    if let Some(lib) = &cfg.runtime.ort_lib {
        cmd.arg("--ort-lib").arg(lib);
    }
    let (status, stdout, stderr) = run_bounded(&mut cmd, WORKER_CHECK_TIMEOUT)?;
    if !status {
        let last = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("no message")
            .trim()
            .to_owned();
        return Err(last);
    }
    let v: serde_json::Value = serde_json::from_str(stdout.trim())
        .map_err(|e| format!("unexpected output ({e}): {}", stdout.trim()))?;
    Ok(format!(
        "VAD loaded on {} in {:.0} ms, {:.0} µs/frame",
        v["device"].as_str().unwrap_or(device),
        v["load_ms"].as_f64().unwrap_or(0.0),
        v["mean_us"].as_f64().unwrap_or(0.0)
    ))
}

/// Runs `cmd` to completion within `limit`: (success, stdout, stderr).
fn run_bounded(cmd: &mut Command, limit: Duration) -> Result<(bool, String, String), String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {:?}: {e}", cmd.get_program()))?;
    let mut out = child.stdout.take();
    let mut err = child.stderr.take();
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(o) = out.as_mut() {
            let _ = o.read_to_string(&mut s);
        }
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(e) = err.as_mut() {
            let _ = e.read_to_string(&mut s);
        }
        s
    });
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if start.elapsed() > limit => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("did not finish within {} s", limit.as_secs()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(e.to_string()),
        }
    };
    Ok((
        status.success(),
        t_out.join().unwrap_or_default(),
        t_err.join().unwrap_or_default(),
    ))
}

/// Directories the dynamic loader searches for the NVIDIA management library.
fn library_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("LD_LIBRARY_PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(
        [
            "/usr/lib/x86_64-linux-gnu",
            "/usr/lib/aarch64-linux-gnu",
            "/usr/lib64",
            "/usr/lib",
            "/lib/x86_64-linux-gnu",
            "/lib64",
            "/usr/local/nvidia/lib64",
        ]
        .map(PathBuf::from),
    );
    dirs
}

/// NVML and the GPU: the library file, and `nvidia-smi` for the card's name where present.
fn gpu_row() -> Check {
    let nvml = library_dirs()
        .into_iter()
        .map(|d| d.join("libnvidia-ml.so.1"))
        .find(|p| p.exists());
    let Some(nvml) = nvml else {
        return Check::new(
            "NVML / GPU",
            Verdict::Warn,
            "no GPU (libnvidia-ml.so.1 not found)",
            "none needed: everything runs on the CPU; for a GPU install the NVIDIA driver",
        );
    };
    let name = output::find_program("nvidia-smi").and_then(|smi| {
        let mut cmd = Command::new(smi);
        cmd.args(["--query-gpu=name,memory.total", "--format=csv,noheader"]);
        run_bounded(&mut cmd, Duration::from_secs(10))
            .ok()
            .filter(|(ok, _, _)| *ok)
            .map(|(_, o, _)| o.trim().replace('\n', "; "))
    });
    match name {
        Some(n) if !n.is_empty() => Check::new(
            "NVML / GPU",
            Verdict::Pass,
            format!("{n} ({})", nvml.display()),
            "",
        ),
        _ => Check::new(
            "NVML / GPU",
            Verdict::Warn,
            format!("{} present, but nvidia-smi lists no GPU", nvml.display()),
            "check the driver with `nvidia-smi`",
        ),
    }
}

/// Whether sleep and wake come from logind over the system bus (bounded: a bus that does not
/// answer is no bus).
fn sleep_row() -> Check {
    let found = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
        .and_then(|rt| {
            rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(5), crate::io::logind::probe())
                    .await
                    .map_err(|_| "the system bus did not answer within 5 s".to_owned())?
                    .map_err(|e| e.to_string())
            })
        });
    match found {
        Ok(detail) => Check::new("sleep and wake", Verdict::Pass, detail, ""),
        Err(e) => Check::new(
            "sleep and wake",
            Verdict::Warn,
            format!("{e}: a sleep is noticed from the clocks after waking"),
            "none needed: GPU workers still restart after a sleep, a second later and without finishing GPU work first; for logind's notice, run under systemd",
        ),
    }
}

/// Input devices through cpal. Listing opens devices, which can block (an ALSA plugin on a FIFO
/// without a writer), so it runs on a thread with a bound.
fn audio_row() -> Check {
    let (tx, rx) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("doctor-audio".into())
        .spawn(move || {
            let _ = tx.send(crate::io::capture::list_devices());
        });
    if spawned.is_err() {
        return Check::new(
            "audio input",
            Verdict::Fail,
            "cannot start a thread to list devices",
            "",
        );
    }
    match rx.recv_timeout(Duration::from_secs(10)) {
        Err(_) => Check::new(
            "audio input",
            Verdict::Fail,
            "listing input devices did not finish within 10 s",
            "check `arecord -L`; a device may be hanging",
        ),
        Ok(Err(e)) => Check::new(
            "audio input",
            Verdict::Fail,
            e.to_string(),
            "connect a microphone; check `arecord -l`",
        ),
        Ok(Ok(devices)) if devices.is_empty() => Check::new(
            "audio input",
            Verdict::Fail,
            "no input devices",
            "connect a microphone; check `arecord -l`",
        ),
        Ok(Ok(devices)) => {
            let default = devices
                .iter()
                .find(|d| d.is_default)
                .map(|d| format!("default {} [{}]", d.name, d.id));
            Check::new(
                "audio input",
                Verdict::Pass,
                format!(
                    "{} input device(s); {}",
                    devices.len(),
                    default.unwrap_or_else(|| "no default".into())
                ),
                "",
            )
        }
    }
}

/// The configured output's tool, then which typing/clipboard tools exist at all.
fn output_rows(cfg: &Config) -> Vec<Check> {
    let session = Session::from_env();
    let configured = match output::Output::open(&cfg.output, &session) {
        Ok(o) => Check::new("output", Verdict::Pass, o.describe(), ""),
        Err(e) => Check::new(
            "output",
            Verdict::Fail,
            e.to_string(),
            "install the tool named, or set output.mode",
        ),
    };
    let present = |t: &dyn Tool| output::find_program(t.program()).map(|_| t.program());
    let typers: Vec<&str> = [Typer::Wtype, Typer::Ydotool, Typer::Xdotool]
        .iter()
        .filter_map(|t| present(t))
        .collect();
    let clippers: Vec<&str> = [Clipper::WlCopy, Clipper::Xclip]
        .iter()
        .filter_map(|t| present(t))
        .collect();
    let tools = if typers.is_empty() && clippers.is_empty() {
        Check::new(
            "output tools",
            if cfg.output.mode == OutputMode::Stdout || cfg.output.mode == OutputMode::File { Verdict::Warn } else { Verdict::Fail },
            "no typing (wtype, ydotool, xdotool) or clipboard (wl-copy, xclip) tool installed",
            "for typing into windows: sudo apt install wtype (Wayland) or xdotool (X11); for the clipboard: wl-clipboard or xclip",
        )
    } else {
        Check::new(
            "output tools",
            Verdict::Pass,
            format!(
                "typing: {}; clipboard: {}",
                list_or_none(&typers),
                list_or_none(&clippers)
            ),
            "",
        )
    };
    let (typer, why) = output::type_tool_choice(cfg.output.type_tool, &session);
    let typing = match output::find_program(typer.program()) {
        Some(_) => Check::new(
            "typing tool",
            Verdict::Pass,
            format!("{} ({why})", typer.program()),
            "",
        ),
        None => Check::new(
            "typing tool",
            if matches!(cfg.output.mode, OutputMode::Type | OutputMode::Paste) {
                Verdict::Fail
            } else {
                Verdict::Warn
            },
            format!(
                "{} would be used ({why}), but it is not installed",
                typer.program()
            ),
            typer.install_hint(),
        ),
    };
    vec![configured, tools, typing]
}

fn list_or_none(v: &[&str]) -> String {
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// The control socket's directory: ours and 0700 if it exists, else creatable; and whether a
/// daemon is listening.
fn socket_row() -> Check {
    let dir = crate::io::control::socket_dir();
    let sock = dir.join("control.sock");
    let me = nix::unistd::geteuid().as_raw();
    match std::fs::symlink_metadata(&dir) {
        Ok(m) if !m.file_type().is_dir() => Check::new(
            "control socket",
            Verdict::Fail,
            format!("{} is not a directory", dir.display()),
            format!("remove {}", dir.display()),
        ),
        Ok(m) if m.uid() != me => Check::new(
            "control socket",
            Verdict::Fail,
            format!(
                "{} belongs to uid {}, not to us ({me})",
                dir.display(),
                m.uid()
            ),
            format!("remove {} (someone else created it)", dir.display()),
        ),
        Ok(m) if m.mode() & 0o077 != 0 => Check::new(
            "control socket",
            Verdict::Fail,
            format!(
                "{} has mode {:o}; other users could reach the socket",
                dir.display(),
                m.mode() & 0o7777
            ),
            format!(
                "chmod 700 {} (the daemon also fixes it when it starts)",
                dir.display()
            ),
        ),
        Ok(_) => {
            let running = std::os::unix::net::UnixStream::connect(&sock).is_ok();
            Check::new(
                "control socket",
                Verdict::Pass,
                format!(
                    "{} (mode 700){}",
                    dir.display(),
                    if running {
                        ", daemon listening"
                    } else {
                        ", daemon not running"
                    }
                ),
                "",
            )
        }
        Err(_) => {
            let parent = dir.parent().unwrap_or(Path::new("/"));
            let writable = nix::unistd::access(
                parent,
                nix::unistd::AccessFlags::W_OK | nix::unistd::AccessFlags::X_OK,
            )
            .is_ok();
            if writable {
                Check::new(
                    "control socket",
                    Verdict::Pass,
                    format!(
                        "{} will be created (mode 700) when the daemon starts",
                        dir.display()
                    ),
                    "",
                )
            } else {
                Check::new(
                    "control socket",
                    Verdict::Fail,
                    format!(
                        "cannot create {}: {} is not writable",
                        dir.display(),
                        parent.display()
                    ),
                    "set XDG_RUNTIME_DIR to your runtime directory (normally /run/user/$UID)",
                )
            }
        }
    }
}

/// Hex sha256 of a file.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.hex())
}

/// SHA-256 (FIPS 180-4), enough to verify model files without another dependency.
#[derive(Clone)]
pub struct Sha256 {
    state: [u32; 8],
    block: [u8; 64],
    used: usize,
    length: u64,
}

const K: [u32; 64] = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
];

impl Default for Sha256 {
    fn default() -> Self {
        Self::new()
    }
}

impl Sha256 {
    /// A fresh hash.
    pub fn new() -> Self {
        Sha256 {
            state: [
                0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
                0x5be0cd19,
            ],
            block: [0; 64],
            used: 0,
            length: 0,
        }
    }

    /// Adds bytes.
    pub fn update(&mut self, mut data: &[u8]) {
        self.length = self.length.wrapping_add(data.len() as u64);
        while !data.is_empty() {
            let n = (64 - self.used).min(data.len());
            self.block[self.used..self.used + n].copy_from_slice(&data[..n]);
            self.used += n;
            data = &data[n..];
            if self.used == 64 {
                let block = self.block;
                self.compress(&block);
                self.used = 0;
            }
        }
    }

    /// The digest as lower-case hex.
    pub fn hex(mut self) -> String {
        let bits = self.length.wrapping_mul(8);
        self.update(&[0x80]);
        while self.used != 56 {
            self.update(&[0]);
        }
        self.update(&bits.to_be_bytes());
        self.state.iter().map(|w| format!("{w:08x}")).collect()
    }

    fn compress(&mut self, block: &[u8; 64]) {
        let mut w = [0u32; 64];
        for (i, c) in block.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16]
                .wrapping_add(s0)
                .wrapping_add(w[i - 7])
                .wrapping_add(s1);
        }
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut h] = self.state;
        for i in 0..64 {
            let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
            let ch = (e & f) ^ (!e & g);
            let t1 = h
                .wrapping_add(s1)
                .wrapping_add(ch)
                .wrapping_add(K[i])
                .wrapping_add(w[i]);
            let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
            let maj = (a & b) ^ (a & c) ^ (b & c);
            let t2 = s0.wrapping_add(maj);
            h = g;
            g = f;
            f = e;
            e = d.wrapping_add(t1);
            d = c;
            c = b;
            b = a;
            a = t1.wrapping_add(t2);
        }
        for (s, v) in self.state.iter_mut().zip([a, b, c, d, e, f, g, h]) {
            *s = s.wrapping_add(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(data: &[u8]) -> String {
        let mut h = Sha256::new();
        h.update(data);
        h.hex()
    }

    #[test]
    fn sha256_known_answers() {
        assert_eq!(
            hash(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            hash(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            hash(b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        );
        // Split updates give the same digest as one.
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
        let mut h = Sha256::new();
        for part in data.chunks(37) {
            h.update(part);
        }
        assert_eq!(h.hex(), hash(&data));
        assert_eq!(
            hash(&vec![b'a'; 1_000_000]),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"
        );
    }

    #[test]
    fn render_puts_the_fix_under_a_failure() {
        let rows = vec![
            Check::new("a", Verdict::Pass, "fine", ""),
            Check::new("bbb", Verdict::Fail, "broken", "do this"),
        ];
        let text = render(&rows);
        assert!(text.contains("pass  a    fine"), "{text}");
        assert!(
            text.contains("FAIL  bbb  broken") && text.contains("fix: do this"),
            "{text}"
        );
    }
}
