//! The pretraining config: one TOML file, overridable with `--set key=value`.
//!
//! Every table denies unknown keys, so a typo is an error that names the key instead of a
//! silently ignored setting.

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::models::{BackboneConfig, MlpConfig};
use crate::optim::OptimConfig;
use crate::views::ViewConfig;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PretrainConfig {
    /// `simclr` or `byol`.
    pub method: String,
    pub seed: u64,
    pub epochs: usize,
    pub batch_size: usize,
    pub data: DataConfig,
    pub backbone: BackboneConfig,
    pub projection: MlpConfig,
    pub prediction: MlpConfig,
    /// Per-view augmentation; empty means the method's preset.
    pub views: Vec<ViewConfig>,
    pub simclr: SimClrConfig,
    pub byol: ByolConfig,
    pub optimizer: OptimConfig,
    pub train: TrainConfig,
    pub eval: EvalConfig,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// Use only the first N training images (0: all). For quick runs and tests.
    pub train_limit: usize,
    /// Use only the first N test images for evaluation (0: all).
    pub test_limit: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimClrConfig {
    pub temperature: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ByolConfig {
    /// Starting EMA rate of the target network, raised to 1 along a cosine.
    pub tau_base: f64,
}

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
}

impl Default for PretrainConfig {
    fn default() -> Self {
        PretrainConfig {
            method: "simclr".into(),
            seed: 0,
            epochs: 10,
            batch_size: 256,
            data: DataConfig {
                train_limit: 0,
                test_limit: 0,
            },
            backbone: BackboneConfig::default(),
            projection: MlpConfig::default(),
            prediction: MlpConfig {
                hidden: 512,
                output: 128,
                layers: 2,
                last_norm: false,
            },
            views: Vec::new(),
            simclr: SimClrConfig { temperature: 0.5 },
            byol: ByolConfig { tau_base: 0.99 },
            optimizer: OptimConfig::default(),
            train: TrainConfig::default(),
            eval: EvalConfig::default(),
        }
    }
}

impl Default for SimClrConfig {
    fn default() -> Self {
        SimClrConfig { temperature: 0.5 }
    }
}

impl Default for ByolConfig {
    fn default() -> Self {
        ByolConfig { tau_base: 0.99 }
    }
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            out_dir: "runs/pretrain".into(),
            checkpoint_every: 0,
            prefetch: 4,
            max_steps: 0,
        }
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
    doc.try_into()
        .map_err(|e: toml::de::Error| anyhow::anyhow!("{origin}: {}", e.message()))
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

impl PretrainConfig {
    /// Build from an optional TOML file plus `--set` overrides; `origin` names the file in errors.
    pub fn from_toml(text: &str, origin: &str, overrides: &[String]) -> Result<Self> {
        let cfg: PretrainConfig = parse_config(text, origin, overrides)?;
        cfg.validate()
            .with_context(|| format!("{origin}: invalid config"))?;
        Ok(cfg)
    }

    pub fn load(path: Option<&Path>, overrides: &[String]) -> Result<Self> {
        let origin = path.map_or("default config".into(), |p| p.display().to_string());
        let cfg: PretrainConfig = load_config(path, overrides)?;
        cfg.validate()
            .with_context(|| format!("{origin}: invalid config"))?;
        Ok(cfg)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }

    pub fn validate(&self) -> Result<()> {
        if !matches!(self.method.as_str(), "simclr" | "byol") {
            bail!(
                "method = \"{}\": expected \"simclr\" or \"byol\"",
                self.method
            );
        }
        if self.batch_size < 2 {
            bail!(
                "batch_size = {}: contrastive and batch-norm methods need at least 2",
                self.batch_size
            );
        }
        if self.epochs == 0 {
            bail!("epochs must be at least 1");
        }
        if self.simclr.temperature <= 0.0 {
            bail!("simclr.temperature must be positive");
        }
        if !(0.0..=1.0).contains(&self.byol.tau_base) {
            bail!("byol.tau_base = {}: must lie in [0, 1]", self.byol.tau_base);
        }
        self.backbone.validate()?;
        self.projection.validate("projection")?;
        self.prediction.validate("prediction")?;
        self.optimizer.validate()?;
        for (i, v) in self.views.iter().enumerate() {
            v.validate(&format!("views[{i}]"))?;
        }
        if self.eval.knn_k == 0 || self.eval.knn_temperature <= 0.0 {
            bail!("eval.knn_k and eval.knn_temperature must be positive");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_named() {
        let err = PretrainConfig::from_toml("epochz = 3", "a.toml", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("a.toml") && err.contains("epochz"), "{err}");
        let err = PretrainConfig::from_toml("[optimizer]\nlrr = 1.0", "b.toml", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("lrr"), "{err}");
        let err = PretrainConfig::from_toml("", "c", &["optimizer.lrr=2".into()])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("optimizer.lrr") && err.contains("'lrr'"),
            "{err}"
        );
    }

    #[test]
    fn overrides_apply_with_types() {
        let cfg = PretrainConfig::from_toml(
            "epochs = 2\n[optimizer]\nkind = \"sgd\"",
            "x",
            &[
                "optimizer.lr=0.5".into(),
                "method=byol".into(),
                "epochs=4".into(),
            ],
        )
        .unwrap();
        assert_eq!(cfg.epochs, 4);
        assert_eq!(cfg.method, "byol");
        assert_eq!(cfg.optimizer.kind, "sgd");
        assert!((cfg.optimizer.lr - 0.5).abs() < 1e-12);
        let err = PretrainConfig::from_toml("", "x", &["method=mocov9".into()]).unwrap_err();
        assert!(format!("{err:#}").contains("mocov9"));
    }

    #[test]
    fn config_round_trips_through_toml() {
        let cfg = PretrainConfig::default();
        let back = PretrainConfig::from_toml(&cfg.to_toml(), "round trip", &[]).unwrap();
        assert_eq!(cfg, back);
    }
}
