//! Hugging Face export and import of a masked language model.
//!
//! [`export_hf`] writes a folder that `transformers` loads with
//! `AutoModelForMaskedLM.from_pretrained` and `AutoTokenizer.from_pretrained`: `config.json`
//! (a `BertConfig` / `RobertaConfig`), `model.safetensors` (F32, `BertForMaskedLM` /
//! `RobertaForMaskedLM` parameter names), `tokenizer.json` with `tokenizer_config.json` and
//! `special_tokens_map.json`. [`import_hf`] reads such a folder back. Both directions go through
//! one name table, [`hf_table`].

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use burn::prelude::*;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::encoder::{EncoderConfig, MlmModel};
use super::mlm::MlmCheckpoint;
use super::tokenizer::{Family, TextTokenizer};
use crate::checkpoint::{NamedTensor, load_module, module_tensors, write_atomic};

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
}

impl HfTensor {
    /// Shape of the tensor in burn's layout.
    fn burn_shape(&self) -> Vec<usize> {
        if self.transpose {
            self.shape.iter().rev().copied().collect()
        } else {
            self.shape.clone()
        }
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

/// Every tensor of the Hugging Face model of `enc`, with its pretext path: the single name
/// mapping used by both [`export_hf`] and [`import_hf`].
fn hf_table(enc: &EncoderConfig) -> Vec<HfTensor> {
    let (p, head_dense, head_norm, head_bias, decoder) = match enc.family {
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
    let (h, f, v) = (enc.hidden, enc.ffn, enc.vocab_size);
    let words = "encoder.embeddings.word_embeddings";
    let mut t = Table::default();
    t.embedding(words, &format!("{p}.embeddings.word_embeddings"), v, h);
    t.embedding(
        "encoder.embeddings.position_embeddings",
        &format!("{p}.embeddings.position_embeddings"),
        enc.max_position,
        h,
    );
    t.embedding(
        "encoder.embeddings.token_type_embeddings",
        &format!("{p}.embeddings.token_type_embeddings"),
        enc.type_vocab,
        h,
    );
    t.norm(
        "encoder.embeddings.layer_norm",
        &format!("{p}.embeddings.LayerNorm"),
        h,
    );
    for i in 0..enc.layers {
        let (b, hf) = (
            format!("encoder.layers.{i}"),
            format!("{p}.encoder.layer.{i}"),
        );
        for qkv in ["query", "key", "value"] {
            t.linear(
                &format!("{b}.attention.{qkv}"),
                &format!("{hf}.attention.self.{qkv}"),
                h,
                h,
            );
        }
        t.linear(
            &format!("{b}.attention.output_dense"),
            &format!("{hf}.attention.output.dense"),
            h,
            h,
        );
        t.norm(
            &format!("{b}.attention.output_norm"),
            &format!("{hf}.attention.output.LayerNorm"),
            h,
        );
        t.linear(
            &format!("{b}.intermediate"),
            &format!("{hf}.intermediate.dense"),
            h,
            f,
        );
        t.linear(&format!("{b}.output"), &format!("{hf}.output.dense"), f, h);
        t.norm(
            &format!("{b}.output_norm"),
            &format!("{hf}.output.LayerNorm"),
            h,
        );
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

fn architecture(family: Family) -> &'static str {
    match family {
        Family::Bert => "BertForMaskedLM",
        Family::Roberta => "RobertaForMaskedLM",
    }
}

impl HfConfig {
    fn new(enc: &EncoderConfig, tokenizer: &TextTokenizer) -> Self {
        let ids = tokenizer.special_ids();
        let (bos, eos) = match enc.family {
            Family::Bert => (None, None),
            Family::Roberta => (Some(ids.cls as usize), Some(ids.sep as usize)),
        };
        HfConfig {
            architectures: vec![architecture(enc.family).into()],
            model_type: enc.family.name().into(),
            vocab_size: enc.vocab_size,
            hidden_size: enc.hidden,
            num_hidden_layers: enc.layers,
            num_attention_heads: enc.heads,
            intermediate_size: enc.ffn,
            hidden_act: "gelu".into(),
            hidden_dropout_prob: enc.dropout,
            attention_probs_dropout_prob: enc.dropout,
            max_position_embeddings: enc.max_position,
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

    /// The encoder this config describes; anything pretext's encoder cannot express is an
    /// error.
    fn encoder(&self) -> Result<EncoderConfig> {
        let family = match self.model_type.as_str() {
            "bert" => Family::Bert,
            "roberta" => Family::Roberta,
            other => bail!("model_type \"{other}\": only \"bert\" and \"roberta\" can be imported"),
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
        let enc = EncoderConfig {
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
        };
        enc.validate()?;
        Ok(enc)
    }
}

/// `tokenizer_config.json` and `special_tokens_map.json` for the `tokenizer.json` text
/// `tokenizer_json`, so that `transformers` tokenizes exactly as it does.
///
/// transformers 5 rebuilds a `BertTokenizer` / `RobertaTokenizer` pipeline from the vocabulary
/// and these settings, not from `tokenizer.json`: the casing comes from the file's own
/// normalizer (which `lowercase`, the run's setting, only backs up), and a normalizer those
/// classes cannot rebuild (RoBERTa's `Lowercase`, anything foreign) falls back to the generic
/// `PreTrainedTokenizerFast`, which keeps `tokenizer.json` as it is.
fn tokenizer_files(
    family: Family,
    tokenizer_json: &[u8],
    lowercase: bool,
    max_len: usize,
) -> Result<(serde_json::Value, serde_json::Value)> {
    let parsed: serde_json::Value =
        serde_json::from_slice(tokenizer_json).context("the tokenizer wrote unreadable JSON")?;
    let normalizer = &parsed["normalizer"];
    let kind = normalizer["type"].as_str();
    let s = family.special_tokens();
    let mut special = json!({
        "cls_token": s.cls,
        "mask_token": s.mask,
        "pad_token": s.pad,
        "sep_token": s.sep,
        "unk_token": s.unk,
    });
    let extra = match family {
        Family::Bert if kind == Some("BertNormalizer") && normalizer["clean_text"] == true => {
            json!({
                "tokenizer_class": "BertTokenizerFast",
                "do_lower_case": normalizer["lowercase"].as_bool().unwrap_or(lowercase),
                "strip_accents": normalizer["strip_accents"],
                "tokenize_chinese_chars": normalizer["handle_chinese_chars"] != false,
            })
        }
        Family::Bert => json!({"tokenizer_class": "PreTrainedTokenizerFast"}),
        Family::Roberta => {
            special["bos_token"] = json!(s.cls);
            special["eos_token"] = json!(s.sep);
            let class = if normalizer.is_null() {
                "RobertaTokenizerFast"
            } else {
                "PreTrainedTokenizerFast"
            };
            json!({
                "tokenizer_class": class,
                "add_prefix_space": true,
                "trim_offsets": true,
                "errors": "replace",
            })
        }
    };
    let mut config = special.clone();
    let map = config.as_object_mut().expect("a JSON object");
    for (k, v) in extra.as_object().expect("a JSON object") {
        map.insert(k.clone(), v.clone());
    }
    map.insert("model_max_length".into(), json!(max_len));
    map.insert("clean_up_tokenization_spaces".into(), json!(false));
    Ok((config, special))
}

/// What [`export_hf`] wrote.
#[derive(Debug, Clone, Serialize)]
pub struct ExportSummary {
    pub dir: PathBuf,
    pub family: Family,
    /// Hugging Face class of the model (`BertForMaskedLM`, `RobertaForMaskedLM`).
    pub architecture: String,
    /// Tensors in `model.safetensors`, tied decoder copies included.
    pub tensors: usize,
    /// Parameters of the model, each tied parameter counted once.
    pub parameters: usize,
    pub files: Vec<String>,
}

fn pretty(value: &impl Serialize) -> Result<Vec<u8>> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    Ok(text.into_bytes())
}

/// Write `ckpt` as a Hugging Face model folder `out` (created if needed; files already there
/// with the same names are replaced).
pub fn export_hf(ckpt: &MlmCheckpoint, out: &Path) -> Result<ExportSummary> {
    if out.exists() && !out.is_dir() {
        bail!(
            "{} exists and is not a folder: the export writes a folder of files",
            out.display()
        );
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let enc = &ckpt.encoder;
    let table = hf_table(enc);

    let tensors = module_tensors(&ckpt.model);
    let by_name: HashMap<&str, &NamedTensor> =
        tensors.iter().map(|t| (t.name.as_str(), t)).collect();
    let mapped: HashSet<&str> = table.iter().map(|e| e.burn.as_str()).collect();
    if let Some(t) = tensors.iter().find(|t| !mapped.contains(t.name.as_str())) {
        bail!(
            "tensor '{}' of the model has no Hugging Face name (the export table is out of date)",
            t.name
        );
    }
    let mut owned: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::with_capacity(table.len());
    for entry in &table {
        let t = by_name.get(entry.burn.as_str()).ok_or_else(|| {
            anyhow!(
                "the model has no tensor '{}' (for '{}')",
                entry.burn,
                entry.hf
            )
        })?;
        if t.shape != entry.burn_shape() {
            bail!(
                "tensor '{}' has shape {:?}, the config implies {:?}",
                t.name,
                t.shape,
                entry.burn_shape()
            );
        }
        let values = if entry.transpose {
            transpose(&t.values, &t.shape)
        } else {
            t.values.clone()
        };
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        owned.push((entry.hf.clone(), entry.shape.clone(), bytes));
    }
    let views = owned
        .iter()
        .map(|(n, s, b)| Ok((n.clone(), TensorView::new(Dtype::F32, s.clone(), b)?)))
        .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()?;
    // transformers refuses a safetensors file whose metadata lacks a known "format".
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    let weights = safetensors::tensor::serialize(views, Some(meta))?;

    let config = HfConfig::new(enc, &ckpt.tokenizer);
    let tmp = out.join(format!(".{TOKENIZER_FILE}.export-{}", std::process::id()));
    let tokenizer_json = ckpt.tokenizer.save(&tmp).and_then(|()| {
        std::fs::read(&tmp).with_context(|| format!("cannot read back {}", tmp.display()))
    });
    let _ = std::fs::remove_file(&tmp);
    let tokenizer_json = tokenizer_json?;
    let (tok_config, special) = tokenizer_files(
        enc.family,
        &tokenizer_json,
        ckpt.config.tokenizer.lowercase,
        enc.max_sequence_len(),
    )?;
    let files: [(&str, Vec<u8>); 5] = [
        (WEIGHTS_FILE, weights),
        (CONFIG_FILE, pretty(&config)?),
        (TOKENIZER_FILE, tokenizer_json),
        (TOKENIZER_CONFIG_FILE, pretty(&tok_config)?),
        (SPECIAL_TOKENS_FILE, pretty(&special)?),
    ];
    for (name, bytes) in &files {
        write_atomic(&out.join(name), bytes)?;
    }
    Ok(ExportSummary {
        dir: out.to_path_buf(),
        family: enc.family,
        architecture: architecture(enc.family).into(),
        tensors: table.len(),
        parameters: tensors.iter().map(|t| t.values.len()).sum(),
        files: files.iter().map(|(n, _)| n.to_string()).collect(),
    })
}

fn read_config(path: &Path) -> Result<HfConfig> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: not valid JSON", path.display()))?;
    match value.get("model_type").and_then(|v| v.as_str()) {
        Some("bert" | "roberta") => {}
        Some(other) => bail!(
            "{}: model_type \"{other}\" is not a BERT or RoBERTa model; only those can be imported",
            path.display()
        ),
        None => bail!("{}: no model_type", path.display()),
    }
    serde_json::from_value(value).with_context(|| format!("{}: unreadable config", path.display()))
}

/// Tensors by name: (shape, values).
type Weights = HashMap<String, (Vec<usize>, Vec<f32>)>;

/// The F32 tensors of a safetensors file.
fn read_weights(path: &Path) -> Result<Weights> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let st = SafeTensors::deserialize(&bytes)
        .with_context(|| format!("{}: not a safetensors file", path.display()))?;
    let mut out = HashMap::new();
    for (name, view) in st.tensors() {
        if view.dtype() != Dtype::F32 {
            bail!(
                "{}: tensor '{name}' is {:?}; only F32 is read",
                path.display(),
                view.dtype()
            );
        }
        let values = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        out.insert(name, (view.shape().to_vec(), values));
    }
    Ok(out)
}

/// Read a folder written by [`export_hf`] (a `BertForMaskedLM` or `RobertaForMaskedLM` with
/// its tokenizer) onto `device`.
pub fn import_hf(dir: &Path, device: &Device) -> Result<(MlmModel, EncoderConfig, TextTokenizer)> {
    let config_path = dir.join(CONFIG_FILE);
    let enc = read_config(&config_path)?
        .encoder()
        .with_context(|| format!("{}: not a model pretext can hold", config_path.display()))?;

    let tokenizer_path = dir.join(TOKENIZER_FILE);
    let tokenizer = TextTokenizer::load(&tokenizer_path)?;
    if tokenizer.family() != enc.family
        || tokenizer.vocab_size() != enc.vocab_size
        || tokenizer.pad_id() as usize != enc.pad_id
    {
        bail!(
            "{}: the tokenizer ({}, {} ids, padding id {}) does not match {} ({}, {} ids, padding id {})",
            tokenizer_path.display(),
            tokenizer.family().name(),
            tokenizer.vocab_size(),
            tokenizer.pad_id(),
            config_path.display(),
            enc.family.name(),
            enc.vocab_size,
            enc.pad_id
        );
    }

    let weights_path = dir.join(WEIGHTS_FILE);
    let weights = read_weights(&weights_path)?;
    let table = hf_table(&enc);
    let known: HashSet<&str> = table.iter().map(|e| e.hf.as_str()).collect();
    let mut unexpected: Vec<&str> = weights
        .keys()
        .map(String::as_str)
        .filter(|n| !known.contains(n))
        .collect();
    if !unexpected.is_empty() {
        unexpected.sort_unstable();
        bail!(
            "{}: unexpected tensors for a {} model: {}",
            weights_path.display(),
            architecture(enc.family),
            unexpected.join(", ")
        );
    }
    let mut tensors: Vec<NamedTensor> = Vec::new();
    let mut sources: HashMap<&str, &str> = HashMap::new();
    let mut missing = Vec::new();
    for entry in &table {
        let Some((shape, values)) = weights.get(&entry.hf) else {
            if !entry.tied {
                missing.push(entry.hf.as_str());
            }
            continue;
        };
        if *shape != entry.shape {
            bail!(
                "{}: tensor '{}' has shape {shape:?}, {} implies {:?}",
                weights_path.display(),
                entry.hf,
                config_path.display(),
                entry.shape
            );
        }
        if entry.tied {
            // A tied copy must hold exactly the values of the tensor it is tied to.
            let source = tensors.iter().find(|t| t.name == entry.burn);
            let source_values = source.map(|t| {
                if entry.transpose {
                    transpose(&t.values, &t.shape)
                } else {
                    t.values.clone()
                }
            });
            if let Some(source_values) = source_values
                && source_values != *values
            {
                bail!(
                    "{}: '{}' differs from '{}'; pretext ties the decoder to it",
                    weights_path.display(),
                    entry.hf,
                    sources.get(entry.burn.as_str()).copied().unwrap_or("?")
                );
            }
            continue;
        }
        let values = if entry.transpose {
            transpose(values, shape)
        } else {
            values.clone()
        };
        sources.insert(entry.burn.as_str(), entry.hf.as_str());
        tensors.push(NamedTensor {
            name: entry.burn.clone(),
            shape: entry.burn_shape(),
            values,
        });
    }
    if !missing.is_empty() {
        bail!(
            "{}: missing tensor{} {}",
            weights_path.display(),
            if missing.len() == 1 { "" } else { "s" },
            missing
                .iter()
                .map(|n| format!("'{n}'"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let model = load_module(enc.init(device)?, &tensors)
        .with_context(|| format!("loading weights from {}", weights_path.display()))?;
    Ok((model, enc, tokenizer))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::encoder::SizePreset;
    use crate::text::mlm::MlmConfig;
    use crate::text::test_support::{TempDir, grammar_corpus};

    const SENTENCES: [&str; 3] = [
        "the quick fox jumps over the lazy dog.",
        "The wise queen helps the zebra and the grumpy yak avoids the knight.",
        "a cat",
    ];

    /// A one-layer model of `family` with every parameter moved off its initial value (so a
    /// mix-up of, say, LayerNorm weight and bias cannot go unseen), and its tokenizer.
    fn checkpoint(family: Family, lowercase: bool, dir: &TempDir) -> MlmCheckpoint {
        let corpus = dir.write("corpus.txt", &grammar_corpus(200, 4).join("\n"));
        let tokenizer = TextTokenizer::train(family, &[corpus], 300, lowercase).unwrap();
        let encoder = EncoderConfig {
            layers: 1,
            hidden: 64,
            ffn: 128,
            max_position: 64 + family_offset(family),
            pad_id: tokenizer.pad_id() as usize,
            ..EncoderConfig::preset(SizePreset::Tiny, family, tokenizer.vocab_size())
        };
        let device = Device::flex();
        let model = encoder.init(&device).unwrap();
        let mut tensors = module_tensors(&model);
        for (k, t) in tensors.iter_mut().enumerate() {
            for (j, v) in t.values.iter_mut().enumerate() {
                *v += 0.05 * ((j * 7919 + k * 104_729) as f32 * 0.618).sin();
            }
        }
        let model = load_module(model, &tensors).unwrap();
        let mut config = MlmConfig::default();
        config.tokenizer.family = family;
        config.tokenizer.lowercase = lowercase;
        MlmCheckpoint {
            model,
            encoder,
            tokenizer,
            config,
            step: 0,
            dir: dir.path().to_path_buf(),
        }
    }

    fn family_offset(family: Family) -> usize {
        match family {
            Family::Bert => 0,
            Family::Roberta => 2,
        }
    }

    /// Logits of `sentences` as one padded batch: per sentence, `len x vocab` values of its
    /// real tokens.
    fn logits(model: &MlmModel, tok: &TextTokenizer, sentences: &[&str]) -> Vec<Vec<f32>> {
        let device = Device::flex();
        let rows: Vec<Vec<u32>> = sentences.iter().map(|s| tok.encode(s).unwrap()).collect();
        let len = rows.iter().map(Vec::len).max().unwrap();
        let (mut ids, mut mask) = (Vec::new(), Vec::new());
        for r in &rows {
            ids.extend(r.iter().map(|&i| i64::from(i)));
            ids.extend(std::iter::repeat_n(i64::from(tok.pad_id()), len - r.len()));
            mask.extend(std::iter::repeat_n(true, r.len()));
            mask.extend(std::iter::repeat_n(false, len - r.len()));
        }
        let shape = [rows.len(), len];
        let out = model
            .logits(
                Tensor::from_data(TensorData::new(ids, shape), &device),
                Tensor::from_data(TensorData::new(mask, shape), &device),
            )
            .unwrap();
        let vocab = out.dims()[2];
        let flat = out
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .unwrap();
        rows.iter()
            .enumerate()
            .map(|(i, r)| flat[i * len * vocab..(i * len + r.len()) * vocab].to_vec())
            .collect()
    }

    fn max_abs_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .flat_map(|(x, y)| {
                assert_eq!(x.len(), y.len());
                x.iter().zip(y).map(|(p, q)| (p - q).abs())
            })
            .fold(0.0, f32::max)
    }

    #[test]
    fn export_then_import_keeps_the_model() {
        for (family, lowercase) in [(Family::Bert, true), (Family::Roberta, false)] {
            let dir = TempDir::new(&format!("export-round-{}", family.name()));
            let ckpt = checkpoint(family, lowercase, &dir);
            let out = dir.path().join("hf");
            let summary = export_hf(&ckpt, &out).unwrap();
            assert_eq!(summary.parameters, ckpt.model.num_params());
            for file in &summary.files {
                assert!(out.join(file).is_file(), "{file}");
            }
            let (model, enc, tok) = import_hf(&out, &Device::flex()).unwrap();
            assert_eq!(enc, ckpt.encoder);
            assert_eq!(module_tensors(&model), module_tensors(&ckpt.model));
            assert_eq!(tok.special_ids(), ckpt.tokenizer.special_ids());
            for s in SENTENCES {
                assert_eq!(tok.encode(s).unwrap(), ckpt.tokenizer.encode(s).unwrap());
            }
            let before = logits(&ckpt.model, &ckpt.tokenizer, &SENTENCES);
            let after = logits(&model, &tok, &SENTENCES);
            let diff = max_abs_diff(&before, &after);
            assert!(diff < 1e-6, "{family:?}: logits differ by {diff}");

            let config: serde_json::Value =
                serde_json::from_slice(&std::fs::read(out.join(CONFIG_FILE)).unwrap()).unwrap();
            assert_eq!(config["model_type"], family.name());
            assert_eq!(config["architectures"][0], summary.architecture);
            let tok_config: serde_json::Value =
                serde_json::from_slice(&std::fs::read(out.join(TOKENIZER_CONFIG_FILE)).unwrap())
                    .unwrap();
            assert_eq!(tok_config["model_max_length"], 64);
            assert_eq!(tok_config["mask_token"], family.special_tokens().mask);
            let class = match family {
                Family::Bert => "BertTokenizerFast",
                Family::Roberta => "RobertaTokenizerFast",
            };
            assert_eq!(tok_config["tokenizer_class"], class);
            // No temporary file is left behind.
            let mut names: Vec<String> = std::fs::read_dir(&out)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            let mut want = summary.files.clone();
            want.sort();
            assert_eq!(names, want);
            // Exporting again over the folder replaces it.
            export_hf(&ckpt, &out).unwrap();
        }
    }

    #[test]
    fn tokenizer_config_follows_the_normalizer() {
        let bert = |normalizer: serde_json::Value| {
            let file = json!({ "normalizer": normalizer }).to_string();
            tokenizer_files(Family::Bert, file.as_bytes(), true, 512)
                .unwrap()
                .0
        };
        let cased = bert(json!({"type": "BertNormalizer", "clean_text": true,
            "handle_chinese_chars": true, "strip_accents": null, "lowercase": false}));
        assert_eq!(cased["tokenizer_class"], "BertTokenizerFast");
        assert_eq!(
            cased["do_lower_case"], false,
            "the file wins over the setting"
        );
        assert_eq!(cased["model_max_length"], 512);
        let foreign = bert(json!({"type": "NFKC"}));
        assert_eq!(foreign["tokenizer_class"], "PreTrainedTokenizerFast");

        let roberta = |normalizer: serde_json::Value| {
            let file = json!({ "normalizer": normalizer }).to_string();
            tokenizer_files(Family::Roberta, file.as_bytes(), false, 512).unwrap()
        };
        let (config, special) = roberta(json!({"type": "Lowercase"}));
        assert_eq!(config["tokenizer_class"], "PreTrainedTokenizerFast");
        assert_eq!(special["bos_token"], "<s>");
        assert_eq!(special["eos_token"], "</s>");
        let (config, _) = roberta(serde_json::Value::Null);
        assert_eq!(config["tokenizer_class"], "RobertaTokenizerFast");
        assert_eq!(config["add_prefix_space"], true);
    }

    /// Every parameter name of `BertForMaskedLM` / `RobertaForMaskedLM` (transformers 5.24)
    /// for two layers, written out independently of [`hf_table`].
    fn expected_names(family: Family) -> Vec<String> {
        let p = family.name();
        let mut names: Vec<String> = [
            "embeddings.word_embeddings.weight",
            "embeddings.position_embeddings.weight",
            "embeddings.token_type_embeddings.weight",
            "embeddings.LayerNorm.weight",
            "embeddings.LayerNorm.bias",
        ]
        .iter()
        .map(|n| format!("{p}.{n}"))
        .collect();
        for i in 0..2 {
            for n in [
                "attention.self.query.weight",
                "attention.self.query.bias",
                "attention.self.key.weight",
                "attention.self.key.bias",
                "attention.self.value.weight",
                "attention.self.value.bias",
                "attention.output.dense.weight",
                "attention.output.dense.bias",
                "attention.output.LayerNorm.weight",
                "attention.output.LayerNorm.bias",
                "intermediate.dense.weight",
                "intermediate.dense.bias",
                "output.dense.weight",
                "output.dense.bias",
                "output.LayerNorm.weight",
                "output.LayerNorm.bias",
            ] {
                names.push(format!("{p}.encoder.layer.{i}.{n}"));
            }
        }
        let head: [&str; 8] = match family {
            Family::Bert => [
                "cls.predictions.bias",
                "cls.predictions.transform.dense.weight",
                "cls.predictions.transform.dense.bias",
                "cls.predictions.transform.LayerNorm.weight",
                "cls.predictions.transform.LayerNorm.bias",
                "cls.predictions.decoder.weight",
                "cls.predictions.decoder.bias",
                "",
            ],
            Family::Roberta => [
                "lm_head.bias",
                "lm_head.dense.weight",
                "lm_head.dense.bias",
                "lm_head.layer_norm.weight",
                "lm_head.layer_norm.bias",
                "lm_head.decoder.weight",
                "lm_head.decoder.bias",
                "",
            ],
        };
        names.extend(head.iter().filter(|n| !n.is_empty()).map(|n| n.to_string()));
        names.sort();
        names
    }

    #[test]
    fn exported_names_and_shapes_are_hugging_face_ones() {
        for family in [Family::Bert, Family::Roberta] {
            let dir = TempDir::new(&format!("export-names-{}", family.name()));
            let mut ckpt = checkpoint(family, true, &dir);
            ckpt.encoder.layers = 2;
            ckpt.model = ckpt.encoder.init(&Device::flex()).unwrap();
            let out = dir.path().join("hf");
            export_hf(&ckpt, &out).unwrap();
            let weights = read_weights(&out.join(WEIGHTS_FILE)).unwrap();
            let mut names: Vec<String> = weights.keys().cloned().collect();
            names.sort();
            assert_eq!(names, expected_names(family));
            let (h, f, v) = (64, 128, ckpt.encoder.vocab_size);
            let p = family.name();
            let shape = |n: &str| weights[n].0.clone();
            assert_eq!(
                shape(&format!("{p}.encoder.layer.1.intermediate.dense.weight")),
                [f, h]
            );
            assert_eq!(
                shape(&format!("{p}.encoder.layer.1.output.dense.weight")),
                [h, f]
            );
            assert_eq!(
                shape(&format!("{p}.embeddings.word_embeddings.weight")),
                [v, h]
            );
            // PyTorch layout: row o of a Linear weight holds the inputs of output o.
            let burn = module_tensors(&ckpt.model);
            let w = burn
                .iter()
                .find(|t| t.name == "encoder.layers.1.intermediate.weight")
                .unwrap();
            let hf = &weights[&format!("{p}.encoder.layer.1.intermediate.dense.weight")].1;
            assert_eq!(hf[3 * h + 5], w.values[5 * f + 3]);
        }
    }

    #[test]
    fn import_errors_name_the_file_and_the_tensor() {
        let dir = TempDir::new("export-errors");
        let ckpt = checkpoint(Family::Bert, true, &dir);
        let out = dir.path().join("hf");
        export_hf(&ckpt, &out).unwrap();
        let device = Device::flex();
        let weights_path = out.join(WEIGHTS_FILE);
        let good = std::fs::read(&weights_path).unwrap();
        let rewrite = |edit: &dyn Fn(&mut Weights)| {
            let mut w = read_weights(&weights_path).unwrap();
            edit(&mut w);
            let owned: Vec<(String, Vec<usize>, Vec<u8>)> = w
                .into_iter()
                .map(|(n, (s, v))| (n, s, v.iter().flat_map(|x| x.to_le_bytes()).collect()))
                .collect();
            let views: Vec<(String, TensorView)> = owned
                .iter()
                .map(|(n, s, b)| {
                    (
                        n.clone(),
                        TensorView::new(Dtype::F32, s.clone(), b).unwrap(),
                    )
                })
                .collect();
            std::fs::write(
                &weights_path,
                safetensors::tensor::serialize(views, None).unwrap(),
            )
            .unwrap();
        };
        let err_of = || format!("{:#}", import_hf(&out, &device).err().unwrap());

        let missing = "bert.encoder.layer.0.attention.output.LayerNorm.bias";
        rewrite(&|w| {
            w.remove(missing);
        });
        let err = err_of();
        assert!(
            err.contains(missing) && err.contains(WEIGHTS_FILE) && err.contains("missing"),
            "{err}"
        );

        std::fs::write(&weights_path, &good).unwrap();
        let name = "bert.encoder.layer.0.intermediate.dense.weight";
        rewrite(&|w| {
            w.get_mut(name).unwrap().0 = vec![64, 128];
        });
        let err = err_of();
        assert!(err.contains(name) && err.contains("[64, 128]"), "{err}");

        std::fs::write(&weights_path, &good).unwrap();
        rewrite(&|w| {
            w.get_mut("cls.predictions.decoder.weight").unwrap().1[0] += 1.0;
        });
        let err = err_of();
        assert!(
            err.contains("cls.predictions.decoder.weight")
                && err.contains("bert.embeddings.word_embeddings.weight"),
            "{err}"
        );

        // The tied copies are optional, as in transformers' own save_pretrained output.
        std::fs::write(&weights_path, &good).unwrap();
        rewrite(&|w| {
            w.remove("cls.predictions.decoder.weight");
            w.remove("cls.predictions.decoder.bias");
        });
        import_hf(&out, &device).unwrap();

        rewrite(&|w| {
            w.insert("bert.pooler.dense.bias".into(), (vec![1], vec![0.0]));
        });
        let err = err_of();
        assert!(err.contains("bert.pooler.dense.bias"), "{err}");

        std::fs::write(&weights_path, &good).unwrap();
        let config_path = out.join(CONFIG_FILE);
        let config = std::fs::read_to_string(&config_path).unwrap();
        std::fs::write(
            &config_path,
            config.replace("\"model_type\": \"bert\"", "\"model_type\": \"distilbert\""),
        )
        .unwrap();
        let err = err_of();
        assert!(
            err.contains("distilbert") && err.contains(CONFIG_FILE),
            "{err}"
        );
        std::fs::write(&config_path, config.replace("\"gelu\"", "\"relu\"")).unwrap();
        let err = err_of();
        assert!(err.contains("relu") && err.contains(CONFIG_FILE), "{err}");
        std::fs::write(&config_path, &config).unwrap();
        import_hf(&out, &device).unwrap();

        std::fs::remove_file(out.join(TOKENIZER_FILE)).unwrap();
        assert!(err_of().contains(TOKENIZER_FILE));

        let file = dir.write("a-file", "x");
        let err = export_hf(&ckpt, &file).unwrap_err().to_string();
        assert!(
            err.contains("a-file") && err.contains("not a folder"),
            "{err}"
        );
    }

    /// Run folders for `bench/mlm/check_export.py`, written under `$PRETEXT_EXPORT_FIXTURE`
    /// (one per family and casing): a briefly trained model's `checkpoint.safetensors` and
    /// `tokenizer.json`, its export in `hf/`, and `logits.json` as `pretext mlm logits` writes
    /// it. `PRETEXT_EXPORT_FIXTURE=/tmp/fx cargo test --release -p pretext --lib
    /// text::export -- --ignored`
    #[test]
    #[ignore = "writes fixtures for the Python check; needs PRETEXT_EXPORT_FIXTURE"]
    fn write_python_fixture() {
        use burn::optim::GradientsParams;

        use crate::checkpoint::Checkpoint;
        use crate::optim::{OptimConfig, Optimizer, cosine_lr};
        use crate::text::examples::{line_examples, pad_batch};
        use crate::text::masking::{MaskingConfig, mask_tokens};

        let root = PathBuf::from(
            std::env::var("PRETEXT_EXPORT_FIXTURE").expect("set PRETEXT_EXPORT_FIXTURE"),
        );
        let sentences = [
            "the quick fox jumps over the lazy dog.",
            "The Wise QUEEN helps the zebra, and the grumpy yak avoids the knight!",
            "zigzag ünïcode café ✓",
        ];
        for (family, lowercase) in [
            (Family::Bert, true),
            (Family::Bert, false),
            (Family::Roberta, true),
            (Family::Roberta, false),
        ] {
            let run = root.join(format!(
                "{}-{}",
                family.name(),
                if lowercase { "lower" } else { "cased" }
            ));
            let _ = std::fs::remove_dir_all(&run);
            std::fs::create_dir_all(&run).unwrap();
            let scratch = TempDir::new(&format!("fixture-{}-{lowercase}", family.name()));
            let lines = grammar_corpus(400, 5);
            let corpus = scratch.write("c.txt", &lines.join("\n"));
            let tok = TextTokenizer::train(family, &[corpus], 300, lowercase).unwrap();
            tok.save(&run.join(TOKENIZER_FILE)).unwrap();
            let encoder = EncoderConfig {
                layers: 2,
                hidden: 64,
                ffn: 256,
                max_position: 64 + family_offset(family),
                dropout: 0.0,
                pad_id: tok.pad_id() as usize,
                ..EncoderConfig::preset(SizePreset::Tiny, family, tok.vocab_size())
            };
            let device = Device::flex().autodiff();
            device.seed(1);
            let mut model = encoder.init(&device).unwrap();
            let examples = line_examples(&tok, &lines, 48).unwrap();
            let masking = MaskingConfig::default();
            let mut opt = Optimizer::new(OptimConfig {
                lr: 2e-3,
                weight_decay: 0.01,
                ..Default::default()
            });
            let (steps, batch_size) = (200, 16);
            for step in 0..steps {
                let rows: Vec<_> = (0..batch_size)
                    .map(|b| {
                        let i = (step * batch_size + b) % examples.len();
                        let seed = masking.seed_mix(0, step as u64, i as u64);
                        let ids = &examples[i].ids;
                        mask_tokens(
                            ids,
                            None,
                            &masking,
                            &tok.special_ids(),
                            tok.vocab_size(),
                            seed,
                        )
                        .unwrap()
                    })
                    .collect();
                let batch = pad_batch(&rows, tok.pad_id(), 0).unwrap();
                if batch.masked_count() == 0 {
                    continue;
                }
                let loss = model
                    .loss(
                        batch.input_tensor(&device),
                        batch.attention_tensor(&device),
                        &batch.labels,
                    )
                    .unwrap();
                let grads = GradientsParams::from_grads(loss.backward(), &model);
                model = opt.step(model, grads, cosine_lr(2e-3, step, 20, steps));
            }
            let model = model.valid();
            let mut config = MlmConfig::default();
            config.tokenizer.family = family;
            config.tokenizer.lowercase = lowercase;
            Checkpoint {
                model: module_tensors(&model),
                optimizer: Vec::new(),
                meta: json!({
                    "kind": "mlm",
                    "config": config.to_toml(),
                    "encoder": encoder,
                    "step": steps,
                }),
            }
            .save(&run.join("checkpoint.safetensors"))
            .unwrap();

            let ckpt = MlmCheckpoint::load(&run, &Device::flex()).unwrap();
            export_hf(&ckpt, &run.join("hf")).unwrap();
            let mut input_ids = Vec::new();
            let mut all_logits = Vec::new();
            let masked = format!("The lazy {} chases the cat.", family.special_tokens().mask);
            let sentences = [sentences[0], sentences[1], sentences[2], masked.as_str()];
            for s in sentences {
                let ids = ckpt.tokenizer.encode(s).unwrap();
                let vocab = ckpt.encoder.vocab_size;
                let flat = logits(&ckpt.model, &ckpt.tokenizer, &[s]).remove(0);
                all_logits.push(flat.chunks(vocab).map(<[f32]>::to_vec).collect::<Vec<_>>());
                input_ids.push(ids);
            }
            let out = json!({"sentences": sentences, "input_ids": input_ids, "logits": all_logits});
            std::fs::write(run.join("logits.json"), out.to_string()).unwrap();
            eprintln!("wrote {}", run.display());
        }
    }
}
