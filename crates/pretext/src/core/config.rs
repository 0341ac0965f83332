//! The config machinery every job shares: one TOML file plus `--set key=value` overrides, with
//! unknown keys refused by name; and the config tables common to all jobs (the run folder and
//! checkpoint cadence, frozen-feature evaluation).
//!
//! Every table denies unknown keys, so a typo is an error that names the key instead of a
//! silently ignored setting.

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::core::finetune::{FineTuneConfig, FixMatchConfig};
use crate::core::labels::{DistillConfig, LabelsConfig};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Run folder: checkpoint, metrics, plots.
    pub out_dir: String,
    /// Write a checkpoint every N optimizer steps (0: only at the end of each epoch).
    pub checkpoint_every: usize,
    /// Batches prepared ahead of the model.
    pub prefetch: usize,
    /// Stop after this many steps in total (0: run all epochs). For tests and interruption drills.
    pub max_steps: usize,
    /// Image pretraining: hold out this many labelled training images (never trained on) and
    /// log a kNN score of their features at every epoch end, against as many training images
    /// (0: off). Labels are read for this score only.
    pub online_knn: usize,
    /// Under MPI: seconds a rank waits in one of the training loop's collectives before it
    /// decides another rank has stopped answering and ends the job (0: wait for ever).
    pub collective_timeout: f64,
    /// Under MPI: batch norm layers take their statistics over the global batch (every rank's
    /// rows), so that N ranks train what one process trains on the same batches. Off, each
    /// rank normalises its own share, as PyTorch DDP does by default.
    pub sync_batchnorm: bool,
    /// Under MPI: megabytes of `f32` gradients summed by one all-reduce (4: a million values,
    /// near PyTorch DDP's 25 MB buckets for the models trained here; larger buckets mean fewer
    /// messages, smaller ones a smaller staging buffer).
    pub allreduce_bucket_mb: f64,
    /// A wall-clock budget in minutes (0: off). The learning-rate schedule is laid over the
    /// budget instead of the steps (Cramming's budget triangle: its position is the share of
    /// the budget spent), and the run ends when the budget is spent or the steps run out,
    /// whichever comes first. Time spent before a `--resume` counts.
    pub budget_minutes: f64,
    /// Copies of the model trained side by side in this process, each on its share of every
    /// batch in its own share of the threads, their gradients summed before the one optimizer
    /// step (docs/distributed.md, "Replicas in one process"). The same batches give the same
    /// result as with 1, up to the order floats are summed in; on a few cores it is faster for
    /// small models, whose ops split poorly over threads. VideoMAE only, for now.
    pub replicas: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalConfig {
    pub knn_k: usize,
    pub knn_temperature: f64,
    pub linear_epochs: usize,
    pub linear_lr: f64,
    pub linear_batch_size: usize,
    pub linear_weight_decay: f64,
    /// Optimizer steps of the linear probe at the least: the epochs are raised to reach it, so
    /// a probe on a 1% subset is not stopped after a few dozen steps. 0: `linear_epochs` alone.
    /// 1000 by default: on the digit sheet (docs/labels.md) it lifted the probe with 1% of the
    /// labels from 61.5% to 77.5% and with 10% from 77.9% to 90.6%; probes on whole data sets
    /// of 9,000 images or more already run longer and are unchanged.
    pub linear_min_steps: usize,
    /// `[eval.labels]`: the label-efficiency study (`pretext eval labels`).
    pub labels: LabelsConfig,
    /// `[eval.finetune]`: fine-tuning and the supervised baseline of that study.
    pub finetune: FineTuneConfig,
    /// `[eval.fixmatch]`: the FixMatch arms of that study.
    pub fixmatch: FixMatchConfig,
    /// `[eval.distill]`: its distillation arm.
    pub distill: DistillConfig,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            out_dir: "runs/pretrain".into(),
            checkpoint_every: 0,
            prefetch: 4,
            max_steps: 0,
            online_knn: 0,
            collective_timeout: 600.0,
            sync_batchnorm: false,
            allreduce_bucket_mb: 4.0,
            budget_minutes: 0.0,
            replicas: 1,
        }
    }
}

impl EvalConfig {
    pub fn validate(&self) -> Result<()> {
        if self.knn_k == 0 || self.knn_temperature <= 0.0 {
            bail!("eval.knn_k and eval.knn_temperature must be positive");
        }
        self.labels.validate()?;
        self.fixmatch.validate("eval.fixmatch")?;
        self.distill.validate()?;
        self.finetune.validate("eval.finetune")
    }
}

impl Default for EvalConfig {
    fn default() -> Self {
        EvalConfig {
            knn_k: 200,
            knn_temperature: 0.1,
            linear_epochs: 30,
            linear_lr: 0.01,
            linear_batch_size: 256,
            linear_weight_decay: 1e-5,
            linear_min_steps: 1000,
            labels: LabelsConfig::default(),
            finetune: FineTuneConfig::default(),
            fixmatch: FixMatchConfig::default(),
            distill: DistillConfig::default(),
        }
    }
}

/// Parse a `--set` value as a TOML value, falling back to a bare string (`method=byol`).
fn parse_value(raw: &str) -> toml::Value {
    let doc = format!("v = {raw}");
    match doc.parse::<toml::Table>() {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.into())),
        Err(_) => toml::Value::String(raw.into()),
    }
}

/// Apply `key.path=value` to a TOML table, refusing keys the default config lacks.
fn apply_override(doc: &mut toml::Table, reference: &toml::Table, assignment: &str) -> Result<()> {
    let Some((key, raw)) = assignment.split_once('=') else {
        bail!("--set {assignment}: expected key=value");
    };
    let key = key.trim();
    let parts: Vec<&str> = key.split('.').collect();
    let mut table = doc;
    let mut reference = Some(reference);
    for (i, part) in parts.iter().enumerate() {
        let known = reference.and_then(|r| r.get(*part));
        if reference.is_some() && known.is_none() {
            bail!("--set {key}: unknown key '{part}'");
        }
        if i + 1 == parts.len() {
            table.insert(part.to_string(), parse_value(raw.trim()));
            return Ok(());
        }
        reference = known.and_then(|v| v.as_table());
        let entry = table
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = entry
            .as_table_mut()
            .with_context(|| format!("--set {key}: '{part}' is not a table"))?;
    }
    Ok(())
}

/// A checkpoint's config (`toml`) with `--set eval.*` applied, for `what` (e.g. "a video
/// study"): the evaluation settings are the caller's to change, the rest is what the checkpoint
/// was trained with, and a `--set` of anything else is refused.
pub fn with_eval_settings<T>(toml: &str, overrides: &[String], what: &str) -> Result<T>
where
    T: Default + Serialize + serde::de::DeserializeOwned,
{
    if let Some(other) = overrides
        .iter()
        .find(|s| !s.trim_start().starts_with("eval."))
    {
        anyhow::bail!("--set {other}: {what} takes only eval.* settings");
    }
    parse_config(toml, "the checkpoint's config", overrides)
}

/// Parse a config of type `T` from TOML text plus `--set` overrides: keys the default config
/// lacks are refused by name, and `origin` (the file) prefixes every error.
pub fn parse_config<T>(text: &str, origin: &str, overrides: &[String]) -> Result<T>
where
    T: Default + Serialize + serde::de::DeserializeOwned,
{
    let mut doc: toml::Table = text
        .parse()
        .with_context(|| format!("{origin}: invalid TOML"))?;
    let reference = toml::Table::try_from(T::default())?;
    for o in overrides {
        apply_override(&mut doc, &reference, o)?;
    }
    serde_path_to_error::deserialize(toml::Value::Table(doc)).map_err(|e| {
        let key = e.path().to_string();
        let message = e.inner().message().to_string();
        // Blame the flag when the bad value came from --set, else the file.
        let from_set = overrides
            .iter()
            .rev()
            .find(|o| o.split_once('=').is_some_and(|(k, _)| k.trim() == key));
        match from_set {
            Some(o) => anyhow::anyhow!("--set {o}: {message}"),
            None if key == "." => anyhow::anyhow!("{origin}: {message}"),
            None => anyhow::anyhow!("{origin}: {key}: {message}"),
        }
    })
}

/// A config's validation error, blamed on where the bad value came from: the `--set` flag
/// whose key the message names (the last such flag), else the file (`origin`).
pub fn blame_invalid(err: anyhow::Error, origin: &str, overrides: &[String]) -> anyhow::Error {
    let message = format!("{err:#}");
    let named = overrides.iter().rev().find(|o| {
        o.split_once('=')
            .is_some_and(|(key, _)| names_key(&message, key.trim()))
    });
    match named {
        Some(o) => anyhow::anyhow!("--set {o}: invalid config: {message}"),
        None => anyhow::anyhow!("{origin}: invalid config: {message}"),
    }
}

/// Whether `message` names `key` as a whole key: `epochs` in "epochs must be..." but not in
/// "eval.distill.epochs must be...".
fn names_key(message: &str, key: &str) -> bool {
    !key.is_empty()
        && message.match_indices(key).any(|(i, _)| {
            let before = message[..i].chars().next_back();
            let after = message[i + key.len()..].chars().next();
            let joined = |c: Option<char>, dot: bool| {
                c.is_some_and(|c| c.is_alphanumeric() || c == '_' || (dot && c == '.'))
            };
            !joined(before, true) && !joined(after, false)
        })
}

/// Read a config file (or the defaults when `path` is `None`) with `--set` overrides.
pub fn load_config<T>(path: Option<&Path>, overrides: &[String]) -> Result<T>
where
    T: Default + Serialize + serde::de::DeserializeOwned,
{
    match path {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read config {}", p.display()))?;
            parse_config(&text, &p.display().to_string(), overrides)
        }
        None => parse_config("", "default config", overrides),
    }
}

/// [`load_config`], then `validate`, its error blamed on the flag or file the bad value came
/// from: how every job's config is read.
pub fn load_validated<T>(
    path: Option<&Path>,
    overrides: &[String],
    validate: impl Fn(&T) -> Result<()>,
) -> Result<T>
where
    T: Default + Serialize + serde::de::DeserializeOwned,
{
    let origin = path.map_or("default config".into(), |p| p.display().to_string());
    let cfg: T = load_config(path, overrides)?;
    validate(&cfg).map_err(|e| blame_invalid(e, &origin, overrides))?;
    Ok(cfg)
}

/// A method's views as a config's `views` list changes them: none keeps the method's
/// `presets`, one entry applies to every view, else one entry per view.
pub fn views_for<T: Clone>(method: &str, configured: &[T], presets: Vec<T>) -> Result<Vec<T>> {
    match configured.len() {
        0 => Ok(presets),
        1 => Ok(vec![configured[0].clone(); presets.len()]),
        n if n == presets.len() => Ok(configured.to_vec()),
        n => anyhow::bail!(
            "views: method '{method}' takes {} views, the config lists {n}",
            presets.len()
        ),
    }
}
