//! Writing a checkpoint as a Hugging Face model folder.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use safetensors::tensor::{Dtype, TensorView};
use serde::Serialize;
use serde_json::json;

use super::*;
use crate::core::checkpoint::{NamedTensor, module_tensors, write_atomic};
use crate::text::checkpoint::MlmCheckpoint;
use crate::text::tokenizer::TextTokenizer;

/// `tokenizer_config.json` and `special_tokens_map.json` for the `tokenizer.json` text
/// `tokenizer_json`, so that `transformers` tokenizes exactly as it does.
///
/// transformers 5 rebuilds a `BertTokenizer` / `RobertaTokenizer` pipeline from the vocabulary
/// and these settings, not from `tokenizer.json`: the casing comes from the file's own
/// normalizer (which `lowercase`, the run's setting, only backs up), and a normalizer those
/// classes cannot rebuild (RoBERTa's `Lowercase`, anything foreign) falls back to the generic
/// `PreTrainedTokenizerFast`, which keeps `tokenizer.json` as it is.
pub(super) fn tokenizer_files(
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

pub(super) fn pretty(value: &impl Serialize) -> Result<Vec<u8>> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    Ok(text.into_bytes())
}

/// Write `ckpt` as a Hugging Face model folder `out` (created if needed; files already there
/// with the same names are replaced).
pub fn export_hf(ckpt: &MlmCheckpoint, out: &Path) -> Result<ExportSummary> {
    ckpt.require_mlm_head("a masked-language-model export")?;
    let enc = &ckpt.encoder;
    let table = hf_table(enc);
    let tensors = module_tensors(&ckpt.model);
    check_all_named(&tensors, &[&table])?;
    write_hf_folder(
        out,
        &table,
        &tensors,
        &HfConfig::new(enc, &ckpt.tokenizer),
        architecture(enc),
        &ckpt.tokenizer,
        ckpt.config.tokenizer.lowercase,
        enc.max_sequence_len(),
    )
}

/// Refuses a model with a tensor that none of `tables` names.
pub(super) fn check_all_named(tensors: &[NamedTensor], tables: &[&[HfTensor]]) -> Result<()> {
    let mapped: HashSet<&str> = tables
        .iter()
        .flat_map(|t| t.iter().map(|e| e.burn.as_str()))
        .collect();
    if let Some(t) = tensors.iter().find(|t| !mapped.contains(t.name.as_str())) {
        bail!(
            "tensor '{}' of the model has no Hugging Face name (the export table is out of date)",
            t.name
        );
    }
    Ok(())
}

/// Writes a Hugging Face model folder `out`: the `tensors` named by `table` as
/// `model.safetensors`, `config` as `config.json`, and the tokenizer's files.
#[allow(clippy::too_many_arguments)]
pub(super) fn write_hf_folder(
    out: &Path,
    table: &[HfTensor],
    tensors: &[NamedTensor],
    config: &impl Serialize,
    architecture: &str,
    tokenizer: &TextTokenizer,
    lowercase: bool,
    max_len: usize,
) -> Result<ExportSummary> {
    if out.exists() && !out.is_dir() {
        bail!(
            "{} exists and is not a folder: the export writes a folder of files",
            out.display()
        );
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let by_name: HashMap<&str, &NamedTensor> =
        tensors.iter().map(|t| (t.name.as_str(), t)).collect();
    let mut owned: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::with_capacity(table.len());
    let mut parameters = 0;
    for entry in table {
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
        if !entry.tied {
            parameters += t.values.len();
        }
        let values = if entry.transpose {
            transpose(&t.values, &t.shape)
        } else {
            let skipped = entry.skip_rows * t.shape[1..].iter().product::<usize>();
            let mut values = vec![0.0; skipped];
            values.extend_from_slice(&t.values);
            values
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
    let weights = crate::core::checkpoint::serialize_stable(views, meta)?;

    let tmp = out.join(format!(".{TOKENIZER_FILE}.export-{}", std::process::id()));
    let tokenizer_json = tokenizer.save(&tmp).and_then(|()| {
        std::fs::read(&tmp).with_context(|| format!("cannot read back {}", tmp.display()))
    });
    let _ = std::fs::remove_file(&tmp);
    let tokenizer_json = tokenizer_json?;
    let (tok_config, special) =
        tokenizer_files(tokenizer.family(), &tokenizer_json, lowercase, max_len)?;
    let files: [(&str, Vec<u8>); 5] = [
        (WEIGHTS_FILE, weights),
        (CONFIG_FILE, pretty(config)?),
        (TOKENIZER_FILE, tokenizer_json),
        (TOKENIZER_CONFIG_FILE, pretty(&tok_config)?),
        (SPECIAL_TOKENS_FILE, pretty(&special)?),
    ];
    for (name, bytes) in &files {
        write_atomic(&out.join(name), bytes)?;
    }
    Ok(ExportSummary {
        dir: out.to_path_buf(),
        family: tokenizer.family(),
        architecture: architecture.into(),
        tensors: table.len(),
        parameters,
        files: files.iter().map(|(n, _)| n.to_string()).collect(),
    })
}
