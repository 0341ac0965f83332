//! Hugging Face export and import of a masked language model.
//!
//! [`export_hf`] writes a folder that `transformers` loads with
//! `AutoModelForMaskedLM.from_pretrained` and `AutoTokenizer.from_pretrained`: `config.json`
//! (a `BertConfig` / `RobertaConfig`), `model.safetensors` (F32, `BertForMaskedLM` /
//! `RobertaForMaskedLM` parameter names; pre-norm encoders as `RobertaPreLayerNormForMaskedLM`,
//! whichever their tokenizer), `tokenizer.json` with `tokenizer_config.json` and
//! `special_tokens_map.json`. [`import_hf`] reads such a folder back. Both directions go through
//! the one name table here, [`hf_table`], and the one `config.json` mapping, [`HfConfig`].

mod electra;
mod export;
mod import;
#[cfg(test)]
mod tests;

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use super::encoder::{EncoderConfig, NormPlacement};
use super::tokenizer::{Family, TextTokenizer};
pub use electra::export_electra_hf;
pub use export::{ExportSummary, export_hf};
pub use import::import_hf;

pub const CONFIG_FILE: &str = "config.json";

pub const WEIGHTS_FILE: &str = "model.safetensors";

pub const TOKENIZER_FILE: &str = "tokenizer.json";

pub const TOKENIZER_CONFIG_FILE: &str = "tokenizer_config.json";

pub const SPECIAL_TOKENS_FILE: &str = "special_tokens_map.json";

/// Standard deviation of the normal initialisation, as `BertConfig.initializer_range`.
const INITIALIZER_RANGE: f64 = 0.02;

/// One tensor of the Hugging Face state dict and where it lives in [`MlmModel`].
#[derive(Debug, Clone, PartialEq)]
struct HfTensor {
    /// Path in pretext's module tree, as [`module_tensors`] names it.
    burn: String,
    /// Name in the Hugging Face state dict.
    hf: String,
    /// Shape as Hugging Face stores it.
    shape: Vec<usize>,
    /// A `Linear` weight: `[in, out]` in burn, `[out, in]` in PyTorch.
    transpose: bool,
    /// A tied copy of `burn` (the MLM decoder: weight = word embeddings, bias = head bias).
    /// Written so any loader finds it; optional on import, where it must equal its source.
    tied: bool,
    /// Rows Hugging Face holds before pretext's first (zeros, never read): the position table
    /// of a BERT-family pre-norm encoder, whose Hugging Face class counts positions from
    /// `pad_token_id + 1` as RoBERTa does.
    skip_rows: usize,
}

impl HfTensor {
    /// Shape of the tensor in burn's layout.
    fn burn_shape(&self) -> Vec<usize> {
        let mut shape = if self.transpose {
            self.shape.iter().rev().copied().collect()
        } else {
            self.shape.clone()
        };
        shape[0] -= self.skip_rows;
        shape
    }
}

#[derive(Default)]
struct Table(Vec<HfTensor>);

impl Table {
    fn add(&mut self, burn: String, hf: String, shape: Vec<usize>, transpose: bool, tied: bool) {
        self.0.push(HfTensor {
            burn,
            hf,
            shape,
            transpose,
            tied,
            skip_rows: 0,
        });
    }

    fn linear(&mut self, burn: &str, hf: &str, inputs: usize, outputs: usize) {
        let (b, h) = (format!("{burn}."), format!("{hf}."));
        self.add(
            format!("{b}weight"),
            format!("{h}weight"),
            vec![outputs, inputs],
            true,
            false,
        );
        self.add(
            format!("{b}bias"),
            format!("{h}bias"),
            vec![outputs],
            false,
            false,
        );
    }

    fn norm(&mut self, burn: &str, hf: &str, width: usize) {
        let (b, h) = (format!("{burn}."), format!("{hf}."));
        self.add(
            format!("{b}gamma"),
            format!("{h}weight"),
            vec![width],
            false,
            false,
        );
        self.add(
            format!("{b}beta"),
            format!("{h}bias"),
            vec![width],
            false,
            false,
        );
    }

    fn embedding(&mut self, burn: &str, hf: &str, rows: usize, width: usize) {
        self.add(
            format!("{burn}.weight"),
            format!("{hf}.weight"),
            vec![rows, width],
            false,
            false,
        );
    }
}

impl Table {
    /// `<p>.embeddings`: word, position (after `shift` unused rows), token type, LayerNorm,
    /// at the encoder's width.
    fn embeddings(&mut self, p: &str, enc: &EncoderConfig, shift: usize) {
        let h = enc.hidden;
        let words = "encoder.embeddings.word_embeddings";
        self.embedding(
            words,
            &format!("{p}.embeddings.word_embeddings"),
            enc.vocab_size,
            h,
        );
        self.embedding(
            "encoder.embeddings.position_embeddings",
            &format!("{p}.embeddings.position_embeddings"),
            enc.max_position + shift,
            h,
        );
        if let Some(positions) = self.0.last_mut() {
            positions.skip_rows = shift;
        }
        self.embedding(
            "encoder.embeddings.token_type_embeddings",
            &format!("{p}.embeddings.token_type_embeddings"),
            enc.type_vocab,
            h,
        );
        self.norm(
            "encoder.embeddings.layer_norm",
            &format!("{p}.embeddings.LayerNorm"),
            h,
        );
    }

    /// `layers` encoder layers of width `h` and FFN `f`: pretext's `{burn}.{i}`, Hugging
    /// Face's `{hf}.{i}`, with the norms where `pre` puts them.
    fn layers(&mut self, burn: &str, hf: &str, layers: usize, h: usize, f: usize, pre: bool) {
        for i in 0..layers {
            let (b, hf) = (format!("{burn}.{i}"), format!("{hf}.{i}"));
            for qkv in ["query", "key", "value"] {
                self.linear(
                    &format!("{b}.attention.{qkv}"),
                    &format!("{hf}.attention.self.{qkv}"),
                    h,
                    h,
                );
            }
            self.linear(
                &format!("{b}.attention.output_dense"),
                &format!("{hf}.attention.output.dense"),
                h,
                h,
            );
            let (attention_norm, ffn_norm) = if pre {
                ("attention.LayerNorm", "intermediate.LayerNorm")
            } else {
                ("attention.output.LayerNorm", "output.LayerNorm")
            };
            self.norm(
                &format!("{b}.attention.output_norm"),
                &format!("{hf}.{attention_norm}"),
                h,
            );
            self.linear(
                &format!("{b}.intermediate"),
                &format!("{hf}.intermediate.dense"),
                h,
                f,
            );
            self.linear(&format!("{b}.output"), &format!("{hf}.output.dense"), f, h);
            self.norm(&format!("{b}.output_norm"), &format!("{hf}.{ffn_norm}"), h);
        }
    }
}

/// Position rows Hugging Face's class of `enc` holds before pretext's first: RoBERTa counts
/// positions from `pad_token_id + 1`, and every pre-norm encoder is exported as a RoBERTa.
fn position_shift(enc: &EncoderConfig) -> usize {
    match enc.norm {
        NormPlacement::Post => 0,
        NormPlacement::Pre => (enc.pad_id + 1).saturating_sub(enc.position_offset()),
    }
}

/// Every tensor of the Hugging Face model of `enc`, with its pretext path: the single name
/// mapping used by both [`export_hf`] and [`import_hf`].
fn hf_table(enc: &EncoderConfig) -> Vec<HfTensor> {
    let pre = enc.norm == NormPlacement::Pre;
    let head_family = if pre { Family::Roberta } else { enc.family };
    let (p, head_dense, head_norm, head_bias, decoder) = match head_family {
        Family::Bert => (
            "bert",
            "cls.predictions.transform.dense",
            "cls.predictions.transform.LayerNorm",
            "cls.predictions.bias",
            "cls.predictions.decoder",
        ),
        Family::Roberta => (
            "roberta",
            "lm_head.dense",
            "lm_head.layer_norm",
            "lm_head.bias",
            "lm_head.decoder",
        ),
    };
    let p = if pre { "roberta_prelayernorm" } else { p };
    let (h, f, v) = (enc.hidden, enc.ffn, enc.vocab_size);
    let words = "encoder.embeddings.word_embeddings";
    let mut t = Table::default();
    t.embeddings(p, enc, position_shift(enc));
    t.layers(
        "encoder.layers",
        &format!("{p}.encoder.layer"),
        enc.layers,
        h,
        f,
        pre,
    );
    if pre {
        t.norm("encoder.final_norm", &format!("{p}.LayerNorm"), h);
    }
    t.linear("head.dense", head_dense, h, h);
    t.norm("head.layer_norm", head_norm, h);
    t.add("head.bias".into(), head_bias.into(), vec![v], false, false);
    t.add(
        format!("{words}.weight"),
        format!("{decoder}.weight"),
        vec![v, h],
        false,
        true,
    );
    t.add(
        "head.bias".into(),
        format!("{decoder}.bias"),
        vec![v],
        false,
        true,
    );
    t.0
}

/// `[rows, cols]` row-major → `[cols, rows]`.
fn transpose(values: &[f32], shape: &[usize]) -> Vec<f32> {
    let (rows, cols) = (shape[0], shape[1]);
    let mut out = vec![0.0; values.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = values[r * cols + c];
        }
    }
    out
}

/// `config.json`: the fields of `BertConfig` / `RobertaConfig` the model depends on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct HfConfig {
    architectures: Vec<String>,
    model_type: String,
    vocab_size: usize,
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    intermediate_size: usize,
    hidden_act: String,
    hidden_dropout_prob: f64,
    attention_probs_dropout_prob: f64,
    max_position_embeddings: usize,
    type_vocab_size: usize,
    layer_norm_eps: f64,
    pad_token_id: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    bos_token_id: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    eos_token_id: Option<usize>,
    #[serde(default = "default_initializer_range")]
    initializer_range: f64,
    #[serde(default = "default_position_embedding_type")]
    position_embedding_type: String,
    #[serde(default = "default_tie")]
    tie_word_embeddings: bool,
}

fn default_initializer_range() -> f64 {
    INITIALIZER_RANGE
}

fn default_position_embedding_type() -> String {
    "absolute".into()
}

fn default_tie() -> bool {
    true
}

/// The `model_type` of `config.json` for a pre-norm encoder.
const PRE_NORM_MODEL_TYPE: &str = "roberta-prelayernorm";

fn architecture(enc: &EncoderConfig) -> &'static str {
    match (enc.norm, enc.family) {
        (NormPlacement::Pre, _) => "RobertaPreLayerNormForMaskedLM",
        (NormPlacement::Post, Family::Bert) => "BertForMaskedLM",
        (NormPlacement::Post, Family::Roberta) => "RobertaForMaskedLM",
    }
}

impl HfConfig {
    fn new(enc: &EncoderConfig, tokenizer: &TextTokenizer) -> Self {
        let ids = tokenizer.special_ids();
        let pre = enc.norm == NormPlacement::Pre;
        let (bos, eos) = match enc.family {
            Family::Bert if !pre => (None, None),
            _ => (Some(ids.cls as usize), Some(ids.sep as usize)),
        };
        HfConfig {
            architectures: vec![architecture(enc).into()],
            model_type: if pre {
                PRE_NORM_MODEL_TYPE.into()
            } else {
                enc.family.name().into()
            },
            vocab_size: enc.vocab_size,
            hidden_size: enc.hidden,
            num_hidden_layers: enc.layers,
            num_attention_heads: enc.heads,
            intermediate_size: enc.ffn,
            hidden_act: "gelu".into(),
            hidden_dropout_prob: enc.dropout,
            attention_probs_dropout_prob: enc.dropout,
            max_position_embeddings: enc.max_position + position_shift(enc),
            type_vocab_size: enc.type_vocab,
            layer_norm_eps: enc.layer_norm_eps,
            pad_token_id: enc.pad_id,
            bos_token_id: bos,
            eos_token_id: eos,
            initializer_range: INITIALIZER_RANGE,
            position_embedding_type: default_position_embedding_type(),
            tie_word_embeddings: true,
        }
    }

    /// The encoder this config describes, for a tokenizer of `tokenizer_family` (which a
    /// pre-norm model's config does not name); anything pretext's encoder cannot express is an
    /// error.
    fn encoder(&self, tokenizer_family: Family) -> Result<EncoderConfig> {
        let (family, norm) = match self.model_type.as_str() {
            "bert" => (Family::Bert, NormPlacement::Post),
            "roberta" => (Family::Roberta, NormPlacement::Post),
            PRE_NORM_MODEL_TYPE => (tokenizer_family, NormPlacement::Pre),
            other => bail!(
                "model_type \"{other}\": only \"bert\", \"roberta\" and \"{PRE_NORM_MODEL_TYPE}\" \
                 can be imported"
            ),
        };
        if self.hidden_act != "gelu" {
            bail!(
                "hidden_act \"{}\": pretext's encoder uses \"gelu\"",
                self.hidden_act
            );
        }
        if self.position_embedding_type != "absolute" {
            bail!(
                "position_embedding_type \"{}\": pretext's encoder uses \"absolute\"",
                self.position_embedding_type
            );
        }
        if !self.tie_word_embeddings {
            bail!("tie_word_embeddings is false: pretext's decoder is tied to the word embeddings");
        }
        let mut enc = EncoderConfig {
            vocab_size: self.vocab_size,
            hidden: self.hidden_size,
            layers: self.num_hidden_layers,
            heads: self.num_attention_heads,
            ffn: self.intermediate_size,
            max_position: self.max_position_embeddings,
            type_vocab: self.type_vocab_size,
            dropout: self.hidden_dropout_prob,
            layer_norm_eps: self.layer_norm_eps,
            family,
            pad_id: self.pad_token_id,
            norm,
        };
        let shift = position_shift(&enc);
        if enc.max_position <= shift {
            bail!(
                "max_position_embeddings = {}: no position left after the first {shift}",
                enc.max_position
            );
        }
        enc.max_position -= shift;
        enc.validate()?;
        Ok(enc)
    }
}
