//! Prepared models: the shipped Moonshine `.ort` files turned, once at set-up, into a form that
//! ONNX Runtime runs several times faster, cached beside them and checked.
//!
//! The shipped files were saved without their weight chains folded: every decoder step turns
//! the int8 weights back into float (`Cast`, `Mul`, `Transpose`), and an ORT-format file gets
//! no graph optimisation at load. Preparing is three passes through ONNX Runtime itself:
//!
//! 1. load the shipped `.ort` and have ONNX Runtime write the graph back out as ONNX;
//! 2. name the subgraphs of the decoder's `If` node, which come out unnamed (the one thing the
//!    ONNX loader then rejects), and split tiny-en's CPU-only `FusedConv` nodes into `Conv` and
//!    their activation (so the encoder runs on CUDA): wire-format edits in [`name_subgraphs`]
//!    that keep every other byte as it was;
//! 3. load that ONNX with basic graph optimisation (constant folding: the weight chains are
//!    computed once, here) and save it in ORT format, which loads fast and is optimised no
//!    further at run time.
//!
//! Basic optimisation only: it rewrites nothing for a particular execution provider, so the
//! same prepared file runs on the CPU and on CUDA. The result is checked by transcribing the
//! canary and the LibriVox clips with the shipped and the prepared files: the texts must be
//! identical, else nothing is installed. (Not by a pinned sha256: ONNX Runtime 1.32.0 wrote
//! different bytes for the same input in successive runs.) A manifest records the source and
//! output hashes and the ONNX Runtime version; the worker uses the prepared files only when the
//! manifest matches the files beside it (by size) and the runtime it runs on; `doctor` checks
//! the hashes.

use std::path::Path;

use swictation_proto::Device;
use swictation_worker_kit::{GraphOptimizationLevel, Runtime};

use crate::files::{
    prepared_state, sha256_file, Manifest, ModelFiles, PreparedFile, CUDA_FILES, DECODER_FILE,
    ENCODER_FILE, MANIFEST, PREPARED_DIR, PREPARED_FILES,
};
use crate::{Moonshine, SpeechModel};

/// A clip to check the prepared model with: its name and 16 kHz mono samples.
pub struct Clip {
    pub name: String,
    pub samples: Vec<f32>,
}

impl Clip {
    /// Read a 16 kHz mono 16-bit WAV or a raw s16le 16 kHz `.raw` file.
    pub fn read(path: &Path) -> Result<Self, String> {
        let bytes =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let pcm = if path.extension().is_some_and(|e| e == "raw") {
            &bytes[..]
        } else {
            wav_data(&bytes)
                .ok_or_else(|| format!("{} is not a 16 kHz mono 16-bit WAV file", path.display()))?
        };
        let samples = pcm
            .chunks_exact(2)
            .map(|c| f32::from(i16::from_le_bytes([c[0], c[1]])) / 32768.0)
            .collect();
        Ok(Self {
            name: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            samples,
        })
    }
}

/// The `data` chunk of a 16 kHz mono PCM16 WAV file.
fn wav_data(b: &[u8]) -> Option<&[u8]> {
    if b.len() < 12 || &b[0..4] != b"RIFF" || &b[8..12] != b"WAVE" {
        return None;
    }
    let mut at = 12;
    let mut format_ok = false;
    while at + 8 <= b.len() {
        let id = &b[at..at + 4];
        let len = u32::from_le_bytes(b[at + 4..at + 8].try_into().ok()?) as usize;
        let body = b.get(at + 8..(at + 8 + len).min(b.len()))?;
        if id == b"fmt " && body.len() >= 16 {
            let channels = u16::from_le_bytes([body[2], body[3]]);
            let rate = u32::from_le_bytes(body[4..8].try_into().ok()?);
            let bits = u16::from_le_bytes([body[14], body[15]]);
            format_ok = channels == 1 && rate == 16_000 && bits == 16;
        } else if id == b"data" {
            return format_ok.then_some(body);
        }
        at += 8 + len + (len & 1);
    }
    None
}

/// Prepare the model in `dir`: write `dir/prepared/` (files and manifest) unless it is already
/// there and valid for this runtime, and check it on `clips`. Returns what was done, in words.
pub fn prepare(rt: &Runtime, dir: &Path, clips: &[Clip], force: bool) -> Result<String, String> {
    let out = dir.join(PREPARED_DIR);
    if !force && prepared_state(dir, rt.version()).is_ok() {
        return Ok(format!("{} is already prepared", dir.display()));
    }
    if clips.is_empty() {
        return Err("no clips to check the prepared model with".into());
    }
    // A fixed name: ONNX Runtime records paths in what it writes, and the output should not
    // depend on the process id.
    let work = dir.join(".preparing");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(|e| format!("cannot create {}: {e}", work.display()))?;
    let result = (|| {
        let mut files = Vec::new();
        for name in PREPARED_FILES {
            let src = dir.join(name);
            let exported = work.join(format!("{name}.onnx"));
            rt.write_optimized(&src, &exported, GraphOptimizationLevel::Disable)
                .map_err(|e| e.to_string())?;
            let bytes = std::fs::read(&exported)
                .map_err(|e| format!("cannot read {}: {e}", exported.display()))?;
            let named =
                name_subgraphs(&bytes).map_err(|e| format!("{}: {e}", exported.display()))?;
            std::fs::write(&exported, named)
                .map_err(|e| format!("cannot write {}: {e}", exported.display()))?;
            let dst = work.join(name);
            rt.write_optimized(&exported, &dst, GraphOptimizationLevel::Level1)
                .map_err(|e| e.to_string())?;
            let cuda_name = CUDA_FILES[files.len() / 2];
            let cuda = work.join(cuda_name);
            std::fs::rename(&exported, &cuda)
                .map_err(|e| format!("cannot rename {}: {e}", exported.display()))?;
            let meta = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
            let source_sha256 = sha256_file(&src).map_err(|e| e.to_string())?;
            for (n, p) in [(name, &dst), (cuda_name, &cuda)] {
                files.push(PreparedFile {
                    name: n.to_string(),
                    source_sha256: source_sha256.clone(),
                    source_bytes: meta(&src),
                    sha256: sha256_file(p).map_err(|e| e.to_string())?,
                    bytes: meta(p),
                });
            }
        }
        // The check: every clip must come out as the same text through both.
        let shipped = ModelFiles::shipped(dir);
        let prepared = ModelFiles {
            encoder: work.join(ENCODER_FILE),
            decoder: work.join(DECODER_FILE),
            encoder_cuda: work.join(CUDA_FILES[0]),
            decoder_cuda: work.join(CUDA_FILES[1]),
            prepared: true,
            ..shipped.clone()
        };
        // The CUDA forms, checked here on the CPU (same graph; ONNX Runtime folds it at load).
        let cuda_forms = ModelFiles {
            encoder: prepared.encoder_cuda.clone(),
            decoder: prepared.decoder_cuda.clone(),
            ..prepared.clone()
        };
        let mut a = Moonshine::load_files(rt, &shipped, Device::Cpu, Device::Cpu)
            .map_err(|e| e.to_string())?;
        let mut b = Moonshine::load_files(rt, &prepared, Device::Cpu, Device::Cpu)
            .map_err(|e| e.to_string())?;
        let mut c = Moonshine::load_files(rt, &cuda_forms, Device::Cpu, Device::Cpu)
            .map_err(|e| e.to_string())?;
        let mut checked = Vec::new();
        for clip in clips {
            let ta = a.transcribe(&clip.samples).map_err(|e| e.to_string())?;
            for (form, m) in [("prepared", &mut b), ("prepared CUDA-form", &mut c)] {
                let tb = m.transcribe(&clip.samples).map_err(|e| e.to_string())?;
                if ta.text != tb.text || ta.text.is_empty() {
                    return Err(format!(
                        "the {form} model hears {} differently from the shipped one ({} vs {} tokens): not installed",
                        clip.name, tb.tokens, ta.tokens
                    ));
                }
            }
            checked.push(clip.name.clone());
        }
        drop((a, b, c));
        let manifest = Manifest {
            ort_version: rt.version().to_string(),
            files,
            checked_clips: checked,
        };
        std::fs::write(
            work.join(MANIFEST),
            serde_json::to_string_pretty(&manifest).map_err(|e| e.to_string())?,
        )
        .map_err(|e| format!("cannot write the manifest: {e}"))?;
        let _ = std::fs::remove_dir_all(&out);
        std::fs::rename(&work, &out)
            .map_err(|e| format!("cannot move the prepared files to {}: {e}", out.display()))?;
        Ok(format!(
            "prepared {} ({}), checked on {} clips",
            dir.display(),
            manifest
                .files
                .iter()
                .map(|f| format!("{} {} MB", f.name, f.bytes / 1_000_000))
                .collect::<Vec<_>>()
                .join(", "),
            manifest.checked_clips.len()
        ))
    })();
    let _ = std::fs::remove_dir_all(&work);
    result
}

// ---- Protocol-buffer wire format: just enough to name the subgraphs of an ONNX model ----------
//
// ModelProto.graph = 7 → GraphProto.node = 1 → NodeProto.attribute = 5 → AttributeProto.g = 6
// (and .graphs = 11) → GraphProto.name = 2. Every other field is copied byte for byte.

const MODEL_GRAPH: u64 = 7;
const GRAPH_NODE: u64 = 1;
const GRAPH_NAME: u64 = 2;
const NODE_NAME: u64 = 3;
const NODE_ATTRIBUTE: u64 = 5;
const ATTR_NAME: u64 = 1;
const ATTR_G: u64 = 6;
const ATTR_GRAPHS: u64 = 11;

/// One field of a message: its number, wire type and where its bytes lie.
struct Field {
    number: u64,
    wire: u8,
    /// The whole field, tag included.
    whole: std::ops::Range<usize>,
    /// For length-delimited fields, the payload.
    payload: std::ops::Range<usize>,
}

fn varint(b: &[u8], at: &mut usize) -> Result<u64, String> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*at).ok_or("truncated varint")?;
        *at += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err("varint too long".into())
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn fields(b: &[u8]) -> Result<Vec<Field>, String> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < b.len() {
        let start = at;
        let tag = varint(b, &mut at)?;
        let (number, wire) = (tag >> 3, (tag & 7) as u8);
        let payload = match wire {
            0 => {
                varint(b, &mut at)?;
                at..at
            }
            1 => {
                at += 8;
                at..at
            }
            5 => {
                at += 4;
                at..at
            }
            2 => {
                let len = usize::try_from(varint(b, &mut at)?).map_err(|_| "length too big")?;
                let p = at..at.checked_add(len).ok_or("length overflow")?;
                at = p.end;
                p
            }
            w => return Err(format!("unsupported wire type {w} (field {number})")),
        };
        if at > b.len() {
            return Err(format!("field {number} runs past the end of its message"));
        }
        out.push(Field {
            number,
            wire,
            whole: start..at,
            payload,
        });
    }
    Ok(out)
}

fn put_len(out: &mut Vec<u8>, number: u64, payload: &[u8]) {
    put_varint(out, number << 3 | 2);
    put_varint(out, payload.len() as u64);
    out.extend_from_slice(payload);
}

/// Rewrite a message: fields for which `edit` returns a new payload are re-encoded, the rest
/// copied as they were.
fn rewrite(
    b: &[u8],
    mut edit: impl FnMut(&Field, &[u8]) -> Result<Option<Vec<u8>>, String>,
) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(b.len() + 64);
    for f in fields(b)? {
        match (f.wire == 2)
            .then(|| edit(&f, &b[f.payload.clone()]))
            .transpose()?
            .flatten()
        {
            Some(new) => put_len(&mut out, f.number, &new),
            None => out.extend_from_slice(&b[f.whole.clone()]),
        }
    }
    Ok(out)
}

fn string_field(b: &[u8], number: u64) -> Option<String> {
    let fs = fields(b).ok()?;
    fs.iter()
        .rev()
        .find(|f| f.number == number && f.wire == 2)
        .map(|f| String::from_utf8_lossy(&b[f.payload.clone()]).into_owned())
}

/// Give every unnamed subgraph (at any depth) a name made of its node's name and attribute,
/// e.g. `If_0_then_branch`. Returns the rewritten `ModelProto`.
pub fn name_subgraphs(model: &[u8]) -> Result<Vec<u8>, String> {
    let mut seen_graph = false;
    let out = rewrite(model, |f, p| {
        if f.number != MODEL_GRAPH {
            return Ok(None);
        }
        seen_graph = true;
        Ok(Some(graph(p, None)?))
    })?;
    if !seen_graph {
        return Err("no graph in the model (not an ONNX ModelProto?)".into());
    }
    Ok(out)
}

/// A `GraphProto`: name it `name` if it has no name, recurse into its nodes, and split each
/// CPU-only `FusedConv` into a standard `Conv` and its activation (see [`unfuse`]).
fn graph(b: &[u8], name: Option<&str>) -> Result<Vec<u8>, String> {
    let mut named = false;
    let mut out = Vec::with_capacity(b.len() + 64);
    for f in fields(b)? {
        let p = &b[f.payload.clone()];
        match (f.number, f.wire) {
            (GRAPH_NODE, 2) => {
                let n = node(p)?;
                match unfuse(&n)? {
                    Some((conv, act)) => {
                        put_len(&mut out, GRAPH_NODE, &conv);
                        put_len(&mut out, GRAPH_NODE, &act);
                    }
                    None => put_len(&mut out, GRAPH_NODE, &n),
                }
            }
            (GRAPH_NAME, 2) if p.is_empty() && name.is_some() => {
                put_len(&mut out, GRAPH_NAME, name.unwrap_or_default().as_bytes());
                named = true;
            }
            (GRAPH_NAME, 2) => {
                named = true;
                out.extend_from_slice(&b[f.whole.clone()]);
            }
            _ => out.extend_from_slice(&b[f.whole.clone()]),
        }
    }
    if let (false, Some(n)) = (named, name) {
        put_len(&mut out, GRAPH_NAME, n.as_bytes());
    }
    Ok(out)
}

const NODE_INPUT: u64 = 1;
const NODE_OUTPUT: u64 = 2;
const NODE_OP_TYPE: u64 = 4;
const NODE_DOMAIN: u64 = 7;
const ATTR_F: u64 = 2;
const ATTR_S: u64 = 4;
const ATTR_FLOATS: u64 = 7;
const ATTR_TYPE: u64 = 20;
const ATTR_TYPE_FLOAT: u64 = 1;

/// Two encoded `NodeProto`s: a convolution and the activation after it.
type NodePair = (Vec<u8>, Vec<u8>);

/// `FusedConv` (ONNX Runtime's CPU-only contrib op: a convolution and its activation in one
/// node, written into tiny-en's encoder for the CPU) as a standard `Conv` writing
/// `OUTPUT_conv` and the activation reading it. The CUDA execution provider registers its own
/// `FusedConv` for `Relu` only and refuses the session otherwise; standard ops run anywhere.
/// `None` for any other node, or a `FusedConv` this cannot split (a sum input `Z`, an
/// activation without a standard one-input equivalent).
fn unfuse(n: &[u8]) -> Result<Option<NodePair>, String> {
    let fs = fields(n)?;
    let text = |f: &Field| String::from_utf8_lossy(&n[f.payload.clone()]).into_owned();
    let op = fs.iter().rfind(|f| f.number == NODE_OP_TYPE).map(text);
    let domain = fs.iter().rfind(|f| f.number == NODE_DOMAIN).map(text);
    if op.as_deref() != Some("FusedConv") || domain.as_deref() != Some("com.microsoft") {
        return Ok(None);
    }
    let inputs = fs.iter().filter(|f| f.number == NODE_INPUT).count();
    let outputs: Vec<String> = fs
        .iter()
        .filter(|f| f.number == NODE_OUTPUT)
        .map(text)
        .collect();
    if inputs > 3 || outputs.len() != 1 {
        return Ok(None);
    }
    let (mut activation, mut params) = (None, Vec::new());
    for f in fs.iter().filter(|f| f.number == NODE_ATTRIBUTE) {
        let a = &n[f.payload.clone()];
        match string_field(a, ATTR_NAME).as_deref() {
            Some("activation") => activation = string_field(a, ATTR_S),
            Some("activation_params") => params = floats(a)?,
            _ => {}
        }
    }
    let name = string_field(n, NODE_NAME).unwrap_or_default();
    let mid = format!("{}_conv", outputs[0]);
    let mut act_attrs = Vec::new();
    let act = match (activation.as_deref(), params.as_slice()) {
        (Some(op @ ("Relu" | "Tanh" | "Sigmoid")), _) => op,
        (Some("LeakyRelu"), [alpha]) => {
            let mut a = Vec::new();
            put_len(&mut a, ATTR_NAME, b"alpha");
            put_varint(&mut a, ATTR_F << 3 | 5);
            a.extend_from_slice(&alpha.to_le_bytes());
            put_varint(&mut a, ATTR_TYPE << 3);
            put_varint(&mut a, ATTR_TYPE_FLOAT);
            act_attrs.push(a);
            "LeakyRelu"
        }
        _ => return Ok(None),
    };
    // The convolution: every field kept but the op, domain, output, name and the activation
    // attributes.
    let mut conv = Vec::with_capacity(n.len());
    for f in &fs {
        match f.number {
            NODE_OP_TYPE | NODE_DOMAIN | NODE_OUTPUT | NODE_NAME => {}
            NODE_ATTRIBUTE
                if matches!(
                    string_field(&n[f.payload.clone()], ATTR_NAME).as_deref(),
                    Some("activation" | "activation_params")
                ) => {}
            _ => conv.extend_from_slice(&n[f.whole.clone()]),
        }
    }
    put_len(&mut conv, NODE_OUTPUT, mid.as_bytes());
    put_len(&mut conv, NODE_NAME, format!("{name}_conv").as_bytes());
    put_len(&mut conv, NODE_OP_TYPE, b"Conv");
    let mut a = Vec::new();
    put_len(&mut a, NODE_INPUT, mid.as_bytes());
    put_len(&mut a, NODE_OUTPUT, outputs[0].as_bytes());
    put_len(&mut a, NODE_NAME, format!("{name}_{act}").as_bytes());
    put_len(&mut a, NODE_OP_TYPE, act.as_bytes());
    for attr in act_attrs {
        put_len(&mut a, NODE_ATTRIBUTE, &attr);
    }
    Ok(Some((conv, a)))
}

/// The `floats` of an `AttributeProto`, packed or not.
fn floats(a: &[u8]) -> Result<Vec<f32>, String> {
    let mut out = Vec::new();
    for f in fields(a)?.into_iter().filter(|f| f.number == ATTR_FLOATS) {
        match f.wire {
            2 => out.extend(
                a[f.payload.clone()]
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            ),
            5 => {
                let end = f.whole.end;
                out.push(f32::from_le_bytes(
                    a[end - 4..end].try_into().map_err(|_| "short float")?,
                ));
            }
            _ => {}
        }
    }
    Ok(out)
}

/// A `NodeProto`: name the subgraphs in its attributes.
fn node(b: &[u8]) -> Result<Vec<u8>, String> {
    let node_name = string_field(b, NODE_NAME)
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "node".to_string());
    rewrite(b, |f, p| {
        if f.number != NODE_ATTRIBUTE {
            return Ok(None);
        }
        let attr_name = string_field(p, ATTR_NAME).unwrap_or_else(|| "attr".to_string());
        let mut k = 0;
        Ok(Some(rewrite(p, |g, q| match g.number {
            ATTR_G => Ok(Some(graph(
                q,
                Some(&subgraph_name(&node_name, &attr_name, None)),
            )?)),
            ATTR_GRAPHS => {
                k += 1;
                Ok(Some(graph(
                    q,
                    Some(&subgraph_name(&node_name, &attr_name, Some(k - 1))),
                )?))
            }
            _ => Ok(None),
        })?))
    })
}

fn subgraph_name(node: &str, attr: &str, index: Option<usize>) -> String {
    let clean: String = node
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    match index {
        Some(i) => format!("{}_{attr}_{i}", clean.trim_matches('_')),
        None => format!("{}_{attr}", clean.trim_matches('_')),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(fields: &[(u64, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (n, p) in fields {
            put_len(&mut out, *n, p);
        }
        out
    }

    #[test]
    fn unnamed_subgraphs_get_names_and_everything_else_is_kept() {
        // A subgraph with an empty name and an unknown varint field (42 = 7).
        let mut sub = msg(&[(GRAPH_NAME, b"")]);
        put_varint(&mut sub, 42 << 3);
        put_varint(&mut sub, 7);
        let attr = msg(&[(ATTR_NAME, b"then_branch"), (ATTR_G, &sub)]);
        let node = msg(&[(NODE_NAME, b"/model/If"), (NODE_ATTRIBUTE, &attr)]);
        let g = msg(&[(GRAPH_NODE, &node), (GRAPH_NAME, b"main")]);
        let mut model = Vec::new();
        put_varint(&mut model, 1 << 3); // ir_version = 8
        put_varint(&mut model, 8);
        put_len(&mut model, MODEL_GRAPH, &g);

        let out = name_subgraphs(&model).unwrap();
        let top = fields(&out).unwrap();
        assert_eq!(&out[top[0].whole.clone()], &model[..2], "ir_version kept");
        let g = &out[top[1].payload.clone()];
        assert_eq!(string_field(g, GRAPH_NAME).as_deref(), Some("main"));
        let node = fields(g)
            .unwrap()
            .into_iter()
            .find(|f| f.number == GRAPH_NODE)
            .unwrap();
        let node = &g[node.payload];
        let attr = fields(node)
            .unwrap()
            .into_iter()
            .find(|f| f.number == NODE_ATTRIBUTE)
            .unwrap();
        let attr = &node[attr.payload];
        let sub = fields(attr)
            .unwrap()
            .into_iter()
            .find(|f| f.number == ATTR_G)
            .unwrap();
        let sub = &attr[sub.payload];
        assert_eq!(
            string_field(sub, GRAPH_NAME).as_deref(),
            Some("model_If_then_branch")
        );
        let unknown = fields(sub)
            .unwrap()
            .into_iter()
            .find(|f| f.number == 42)
            .unwrap();
        let mut want = Vec::new();
        put_varint(&mut want, 42 << 3);
        put_varint(&mut want, 7);
        assert_eq!(
            &sub[unknown.whole],
            &want[..],
            "unknown field kept byte for byte"
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(name_subgraphs(&[0xff, 0xff, 0xff]).is_err());
        assert!(
            name_subgraphs(&[0x0a, 0x10, 1]).is_err(),
            "length past the end"
        );
        assert!(name_subgraphs(&[]).is_err(), "no graph");
    }
}
