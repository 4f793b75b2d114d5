//! Audio input: turn any common recording (or a live capture stream) into the
//! 16 kHz mono `f32` signal the VAD and ASR workers expect.
//!
//! Two entry points:
//! * [`load`] reads a WAV file (any PCM/float layout hound can decode) or a
//!   headerless `.raw` s16le 16 kHz mono file and returns 16 kHz mono samples.
//! * [`Resampler16k`] does the same conversion incrementally, for live capture;
//!   [`to_mono_16k`] is the one-shot form built on it, so files and live audio
//!   go through exactly the same downmix and resampling path.
//!
//! Resampling uses rubato's synchronous FFT resampler: the rate ratio is exact
//! (it works on `rate / gcd` blocks), which keeps the output length exactly
//! `round(len * 16000 / rate)` and therefore keeps segment timestamps honest.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Indexing, Resampler, WindowFunction};

/// The sample rate every consumer downstream of this module works at, in Hz.
pub const RATE: u32 = 16_000;

/// Source sample rates accepted by [`load`], [`to_mono_16k`] and [`Resampler16k`], in Hz.
///
/// The bounds cover telephone audio up to high-resolution recorders; anything
/// outside is far more likely a corrupt header than real audio.
pub const SOURCE_RATES: RangeInclusive<u32> = 8_000..=192_000;

/// Human-readable summary of what [`load`] accepts, quoted in error messages.
const SUPPORTED_FILES: &str = "WAV with 8/16/24/32-bit integer or 32-bit float PCM, \
     8-192 kHz, any channel count; or .raw with s16le 16 kHz mono";

/// Human-readable summary of the sample encodings [`load`] accepts.
const SUPPORTED_SAMPLES: &str = "8, 16, 24 or 32-bit integer PCM, or 32-bit IEEE float";

/// Input frames handed to the FFT resampler per call. About 20-60 ms at common
/// rates: small enough for live capture latency, large enough for an FFT block
/// whose anti-aliasing cutoff sits close to 8 kHz.
const RESAMPLER_CHUNK: usize = 1024;

/// Frames decoded from a WAV file before they are pushed to the resampler, so
/// that long files never exist in memory at their source rate.
const DECODE_BLOCK_FRAMES: usize = 16_384;

/// Why audio could not be loaded, converted or written.
///
/// Every message starts with the file it concerns (or "audio stream" for
/// in-memory conversions), says what was found, and what would have been accepted.
#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    /// The file could not be opened or read.
    #[error("{}: cannot read audio file: {source} (supported: {})", .path.display(), SUPPORTED_FILES)]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying I/O error.
        source: io::Error,
    },
    /// The file has zero bytes.
    #[error("{}: file is empty (supported: {})", .path.display(), SUPPORTED_FILES)]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// The file is neither a RIFF/WAVE file nor a `.raw` file.
    #[error("{}: not a WAV file (starts with {found}; supported: {})", .path.display(), SUPPORTED_FILES)]
    NotWav {
        /// The file.
        path: PathBuf,
        /// A description of its first bytes.
        found: String,
    },
    /// The file ends before its header or its declared sample data does.
    #[error("{}: truncated: {detail} (only complete files can be read)", .path.display())]
    Truncated {
        /// The file.
        path: PathBuf,
        /// What was declared and what was present.
        detail: String,
    },
    /// The WAV header is inconsistent in a way the decoder refuses.
    #[error("{}: malformed WAV header: {detail} (supported: {})", .path.display(), SUPPORTED_FILES)]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong, as reported by the WAV parser.
        detail: String,
    },
    /// The WAV file stores samples in an encoding this module does not decode.
    #[error("{}: {found} samples are not supported (supported: {})", .path.display(), SUPPORTED_SAMPLES)]
    UnsupportedEncoding {
        /// The file.
        path: PathBuf,
        /// The encoding found, e.g. "12-bit integer" or "µ-law (format tag 0x0007)".
        found: String,
    },
    /// The sample rate is outside [`SOURCE_RATES`].
    #[error("{}: sample rate {rate} Hz is not supported (supported: {}-{} Hz)",
        origin(.path), SOURCE_RATES.start(), SOURCE_RATES.end())]
    UnsupportedRate {
        /// The file, or `None` for in-memory audio.
        path: Option<PathBuf>,
        /// The rate found.
        rate: u32,
    },
    /// The audio declares zero channels.
    #[error("{}: the audio declares 0 channels (supported: 1 or more)", origin(.path))]
    NoChannels {
        /// The file, or `None` for in-memory audio.
        path: Option<PathBuf>,
    },
    /// The resampler could not be built or refused a buffer (a bug, not bad input).
    #[error("{}: resampling from {rate} Hz failed: {detail} (supported: {}-{} Hz)",
        origin(.path), SOURCE_RATES.start(), SOURCE_RATES.end())]
    Resampler {
        /// The file, or `None` for in-memory audio.
        path: Option<PathBuf>,
        /// The source rate.
        rate: u32,
        /// rubato's message.
        detail: String,
    },
    /// A WAV file could not be written.
    #[error("{}: cannot write 16 kHz mono 16-bit WAV: {detail}", .path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
}

/// Names the origin of an error that may concern a file or in-memory audio.
fn origin(path: &Option<PathBuf>) -> String {
    match path {
        Some(p) => p.display().to_string(),
        None => "audio stream".to_owned(),
    }
}

impl AudioError {
    /// Attaches `path` to errors raised on in-memory audio, so that [`load`]
    /// reports the file even when the failure happened in the conversion step.
    fn in_file(self, file: &Path) -> Self {
        match self {
            AudioError::UnsupportedRate { path: None, rate } => AudioError::UnsupportedRate {
                path: Some(file.to_owned()),
                rate,
            },
            AudioError::NoChannels { path: None } => AudioError::NoChannels {
                path: Some(file.to_owned()),
            },
            AudioError::Resampler {
                path: None,
                rate,
                detail,
            } => AudioError::Resampler {
                path: Some(file.to_owned()),
                rate,
                detail,
            },
            other => other,
        }
    }
}

/// Decoded audio, converted to 16 kHz mono.
#[derive(Debug, Clone, PartialEq)]
pub struct Audio {
    /// 16 kHz mono samples in `[-1, 1]`.
    pub samples: Vec<f32>,
    /// The sample rate of the source, in Hz.
    pub source_rate: u32,
    /// The channel count of the source.
    pub source_channels: u16,
}

impl Audio {
    /// Duration of the converted audio in seconds.
    pub fn duration_secs(&self) -> f64 {
        self.samples.len() as f64 / f64::from(RATE)
    }
}

/// Loads a recording as 16 kHz mono.
///
/// The format is decided by content first: a file starting with `RIFF` is read
/// as WAV whatever its name. Otherwise a `.raw` extension (any case) means
/// headerless s16le 16 kHz mono. Anything else is rejected with an
/// [`AudioError`] naming the file and what was found; this never panics on
/// malformed input.
pub fn load(path: &Path) -> Result<Audio, AudioError> {
    let read_err = |source: io::Error| AudioError::Read {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(read_err)?;
    let file_len = file.metadata().map_err(read_err)?.len();
    if file_len == 0 {
        return Err(AudioError::Empty {
            path: path.to_owned(),
        });
    }
    let mut reader = BufReader::new(file);
    let mut head = Vec::with_capacity(12);
    (&mut reader)
        .take(12)
        .read_to_end(&mut head)
        .map_err(read_err)?;

    if head.starts_with(b"RIFF") {
        reader.seek(SeekFrom::Start(0)).map_err(read_err)?;
        return load_wav(path, reader, file_len);
    }
    let is_raw = path
        .extension()
        .is_some_and(|ext| ext.eq_ignore_ascii_case("raw"));
    if is_raw {
        reader.seek(SeekFrom::Start(0)).map_err(read_err)?;
        let mut bytes = Vec::new();
        reader.read_to_end(&mut bytes).map_err(read_err)?;
        if bytes.len() % 2 != 0 {
            return Err(AudioError::Truncated {
                path: path.to_owned(),
                detail: format!(
                    "a .raw file holds 2-byte s16le samples but this one is {} bytes long",
                    bytes.len()
                ),
            });
        }
        return Ok(Audio {
            samples: from_raw_s16le(&bytes),
            source_rate: RATE,
            source_channels: 1,
        });
    }
    Err(AudioError::NotWav {
        path: path.to_owned(),
        found: describe_magic(&head),
    })
}

/// Describes the first bytes of a non-WAV file, naming the format when it is a
/// common one, so that the error tells the user what to convert from.
fn describe_magic(head: &[u8]) -> String {
    let shown = head.iter().take(8).copied();
    let mut text = String::from("\"");
    for b in shown {
        // Printable ASCII stays readable; other bytes are hex-escaped.
        let _ = write!(text, "{}", std::ascii::escape_default(b));
    }
    text.push('"');
    let guess = if head.starts_with(b"fLaC") {
        Some("FLAC")
    } else if head.starts_with(b"OggS") {
        Some("Ogg (Vorbis/Opus)")
    } else if head.starts_with(b"ID3") || head.starts_with(&[0xFF, 0xFB]) {
        Some("MP3")
    } else if head.starts_with(b"RIFX") {
        Some("big-endian RIFX WAV")
    } else if head.starts_with(b"RF64") || head.starts_with(b"BW64") {
        Some("64-bit RF64 WAV")
    } else if head.starts_with(b"FORM") {
        Some("AIFF")
    } else if head.len() >= 8 && &head[4..8] == b"ftyp" {
        Some("MP4/M4A")
    } else {
        None
    };
    match guess {
        Some(name) => format!("{text}, which looks like {name}"),
        None => text,
    }
}

/// Sample encodings as declared by a WAV `fmt ` chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    /// Integer PCM with this many valid bits.
    Int(u16),
    /// IEEE float with this many bits.
    Float(u16),
    /// Any other format tag (compressed formats).
    Other(u16),
}

impl Encoding {
    /// Whether hound decodes this encoding and this module converts it.
    fn supported(self) -> bool {
        matches!(self, Encoding::Int(8 | 16 | 24 | 32) | Encoding::Float(32))
    }

    /// Describes the encoding for error messages.
    fn describe(self) -> String {
        match self {
            Encoding::Int(bits) => format!("{bits}-bit integer"),
            Encoding::Float(bits) => format!("{bits}-bit float"),
            Encoding::Other(tag) => {
                let name = match tag {
                    0x0002 => "Microsoft ADPCM",
                    0x0006 => "A-law",
                    0x0007 => "µ-law",
                    0x0011 => "IMA ADPCM",
                    0x0031 => "GSM 6.10",
                    0x0050 => "MPEG",
                    0x0055 => "MP3",
                    _ => "compressed or unknown",
                };
                format!("{name} (format tag 0x{tag:04x})")
            }
        }
    }
}

/// What the header of a WAV file declares, read before hound sees the file so
/// that unsupported or truncated files get a precise message.
#[derive(Debug, Clone, Copy)]
struct WavHeader {
    encoding: Encoding,
    channels: u16,
    rate: u32,
}

/// Walks the RIFF chunks up to `data`, checking that every declared byte is
/// present. hound would otherwise report truncation only as a bare I/O error
/// midway through decoding, and would name no bit depth in its refusals.
fn probe_wav<R: Read + Seek>(
    path: &Path,
    reader: &mut R,
    file_len: u64,
) -> Result<WavHeader, AudioError> {
    let truncated = |detail: String| AudioError::Truncated {
        path: path.to_owned(),
        detail,
    };
    let malformed = |detail: String| AudioError::Malformed {
        path: path.to_owned(),
        detail,
    };
    let read_err = |source: io::Error| AudioError::Read {
        path: path.to_owned(),
        source,
    };
    if file_len < 12 {
        return Err(truncated(format!(
            "the file is {file_len} bytes, shorter than the 12-byte RIFF header"
        )));
    }
    let mut riff = [0u8; 12];
    reader.read_exact(&mut riff).map_err(read_err)?;
    if &riff[8..12] != b"WAVE" {
        return Err(AudioError::NotWav {
            path: path.to_owned(),
            found: format!(
                "a RIFF container of type \"{}\"",
                riff[8..12].escape_ascii()
            ),
        });
    }

    let mut offset: u64 = 12;
    let mut header: Option<WavHeader> = None;
    loop {
        if offset + 8 > file_len {
            let what = if header.is_some() {
                "data chunk"
            } else {
                "fmt chunk"
            };
            return Err(truncated(format!(
                "the file ends after {file_len} bytes without a {what}"
            )));
        }
        let mut chunk = [0u8; 8];
        reader.read_exact(&mut chunk).map_err(read_err)?;
        let id = [chunk[0], chunk[1], chunk[2], chunk[3]];
        let len = u64::from(u32::from_le_bytes([chunk[4], chunk[5], chunk[6], chunk[7]]));
        let body = offset + 8;
        let available = file_len - body;
        match &id {
            b"fmt " => {
                if len < 16 {
                    return Err(malformed(format!(
                        "the fmt chunk is {len} bytes (at least 16 are needed)"
                    )));
                }
                if len > available {
                    return Err(truncated(format!(
                        "the fmt chunk declares {len} bytes but only {available} follow"
                    )));
                }
                // 40 bytes is the largest fmt variant (WAVEFORMATEXTENSIBLE).
                let mut fmt = vec![0u8; len.min(40) as usize];
                reader.read_exact(&mut fmt).map_err(read_err)?;
                header = Some(parse_fmt(&fmt));
                reader
                    .seek(SeekFrom::Start(body + len + (len & 1)))
                    .map_err(read_err)?;
            }
            b"data" => {
                let Some(h) = header else {
                    return Err(malformed(
                        "the data chunk comes before any fmt chunk".into(),
                    ));
                };
                if len > available {
                    return Err(truncated(format!(
                        "the header declares {len} bytes of sample data but only {available} follow"
                    )));
                }
                return Ok(h);
            }
            _ => {
                // RIFF chunks are padded to an even length.
                reader
                    .seek(SeekFrom::Start(body + len + (len & 1)))
                    .map_err(read_err)?;
            }
        }
        offset = body + len + (len & 1);
    }
}

/// Decodes the fields of a `fmt ` chunk body (at least 16 bytes).
fn parse_fmt(fmt: &[u8]) -> WavHeader {
    let u16_at = |i: usize| u16::from_le_bytes([fmt[i], fmt[i + 1]]);
    let tag = u16_at(0);
    let channels = u16_at(2);
    let rate = u32::from_le_bytes([fmt[4], fmt[5], fmt[6], fmt[7]]);
    let bits = u16_at(14);
    let encoding = match tag {
        0x0001 => Encoding::Int(bits),
        0x0003 => Encoding::Float(bits),
        0xFFFE if fmt.len() >= 40 => {
            // WAVEFORMATEXTENSIBLE: the real bit depth is wValidBitsPerSample
            // (0 means "same as the container", as hound also assumes), and the
            // real format tag is the first two bytes of the SubFormat GUID.
            let valid = u16_at(18);
            let bits = if valid > 0 { valid } else { bits };
            match u16_at(24) {
                0x0001 => Encoding::Int(bits),
                0x0003 => Encoding::Float(bits),
                sub => Encoding::Other(sub),
            }
        }
        other => Encoding::Other(other),
    };
    WavHeader {
        encoding,
        channels,
        rate,
    }
}

/// Maps a hound refusal to an [`AudioError`]; the probe catches most problems
/// first, so this covers the consistency checks only hound makes.
fn hound_error(path: &Path, header: WavHeader, err: hound::Error) -> AudioError {
    match err {
        hound::Error::IoError(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
            AudioError::Truncated {
                path: path.to_owned(),
                detail: "the file ends inside the sample data".into(),
            }
        }
        hound::Error::IoError(source) => AudioError::Read {
            path: path.to_owned(),
            source,
        },
        hound::Error::Unsupported => AudioError::UnsupportedEncoding {
            path: path.to_owned(),
            found: header.encoding.describe(),
        },
        other => AudioError::Malformed {
            path: path.to_owned(),
            detail: other.to_string(),
        },
    }
}

/// Reads a WAV file: probe, validate, then decode with hound in blocks fed
/// straight into the resampler.
fn load_wav(path: &Path, mut reader: BufReader<File>, file_len: u64) -> Result<Audio, AudioError> {
    let header = probe_wav(path, &mut reader, file_len)?;
    if header.channels == 0 {
        return Err(AudioError::NoChannels {
            path: Some(path.to_owned()),
        });
    }
    if !header.encoding.supported() {
        return Err(AudioError::UnsupportedEncoding {
            path: path.to_owned(),
            found: header.encoding.describe(),
        });
    }
    let mut resampler =
        Resampler16k::new(header.rate, header.channels).map_err(|e| e.in_file(path))?;

    reader
        .seek(SeekFrom::Start(0))
        .map_err(|source| AudioError::Read {
            path: path.to_owned(),
            source,
        })?;
    let mut wav = hound::WavReader::new(reader).map_err(|e| hound_error(path, header, e))?;
    let spec = wav.spec();
    let block_len = DECODE_BLOCK_FRAMES * usize::from(spec.channels.max(1));
    let mut block: Vec<f32> = Vec::with_capacity(block_len);
    let mut samples = Vec::with_capacity(
        // Exact after resampling; the probe checked that the data is really
        // in the file, and the cap keeps a huge file from over-reserving.
        (u64::from(wav.duration()) * u64::from(RATE) / u64::from(header.rate.max(1))).min(1 << 28)
            as usize,
    );
    match spec.sample_format {
        hound::SampleFormat::Int => {
            // hound returns integers at their native scale (8-bit already
            // re-centred to signed), so full scale is 2^(bits-1).
            let scale = 1.0 / (1u64 << (spec.bits_per_sample.clamp(1, 32) - 1)) as f32;
            for s in wav.samples::<i32>() {
                let s = s.map_err(|e| hound_error(path, header, e))?;
                block.push(s as f32 * scale);
                if block.len() == block_len {
                    samples.extend(resampler.push(&block));
                    block.clear();
                }
            }
        }
        hound::SampleFormat::Float => {
            for s in wav.samples::<f32>() {
                let s = s.map_err(|e| hound_error(path, header, e))?;
                block.push(s);
                if block.len() == block_len {
                    samples.extend(resampler.push(&block));
                    block.clear();
                }
            }
        }
    }
    samples.extend(resampler.push(&block));
    samples.extend(resampler.flush());
    Ok(Audio {
        samples,
        source_rate: header.rate,
        source_channels: header.channels,
    })
}

/// Converts headerless little-endian signed 16-bit samples to `f32` in `[-1, 1)`.
///
/// A trailing odd byte (half a sample) is ignored; [`load`] rejects such files
/// instead, since there it signals truncation.
pub fn from_raw_s16le(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(2)
        .map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0)
        .collect()
}

/// Downmixes interleaved audio to mono by averaging channels, then resamples
/// it to 16 kHz (a plain copy when `rate` is already 16 kHz).
///
/// The output has `round(frames * 16000 / rate)` samples, aligned with the
/// input (the resampler's delay is removed), clamped to `[-1, 1]`. A trailing
/// incomplete frame is ignored. Non-finite input samples are treated as silence.
pub fn to_mono_16k(interleaved: &[f32], rate: u32, channels: u16) -> Result<Vec<f32>, AudioError> {
    let mut resampler = Resampler16k::new(rate, channels)?;
    let mut out = resampler.push(interleaved);
    out.extend(resampler.flush());
    Ok(out)
}

/// Writes 16 kHz mono 16-bit PCM, for quarantined or debug audio.
///
/// Samples are clamped to `[-1, 1]`; non-finite ones are written as silence.
pub fn write_wav(path: &Path, samples: &[f32]) -> Result<(), AudioError> {
    let write_err = |e: hound::Error| AudioError::Write {
        path: path.to_owned(),
        detail: e.to_string(),
    };
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: RATE,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut writer = hound::WavWriter::create(path, spec).map_err(write_err)?;
    for &s in samples {
        writer.write_sample(to_i16(s)).map_err(write_err)?;
    }
    writer.finalize().map_err(write_err)
}

/// Converts a float sample to 16-bit PCM at the same 1/32768 scale the
/// readers use, so that writing and reloading is lossless beyond quantisation.
/// `as` saturates (+1.0 becomes 32767) and maps NaN to 0.
fn to_i16(s: f32) -> i16 {
    (s * 32768.0).round() as i16
}

/// Replaces NaN/infinity with silence: one bad sample would otherwise poison a
/// whole FFT block of resampler output.
fn finite(s: f32) -> f32 {
    if s.is_finite() {
        s
    } else {
        0.0
    }
}

/// Streaming converter from interleaved audio at any supported rate and channel
/// count to 16 kHz mono, for live capture.
///
/// Feed it chunks of any size with [`push`](Self::push) (they need not hold
/// whole frames: an incomplete trailing frame is kept for the next call), then
/// call [`flush`](Self::flush) at end of stream. The concatenated output is
/// sample-aligned with the input: the resampler's startup delay is trimmed, and
/// `flush` drains its tail, so the total is `round(frames * 16000 / rate)`.
/// After `flush` the resampler is reset and ready for a new stream.
pub struct Resampler16k {
    /// Source sample rate in Hz.
    rate: u32,
    /// Source channel count.
    channels: usize,
    /// `None` when the source is already 16 kHz: downmix only.
    fft: Option<Fft<f32>>,
    /// Samples of an incomplete interleaved frame left over from the last push.
    partial: Vec<f32>,
    /// Mono frames waiting until a full resampler chunk has accumulated.
    pending: Vec<f32>,
    /// Output buffer for one resampler call.
    scratch: Vec<f32>,
    /// Leading output frames still to drop (the resampler's delay).
    to_trim: usize,
    /// Mono frames accepted since the stream started.
    frames_in: u64,
    /// 16 kHz samples emitted since the stream started.
    frames_out: u64,
}

impl std::fmt::Debug for Resampler16k {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resampler16k")
            .field("rate", &self.rate)
            .field("channels", &self.channels)
            .field("frames_in", &self.frames_in)
            .field("frames_out", &self.frames_out)
            .finish_non_exhaustive()
    }
}

impl Resampler16k {
    /// Creates a converter for `rate` Hz audio with `channels` interleaved channels.
    ///
    /// Fails if `rate` is outside [`SOURCE_RATES`] or `channels` is 0.
    pub fn new(rate: u32, channels: u16) -> Result<Self, AudioError> {
        if channels == 0 {
            return Err(AudioError::NoChannels { path: None });
        }
        if !SOURCE_RATES.contains(&rate) {
            return Err(AudioError::UnsupportedRate { path: None, rate });
        }
        let fft = if rate == RATE {
            None
        } else {
            // One sub-chunk: the largest FFT block for this chunk size, which puts
            // the anti-aliasing cutoff closest to 8 kHz. The delay it adds is
            // trimmed below, so it costs latency (~10 ms) but never alignment.
            let fft = Fft::<f32>::new_custom(
                rate as usize,
                RATE as usize,
                RESAMPLER_CHUNK,
                1,
                1,
                WindowFunction::BlackmanHarris2,
                FixedSync::Input,
            )
            .map_err(|e| AudioError::Resampler {
                path: None,
                rate,
                detail: e.to_string(),
            })?;
            Some(fft)
        };
        let (scratch, to_trim) = match &fft {
            Some(f) => (vec![0.0; f.output_frames_max()], f.output_delay()),
            None => (Vec::new(), 0),
        };
        Ok(Self {
            rate,
            channels: usize::from(channels),
            fft,
            partial: Vec::new(),
            pending: Vec::new(),
            scratch,
            to_trim,
            frames_in: 0,
            frames_out: 0,
        })
    }

    /// The source sample rate in Hz.
    pub fn source_rate(&self) -> u32 {
        self.rate
    }

    /// The source channel count.
    pub fn source_channels(&self) -> u16 {
        // Constructed from a u16, so this cannot truncate.
        self.channels as u16
    }

    /// Accepts interleaved samples and returns whatever 16 kHz mono output is
    /// ready. Output lags input by up to one resampler chunk plus the FFT delay;
    /// [`flush`](Self::flush) returns the rest.
    pub fn push(&mut self, interleaved: &[f32]) -> Vec<f32> {
        let mut out = Vec::new();
        let mut rest = interleaved;
        // Complete a frame split across pushes first.
        if !self.partial.is_empty() {
            let need = self.channels - self.partial.len();
            let take = need.min(rest.len());
            self.partial.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.partial.len() == self.channels {
                let frame = std::mem::take(&mut self.partial);
                self.accept_frames(&frame, &mut out);
            }
        }
        let whole = rest.len() - rest.len() % self.channels;
        self.accept_frames(&rest[..whole], &mut out);
        self.partial.extend_from_slice(&rest[whole..]);
        out
    }

    /// Ends the stream: resamples what is buffered, drains the resampler's
    /// delay line, and returns the remaining output so that the stream's total
    /// output is `round(frames * 16000 / rate)` samples. An incomplete trailing
    /// frame is discarded. The converter is then reset for a new stream.
    pub fn flush(&mut self) -> Vec<f32> {
        let mut out = Vec::new();
        let expected = expected_len(self.frames_in, self.rate);
        if let Some(mut fft) = self.fft.take() {
            let pending = std::mem::take(&mut self.pending);
            if !pending.is_empty() {
                self.run(&mut fft, &pending, Some(pending.len()), &mut out);
            }
            // Pump silence until the delayed tail has come out. Bounded: each
            // call feeds a full chunk, so an FFT block completes at least every
            // fft_size_in / chunk + 1 calls; the limit only guards against a
            // resampler that stops producing (it would be a rubato bug).
            let max_idle = fft.fft_size_in() / RESAMPLER_CHUNK + 2;
            let mut idle = 0;
            while self.frames_out < expected && idle <= max_idle {
                let before = (self.frames_out, self.to_trim);
                if !self.run(&mut fft, &[], Some(0), &mut out) {
                    break;
                }
                if (self.frames_out, self.to_trim) == before {
                    idle += 1;
                } else {
                    idle = 0;
                }
            }
            let excess = self.frames_out.saturating_sub(expected);
            let keep = out
                .len()
                .saturating_sub(usize::try_from(excess).unwrap_or(usize::MAX));
            out.truncate(keep);
            fft.reset();
            self.to_trim = fft.output_delay();
            self.fft = Some(fft);
        }
        self.partial.clear();
        self.pending.clear();
        self.frames_in = 0;
        self.frames_out = 0;
        out
    }

    /// Downmixes whole interleaved frames and resamples every complete chunk.
    fn accept_frames(&mut self, interleaved: &[f32], out: &mut Vec<f32>) {
        let frames = interleaved.len() / self.channels;
        self.frames_in += frames as u64;
        let inv = 1.0 / self.channels as f32;
        let mono = interleaved
            .chunks_exact(self.channels)
            .map(|f| f.iter().map(|&s| finite(s)).sum::<f32>() * inv);
        let Some(mut fft) = self.fft.take() else {
            // Already 16 kHz: downmix is the whole conversion.
            let start = out.len();
            out.extend(mono.map(|s| s.clamp(-1.0, 1.0)));
            self.frames_out += (out.len() - start) as u64;
            return;
        };
        self.pending.extend(mono);
        let chunk = fft.input_frames_next();
        let pending = std::mem::take(&mut self.pending);
        // Walk by offset and drain once: draining per chunk would be quadratic
        // when a whole file is pushed at once.
        let mut offset = 0;
        while pending.len() - offset >= chunk {
            if !self.run(&mut fft, &pending[offset..offset + chunk], None, out) {
                break;
            }
            offset += chunk;
        }
        self.pending = pending;
        self.pending.drain(..offset);
        self.fft = Some(fft);
    }

    /// Runs one resampler call on `input` and appends its output, minus any
    /// delay still to trim. Returns false if rubato refused the buffers.
    fn run(
        &mut self,
        fft: &mut Fft<f32>,
        input: &[f32],
        partial_len: Option<usize>,
        out: &mut Vec<f32>,
    ) -> bool {
        let indexing = Indexing {
            partial_len,
            ..Indexing::default()
        };
        let result = InterleavedSlice::new(input, 1, input.len())
            .map_err(|e| e.to_string())
            .and_then(|inp| {
                let frames = self.scratch.len();
                let mut outp = InterleavedSlice::new_mut(&mut self.scratch[..], 1, frames)
                    .map_err(|e| e.to_string())?;
                fft.process_into_buffer(&inp, &mut outp, Some(&indexing))
                    .map_err(|e| e.to_string())
            });
        match result {
            Ok((_, produced)) => {
                let produced = produced.min(self.scratch.len());
                let skip = self.to_trim.min(produced);
                self.to_trim -= skip;
                out.extend(
                    self.scratch[skip..produced]
                        .iter()
                        .map(|s| s.clamp(-1.0, 1.0)),
                );
                self.frames_out += (produced - skip) as u64;
                true
            }
            Err(_detail) => {
                // Buffers are sized from the resampler's own queries, so this is
                // unreachable from input. Fail loudly in tests; in production
                // the chunk is lost and flush pads the stream back to its
                // expected length, keeping timestamps aligned.
                if cfg!(debug_assertions) {
                    panic!("rubato refused buffers sized from its own queries: {_detail}");
                }
                false
            }
        }
    }
}

/// `round(frames * 16000 / rate)`, the output length that keeps time aligned.
fn expected_len(frames: u64, rate: u32) -> u64 {
    let rate = u128::from(rate.max(1));
    let n = (u128::from(frames) * u128::from(RATE) + rate / 2) / rate;
    u64::try_from(n).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::f32::consts::PI;

    /// The installed speech clips; a test that needs them fails (never skips) without them.
    fn speech_dir() -> PathBuf {
        let dir = swictation_proto::paths::speech_dir();
        assert!(
            dir.is_dir(),
            "no speech clips in {}: run deploy/setup.sh",
            dir.display()
        );
        dir
    }

    /// Source duration of a WAV in seconds, read independently with hound.
    fn wav_secs(path: &Path) -> f64 {
        let r = hound::WavReader::open(path).unwrap();
        f64::from(r.duration()) / f64::from(r.spec().sample_rate)
    }

    fn assert_duration(audio: &Audio, expected_secs: f64, what: &str) {
        let got = audio.duration_secs();
        assert!(
            (got - expected_secs).abs() <= 0.010,
            "{what}: {got} s, expected {expected_secs} s"
        );
    }

    #[test]
    fn loads_test_recordings_with_right_duration() {
        let dir = speech_dir();
        for name in ["chan3.wav", "chan3.2chan.wav"] {
            let path = dir.join(name);
            let audio = load(&path).unwrap();
            assert_eq!(audio.source_rate, 11_025);
            assert_duration(&audio, wav_secs(&path), name);
            assert!((audio.duration_secs() - 20.9).abs() < 0.1);
            assert!(audio.samples.iter().all(|s| (-1.0..=1.0).contains(s)));
        }
        let mut librivox = 0;
        for entry in std::fs::read_dir(dir.join("librivox")).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "wav") {
                let audio = load(&path).unwrap();
                assert_eq!((audio.source_rate, audio.source_channels), (16_000, 1));
                assert_duration(&audio, wav_secs(&path), &path.display().to_string());
                librivox += 1;
            }
        }
        assert!(librivox > 0);
        let raw = dir.join("goforward.raw");
        let audio = load(&raw).unwrap();
        let bytes = std::fs::metadata(&raw).unwrap().len();
        assert_duration(&audio, bytes as f64 / 2.0 / 16_000.0, "goforward.raw");
    }

    #[test]
    fn mono_and_stereo_copies_agree() {
        let dir = speech_dir();
        let mono = load(&dir.join("chan3.wav")).unwrap();
        let stereo = load(&dir.join("chan3.2chan.wav")).unwrap();
        assert_eq!(stereo.source_channels, 2);
        assert_eq!(mono.samples.len(), stereo.samples.len());
        let energy: f64 = mono.samples.iter().map(|&s| f64::from(s * s)).sum();
        let diff: f64 = mono
            .samples
            .iter()
            .zip(&stereo.samples)
            .map(|(&a, &b)| f64::from((a - b) * (a - b)))
            .sum();
        assert!(energy > 0.0);
        // The two channels may differ slightly; the downmix must still track
        // the mono file to within 1% of its energy (-20 dB).
        assert!(
            diff / energy < 0.01,
            "relative error energy {}",
            diff / energy
        );
    }

    fn sine(rate: u32, channels: u16, secs: f32, freq: f32, amp: f32) -> Vec<f32> {
        let frames = (rate as f32 * secs) as usize;
        (0..frames)
            .flat_map(|i| {
                let v = amp * (2.0 * PI * freq * i as f32 / rate as f32).sin();
                std::iter::repeat_n(v, usize::from(channels))
            })
            .collect()
    }

    fn zero_crossings(s: &[f32]) -> usize {
        s.windows(2)
            .filter(|w| (w[0] < 0.0) != (w[1] < 0.0))
            .count()
    }

    #[test]
    fn sine_keeps_frequency_and_amplitude() {
        let input = sine(44_100, 2, 2.0, 1000.0, 0.5);
        let out = to_mono_16k(&input, 44_100, 2).unwrap();
        assert!(out.len().abs_diff(32_000) <= 2, "len {}", out.len());
        // Ignore the edges, where the FFT block sees the step from/to silence.
        let mid = &out[800..out.len() - 800];
        let secs = mid.len() as f64 / 16_000.0;
        let crossings = zero_crossings(mid) as f64;
        assert!(
            (crossings - 2000.0 * secs).abs() <= 3.0,
            "{crossings} crossings in {secs} s"
        );
        let peak = mid.iter().fold(0.0f32, |m, &s| m.max(s.abs()));
        assert!((peak - 0.5).abs() < 0.01, "peak {peak}");
        let rms = (mid.iter().map(|&s| s * s).sum::<f32>() / mid.len() as f32).sqrt();
        assert!((rms - 0.5 / 2f32.sqrt()).abs() < 0.005, "rms {rms}");
    }

    #[test]
    fn resampling_preserves_timing() {
        // A click at a known time must come out at the same time at 16 kHz:
        // this is what segment timestamps rely on.
        for rate in [8_000, 11_025, 22_050, 44_100, 48_000, 96_000] {
            let mut input = vec![0.0f32; rate as usize];
            let at = rate as usize / 2;
            input[at] = 1.0;
            input[at + 1] = 1.0;
            let out = to_mono_16k(&input, rate, 1).unwrap();
            let peak = out
                .iter()
                .enumerate()
                .fold(
                    (0, 0.0f32),
                    |(bi, bv), (i, &v)| if v > bv { (i, v) } else { (bi, bv) },
                )
                .0;
            assert!(peak.abs_diff(8_000) <= 2, "rate {rate}: click at {peak}");
            assert_eq!(out.len(), 16_000, "rate {rate}");
        }
    }

    #[test]
    fn passthrough_at_16k_is_exact_downmix() {
        let input = [0.5, -0.5, 0.25, 0.75, 1.0, 1.0];
        assert_eq!(to_mono_16k(&input, 16_000, 2).unwrap(), vec![0.0, 0.5, 1.0]);
    }

    #[test]
    fn rejects_bad_stream_parameters() {
        let e = to_mono_16k(&[0.0], 0, 1).unwrap_err().to_string();
        assert!(
            e.contains("sample rate 0 Hz") && e.contains("8000-192000"),
            "{e}"
        );
        let e = to_mono_16k(&[0.0], 16_000, 0).unwrap_err().to_string();
        assert!(e.contains("0 channels"), "{e}");
    }

    /// Writes `samples` (interleaved, full-scale floats) as a WAV with hound.
    fn write_test_wav(
        path: &Path,
        rate: u32,
        channels: u16,
        bits: u16,
        float: bool,
        samples: &[f32],
    ) {
        let spec = hound::WavSpec {
            channels,
            sample_rate: rate,
            bits_per_sample: bits,
            sample_format: if float {
                hound::SampleFormat::Float
            } else {
                hound::SampleFormat::Int
            },
        };
        let mut w = hound::WavWriter::create(path, spec).unwrap();
        for &s in samples {
            if float {
                w.write_sample(s).unwrap();
            } else {
                let full = ((1i64 << (bits - 1)) - 1) as f32;
                w.write_sample((s * full).round() as i32).unwrap();
            }
        }
        w.finalize().unwrap();
    }

    #[test]
    fn decodes_every_supported_layout() {
        let dir = tempfile::tempdir().unwrap();
        let cases: [(u32, u16, u16, bool); 7] = [
            (8_000, 1, 8, false),
            (11_025, 2, 16, false),
            (22_050, 3, 32, true),
            (44_100, 2, 24, false),
            (48_000, 6, 32, false),
            (96_000, 1, 16, false),
            (192_000, 2, 32, true),
        ];
        for (rate, channels, bits, float) in cases {
            let path = dir
                .path()
                .join(format!("t{rate}_{channels}_{bits}_{float}.wav"));
            let input = sine(rate, channels, 0.5, 440.0, 0.5);
            write_test_wav(&path, rate, channels, bits, float, &input);
            let audio = load(&path).unwrap();
            let what = format!("{rate} Hz {channels} ch {bits}-bit float={float}");
            assert_eq!(
                (audio.source_rate, audio.source_channels),
                (rate, channels),
                "{what}"
            );
            assert!(
                audio.samples.len().abs_diff(8_000) <= 1,
                "{what}: {}",
                audio.samples.len()
            );
            let mid = &audio.samples[1000..7000];
            let peak = mid.iter().fold(0.0f32, |m, &s| m.max(s.abs()));
            // 8-bit quantisation costs ~1/128 of accuracy.
            assert!((peak - 0.5).abs() < 0.02, "{what}: peak {peak}");
        }
    }

    #[test]
    fn write_then_load_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.wav");
        let samples: Vec<f32> = (0..1600).map(|i| ((i as f32) * 0.01).sin() * 0.8).collect();
        let mut with_junk = samples.clone();
        with_junk.push(f32::NAN);
        with_junk.push(3.0);
        write_wav(&path, &with_junk).unwrap();
        let back = load(&path).unwrap();
        assert_eq!(back.samples.len(), with_junk.len());
        for (a, b) in samples.iter().zip(&back.samples) {
            assert!((a - b).abs() <= 0.5 / 32_768.0);
        }
        assert_eq!(back.samples[1600], 0.0);
        assert!((back.samples[1601] - 1.0).abs() < 1e-4);
    }

    /// A WAV header with arbitrary fields followed by `data_bytes` of zeros.
    fn handmade_wav(
        tag: u16,
        channels: u16,
        rate: u32,
        bits: u16,
        data_len: u32,
        data_bytes: usize,
    ) -> Vec<u8> {
        let align = channels * bits.div_ceil(8);
        let mut v = Vec::new();
        v.extend_from_slice(b"RIFF");
        v.extend_from_slice(&(36 + data_len).to_le_bytes());
        v.extend_from_slice(b"WAVEfmt ");
        v.extend_from_slice(&16u32.to_le_bytes());
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&channels.to_le_bytes());
        v.extend_from_slice(&rate.to_le_bytes());
        v.extend_from_slice(&(rate * u32::from(align)).to_le_bytes());
        v.extend_from_slice(&align.to_le_bytes());
        v.extend_from_slice(&bits.to_le_bytes());
        v.extend_from_slice(b"data");
        v.extend_from_slice(&data_len.to_le_bytes());
        v.extend(std::iter::repeat_n(0u8, data_bytes));
        v
    }

    fn load_err(dir: &Path, name: &str, bytes: &[u8]) -> String {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        let err = load(&path).unwrap_err().to_string();
        assert!(
            err.contains(&path.display().to_string()),
            "path missing from: {err}"
        );
        err
    }

    #[test]
    fn bad_files_give_errors_naming_path_and_problem() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        let cases: Vec<(&str, Vec<u8>, &[&str])> = vec![
            (
                "garbage.wav",
                b"hello, this is not audio at all".to_vec(),
                &["not a WAV file", "hello, t"],
            ),
            (
                "song.flac",
                b"fLaC\0\0\0\x22rest".to_vec(),
                &["not a WAV file", "FLAC"],
            ),
            ("empty.wav", Vec::new(), &["empty"]),
            ("empty.raw", Vec::new(), &["empty"]),
            ("odd.raw", vec![1, 2, 3], &["3 bytes"]),
            (
                "short.wav",
                b"RIFF\x10\0\0\0WA".to_vec(),
                &["truncated", "10 bytes"],
            ),
            (
                "avi.wav",
                b"RIFF\x10\0\0\0AVI LIST".to_vec(),
                &["not a WAV file", "AVI "],
            ),
            (
                "12bit.wav",
                handmade_wav(1, 1, 16_000, 12, 4, 4),
                &["12-bit integer samples are not supported", "24"],
            ),
            (
                "ulaw.wav",
                handmade_wav(7, 1, 8_000, 8, 4, 4),
                &["µ-law", "not supported"],
            ),
            (
                "f64.wav",
                handmade_wav(3, 1, 16_000, 64, 8, 8),
                &["64-bit float samples are not supported"],
            ),
            (
                "nochan.wav",
                handmade_wav(1, 0, 16_000, 16, 4, 4),
                &["0 channels"],
            ),
            (
                "rate0.wav",
                handmade_wav(1, 1, 0, 16, 4, 4),
                &["sample rate 0 Hz", "8000-192000"],
            ),
            (
                "rate4k.wav",
                handmade_wav(1, 1, 4_000, 16, 4, 4),
                &["sample rate 4000 Hz"],
            ),
            (
                "cutdata.wav",
                handmade_wav(1, 1, 16_000, 16, 1000, 10),
                &["truncated", "1000 bytes", "only 10"],
            ),
            (
                "nodata.wav",
                handmade_wav(1, 1, 16_000, 16, 4, 4)[..40].to_vec(),
                &["truncated", "without a data chunk"],
            ),
            (
                "halfsample.wav",
                handmade_wav(1, 1, 16_000, 16, 3, 3),
                &["malformed"],
            ),
        ];
        for (name, bytes, needles) in cases {
            let err = load_err(d, name, &bytes);
            for n in needles {
                assert!(err.contains(n), "{name}: {err:?} lacks {n:?}");
            }
        }
        // A real file cut inside its header.
        let full = handmade_wav(1, 1, 16_000, 16, 64, 64);
        for cut in [4, 12, 20, 30, 43] {
            let err = load_err(d, &format!("cut{cut}.wav"), &full[..cut]);
            assert!(err.contains("truncated"), "cut at {cut}: {err}");
        }
        let missing = d.join("missing.wav");
        let err = load(&missing).unwrap_err().to_string();
        assert!(
            err.contains("missing.wav") && err.contains("cannot read"),
            "{err}"
        );
    }

    #[test]
    fn raw_conversion_scales_to_unit_range() {
        let bytes = [0x00, 0x80, 0xFF, 0x7F, 0x00, 0x00, 0x01];
        assert_eq!(from_raw_s16le(&bytes), vec![-1.0, 32767.0 / 32768.0, 0.0]);
    }

    #[test]
    fn raw_extension_is_case_insensitive_and_riff_wins() {
        let tmp = tempfile::tempdir().unwrap();
        let raw = tmp.path().join("x.RAW");
        std::fs::write(&raw, [0u8, 0x40, 0, 0xC0]).unwrap();
        assert_eq!(load(&raw).unwrap().samples, vec![0.5, -0.5]);
        // A WAV named .raw is still read as WAV.
        let wav = tmp.path().join("really_wav.raw");
        write_wav(&wav, &[0.25; 10]).unwrap();
        assert_eq!(load(&wav).unwrap().samples.len(), 10);
    }

    #[test]
    fn streaming_handles_split_frames_and_reuse() {
        let input = sine(48_000, 3, 0.3, 300.0, 0.3);
        let one_shot = to_mono_16k(&input, 48_000, 3).unwrap();
        let mut r = Resampler16k::new(48_000, 3).unwrap();
        for round in 0..2 {
            let mut out = Vec::new();
            // Chunks of 7 samples never align with 3-channel frames.
            for c in input.chunks(7) {
                out.extend(r.push(c));
            }
            out.extend(r.flush());
            assert_eq!(out.len(), one_shot.len(), "round {round}");
            let max_diff = out
                .iter()
                .zip(&one_shot)
                .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(max_diff < 1e-5, "round {round}: {max_diff}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 24,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]
        #[test]
        fn streaming_length_matches_one_shot(
            rate in prop::sample::select(vec![8_000u32, 11_025, 22_050, 16_000, 44_100, 48_000, 12_347]),
            channels in 1u16..=3,
            frames in 0usize..6_000,
            chunks in prop::collection::vec(1usize..2_000, 1..20),
        ) {
            let input: Vec<f32> = (0..frames * usize::from(channels))
                .map(|i| ((i * 7919) % 2001) as f32 / 1000.0 - 1.0)
                .collect();
            let one_shot = to_mono_16k(&input, rate, channels).unwrap();
            let mut r = Resampler16k::new(rate, channels).unwrap();
            let mut streamed = Vec::new();
            let mut rest = &input[..];
            let mut i = 0;
            while !rest.is_empty() {
                let n = chunks[i % chunks.len()].min(rest.len());
                streamed.extend(r.push(&rest[..n]));
                rest = &rest[n..];
                i += 1;
            }
            streamed.extend(r.flush());
            let expected = (frames as u64 * 16_000 + u64::from(rate) / 2) / u64::from(rate);
            prop_assert!(streamed.len().abs_diff(one_shot.len()) <= 2);
            prop_assert!((streamed.len() as u64).abs_diff(expected) <= 2);
        }
    }
}
