//! Moonshine (Useful Sensors) speech recognition: an audio encoder and a merged autoregressive
//! decoder with a key/value cache, run greedily through ONNX Runtime.
//!
//! Base and tiny differ in their inputs (tiny also takes attention masks) and cache geometry;
//! both are read from the sessions' input names and shapes at load, so one code path serves
//! both and a mismatched model directory is refused at load rather than at the first request.

use std::path::Path;

use ort::{
    session::{
        HasSelectedOutputs, OutputSelector, RunOptions, Session, SessionInputValue, SessionOutputs,
    },
    value::{DynValue, Tensor, TensorRef, ValueType},
};
use swictation_proto::{ComponentPlacement, Device};
use swictation_worker_kit::{ModelError, Runtime};

use crate::{
    files::ModelFiles,
    model::{InferenceError, SpeechModel, Transcription},
    tokenizer::{self, Tokenizer},
};

const SAMPLE_RATE: usize = 16_000;
/// Below 0.1 s there is no word to find, and the encoder's convolutions need some length anyway.
const MIN_SAMPLES: usize = SAMPLE_RATE / 10;
/// Moonshine's own bound on output length: nobody speaks faster than ~6.5 tokens a second, so
/// more than that means the decoder is looping on noise.
const TOKENS_PER_SECOND: f64 = 6.5;
const EXTRA_TOKENS: usize = 10;
/// Attention heads, when the model leaves the cache's head count dynamic (both published
/// Moonshine sizes use 8).
const DEFAULT_HEADS: i64 = 8;

/// What the encoder is fed, in the session's input order.
#[derive(Debug, Clone, Copy)]
enum EncoderFeed {
    Audio,
    /// Tiny only: ones over every sample.
    Mask,
}

/// What the decoder is fed, in the session's input order.
#[derive(Debug, Clone, Copy)]
enum DecoderFeed {
    Token,
    EncoderStates,
    /// Tiny only: ones over every audio sample (not encoder frame).
    EncoderMask,
    UseCacheBranch,
    /// The self-attention cache slot with this index, grown by one position each step.
    DecoderCache(usize),
    /// The cross-attention cache slot with this index, computed at step 0 and then constant.
    EncoderCache(usize),
}

/// One past-key/value input and the output that produces its next value.
#[derive(Debug, Clone, Copy)]
struct CacheSlot {
    /// Index of the matching `present.*` output.
    output: usize,
    heads: i64,
    head_dim: i64,
}

/// A loaded Moonshine model (base or tiny), ready to transcribe.
pub struct Moonshine {
    name: String,
    encoder: swictation_worker_kit::ModelSession,
    decoder: swictation_worker_kit::ModelSession,
    encoder_device: Device,
    decoder_device: Device,
    tokenizer: Tokenizer,
    encoder_feeds: Vec<EncoderFeed>,
    encoder_output: usize,
    decoder_feeds: Vec<DecoderFeed>,
    logits_output: usize,
    decoder_cache: Vec<CacheSlot>,
    encoder_cache: Vec<CacheSlot>,
    /// The decoder's output names, in session order, to place fetched values by name.
    decoder_outputs: Vec<String>,
    /// For steps after the first: fetch everything but the cross-attention cache, which the
    /// model only passes through then; fetching it would copy it out again on every token.
    later_steps: RunOptions<HasSelectedOutputs>,
    needs_mask: bool,
    timing: Timing,
}

/// Where the time of the last transcription went.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Timing {
    /// The encoder's run, seconds.
    pub encoder_s: f64,
    /// All decoder steps together, seconds.
    pub decoder_s: f64,
    /// Decoder steps run (tokens produced, plus the end token).
    pub steps: u32,
}

impl Moonshine {
    /// Where the time of the last [`SpeechModel::transcribe`] went.
    pub fn last_timing(&self) -> Timing {
        self.timing
    }

    /// Load the model in `dir` (which holds `encoder_model.ort`, `decoder_model_merged.ort` and
    /// `tokenizer.bin`, and after set-up their prepared forms in `prepared/`), with the encoder
    /// and decoder on the given devices. The prepared files are used when they match the
    /// shipped ones and this runtime; else the shipped files, and the reason is returned.
    ///
    /// The variant (base or tiny) is detected from the sessions' inputs and shapes; the name is
    /// the directory's name. Every error names the file involved.
    pub fn load(
        rt: &Runtime,
        dir: &Path,
        encoder: Device,
        decoder: Device,
    ) -> Result<(Self, Option<String>), ModelError> {
        if !dir.is_dir() {
            return Err(ModelError::Missing(dir.to_path_buf()));
        }
        let (files, notice) = ModelFiles::resolve(dir, rt.version());
        Ok((Self::load_files(rt, &files, encoder, decoder)?, notice))
    }

    /// Load the model from exactly these files.
    pub fn load_files(
        rt: &Runtime,
        files: &ModelFiles,
        encoder: Device,
        decoder: Device,
    ) -> Result<Self, ModelError> {
        // The tokenizer is the cheapest to check, so a broken install fails fast.
        let tokenizer = Tokenizer::load(&files.tokenizer)?;
        let on = |cpu: &std::path::PathBuf, cuda: &std::path::PathBuf, d: Device| match d {
            Device::Cpu => cpu.clone(),
            Device::Cuda(_) => cuda.clone(),
        };
        let encoder_path = on(&files.encoder, &files.encoder_cuda, encoder);
        let decoder_path = on(&files.decoder, &files.decoder_cuda, decoder);
        let dir = files.tokenizer.parent().unwrap_or(Path::new("."));
        let encoder_session = rt.session(&encoder_path, encoder)?;
        let decoder_session = rt.session(&decoder_path, decoder)?;

        let (encoder_feeds, encoder_output, hidden) =
            plan_encoder(&encoder_session).map_err(|reason| ModelError::Load {
                path: encoder_path.clone(),
                reason,
            })?;
        let plan = plan_decoder(&decoder_session, hidden).map_err(|reason| ModelError::Load {
            path: decoder_path.clone(),
            reason,
        })?;

        let decoder_outputs: Vec<String> = decoder_session
            .outputs()
            .iter()
            .map(|o| o.name().to_string())
            .collect();
        let later_steps = plan
            .encoder_cache
            .iter()
            .filter_map(|slot| decoder_outputs.get(slot.output))
            .fold(OutputSelector::default(), |selector, name| {
                selector.without(name.clone())
            });
        let later_steps = RunOptions::new()
            .map_err(|e| ModelError::Load {
                path: decoder_path.clone(),
                reason: e.to_string(),
            })?
            .with_outputs(later_steps);
        let needs_mask = encoder_feeds.iter().any(|f| matches!(f, EncoderFeed::Mask))
            || plan
                .feeds
                .iter()
                .any(|f| matches!(f, DecoderFeed::EncoderMask));
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| match hidden {
                Some(416) => "moonshine-base".to_string(),
                Some(288) => "moonshine-tiny".to_string(),
                _ => "moonshine".to_string(),
            });
        Ok(Self {
            name,
            encoder: encoder_session,
            decoder: decoder_session,
            encoder_device: encoder,
            decoder_device: decoder,
            tokenizer,
            encoder_feeds,
            encoder_output,
            decoder_feeds: plan.feeds,
            logits_output: plan.logits,
            decoder_cache: plan.decoder_cache,
            encoder_cache: plan.encoder_cache,
            decoder_outputs,
            later_steps,
            needs_mask,
            timing: Timing::default(),
        })
    }

    /// Run the encoder over the whole segment: `[1, frames, hidden]`.
    fn encode(
        &mut self,
        samples: &[f32],
        mask: Option<&DynValue>,
    ) -> Result<DynValue, InferenceError> {
        let n = samples.len();
        // Borrowed, so the audio is not copied on its way in.
        let audio =
            TensorRef::from_array_view(([1usize, n], samples)).map_err(fail("encoder input"))?;
        let mut feeds: Vec<SessionInputValue<'_>> = Vec::with_capacity(self.encoder_feeds.len());
        for feed in &self.encoder_feeds {
            feeds.push(match feed {
                EncoderFeed::Audio => (&*audio).into(),
                EncoderFeed::Mask => mask
                    .ok_or_else(|| InferenceError::new("encoder mask missing"))?
                    .into(),
            });
        }
        let outputs = self
            .encoder
            .run(feeds.as_slice())
            .map_err(fail("encoder"))?;
        outputs
            .into_iter()
            .nth(self.encoder_output)
            .map(|(_, v)| v)
            .ok_or_else(|| InferenceError::new("encoder returned no hidden states"))
    }

    /// Greedy decoding with the key/value cache; returns the text token ids (no start or end).
    fn decode(
        &mut self,
        states: &DynValue,
        mask: Option<&DynValue>,
        max_tokens: usize,
    ) -> Result<Vec<i64>, InferenceError> {
        let empty = |slot: &CacheSlot| -> Result<DynValue, InferenceError> {
            let shape = vec![1, slot.heads, 0, slot.head_dim];
            Ok(Tensor::<f32>::from_array((shape, Vec::new()))
                .map_err(fail("empty cache"))?
                .into_dyn())
        };
        // Step 0 sees zero-length pasts and computes the cross-attention cache; later steps
        // take the self-attention cache from the previous step's outputs as-is (no copy) and
        // keep borrowing step 0's cross-attention cache.
        let mut decoder_cache = self
            .decoder_cache
            .iter()
            .map(empty)
            .collect::<Result<Vec<_>, _>>()?;
        let mut encoder_cache = self
            .encoder_cache
            .iter()
            .map(empty)
            .collect::<Result<Vec<_>, _>>()?;
        let no_cache = Tensor::from_array(([1usize], vec![false])).map_err(fail("cache flag"))?;
        let with_cache = Tensor::from_array(([1usize], vec![true])).map_err(fail("cache flag"))?;

        let mut ids = Vec::new();
        let mut token = tokenizer::START;
        for step in 0..max_tokens {
            let input_ids =
                Tensor::from_array(([1usize, 1], vec![token])).map_err(fail("decoder input"))?;
            let use_cache = if step == 0 { &no_cache } else { &with_cache };
            let mut feeds: Vec<SessionInputValue<'_>> =
                Vec::with_capacity(self.decoder_feeds.len());
            for feed in &self.decoder_feeds {
                feeds.push(match *feed {
                    DecoderFeed::Token => (&input_ids).into(),
                    DecoderFeed::EncoderStates => states.into(),
                    DecoderFeed::EncoderMask => mask
                        .ok_or_else(|| InferenceError::new("decoder mask missing"))?
                        .into(),
                    DecoderFeed::UseCacheBranch => use_cache.into(),
                    DecoderFeed::DecoderCache(i) => (&decoder_cache[i]).into(),
                    DecoderFeed::EncoderCache(i) => (&encoder_cache[i]).into(),
                });
            }
            let outputs = if step == 0 {
                self.decoder.run(feeds.as_slice())
            } else {
                self.decoder
                    .run_with_options(feeds.as_slice(), &self.later_steps)
            }
            .map_err(|e| InferenceError::new(format!("decoder step {step}: {e}")))?;
            self.timing.steps += 1;
            let mut outputs = by_position(&self.decoder_outputs, outputs);
            drop(feeds);

            let logits = outputs
                .get(self.logits_output)
                .and_then(Option::as_ref)
                .ok_or_else(|| InferenceError::new("decoder returned no logits"))?;
            let (shape, logits) = logits
                .try_extract_tensor::<f32>()
                .map_err(fail("decoder logits"))?;
            // Only the last position's scores predict the next token.
            let vocab = shape.last().map_or(0, |&v| usize::try_from(v).unwrap_or(0));
            let next = argmax(&logits[logits.len().saturating_sub(vocab)..])
                .ok_or_else(|| InferenceError::new("decoder returned empty logits"))?;
            if next == tokenizer::END {
                break;
            }
            ids.push(next);
            token = next;

            let mut take = |slot: &CacheSlot| {
                outputs
                    .get_mut(slot.output)
                    .and_then(Option::take)
                    .ok_or_else(|| InferenceError::new("decoder returned no cache"))
            };
            for (value, slot) in decoder_cache.iter_mut().zip(&self.decoder_cache) {
                *value = take(slot)?;
            }
            if step == 0 {
                for (value, slot) in encoder_cache.iter_mut().zip(&self.encoder_cache) {
                    *value = take(slot)?;
                }
            }
        }
        Ok(ids)
    }
}

impl SpeechModel for Moonshine {
    fn name(&self) -> &str {
        &self.name
    }

    fn placement(&self) -> Vec<ComponentPlacement> {
        vec![
            ComponentPlacement {
                component: "encoder".into(),
                device: self.encoder_device,
            },
            ComponentPlacement {
                component: "decoder".into(),
                device: self.decoder_device,
            },
        ]
    }

    fn transcribe(&mut self, samples: &[f32]) -> Result<Transcription, InferenceError> {
        if samples.len() < MIN_SAMPLES {
            return Ok(Transcription::default());
        }
        let n = samples.len();
        // The same all-ones mask serves the encoder and the decoder's cross-attention: both are
        // over samples, and a single segment has no padding to hide.
        let mask = if self.needs_mask {
            Some(
                Tensor::from_array(([1usize, n], vec![1i64; n]))
                    .map_err(fail("attention mask"))?
                    .into_dyn(),
            )
        } else {
            None
        };
        self.timing = Timing::default();
        let t = std::time::Instant::now();
        let states = self.encode(samples, mask.as_ref())?;
        self.timing.encoder_s = t.elapsed().as_secs_f64();
        let frames = match states.dtype() {
            ValueType::Tensor { shape, .. } => shape.get(1).copied().unwrap_or(0),
            _ => 0,
        };
        if frames <= 0 {
            return Ok(Transcription::default());
        }
        let max_tokens =
            (n as f64 / SAMPLE_RATE as f64 * TOKENS_PER_SECOND).ceil() as usize + EXTRA_TOKENS;
        let t = std::time::Instant::now();
        let ids = self.decode(&states, mask.as_ref(), max_tokens)?;
        self.timing.decoder_s = t.elapsed().as_secs_f64();
        Ok(Transcription {
            text: self.tokenizer.decode(&ids),
            tokens: u32::try_from(ids.len()).unwrap_or(u32::MAX),
        })
    }
}

/// Place fetched outputs at their index in the session's output list (a selective run returns
/// only some of them), so cache slots can be addressed by index whichever outputs were fetched.
fn by_position(names: &[String], outputs: SessionOutputs<'_>) -> Vec<Option<DynValue>> {
    let mut placed: Vec<Option<DynValue>> = names.iter().map(|_| None).collect();
    for (name, value) in outputs {
        if let Some(i) = names.iter().position(|n| n == name) {
            placed[i] = Some(value);
        }
    }
    placed
}

/// Index of the largest logit; NaNs never win, so corrupt output cannot panic.
fn argmax(logits: &[f32]) -> Option<i64> {
    if logits.is_empty() {
        return None;
    }
    // A plain loop: this runs over the whole vocabulary once per token.
    let (mut best, mut best_score) = (0, f32::NEG_INFINITY);
    for (i, &score) in logits.iter().enumerate() {
        if score > best_score {
            best = i;
            best_score = score;
        }
    }
    i64::try_from(best).ok()
}

/// Map an ONNX Runtime error to a classified inference error, saying which stage failed.
fn fail(stage: &'static str) -> impl Fn(ort::Error) -> InferenceError {
    move |e| InferenceError::new(format!("{stage}: {e}"))
}

/// The dimensions of a tensor input or output, `-1` where dynamic.
fn dims(ty: &ValueType) -> Option<&[i64]> {
    match ty {
        ValueType::Tensor { shape, .. } => Some(&shape[..]),
        _ => None,
    }
}

/// Decide the encoder's feeds, which output holds the hidden states, and the hidden size if
/// the model states it.
fn plan_encoder(session: &Session) -> Result<(Vec<EncoderFeed>, usize, Option<i64>), String> {
    let mut feeds = Vec::new();
    for input in session.inputs() {
        feeds.push(match input.name() {
            "input_values" => EncoderFeed::Audio,
            "attention_mask" => EncoderFeed::Mask,
            other => {
                return Err(format!(
                    "unexpected encoder input `{other}`: not a Moonshine encoder"
                ))
            }
        });
    }
    if !feeds.iter().any(|f| matches!(f, EncoderFeed::Audio)) {
        return Err("encoder has no `input_values` input: not a Moonshine encoder".into());
    }
    let outputs = session.outputs();
    let output = outputs
        .iter()
        .position(|o| o.name() == "last_hidden_state")
        .ok_or("encoder has no `last_hidden_state` output: not a Moonshine encoder")?;
    let hidden = dims(outputs[output].dtype())
        .and_then(|d| d.get(2).copied())
        .filter(|&h| h > 0);
    Ok((feeds, output, hidden))
}

/// The decoder's feeds and outputs, resolved once at load.
struct DecoderPlan {
    feeds: Vec<DecoderFeed>,
    logits: usize,
    decoder_cache: Vec<CacheSlot>,
    encoder_cache: Vec<CacheSlot>,
}

/// Map every decoder input to its feed and every past key/value to the output that renews it,
/// refusing anything that is not a Moonshine merged decoder.
fn plan_decoder(session: &Session, encoder_hidden: Option<i64>) -> Result<DecoderPlan, String> {
    let outputs = session.outputs();
    let output_index = |name: &str| outputs.iter().position(|o| o.name() == name);
    let hidden = session
        .inputs()
        .iter()
        .find(|i| i.name() == "encoder_hidden_states")
        .and_then(|i| dims(i.dtype()))
        .and_then(|d| d.get(2).copied())
        .filter(|&h| h > 0)
        .or(encoder_hidden);
    if let (Some(a), Some(b)) = (hidden, encoder_hidden) {
        if a != b {
            return Err(format!(
                "decoder expects hidden size {a} but the encoder produces {b}: mixed model files?"
            ));
        }
    }

    let mut plan = DecoderPlan {
        feeds: Vec::new(),
        logits: 0,
        decoder_cache: Vec::new(),
        encoder_cache: Vec::new(),
    };
    for input in session.inputs() {
        let name = input.name();
        let feed = match name {
            "input_ids" => DecoderFeed::Token,
            "encoder_hidden_states" => DecoderFeed::EncoderStates,
            "encoder_attention_mask" => DecoderFeed::EncoderMask,
            "use_cache_branch" => DecoderFeed::UseCacheBranch,
            _ => {
                let Some(rest) = name.strip_prefix("past_key_values.") else {
                    return Err(format!(
                        "unexpected decoder input `{name}`: not a Moonshine merged decoder"
                    ));
                };
                let present = format!("present.{rest}");
                let output = output_index(&present)
                    .ok_or_else(|| format!("input `{name}` has no `{present}` output"))?;
                let d = dims(input.dtype()).unwrap_or(&[]);
                let known = |i: usize| d.get(i).copied().filter(|&v| v > 0);
                let heads = known(1).unwrap_or(DEFAULT_HEADS);
                let head_dim = known(3)
                    .or_else(|| hidden.map(|h| h / heads).filter(|&v| v > 0))
                    .ok_or_else(|| format!("cannot tell the head size of `{name}`"))?;
                let slot = CacheSlot {
                    output,
                    heads,
                    head_dim,
                };
                if rest.contains(".decoder.") {
                    plan.decoder_cache.push(slot);
                    DecoderFeed::DecoderCache(plan.decoder_cache.len() - 1)
                } else if rest.contains(".encoder.") {
                    plan.encoder_cache.push(slot);
                    DecoderFeed::EncoderCache(plan.encoder_cache.len() - 1)
                } else {
                    return Err(format!(
                        "cache input `{name}` is neither decoder nor encoder"
                    ));
                }
            }
        };
        plan.feeds.push(feed);
    }
    for (required, what) in [
        (DecoderFeed::Token, "input_ids"),
        (DecoderFeed::EncoderStates, "encoder_hidden_states"),
        (DecoderFeed::UseCacheBranch, "use_cache_branch"),
    ] {
        if !plan
            .feeds
            .iter()
            .any(|f| std::mem::discriminant(f) == std::mem::discriminant(&required))
        {
            return Err(format!(
                "decoder has no `{what}` input: not a Moonshine merged decoder"
            ));
        }
    }
    if plan.decoder_cache.is_empty() || plan.encoder_cache.is_empty() {
        return Err("decoder has no key/value cache inputs: not a Moonshine merged decoder".into());
    }
    plan.logits = output_index("logits").ok_or("decoder has no `logits` output")?;
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::argmax;

    #[test]
    fn argmax_ignores_nan_and_handles_empty() {
        assert_eq!(argmax(&[]), None);
        assert_eq!(argmax(&[0.5, f32::NAN, 2.0, 1.0]), Some(2));
        assert_eq!(argmax(&[f32::NAN, f32::NAN]), Some(0));
        assert_eq!(argmax(&[-3.0, -1.0, -2.0]), Some(1));
    }
}
