//! Reading a Hugging Face model folder back into pretext's encoder.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use anyhow::{Context, Result, bail};
use burn::prelude::*;
use safetensors::tensor::{Dtype, SafeTensors};

use super::*;
use crate::core::checkpoint::{NamedTensor, load_module};
use crate::text::encoder::MlmModel;

pub(super) fn read_config(path: &Path) -> Result<HfConfig> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: not valid JSON", path.display()))?;
    match value.get("model_type").and_then(|v| v.as_str()) {
        Some("bert" | "roberta" | PRE_NORM_MODEL_TYPE) => {}
        Some(other) => bail!(
            "{}: model_type \"{other}\" is not a BERT or RoBERTa model; only those can be imported",
            path.display()
        ),
        None => bail!("{}: no model_type", path.display()),
    }
    serde_json::from_value(value).with_context(|| format!("{}: unreadable config", path.display()))
}

/// Tensors by name: (shape, values).
pub(super) type Weights = HashMap<String, (Vec<usize>, Vec<f32>)>;

/// The F32 tensors of a safetensors file.
pub(super) fn read_weights(path: &Path) -> Result<Weights> {
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
    let config = read_config(&config_path)?;
    let tokenizer_path = dir.join(TOKENIZER_FILE);
    let tokenizer = TextTokenizer::load(&tokenizer_path)?;
    let enc = config
        .encoder(tokenizer.family())
        .with_context(|| format!("{}: not a model pretext can hold", config_path.display()))?;

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
            architecture(&enc),
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
            values[entry.skip_rows * shape[1..].iter().product::<usize>()..].to_vec()
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
