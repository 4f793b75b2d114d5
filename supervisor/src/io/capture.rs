//! Live audio capture through cpal: the microphone side of the daemon.
//!
//! [`start`] runs capture on a dedicated thread and delivers 16 kHz mono audio
//! as [`CaptureEvent::Audio`] chunks on a tokio channel. The layers, and why:
//!
//! * **cpal data callback** (cpal's real-time audio thread): converts the
//!   device's native samples to `f32` in a scratch buffer allocated when the
//!   stream is built, and pushes them into a lock-free SPSC ring ([`rtrb`]).
//!   It never allocates, locks or blocks, because a late callback makes the
//!   driver drop audio. When the ring is full the excess is counted in
//!   [`CaptureStats::overruns`] instead of being silently lost.
//! * **capture thread** (this module's own): every ~10 ms pops the ring,
//!   downmixes and resamples with [`audio::Resampler16k`] and sends the result.
//!   It also supervises the stream: a cpal error, a device that stops delivering
//!   data for [`CaptureConfig::stall_timeout`], or one that delivers audio much
//!   faster than real time (a file or pipe that reached its end) is reported as
//!   [`CaptureEvent::Error`], the stream is dropped, and the device is reopened
//!   with exponential back-off, forever, so the daemon survives unplugged or
//!   restarted microphones.
//! * **helper threads**: opening and closing a device can block indefinitely
//!   (an ALSA `file` plugin waiting for the writer of a FIFO, a driver stuck in
//!   a read), so both happen on short-lived threads that the capture thread
//!   waits on with a bound; [`CaptureHandle::stop`] therefore always returns.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use cpal::{SampleFormat, SizedSample, StreamConfig, SupportedBufferSize, I24, U24};
use rtrb::{Consumer, Producer, RingBuffer};
use tokio::sync::mpsc::UnboundedSender;

use crate::io::audio::{self, Resampler16k};

/// How often the capture thread drains the ring: short enough for low
/// latency, long enough that the thread costs nothing measurable.
const TICK: Duration = Duration::from_millis(10);

/// Smallest audio chunk sent (10 ms at 16 kHz), except at the end of a stream.
const MIN_CHUNK: usize = 160;

/// Largest audio chunk sent (100 ms at 16 kHz); a backlog is split into these.
const MAX_CHUNK: usize = 1_600;

/// Scratch size, in frames, when the device does not say how large its
/// callbacks can be. Larger callbacks are processed in pieces, so this only
/// trades a few loop iterations against memory.
const DEFAULT_SCRATCH_FRAMES: usize = 4_096;

/// Bounds on the scratch size taken from the device's reported maximum period:
/// some ALSA plugins report periods of millions of frames.
const SCRATCH_FRAMES: std::ops::RangeInclusive<usize> = 256..=16_384;

/// How much faster than real time the device may deliver audio, sustained,
/// before it is considered broken. Real devices deliver at their nominal rate
/// (clock drift is well under 1 %); only a non-live source races ahead.
const FLOOD_FACTOR: f64 = 2.0;

/// Burst of audio, in seconds, a device may deliver ahead of real time (sound
/// servers deliver in blocks) before [`FLOOD_FACTOR`] applies.
const FLOOD_BURST_SECS: f64 = 0.5;

/// How long the capture thread waits for a stream to close. A stream whose
/// driver is stuck in a blocking read can take forever; it is then abandoned
/// to its helper thread rather than freezing capture.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// A stream that has delivered audio without error for this long resets the
/// reconnection back-off, so one glitch an hour later starts at `retry_min` again.
const HEALTHY_AFTER: Duration = Duration::from_secs(5);

/// Sample formats the data callback converts, quoted in the error for others.
const SUPPORTED_FORMATS: &str = "I8, U8, I16, U16, I24, U24, I32, U32, F32, F64";

/// One input device as listed by `swictation devices`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct InputDevice {
    /// cpal's stable device id, e.g. `alsa:hw:CARD=0,DEV=0`; accepted by `--device`.
    pub id: String,
    /// Human-readable name (first line of the driver's description).
    pub name: String,
    /// Whether this is the device capture uses when no `--device` is given.
    pub is_default: bool,
    /// The input configurations the device accepts; empty when it could not
    /// be opened to ask (busy, or it disappeared while listing).
    pub configs: Vec<InputConfigRange>,
}

/// One supported input configuration range of a device.
#[derive(Debug, Clone, serde::Serialize)]
pub struct InputConfigRange {
    /// Interleaved channel count.
    pub channels: u16,
    /// Lowest supported sample rate, in Hz.
    pub min_rate: u32,
    /// Highest supported sample rate, in Hz.
    pub max_rate: u32,
    /// Sample format as cpal names it (`I16`, `F32`, ...).
    pub format: String,
}

/// Why capture could not start or a device could not be used.
///
/// Every message names the device and says what the user can do about it.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// There is no input device at all (or the audio system is unavailable).
    #[error(
        "no audio input device: {reason}; connect a microphone (check `arecord -l`) \
         or choose one with --device (list them with `swictation devices`)"
    )]
    NoDevice {
        /// What the audio system reported.
        reason: String,
    },
    /// `--device` matched no device.
    #[error(
        "input device {wanted:?} not found; available: {}; pass one of these names \
         (or a unique part of one) or ids to --device",
        if available.is_empty() { "none".to_owned() } else { available.join(", ") }
    )]
    NotFound {
        /// What the user asked for.
        wanted: String,
        /// The input devices present, as `name [id]`.
        available: Vec<String>,
    },
    /// The device exists but could not be opened or configured.
    #[error(
        "cannot open input device {device}: {reason}; check that it is connected and not \
         held exclusively by another program, or choose another with --device"
    )]
    Open {
        /// The device, as `name [id]`.
        device: String,
        /// What failed.
        reason: String,
    },
    /// A running stream failed, or capture could not be started.
    #[error("audio capture on {device} failed: {reason}; capture reconnects automatically when the device is back")]
    Stream {
        /// The device, as `name [id]`.
        device: String,
        /// What failed.
        reason: String,
    },
}

/// Counters the audio callback updates without locking (atomics), readable any time.
///
/// All counters are cumulative over every stream the capture has opened.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct CaptureStats {
    /// Data callbacks received.
    pub callbacks: u64,
    /// Frames received from the device, at its native rate (including dropped ones).
    pub frames_in: u64,
    /// Samples dropped because the ring was full (the capture thread fell behind).
    pub overruns: u64,
    /// Longest data callback, in microseconds (rounded up, so any callback counts).
    pub max_callback_us: u64,
    /// Longest data callback, in nanoseconds.
    pub max_callback_ns: u64,
    /// Errors seen: cpal stream errors (including xruns), stalls, failed opens.
    pub errors: u64,
    /// The most recent error, if any.
    pub last_error: Option<String>,
}

/// Events from the capture supervisor.
#[derive(Debug, Clone)]
pub enum CaptureEvent {
    /// 16 kHz mono samples in `[-1, 1]`, about 10-100 ms per chunk, in order.
    Audio(Vec<f32>),
    /// A stream is open and running (sent again after every reconnection).
    Opened {
        /// The device, as `name [id]`.
        device: String,
        /// Native sample rate, in Hz.
        rate: u32,
        /// Native channel count.
        channels: u16,
        /// Native sample format (`I16`, `F32`, ...).
        format: String,
    },
    /// The device vanished, the stream failed, or no data came for
    /// `stall_timeout`; capture is retrying. The text says which.
    Error(String),
}

/// How to capture.
#[derive(Debug, Clone)]
pub struct CaptureConfig {
    /// Device name or id (see [`list_devices`]); `None` means the system default.
    pub device: Option<String>,
    /// A stream that delivers nothing for this long counts as failed (2 s).
    pub stall_timeout: Duration,
    /// First reconnection delay (250 ms); doubles after each failure.
    pub retry_min: Duration,
    /// Longest reconnection delay (5 s).
    pub retry_max: Duration,
    /// Ring buffer between the audio callback and the capture thread, in
    /// seconds of native audio (2.0): how long the capture thread may stall
    /// before samples are dropped.
    pub ring_seconds: f32,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        Self {
            device: None,
            stall_timeout: Duration::from_secs(2),
            retry_min: Duration::from_millis(250),
            retry_max: Duration::from_secs(5),
            ring_seconds: 2.0,
        }
    }
}

/// Lists the input devices with their supported configurations.
///
/// Asking a device for its configurations opens it; a device that cannot be
/// opened right now (busy, vanished) is listed with no configurations rather
/// than failing the whole listing. Note that an ALSA `file` plugin reading a
/// FIFO blocks until the FIFO has a writer.
pub fn list_devices() -> Result<Vec<InputDevice>, CaptureError> {
    let host = cpal::default_host();
    let default_id = host
        .default_input_device()
        .and_then(|d| d.id().ok())
        .map(|id| id.to_string());
    let mut out = Vec::new();
    for (device, info) in enumerate_inputs(&host)? {
        let configs = device
            .supported_input_configs()
            .map(|ranges| {
                ranges
                    .map(|r| InputConfigRange {
                        channels: r.channels(),
                        min_rate: r.min_sample_rate(),
                        max_rate: r.max_sample_rate(),
                        format: format!("{:?}", r.sample_format()),
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.push(InputDevice {
            is_default: default_id.as_deref() == Some(info.id.as_str()),
            id: info.id,
            name: info.name,
            configs,
        });
    }
    // ALSA lists "default" only when its configuration carries a hint; make
    // sure the device used without --device always appears.
    if let (Some(id), Some(device)) = (&default_id, host.default_input_device()) {
        if !out.iter().any(|d| &d.id == id) {
            let name = device_name(&device, id);
            out.insert(
                0,
                InputDevice {
                    id: id.clone(),
                    name,
                    is_default: true,
                    configs: Vec::new(),
                },
            );
        }
    }
    Ok(out)
}

/// Identity of a device, as shown to users and matched by `--device`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct DeviceInfo {
    /// `host:pcm` id.
    id: String,
    /// Human-readable name.
    name: String,
}

impl DeviceInfo {
    /// `name [id]`, the form used in events and errors.
    fn label(&self) -> String {
        format!("{} [{}]", self.name, self.id)
    }
}

/// A cpal error as a clause of our messages: cpal's texts end with a period,
/// ours continue after the reason.
fn reason(e: &cpal::Error) -> String {
    e.to_string().trim_end_matches('.').to_owned()
}

/// The device's display name, falling back to its id.
fn device_name(device: &cpal::Device, id: &str) -> String {
    device
        .description()
        .map(|d| d.name().to_owned())
        .unwrap_or_else(|_| id.to_owned())
}

/// Input devices with their ids and names. Does not open any device.
fn enumerate_inputs(host: &cpal::Host) -> Result<Vec<(cpal::Device, DeviceInfo)>, CaptureError> {
    let devices = host.input_devices().map_err(|e| CaptureError::NoDevice {
        reason: format!("cannot list audio devices: {}", reason(&e)),
    })?;
    Ok(devices
        .filter_map(|device| {
            // A device whose id cannot be read has just vanished: skip it.
            let id = device.id().ok()?.to_string();
            let name = device_name(&device, &id);
            Some((device, DeviceInfo { id, name }))
        })
        .collect())
}

/// Picks the device `wanted` names among `devices`: the id exactly, then the
/// id without its `host:` prefix (e.g. `hw:CARD=0,DEV=0`), then the name
/// exactly, then the first name containing `wanted` case-insensitively.
fn match_device(wanted: &str, devices: &[DeviceInfo]) -> Option<usize> {
    let wanted = wanted.trim();
    if wanted.is_empty() {
        return None;
    }
    let pcm_part = |id: &str| id.split_once(':').map_or(id, |(_, rest)| rest).to_owned();
    let needle = wanted.to_lowercase();
    devices
        .iter()
        .position(|d| d.id == wanted)
        .or_else(|| devices.iter().position(|d| pcm_part(&d.id) == wanted))
        .or_else(|| devices.iter().position(|d| d.name == wanted))
        .or_else(|| {
            devices
                .iter()
                .position(|d| d.name.to_lowercase().contains(&needle))
        })
}

/// Finds the device to capture from: `wanted` (see [`match_device`]) or the default.
fn resolve_device(
    host: &cpal::Host,
    wanted: Option<&str>,
) -> Result<(cpal::Device, DeviceInfo), CaptureError> {
    let Some(wanted) = wanted else {
        let device = host
            .default_input_device()
            .ok_or_else(|| CaptureError::NoDevice {
                reason: format!(
                    "the {} audio host reports no default input",
                    host.id().name()
                ),
            })?;
        let id = device
            .id()
            .map(|id| id.to_string())
            .map_err(|e| CaptureError::NoDevice {
                reason: format!("the default input device is not available: {}", reason(&e)),
            })?;
        // The enumerated entry for the same id usually has the more telling
        // name ("default" is "Default Audio Device" when asked directly).
        let name = enumerate_inputs(host)
            .ok()
            .and_then(|list| list.into_iter().find(|(_, info)| info.id == id))
            .map_or_else(|| device_name(&device, &id), |(_, info)| info.name);
        return Ok((device, DeviceInfo { id, name }));
    };
    let mut devices = enumerate_inputs(host)?;
    let infos: Vec<DeviceInfo> = devices.iter().map(|(_, info)| info.clone()).collect();
    match match_device(wanted, &infos) {
        Some(i) => Ok(devices.swap_remove(i)),
        None => Err(CaptureError::NotFound {
            wanted: wanted.to_owned(),
            available: infos.iter().map(DeviceInfo::label).collect(),
        }),
    }
}

/// A native sample type the data callback can convert to `f32` in `[-1, 1]`.
trait CaptureSample: SizedSample + Send + 'static {
    /// Full-scale conversion: the type's range maps onto `[-1, 1)`.
    fn to_f32(self) -> f32;
}

impl CaptureSample for i8 {
    fn to_f32(self) -> f32 {
        f32::from(self) / 128.0
    }
}
impl CaptureSample for u8 {
    fn to_f32(self) -> f32 {
        (f32::from(self) - 128.0) / 128.0
    }
}
impl CaptureSample for i16 {
    fn to_f32(self) -> f32 {
        f32::from(self) / 32_768.0
    }
}
impl CaptureSample for u16 {
    fn to_f32(self) -> f32 {
        (f32::from(self) - 32_768.0) / 32_768.0
    }
}
impl CaptureSample for I24 {
    fn to_f32(self) -> f32 {
        self.inner() as f32 / 8_388_608.0
    }
}
impl CaptureSample for U24 {
    fn to_f32(self) -> f32 {
        (self.inner() as f32 - 8_388_608.0) / 8_388_608.0
    }
}
impl CaptureSample for i32 {
    fn to_f32(self) -> f32 {
        // Through f64: f32 cannot hold 32-bit integers exactly.
        (f64::from(self) / 2_147_483_648.0) as f32
    }
}
impl CaptureSample for u32 {
    fn to_f32(self) -> f32 {
        ((f64::from(self) - 2_147_483_648.0) / 2_147_483_648.0) as f32
    }
}
impl CaptureSample for f32 {
    fn to_f32(self) -> f32 {
        self
    }
}
impl CaptureSample for f64 {
    fn to_f32(self) -> f32 {
        self as f32
    }
}

/// Converts native samples into `out` (same length). No allocation: this runs
/// inside the audio callback.
fn convert_into<T: CaptureSample>(input: &[T], out: &mut [f32]) {
    for (o, &s) in out.iter_mut().zip(input) {
        *o = s.to_f32();
    }
}

/// State shared by the handle, the capture thread and every stream's callbacks.
#[derive(Debug, Default)]
struct Shared {
    callbacks: AtomicU64,
    frames_in: AtomicU64,
    overruns: AtomicU64,
    /// Longest data callback, in nanoseconds.
    max_callback_ns: AtomicU64,
    errors: AtomicU64,
    /// Touched only when an error happens, never by the data callback.
    last_error: Mutex<Option<String>>,
}

impl Shared {
    /// Counts an error and remembers its text.
    fn record_error(&self, text: &str) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        *self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(text.to_owned());
    }

    fn snapshot(&self) -> CaptureStats {
        let max_callback_ns = self.max_callback_ns.load(Ordering::Relaxed);
        CaptureStats {
            callbacks: self.callbacks.load(Ordering::Relaxed),
            frames_in: self.frames_in.load(Ordering::Relaxed),
            overruns: self.overruns.load(Ordering::Relaxed),
            max_callback_us: max_callback_ns.div_ceil(1_000),
            max_callback_ns,
            errors: self.errors.load(Ordering::Relaxed),
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        }
    }
}

/// Per-stream signals from cpal's threads to the capture thread. Per stream, so
/// that a late error from a stream being closed cannot fail its successor.
#[derive(Debug, Default)]
struct StreamSignals {
    /// Frames delivered by this stream, for stall and flood detection.
    frames: AtomicU64,
    /// Set by the error callback for errors the stream does not recover from.
    failed: AtomicBool,
    /// Why it failed.
    failure: Mutex<Option<String>>,
}

/// Whether cpal recovers from an error by itself. An xrun is recovered by the
/// backend (prepare + restart), a route change keeps the stream running, and a
/// refused real-time priority only costs robustness; anything else means the
/// stream must be rebuilt.
fn is_recoverable(kind: cpal::ErrorKind) -> bool {
    matches!(
        kind,
        cpal::ErrorKind::Xrun | cpal::ErrorKind::DeviceChanged | cpal::ErrorKind::RealtimeDenied
    )
}

/// Builds the real-time data callback for sample type `T`.
fn data_callback<T: CaptureSample>(
    mut producer: Producer<f32>,
    channels: usize,
    scratch_frames: usize,
    shared: Arc<Shared>,
    signals: Arc<StreamSignals>,
) -> impl FnMut(&[T], &cpal::InputCallbackInfo) + Send + 'static {
    let channels = channels.max(1);
    // Allocated here, once, when the stream is built: never in the callback.
    let mut scratch = vec![0.0f32; scratch_frames.max(1) * channels];
    move |data: &[T], _info: &cpal::InputCallbackInfo| {
        let started = Instant::now();
        let mut dropped = 0usize;
        // scratch.len() is a whole number of frames, so every piece is too.
        for piece in data.chunks(scratch.len()) {
            let out = &mut scratch[..piece.len()];
            convert_into(piece, out);
            // Push whole frames only, so that a full ring never splits a frame
            // and shifts the channel interleaving of everything after it.
            let room = producer.slots().min(out.len());
            let room = room - room % channels;
            if room > 0 && producer.push_entire_slice(&out[..room]).is_err() {
                // Cannot happen (we are the only producer and checked the
                // room), but if it did the samples are lost: count them.
                dropped += room;
            }
            dropped += out.len() - room;
        }
        let frames = (data.len() / channels) as u64;
        signals.frames.fetch_add(frames, Ordering::Relaxed);
        shared.frames_in.fetch_add(frames, Ordering::Relaxed);
        shared.callbacks.fetch_add(1, Ordering::Relaxed);
        if dropped > 0 {
            shared.overruns.fetch_add(dropped as u64, Ordering::Relaxed);
        }
        let ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        shared.max_callback_ns.fetch_max(ns, Ordering::Relaxed);
    }
}

/// Builds the error callback: counts every error, flags the fatal ones.
fn error_callback(
    shared: Arc<Shared>,
    signals: Arc<StreamSignals>,
) -> impl FnMut(cpal::Error) + Send + 'static {
    move |err: cpal::Error| {
        let text = format!("{} ({:?})", reason(&err), err.kind());
        shared.record_error(&text);
        if !is_recoverable(err.kind()) {
            *signals
                .failure
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(text);
            signals.failed.store(true, Ordering::Release);
        }
    }
}

/// An open, playing stream and what the capture thread needs to drain it.
struct Opened {
    stream: cpal::Stream,
    consumer: Consumer<f32>,
    signals: Arc<StreamSignals>,
    device: DeviceInfo,
    rate: u32,
    channels: u16,
    format: SampleFormat,
}

/// Opens the device in its default input configuration and starts the stream.
/// Runs on a helper thread: it may block for as long as the driver does.
fn open_stream(
    wanted: Option<&str>,
    ring_seconds: f32,
    poll_timeout: Duration,
    shared: &Arc<Shared>,
) -> Result<Opened, CaptureError> {
    let host = cpal::default_host();
    let (device, info) = resolve_device(&host, wanted)?;
    let open_err = |reason: String| CaptureError::Open {
        device: info.label(),
        reason,
    };
    let supported = device.default_input_config().map_err(|e| {
        open_err(format!(
            "cannot read its default input configuration: {}",
            reason(&e)
        ))
    })?;
    let (rate, channels, format) = (
        supported.sample_rate(),
        supported.channels(),
        supported.sample_format(),
    );
    if channels == 0 || !audio::SOURCE_RATES.contains(&rate) {
        return Err(open_err(format!(
            "its default configuration ({channels} channels at {rate} Hz) is not usable \
             (supported: 1 or more channels at {}-{} Hz)",
            audio::SOURCE_RATES.start(),
            audio::SOURCE_RATES.end()
        )));
    }
    let scratch_frames = match supported.buffer_size() {
        SupportedBufferSize::Range { max, .. } => usize::try_from(*max)
            .unwrap_or(usize::MAX)
            .clamp(*SCRATCH_FRAMES.start(), *SCRATCH_FRAMES.end()),
        SupportedBufferSize::Unknown => DEFAULT_SCRATCH_FRAMES,
    };
    let ring_frames = (f64::from(rate) * f64::from(ring_seconds.max(0.05))).ceil() as usize;
    let (producer, consumer) = RingBuffer::new(ring_frames.max(1) * usize::from(channels));
    let config: StreamConfig = supported.config();
    let signals = Arc::new(StreamSignals::default());

    macro_rules! build {
        ($t:ty) => {
            device.build_input_stream::<$t, _, _>(
                config,
                data_callback::<$t>(
                    producer,
                    usize::from(channels),
                    scratch_frames,
                    Arc::clone(shared),
                    Arc::clone(&signals),
                ),
                error_callback(Arc::clone(shared), Arc::clone(&signals)),
                Some(poll_timeout),
            )
        };
    }
    let built = match format {
        SampleFormat::I8 => build!(i8),
        SampleFormat::U8 => build!(u8),
        SampleFormat::I16 => build!(i16),
        SampleFormat::U16 => build!(u16),
        SampleFormat::I24 => build!(I24),
        SampleFormat::U24 => build!(U24),
        SampleFormat::I32 => build!(i32),
        SampleFormat::U32 => build!(u32),
        SampleFormat::F32 => build!(f32),
        SampleFormat::F64 => build!(f64),
        other => {
            return Err(open_err(format!(
            "its default sample format {other:?} is not supported (supported: {SUPPORTED_FORMATS})"
        )))
        }
    };
    let stream = built.map_err(|e| {
        open_err(format!(
            "cannot start a {format:?} {channels}-channel {rate} Hz stream: {}",
            reason(&e)
        ))
    })?;
    stream.play().map_err(|e| CaptureError::Stream {
        device: info.label(),
        reason: format!("the stream would not start: {}", reason(&e)),
    })?;
    Ok(Opened {
        stream,
        consumer,
        signals,
        device: info,
        rate,
        channels,
        format,
    })
}

/// Exponential back-off between reconnection attempts.
#[derive(Debug, Clone)]
struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// A back-off from `min` doubling up to `max`. A zero `min` would retry in a
    /// tight loop, so it is raised to one tick; `max` is at least `min`.
    fn new(min: Duration, max: Duration) -> Self {
        let min = min.max(TICK);
        let max = max.max(min);
        Self {
            min,
            max,
            next: min,
        }
    }

    /// The delay before the next attempt; each call doubles the following one.
    fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        delay
    }

    /// Starts again from `min`.
    fn reset(&mut self) {
        self.next = self.min;
    }
}

/// Watches a running stream for the two failures cpal does not report: no data
/// at all (stall) and data much faster than real time (a non-live source, such
/// as an ALSA `file` plugin past the end of its input, which then returns stale
/// buffers as fast as it is asked).
#[derive(Debug, Clone)]
struct Monitor {
    /// Nominal frames per second.
    rate: f64,
    stall_timeout: Duration,
    /// Frames counted at the previous check.
    frames: u64,
    /// When frames last arrived (or the stream opened).
    last_data: Instant,
    /// When the previous check ran.
    last_check: Instant,
    /// Token bucket of frames the device may still deliver ahead of real time:
    /// refilled at `FLOOD_FACTOR` times the nominal rate, capped at
    /// `FLOOD_BURST_SECS`, emptied by delivered frames. Negative means flood.
    credit: f64,
}

impl Monitor {
    fn new(rate: u32, stall_timeout: Duration, now: Instant) -> Self {
        let rate = f64::from(rate.max(1));
        Self {
            rate,
            stall_timeout,
            frames: 0,
            last_data: now,
            last_check: now,
            credit: rate * FLOOD_BURST_SECS,
        }
    }

    /// Checks the stream's cumulative frame count at `now`; `Err` says why the
    /// stream must be considered failed.
    fn check(&mut self, frames: u64, now: Instant) -> Result<(), String> {
        let new = frames.saturating_sub(self.frames) as f64;
        self.frames = frames;
        let dt = now.saturating_duration_since(self.last_check).as_secs_f64();
        self.last_check = now;
        if new > 0.0 {
            self.last_data = now;
        }
        let cap = self.rate * FLOOD_BURST_SECS;
        self.credit = (self.credit + dt * self.rate * FLOOD_FACTOR).min(cap) - new;
        if self.credit < 0.0 {
            return Err(format!(
                "the device delivered audio more than {FLOOD_FACTOR}x faster than real time, \
                 so it is not a live source (a file or pipe that reached its end?)"
            ));
        }
        let silent = now.saturating_duration_since(self.last_data);
        if silent >= self.stall_timeout {
            return Err(format!(
                "no audio from the device for {:.1} s (it stopped delivering data)",
                silent.as_secs_f64()
            ));
        }
        Ok(())
    }
}

/// A running stream on the capture thread.
struct Running {
    opened: Opened,
    resampler: Resampler16k,
    monitor: Monitor,
    since: Instant,
}

/// What the capture thread is doing.
enum Phase {
    /// Waiting out the back-off before the next open attempt.
    Waiting(Instant),
    /// A helper thread is opening the device.
    Opening(mpsc::Receiver<Result<Opened, CaptureError>>),
    /// Capturing.
    Running(Box<Running>),
    /// Paused by the user: no stream, nothing to retry.
    Paused,
}

/// Commands from the handle to the capture thread.
#[derive(Debug, Clone, Copy)]
enum Command {
    Pause,
    Resume,
    Stop,
}

/// The capture thread's state.
struct Capture {
    cfg: CaptureConfig,
    events: UnboundedSender<CaptureEvent>,
    shared: Arc<Shared>,
    backoff: Backoff,
    /// 16 kHz samples waiting to be sent (less than `MIN_CHUNK` of them).
    pending: Vec<f32>,
    /// Samples popped from the ring this tick.
    popped: Vec<f32>,
    /// False once the receiver is gone: nobody listens, so the thread ends.
    listening: bool,
}

impl Capture {
    fn send(&mut self, event: CaptureEvent) {
        if self.events.send(event).is_err() {
            self.listening = false;
        }
    }

    /// Reports a failure: counted in the stats and sent as an event.
    fn fail(&mut self, text: String) {
        self.shared.record_error(&text);
        self.send(CaptureEvent::Error(text));
    }

    /// Sends resampled audio in chunks of `MIN_CHUNK..=MAX_CHUNK` samples
    /// (everything, however short, when `all`).
    fn emit(&mut self, samples: Vec<f32>, all: bool) {
        self.pending.extend(samples);
        while self.pending.len() >= MAX_CHUNK {
            let rest = self.pending.split_off(MAX_CHUNK);
            let chunk = std::mem::replace(&mut self.pending, rest);
            self.send(CaptureEvent::Audio(chunk));
        }
        if self.pending.len() >= MIN_CHUNK || (all && !self.pending.is_empty()) {
            let chunk = std::mem::take(&mut self.pending);
            self.send(CaptureEvent::Audio(chunk));
        }
    }

    /// Moves everything in the ring into `self.popped`.
    fn drain_ring(&mut self, consumer: &mut Consumer<f32>) {
        self.popped.clear();
        let n = consumer.slots();
        if let Ok(chunk) = consumer.read_chunk(n) {
            let (a, b) = chunk.as_slices();
            self.popped.extend_from_slice(a);
            self.popped.extend_from_slice(b);
            chunk.commit_all();
        }
    }

    /// Starts opening the device on a helper thread.
    fn begin_open(&mut self) -> Phase {
        let (tx, rx) = mpsc::sync_channel(1);
        let wanted = self.cfg.device.clone();
        let ring_seconds = self.cfg.ring_seconds;
        let poll_timeout = self.cfg.stall_timeout;
        let shared = Arc::clone(&self.shared);
        let spawned = thread::Builder::new()
            .name("capture-open".into())
            .spawn(move || {
                let result = open_stream(wanted.as_deref(), ring_seconds, poll_timeout, &shared);
                // If the capture thread gave up waiting, the stream is dropped here.
                let _ = tx.send(result);
            });
        match spawned {
            Ok(_) => Phase::Opening(rx),
            Err(e) => {
                self.fail(format!(
                    "cannot start a thread to open the audio device: {e}"
                ));
                self.retry_later()
            }
        }
    }

    /// Schedules the next open attempt after the back-off delay.
    fn retry_later(&mut self) -> Phase {
        Phase::Waiting(Instant::now() + self.backoff.next_delay())
    }

    /// A stream has opened: announce it and start draining it.
    fn started(&mut self, opened: Opened) -> Phase {
        let resampler = match Resampler16k::new(opened.rate, opened.channels) {
            Ok(r) => r,
            Err(e) => {
                let device = opened.device.label();
                close_stream(opened.stream, &self.shared);
                self.fail(
                    CaptureError::Open {
                        device,
                        reason: e.to_string(),
                    }
                    .to_string(),
                );
                return self.retry_later();
            }
        };
        self.send(CaptureEvent::Opened {
            device: opened.device.label(),
            rate: opened.rate,
            channels: opened.channels,
            format: format!("{:?}", opened.format),
        });
        let now = Instant::now();
        Phase::Running(Box::new(Running {
            monitor: Monitor::new(opened.rate, self.cfg.stall_timeout, now),
            opened,
            resampler,
            since: now,
        }))
    }

    /// One tick of a running stream: drain, check health, forward audio.
    /// Returns the failure text if the stream must be closed.
    fn pump(&mut self, run: &mut Running) -> Result<(), String> {
        // Drain before reading the frame counter: the callback counts frames
        // after pushing them, so the check below covers everything popped
        // (and flood audio is discarded rather than forwarded).
        self.drain_ring(&mut run.opened.consumer);
        if run.opened.signals.failed.load(Ordering::Acquire) {
            let why = run
                .opened
                .signals
                .failure
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
                .unwrap_or_else(|| "stream error".to_owned());
            // Audio captured before the error is genuine: keep it.
            let popped = std::mem::take(&mut self.popped);
            let out = run.resampler.push(&popped);
            self.popped = popped;
            self.emit(out, false);
            return Err(why);
        }
        let now = Instant::now();
        let frames = run.opened.signals.frames.load(Ordering::Relaxed);
        if let Err(why) = run.monitor.check(frames, now) {
            self.popped.clear();
            return Err(why);
        }
        if now.saturating_duration_since(run.since) >= HEALTHY_AFTER {
            self.backoff.reset();
        }
        if !self.popped.is_empty() {
            let popped = std::mem::take(&mut self.popped);
            let out = run.resampler.push(&popped);
            self.popped = popped;
            self.emit(out, false);
        }
        Ok(())
    }

    /// Ends a stream: forwards its buffered audio (unless `discard`), then closes it.
    fn finish(&mut self, run: Running, discard: bool) {
        let Running {
            mut opened,
            mut resampler,
            ..
        } = run;
        if discard {
            self.pending.clear();
        } else {
            self.drain_ring(&mut opened.consumer);
            let popped = std::mem::take(&mut self.popped);
            let mut out = resampler.push(&popped);
            self.popped = popped;
            out.extend(resampler.flush());
            self.emit(out, true);
        }
        close_stream(opened.stream, &self.shared);
    }

    /// The capture thread's main loop.
    fn run(mut self, commands: mpsc::Receiver<Command>) {
        let mut phase = self.begin_open();
        while self.listening {
            let command = match commands.recv_timeout(TICK) {
                Ok(c) => Some(c),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                // The handle is gone without stop(): same as stop.
                Err(mpsc::RecvTimeoutError::Disconnected) => Some(Command::Stop),
            };
            phase = match (command, phase) {
                (Some(Command::Stop), phase) => {
                    if let Phase::Running(run) = phase {
                        self.finish(*run, false);
                    }
                    return;
                }
                (Some(Command::Pause), Phase::Running(run)) => {
                    self.finish(*run, false);
                    Phase::Paused
                }
                // Dropping an Opening receiver abandons the attempt: its
                // helper thread drops the stream if one ever opens.
                (Some(Command::Pause), _) => Phase::Paused,
                (Some(Command::Resume), Phase::Paused) => {
                    self.backoff.reset();
                    self.begin_open()
                }
                (_, phase) => self.advance(phase),
            };
        }
        if let Phase::Running(run) = phase {
            self.finish(*run, true);
        }
    }

    /// Moves a phase forward by one tick.
    fn advance(&mut self, phase: Phase) -> Phase {
        match phase {
            Phase::Waiting(at) if Instant::now() >= at => self.begin_open(),
            Phase::Opening(rx) => match rx.try_recv() {
                Ok(Ok(opened)) => self.started(opened),
                Ok(Err(e)) => {
                    self.fail(e.to_string());
                    self.retry_later()
                }
                Err(mpsc::TryRecvError::Empty) => Phase::Opening(rx),
                Err(mpsc::TryRecvError::Disconnected) => {
                    self.fail("opening the audio device panicked".to_owned());
                    self.retry_later()
                }
            },
            Phase::Running(mut run) => match self.pump(&mut run) {
                Ok(()) => Phase::Running(run),
                Err(why) => {
                    let device = run.opened.device.label();
                    let flood = why.contains("faster than real time");
                    self.finish(*run, flood);
                    self.fail(
                        CaptureError::Stream {
                            device,
                            reason: why,
                        }
                        .to_string(),
                    );
                    self.retry_later()
                }
            },
            other => other,
        }
    }
}

/// Drops a stream on a helper thread, waiting at most [`CLOSE_WAIT`]: a
/// driver stuck in a blocking read would otherwise freeze the capture thread.
fn close_stream(stream: cpal::Stream, shared: &Shared) {
    let (tx, rx) = mpsc::channel();
    let spawned = thread::Builder::new()
        .name("capture-close".into())
        .spawn(move || {
            drop(stream);
            let _ = tx.send(());
        });
    // If the thread could not be spawned, the closure (and the stream in it)
    // has already been dropped here, synchronously.
    if spawned.is_ok() && rx.recv_timeout(CLOSE_WAIT).is_err() {
        shared.record_error(&format!(
            "the previous audio stream did not close within {} s; it was abandoned",
            CLOSE_WAIT.as_secs_f32()
        ));
    }
}

/// Handle to a running capture; see [`start`].
#[derive(Debug)]
pub struct CaptureHandle {
    commands: mpsc::Sender<Command>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// Start capturing on a dedicated thread. Returns a handle; audio and events arrive on `events`.
///
/// The device is resolved now, so a `--device` that matches nothing fails
/// here with [`CaptureError::NotFound`] (and a system without any input with
/// [`CaptureError::NoDevice`]). Opening it happens on the capture thread:
/// success is announced by [`CaptureEvent::Opened`], failure by
/// [`CaptureEvent::Error`] followed by retries, so a microphone that is busy
/// or unplugged at start-up does not stop the daemon.
pub fn start(
    cfg: CaptureConfig,
    events: UnboundedSender<CaptureEvent>,
) -> Result<CaptureHandle, CaptureError> {
    let host = cpal::default_host();
    let (_, info) = resolve_device(&host, cfg.device.as_deref())?;
    drop(host);
    let shared = Arc::new(Shared::default());
    let (tx, rx) = mpsc::channel();
    let capture = Capture {
        backoff: Backoff::new(cfg.retry_min, cfg.retry_max),
        cfg,
        events,
        shared: Arc::clone(&shared),
        pending: Vec::new(),
        popped: Vec::new(),
        listening: true,
    };
    let thread = thread::Builder::new()
        .name("capture".into())
        .spawn(move || capture.run(rx))
        .map_err(|e| CaptureError::Stream {
            device: info.label(),
            reason: format!("cannot start the capture thread: {e}"),
        })?;
    Ok(CaptureHandle {
        commands: tx,
        shared,
        thread: Some(thread),
    })
}

impl CaptureHandle {
    /// A snapshot of the capture counters.
    pub fn stats(&self) -> CaptureStats {
        self.shared.snapshot()
    }

    /// Stops the stream and releases the device until [`resume`](Self::resume).
    /// Audio already captured is still delivered.
    pub fn pause(&self) {
        // A send error means the thread has ended; there is nothing to pause.
        let _ = self.commands.send(Command::Pause);
    }

    /// Reopens the device after [`pause`](Self::pause).
    pub fn resume(&self) {
        let _ = self.commands.send(Command::Resume);
    }

    /// Ends capture: closes the stream, delivers the remaining audio, and joins
    /// the capture thread. Returns within about a second even if the driver hangs.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let _ = self.commands.send(Command::Stop);
        if let Some(thread) = self.thread.take() {
            // A panic on the capture thread has already been reported by the
            // panic hook; there is nothing more to do with it here.
            let _ = thread.join();
        }
    }
}

impl Drop for CaptureHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_formats_map_full_scale_to_unit_range() {
        assert_eq!(0i16.to_f32(), 0.0);
        assert_eq!(i16::MIN.to_f32(), -1.0);
        assert_eq!(16_384i16.to_f32(), 0.5);
        assert!((i16::MAX.to_f32() - 1.0).abs() < 1e-4);
        assert_eq!(32_768u16.to_f32(), 0.0);
        assert_eq!(0u16.to_f32(), -1.0);
        assert_eq!(49_152u16.to_f32(), 0.5);
        assert_eq!(0i32.to_f32(), 0.0);
        assert_eq!(i32::MIN.to_f32(), -1.0);
        assert_eq!((1i32 << 30).to_f32(), 0.5);
        assert!((i32::MAX.to_f32() - 1.0).abs() < 1e-6);
        assert_eq!((1u32 << 31).to_f32(), 0.0);
        assert_eq!(0u32.to_f32(), -1.0);
        assert_eq!(i8::MIN.to_f32(), -1.0);
        assert_eq!(128u8.to_f32(), 0.0);
        assert_eq!(I24::new(-(1 << 23)).map(CaptureSample::to_f32), Some(-1.0));
        assert_eq!(I24::new(1 << 22).map(CaptureSample::to_f32), Some(0.5));
        assert_eq!(U24::new(1 << 23).map(CaptureSample::to_f32), Some(0.0));
        assert_eq!(0.25f32.to_f32(), 0.25);
        assert_eq!((-0.75f64).to_f32(), -0.75);
    }

    #[test]
    fn same_signal_in_every_format_converts_alike() {
        let reference: Vec<f32> = (0..64).map(|i| ((i as f32) * 0.3).sin() * 0.9).collect();
        let as_i16: Vec<i16> = reference.iter().map(|&s| (s * 32_768.0) as i16).collect();
        let as_u16: Vec<u16> = as_i16
            .iter()
            .map(|&s| (i32::from(s) + 32_768) as u16)
            .collect();
        let as_i32: Vec<i32> = reference
            .iter()
            .map(|&s| (f64::from(s) * 2_147_483_648.0) as i32)
            .collect();
        let mut out = vec![0.0; reference.len()];
        for (name, converted) in [
            ("i16", {
                convert_into(&as_i16, &mut out);
                out.clone()
            }),
            ("u16", {
                convert_into(&as_u16, &mut out);
                out.clone()
            }),
            ("i32", {
                convert_into(&as_i32, &mut out);
                out.clone()
            }),
            ("f32", {
                convert_into(&reference, &mut out);
                out.clone()
            }),
        ] {
            for (a, b) in converted.iter().zip(&reference) {
                assert!((a - b).abs() < 1.0 / 16_000.0, "{name}: {a} vs {b}");
            }
        }
    }

    fn infos(list: &[(&str, &str)]) -> Vec<DeviceInfo> {
        list.iter()
            .map(|(id, name)| DeviceInfo {
                id: (*id).to_owned(),
                name: (*name).to_owned(),
            })
            .collect()
    }

    #[test]
    fn device_matching_prefers_ids_then_exact_names_then_substrings() {
        let devices = infos(&[
            (
                "alsa:default",
                "Default ALSA Output (currently PipeWire Media Server)",
            ),
            ("alsa:hw:CARD=USB,DEV=0", "USB Audio, USB Audio"),
            ("alsa:plughw:CARD=USB,DEV=0", "USB Audio, USB Audio"),
            ("alsa:pipewire", "PipeWire Sound Server"),
            ("alsa:usb", "usb"),
        ]);
        assert_eq!(
            match_device("alsa:plughw:CARD=USB,DEV=0", &devices),
            Some(2)
        );
        assert_eq!(match_device("hw:CARD=USB,DEV=0", &devices), Some(1));
        assert_eq!(match_device("default", &devices), Some(0));
        // An exact name beats an earlier substring match ("usb" is in "USB Audio").
        assert_eq!(match_device("usb", &devices), Some(4));
        assert_eq!(match_device("USB Audio, USB Audio", &devices), Some(1));
        assert_eq!(match_device("pipewire sound", &devices), Some(3));
        assert_eq!(match_device("  PIPEWIRE  ", &devices), Some(0));
        assert_eq!(match_device("bluetooth", &devices), None);
        assert_eq!(match_device("", &devices), None);
        assert_eq!(match_device("x", &[]), None);
    }

    #[test]
    fn not_found_lists_what_is_available() {
        let err = CaptureError::NotFound {
            wanted: "blue yeti".into(),
            available: vec!["USB Audio [alsa:hw:CARD=USB,DEV=0]".into()],
        }
        .to_string();
        assert!(
            err.contains("\"blue yeti\"") && err.contains("alsa:hw:CARD=USB,DEV=0"),
            "{err}"
        );
        assert!(err.contains("--device"), "{err}");
        let none = CaptureError::NotFound {
            wanted: "x".into(),
            available: vec![],
        };
        assert!(none.to_string().contains("available: none"));
    }

    #[test]
    fn backoff_doubles_up_to_the_maximum_and_resets() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(250), Duration::from_secs(5));
        let seq: Vec<Duration> = (0..8).map(|_| b.next_delay()).collect();
        assert_eq!(
            seq,
            [
                ms(250),
                ms(500),
                ms(1000),
                ms(2000),
                ms(4000),
                ms(5000),
                ms(5000),
                ms(5000)
            ]
        );
        b.reset();
        assert_eq!(b.next_delay(), ms(250));
        // Degenerate settings cannot make it spin or shrink.
        let mut z = Backoff::new(Duration::ZERO, Duration::ZERO);
        assert_eq!(z.next_delay(), TICK);
        assert_eq!(z.next_delay(), TICK);
        let mut inverted = Backoff::new(ms(800), ms(100));
        assert_eq!(inverted.next_delay(), ms(800));
        assert_eq!(inverted.next_delay(), ms(800));
    }

    #[test]
    fn monitor_accepts_real_time_delivery_with_bursts() {
        let t0 = Instant::now();
        let mut m = Monitor::new(48_000, Duration::from_secs(2), t0);
        let mut frames = 0u64;
        // Ten minutes of 1024-frame periods, 0.5 % fast, checked every 10 ms,
        // with a 300 ms burst (a sound server catching up) every minute.
        let mut t = 0.0f64;
        let mut due = 0.0f64;
        while t < 600.0 {
            t += 0.01;
            while due <= t {
                frames += 1024;
                due += 1024.0 / (48_000.0 * 1.005);
            }
            if (t % 60.0) < 0.01 {
                frames += 14_400;
            }
            let now = t0 + Duration::from_secs_f64(t);
            assert_eq!(m.check(frames, now), Ok(()), "at {t:.2} s");
        }
    }

    #[test]
    fn monitor_flags_floods_and_stalls() {
        let t0 = Instant::now();
        let mut m = Monitor::new(16_000, Duration::from_secs(2), t0);
        // A source that returns 10 s of audio within 50 ms.
        let mut result = Ok(());
        for i in 1..=5u64 {
            result = m.check(i * 32_000, t0 + Duration::from_millis(i * 10));
            if result.is_err() {
                break;
            }
        }
        let err = result.unwrap_err();
        assert!(err.contains("faster than real time"), "{err}");

        let mut m = Monitor::new(16_000, Duration::from_secs(2), t0);
        assert_eq!(m.check(1_600, t0 + Duration::from_millis(100)), Ok(()));
        assert_eq!(m.check(1_600, t0 + Duration::from_millis(2_000)), Ok(()));
        let err = m
            .check(1_600, t0 + Duration::from_millis(2_150))
            .unwrap_err();
        assert!(err.contains("no audio") && err.contains("2.0 s"), "{err}");
    }

    #[test]
    fn recoverable_errors_do_not_fail_the_stream() {
        assert!(is_recoverable(cpal::ErrorKind::Xrun));
        assert!(!is_recoverable(cpal::ErrorKind::DeviceNotAvailable));
        assert!(!is_recoverable(cpal::ErrorKind::StreamInvalidated));
        assert!(!is_recoverable(cpal::ErrorKind::BackendError));
    }

    #[test]
    fn data_callback_pushes_whole_frames_and_counts_overruns() {
        let shared = Arc::new(Shared::default());
        let signals = Arc::new(StreamSignals::default());
        // Room for 5 samples of stereo: only 2 whole frames fit.
        let (producer, mut consumer) = RingBuffer::new(5);
        // A 3-frame scratch forces a 7-frame callback to be processed in pieces.
        let mut cb =
            data_callback::<i16>(producer, 2, 3, Arc::clone(&shared), Arc::clone(&signals));
        let data: Vec<i16> = (0..14).map(|i| i * 1_000).collect();
        let info = callback_info();
        cb(&data, &info);
        let mut got = Vec::new();
        while let Ok(s) = consumer.pop() {
            got.push(s);
        }
        assert_eq!(
            got,
            [
                0.0,
                1_000.0 / 32_768.0,
                2_000.0 / 32_768.0,
                3_000.0 / 32_768.0
            ]
        );
        let stats = shared.snapshot();
        assert_eq!(
            (stats.callbacks, stats.frames_in, stats.overruns),
            (1, 7, 10)
        );
        assert_eq!(signals.frames.load(Ordering::Relaxed), 7);
        // The callback timed itself: some nanoseconds, rounded up to a whole microsecond.
        assert!(stats.max_callback_ns > 0, "{stats:?}");
        assert_eq!(stats.max_callback_us, stats.max_callback_ns.div_ceil(1_000));
    }

    /// An `InputCallbackInfo` for calling a data callback directly.
    fn callback_info() -> cpal::InputCallbackInfo {
        let zero = cpal::StreamInstant::new(0, 0);
        cpal::InputCallbackInfo::new(cpal::InputStreamTimestamp {
            callback: zero,
            capture: zero,
        })
    }

    #[test]
    fn emit_sends_bounded_chunks_and_flushes_the_rest() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut c = Capture {
            cfg: CaptureConfig::default(),
            events: tx,
            shared: Arc::new(Shared::default()),
            backoff: Backoff::new(Duration::from_millis(250), Duration::from_secs(5)),
            pending: Vec::new(),
            popped: Vec::new(),
            listening: true,
        };
        c.emit(vec![0.0; 100], false);
        assert!(rx.try_recv().is_err(), "less than 10 ms is held back");
        c.emit(vec![0.0; 3_500], false);
        let mut sizes = Vec::new();
        while let Ok(CaptureEvent::Audio(a)) = rx.try_recv() {
            sizes.push(a.len());
        }
        assert_eq!(sizes, [1_600, 1_600, 400]);
        c.emit(vec![0.0; 50], true);
        match rx.try_recv() {
            Ok(CaptureEvent::Audio(a)) => assert_eq!(a.len(), 50),
            other => panic!("expected the tail, got {other:?}"),
        }
    }
}
