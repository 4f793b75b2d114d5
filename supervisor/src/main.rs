//! `swictation`: the supervisor binary. Argument parsing and wiring only; the work is in the
//! library's modules.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::{json, Value};
use swictation::cli::{bench, doctor};
use swictation::config::{Config, OutputMode};
use swictation::daemon::{self, Input};
use swictation::io::launch::LaunchConfig;
use swictation::io::notify::Notifier;
use swictation::io::{audio, capture, control};
use swictation::report::status::{render_text, Status};
use swictation::supervision::engine::{self, describe_placement, Engine};
use swictation_policy::segmenter::SegmenterConfig;
use swictation_proto::Device;

/// Hands-free voice dictation: Silero VAD and Moonshine speech recognition, each in its own
/// supervised process.
#[derive(Parser)]
#[command(version, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    engine: EngineArgs,
    #[command(subcommand)]
    command: Command,
}

/// Options that override the configuration file for every command that runs workers.
#[derive(Args)]
struct EngineArgs {
    /// Configuration file (default: $XDG_CONFIG_HOME/swictation/config.toml).
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Directory holding swictation-vad-worker and swictation-asr-worker (default: beside this binary).
    #[arg(
        long,
        global = true,
        value_name = "DIR",
        env = "SWICTATION_WORKERS_DIR"
    )]
    workers_dir: Option<PathBuf>,
    /// ONNX Runtime shared library (default: the one deploy/setup.sh installs).
    #[arg(long, global = true, value_name = "PATH", env = "SWICTATION_ORT_LIB")]
    ort_lib: Option<PathBuf>,
    /// Directory holding the models (default: $XDG_DATA_HOME/swictation/models).
    #[arg(long, global = true, value_name = "DIR")]
    models: Option<PathBuf>,
    /// Speech model: base, tiny, or a directory with encoder_model.ort, decoder_model_merged.ort, tokenizer.bin.
    #[arg(long, global = true)]
    model: Option<String>,
    /// Where the VAD runs: cpu, cuda or cuda:N.
    #[arg(long, global = true)]
    vad_device: Option<Device>,
    /// Where the speech model runs (both parts): cpu, cuda or cuda:N.
    #[arg(long, global = true)]
    asr_device: Option<Device>,
    /// Where the speech model's encoder runs (overrides --asr-device).
    #[arg(long, global = true)]
    encoder_device: Option<Device>,
    /// Where the speech model's decoder runs (overrides --asr-device).
    #[arg(long, global = true)]
    decoder_device: Option<Device>,
    /// Threads for the speech model.
    #[arg(long, global = true)]
    asr_threads: Option<usize>,
    /// Let workers honour fault-injection requests (for tests).
    #[arg(long, global = true, hide = true)]
    allow_faults: bool,
}

/// Where transcripts go (`--output`).
#[derive(Clone, Copy, ValueEnum)]
enum OutputArg {
    /// One line each on standard output.
    Stdout,
    /// Appended to --output-file.
    File,
    /// Typed into the focused window.
    Type,
    /// Copied to the clipboard.
    Clipboard,
    /// Pasted into the focused window (clipboard + output.paste_key; the clipboard put back).
    Paste,
}

/// Options of the commands that run the daemon loop.
#[derive(Args)]
struct DaemonArgs {
    /// Input device name, unique part of one, or id (see `swictation devices`).
    #[arg(long, value_name = "NAME|ID")]
    device: Option<String>,
    /// Where transcripts go (overrides output.mode).
    #[arg(long, value_enum)]
    output: Option<OutputArg>,
    /// File transcripts are appended to (implies --output file unless --output is given).
    #[arg(long, value_name = "PATH")]
    output_file: Option<PathBuf>,
    /// Test option: take GPU readings from this JSON-lines timeline instead of NVML; GPU
    /// placements then run on the CPU (status says so). The file may be rewritten while running.
    #[arg(long, value_name = "FILE", hide = true)]
    gpu_script: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Transcribe recordings (WAV of any common format, or raw s16le 16 kHz mono `.raw`): one line per file.
    Transcribe {
        /// One JSON object per file with its segments and the devices and models that ran them.
        #[arg(long)]
        json: bool,
        /// Files to transcribe.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Run the dictation loop in the foreground, outputting each transcript as it is finalised:
    /// from the microphone, or from recordings with --input.
    Run {
        /// Recording(s) to dictate from, played back to back at real-time pace; `-` reads raw
        /// s16le 16 kHz mono from standard input.
        #[arg(long, num_args = 1..)]
        input: Vec<PathBuf>,
        /// Feed the recordings as fast as the pipeline takes them instead of in real time.
        #[arg(long)]
        fast: bool,
        #[command(flatten)]
        daemon: DaemonArgs,
    },
    /// The service: `run` from the microphone, as systemd starts it (sd_notify, watchdog).
    Daemon {
        #[command(flatten)]
        daemon: DaemonArgs,
    },
    /// Measure per-frame VAD time in-process vs. through the worker socket, ASR real-time
    /// factors, model load times and audio-capture callback times, and print a table.
    Bench {
        /// Directory with the LibriVox clips (default: the installed speech data).
        #[arg(long, value_name = "DIR")]
        clips: Option<PathBuf>,
        /// VAD frames to time each way.
        #[arg(long, default_value_t = 2000)]
        frames: usize,
        /// Seconds of real-time input to time audio capture with (through cpal and ALSA's file
        /// plugin, fed from a FIFO); 0 skips the capture rows.
        #[arg(long, value_name = "SECONDS", default_value_t = 60.0)]
        capture_s: f64,
        /// Internal: the capture side of the capture measurement, which bench runs in a child
        /// process with ALSA pointed at its FIFO.
        #[arg(long, hide = true)]
        capture_child: bool,
    },
    /// Loop real speech through the supervised pipeline while injecting faults into random
    /// workers and killing/freezing them from outside; print what survived and exit non-zero on
    /// any lost or duplicated transcript, leaked descriptor or zombie.
    Soak {
        /// How long to feed speech: `60s`, `10m`, `1h` or seconds.
        #[arg(long, default_value = "60s", value_parser = parse_duration)]
        duration: std::time::Duration,
        /// Mean interval between faults.
        #[arg(long, default_value = "5s", value_parser = parse_duration)]
        fault_every: std::time::Duration,
        /// Seed of the fault schedule (same seed, same schedule).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Feed speech as fast as it is taken instead of in real time.
        #[arg(long)]
        fast: bool,
        /// Fail unless at least this many faults were inflicted.
        #[arg(long, default_value_t = 0)]
        min_faults: u32,
        /// Then SIGKILL the supervisor itself this many times while ASR is busy, restarting it
        /// as systemd would, and check every word spoken before each kill comes out once.
        #[arg(long, default_value_t = 1)]
        supervisor_kills: u32,
    },
    /// What the running daemon is doing: state, audio, workers, GPU, queue, latencies.
    Status {
        /// The status document as JSON (one line).
        #[arg(long)]
        json: bool,
        /// Refresh every second until interrupted.
        #[arg(long)]
        watch: bool,
        /// `waybar`: one JSON object per refresh, {"text","tooltip","class"}, for a status-bar
        /// custom module (with --watch, one line a second).
        #[arg(long, value_name = "FORMAT", value_parser = ["waybar"])]
        format: Option<String>,
    },
    /// Pause if listening, resume if paused.
    Toggle,
    /// Stop transcribing (capture is closed; audio is discarded) until resumed.
    Pause,
    /// Start transcribing again.
    Resume,
    /// Push-to-talk: bind `ptt down` to a key's press and `ptt up` to its release. A press
    /// shorter than ptt.hold_threshold_ms toggles; a longer one listens while held.
    Ptt {
        /// The key event.
        #[arg(value_enum)]
        key: PttArg,
    },
    /// Print the daemon's events (transcripts, state changes, failures) as JSON lines.
    Subscribe,
    /// Restart a worker (it reloads its model).
    Restart {
        /// Which worker.
        #[arg(value_enum)]
        role: RoleArg,
    },
    /// Stop the daemon (speech already captured is still transcribed).
    Stop,
    /// List audio input devices with their channel counts, formats and rates.
    Devices {
        /// As JSON, with every configuration range.
        #[arg(long)]
        json: bool,
    },
    /// Check or print the configuration file.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Text recovered from the speech journal after the daemon died: what was said before,
    /// transcribed by the next start and kept here (see [journal] recovered).
    Recovered {
        /// As JSON lines.
        #[arg(long)]
        json: bool,
        /// Copy all of it (one line each) to the clipboard.
        #[arg(long)]
        copy: bool,
        /// Forget it afterwards.
        #[arg(long)]
        clear: bool,
    },
    /// The transcript history (kept only with [history] enabled = true): print it, oldest
    /// first, or forget it.
    History {
        /// As JSON lines (time, text, whether it reached the output).
        #[arg(long)]
        json: bool,
        /// Only the newest N.
        #[arg(long, value_name = "N")]
        last: Option<usize>,
        /// Forget it (nothing is printed).
        #[arg(long)]
        clear: bool,
    },
    /// Check everything swictation depends on: one row each, with the fix for what fails.
    Doctor {
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
}

/// A push-to-talk key event on the command line.
#[derive(Clone, Copy, ValueEnum)]
enum PttArg {
    /// The key was pressed.
    #[value(alias = "press")]
    Down,
    /// The key was released.
    #[value(alias = "release")]
    Up,
}

/// `swictation recovered`: print the recovered text, optionally copy it and clear it.
fn recovered(cfg: &Config, json: bool, copy: bool, clear: bool) -> Result<()> {
    use swictation::io::recovered::RecoveredStore;
    let store = RecoveredStore::new(&RecoveredStore::default_path());
    let all = store.list()?;
    for r in &all {
        if json {
            println!("{}", serde_json::to_string(r)?);
        } else {
            println!("{}", r.text);
        }
    }
    if all.is_empty() && !json {
        eprintln!("nothing recovered ({})", store.path().display());
    }
    if copy && !all.is_empty() {
        let mut out_cfg = cfg.output.clone();
        out_cfg.mode = swictation::config::OutputMode::Clipboard;
        let mut out = swictation::io::output::Output::open(
            &out_cfg,
            &swictation::io::output::Session::from_env(),
        )?;
        let text = all
            .iter()
            .map(|r| r.text.as_str())
            .collect::<Vec<_>>()
            .join("\n");
        out.write(&text)?;
        eprintln!(
            "copied {} recovered transcript(s) to the clipboard",
            all.len()
        );
    }
    if clear {
        let n = store.clear()?;
        eprintln!("cleared {n} recovered transcript(s)");
    }
    Ok(())
}

/// `swictation history`: print the transcript history, optionally only its end; clear it.
fn history(cfg: &Config, json: bool, last: Option<usize>, clear: bool) -> Result<()> {
    use swictation::io::recovered::HistoryStore;
    let store = HistoryStore::new(&HistoryStore::default_path());
    if clear {
        let n = store.clear()?;
        eprintln!("cleared {n} transcript(s) from the history");
        return Ok(());
    }
    let all = store.list()?;
    let from = last.map_or(0, |n| all.len().saturating_sub(n));
    for h in &all[from..] {
        if json {
            println!("{}", serde_json::to_string(h)?);
        } else {
            println!("{}", h.text);
        }
    }
    if all.is_empty() {
        if cfg.history.enabled {
            eprintln!("the history is empty ({})", store.path().display());
        } else {
            eprintln!(
                "the history is off: set [history] enabled = true in the config to keep one ({})",
                store.path().display()
            );
        }
    }
    Ok(())
}

/// A worker role on the command line.
#[derive(Clone, Copy, ValueEnum)]
enum RoleArg {
    /// The voice activity detector.
    Vad,
    /// The speech recogniser.
    Asr,
}

#[derive(Subcommand)]
enum ConfigAction {
    /// Validate a configuration file (default: the one the daemon reads).
    Check {
        /// The file.
        path: Option<PathBuf>,
    },
    /// Print the documented default configuration.
    Default,
}

impl EngineArgs {
    /// Loads the configuration and applies the command-line overrides.
    fn load_config(&self) -> Result<Config> {
        let (mut cfg, _) = Config::load(self.config.as_deref())?;
        let r = &mut cfg.runtime;
        r.workers_dir = self.workers_dir.clone().or(r.workers_dir.take());
        r.ort_lib = self.ort_lib.clone().or(r.ort_lib.take());
        r.models_dir = self.models.clone().or(r.models_dir.take());
        if let Some(m) = &self.model {
            cfg.asr.model = m.clone();
        }
        // Naming a device on the command line pins the workers there (CPU if that fails).
        if [
            self.vad_device,
            self.asr_device,
            self.encoder_device,
            self.decoder_device,
        ]
        .iter()
        .any(Option::is_some)
        {
            cfg.gpu.placement = swictation::config::PlacementMode::Fixed;
        }
        if let Some(d) = self.vad_device {
            cfg.vad.device = d;
        }
        if let Some(d) = self.encoder_device.or(self.asr_device) {
            cfg.asr.encoder_device = d;
        }
        if let Some(d) = self.decoder_device.or(self.asr_device) {
            cfg.asr.decoder_device = d;
        }
        if let Some(t) = self.asr_threads {
            cfg.asr.threads = t;
        }
        cfg.validate()?;
        Ok(cfg)
    }
}

impl DaemonArgs {
    fn apply(&self, cfg: &mut Config) -> Result<()> {
        if let Some(d) = &self.device {
            cfg.audio.device = Some(d.clone());
        }
        if let Some(f) = &self.output_file {
            cfg.output.file = Some(f.clone());
            if self.output.is_none() {
                cfg.output.mode = OutputMode::File;
            }
        }
        if let Some(o) = self.output {
            cfg.output.mode = match o {
                OutputArg::Stdout => OutputMode::Stdout,
                OutputArg::File => OutputMode::File,
                OutputArg::Type => OutputMode::Type,
                OutputArg::Clipboard => OutputMode::Clipboard,
                OutputArg::Paste => OutputMode::Paste,
            };
        }
        cfg.validate()?;
        Ok(())
    }
}

fn main() {
    let cli = Cli::parse();
    // Read sd_notify's variables and take them out of the environment before any thread or
    // child exists (as sd_notify(3) does with unset_environment), so no worker inherits them.
    let notifier = if matches!(cli.command, Command::Run { .. } | Command::Daemon { .. }) {
        let (n, problem) = Notifier::from_env();
        if let Some(p) = problem {
            swictation::log_warn!("{p}");
        }
        for k in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"] {
            std::env::remove_var(k);
        }
        n
    } else {
        Notifier::disabled()
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            swictation::log_error!("cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let result = runtime.block_on(dispatch(cli, notifier));
    // Blocking threads left behind (a stdin reader) must not keep the process alive.
    runtime.shutdown_timeout(Duration::from_millis(500));
    if let Err(e) = result {
        swictation::log_error!("{e:#}");
        std::process::exit(1);
    }
}

async fn dispatch(cli: Cli, notifier: Notifier) -> Result<()> {
    let engine = &cli.engine;
    match cli.command {
        Command::Transcribe { json, files } => {
            let cfg = engine.load_config()?;
            transcribe(
                &daemon::engine_config(&cfg, engine.allow_faults),
                &cfg.vad.segmenter(),
                json,
                &files,
            )
            .await
        }
        Command::Run {
            input,
            fast,
            daemon,
        } => {
            let input = match input.as_slice() {
                [] => Input::Capture { device: None },
                [one] if one.as_os_str() == "-" => Input::Stdin,
                paths => {
                    if paths.iter().any(|p| p.as_os_str() == "-") {
                        bail!("--input - (standard input) cannot be combined with files");
                    }
                    Input::Files {
                        paths: paths.to_vec(),
                        paced: !fast,
                    }
                }
            };
            serve(engine, &daemon, input, notifier).await
        }
        Command::Daemon { daemon } => {
            serve(engine, &daemon, Input::Capture { device: None }, notifier).await
        }
        Command::Bench {
            clips,
            frames,
            capture_s,
            capture_child,
        } => {
            if capture_child {
                return bench::capture_child().await;
            }
            bench::run(
                &daemon::engine_config(&engine.load_config()?, engine.allow_faults),
                clips,
                frames,
                capture_s,
            )
            .await
        }
        Command::Soak {
            duration,
            fault_every,
            seed,
            fast,
            min_faults,
            supervisor_kills,
        } => {
            let cfg = daemon::engine_config(&engine.load_config()?, true);
            let report = swictation::cli::soak::run(
                cfg,
                swictation::cli::soak::SoakArgs {
                    duration,
                    fault_every,
                    seed,
                    fast,
                },
            )
            .await?;
            let kills = if supervisor_kills > 0 {
                tokio::task::spawn_blocking(move || {
                    swictation::cli::soak::supervisor_kills(supervisor_kills)
                })
                .await
                .context("supervisor kills")??
            } else {
                swictation::cli::soak::KillReport::default()
            };
            println!("{}{}", report.table(), kills.table());
            let mut violations = report.violations();
            violations.extend(kills.violations());
            if report.fault_count() < min_faults {
                violations.push(format!(
                    "only {} faults inflicted (wanted {min_faults})",
                    report.fault_count()
                ));
            }
            if violations.is_empty() {
                println!("soak passed");
                Ok(())
            } else {
                Err(anyhow::anyhow!("soak failed: {}", violations.join("; ")))
            }
        }
        Command::Status {
            json,
            watch,
            format,
        } => status(json, watch, format.is_some()).await,
        Command::Toggle => simple("toggle").await,
        Command::Pause => simple("pause").await,
        Command::Resume => simple("resume").await,
        Command::Stop => simple("stop").await,
        Command::Ptt { key } => {
            let key = match key {
                PttArg::Down => "down",
                PttArg::Up => "up",
            };
            let r = control::request(&json!({"cmd": "ptt", "key": key})).await?;
            println!(
                "{} ({})",
                r["state"].as_str().unwrap_or("ok"),
                r["ptt"].as_str().unwrap_or("?")
            );
            Ok(())
        }
        Command::Restart { role } => {
            let role = match role {
                RoleArg::Vad => "vad",
                RoleArg::Asr => "asr",
            };
            let r = control::request(&json!({"cmd": "restart", "role": role})).await?;
            println!(
                "restarting the {role} worker (daemon {})",
                r["state"].as_str().unwrap_or("?")
            );
            Ok(())
        }
        Command::Subscribe => {
            let mut out = std::io::stdout();
            control::subscribe(|v| {
                let _ = writeln!(out, "{v}");
                let _ = out.flush();
            })
            .await?;
            Ok(())
        }
        Command::Devices { json } => devices(json).await,
        Command::Config {
            action: ConfigAction::Default,
        } => {
            print!("{}", Config::default_toml());
            Ok(())
        }
        Command::Config {
            action: ConfigAction::Check { path },
        } => {
            let path = path.or(cli.engine.config);
            let (_, used) = Config::load(path.as_deref())?;
            println!("{}: ok", used.display());
            Ok(())
        }
        Command::Recovered { json, copy, clear } => {
            let cfg = engine.load_config()?;
            recovered(&cfg, json, copy, clear)
        }
        Command::History { json, last, clear } => {
            let cfg = engine.load_config()?;
            history(&cfg, json, last, clear)
        }
        Command::Doctor { json } => {
            let config = Config::load(engine.config.as_deref());
            let rows = tokio::task::spawn_blocking(move || doctor::run(config))
                .await
                .context("doctor")?;
            if json {
                println!("{}", serde_json::to_string(&rows)?);
            } else {
                print!("{}", doctor::render(&rows));
            }
            if rows.iter().any(|r| r.verdict == doctor::Verdict::Fail) {
                bail!("some checks failed (see the fixes above)");
            }
            Ok(())
        }
    }
}

async fn serve(
    engine: &EngineArgs,
    args: &DaemonArgs,
    input: Input,
    notifier: Notifier,
) -> Result<()> {
    let mut config = engine.load_config()?;
    args.apply(&mut config)?;
    let input = match input {
        Input::Capture { .. } => Input::Capture {
            device: config.audio.device.clone(),
        },
        other => other,
    };
    daemon::run(daemon::Options {
        config,
        input,
        socket: control::socket_path(),
        notifier,
        allow_faults: engine.allow_faults,
        gpu_script: args.gpu_script.clone(),
    })
    .await
}

/// A command whose answer is the daemon's new state.
async fn simple(cmd: &str) -> Result<()> {
    let r = control::request(&json!({ "cmd": cmd })).await?;
    println!("{}", r["state"].as_str().unwrap_or("ok"));
    Ok(())
}

async fn status(json: bool, watch: bool, waybar: bool) -> Result<()> {
    loop {
        let r = control::request(&json!({"cmd": "status"})).await;
        let mut out = std::io::stdout().lock();
        if waybar {
            // A bar keeps the module running: a daemon that is not there is a state to show.
            let line = match &r {
                Ok(r) => match serde_json::from_value::<Status>(r["status"].clone()) {
                    Ok(s) => swictation::report::bar::waybar(&s),
                    Err(e) => {
                        json!({"text": "? swictation", "tooltip": e.to_string(), "class": ["error"]})
                    }
                },
                Err(e) => json!({"text": "○ off", "tooltip": e.to_string(), "class": ["off"]}),
            };
            writeln!(out, "{line}")?;
            out.flush()?;
            drop(out);
            if !watch {
                return r.map(|_| ()).map_err(Into::into);
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        let r = r?;
        let doc = r.get("status").cloned().unwrap_or(Value::Null);
        if json {
            writeln!(out, "{doc}")?;
        } else {
            let s: Status = serde_json::from_value(doc).context("decoding the daemon's status")?;
            if watch {
                // Clear the screen and go home, like watch(1).
                write!(out, "\x1b[2J\x1b[H")?;
            }
            write!(out, "{}", render_text(&s))?;
        }
        out.flush()?;
        drop(out);
        if !watch {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn devices(json: bool) -> Result<()> {
    // Listing opens every device, and opening one can block (a busy driver, an ALSA plugin on
    // a FIFO without a writer): bounded, so the command always answers.
    let listing = tokio::task::spawn_blocking(capture::list_devices);
    let devices = match tokio::time::timeout(Duration::from_secs(10), listing).await {
        Ok(r) => r.context("listing devices")??,
        Err(_) => bail!("listing input devices did not finish within 10 s: a device blocks when opened (check `arecord -L`)"),
    };
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string(&devices)?)?;
        return Ok(());
    }
    if devices.is_empty() {
        writeln!(out, "no input devices")?;
    }
    for d in &devices {
        writeln!(
            out,
            "{}{} [{}]",
            if d.is_default { "* " } else { "  " },
            d.name,
            d.id
        )?;
        for line in condense(&d.configs) {
            writeln!(out, "      {line}")?;
        }
        if d.configs.is_empty() {
            writeln!(out, "      (could not be opened to list its formats)")?;
        }
    }
    Ok(())
}

/// cpal's configuration ranges as a few lines: per channel count, the formats sharing a rate
/// range (rates merged across cpal's ranges), and runs of channel counts with identical lines
/// joined (`1-64 ch  F32 I16  4000+ Hz`).
fn condense(configs: &[capture::InputConfigRange]) -> Vec<String> {
    use std::collections::BTreeMap;
    let mut rates: BTreeMap<(u16, String), (u32, u32)> = BTreeMap::new();
    for c in configs {
        let r = rates
            .entry((c.channels, c.format.clone()))
            .or_insert((c.min_rate, c.max_rate));
        *r = (r.0.min(c.min_rate), r.1.max(c.max_rate));
    }
    let mut per_channel: BTreeMap<u16, BTreeMap<(u32, u32), Vec<String>>> = BTreeMap::new();
    for ((ch, fmt), range) in rates {
        per_channel
            .entry(ch)
            .or_default()
            .entry(range)
            .or_default()
            .push(fmt);
    }
    let describe = |groups: &BTreeMap<(u32, u32), Vec<String>>| -> String {
        groups
            .iter()
            .map(|((lo, hi), fmts)| {
                let rates = match (*lo, *hi) {
                    (lo, u32::MAX) => format!("{lo}+ Hz"),
                    (lo, hi) if lo == hi => format!("{lo} Hz"),
                    (lo, hi) => format!("{lo}-{hi} Hz"),
                };
                format!("{}  {rates}", fmts.join(" "))
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    let mut lines: Vec<(u16, u16, String)> = Vec::new();
    for (ch, groups) in &per_channel {
        let text = describe(groups);
        match lines.last_mut() {
            Some((_, last, t)) if *t == text && *last + 1 == *ch => *last = *ch,
            _ => lines.push((*ch, *ch, text)),
        }
    }
    lines
        .into_iter()
        .map(|(a, b, t)| {
            if a == b {
                format!("{a} ch  {t}")
            } else {
                format!("{a}-{b} ch  {t}")
            }
        })
        .collect()
}

async fn transcribe(
    cfg: &LaunchConfig,
    seg_cfg: &SegmenterConfig,
    json: bool,
    files: &[PathBuf],
) -> Result<()> {
    // Read every file first: a bad file is reported before any model is loaded.
    let mut recordings = Vec::with_capacity(files.len());
    for f in files {
        recordings.push(audio::load(f)?);
    }
    let mut engine = Engine::start(cfg).await?;
    let mut stdout = std::io::stdout().lock();
    let mut result = Ok(());
    for (file, rec) in files.iter().zip(&recordings) {
        let segments = match engine::transcribe_recording(&mut engine, seg_cfg, &rec.samples).await
        {
            Ok(s) => s,
            Err(e) => {
                result = Err(e.context(format!("transcribing {}", file.display())));
                break;
            }
        };
        let text = engine::join_text(&segments);
        if json {
            let obj = serde_json::json!({
                "file": file,
                "text": text,
                "duration": rec.samples.len() as f64 / audio::RATE as f64,
                "segments": segments,
                "asr": {
                    "model": engine.asr.hello().model,
                    "device": describe_placement(&engine.asr.hello().placement),
                    "placement": engine.asr.hello().placement.iter()
                        .map(|c| serde_json::json!({"component": c.component, "device": c.device.to_string()}))
                        .collect::<Vec<_>>(),
                },
                "vad": {
                    "model": engine.vad.hello().model,
                    "device": describe_placement(&engine.vad.hello().placement),
                },
            });
            writeln!(stdout, "{obj}")?;
        } else {
            writeln!(stdout, "{text}")?;
        }
        stdout.flush()?;
    }
    engine.shutdown().await;
    result
}

/// `60s`, `10m`, `1h`, `500ms` or plain seconds.
fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(
        s.find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(s.len()),
    );
    let n: f64 = num
        .parse()
        .map_err(|_| format!("bad duration {s:?}: expected e.g. 60s, 10m, 1h"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("bad duration unit in {s:?}: use ms, s, m or h")),
    };
    std::time::Duration::try_from_secs_f64(secs).map_err(|e| format!("bad duration {s:?}: {e}"))
}
