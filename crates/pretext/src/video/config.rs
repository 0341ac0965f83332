//! The video pretraining config (`pretext video pretrain`): method, data, encoder, heads,
//! views, the methods' own tables, optimizer, and the shared `train` and `eval` tables.

use std::path::Path;

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use super::backbones::check_tubelets;
use super::data::VideoDataConfig;
use super::methods::VIDEO_METHODS;
use super::methods::next_frame::NextFrameConfig;
use super::methods::video_contrastive::ContrastConfig;
use super::views::ClipView;
use crate::core::config::{EvalConfig, TrainConfig, load_validated, views_for};
use crate::core::heads::MlpConfig;
use crate::core::optim::OptimConfig;
use crate::vision::backbones::BackboneConfig;
use crate::vision::methods::mae::MaeConfig;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VideoConfig {
    /// `videomae`, `video_contrastive`, `frame_order` or `next_frame`.
    pub method: String,
    pub seed: u64,
    pub epochs: usize,
    pub batch_size: usize,
    pub data: VideoDataConfig,
    /// A ViT arch makes the space-time ViT; a CNN arch encodes frame by frame.
    pub backbone: BackboneConfig,
    /// Frames per tubelet of the space-time ViT.
    pub tubelet: usize,
    pub projection: MlpConfig,
    /// Changes to the method's clip views: one entry for every view, or one per view.
    pub views: Vec<ClipView>,
    pub mae: MaeConfig,
    pub contrast: ContrastConfig,
    pub next_frame: NextFrameConfig,
    pub optimizer: OptimConfig,
    pub train: TrainConfig,
    pub eval: EvalConfig,
}

impl Default for VideoConfig {
    fn default() -> Self {
        VideoConfig {
            method: "videomae".into(),
            seed: 0,
            epochs: 10,
            batch_size: 32,
            data: VideoDataConfig::default(),
            // A space-time ViT small enough for two CPU cores: 128 wide, 4 deep, 2x8x8
            // tubelets (64 per tubelet slot of a 64x64 clip).
            backbone: BackboneConfig {
                arch: "vit_tiny".into(),
                patch_size: 8,
                dim: 128,
                depth: 4,
                heads: 4,
                ..BackboneConfig::default()
            },
            tubelet: 2,
            projection: MlpConfig {
                hidden: 512,
                output: 128,
                layers: 2,
                last_norm: false,
            },
            views: Vec::new(),
            // VideoMAE: 90% of the tubes hidden; a decoder half the encoder's width.
            mae: MaeConfig {
                mask_ratio: 0.9,
                decoder_dim: 64,
                decoder_depth: 2,
                decoder_heads: 4,
                ..MaeConfig::default()
            },
            contrast: ContrastConfig::default(),
            next_frame: NextFrameConfig::default(),
            optimizer: OptimConfig {
                kind: "adamw".into(),
                lr: 1e-3,
                weight_decay: 0.05,
                ..OptimConfig::default()
            },
            train: TrainConfig {
                out_dir: "runs/video".into(),
                ..TrainConfig::default()
            },
            eval: EvalConfig::default(),
        }
    }
}

impl VideoConfig {
    pub fn load(path: Option<&Path>, overrides: &[String]) -> Result<Self> {
        load_validated(path, overrides, Self::validate)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }

    pub fn validate(&self) -> Result<()> {
        if !VIDEO_METHODS.contains(&self.method.as_str()) {
            bail!(
                "method = \"{}\": expected one of {}",
                self.method,
                VIDEO_METHODS.map(|m| format!("\"{m}\"")).join(", ")
            );
        }
        if self.epochs == 0 || self.batch_size < 2 {
            bail!("epochs must be positive and batch_size at least 2");
        }
        self.data.validate()?;
        self.backbone.validate()?;
        let is_vit = self.backbone.is_vit();
        match self.method.as_str() {
            "videomae" if !is_vit => bail!(
                "method = \"videomae\" masks tubelets of a space-time ViT: set backbone.arch = \
                 \"vit_tiny\" (or \"vit_small\")"
            ),
            "frame_order" if is_vit => bail!(
                "method = \"frame_order\" encodes single frames: set backbone.arch = \
                 \"small_cnn\" (or a ResNet)"
            ),
            "frame_order" if self.data.clip_frames < 3 => {
                bail!("frame_order picks 3 frames of a clip: data.clip_frames must be 3 or more")
            }
            _ => {}
        }
        if is_vit && self.method != "next_frame" && self.method != "frame_order" {
            check_tubelets(
                self.tubelet,
                self.backbone.patch_size,
                self.data.clip_frames,
                self.data.size,
                self.data.size,
            )?;
        }
        if self.method == "videomae" {
            self.mae.validate()?;
        }
        if self.method == "next_frame" {
            self.next_frame.validate(self.data.size, self.data.size)?;
        }
        if self.contrast.temperature <= 0.0 {
            bail!("contrast.temperature must be positive");
        }
        self.projection.validate("projection")?;
        for (i, v) in self.views.iter().enumerate() {
            v.validate(&format!("views[{i}]"))?;
        }
        self.optimizer.validate()?;
        self.eval.validate()?;
        Ok(())
    }

    /// The views of the method as this config changes them.
    pub fn views_for(&self, presets: Vec<ClipView>) -> Result<Vec<ClipView>> {
        views_for(&self.method, &self.views, presets)
    }
}
