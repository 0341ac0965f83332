//! An ELECTRA run as two Hugging Face folders: the discriminator as `ElectraForPreTraining`
//! (`OUT/discriminator`) and the generator as `ElectraForMaskedLM` (`OUT/generator`), each
//! with the run's tokenizer. The generator's embeddings are the discriminator's (shared in
//! training), written into both folders.

use std::path::Path;

use anyhow::{Result, bail};
use serde::Serialize;

use super::export::{check_all_named, write_hf_folder};
use super::{ExportSummary, HfTensor, INITIALIZER_RANGE, Table};
use crate::core::checkpoint::module_tensors;
use crate::text::electra::ElectraCheckpoint;
use crate::text::encoder::{EncoderConfig, NormPlacement};

/// `config.json` of Hugging Face's `ElectraConfig`.
#[derive(Debug, Clone, Serialize)]
struct ElectraHfConfig {
    architectures: Vec<String>,
    model_type: String,
    vocab_size: usize,
    embedding_size: usize,
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
    initializer_range: f64,
    position_embedding_type: String,
    tie_word_embeddings: bool,
}

impl ElectraHfConfig {
    /// The config of a network of shape `net` on the embeddings of `disc`.
    fn new(architecture: &str, disc: &EncoderConfig, net: &EncoderConfig) -> Self {
        ElectraHfConfig {
            architectures: vec![architecture.into()],
            model_type: "electra".into(),
            vocab_size: disc.vocab_size,
            embedding_size: disc.hidden,
            hidden_size: net.hidden,
            num_hidden_layers: net.layers,
            num_attention_heads: net.heads,
            intermediate_size: net.ffn,
            hidden_act: "gelu".into(),
            hidden_dropout_prob: net.dropout,
            attention_probs_dropout_prob: net.dropout,
            max_position_embeddings: disc.max_position,
            type_vocab_size: disc.type_vocab,
            layer_norm_eps: disc.layer_norm_eps,
            pad_token_id: disc.pad_id,
            initializer_range: INITIALIZER_RANGE,
            position_embedding_type: "absolute".into(),
            tie_word_embeddings: true,
        }
    }
}

/// `ElectraForPreTraining`'s tensors.
fn discriminator_table(disc: &EncoderConfig) -> Vec<HfTensor> {
    let (h, f) = (disc.hidden, disc.ffn);
    let mut t = Table::default();
    t.embeddings("electra", disc, 0);
    t.layers(
        "encoder.layers",
        "electra.encoder.layer",
        disc.layers,
        h,
        f,
        false,
    );
    t.linear(
        "discriminator.dense",
        "discriminator_predictions.dense",
        h,
        h,
    );
    t.linear(
        "discriminator.prediction",
        "discriminator_predictions.dense_prediction",
        h,
        1,
    );
    t.0
}

/// `ElectraForMaskedLM`'s tensors: the shared embeddings, the projection to the generator's
/// width (where it differs), its layers and head, the decoder tied to the word embeddings.
fn generator_table(disc: &EncoderConfig, gen_cfg: &EncoderConfig) -> Vec<HfTensor> {
    let (e, g, v) = (disc.hidden, gen_cfg.hidden, disc.vocab_size);
    let mut t = Table::default();
    t.embeddings("electra", disc, 0);
    if g != e {
        t.linear("generator.project", "electra.embeddings_project", e, g);
    }
    t.layers(
        "generator.layers",
        "electra.encoder.layer",
        gen_cfg.layers,
        g,
        gen_cfg.ffn,
        false,
    );
    t.linear("generator.head.dense", "generator_predictions.dense", g, e);
    t.norm(
        "generator.head.layer_norm",
        "generator_predictions.LayerNorm",
        e,
    );
    t.add(
        "encoder.embeddings.word_embeddings.weight".into(),
        "generator_lm_head.weight".into(),
        vec![v, e],
        false,
        true,
    );
    t.add(
        "generator.head.bias".into(),
        "generator_lm_head.bias".into(),
        vec![v],
        false,
        false,
    );
    t.0
}

/// Write `ckpt` as `out/discriminator` and `out/generator`.
pub fn export_electra_hf(ckpt: &ElectraCheckpoint, out: &Path) -> Result<Vec<ExportSummary>> {
    let (disc, gen_cfg) = (&ckpt.encoder, &ckpt.generator);
    if disc.norm == NormPlacement::Pre {
        bail!(
            "{}: a pre-LayerNorm ELECTRA (model.norm = \"pre\"); Hugging Face's ELECTRA classes \
             are post-LayerNorm and have no pre-LayerNorm variant, so it has no Hugging Face \
             export (its discriminator's encoder is read by pretext's own text commands)",
            ckpt.dir.display()
        );
    }
    let tensors = module_tensors(&ckpt.model);
    let (d, g) = (discriminator_table(disc), generator_table(disc, gen_cfg));
    check_all_named(&tensors, &[&d, &g])?;
    let lowercase = ckpt.config.tokenizer.lowercase;
    let max_len = disc.max_sequence_len();
    let mut written = Vec::new();
    for (name, table, net, architecture) in [
        ("discriminator", &d, disc, "ElectraForPreTraining"),
        ("generator", &g, gen_cfg, "ElectraForMaskedLM"),
    ] {
        written.push(write_hf_folder(
            &out.join(name),
            table,
            &tensors,
            &ElectraHfConfig::new(architecture, disc, net),
            architecture,
            &ckpt.tokenizer,
            lowercase,
            max_len,
        )?);
    }
    Ok(written)
}
