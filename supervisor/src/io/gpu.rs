//! Reading the GPUs: memory per device, the VRAM each of our worker processes holds, utilisation,
//! and critical Xid errors. The placement policy (`placement`) decides from these readings; this
//! module only reads.
//!
//! Two probes: [`NvmlProbe`], the real one (NVIDIA's management library, loaded at run time, so
//! the daemon builds and runs on machines with no NVIDIA driver), and [`ScriptedProbe`], a
//! timeline of readings from a file, for deterministic tests of the policy and the daemon. The
//! scripted one is chosen only by an explicit option ([`probe_from_options`]), never as a
//! fallback: a daemon must not silently steer itself by made-up readings.
//!
//! "No driver" and "no GPU" are normal states ([`Availability::NoGpu`], with the reason in
//! words), not errors: without a GPU everything runs on the CPU.
//!
//! Memory is in MiB throughout (written "MB", as NVML's tools do).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Deserialize;
pub use swictation_policy::gpu::{Availability, DeviceReading, GpuReading};

const MIB: u64 = 1024 * 1024;

/// A source of GPU readings. Reading is cheap enough to do every second.
pub trait GpuProbe: Send {
    /// Read every device now. Never fails: trouble is reported as [`Availability::NoGpu`] or in
    /// [`GpuReading::notes`].
    fn read(&mut self) -> Availability;
    /// One line for status and logs: which probe this is and what it found at start.
    fn describe(&self) -> String;
}

/// Choose the probe: the scripted one when `script` names a timeline file (an explicit test
/// option), NVML otherwise. A bad script file is an error, never a quiet switch to NVML.
pub fn probe_from_options(script: Option<&Path>) -> Result<Box<dyn GpuProbe>, ScriptError> {
    match script {
        Some(path) => {
            let start = Instant::now();
            let probe = ScriptedProbe::from_file(path, Box::new(move || start.elapsed()))?;
            Ok(Box::new(probe))
        }
        None => Ok(Box::new(NvmlProbe::new())),
    }
}

// ---------------------------------------------------------------------------------------------
// NVML

/// The real probe, over NVIDIA's management library (`libnvidia-ml.so.1`, opened at run time).
///
/// Created once per daemon: the library handle lives for the rest of the process (NVML is
/// reference-counted and meant to be initialised once; keeping it also lets Xid event sets hold
/// on to it without self-reference).
pub struct NvmlProbe {
    state: NvmlState,
}

enum NvmlState {
    /// No GPU to read, and why.
    Unavailable(String),
    Ready(NvmlReady),
}

struct NvmlReady {
    nvml: &'static nvml_wrapper::Nvml,
    driver: String,
    /// One event set per device registered for critical Xid errors (one per device because a
    /// failed registration frees the set it was given).
    xid_sets: Vec<nvml_wrapper::EventSet<'static>>,
    /// Notes not yet handed out with a reading.
    pending_notes: Vec<String>,
    /// Devices whose per-process memory query already failed once (said once, not every second).
    no_process_info: Vec<u32>,
    /// Devices that failed to read last time, to note changes only.
    unreadable: Vec<u32>,
}

impl NvmlProbe {
    /// Open NVML. Never fails: without the library, the driver or a device, the probe reports
    /// [`Availability::NoGpu`] with the reason on every read.
    pub fn new() -> Self {
        Self {
            state: Self::open(),
        }
    }

    /// Why there is no GPU, if there is none.
    pub fn unavailable_reason(&self) -> Option<&str> {
        match &self.state {
            NvmlState::Unavailable(why) => Some(why),
            NvmlState::Ready(_) => None,
        }
    }

    fn open() -> NvmlState {
        use nvml_wrapper::bitmasks::event::EventTypes;
        use nvml_wrapper::error::NvmlError;

        let nvml = match nvml_wrapper::Nvml::init() {
            Ok(n) => n,
            Err(e) => return NvmlState::Unavailable(init_failure(&e)),
        };
        let count = match nvml.device_count() {
            Ok(0) => return NvmlState::Unavailable("no devices".to_owned()),
            Ok(n) => n,
            Err(e) => return NvmlState::Unavailable(format!("NVML cannot count devices: {e}")),
        };
        let driver = nvml
            .sys_driver_version()
            .unwrap_or_else(|_| "unknown".to_owned());
        // Leaked on purpose, once per daemon: see the type's doc.
        let nvml: &'static nvml_wrapper::Nvml = Box::leak(Box::new(nvml));

        let mut notes = Vec::new();
        let mut xid_sets = Vec::new();
        let mut unsupported = Vec::new();
        for i in 0..count {
            let device = match nvml.device_by_index(i) {
                Ok(d) => d,
                Err(e) => {
                    notes.push(format!(
                        "cuda:{i}: cannot open the device through NVML: {e}"
                    ));
                    continue;
                }
            };
            let supported = device
                .supported_event_types()
                .map(|t| t.contains(EventTypes::CRITICAL_XID_ERROR));
            match supported {
                Ok(true) => {}
                Ok(false) | Err(NvmlError::NotSupported) => {
                    unsupported.push(format!("cuda:{i}: not supported"));
                    continue;
                }
                Err(e) => {
                    unsupported.push(format!("cuda:{i}: {e}"));
                    continue;
                }
            }
            let registered = nvml
                .create_event_set()
                .map_err(|e| e.to_string())
                .and_then(|set| {
                    device
                        .register_events(EventTypes::CRITICAL_XID_ERROR, set)
                        .map_err(|e| e.error.to_string())
                });
            match registered {
                Ok(set) => xid_sets.push(set),
                Err(e) => unsupported.push(format!("cuda:{i}: {e}")),
            }
        }
        if !unsupported.is_empty() {
            notes.push(format!(
                "Xid error events unavailable ({}); device faults will be seen only as worker failures",
                unsupported.join(", ")
            ));
        }
        NvmlState::Ready(NvmlReady {
            nvml,
            driver,
            xid_sets,
            pending_notes: notes,
            no_process_info: Vec::new(),
            unreadable: Vec::new(),
        })
    }
}

impl Default for NvmlProbe {
    fn default() -> Self {
        Self::new()
    }
}

/// Why NVML could not start, in words a user acts on.
fn init_failure(e: &nvml_wrapper::error::NvmlError) -> String {
    use nvml_wrapper::error::NvmlError;
    match e {
        NvmlError::LibloadingError(_) | NvmlError::LibraryNotFound => {
            "no NVIDIA driver (libnvidia-ml.so.1 not found)".to_owned()
        }
        NvmlError::DriverNotLoaded => "NVIDIA driver not loaded".to_owned(),
        NvmlError::NoPermission => "no permission to talk to the NVIDIA driver".to_owned(),
        NvmlError::FailedToLoadSymbol(s) => format!("NVIDIA driver too old for NVML ({s})"),
        other => format!("NVML unavailable: {other}"),
    }
}

impl NvmlReady {
    fn read(&mut self) -> Availability {
        use nvml_wrapper::enums::device::UsedGpuMemory;
        use nvml_wrapper::error::NvmlError;

        let mut notes = std::mem::take(&mut self.pending_notes);
        let count = match self.nvml.device_count() {
            Ok(n) => n,
            Err(e) => return Availability::NoGpu(format!("NVML cannot count devices: {e}")),
        };
        let mut devices = Vec::new();
        let mut unreadable = Vec::new();
        for i in 0..count {
            let reading = self
                .nvml
                .device_by_index(i)
                .and_then(|d| d.memory_info().map(|m| (d, m)));
            let (device, memory) = match reading {
                Ok(x) => x,
                Err(e) => {
                    // A device that cannot be read (fallen off the bus, being reset) is left out;
                    // the policy treats a missing device like a suspect one.
                    if !self.unreadable.contains(&i) {
                        notes.push(format!("cuda:{i}: cannot read memory: {e}"));
                    }
                    unreadable.push(i);
                    continue;
                }
            };
            let processes = match device.running_compute_processes() {
                Ok(list) => list
                    .into_iter()
                    .filter_map(|p| match p.used_gpu_memory {
                        UsedGpuMemory::Used(bytes) => Some((p.pid, bytes.div_ceil(MIB))),
                        UsedGpuMemory::Unavailable => None,
                    })
                    .collect(),
                Err(e) => {
                    // Per-process memory is optional (containers, vGPU, some drivers): footprints
                    // then stay at their estimates.
                    if !self.no_process_info.contains(&i) {
                        self.no_process_info.push(i);
                        let why = match e {
                            NvmlError::NotSupported => "not supported".to_owned(),
                            other => other.to_string(),
                        };
                        notes.push(format!("cuda:{i}: per-process memory unavailable ({why}); footprints stay estimates"));
                    }
                    Vec::new()
                }
            };
            let total_mb = memory.total / MIB;
            let free_mb = (memory.free / MIB).min(total_mb);
            devices.push(DeviceReading {
                index: i,
                name: device.name().unwrap_or_else(|_| format!("GPU {i}")),
                total_mb,
                // Everything not free counts as used: driver-reserved memory is as unavailable
                // to our workers as anyone's allocation.
                used_mb: total_mb - free_mb,
                free_mb,
                utilization_pct: device.utilization_rates().ok().map(|u| u.gpu),
                processes,
            });
        }
        for i in &self.unreadable {
            if !unreadable.contains(i) {
                notes.push(format!("cuda:{i}: readable again"));
            }
        }
        self.unreadable = unreadable;

        let mut xid_errors = Vec::new();
        let mut broken = Vec::new();
        for (n, set) in self.xid_sets.iter().enumerate() {
            // Drain what is queued without waiting; a set that errors (GPU lost) is dropped after
            // saying so, since it would error again every second.
            loop {
                match set.wait(0) {
                    Ok(ev) => {
                        let index = ev.device.index().unwrap_or(u32::MAX);
                        let xid = match ev.event_data {
                            Some(nvml_wrapper::enums::event::XidError::Value(v)) => v,
                            // NVML's "unknown Xid" value (999).
                            Some(nvml_wrapper::enums::event::XidError::Unknown) | None => 999,
                        };
                        xid_errors.push((index, xid));
                    }
                    Err(NvmlError::Timeout) => break,
                    Err(e) => {
                        notes.push(format!("Xid event set stopped working ({e}); device faults will be seen only as worker failures"));
                        broken.push(n);
                        break;
                    }
                }
            }
        }
        for n in broken.into_iter().rev() {
            self.xid_sets.remove(n);
        }

        if devices.is_empty() {
            return Availability::NoGpu(format!("no readable devices ({count} present)"));
        }
        Availability::Available(GpuReading {
            devices,
            xid_errors,
            notes,
        })
    }
}

impl GpuProbe for NvmlProbe {
    fn read(&mut self) -> Availability {
        match &mut self.state {
            NvmlState::Unavailable(why) => Availability::NoGpu(why.clone()),
            NvmlState::Ready(r) => r.read(),
        }
    }

    fn describe(&self) -> String {
        match &self.state {
            NvmlState::Unavailable(why) => format!("NVML: no GPU: {why}"),
            NvmlState::Ready(r) => {
                let count = r.nvml.device_count().unwrap_or(0);
                format!(
                    "NVML: driver {}, {count} device(s), Xid events on {} of them",
                    r.driver,
                    r.xid_sets.len()
                )
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Scripted

/// A test double: a timeline of readings from a file, replayed against an injected clock.
///
/// The file is JSON lines; blank lines and lines starting with `#` are skipped. Each line is
/// either a reading or an explicit absence, in time order:
///
/// ```text
/// {"at_s": 0, "devices": [{"index": 0, "total_mb": 4096, "used_mb": 1000, "processes": [[4242, 760]]}]}
/// {"at_s": 12, "devices": [{"index": 0, "total_mb": 4096, "used_mb": 3900}], "xid_errors": [[0, 79]]}
/// {"at_s": 20, "no_gpu": "driver unloaded"}
/// ```
///
/// Device fields: `index` (default: position in the list), `name` (default `Scripted GPU`),
/// `total_mb` (required), `used_mb` and/or `free_mb` (one is derived from the other),
/// `utilization_pct`, `processes` (`[pid, MB]` pairs). A read returns the last line whose
/// `at_s` has passed; Xid errors are delivered once, by the first read at or after their line.
pub struct ScriptedProbe {
    path: PathBuf,
    entries: Vec<Entry>,
    clock: Box<dyn Fn() -> Duration + Send>,
    /// Entries up to (not including) this index have had their Xid errors delivered.
    delivered: usize,
    /// The file's modification time and length when last parsed: a test rewrites the file (write
    /// then rename) to change the readings while the daemon runs.
    stamp: Option<(std::time::SystemTime, u64, u64)>,
    /// Why the last rewrite was not taken, reported until the file is fixed.
    reload_error: Option<String>,
}

#[derive(Debug, Clone)]
struct Entry {
    at: Duration,
    what: Availability,
}

/// A timeline file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ScriptError {
    /// The file could not be read.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A line is not a valid reading.
    #[error("{}:{line}: {message}", .path.display())]
    Line {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        message: String,
    },
    /// No readings at all.
    #[error("{}: no readings in the GPU script", .path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLine {
    at_s: f64,
    #[serde(default)]
    devices: Option<Vec<RawDevice>>,
    #[serde(default)]
    xid_errors: Vec<(u32, u64)>,
    #[serde(default)]
    no_gpu: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDevice {
    index: Option<u32>,
    name: Option<String>,
    total_mb: u64,
    used_mb: Option<u64>,
    free_mb: Option<u64>,
    utilization_pct: Option<u32>,
    #[serde(default)]
    processes: Vec<(u32, u64)>,
}

fn parse_line(text: &str) -> Result<Entry, String> {
    let raw: RawLine = serde_json::from_str(text).map_err(|e| e.to_string())?;
    if !raw.at_s.is_finite() || raw.at_s < 0.0 {
        return Err(format!(
            "at_s must be a non-negative number of seconds, got {}",
            raw.at_s
        ));
    }
    let at = Duration::from_secs_f64(raw.at_s);
    let what = match (raw.devices, raw.no_gpu) {
        (Some(_), Some(_)) => {
            return Err("a line has either \"devices\" or \"no_gpu\", not both".to_owned())
        }
        (None, None) => return Err("a line needs \"devices\" or \"no_gpu\"".to_owned()),
        (None, Some(why)) => {
            if !raw.xid_errors.is_empty() {
                return Err("\"xid_errors\" needs \"devices\"".to_owned());
            }
            Availability::NoGpu(why)
        }
        (Some(raw_devices), None) => {
            let mut devices = Vec::with_capacity(raw_devices.len());
            for (pos, d) in raw_devices.into_iter().enumerate() {
                let index = d.index.unwrap_or(pos as u32);
                let (used_mb, free_mb) = match (d.used_mb, d.free_mb) {
                    (Some(u), Some(f)) if u.checked_add(f) == Some(d.total_mb) => (u, f),
                    (Some(u), Some(f)) => {
                        return Err(format!(
                            "device {index}: used_mb {u} + free_mb {f} != total_mb {}",
                            d.total_mb
                        ))
                    }
                    (Some(u), None) if u <= d.total_mb => (u, d.total_mb - u),
                    (None, Some(f)) if f <= d.total_mb => (d.total_mb - f, f),
                    (None, None) => {
                        return Err(format!("device {index}: needs used_mb or free_mb"))
                    }
                    _ => {
                        return Err(format!(
                            "device {index}: more memory than total_mb {}",
                            d.total_mb
                        ))
                    }
                };
                if devices.iter().any(|x: &DeviceReading| x.index == index) {
                    return Err(format!("device {index} listed twice"));
                }
                devices.push(DeviceReading {
                    index,
                    name: d.name.unwrap_or_else(|| "Scripted GPU".to_owned()),
                    total_mb: d.total_mb,
                    used_mb,
                    free_mb,
                    utilization_pct: d.utilization_pct,
                    processes: d.processes,
                });
            }
            if devices.is_empty() {
                return Err(
                    "\"devices\" is empty: write {\"no_gpu\": \"no devices\"} instead".to_owned(),
                );
            }
            if let Some((dev, _)) = raw
                .xid_errors
                .iter()
                .find(|(dev, _)| !devices.iter().any(|d| d.index == *dev))
            {
                return Err(format!(
                    "xid_errors names device {dev}, which is not listed"
                ));
            }
            Availability::Available(GpuReading {
                devices,
                xid_errors: raw.xid_errors,
                notes: Vec::new(),
            })
        }
    };
    Ok(Entry { at, what })
}

impl ScriptedProbe {
    /// Load a timeline file; `clock` gives the time elapsed since the timeline's start.
    pub fn from_file(
        path: &Path,
        clock: Box<dyn Fn() -> Duration + Send>,
    ) -> Result<Self, ScriptError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScriptError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text, clock)
    }

    /// Parse timeline text; `path` names it in errors and in [`GpuProbe::describe`].
    pub fn parse(
        path: &Path,
        text: &str,
        clock: Box<dyn Fn() -> Duration + Send>,
    ) -> Result<Self, ScriptError> {
        let mut entries: Vec<Entry> = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at_line = |message: String| ScriptError::Line {
                path: path.to_owned(),
                line: n + 1,
                message,
            };
            let entry = parse_line(line).map_err(at_line)?;
            if let Some(prev) = entries.last() {
                if entry.at < prev.at {
                    return Err(at_line(format!(
                        "at_s {} is before the previous line's {} (lines must be in time order)",
                        entry.at.as_secs_f64(),
                        prev.at.as_secs_f64()
                    )));
                }
            }
            entries.push(entry);
        }
        if entries.is_empty() {
            return Err(ScriptError::Empty {
                path: path.to_owned(),
            });
        }
        Ok(Self {
            path: path.to_owned(),
            entries,
            clock,
            delivered: 0,
            stamp: file_stamp(path),
            reload_error: None,
        })
    }

    /// Take a rewritten file: its lines replace the timeline (times still count from the
    /// probe's start; Xid errors of lines already passed are not delivered again).
    fn reload(&mut self) {
        let stamp = file_stamp(&self.path);
        if stamp.is_none() || stamp == self.stamp {
            return;
        }
        self.stamp = stamp;
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) => {
                self.reload_error = Some(format!("{}: {e}", self.path.display()));
                return;
            }
        };
        let clock: Box<dyn Fn() -> Duration + Send> = Box::new(|| Duration::ZERO);
        match Self::parse(&self.path, &text, clock) {
            Ok(fresh) => {
                let now = (self.clock)();
                // The rewrite's current line is new: its Xid errors are delivered (once); the
                // lines before it are history.
                self.delivered = fresh.entries.iter().rposition(|e| e.at <= now).unwrap_or(0);
                self.entries = fresh.entries;
                self.reload_error = None;
            }
            Err(e) => self.reload_error = Some(format!("rewritten GPU script ignored: {e}")),
        }
    }
}

fn file_stamp(path: &Path) -> Option<(std::time::SystemTime, u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len(), m.ino()))
}

impl GpuProbe for ScriptedProbe {
    fn read(&mut self) -> Availability {
        self.reload();
        let now = (self.clock)();
        // Entries [0, upto) have started.
        let upto = self.entries.partition_point(|e| e.at <= now);
        let Some(current) = upto.checked_sub(1).and_then(|i| self.entries.get(i)) else {
            let first = self
                .entries
                .first()
                .map(|e| e.at.as_secs_f64())
                .unwrap_or(0.0);
            return Availability::NoGpu(format!("GPU script has no reading before {first} s"));
        };
        let mut what = current.what.clone();
        if let Availability::Available(r) = &mut what {
            // Xid errors of every line passed since the last read, including lines skipped over.
            let mut xids = Vec::new();
            for e in self.entries.get(self.delivered..upto).unwrap_or_default() {
                if let Availability::Available(past) = &e.what {
                    xids.extend(past.xid_errors.iter().copied());
                }
            }
            r.xid_errors = xids;
            if let Some(e) = &self.reload_error {
                r.notes.push(e.clone());
            }
        }
        self.delivered = self.delivered.max(upto);
        what
    }

    fn describe(&self) -> String {
        format!(
            "scripted GPU readings from {} ({} lines; a test option, not real hardware)",
            self.path.display(),
            self.entries.len()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    /// A clock the test moves by hand, in milliseconds.
    fn manual_clock() -> (Arc<AtomicU64>, Box<dyn Fn() -> Duration + Send>) {
        let ms = Arc::new(AtomicU64::new(0));
        let read = ms.clone();
        (
            ms,
            Box::new(move || Duration::from_millis(read.load(Ordering::SeqCst))),
        )
    }

    const TIMELINE: &str = r#"
# a hog arrives, an Xid, then the driver goes
{"at_s": 0, "devices": [{"index": 0, "total_mb": 4096, "used_mb": 1000, "processes": [[4242, 760]]}]}
{"at_s": 5, "devices": [{"total_mb": 4096, "free_mb": 300, "utilization_pct": 97}]}
{"at_s": 5.5, "devices": [{"total_mb": 4096, "free_mb": 300}], "xid_errors": [[0, 79]]}
{"at_s": 6, "devices": [{"total_mb": 4096, "free_mb": 300}]}

{"at_s": 12, "no_gpu": "driver unloaded"}
"#;

    fn used(a: &Availability) -> Option<u64> {
        match a {
            Availability::Available(r) => r.devices.first().map(|d| d.used_mb),
            Availability::NoGpu(_) => None,
        }
    }

    #[test]
    fn scripted_readings_follow_the_clock() {
        let (ms, clock) = manual_clock();
        let mut p = ScriptedProbe::parse(Path::new("t.jsonl"), TIMELINE, clock).expect("parses");
        let a = p.read();
        let Availability::Available(r) = &a else {
            panic!("{a:?}")
        };
        assert_eq!(r.devices[0].name, "Scripted GPU");
        assert_eq!((r.devices[0].used_mb, r.devices[0].free_mb), (1000, 3096));
        assert_eq!(r.devices[0].process_mb(4242), Some(760));
        assert_eq!(r.devices[0].process_mb(1), None);
        let table = [
            (4_999, Some(1000)),
            (5_000, Some(3796)),
            (11_999, Some(3796)),
            (12_000, None),
            (99_000, None),
        ];
        for (t, want) in table {
            ms.store(t, Ordering::SeqCst);
            assert_eq!(used(&p.read()), want, "at {t} ms");
        }
        ms.store(12_000, Ordering::SeqCst);
        assert_eq!(p.read(), Availability::NoGpu("driver unloaded".to_owned()));
    }

    #[test]
    fn xid_errors_are_delivered_once_even_when_their_line_is_skipped_over() {
        let (ms, clock) = manual_clock();
        let mut p = ScriptedProbe::parse(Path::new("t.jsonl"), TIMELINE, clock).expect("parses");
        let xids = |a: Availability| match a {
            Availability::Available(r) => r.xid_errors,
            Availability::NoGpu(_) => vec![],
        };
        assert_eq!(xids(p.read()), vec![]);
        // Jump from 0 s straight past the 5.5 s line.
        ms.store(7_000, Ordering::SeqCst);
        assert_eq!(xids(p.read()), vec![(0, 79)]);
        assert_eq!(xids(p.read()), vec![]);
    }

    #[test]
    fn before_the_first_line_there_is_no_gpu() {
        let (_ms, clock) = manual_clock();
        let mut p = ScriptedProbe::parse(Path::new("t"), r#"{"at_s": 2, "no_gpu": "x"}"#, clock)
            .expect("parses");
        assert!(matches!(p.read(), Availability::NoGpu(why) if why.contains("before 2 s")));
    }

    #[test]
    fn bad_lines_are_errors_naming_the_line() {
        let table: &[(&str, usize, &str)] = &[
            ("{\"at_s\": 0, \"no_gpu\": \"x\"}\nnot json", 2, "expected"),
            ("# c\n\n{\"at_s\": 0}", 3, "needs \"devices\" or \"no_gpu\""),
            (
                r#"{"at_s": 0, "no_gpu": "x", "devices": []}"#,
                1,
                "not both",
            ),
            (r#"{"at_s": -1, "no_gpu": "x"}"#, 1, "non-negative"),
            (
                "{\"at_s\": 5, \"no_gpu\": \"x\"}\n{\"at_s\": 4, \"no_gpu\": \"x\"}",
                2,
                "time order",
            ),
            (
                r#"{"at_s": 0, "devices": [{"total_mb": 100}]}"#,
                1,
                "needs used_mb or free_mb",
            ),
            (
                r#"{"at_s": 0, "devices": [{"total_mb": 100, "used_mb": 200}]}"#,
                1,
                "more memory than",
            ),
            (
                r#"{"at_s": 0, "devices": [{"total_mb": 100, "used_mb": 20, "free_mb": 20}]}"#,
                1,
                "!= total_mb",
            ),
            (
                r#"{"at_s": 0, "devices": [{"total_mb": 9, "used_mb": 1}, {"index": 0, "total_mb": 9, "used_mb": 1}]}"#,
                1,
                "listed twice",
            ),
            (r#"{"at_s": 0, "devices": []}"#, 1, "is empty"),
            (
                r#"{"at_s": 0, "devices": [{"total_mb": 9, "used_mb": 1}], "xid_errors": [[3, 79]]}"#,
                1,
                "device 3",
            ),
            (
                r#"{"at_s": 0, "devices": [{"total_mb": 9, "used_mb": 1, "colour": "red"}]}"#,
                1,
                "unknown field",
            ),
        ];
        for (text, line, needle) in table {
            let (_ms, clock) = manual_clock();
            match ScriptedProbe::parse(Path::new("gpu.jsonl"), text, clock) {
                Err(e @ ScriptError::Line { line: l, .. }) => {
                    assert_eq!(l, *line, "{text}: {e}");
                    let msg = e.to_string();
                    assert!(msg.starts_with(&format!("gpu.jsonl:{line}: ")), "{msg}");
                    assert!(msg.contains(needle), "{msg} should contain {needle}");
                }
                Err(e) => panic!("{text}: wrong error {e}"),
                Ok(_) => panic!("{text}: accepted"),
            }
        }
        let (_ms, clock) = manual_clock();
        assert!(matches!(
            ScriptedProbe::parse(Path::new("e"), "# nothing\n", clock),
            Err(ScriptError::Empty { .. })
        ));
    }

    #[test]
    fn options_choose_the_script_only_when_named_and_report_missing_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("gpu.jsonl");
        std::fs::write(&file, r#"{"at_s": 0, "no_gpu": "scripted"}"#).expect("write");
        let mut p = probe_from_options(Some(&file)).expect("loads");
        assert!(
            p.describe().starts_with("scripted GPU readings"),
            "{}",
            p.describe()
        );
        assert_eq!(p.read(), Availability::NoGpu("scripted".to_owned()));
        let missing = dir.path().join("absent.jsonl");
        let err = probe_from_options(Some(&missing))
            .err()
            .expect("missing file is an error");
        assert!(err.to_string().contains("absent.jsonl"), "{err}");
        let real = probe_from_options(None).expect("nvml never fails");
        assert!(real.describe().starts_with("NVML"), "{}", real.describe());
    }

    /// On a GPU machine: print a reading per second for `SWICTATION_NVML_WATCH_S` seconds
    /// (default 1) as JSON, to see per-process memory and Xid events of a process started beside
    /// it. `SWICTATION_NVML_WATCH_S=10 cargo test -p swictation --lib nvml_watch -- --nocapture`.
    #[test]
    fn nvml_watch() {
        // Prints only when asked (on a GPU machine); elsewhere the other tests cover NoGpu.
        let Some(secs) = std::env::var("SWICTATION_NVML_WATCH_S")
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
        else {
            return;
        };
        let mut p = NvmlProbe::new();
        eprintln!("{}", p.describe());
        for _ in 0..secs {
            let a = p.read();
            eprintln!("{}", serde_json::to_string(&a).unwrap_or_default());
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    /// On a machine without an NVIDIA driver (like the build machine) the real probe says why
    /// and keeps saying it; on a GPU machine it reads every device sensibly. Either way, no panic.
    #[test]
    fn nvml_probe_reports_no_gpu_or_sane_readings() {
        let mut p = NvmlProbe::new();
        // Shown with --nocapture: what the probe made of this machine.
        eprintln!("{}", p.describe());
        for _ in 0..2 {
            match p.read() {
                Availability::NoGpu(why) => {
                    assert!(!why.is_empty());
                    assert_eq!(p.unavailable_reason(), Some(why.as_str()));
                    assert!(p.describe().contains(&why), "{}", p.describe());
                }
                Availability::Available(r) => {
                    assert!(!r.devices.is_empty());
                    for d in &r.devices {
                        assert_eq!(d.used_mb + d.free_mb, d.total_mb, "{d:?}");
                        assert!(d.total_mb > 0, "{d:?}");
                    }
                }
            }
        }
    }
}
