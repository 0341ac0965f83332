//! A trained masked language model read back from its run folder: its encoder, tokenizer and
//! config, per-token logits, and fill-mask.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use burn::prelude::*;
use serde::Serialize;

use super::config::MlmConfig;
use super::electra::{discriminator_as_mlm, electra_meta, run_paths};
use super::encoder::{EncoderConfig, MlmModel};
use super::examples::corpus_examples;
use super::masking::IGNORE;
use super::mlm::{MlmScores, heldout_scores, read_corpus};
use super::simcse::SimcseConfig;
use super::tokenizer::{Family, TextTokenizer};
use crate::core::checkpoint::{Checkpoint, load_module};

/// Whether a checkpoint's `kind` is a text encoder's (`mlm`, which SimCSE runs also write, or
/// `electra`), the runs [`MlmCheckpoint::load`] reads.
pub fn is_text_kind(kind: Option<&str>) -> bool {
    matches!(kind, Some("mlm" | "electra"))
}

/// A trained masked language model read back from its run folder.
pub struct MlmCheckpoint {
    pub model: MlmModel,
    pub encoder: EncoderConfig,
    pub tokenizer: TextTokenizer,
    pub config: MlmConfig,
    /// What SimCSE trained the encoder with, for a `pretext simcse train` run.
    pub simcse: Option<SimcseConfig>,
    /// Whether `model.head` is a trained masked-language-model head (not for an ELECTRA run,
    /// whose discriminator's encoder is read with the head left at its initialisation).
    pub mlm_head: bool,
    pub step: usize,
    pub dir: PathBuf,
}

impl MlmCheckpoint {
    /// Load `path` (a run folder, or its `checkpoint.safetensors`) with the `tokenizer.json`
    /// beside it, onto `device` (inference: no autodiff).
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let (dir, file) = run_paths(path);
        let ckpt = Checkpoint::load(&file)?;
        let kind = ckpt.meta["kind"].as_str();
        let (encoder, config) = match kind {
            Some("mlm") => {
                let encoder: EncoderConfig = serde_json::from_value(ckpt.meta["encoder"].clone())
                    .with_context(|| {
                    format!("{}: unreadable encoder settings", file.display())
                })?;
                let config: MlmConfig =
                    toml::from_str(ckpt.meta["config"].as_str().unwrap_or_default())
                        .map_err(|e| anyhow!("{}: unreadable run config: {e}", file.display()))?;
                (encoder, config)
            }
            Some("electra") => {
                let (encoder, _, config) = electra_meta(&ckpt, &file)?;
                (encoder, config.as_mlm())
            }
            _ => bail!(
                "{} is not a text encoder's checkpoint (mlm, simcse or electra; it was written \
                 by `pretext pretrain`?)",
                file.display()
            ),
        };
        let simcse = match ckpt.meta["simcse"]["config"].as_str() {
            Some(text) => Some(
                toml::from_str(text)
                    .map_err(|e| anyhow!("{}: unreadable SimCSE config: {e}", file.display()))?,
            ),
            None => None,
        };
        let tokenizer = TextTokenizer::load(&dir.join("tokenizer.json"))?;
        if tokenizer.vocab_size() != encoder.vocab_size || tokenizer.family() != encoder.family {
            bail!(
                "{}: the tokenizer ({} ids, {}) does not belong to this model ({} ids, {})",
                dir.join("tokenizer.json").display(),
                tokenizer.vocab_size(),
                tokenizer.family().name(),
                encoder.vocab_size,
                encoder.family.name()
            );
        }
        let mlm_head = kind == Some("mlm");
        let model = if mlm_head {
            load_module(encoder.init(device)?, &ckpt.model)
        } else {
            discriminator_as_mlm(&ckpt, &encoder, device)
        }
        .with_context(|| format!("loading weights from {}", file.display()))?;
        Ok(MlmCheckpoint {
            model,
            encoder,
            tokenizer,
            config,
            simcse,
            mlm_head,
            step: ckpt.meta["step"].as_u64().unwrap_or(0) as usize,
            dir,
        })
    }

    /// What trained the encoder: `mlm`, `simcse` or `electra`.
    pub fn objective(&self) -> &'static str {
        match (self.mlm_head, &self.simcse) {
            (false, _) => "electra",
            (true, Some(_)) => "simcse",
            (true, None) => "mlm",
        }
    }

    /// An error for what needs the masked-language-model head, where the run has none (an
    /// ELECTRA discriminator).
    pub fn require_mlm_head(&self, what: &str) -> Result<()> {
        if self.mlm_head {
            Ok(())
        } else {
            bail!(
                "{} holds an ELECTRA discriminator, which has no masked-language-model head for \
                 {what}; `pretext electra` reads the whole run (its generator predicts tokens)",
                self.dir.display()
            )
        }
    }

    /// Held-out scores on the lines of `corpus` that training held out (same
    /// `data.holdout_every`), or on all of it when `all_lines`.
    pub fn evaluate_corpus(
        &self,
        corpus: &Path,
        all_lines: bool,
        device: &Device,
    ) -> Result<MlmScores> {
        self.require_mlm_head("masked-token scores")?;
        let data = &self.config.data;
        let lines = if all_lines {
            read_corpus(corpus, 0, data.max_lines)?.train
        } else {
            let split = read_corpus(corpus, data.holdout_every, data.max_lines)?;
            if split.heldout.is_empty() {
                bail!(
                    "{}: training held out no lines (data.holdout_every = 0); pass --all-lines to score the whole file",
                    corpus.display()
                );
            }
            split.heldout
        };
        let examples = corpus_examples(
            &self.tokenizer,
            &lines,
            data.max_len,
            data.mode,
            &corpus.display().to_string(),
        )?;
        heldout_scores(
            &self.model,
            &self.tokenizer,
            &examples,
            &self.config,
            device,
        )
    }
}

/// Token ids and logits `[len][vocab]` of each of a few sentences.
#[derive(Debug, Clone, Serialize)]
pub struct SentenceLogits {
    pub sentences: Vec<String>,
    pub input_ids: Vec<Vec<u32>>,
    pub logits: Vec<Vec<Vec<f32>>>,
}

impl MlmCheckpoint {
    /// Token ids (with special tokens) and logits of each sentence, run one at a time without
    /// padding.
    pub fn sentence_logits(&self, sentences: &[String], device: &Device) -> Result<SentenceLogits> {
        self.require_mlm_head("logits")?;
        let mut all_ids = Vec::new();
        let mut all_logits = Vec::new();
        for sentence in sentences {
            let ids = self.tokenizer.encode(sentence)?;
            let (input, attention) = one_sequence(&ids, device);
            let logits = self.model.logits(input, attention)?;
            let vocab = logits.dims()[2];
            let values = logits
                .into_data()
                .convert::<f32>()
                .try_to_vec::<f32>()
                .map_err(|e| anyhow!("reading logits: {e:?}"))?;
            all_logits.push(values.chunks(vocab).map(<[f32]>::to_vec).collect());
            all_ids.push(ids);
        }
        Ok(SentenceLogits {
            sentences: sentences.to_vec(),
            input_ids: all_ids,
            logits: all_logits,
        })
    }
}

/// One candidate for a masked position.
#[derive(Debug, Clone, Serialize)]
pub struct Prediction {
    pub token: String,
    pub id: u32,
    pub probability: f64,
}

/// The `top_k` most likely tokens at each mask token of `text`, left to right.
pub fn fill_mask(
    ckpt: &MlmCheckpoint,
    text: &str,
    top_k: usize,
    device: &Device,
) -> Result<Vec<Vec<Prediction>>> {
    ckpt.require_mlm_head("fill-mask")?;
    let tokenizer = &ckpt.tokenizer;
    let mask_token = tokenizer.family().special_tokens().mask;
    let ids = tokenizer.encode(text)?;
    let positions: Vec<usize> = ids
        .iter()
        .enumerate()
        .filter(|(_, id)| **id == tokenizer.mask_id())
        .map(|(i, _)| i)
        .collect();
    if positions.is_empty() {
        let other = match tokenizer.family() {
            Family::Bert => Family::Roberta,
            Family::Roberta => Family::Bert,
        }
        .special_tokens()
        .mask;
        let hint = if text.contains(other) {
            format!(" ({other} is the other family's mask token)")
        } else if text.to_lowercase().contains(&mask_token.to_lowercase()) {
            format!(" (the mask token is case-sensitive: write {mask_token})")
        } else {
            String::new()
        };
        bail!(
            "no {mask_token} in \"{text}\": this is a {} model, mark the word to guess with {mask_token}{hint}",
            tokenizer.family().name()
        );
    }
    if ids.len() > ckpt.encoder.max_sequence_len() {
        bail!(
            "the text has {} tokens, more than the model's {} positions",
            ids.len(),
            ckpt.encoder.max_sequence_len()
        );
    }
    let len = ids.len();
    let (input, attention) = one_sequence(&ids, device);
    let mut labels = vec![IGNORE; len];
    for &p in &positions {
        labels[p] = i64::from(tokenizer.mask_id());
    }
    let (log_probs, _) = ckpt.model.masked_log_probs(input, attention, &labels)?;
    let vocab = log_probs.dims()[1];
    let probs = log_probs
        .exp()
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .map_err(|e| anyhow!("reading probabilities: {e:?}"))?;
    if probs.iter().any(|p| !p.is_finite()) {
        bail!(
            "the model's probabilities are not finite: its weights overflow (a training run that \
             diverged); train it again with a lower optimizer.lr"
        );
    }
    Ok(probs
        .chunks(vocab)
        .map(|row| {
            let mut order: Vec<usize> = (0..vocab).collect();
            order.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
            order
                .into_iter()
                .take(top_k.max(1))
                .map(|id| Prediction {
                    token: tokenizer.id_to_token(id as u32).unwrap_or_default(),
                    id: id as u32,
                    probability: f64::from(row[id]),
                })
                .collect()
        })
        .collect())
}

/// One unpadded sequence as a batch of one: its ids and an all-true attention mask.
fn one_sequence(ids: &[u32], device: &Device) -> (Tensor<2, Int>, Tensor<2, Bool>) {
    let len = ids.len();
    let input = Tensor::<2, Int>::from_data(
        TensorData::new(ids.iter().map(|&i| i64::from(i)).collect(), [1, len]),
        device,
    );
    let attention =
        Tensor::<2, Bool>::from_data(TensorData::new(vec![true; len], [1, len]), device);
    (input, attention)
}
