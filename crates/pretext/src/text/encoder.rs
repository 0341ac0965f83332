//! Transformer encoder with a masked-language-model head (BERT, RoBERTa).
//!
//! Post-LayerNorm layers as in the original BERT (self-attention → add & norm → GELU FFN → add
//! & norm), or pre-LayerNorm ones (`model.norm = "pre"`: norm → self-attention → add, norm →
//! FFN → add, and one more norm after the last layer), which train stably at the higher
//! learning rates of short budgets (Xiong et al. 2020; Cramming) and which Hugging Face loads as
//! `RobertaPreLayerNorm`. The attention is written out with plain tensor ops so every parameter maps 1:1 onto
//! Hugging Face's `BertForMaskedLM` / `RobertaForMaskedLM` names (see the comment at each
//! struct; `<p>` is `bert` or `roberta`). burn's `Linear` stores its weight as `[in, out]`, the
//! transpose of PyTorch's `[out, in]`; LayerNorm's `gamma`/`beta` are PyTorch's `weight`/`bias`.

use anyhow::{Result, bail};
use burn::module::Param;
use burn::nn::{
    Dropout, DropoutConfig, Embedding, EmbeddingConfig, Initializer, Linear, LinearConfig,
};
use burn::prelude::*;
use burn::tensor::activation::log_softmax;

use crate::core::kernels::{DropoutForward, FastLayerNorm, LinearForward, gelu};
use serde::{Deserialize, Serialize};

use super::masking::IGNORE;
use super::tokenizer::Family;

/// Model sizes: layers x hidden, heads, FFN width.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SizePreset {
    /// 2 x 128, 2 heads, FFN 512.
    Tiny,
    /// 4 x 256, 4 heads, FFN 1024.
    Mini,
    /// 4 x 512, 8 heads, FFN 2048.
    Small,
    /// 12 x 768, 12 heads, FFN 3072 (BERT-base).
    Base,
}

impl std::str::FromStr for SizePreset {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "tiny" => SizePreset::Tiny,
            "mini" => SizePreset::Mini,
            "small" => SizePreset::Small,
            "base" => SizePreset::Base,
            other => bail!("model size \"{other}\": expected tiny, mini, small or base"),
        })
    }
}

/// Where a layer normalises: after each residual sum (BERT) or before each sublayer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NormPlacement {
    #[default]
    Post,
    Pre,
}

/// Hyper-parameters of the encoder, named as in Hugging Face's `BertConfig`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncoderConfig {
    pub vocab_size: usize,
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub ffn: usize,
    /// Rows of the position table. RoBERTa spends `pad_id + 1` of them before the first token.
    pub max_position: usize,
    pub type_vocab: usize,
    pub dropout: f64,
    pub layer_norm_eps: f64,
    pub family: Family,
    /// Padding token id, which sets RoBERTa's position offset.
    pub pad_id: usize,
    /// Post- or pre-LayerNorm layers (checkpoints from before the option are post).
    #[serde(default)]
    pub norm: NormPlacement,
}

/// Standard deviation of BERT's normal initialisation of weights and embeddings.
pub const INIT_STD: f64 = 0.02;

impl EncoderConfig {
    /// A preset size with the family's conventions: BERT 512 positions, 2 token types,
    /// LayerNorm eps 1e-12, padding id 0; RoBERTa 514 positions (512 tokens after the
    /// offset), 1 token type, eps 1e-5, padding id 1. Ids follow [`super::tokenizer`]'s
    /// trained tokenizers.
    pub fn preset(size: SizePreset, family: Family, vocab_size: usize) -> Self {
        let (layers, hidden, heads, ffn) = match size {
            SizePreset::Tiny => (2, 128, 2, 512),
            SizePreset::Mini => (4, 256, 4, 1024),
            SizePreset::Small => (4, 512, 8, 2048),
            SizePreset::Base => (12, 768, 12, 3072),
        };
        let (max_position, type_vocab, layer_norm_eps, pad_id) = match family {
            Family::Bert => (512, 2, 1e-12, 0),
            Family::Roberta => (514, 1, 1e-5, 1),
        };
        EncoderConfig {
            vocab_size,
            hidden,
            layers,
            heads,
            ffn,
            max_position,
            type_vocab,
            dropout: 0.1,
            layer_norm_eps,
            family,
            pad_id,
            norm: NormPlacement::Post,
        }
    }

    /// Position id of the first token: 0 for BERT, `pad_id + 1` for RoBERTa (as Hugging Face's
    /// `create_position_ids_from_input_ids`).
    pub fn position_offset(&self) -> usize {
        match self.family {
            Family::Bert => 0,
            Family::Roberta => self.pad_id + 1,
        }
    }

    /// Longest sequence, special tokens included, the position table can hold.
    pub fn max_sequence_len(&self) -> usize {
        self.max_position.saturating_sub(self.position_offset())
    }

    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("hidden", self.hidden),
            ("layers", self.layers),
            ("heads", self.heads),
            ("ffn", self.ffn),
            ("type_vocab", self.type_vocab),
        ];
        for (name, value) in positive {
            if value == 0 {
                bail!("model.{name} must be positive");
            }
        }
        if !self.hidden.is_multiple_of(self.heads) {
            bail!(
                "model.hidden = {} is not divisible by model.heads = {}",
                self.hidden,
                self.heads
            );
        }
        if self.max_sequence_len() == 0 {
            bail!(
                "model.max_position = {} leaves no room after the position offset {}",
                self.max_position,
                self.position_offset()
            );
        }
        if !(0.0..1.0).contains(&self.dropout) {
            bail!("model.dropout = {}: must be in [0, 1)", self.dropout);
        }
        if self.layer_norm_eps.is_nan() || self.layer_norm_eps <= 0.0 {
            bail!(
                "model.layer_norm_eps = {}: must be positive",
                self.layer_norm_eps
            );
        }
        Ok(())
    }

    pub fn init(&self, device: &Device) -> Result<MlmModel> {
        self.validate()?;
        let pre_norm = self.norm == NormPlacement::Pre;
        let norm = || FastLayerNorm::new(self.hidden, self.layer_norm_eps, device);
        let head = MlmHead {
            dense: self.linear(self.hidden, self.hidden, device),
            layer_norm: norm(),
            bias: Param::from_tensor(Tensor::zeros([self.vocab_size], device)),
        };
        Ok(MlmModel {
            encoder: Encoder {
                embeddings: self.embeddings(device),
                layers: self.layer_stack(self.hidden, self.heads, self.ffn, device),
                final_norm: pre_norm.then(norm),
                max_sequence_len: self.max_sequence_len(),
            },
            head,
        })
    }

    /// A `Linear` with BERT's initialisation.
    pub(crate) fn linear(&self, inputs: usize, outputs: usize, device: &Device) -> Linear {
        LinearConfig::new(inputs, outputs)
            .with_initializer(Initializer::Normal {
                mean: 0.0,
                std: INIT_STD,
            })
            .init(device)
    }

    /// The embeddings (word, position, token type, norm) at the encoder's width.
    pub(crate) fn embeddings(&self, device: &Device) -> Embeddings {
        let embedding = |n: usize| {
            EmbeddingConfig::new(n, self.hidden)
                .with_initializer(Initializer::Normal {
                    mean: 0.0,
                    std: INIT_STD,
                })
                .init(device)
        };
        Embeddings {
            word_embeddings: embedding(self.vocab_size),
            position_embeddings: embedding(self.max_position),
            token_type_embeddings: embedding(self.type_vocab),
            layer_norm: FastLayerNorm::new(self.hidden, self.layer_norm_eps, device),
            dropout: DropoutConfig::new(self.dropout).init(),
            position_offset: self.position_offset(),
        }
    }

    /// `self.layers` layers of width `hidden` (`heads` heads, FFN `ffn`) with this config's
    /// norm placement, dropout and initialisation (ELECTRA's generator is a narrower stack).
    pub(crate) fn layer_stack(
        &self,
        hidden: usize,
        heads: usize,
        ffn: usize,
        device: &Device,
    ) -> Vec<EncoderLayer> {
        let norm = || FastLayerNorm::new(hidden, self.layer_norm_eps, device);
        let dropout = || DropoutConfig::new(self.dropout).init();
        let pre_norm = self.norm == NormPlacement::Pre;
        (0..self.layers)
            .map(|_| EncoderLayer {
                attention: SelfAttention {
                    query: self.linear(hidden, hidden, device),
                    key: self.linear(hidden, hidden, device),
                    value: self.linear(hidden, hidden, device),
                    output_dense: self.linear(hidden, hidden, device),
                    output_norm: norm(),
                    dropout: dropout(),
                    heads,
                    pre_norm,
                },
                intermediate: self.linear(hidden, ffn, device),
                output: self.linear(ffn, hidden, device),
                output_norm: norm(),
                dropout: dropout(),
                pre_norm,
            })
            .collect()
    }
}

/// `<p>.embeddings`: `word_embeddings`, `position_embeddings`, `token_type_embeddings`,
/// `LayerNorm` (here `layer_norm`).
#[derive(Module, Debug)]
pub struct Embeddings {
    pub word_embeddings: Embedding,
    pub position_embeddings: Embedding,
    pub token_type_embeddings: Embedding,
    pub layer_norm: FastLayerNorm,
    dropout: Dropout,
    #[module(skip)]
    position_offset: usize,
}

impl Embeddings {
    /// Word + position + token type 0 (one segment per example), normalised.
    fn forward(&self, input_ids: Tensor<2, Int>) -> Tensor<3> {
        let [batch, len] = input_ids.dims();
        let device = input_ids.device();
        let words = self.word_embeddings.forward(input_ids);
        let [_, _, hidden] = words.dims();
        let start = self.position_offset as i64;
        let positions =
            Tensor::<1, Int>::arange(start..start + len as i64, &device).reshape([1, len]);
        let types = Tensor::<2, Int>::zeros([1, len], &device);
        // Padded positions get ordinary position ids too (Hugging Face gives RoBERTa's the
        // padding id); their outputs are never read, and real tokens cannot attend to them.
        let shared =
            self.position_embeddings.forward(positions) + self.token_type_embeddings.forward(types);
        let x = words + shared.expand([batch, len, hidden]);
        self.dropout.forward_fast(self.layer_norm.forward(x))
    }
}

/// `<p>.encoder.layer.{i}.attention`: `self.{query,key,value}` and
/// `output.{dense,LayerNorm}` (here `output_dense`, `output_norm`). In a pre-norm layer
/// `output_norm` normalises the attention's input instead (`attention.LayerNorm` in
/// `RobertaPreLayerNorm`).
#[derive(Module, Debug)]
pub struct SelfAttention {
    pub query: Linear,
    pub key: Linear,
    pub value: Linear,
    pub output_dense: Linear,
    pub output_norm: FastLayerNorm,
    dropout: Dropout,
    #[module(skip)]
    heads: usize,
    #[module(skip)]
    pre_norm: bool,
}

impl SelfAttention {
    /// `key_pad` is true at padded positions, which no query may attend to (`None`: the batch
    /// has no padding, as with packed blocks, and the masking is skipped).
    fn forward(&self, x: Tensor<3>, key_pad: Option<Tensor<2, Bool>>) -> Tensor<3> {
        let input = if self.pre_norm {
            self.output_norm.forward(x.clone())
        } else {
            x.clone()
        };
        let context = crate::core::kernels::attention(
            self.query.forward_fast(input.clone()),
            self.key.forward_fast(input.clone()),
            self.value.forward_fast(input),
            self.heads,
            key_pad,
            &self.dropout,
        );
        let out = self
            .dropout
            .forward_fast(self.output_dense.forward_fast(context))
            + x;
        if self.pre_norm {
            out
        } else {
            self.output_norm.forward(out)
        }
    }
}

/// `<p>.encoder.layer.{i}`: `attention`, `intermediate.dense` (here `intermediate`),
/// `output.dense` (here `output`), `output.LayerNorm` (here `output_norm`; in a pre-norm layer
/// it normalises the FFN's input, `intermediate.LayerNorm` in `RobertaPreLayerNorm`).
#[derive(Module, Debug)]
pub struct EncoderLayer {
    pub attention: SelfAttention,
    pub intermediate: Linear,
    pub output: Linear,
    pub output_norm: FastLayerNorm,
    dropout: Dropout,
    #[module(skip)]
    pre_norm: bool,
}

impl EncoderLayer {
    fn forward(&self, x: Tensor<3>, key_pad: Option<Tensor<2, Bool>>) -> Tensor<3> {
        let a = self.attention.forward(x, key_pad);
        let input = if self.pre_norm {
            self.output_norm.forward(a.clone())
        } else {
            a.clone()
        };
        let h = gelu(self.intermediate.forward_fast(input));
        let h = self.dropout.forward_fast(self.output.forward_fast(h)) + a;
        if self.pre_norm {
            h
        } else {
            self.output_norm.forward(h)
        }
    }
}

/// `<p>`: `embeddings` and `encoder.layer` (here `layers`); pre-norm encoders end with one
/// more norm, `roberta_prelayernorm.LayerNorm` (here `final_norm`).
#[derive(Module, Debug)]
pub struct Encoder {
    pub embeddings: Embeddings,
    pub layers: Vec<EncoderLayer>,
    pub final_norm: Option<FastLayerNorm>,
    #[module(skip)]
    max_sequence_len: usize,
}

impl Encoder {
    /// Hidden states `[batch, len, hidden]` of `input_ids` `[batch, len]`; `attention_mask` is
    /// true at real tokens and false at padding.
    pub fn forward(
        &self,
        input_ids: Tensor<2, Int>,
        attention_mask: Tensor<2, Bool>,
    ) -> Result<Tensor<3>> {
        let key_pad = self.key_padding(&input_ids, attention_mask)?;
        let x = run_layers(&self.layers, self.embed(input_ids), key_pad);
        Ok(match &self.final_norm {
            Some(norm) => norm.forward(x),
            None => x,
        })
    }

    /// The embedded tokens `[batch, len, hidden]` (ELECTRA's generator shares them).
    pub(crate) fn embed(&self, input_ids: Tensor<2, Int>) -> Tensor<3> {
        self.embeddings.forward(input_ids)
    }

    /// Checks the shapes; returns the padded key positions, `None` when nothing is padded.
    pub(crate) fn key_padding(
        &self,
        input_ids: &Tensor<2, Int>,
        attention_mask: Tensor<2, Bool>,
    ) -> Result<Option<Tensor<2, Bool>>> {
        let [batch, len] = input_ids.dims();
        if attention_mask.dims() != [batch, len] {
            bail!(
                "attention mask {:?} does not match input ids {:?}",
                attention_mask.dims(),
                [batch, len]
            );
        }
        if batch == 0 || len == 0 {
            bail!("empty input: batch {batch} x length {len}");
        }
        if len > self.max_sequence_len {
            bail!(
                "sequence of {len} tokens is longer than the encoder's {} positions",
                self.max_sequence_len
            );
        }
        let key_pad = attention_mask.bool_not();
        Ok(key_pad
            .clone()
            .any()
            .into_scalar::<bool>()
            .then_some(key_pad))
    }
}

/// `layers` applied in turn.
pub(crate) fn run_layers(
    layers: &[EncoderLayer],
    mut x: Tensor<3>,
    key_pad: Option<Tensor<2, Bool>>,
) -> Tensor<3> {
    for layer in layers {
        x = layer.forward(x, key_pad.clone());
    }
    x
}

/// The rows of `hidden` `[batch, len, width]` at the positions whose label is not [`IGNORE`]
/// (`labels` row-major `[batch, len]`, each below `vocab`), and those labels `[n, 1]`.
pub(crate) fn labelled_rows(
    hidden: Tensor<3>,
    labels: &[i64],
    vocab: usize,
) -> Result<(Tensor<2>, Tensor<2, Int>)> {
    let [batch, len, width] = hidden.dims();
    if labels.len() != batch * len {
        bail!(
            "{} labels for a batch of {batch} x {len} tokens",
            labels.len()
        );
    }
    let mut rows = Vec::new();
    let mut targets = Vec::new();
    for (i, &label) in labels.iter().enumerate() {
        if label == IGNORE {
            continue;
        }
        if label < 0 || label as usize >= vocab {
            bail!("label {label} at position {i} is outside the vocabulary of {vocab}");
        }
        rows.push(i as i64);
        targets.push(label);
    }
    if rows.is_empty() {
        bail!("no position of the batch is masked: nothing to predict");
    }
    let device = hidden.device();
    let n = rows.len();
    let rows = Tensor::<1, Int>::from_data(TensorData::new(rows, [n]), &device);
    let targets = Tensor::<2, Int>::from_data(TensorData::new(targets, [n, 1]), &device);
    let picked = hidden.reshape([batch * len, width]).select(0, rows);
    Ok((picked, targets))
}

/// BERT: `cls.predictions.transform.{dense,LayerNorm}` and `cls.predictions.bias`; RoBERTa:
/// `lm_head.{dense,layer_norm,bias}`. The decoder weight is the word-embedding matrix.
#[derive(Module, Debug)]
pub struct MlmHead {
    pub dense: Linear,
    pub layer_norm: FastLayerNorm,
    pub bias: Param<Tensor<1>>,
}

impl MlmHead {
    /// Vocabulary logits `[rows, vocab]` of hidden states `[rows, width]`: dense, GELU, norm,
    /// then the tied decoder, the word embeddings read in place so a single parameter is
    /// trained.
    pub fn logits(&self, hidden: Tensor<2>, words: &Embedding) -> Tensor<2> {
        let h = gelu(self.dense.forward_fast(hidden));
        let h = self.layer_norm.forward(h);
        h.matmul(words.weight.val().transpose()) + self.bias.val().unsqueeze::<2>()
    }
}

/// Encoder with its masked-language-model head.
#[derive(Module, Debug)]
pub struct MlmModel {
    pub encoder: Encoder,
    pub head: MlmHead,
}

impl MlmModel {
    pub fn hidden(
        &self,
        input_ids: Tensor<2, Int>,
        attention_mask: Tensor<2, Bool>,
    ) -> Result<Tensor<3>> {
        self.encoder.forward(input_ids, attention_mask)
    }

    /// Vocabulary logits `[rows, vocab]` of hidden states `[rows, hidden]`.
    pub fn head_logits(&self, hidden: Tensor<2>) -> Tensor<2> {
        self.head
            .logits(hidden, &self.encoder.embeddings.word_embeddings)
    }

    /// Logits `[batch, len, vocab]` at every position.
    pub fn logits(
        &self,
        input_ids: Tensor<2, Int>,
        attention_mask: Tensor<2, Bool>,
    ) -> Result<Tensor<3>> {
        let h = self.hidden(input_ids, attention_mask)?;
        let [batch, len, hidden] = h.dims();
        let logits = self.head_logits(h.reshape([batch * len, hidden]));
        Ok(logits.reshape([batch as i64, len as i64, -1]))
    }

    /// Mean cross-entropy over the positions whose label is not [`IGNORE`]; `labels` is
    /// row-major `[batch, len]`. Only those positions go through the head. A batch with no
    /// labelled position is an error (there is nothing to learn from; skip it).
    pub fn loss(
        &self,
        input_ids: Tensor<2, Int>,
        attention_mask: Tensor<2, Bool>,
        labels: &[i64],
    ) -> Result<Tensor<1>> {
        let vocab = self.head.bias.dims()[0];
        let h = self.hidden(input_ids, attention_mask)?;
        let (picked, targets) = labelled_rows(h, labels, vocab)?;
        Ok(crate::core::kernels::cross_entropy(
            self.head_logits(picked),
            targets,
        ))
    }

    /// Log-probabilities `[n, vocab]` over the vocabulary at the `n` labelled positions, and
    /// their labels `[n, 1]`.
    pub fn masked_log_probs(
        &self,
        input_ids: Tensor<2, Int>,
        attention_mask: Tensor<2, Bool>,
        labels: &[i64],
    ) -> Result<(Tensor<2>, Tensor<2, Int>)> {
        let vocab = self.head.bias.dims()[0];
        let h = self.hidden(input_ids, attention_mask)?;
        let (picked, targets) = labelled_rows(h, labels, vocab)?;
        Ok((log_softmax(self.head_logits(picked), 1), targets))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(rows: &[&[i64]], device: &Device) -> (Tensor<2, Int>, Tensor<2, Bool>) {
        let len = rows.iter().map(|r| r.len()).max().unwrap();
        let mut flat = Vec::new();
        let mut mask = Vec::new();
        for r in rows {
            flat.extend_from_slice(r);
            flat.extend(std::iter::repeat_n(0, len - r.len()));
            mask.extend(std::iter::repeat_n(true, r.len()));
            mask.extend(std::iter::repeat_n(false, len - r.len()));
        }
        let shape = [rows.len(), len];
        (
            Tensor::from_data(TensorData::new(flat, shape), device),
            Tensor::from_data(TensorData::new(mask, shape), device),
        )
    }

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
    }

    #[test]
    fn presets_and_validation() {
        let tiny = EncoderConfig::preset(SizePreset::Tiny, Family::Bert, 100);
        assert_eq!(
            (tiny.layers, tiny.hidden, tiny.heads, tiny.ffn),
            (2, 128, 2, 512)
        );
        let base = EncoderConfig::preset("base".parse().unwrap(), Family::Roberta, 100);
        assert_eq!(
            (base.layers, base.hidden, base.heads, base.ffn),
            (12, 768, 12, 3072)
        );
        assert_eq!((base.position_offset(), base.max_sequence_len()), (2, 512));
        assert_eq!(tiny.max_sequence_len(), 512);
        assert!("huge".parse::<SizePreset>().is_err());
        let odd = EncoderConfig {
            heads: 3,
            ..tiny.clone()
        };
        assert!(
            odd.validate()
                .unwrap_err()
                .to_string()
                .contains("divisible")
        );
        let wet = EncoderConfig {
            dropout: 1.0,
            ..tiny
        };
        assert!(wet.init(&Device::flex()).is_err());
    }

    #[test]
    fn too_long_sequence_is_an_error() {
        let device = Device::flex();
        let config = EncoderConfig {
            max_position: 10,
            ..EncoderConfig::preset(SizePreset::Tiny, Family::Roberta, 50)
        };
        let model = config.init(&device).unwrap();
        let (x, m) = ids(&[&[0, 5, 6, 7, 8, 9, 10, 2]], &device);
        assert!(
            model.hidden(x, m).is_ok(),
            "8 tokens fit 10 positions minus offset 2"
        );
        let (x, m) = ids(&[&[0, 5, 6, 7, 8, 9, 10, 11, 2]], &device);
        let err = model.hidden(x, m).unwrap_err().to_string();
        assert!(
            err.contains("9 tokens") && err.contains("8 positions"),
            "{err}"
        );
    }

    #[test]
    fn padding_leaves_real_positions_unchanged() {
        let device = Device::flex();
        for family in [Family::Bert, Family::Roberta] {
            let config = EncoderConfig::preset(SizePreset::Tiny, family, 64);
            let model = config.init(&device).unwrap();
            let rows: [&[i64]; 2] = [&[2, 10, 11, 12, 13, 3], &[2, 20, 21, 3]];
            let (x, m) = ids(&rows, &device);
            let tight = values(model.hidden(x, m).unwrap());
            // Same rows padded to 11 positions, and the short row on its own, unpadded.
            let longer: [&[i64]; 3] = [rows[0], rows[1], &[0; 11]];
            let (x, m) = ids(&longer, &device);
            let loose = values(model.hidden(x.narrow(0, 0, 2), m.narrow(0, 0, 2)).unwrap());
            let (x, m) = ids(&rows[1..], &device);
            let alone = values(model.hidden(x, m).unwrap());
            let h = 128;
            for (r, row) in rows.iter().enumerate() {
                for p in 0..row.len() {
                    for k in 0..h {
                        let a = tight[(r * 6 + p) * h + k];
                        let b = loose[(r * 11 + p) * h + k];
                        assert!(
                            (a - b).abs() < 1e-4,
                            "{family:?} row {r} pos {p}: {a} vs {b}"
                        );
                        if r == 1 {
                            let c = alone[p * h + k];
                            assert!((a - c).abs() < 1e-4, "{family:?} pos {p}: {a} vs {c}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn decoder_is_tied_to_word_embeddings() {
        let device = Device::flex();
        let config = EncoderConfig::preset(SizePreset::Tiny, Family::Bert, 64);
        let model = config.init(&device).unwrap();
        // No second vocab x hidden matrix: the head holds dense, LayerNorm and bias only.
        let (v, h) = (64, 128);
        assert_eq!(model.head.num_params(), h * h + h + 2 * h + v);

        let hidden = Tensor::<2>::random([3, h], burn::tensor::Distribution::Default, &device);
        let before = values(model.head_logits(hidden.clone()));
        // Zero word 7's embedding: its logit must drop to the bias alone, the others stay.
        let mut model = model;
        let weight = model.encoder.embeddings.word_embeddings.weight.val();
        let row_mask = Tensor::<1, Int>::arange(0..v as i64, &device)
            .equal_elem(7)
            .reshape([v, 1])
            .expand([v, h]);
        model.encoder.embeddings.word_embeddings.weight =
            Param::from_tensor(weight.mask_fill(row_mask, 0.0));
        let bias = model
            .head
            .bias
            .val()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        let after = values(model.head_logits(hidden));
        for r in 0..3 {
            for w in 0..v {
                let (a, b) = (before[r * v + w], after[r * v + w]);
                if w == 7 {
                    assert!((b - bias[7]).abs() < 1e-6, "row {r}: {b}");
                    assert!((a - bias[7]).abs() > 1e-6, "the embedding mattered before");
                } else {
                    assert!((a - b).abs() < 1e-6);
                }
            }
        }
    }

    #[test]
    fn loss_matches_cross_entropy_of_the_logits() {
        let device = Device::flex();
        let model = EncoderConfig::preset(SizePreset::Tiny, Family::Bert, 40)
            .init(&device)
            .unwrap();
        let (x, m) = ids(&[&[2, 10, 4, 12, 3], &[2, 4, 3]], &device);
        let labels = [
            IGNORE, IGNORE, 11, IGNORE, IGNORE, IGNORE, 30, IGNORE, IGNORE, IGNORE,
        ];
        let loss = model
            .loss(x.clone(), m.clone(), &labels)
            .unwrap()
            .into_scalar::<f32>();
        let logits = values(model.logits(x.clone(), m.clone()).unwrap());
        let ce = |pos: usize, target: usize| {
            let row = &logits[pos * 40..(pos + 1) * 40];
            let max = row.iter().cloned().fold(f32::MIN, f32::max);
            let lse = max + row.iter().map(|z| (z - max).exp()).sum::<f32>().ln();
            lse - row[target]
        };
        let expected = (ce(2, 11) + ce(6, 30)) / 2.0;
        assert!((loss - expected).abs() < 1e-4, "{loss} vs {expected}");
        assert!(model.loss(x.clone(), m.clone(), &[IGNORE; 10]).is_err());
        assert!(model.loss(x.clone(), m.clone(), &labels[..9]).is_err());
        let mut bad = labels;
        bad[2] = 40;
        assert!(model.loss(x, m, &bad).is_err());
    }
}
