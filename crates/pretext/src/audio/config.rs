//! The audio pretraining config (`pretext audio pretrain`): method, data and log-mel front end,
//! encoder, heads, views, optimizer, and the shared `train` and `eval` tables.

use std::path::Path;

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use super::backbones::AudioBackboneConfig;
use super::data::AudioDataConfig;
use super::methods::AUDIO_METHODS;
use super::methods::cola::ColaConfig;
use super::views::AudioView;
use crate::core::config::{EvalConfig, TrainConfig, load_validated, views_for};
use crate::core::heads::MlpConfig;
use crate::core::optim::OptimConfig;
use crate::vision::config::ByolConfig;
use crate::vision::methods::mae::MaeConfig;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AudioConfig {
    /// `byol_a`, `cola` or `audio_mae`.
    pub method: String,
    pub seed: u64,
    pub epochs: usize,
    pub batch_size: usize,
    pub data: AudioDataConfig,
    pub backbone: AudioBackboneConfig,
    pub projection: MlpConfig,
    pub prediction: MlpConfig,
    /// Changes to the method's views: one entry for every view, or one per view (empty: the
    /// method's own).
    pub views: Vec<AudioView>,
    pub byol: ByolConfig,
    pub cola: ColaConfig,
    pub mae: MaeConfig,
    pub optimizer: OptimConfig,
    pub train: TrainConfig,
    pub eval: EvalConfig,
}

impl Default for AudioConfig {
    fn default() -> Self {
        AudioConfig {
            method: "byol_a".into(),
            seed: 0,
            epochs: 20,
            batch_size: 64,
            data: AudioDataConfig::default(),
            backbone: AudioBackboneConfig::default(),
            // BYOL-A's heads: 4096 hidden, 256 out; half as wide here.
            projection: MlpConfig {
                hidden: 1024,
                output: 256,
                layers: 2,
                last_norm: false,
            },
            prediction: MlpConfig {
                hidden: 1024,
                output: 256,
                layers: 2,
                last_norm: false,
            },
            views: Vec::new(),
            byol: ByolConfig { tau_base: 0.99 },
            cola: ColaConfig::default(),
            mae: MaeConfig {
                mask_ratio: 0.8,
                ..MaeConfig::default()
            },
            optimizer: OptimConfig {
                kind: "adamw".into(),
                lr: 1e-3,
                weight_decay: 1e-4,
                ..OptimConfig::default()
            },
            train: TrainConfig {
                out_dir: "runs/audio".into(),
                ..TrainConfig::default()
            },
            eval: EvalConfig::default(),
        }
    }
}

impl AudioConfig {
    pub fn load(path: Option<&Path>, overrides: &[String]) -> Result<Self> {
        load_validated(path, overrides, Self::validate)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }

    pub fn validate(&self) -> Result<()> {
        if !AUDIO_METHODS.contains(&self.method.as_str()) {
            bail!(
                "method = \"{}\": expected one of {}",
                self.method,
                AUDIO_METHODS.map(|m| format!("\"{m}\"")).join(", ")
            );
        }
        if self.epochs == 0 || self.batch_size < 2 {
            bail!("epochs must be positive and batch_size at least 2");
        }
        self.data.validate()?;
        self.backbone.validate(self.data.mel.n_mels)?;
        if self.method == "audio_mae" {
            if self.backbone.vit_shape().is_none() {
                bail!(
                    "method = \"audio_mae\" masks patches of a ViT: set backbone.arch = \
                     \"vit_tiny\" (or \"vit_small\")"
                );
            }
            self.mae.validate()?;
            let patch = self.backbone.patch_size;
            crate::vision::masking::check_patch_masking(
                "audio_mae",
                patch,
                self.mae.mask_ratio,
                self.data.mel.n_mels,
                self.data.crop_frames,
            )?;
        }
        self.projection.validate("projection")?;
        self.prediction.validate("prediction")?;
        if self.method == "byol_a" && self.prediction.output != self.projection.output {
            bail!(
                "prediction.output ({}) must equal projection.output ({}): BYOL-A's predictor \
                 regresses the target's projection",
                self.prediction.output,
                self.projection.output
            );
        }
        if self.cola.dim == 0 {
            bail!("cola.dim must be positive");
        }
        for (i, v) in self.views.iter().enumerate() {
            v.validate(&format!("views[{i}]"))?;
        }
        self.optimizer.validate()?;
        self.eval.validate()?;
        Ok(())
    }

    /// The views of the method as this config changes them.
    pub fn views_for(&self, presets: Vec<AudioView>) -> Result<Vec<AudioView>> {
        views_for(&self.method, &self.views, presets)
    }
}
