//! The daemon's configuration file: TOML at `$XDG_CONFIG_HOME/swictation/config.toml`.
//!
//! Every key is optional and has a default, so a missing file, an empty file and a file with
//! one section are all valid. Unknown keys are errors rather than warnings: a misspelt key that
//! silently does nothing is the worst kind of configuration bug. Every error names the file and
//! the dotted key path (`vad.start_threshold`), and the line where the parser knows it.
//!
//! [`Config::default_toml`] renders the documented default file (`swictation config default`,
//! `deploy/config.example.toml`) from the same [`Config::default`] the daemon uses, so the two
//! cannot drift apart; the key descriptions come from [`SCHEMA`], which a unit test keeps in step
//! with the structs.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use swictation_proto::{paths, Device};

use swictation_policy::segmenter::{SegmenterConfig, MAX_SEGMENT_LIMIT_MS};

pub mod translate;

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[audio]`: the microphone.
    pub audio: AudioConfig,
    /// `[vad]`: voice activity detection and speech segmentation.
    pub vad: VadConfig,
    /// `[asr]`: the speech recogniser.
    pub asr: AsrConfig,
    /// `[runtime]`: where the workers, ONNX Runtime and the models are.
    pub runtime: RuntimeConfig,
    /// `[output]`: where transcripts go.
    pub output: OutputConfig,
    /// `[gpu]`: GPU memory pressure thresholds.
    pub gpu: GpuConfig,
    /// `[supervision]`: worker restart policy.
    pub supervision: SupervisionConfig,
    /// `[journal]`: the speech journal and where recovered text goes.
    pub journal: JournalConfig,
    /// `[log]`: logging.
    pub log: LogConfig,
    /// `[ptt]`: push-to-talk.
    pub ptt: PttSection,
    /// `[dictation]`: replacements and spoken commands.
    pub dictation: DictationSection,
    /// `[notify]`: desktop notifications.
    pub notify: NotifySection,
    /// `[history]`: the transcript history (off unless asked for).
    pub history: HistorySection,
}

/// `[history]`: every delivered transcript kept in `$XDG_STATE_HOME/swictation/history.jsonl`
/// (0600), read and cleared with `swictation history`. Off by default: it is a record of
/// everything said.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HistorySection {
    /// Keep it. Default false.
    pub enabled: bool,
    /// The newest this many are kept; older ones are dropped. Default 1000.
    pub max_entries: usize,
}

impl Default for HistorySection {
    fn default() -> Self {
        Self {
            enabled: false,
            max_entries: 1000,
        }
    }
}

/// `[notify]`: desktop notifications (session bus) for faults, moves off the GPU, held speech.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifySection {
    /// Send them. Default true.
    pub enabled: bool,
    /// At most one notice of a kind this often, seconds. Default 30.
    pub min_interval_s: u64,
}

impl Default for NotifySection {
    fn default() -> Self {
        Self {
            enabled: true,
            min_interval_s: 30,
        }
    }
}

/// `[dictation]`: what happens to a transcript between the recogniser and the output. Off
/// unless configured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DictationSection {
    /// Obey the spoken commands below. Default false.
    pub commands: bool,
    /// Phrases for a line break. Default `["new line"]`.
    pub new_line: Vec<String>,
    /// Phrases for a paragraph break. Default `["new paragraph"]`.
    pub new_paragraph: Vec<String>,
    /// Phrases that delete what was said last. Default `["scratch that"]`.
    pub scratch_that: Vec<String>,
    /// Whole-word replacements, words as heard = text to put instead. Default: none.
    pub replacements: std::collections::BTreeMap<String, String>,
}

impl Default for DictationSection {
    fn default() -> Self {
        let english = swictation_policy::dictation::english_commands();
        Self {
            commands: false,
            new_line: english.new_line,
            new_paragraph: english.new_paragraph,
            scratch_that: english.scratch_that,
            replacements: Default::default(),
        }
    }
}

impl DictationSection {
    /// The rules these keys describe (no commands unless `commands = true`).
    pub fn rules(&self) -> swictation_policy::dictation::Rules {
        let on = |l: &Vec<String>| if self.commands { l.clone() } else { Vec::new() };
        swictation_policy::dictation::Rules {
            replacements: self
                .replacements
                .iter()
                .map(|(a, b)| (a.clone(), b.clone()))
                .collect(),
            new_line: on(&self.new_line),
            new_paragraph: on(&self.new_paragraph),
            scratch_that: on(&self.scratch_that),
        }
    }
}

/// `[ptt]`: push-to-talk (`swictation ptt down|up` from a key binding).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PttSection {
    /// A press at least this long is push-to-talk; shorter is a tap, which toggles. Default 400.
    pub hold_threshold_ms: u64,
    /// Audio kept after the key is released, so the last word is not cut. Default 500.
    pub release_pad_ms: u32,
    /// Start paused, listening only while the key is held (or after a tap). Default false.
    pub start_paused: bool,
}

impl Default for PttSection {
    fn default() -> Self {
        let p = swictation_policy::ptt::PttConfig::default();
        Self {
            hold_threshold_ms: p.hold_threshold_ms,
            release_pad_ms: p.release_pad_ms,
            start_paused: false,
        }
    }
}

impl PttSection {
    /// The state machine's tuning.
    pub fn policy(&self) -> swictation_policy::ptt::PttConfig {
        swictation_policy::ptt::PttConfig {
            hold_threshold_ms: self.hold_threshold_ms,
            release_pad_ms: self.release_pad_ms,
        }
    }
}

/// `[audio]`: the microphone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AudioConfig {
    /// Input device name as the audio backend lists it. Default: none (the system's default input).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// Audio kept from before speech starts, so the first syllable is not clipped. Default 300.
    pub pre_roll_ms: u32,
}

impl Default for AudioConfig {
    fn default() -> Self {
        Self {
            device: None,
            pre_roll_ms: 300,
        }
    }
}

/// `[vad]`: voice activity detection (Silero) and speech segmentation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VadConfig {
    /// Where the VAD runs: `cpu`, `cuda` or `cuda:N`. Default `cpu` (it is tiny; the GPU buys nothing).
    #[serde(with = "device_str")]
    pub device: Device,
    /// Silero VAD model file. Default: none (the installed `silero-vad/silero_vad.onnx`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<PathBuf>,
    /// A frame with speech probability at or above this starts speech. Default 0.5.
    pub start_threshold: f32,
    /// While in speech, a frame below this counts as silence (hysteresis). Default 0.35.
    pub stop_threshold: f32,
    /// Bursts of speech shorter than this are dropped as noise. Default 250.
    pub min_speech_ms: u32,
    /// Silence needed to end a segment. Default 500.
    pub min_silence_ms: u32,
    /// Audio kept before the first speech frame. Default 300.
    pub pad_before_ms: u32,
    /// Audio kept after the last speech frame; at most `min_silence_ms`. Default 300.
    pub pad_after_ms: u32,
    /// A segment reaching this length is cut and continued. Default 20000.
    pub max_segment_ms: u32,
}

impl Default for VadConfig {
    fn default() -> Self {
        // One source of truth for the tuning: the segmenter's own defaults.
        let s = SegmenterConfig::default();
        Self {
            device: Device::Cpu,
            model: None,
            start_threshold: s.start_threshold,
            stop_threshold: s.stop_threshold,
            min_speech_ms: s.min_speech_ms,
            min_silence_ms: s.min_silence_ms,
            pad_before_ms: s.pad_before_ms,
            pad_after_ms: s.pad_after_ms,
            max_segment_ms: s.max_segment_ms,
        }
    }
}

impl VadConfig {
    /// The segmenter tuning these keys describe.
    pub fn segmenter(&self) -> SegmenterConfig {
        SegmenterConfig {
            start_threshold: self.start_threshold,
            stop_threshold: self.stop_threshold,
            min_speech_ms: self.min_speech_ms,
            min_silence_ms: self.min_silence_ms,
            pad_before_ms: self.pad_before_ms,
            pad_after_ms: self.pad_after_ms,
            max_segment_ms: self.max_segment_ms,
        }
    }

    /// The VAD model file: `model` if set, else the installed one under `models_dir`.
    pub fn model_path(&self, models_dir: &Path) -> PathBuf {
        self.model
            .clone()
            .unwrap_or_else(|| models_dir.join(paths::SILERO_VAD))
    }
}

/// `[asr]`: the speech recogniser (Moonshine).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AsrConfig {
    /// `base`, `tiny`, or a model directory (encoder_model.ort, decoder_model_merged.ort,
    /// tokenizer.bin). Default `base`.
    pub model: String,
    /// Where the encoder runs: `cpu`, `cuda` or `cuda:N`. Default `cpu`.
    #[serde(with = "device_str")]
    pub encoder_device: Device,
    /// Where the decoder runs: `cpu`, `cuda` or `cuda:N`. Default `cpu`.
    #[serde(with = "device_str")]
    pub decoder_device: Device,
    /// CPU threads for the model; 0 (the default) means half the cores, 1 to 4 (see
    /// [`asr_threads`]).
    pub threads: usize,
    /// Longest audio window recognised at once, seconds (longer segments are split). Default 10.
    pub context_s: f32,
}

/// The ASR worker's intra-op threads for a configured count: `0` is half the cores, at least 1
/// and at most 4. Moonshine's decoder runs one small step per token, so threads beyond a few buy
/// little, and on a small machine the VAD worker, capture and the desktop need the other half
/// (on a busy 2-core machine one thread decoded faster than two).
pub fn asr_threads(configured: usize) -> usize {
    if configured > 0 {
        return configured;
    }
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    (cores / 2).clamp(1, 4)
}

impl Default for AsrConfig {
    fn default() -> Self {
        Self {
            model: "base".to_owned(),
            encoder_device: Device::Cpu,
            decoder_device: Device::Cpu,
            threads: 0,
            context_s: 10.0,
        }
    }
}

impl AsrConfig {
    /// The model directory: the installed `base`/`tiny` model under `models_dir`, or `model`
    /// taken as a path.
    pub fn model_dir(&self, models_dir: &Path) -> PathBuf {
        match self.model.as_str() {
            "base" => models_dir.join(paths::MOONSHINE_BASE_EN),
            "tiny" => models_dir.join(paths::MOONSHINE_TINY_EN),
            dir => expand_home(Path::new(dir)),
        }
    }
}

/// `[runtime]`: where the pieces are installed.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// ONNX Runtime shared library. Default: none (the one `deploy/setup.sh` installs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ort_lib: Option<PathBuf>,
    /// Directory holding the worker binaries. Default: none (beside the `swictation` binary).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workers_dir: Option<PathBuf>,
    /// Directory holding the models. Default: none (`$XDG_DATA_HOME/swictation/models`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub models_dir: Option<PathBuf>,
}

impl RuntimeConfig {
    /// `models_dir`, else the installed models directory.
    pub fn models_dir(&self) -> PathBuf {
        self.models_dir
            .clone()
            .unwrap_or_else(swictation_proto::paths::models_dir)
    }
}

/// Where transcripts go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputMode {
    /// One line per transcript on standard output (the journal, under systemd).
    Stdout,
    /// Appended to `output.file`, one line each.
    File,
    /// Typed into the focused window with `output.type_tool`.
    Type,
    /// Copied to the clipboard.
    Clipboard,
    /// Pasted into the focused window: put on the clipboard, `output.paste_key` pressed with
    /// `output.type_tool`, and the user's clipboard put back. For windows that drop typed keys.
    Paste,
}

/// The tool used to type transcripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TypeTool {
    /// `wtype` under Wayland, `xdotool` under X11, else `ydotool`.
    Auto,
    /// wtype (Wayland, virtual-keyboard protocol).
    Wtype,
    /// ydotool (uinput; works anywhere, needs its daemon).
    Ydotool,
    /// xdotool (X11).
    Xdotool,
}

/// `[output]`: where transcripts go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputConfig {
    /// `stdout`, `file`, `type` or `clipboard`. Default `stdout`.
    pub mode: OutputMode,
    /// The file `mode = "file"` appends to. Default: none (required for that mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// `auto`, `wtype`, `ydotool` or `xdotool`. Default `auto`.
    pub type_tool: TypeTool,
    /// The key `mode = "paste"` presses. Default `ctrl+v` (terminals: `ctrl+shift+v`).
    pub paste_key: PasteKey,
    /// How long after the paste key the user's clipboard is put back, in ms: the window reads
    /// the clipboard after the key, at its own pace. Default 300.
    pub paste_restore_ms: u64,
}

/// A key with modifiers, such as `ctrl+v`, `ctrl+shift+v` or `shift+insert`: the key that
/// pastes the clipboard into a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PasteKey {
    /// Control held.
    pub ctrl: bool,
    /// Shift held.
    pub shift: bool,
    /// Alt held.
    pub alt: bool,
    /// Super (the logo key) held.
    pub super_: bool,
    /// The key pressed: a letter `a`..`z`, or `insert`.
    pub key: KeyName,
}

/// The one non-modifier key of a [`PasteKey`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyName {
    /// A lower-case letter.
    Letter(char),
    /// Insert (`shift+insert` pastes in many X11 programs).
    Insert,
}

impl PasteKey {
    /// `ctrl+v`.
    pub const CTRL_V: PasteKey = PasteKey {
        ctrl: true,
        shift: false,
        alt: false,
        super_: false,
        key: KeyName::Letter('v'),
    };
}

impl TryFrom<String> for PasteKey {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl std::str::FromStr for PasteKey {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            format!("\"{s}\": {why}; write modifiers (ctrl, shift, alt, super) and one key (a letter or insert) joined by +, e.g. \"ctrl+v\" or \"ctrl+shift+v\"")
        };
        let (mut ctrl, mut shift, mut alt, mut super_, mut key) =
            (false, false, false, false, None);
        for part in s.split('+').map(|p| p.trim().to_ascii_lowercase()) {
            let seen = match part.as_str() {
                "ctrl" | "control" => std::mem::replace(&mut ctrl, true),
                "shift" => std::mem::replace(&mut shift, true),
                "alt" => std::mem::replace(&mut alt, true),
                "super" | "logo" | "win" => std::mem::replace(&mut super_, true),
                _ => {
                    let name = match part.as_str() {
                        "insert" => KeyName::Insert,
                        p if p.len() == 1 && p.as_bytes()[0].is_ascii_lowercase() => {
                            KeyName::Letter(p.as_bytes()[0] as char)
                        }
                        "" => return Err(bad("an empty part")),
                        p => return Err(bad(&format!("unknown key `{p}`"))),
                    };
                    if key.replace(name).is_some() {
                        return Err(bad(&format!("more than one key (`{part}`)")));
                    }
                    false
                }
            };
            if seen {
                return Err(bad(&format!("`{part}` twice")));
            }
        }
        Ok(PasteKey {
            ctrl,
            shift,
            alt,
            super_,
            key: key.ok_or_else(|| bad("no key besides the modifiers"))?,
        })
    }
}

impl std::fmt::Display for PasteKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (on, name) in [
            (self.ctrl, "ctrl+"),
            (self.shift, "shift+"),
            (self.alt, "alt+"),
            (self.super_, "super+"),
        ] {
            if on {
                f.write_str(name)?;
            }
        }
        match self.key {
            KeyName::Letter(c) => write!(f, "{c}"),
            KeyName::Insert => f.write_str("insert"),
        }
    }
}

impl From<PasteKey> for String {
    fn from(k: PasteKey) -> String {
        k.to_string()
    }
}

impl Default for OutputConfig {
    fn default() -> Self {
        Self {
            mode: OutputMode::Stdout,
            file: None,
            type_tool: TypeTool::Auto,
            paste_key: PasteKey::CTRL_V,
            paste_restore_ms: 300,
        }
    }
}

/// How workers are placed on devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PlacementMode {
    /// Walk the ladders (`gpu.asr_ladder`, `gpu.vad_ladder`) by NVML readings and failures.
    Auto,
    /// Run where `[vad] device` and `[asr]` say, falling back to the CPU only when that fails.
    Fixed,
}

/// `[gpu]`: where workers run, and the GPU memory thresholds that move them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GpuConfig {
    /// `auto` or `fixed`. Default `auto`.
    pub placement: PlacementMode,
    /// ASR rungs, best first (`"encoder=cuda decoder=cpu model=base context=10"`). Default: empty,
    /// meaning the ladder derived from `[asr] model` and `context_s`.
    pub asr_ladder: Vec<String>,
    /// VAD devices, best first. Default `"cuda, cpu"`.
    pub vad_ladder: String,
    /// Free memory kept beyond a worker's need when placing it on a GPU, MB. Default 300.
    pub margin_mb: u64,
    /// Extra free memory needed to step back up, MB. Default 500.
    pub hysteresis_mb: u64,
    /// How long that room must last before stepping up, seconds. Default 30.
    pub promote_after_s: f64,
    /// Above this, log a warning. Default 80.
    pub warning_pct: f32,
    /// Above this, stop placing new work on the GPU and move the VAD off it. Default 87.5.
    pub critical_pct: f32,
    /// Above this, hold ASR requests and step ASR down. Default 95.
    pub emergency_pct: f32,
    /// The warning threshold as MB in use instead of a percentage. Default: unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning_mb: Option<u64>,
    /// The critical threshold as MB in use instead of a percentage. Default: unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub critical_mb: Option<u64>,
    /// The emergency threshold as MB in use instead of a percentage. Default: unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub emergency_mb: Option<u64>,
}

impl Default for GpuConfig {
    fn default() -> Self {
        Self {
            placement: PlacementMode::Auto,
            asr_ladder: Vec::new(),
            vad_ladder: "cuda, cpu".to_owned(),
            margin_mb: 300,
            hysteresis_mb: 500,
            promote_after_s: 30.0,
            warning_pct: 80.0,
            critical_pct: 87.5,
            emergency_pct: 95.0,
            warning_mb: None,
            critical_mb: None,
            emergency_mb: None,
        }
    }
}

/// `[supervision]`: when a crashing worker is given up on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SupervisionConfig {
    /// At most this many restarts of one worker within `restart_window_s`. Default 5.
    pub restart_max: u32,
    /// The window for `restart_max`, seconds. Default 60.
    pub restart_window_s: u64,
    /// A worker silent this long on a request is killed as hung, seconds (plus time per unit of
    /// work). Default 5.
    pub hang_timeout_s: u64,
    /// On a stop, the longest the daemon waits for pending speech to be transcribed, seconds;
    /// what is left stays in the journal. Below the unit's `TimeoutStopSec` (15). Default 10.
    pub stop_timeout_s: u64,
}

impl Default for SupervisionConfig {
    fn default() -> Self {
        Self {
            restart_max: 5,
            restart_window_s: 60,
            hang_timeout_s: 5,
            stop_timeout_s: 10,
        }
    }
}

/// `[journal]`: the speech journal (`$XDG_STATE_HOME/swictation/journal`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JournalConfig {
    /// Where text recovered from an earlier run's journal goes. Default `keep`.
    pub recovered: RecoveredTo,
    /// The most audio the journal holds, MB; beyond it new speech is not kept on disk (and that
    /// is reported). Default 256 (about 70 minutes).
    pub max_mb: u64,
}

impl Default for JournalConfig {
    fn default() -> Self {
        Self {
            recovered: RecoveredTo::Keep,
            max_mb: 256,
        }
    }
}

/// Where recovered text goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecoveredTo {
    /// Kept and shown (`swictation recovered`, status, the event stream); never typed into
    /// whatever window has the focus after a crash.
    Keep,
    /// Sent to the output like new speech (and also shown on the event stream).
    Output,
}

/// Log verbosity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Failures only.
    Error,
    /// Failures and handled problems.
    Warn,
    /// Milestones (never transcripts or audio).
    Info,
    /// Everything, including worker stderr and timings.
    Debug,
}

impl LogLevel {
    /// The name `SWICTATION_LOG` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
        }
    }
}

/// `[log]`: logging.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `error`, `warn`, `info` or `debug`. Default `info`. `SWICTATION_LOG` overrides it.
    pub level: LogLevel,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: LogLevel::Info,
        }
    }
}

/// Devices are written as the CLI takes them (`cpu`, `cuda`, `cuda:N`), not as serde's enum form.
mod device_str {
    use serde::{Deserialize, Deserializer, Serializer};
    use swictation_proto::Device;

    pub fn serialize<S: Serializer>(d: &Device, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(d)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Device, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One documented key of the file.
#[derive(Debug, Clone, Copy)]
pub struct KeyDoc {
    /// The key's name within its section.
    pub name: &'static str,
    /// What it does (one or more lines, no `#`).
    pub doc: &'static str,
    /// For keys whose default is "unset": an example value, written commented out.
    pub example: Option<&'static str>,
}

/// One documented section of the file.
#[derive(Debug, Clone, Copy)]
pub struct SectionDoc {
    /// The table name.
    pub name: &'static str,
    /// What the section is for.
    pub doc: &'static str,
    /// Its keys, in file order.
    pub keys: &'static [KeyDoc],
}

const fn key(name: &'static str, doc: &'static str) -> KeyDoc {
    KeyDoc {
        name,
        doc,
        example: None,
    }
}

const fn opt(name: &'static str, doc: &'static str, example: &'static str) -> KeyDoc {
    KeyDoc {
        name,
        doc,
        example: Some(example),
    }
}

/// Every section and key, with the text [`Config::default_toml`] writes above it. Also the
/// source of the "known keys" list in unknown-key errors.
pub const SCHEMA: &[SectionDoc] = &[
    SectionDoc {
        name: "audio",
        doc: "The microphone.",
        keys: &[
            opt(
                "device",
                "Input device name as the audio backend lists it. Unset: the system's default input.",
                "\"USB Microphone\"",
            ),
            key("pre_roll_ms", "Milliseconds of audio kept from before speech starts, so the first syllable is not clipped."),
        ],
    },
    SectionDoc {
        name: "vad",
        doc: "Voice activity detection (Silero) and speech segmentation.",
        keys: &[
            key("device", "With gpu.placement = \"fixed\": where the VAD runs, \"cpu\", \"cuda\" or \"cuda:N\"."),
            opt("model", "Silero VAD model file. Unset: the installed silero-vad/silero_vad.onnx.", "\"/path/to/silero_vad.onnx\""),
            key("start_threshold", "A frame with speech probability at or above this (0..1) starts speech."),
            key("stop_threshold", "While in speech, a frame below this counts as silence. At most start_threshold."),
            key("min_speech_ms", "Bursts of speech shorter than this are dropped as noise."),
            key("min_silence_ms", "Silence needed to end a segment; shorter pauses stay inside it."),
            key("pad_before_ms", "Audio kept before the first speech frame."),
            key("pad_after_ms", "Audio kept after the last speech frame. At most min_silence_ms."),
            key("max_segment_ms", "A segment reaching this length is cut and continued in a new one."),
        ],
    },
    SectionDoc {
        name: "asr",
        doc: "Speech recognition (Moonshine).",
        keys: &[
            key("model", "\"base\", \"tiny\", or a directory with encoder_model.ort, decoder_model_merged.ort and tokenizer.bin."),
            key("encoder_device", "With gpu.placement = \"fixed\": where the encoder runs, \"cpu\", \"cuda\" or \"cuda:N\"."),
            key("decoder_device", "With gpu.placement = \"fixed\": where the decoder runs, \"cpu\", \"cuda\" or \"cuda:N\"."),
            key("threads", "CPU threads for the model (ONNX Runtime intra-op threads). 0: half the cores, at least 1, at most 4, leaving the rest to the VAD worker, capture and the desktop."),
            key("context_s", "Longest audio window recognised at once, seconds; longer segments are split into overlapping windows (0: never split)."),
        ],
    },
    SectionDoc {
        name: "runtime",
        doc: "Where the pieces are installed. Unset keys use what deploy/setup.sh installs.",
        keys: &[
            opt("ort_lib", "ONNX Runtime shared library. Unset: the installed one.", "\"/path/to/libonnxruntime.so\""),
            opt("workers_dir", "Directory with swictation-vad-worker and swictation-asr-worker. Unset: beside the swictation binary.", "\"~/.local/bin\""),
            opt("models_dir", "Directory with the models. Unset: $XDG_DATA_HOME/swictation/models.", "\"~/.local/share/swictation/models\""),
        ],
    },
    SectionDoc {
        name: "output",
        doc: "Where transcripts go.",
        keys: &[
            key("mode", "\"stdout\", \"file\" (append to output.file), \"type\" (type into the focused window), \"clipboard\", or \"paste\" (put on the clipboard, press output.paste_key, then put the clipboard's text back: for windows that drop typed keys)."),
            opt("file", "The file mode = \"file\" appends to. Required for that mode.", "\"~/dictation.txt\""),
            key("type_tool", "For mode = \"type\" and \"paste\": \"auto\", \"wtype\", \"ydotool\" or \"xdotool\"."),
            key("paste_key", "For mode = \"paste\": the key that pastes, modifiers (ctrl, shift, alt, super) and a letter or insert joined by +. Terminals paste with \"ctrl+shift+v\"."),
            key("paste_restore_ms", "For mode = \"paste\": how long after the paste key the clipboard's earlier text is put back (the window reads the clipboard at its own pace after the key; raise it if a slow window pastes the old text)."),
        ],
    },
    SectionDoc {
        name: "gpu",
        doc: "Where the workers run, and the GPU memory thresholds (percent of the card's memory) that move them.",
        keys: &[
            key("placement", "\"auto\": walk the ladders below by NVML readings and failures (no GPU: everything on the CPU). \"fixed\": run where [vad] device and [asr] encoder_device/decoder_device say, stepping to the CPU only if that fails."),
            key("asr_ladder", "ASR rungs, best first, each \"encoder=cuda decoder=cpu model=base context=10\" (device=X sets both; devices cpu, cuda, cuda:N).\nEmpty: derived from [asr] model and context_s: the whole model on the GPU at context_s, then the GPU encoder (decoder on the CPU) at context_s, 5 and 3 s, then the CPU, then the CPU with tiny."),
            key("vad_ladder", "VAD devices, best first. The VAD is the first thing moved off a GPU under pressure."),
            key("margin_mb", "Free memory kept beyond a worker's need when placing it on a GPU, MB."),
            key("hysteresis_mb", "Extra free memory, beyond need and margin, needed to step back up, MB."),
            key("promote_after_s", "How long that room must last before stepping back up, seconds (doubled per failure at the upper rung)."),
            key("warning_pct", "Above this, log a warning."),
            key("critical_pct", "Above this, move the VAD off the GPU and place nothing new there."),
            key("emergency_pct", "Above this, hold new ASR requests (never dropped) and step ASR down a rung."),
            opt("warning_mb", "The warning threshold as MB in use; replaces warning_pct when set.", "3200"),
            opt("critical_mb", "The critical threshold as MB in use; replaces critical_pct when set.", "3500"),
            opt("emergency_mb", "The emergency threshold as MB in use; replaces emergency_pct when set.", "3800"),
        ],
    },
    SectionDoc {
        name: "supervision",
        doc: "When a crashing worker is given up on.",
        keys: &[
            key("restart_max", "At most this many restarts of one worker within restart_window_s."),
            key("restart_window_s", "The window for restart_max, seconds."),
            key("hang_timeout_s", "A worker silent this long on a request (plus 2 s per second of audio for ASR; at most 3 s plus 10 ms per frame for the VAD) is killed as hung, seconds."),
            key("stop_timeout_s", "On a stop (SIGTERM, SIGINT, swictation stop), the longest the daemon waits for pending speech, seconds; after end of input, the longest it waits without a working ASR worker. What is left stays in the journal for the next start. Keep it below the unit's TimeoutStopSec (15)."),
        ],
    },
    SectionDoc {
        name: "journal",
        doc: "The speech journal ($XDG_STATE_HOME/swictation/journal): every segment is on disk until its transcript has been delivered; an earlier run's entries are transcribed at start.",
        keys: &[
            key("recovered", "Where text recovered at start goes: \"keep\" (kept and shown by swictation recovered and status; never typed into whatever window has the focus) or \"output\" (sent to the output like new speech)."),
            key("max_mb", "The most the journal holds, MB; beyond it new speech is not kept on disk, and status says so (nothing kept is deleted)."),
        ],
    },
    SectionDoc {
        name: "log",
        doc: "Logging (to the journal under systemd).",
        keys: &[key("level", "\"error\", \"warn\", \"info\" or \"debug\". SWICTATION_LOG overrides it.")],
    },
    SectionDoc {
        name: "ptt",
        doc: "Push-to-talk: bind `swictation ptt down` to a key press and `swictation ptt up` to its release (README: examples).",
        keys: &[
            key("hold_threshold_ms", "A press at least this long is push-to-talk (listen while held); a shorter one is a tap, which toggles listening."),
            key("release_pad_ms", "Milliseconds of audio kept after the key is released, so the last word is not cut."),
            key("start_paused", "Start paused: listen only while the key is held, or after a tap."),
        ],
    },
    SectionDoc {
        name: "notify",
        doc: "Desktop notifications over the session bus (org.freedesktop.Notifications): a worker failed, moved off the GPU, speech held, running degraded. Never transcripts.",
        keys: &[
            key("enabled", "Send desktop notifications."),
            key("min_interval_s", "At most one notification of a kind this often, seconds."),
        ],
    },
    SectionDoc {
        name: "history",
        doc: "The transcript history: every transcript, kept (0600) in $XDG_STATE_HOME/swictation/history.jsonl and read or cleared with `swictation history`. Off by default: it is a record of everything said.",
        keys: &[
            key("enabled", "Keep the history (also a transcript whose typing failed, so it is never lost)."),
            key("max_entries", "Keep the newest this many."),
        ],
    },
    SectionDoc {
        name: "dictation",
        doc: "Between the recogniser and the output: spoken commands and whole-word replacements. Off unless configured.",
        keys: &[
            key("commands", "Obey the spoken commands below (whole words, any case)."),
            key("new_line", "Phrases that put a line break in the text."),
            key("new_paragraph", "Phrases that put a paragraph break (two line breaks) in the text."),
            key("scratch_that", "Phrases that drop what was said before them in the utterance, or, said first, delete the last utterance delivered (typed text is erased with backspaces, a file loses its last line; not possible on stdout or the clipboard)."),
            key("replacements", "Whole-word replacements, case-aware (\"Swiktation\" becomes \"Swictation\"), e.g. { swiktation = \"swictation\", \"open ai\" = \"OpenAI\" }."),
        ],
    },
];

/// A configuration problem, naming the file and, where there is one, the key.
#[derive(Debug, thiserror::Error)]
#[error("{}{kind}{}", file_prefix(.file), line_suffix(.line))]
pub struct ConfigError {
    /// The file the configuration came from (none for [`Config::validate`] on its own).
    pub file: Option<PathBuf>,
    /// 1-based line of the offending text, where known.
    pub line: Option<usize>,
    /// What is wrong.
    pub kind: ConfigErrorKind,
}

fn file_prefix(file: &Option<PathBuf>) -> String {
    file.as_ref()
        .map(|f| format!("{}: ", f.display()))
        .unwrap_or_default()
}

fn line_suffix(line: &Option<usize>) -> String {
    line.map(|l| format!(" (line {l})")).unwrap_or_default()
}

/// What is wrong with a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigErrorKind {
    /// The file exists but could not be read.
    #[error("cannot read: {0}")]
    Io(#[source] std::io::Error),
    /// The file is not valid TOML.
    #[error("invalid TOML: {0}")]
    Syntax(String),
    /// A table that is not one of [`SCHEMA`]'s sections.
    #[error("unknown section `[{section}]` (known sections: {})", .known.join(", "))]
    UnknownSection {
        /// The section as written.
        section: String,
        /// The sections there are.
        known: Vec<&'static str>,
    },
    /// A key its section does not have.
    #[error("unknown key `{key}` (known keys in [{section}]: {})", .known.join(", "))]
    UnknownKey {
        /// Dotted path, e.g. `asr.modle`.
        key: String,
        /// The section it was found in.
        section: String,
        /// The keys that section has.
        known: Vec<&'static str>,
    },
    /// A value of the wrong type or an unknown choice.
    #[error("`{key}`: {message}")]
    BadValue {
        /// Dotted path.
        key: String,
        /// The parser's complaint.
        message: String,
    },
    /// A well-typed value outside its allowed range, or inconsistent with another key.
    #[error("`{key}` = {value}: {reason}")]
    Invalid {
        /// Dotted path.
        key: String,
        /// The value, as TOML would write it.
        value: String,
        /// Why it is refused.
        reason: String,
    },
}

impl ConfigError {
    /// The dotted key path the error is about, if any.
    pub fn key(&self) -> Option<&str> {
        match &self.kind {
            ConfigErrorKind::UnknownKey { key, .. }
            | ConfigErrorKind::BadValue { key, .. }
            | ConfigErrorKind::Invalid { key, .. } => Some(key),
            ConfigErrorKind::UnknownSection { section, .. } => Some(section),
            ConfigErrorKind::Io(_) | ConfigErrorKind::Syntax(_) => None,
        }
    }
}

/// 1-based line number of byte offset `at` in `text`.
fn line_of(text: &str, at: usize) -> usize {
    text.as_bytes()
        .iter()
        .take(at)
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// `~/x` → `$HOME/x`; anything else unchanged. Config files are hand-written and `~` is what
/// people type; nothing else (no `$VAR`) is expanded, to keep paths predictable.
pub fn expand_home(p: &Path) -> PathBuf {
    match (p.strip_prefix("~"), std::env::var_os("HOME")) {
        (Ok(rest), Some(home)) if !home.is_empty() => PathBuf::from(home).join(rest),
        _ => p.to_path_buf(),
    }
}

/// `[audio]`.
fn check_audio(audio: &AudioConfig) -> Result<(), ConfigError> {
    check("audio.pre_roll_ms", audio.pre_roll_ms, 0, 10_000)?;
    if let Some(d) = &audio.device {
        if d.trim().is_empty() {
            return Err(invalid(
                "audio.device",
                "\"\"",
                "must not be empty (leave it out for the default input)",
            ));
        }
    }
    Ok(())
}

/// `[vad]`: thresholds, timings, and what the segmenter itself refuses.
fn check_vad(v: &VadConfig) -> Result<(), ConfigError> {
    check("vad.start_threshold", v.start_threshold, 0.0, 1.0)?;
    if v.start_threshold == 0.0 {
        return Err(invalid(
            "vad.start_threshold",
            v.start_threshold,
            "must be above 0: every frame would be speech",
        ));
    }
    check("vad.stop_threshold", v.stop_threshold, 0.0, 1.0)?;
    if v.stop_threshold > v.start_threshold {
        return Err(invalid(
            "vad.stop_threshold",
            v.stop_threshold,
            format!(
                "must not exceed vad.start_threshold ({})",
                v.start_threshold
            ),
        ));
    }
    check("vad.min_speech_ms", v.min_speech_ms, 0, 10_000)?;
    check("vad.min_silence_ms", v.min_silence_ms, 1, 10_000)?;
    check("vad.pad_before_ms", v.pad_before_ms, 0, 10_000)?;
    check("vad.pad_after_ms", v.pad_after_ms, 0, 10_000)?;
    if v.pad_after_ms > v.min_silence_ms {
        return Err(invalid(
                "vad.pad_after_ms",
                v.pad_after_ms,
                format!(
                    "must not exceed vad.min_silence_ms ({}): the padding is taken from the silence that ends a segment",
                    v.min_silence_ms
                ),
            ));
    }
    check(
        "vad.max_segment_ms",
        v.max_segment_ms,
        1_000,
        MAX_SEGMENT_LIMIT_MS,
    )?;
    // The segmenter has the last word (it may grow checks this file does not know about).
    if let Err(reason) = v.segmenter().validate() {
        return Err(invalid("vad.max_segment_ms", v.max_segment_ms, reason));
    }
    Ok(())
}

/// `[asr]`.
fn check_asr(a: &AsrConfig) -> Result<(), ConfigError> {
    if a.model.trim().is_empty() {
        return Err(invalid(
            "asr.model",
            "\"\"",
            "must be \"base\", \"tiny\" or a model directory",
        ));
    }
    check("asr.threads", a.threads, 0, 256)?;
    check("asr.context_s", a.context_s, 0.0, 600.0)?;
    Ok(())
}

/// `[output]`.
fn check_output(output: &OutputConfig) -> Result<(), ConfigError> {
    check(
        "output.paste_restore_ms",
        output.paste_restore_ms,
        0,
        10_000,
    )?;
    if output.mode == OutputMode::File && output.file.is_none() {
        return Err(invalid(
            "output.file",
            "(unset)",
            "must be set when output.mode = \"file\"",
        ));
    }
    Ok(())
}

/// `[gpu]` on its own (the ladders are checked by translating the whole file).
fn check_gpu(g: &GpuConfig) -> Result<(), ConfigError> {
    check("gpu.warning_pct", g.warning_pct, 0.0, 100.0)?;
    check("gpu.critical_pct", g.critical_pct, 0.0, 100.0)?;
    check("gpu.emergency_pct", g.emergency_pct, 0.0, 100.0)?;
    if g.warning_pct >= g.critical_pct {
        return Err(invalid(
            "gpu.critical_pct",
            g.critical_pct,
            format!("must be above gpu.warning_pct ({})", g.warning_pct),
        ));
    }
    if g.critical_pct >= g.emergency_pct {
        return Err(invalid(
            "gpu.emergency_pct",
            g.emergency_pct,
            format!("must be above gpu.critical_pct ({})", g.critical_pct),
        ));
    }

    let mb = [
        ("gpu.warning_mb", g.warning_mb),
        ("gpu.critical_mb", g.critical_mb),
        ("gpu.emergency_mb", g.emergency_mb),
    ];
    for pair in mb.windows(2) {
        if let [(lo_key, Some(lo)), (key, Some(hi))] = pair {
            if hi <= lo {
                return Err(invalid(key, hi, format!("must be above {lo_key} ({lo})")));
            }
        }
    }
    check("gpu.margin_mb", g.margin_mb, 0, 1_000_000)?;
    check("gpu.hysteresis_mb", g.hysteresis_mb, 0, 1_000_000)?;
    check("gpu.promote_after_s", g.promote_after_s, 0.0, 86_400.0)?;
    Ok(())
}

/// `[supervision]`.
fn check_supervision(s: &SupervisionConfig) -> Result<(), ConfigError> {
    check("supervision.restart_max", s.restart_max, 0, 1_000)?;
    check(
        "supervision.restart_window_s",
        s.restart_window_s,
        1,
        86_400,
    )?;
    check("supervision.hang_timeout_s", s.hang_timeout_s, 1, 3_600)?;
    check("supervision.stop_timeout_s", s.stop_timeout_s, 1, 3_600)?;
    Ok(())
}

/// A range check's failure, before it is given a key.
fn invalid(key: &str, value: impl std::fmt::Display, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        file: None,
        line: None,
        kind: ConfigErrorKind::Invalid {
            key: key.to_owned(),
            value: value.to_string(),
            reason: reason.into(),
        },
    }
}

fn check<T: PartialOrd + Copy + std::fmt::Display>(
    key: &str,
    v: T,
    lo: T,
    hi: T,
) -> Result<(), ConfigError> {
    // Written as two `<=` so that NaN (which compares false with everything) fails.
    if lo <= v && v <= hi {
        Ok(())
    } else {
        Err(invalid(key, v, format!("must be between {lo} and {hi}")))
    }
}

impl Config {
    /// The default location: `$XDG_CONFIG_HOME/swictation/config.toml`, else
    /// `~/.config/swictation/config.toml`.
    pub fn default_path() -> PathBuf {
        swictation_proto::paths::config_dir().join("config.toml")
    }

    /// Loads `path` (or [`Config::default_path`]) and returns the configuration and the path
    /// used. A missing file at the default path means all defaults; a missing file that was
    /// named explicitly is an error, since it is most likely a typo.
    pub fn load(path: Option<&Path>) -> Result<(Config, PathBuf), ConfigError> {
        let (file, explicit) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (Self::default_path(), false),
        };
        match std::fs::read_to_string(&file) {
            Ok(text) => Ok((Self::from_toml_str(&text, &file)?, file)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
                Ok((Config::default(), file))
            }
            Err(e) => Err(ConfigError {
                file: Some(file),
                line: None,
                kind: ConfigErrorKind::Io(e),
            }),
        }
    }

    /// Parses and validates `text`; `source` is only used to name the file in errors.
    pub fn from_toml_str(text: &str, source: &Path) -> Result<Config, ConfigError> {
        let with_file = |mut e: ConfigError| {
            e.file = Some(source.to_path_buf());
            e
        };
        let de = toml::Deserializer::parse(text).map_err(|e| {
            with_file(ConfigError {
                file: None,
                line: e.span().map(|s| line_of(text, s.start)),
                kind: ConfigErrorKind::Syntax(e.message().trim().to_owned()),
            })
        })?;
        let mut config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let line = e.inner().span().map(|s| line_of(text, s.start));
            let segments: Vec<String> = e.path().iter().map(|s| s.to_string()).collect();
            with_file(ConfigError {
                file: None,
                line,
                kind: classify(&segments, e.inner().message()),
            })
        })?;
        config.expand_paths();
        config.validate().map_err(|mut e| {
            e.line = e.key().and_then(|k| line_of_key(text, k));
            with_file(e)
        })?;
        Ok(config)
    }

    /// Replaces a leading `~/` in every path key with `$HOME/`, as a shell would.
    fn expand_paths(&mut self) {
        for p in [
            &mut self.vad.model,
            &mut self.runtime.ort_lib,
            &mut self.runtime.workers_dir,
            &mut self.runtime.models_dir,
            &mut self.output.file,
        ]
        .into_iter()
        .flatten()
        {
            *p = expand_home(p);
        }
    }

    /// Checks ranges and cross-key consistency, section by section; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_audio(&self.audio)?;
        check_vad(&self.vad)?;
        check_asr(&self.asr)?;
        check_output(&self.output)?;
        check_gpu(&self.gpu)?;
        if let Err(e) = translate::placement_config(self) {
            return Err(invalid(e.key, e.value, e.reason));
        }
        check_supervision(&self.supervision)?;
        self.check_user_sections()
    }

    /// `[ptt]`, `[history]`, `[notify]`, `[dictation]` and `[journal]`.
    fn check_user_sections(&self) -> Result<(), ConfigError> {
        check(
            "ptt.hold_threshold_ms",
            self.ptt.hold_threshold_ms,
            0,
            10_000,
        )?;
        check("ptt.release_pad_ms", self.ptt.release_pad_ms, 0, 10_000)?;
        check(
            "history.max_entries",
            self.history.max_entries,
            1,
            1_000_000,
        )?;
        check(
            "notify.min_interval_s",
            self.notify.min_interval_s,
            0,
            86_400,
        )?;
        let d = &self.dictation;
        for (key, list) in [
            ("dictation.new_line", &d.new_line),
            ("dictation.new_paragraph", &d.new_paragraph),
            ("dictation.scratch_that", &d.scratch_that),
        ] {
            if let Some(bad) = list.iter().find(|p| !p.chars().any(char::is_alphanumeric)) {
                return Err(invalid(
                    key,
                    format!("{bad:?}"),
                    "a phrase needs at least one letter or digit",
                ));
            }
        }
        if let Some(bad) = d
            .replacements
            .keys()
            .find(|p| !p.chars().any(char::is_alphanumeric))
        {
            return Err(invalid(
                "dictation.replacements",
                format!("{bad:?}"),
                "the words to replace need at least one letter or digit",
            ));
        }
        check("journal.max_mb", self.journal.max_mb, 1, 1_000_000)?;
        Ok(())
    }

    /// The documented default file: every section and key with its description; keys with a
    /// default are written with it, keys that default to unset are written commented out with
    /// an example. Parsing it gives [`Config::default`].
    pub fn default_toml() -> String {
        // Values come from serialising the real defaults, so this text cannot disagree with them.
        let defaults = toml::Table::try_from(Config::default()).unwrap_or_default();
        let mut out = String::from(
            "# swictation configuration ($XDG_CONFIG_HOME/swictation/config.toml).\n\
             # Every key is optional; the values below are the defaults. Unknown keys are errors.\n\
             # Devices are \"cpu\", \"cuda\" (GPU 0) or \"cuda:N\". Paths may start with ~/.\n",
        );
        for section in SCHEMA {
            let values = defaults.get(section.name).and_then(|v| v.as_table());
            let _ = write!(out, "\n# {}\n[{}]\n", section.doc, section.name);
            for k in section.keys {
                for line in k.doc.lines() {
                    let _ = writeln!(out, "# {line}");
                }
                match (values.and_then(|t| t.get(k.name)), k.example) {
                    // Every float here is an f32; printing it through f64 would turn 0.35
                    // into 0.3499999940395355. f32's Debug is the shortest exact form, with `.0`.
                    (Some(toml::Value::Float(f)), _) => {
                        let _ = writeln!(out, "{} = {:?}", k.name, *f as f32);
                    }
                    (Some(v), _) => {
                        let _ = writeln!(out, "{} = {}", k.name, v);
                    }
                    (None, Some(ex)) => {
                        let _ = writeln!(out, "# {} = {}", k.name, ex);
                    }
                    (None, None) => {
                        let _ = writeln!(out, "# {} =", k.name);
                    }
                }
            }
        }
        out
    }
}

/// Turns a serde failure at `path` into an unknown-section / unknown-key / bad-value error.
fn classify(path: &[String], message: &str) -> ConfigErrorKind {
    let message = message.trim().to_owned();
    let known_sections = || SCHEMA.iter().map(|s| s.name).collect::<Vec<_>>();
    match path {
        [] => ConfigErrorKind::Syntax(message),
        [section, rest @ ..] => match SCHEMA.iter().find(|s| s.name == section.as_str()) {
            None => ConfigErrorKind::UnknownSection {
                section: section.clone(),
                known: known_sections(),
            },
            Some(s) => match rest.first() {
                Some(k) if !s.keys.iter().any(|d| d.name == k.as_str()) => {
                    ConfigErrorKind::UnknownKey {
                        key: path.join("."),
                        section: s.name.to_owned(),
                        known: s.keys.iter().map(|d| d.name).collect(),
                    }
                }
                _ => ConfigErrorKind::BadValue {
                    key: path.join("."),
                    message,
                },
            },
        },
    }
}

/// The line of `section.key`'s value in `text`, for errors found after parsing.
fn line_of_key(text: &str, dotted: &str) -> Option<usize> {
    let (section, key) = dotted.split_once('.')?;
    let root = toml::de::DeTable::parse(text).ok()?;
    let (_, table) = root
        .get_ref()
        .iter()
        .find(|(k, _)| k.get_ref().as_ref() == section)?;
    let toml::de::DeValue::Table(table) = table.get_ref() else {
        return None;
    };
    let (_, value) = table.iter().find(|(k, _)| k.get_ref().as_ref() == key)?;
    Some(line_of(text, value.span().start))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml_str(text, Path::new("config.toml"))
    }

    #[test]
    fn paste_keys_parse_and_print_back() {
        let k = |s: &str| s.parse::<PasteKey>();
        assert_eq!(k("ctrl+v"), Ok(PasteKey::CTRL_V));
        let cases = [
            ("ctrl+v", "ctrl+v"),
            ("Ctrl + Shift + V", "ctrl+shift+v"),
            ("shift+insert", "shift+insert"),
            ("super+alt+p", "alt+super+p"),
            ("control+v", "ctrl+v"),
            ("v", "v"),
        ];
        for (input, printed) in cases {
            assert_eq!(
                k(input).map(|k| k.to_string()).as_deref(),
                Ok(printed),
                "{input}"
            );
        }
        for (bad, why) in [
            ("ctrl+ctrl+v", "`ctrl` twice"),
            ("ctrl+v+b", "more than one key (`b`)"),
            ("ctrl+", "an empty part"),
            ("ctrl+esc", "unknown key `esc`"),
            ("", "an empty part"),
        ] {
            let e = k(bad).expect_err(bad);
            assert!(
                e.contains(why) && e.contains("e.g. \"ctrl+v\""),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn empty_file_is_all_defaults() {
        assert_eq!(parse("").unwrap(), Config::default());
        assert_eq!(parse("[vad]\n").unwrap(), Config::default());
    }

    #[test]
    fn default_toml_parses_to_the_defaults() {
        let text = Config::default_toml();
        assert_eq!(parse(&text).unwrap(), Config::default(), "{text}");
    }

    #[test]
    fn default_toml_documents_every_key() {
        // A config with every optional key set serialises every field; each must be in SCHEMA
        // (and so in the default file), and SCHEMA must list nothing the structs lack.
        let mut c = Config::default();
        c.audio.device = Some("mic".into());
        c.vad.model = Some("/m".into());
        c.runtime = RuntimeConfig {
            ort_lib: Some("/o".into()),
            workers_dir: Some("/w".into()),
            models_dir: Some("/m".into()),
        };
        c.output.file = Some("/f".into());
        c.gpu.warning_mb = Some(1);
        c.gpu.critical_mb = Some(2);
        c.gpu.emergency_mb = Some(3);
        let full = toml::Table::try_from(&c).unwrap();
        let mut from_structs: Vec<String> = Vec::new();
        for (s, t) in &full {
            for k in t.as_table().unwrap().keys() {
                from_structs.push(format!("{s}.{k}"));
            }
        }
        let mut from_schema: Vec<String> = SCHEMA
            .iter()
            .flat_map(|s| s.keys.iter().map(move |k| format!("{}.{}", s.name, k.name)))
            .collect();
        from_structs.sort();
        from_schema.sort();
        assert_eq!(from_structs, from_schema);

        let text = Config::default_toml();
        for k in SCHEMA.iter().flat_map(|s| s.keys) {
            assert!(
                text.lines()
                    .any(|l| l.starts_with(&format!("{} = ", k.name))
                        || l.starts_with(&format!("# {} = ", k.name))),
                "{} missing from the default file",
                k.name
            );
        }
        // Every-key-set config also round-trips (the example values are valid).
        let uncommented: String = text
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(rest)
                    if SCHEMA
                        .iter()
                        .flat_map(|s| s.keys)
                        .any(|k| rest.starts_with(&format!("{} = ", k.name))) =>
                {
                    rest
                }
                _ => l,
            })
            .collect::<Vec<_>>()
            .join("\n");
        let all = parse(&uncommented.replace("mode = \"stdout\"", "mode = \"file\"")).unwrap();
        assert_eq!(all.output.mode, OutputMode::File);
        assert!(all.audio.device.is_some() && all.runtime.ort_lib.is_some());
    }

    #[test]
    fn example_file_in_deploy_is_in_sync() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/config.example.toml");
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            on_disk == Config::default_toml(),
            "{} is out of date: regenerate it with `swictation config default > deploy/config.example.toml` \
             (or `SWICTATION_WRITE_EXAMPLE=1 cargo test -p swictation --lib config`)",
            path.display()
        );
    }

    /// Regenerates deploy/config.example.toml when asked (the CLI subcommand may not exist yet).
    #[test]
    fn write_example_when_asked() {
        if std::env::var_os("SWICTATION_WRITE_EXAMPLE").is_some() {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/config.example.toml");
            std::fs::write(path, Config::default_toml()).unwrap();
        }
    }

    #[test]
    fn values_are_read() {
        let c = parse(
            "[vad]\ndevice = \"cuda:1\"\nstart_threshold = 0.6\n[asr]\nmodel = \"tiny\"\nencoder_device = \"cuda\"\ncontext_s = 5\n\
             [output]\nmode = \"type\"\ntype_tool = \"wtype\"\n[log]\nlevel = \"debug\"\n",
        )
        .unwrap();
        assert_eq!(c.vad.device, Device::Cuda(1));
        assert_eq!(c.vad.start_threshold, 0.6);
        assert_eq!(c.asr.encoder_device, Device::Cuda(0));
        assert_eq!(c.asr.decoder_device, Device::Cpu);
        assert_eq!(c.asr.context_s, 5.0);
        assert_eq!(
            c.asr.model_dir(Path::new("/m")),
            Path::new("/m/moonshine-tiny-en")
        );
        assert_eq!(c.output.mode, OutputMode::Type);
        assert_eq!(c.output.type_tool, TypeTool::Wtype);
        assert_eq!(c.log.level.as_str(), "debug");
    }

    #[test]
    fn home_is_expanded_in_paths() {
        let Some(home) = std::env::var_os("HOME") else {
            return;
        };
        let c = parse("[runtime]\nmodels_dir = \"~/m\"\n[output]\nfile = \"/abs/f\"\n").unwrap();
        assert_eq!(c.runtime.models_dir, Some(PathBuf::from(home).join("m")));
        assert_eq!(c.output.file, Some(PathBuf::from("/abs/f")));
    }

    #[test]
    fn bad_cases_name_their_key() {
        // (file text, key the error must name, text the message must contain)
        let cases: &[(&str, &str, &str)] = &[
            (
                "[asr]\nmodle = \"base\"\n",
                "asr.modle",
                "known keys in [asr]: model, encoder_device, decoder_device, threads, context_s",
            ),
            (
                "[vad]\nstart_treshold = 0.5\n",
                "vad.start_treshold",
                "unknown key `vad.start_treshold`",
            ),
            ("[sound]\nx = 1\n", "sound", "unknown section `[sound]`"),
            ("verbose = true\n", "verbose", "unknown section"),
            (
                "[vad]\nstart_threshold = 1.5\n",
                "vad.start_threshold",
                "`vad.start_threshold` = 1.5: must be between 0 and 1",
            ),
            (
                "[vad]\nstart_threshold = 0.0\nstop_threshold = 0.0\n",
                "vad.start_threshold",
                "must be above 0",
            ),
            (
                "[vad]\nstart_threshold = \"high\"\n",
                "vad.start_threshold",
                "invalid type",
            ),
            (
                "[vad]\nstop_threshold = 0.6\n",
                "vad.stop_threshold",
                "must not exceed vad.start_threshold",
            ),
            (
                "[vad]\nstop_threshold = -0.1\n",
                "vad.stop_threshold",
                "between 0 and 1",
            ),
            (
                "[vad]\nmin_speech_ms = -5\n",
                "vad.min_speech_ms",
                "invalid value",
            ),
            (
                "[vad]\nmin_silence_ms = 0\npad_after_ms = 0\n",
                "vad.min_silence_ms",
                "between 1 and",
            ),
            (
                "[vad]\npad_after_ms = 600\n",
                "vad.pad_after_ms",
                "must not exceed vad.min_silence_ms (500)",
            ),
            (
                "[vad]\nmax_segment_ms = 100\n",
                "vad.max_segment_ms",
                "between 1000",
            ),
            (
                "[vad]\nmax_segment_ms = 1000\n",
                "vad.max_segment_ms",
                "at least",
            ),
            (
                "[vad]\ndevice = \"gpu\"\n",
                "vad.device",
                "expected cpu, cuda or cuda:N",
            ),
            (
                "[vad]\ndevice = \"cuda:x\"\n",
                "vad.device",
                "unknown device",
            ),
            (
                "[asr]\nencoder_device = \"tpu\"\n",
                "asr.encoder_device",
                "unknown device",
            ),
            (
                "[asr]\ndecoder_device = 1\n",
                "asr.decoder_device",
                "invalid type",
            ),
            ("[asr]\nthreads = 257\n", "asr.threads", "between 0 and 256"),
            ("[asr]\nmodel = \"\"\n", "asr.model", "must be"),
            (
                "[asr]\ncontext_s = -1\n",
                "asr.context_s",
                "between 0 and 600",
            ),
            (
                "[audio]\npre_roll_ms = 60000\n",
                "audio.pre_roll_ms",
                "between 0 and 10000",
            ),
            (
                "[audio]\ndevice = \"\"\n",
                "audio.device",
                "must not be empty",
            ),
            (
                "[output]\nmode = \"speak\"\n",
                "output.mode",
                "unknown variant `speak`",
            ),
            ("[output]\nmode = \"file\"\n", "output.file", "must be set"),
            (
                "[output]\ntype_tool = \"xdo\"\n",
                "output.type_tool",
                "unknown variant",
            ),
            (
                "[output]\npaste_key = \"ctrl+f5\"\n",
                "output.paste_key",
                "unknown key `f5`",
            ),
            (
                "[output]\npaste_key = \"ctrl+shift\"\n",
                "output.paste_key",
                "no key besides the modifiers",
            ),
            (
                "[gpu]\nwarning_pct = 90.0\n",
                "gpu.critical_pct",
                "must be above gpu.warning_pct (90)",
            ),
            (
                "[gpu]\nemergency_pct = 85.0\n",
                "gpu.emergency_pct",
                "must be above gpu.critical_pct",
            ),
            (
                "[gpu]\nemergency_pct = 101.0\n",
                "gpu.emergency_pct",
                "between 0 and 100",
            ),
            (
                "[gpu]\nwarning_pct = nan\n",
                "gpu.warning_pct",
                "between 0 and 100",
            ),
            (
                "[gpu]\ncritical_mb = 3500\nemergency_mb = 3000\n",
                "gpu.emergency_mb",
                "must be above gpu.critical_mb (3500)",
            ),
            (
                "[gpu]\nasr_ladder = [\"device=tpu\"]\n",
                "gpu.asr_ladder",
                "unknown device",
            ),
            (
                "[gpu]\nvad_ladder = \"cuda\"\n",
                "gpu.vad_ladder",
                "needs cpu",
            ),
            (
                "[gpu]\nplacement = \"manual\"\n",
                "gpu.placement",
                "unknown variant",
            ),
            (
                "[supervision]\nrestart_window_s = 0\n",
                "supervision.restart_window_s",
                "between 1",
            ),
            (
                "[supervision]\nhang_timeout_s = 0\n",
                "supervision.hang_timeout_s",
                "between 1",
            ),
            (
                "[supervision]\nrestart_max = \"5\"\n",
                "supervision.restart_max",
                "invalid type",
            ),
            ("[log]\nlevel = \"loud\"\n", "log.level", "unknown variant"),
            (
                "[log]\nlevel = \"info\"\ncolour = true\n",
                "log.colour",
                "known keys in [log]: level",
            ),
            ("vad = 3\n", "vad", "invalid type"),
            (
                "[ptt]\nrelease_pad_ms = 20000\n",
                "ptt.release_pad_ms",
                "between 0 and 10000",
            ),
            (
                "[dictation]\nscratch_that = [\"...\"]\n",
                "dictation.scratch_that",
                "at least one letter",
            ),
            (
                "[dictation.replacements]\n\" \" = \"x\"\n",
                "dictation.replacements",
                "at least one letter",
            ),
            (
                "[dictation]\nreplacements = [\"a\"]\n",
                "dictation.replacements",
                "invalid type",
            ),
            (
                "[ptt]\nhold_ms = 300\n",
                "ptt.hold_ms",
                "known keys in [ptt]: hold_threshold_ms",
            ),
        ];
        for (text, key, needle) in cases {
            let err = match parse(text) {
                Err(e) => e,
                Ok(c) => panic!("{text:?} was accepted: {c:?}"),
            };
            let msg = err.to_string();
            assert_eq!(err.key(), Some(*key), "{text:?}: {msg}");
            assert!(msg.starts_with("config.toml: "), "{text:?}: {msg}");
            assert!(
                msg.contains(&format!("`{key}`")) || msg.contains(&format!("[{key}]")),
                "{text:?}: {msg}"
            );
            assert!(msg.contains(needle), "{text:?}: {msg:?} lacks {needle:?}");
        }
    }

    #[test]
    fn errors_carry_the_line() {
        let err = parse("[vad]\n\nstart_threshold = 1.5\n").unwrap_err();
        assert_eq!(err.line, Some(3), "{err}");
        assert!(err.to_string().ends_with("(line 3)"), "{err}");
        let err = parse("[asr]\nthreads = 2\nmodle = 1\n").unwrap_err();
        assert_eq!(err.line, Some(3), "{err}");
        let err = parse("[asr\n").unwrap_err();
        assert!(matches!(err.kind, ConfigErrorKind::Syntax(_)), "{err}");
        assert_eq!(err.line, Some(1), "{err}");
    }

    #[test]
    fn load_missing_default_is_defaults_but_missing_explicit_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.toml");
        let err = Config::load(Some(&missing)).unwrap_err();
        assert!(matches!(err.kind, ConfigErrorKind::Io(_)), "{err}");
        assert!(err.to_string().contains("nope.toml"), "{err}");

        let file = dir.path().join("config.toml");
        std::fs::write(&file, "[asr]\nthreads = 4\n").unwrap();
        let (c, used) = Config::load(Some(&file)).unwrap();
        assert_eq!(c.asr.threads, 4);
        assert_eq!(used, file);
    }

    #[test]
    fn vad_keys_map_onto_the_segmenter() {
        let c = Config::default();
        assert_eq!(c.vad.segmenter(), SegmenterConfig::default());
        assert_eq!(
            c.vad.model_path(Path::new("/m")),
            Path::new("/m/silero-vad/silero_vad.onnx")
        );
    }
}
