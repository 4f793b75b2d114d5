//! Which files a Moonshine model directory is loaded from: the shipped ones, or the prepared
//! forms beside them (see [`crate::prepare`]) when their manifest matches the files and the
//! runtime. Shared by the model (which loads) and the preparation (which writes), so neither
//! imports the other's internals.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The shipped encoder's file name in a model directory.
pub const ENCODER_FILE: &str = "encoder_model.ort";
/// The shipped merged decoder's file name.
pub const DECODER_FILE: &str = "decoder_model_merged.ort";
/// The tokenizer's file name (used as shipped).
pub const TOKENIZER_FILE: &str = "tokenizer.bin";

/// The two model files that are prepared; `tokenizer.bin` is used as shipped.
pub const PREPARED_FILES: [&str; 2] = [ENCODER_FILE, DECODER_FILE];
/// The prepared files' CUDA forms: the re-exported, named ONNX, which ONNX Runtime optimises
/// for the CUDA execution provider at load. (The ORT-format forms, folded for the CPU, fault on
/// CUDA at the decoder's first self-attention `MatMul`, as the shipped file does: cuBLAS
/// failure 13, seen with ONNX Runtime 1.31.1 on an H200.)
pub const CUDA_FILES: [&str; 2] = ["encoder_model.onnx", "decoder_model_merged.onnx"];
/// Folder inside a model directory holding the prepared files and their manifest.
pub const PREPARED_DIR: &str = "prepared";
/// The manifest's file name inside [`PREPARED_DIR`].
pub const MANIFEST: &str = "manifest.json";

/// What `prepared/manifest.json` says.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    /// The ONNX Runtime version that wrote the prepared files (ORT format is tied to it).
    pub ort_version: String,
    /// One entry per prepared file.
    pub files: Vec<PreparedFile>,
    /// Clips transcribed to identical text by the shipped and the prepared files.
    pub checked_clips: Vec<String>,
}

/// One prepared file and the shipped file it came from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PreparedFile {
    pub name: String,
    pub source_sha256: String,
    pub source_bytes: u64,
    pub sha256: String,
    pub bytes: u64,
}

/// Which files a model directory's model is loaded from.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    pub encoder: PathBuf,
    pub decoder: PathBuf,
    /// What the encoder and decoder load from on CUDA.
    pub encoder_cuda: PathBuf,
    pub decoder_cuda: PathBuf,
    pub tokenizer: PathBuf,
    /// Whether `encoder` and `decoder` are the prepared files.
    pub prepared: bool,
}

impl ModelFiles {
    /// The files as shipped in `dir`.
    pub fn shipped(dir: &Path) -> Self {
        Self {
            encoder: dir.join(ENCODER_FILE),
            decoder: dir.join(DECODER_FILE),
            encoder_cuda: dir.join(ENCODER_FILE),
            decoder_cuda: dir.join(DECODER_FILE),
            tokenizer: dir.join(TOKENIZER_FILE),
            prepared: false,
        }
    }

    /// The prepared files in `dir` when its manifest matches the shipped files beside them (by
    /// size: hashing 300 MB at every start would cost more than it proves) and `ort_version`;
    /// else the shipped files and the reason in words.
    pub fn resolve(dir: &Path, ort_version: &str) -> (Self, Option<String>) {
        let shipped = Self::shipped(dir);
        match prepared_state(dir, ort_version) {
            Ok(()) => {
                let p = dir.join(PREPARED_DIR);
                (
                    Self {
                        encoder: p.join(ENCODER_FILE),
                        decoder: p.join(DECODER_FILE),
                        encoder_cuda: p.join(CUDA_FILES[0]),
                        decoder_cuda: p.join(CUDA_FILES[1]),
                        prepared: true,
                        ..shipped
                    },
                    None,
                )
            }
            Err(why) => (shipped, Some(why)),
        }
    }
}

/// `Ok` when `dir` holds usable prepared files; else why not.
pub fn prepared_state(dir: &Path, ort_version: &str) -> Result<(), String> {
    let manifest_path = dir.join(PREPARED_DIR).join(MANIFEST);
    let text = std::fs::read_to_string(&manifest_path)
        .map_err(|_| format!("{} has no prepared models", dir.display()))?;
    let m: Manifest = serde_json::from_str(&text)
        .map_err(|e| format!("{} is unreadable: {e}", manifest_path.display()))?;
    if m.ort_version != ort_version {
        return Err(format!(
            "the prepared models in {} were written by ONNX Runtime {}, this is {ort_version}",
            dir.display(),
            m.ort_version
        ));
    }
    for (i, name) in PREPARED_FILES.iter().chain(&CUDA_FILES).enumerate() {
        let source = PREPARED_FILES[i % 2];
        let f = m
            .files
            .iter()
            .find(|f| f.name == *name)
            .ok_or_else(|| format!("{} lists no {name}", manifest_path.display()))?;
        let size = |p: PathBuf| std::fs::metadata(p).map(|m| m.len()).unwrap_or(u64::MAX);
        if size(dir.join(source)) != f.source_bytes {
            return Err(format!(
                "{} has changed since it was prepared",
                dir.join(source).display()
            ));
        }
        if size(dir.join(PREPARED_DIR).join(name)) != f.bytes {
            return Err(format!(
                "{} is missing or truncated",
                dir.join(PREPARED_DIR).join(name).display()
            ));
        }
    }
    Ok(())
}

/// The sha256 of a file, in hex.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}
