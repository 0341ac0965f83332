//! The masked-language-model config (`pretext mlm train`): tokenizer, model size, data,
//! masking, optimizer, and the shared `train` table.

use std::path::Path;

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use super::encoder::{EncoderConfig, NormPlacement, SizePreset};
use super::examples::ExampleMode;
use super::masking::MaskingConfig;
use super::tokenizer::{Family, TextTokenizer};
use crate::core::config::TrainConfig;
use crate::core::optim::OptimConfig;

/// `[tokenizer]`: train one on the corpus, or load `path`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokenizerSettings {
    /// `bert` (WordPiece) or `roberta` (byte-level BPE).
    pub family: Family,
    pub vocab_size: usize,
    pub lowercase: bool,
    /// An existing `tokenizer.json`; empty trains one on the corpus.
    pub path: String,
}

/// `[model]`: a size preset, with any field overridden when non-zero.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelSettings {
    pub size: SizePreset,
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub ffn: usize,
    pub dropout: f64,
    /// `post` (BERT's layers) or `pre` (a LayerNorm before each sublayer: stable at the
    /// higher learning rates of short budgets; exported as `RobertaPreLayerNorm`).
    pub norm: NormPlacement,
    /// How the token embeddings start: `random` (BERT's normal, std 0.02) or `word2vec`
    /// (skip-gram vectors of the pieces on the same corpus, see [`super::token_vectors`]).
    pub embedding_init: EmbeddingInit,
    /// How the position table starts: `random` (BERT's normal, std 0.02) or `sinusoid` (the
    /// Transformer's sines and cosines at the same spread, still learned; see
    /// [`super::mlm::initial_embeddings`]).
    pub position_init: PositionInit,
}

/// `model.position_init`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PositionInit {
    #[default]
    Random,
    Sinusoid,
}

/// `model.embedding_init`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EmbeddingInit {
    #[default]
    Random,
    Word2Vec,
}

/// `[data]`: how the corpus becomes examples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TextDataSettings {
    /// `packed` (blocks of `max_len`, RoBERTa and `run_mlm.py`'s default) or `line_by_line`.
    pub mode: ExampleMode,
    /// Tokens per example, special tokens included.
    pub max_len: usize,
    /// Every n-th non-empty line is held out for evaluation; 0 holds out nothing.
    pub holdout_every: usize,
    /// Read at most this many lines of the corpus; 0 reads all.
    pub max_lines: usize,
    /// Where the tokenised corpus is cached; empty: `$PRETEXT_CACHE_DIR`, else
    /// `$XDG_CACHE_HOME/pretext`, else `~/.cache/pretext`. Not part of a run's identity.
    pub cache_dir: String,
}

/// `[eval]`: the held-out measurement at the end of training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MlmEvalSettings {
    /// Held-out examples scored; 0 scores them all.
    pub max_sequences: usize,
    /// Share of the held-out tokens masked for the score (with `masking`'s 80/10/10 split),
    /// whatever share training masks, so that runs that mask 15% and 40% are scored alike.
    pub mask_probability: f64,
}

/// The config of `pretext mlm train`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MlmConfig {
    pub seed: u64,
    pub epochs: usize,
    /// Optimizer steps of the run (Hugging Face's `max_steps`); 0 runs `epochs` full epochs.
    pub steps: usize,
    /// Sequences per batch (per device, before accumulation).
    pub batch_size: usize,
    /// Batches per optimizer step.
    pub grad_accum: usize,
    pub tokenizer: TokenizerSettings,
    pub model: ModelSettings,
    pub data: TextDataSettings,
    pub masking: MaskingConfig,
    pub optimizer: OptimConfig,
    pub train: TrainConfig,
    pub eval: MlmEvalSettings,
}

impl Default for MlmConfig {
    fn default() -> Self {
        MlmConfig {
            seed: 0,
            epochs: 1,
            steps: 0,
            batch_size: 16,
            grad_accum: 1,
            tokenizer: TokenizerSettings {
                family: Family::Bert,
                vocab_size: 8000,
                lowercase: true,
                path: String::new(),
            },
            model: ModelSettings {
                size: SizePreset::Mini,
                hidden: 0,
                layers: 0,
                heads: 0,
                ffn: 0,
                dropout: 0.1,
                norm: NormPlacement::Post,
                embedding_init: EmbeddingInit::Random,
                position_init: PositionInit::Random,
            },
            data: TextDataSettings {
                mode: ExampleMode::Packed,
                max_len: 128,
                holdout_every: 100,
                max_lines: 0,
                cache_dir: String::new(),
            },
            masking: MaskingConfig::default(),
            // BERT's recipe as `run_mlm.py` runs it: AdamW, decay 0.01 off biases and norms,
            // linear warm-up and decay, gradient norm clipped at 1.
            optimizer: OptimConfig {
                kind: "adamw".into(),
                lr: 5e-4,
                weight_decay: 0.01,
                warmup_epochs: 0.0,
                warmup_steps: 100,
                schedule: "linear".into(),
                grad_clip: 1.0,
                ..OptimConfig::default()
            },
            train: TrainConfig {
                out_dir: "runs/mlm".into(),
                ..TrainConfig::default()
            },
            eval: MlmEvalSettings {
                max_sequences: 2000,
                mask_probability: 0.15,
            },
        }
    }
}

impl Default for TokenizerSettings {
    fn default() -> Self {
        MlmConfig::default().tokenizer
    }
}

impl Default for ModelSettings {
    fn default() -> Self {
        MlmConfig::default().model
    }
}

impl Default for TextDataSettings {
    fn default() -> Self {
        MlmConfig::default().data
    }
}

impl Default for MlmEvalSettings {
    fn default() -> Self {
        MlmConfig::default().eval
    }
}

impl MlmConfig {
    pub fn load(path: Option<&Path>, overrides: &[String]) -> Result<Self> {
        let origin = path.map_or("default config".into(), |p| p.display().to_string());
        let config: MlmConfig = crate::core::config::load_config(path, overrides)?;
        config
            .validate()
            .map_err(|e| crate::core::config::blame_invalid(e, &origin, overrides))?;
        Ok(config)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }

    pub fn validate(&self) -> Result<()> {
        if self.batch_size == 0 || self.grad_accum == 0 {
            bail!("batch_size and grad_accum must be at least 1");
        }
        if self.train.online_knn > 0 {
            bail!(
                "train.online_knn scores image features; a masked language model has none (set \
                 it to 0)"
            );
        }
        if self.epochs == 0 && self.steps == 0 {
            bail!("set epochs or steps to at least 1");
        }
        if self.data.max_len < 3 {
            bail!(
                "data.max_len = {}: needs room for two special tokens and one token",
                self.data.max_len
            );
        }
        if self.tokenizer.path.is_empty() && self.tokenizer.vocab_size <= 5 {
            bail!(
                "tokenizer.vocab_size = {}: must exceed the 5 special tokens",
                self.tokenizer.vocab_size
            );
        }
        self.masking.validate()?;
        if !(self.eval.mask_probability > 0.0 && self.eval.mask_probability <= 1.0) {
            bail!(
                "eval.mask_probability = {}: must be in (0, 1]",
                self.eval.mask_probability
            );
        }
        self.optimizer.validate()?;
        Ok(())
    }

    /// The encoder for `tokenizer`: the size preset with the non-zero overrides.
    pub fn encoder_config(&self, tokenizer: &TextTokenizer) -> Result<EncoderConfig> {
        let mut enc =
            EncoderConfig::preset(self.model.size, tokenizer.family(), tokenizer.vocab_size());
        let m = &self.model;
        for (field, value) in [
            (&mut enc.hidden, m.hidden),
            (&mut enc.layers, m.layers),
            (&mut enc.heads, m.heads),
            (&mut enc.ffn, m.ffn),
        ] {
            if value > 0 {
                *field = value;
            }
        }
        enc.dropout = m.dropout;
        enc.norm = m.norm;
        enc.pad_id = tokenizer.pad_id() as usize;
        enc.validate()?;
        if self.data.max_len > enc.max_sequence_len() {
            bail!(
                "data.max_len = {} is longer than the model's position table ({} tokens)",
                self.data.max_len,
                enc.max_sequence_len()
            );
        }
        Ok(enc)
    }
}
