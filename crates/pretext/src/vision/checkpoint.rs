//! An image pretraining checkpoint read back for evaluation: its config, the normalisation
//! statistics and image shape it was trained with, and its backbone on any device.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::prelude::*;

use super::backbones::Backbone;
use super::config::PretrainConfig;
use super::data::ImageSource;
use super::methods::{Method, Reconstruction};
use crate::core::checkpoint::{Checkpoint, NamedTensor, load_module};
use crate::core::heads::HiddenLayer;
use crate::with_method;

/// A checkpoint's backbone with what is needed to feed it.
pub struct ImageCheckpoint {
    pub config: PretrainConfig,
    /// The pretrained backbone on the device it was opened with (no autodiff).
    pub backbone: Backbone,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    /// (channels, height, width) of the training images.
    pub shape: (usize, usize, usize),
    /// The run folder.
    pub dir: PathBuf,
    tensors: Vec<NamedTensor>,
}

/// The pretraining config stored in an image checkpoint read from `path`.
pub fn checkpoint_config(ckpt: &Checkpoint, path: &Path) -> Result<PretrainConfig> {
    let text = ckpt.meta["config"]
        .as_str()
        .with_context(|| format!("{}: checkpoint has no config", path.display()))?;
    toml::from_str(text)
        .with_context(|| format!("{}: checkpoint config is unreadable", path.display()))
}

impl ImageCheckpoint {
    /// Open `path` (a run folder or its `checkpoint.safetensors`).
    pub fn open(path: &Path, device: &Device) -> Result<Self> {
        let ckpt = Checkpoint::load(path)?;
        if crate::text::checkpoint::is_text_kind(ckpt.meta["kind"].as_str()) {
            bail!(
                "{} is a text encoder's checkpoint; image evaluation needs one written by \
                 `pretext pretrain` (for text use `eval text-probe` or `eval labels` with a TSV)",
                path.display()
            );
        }
        let config = checkpoint_config(&ckpt, path)?;
        let floats = |key: &str| -> Vec<f32> {
            ckpt.meta[key]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_f64())
                        .map(|v| v as f32)
                        .collect()
                })
                .unwrap_or_default()
        };
        let dim = |key: &str| ckpt.meta[key].as_u64().unwrap_or(0) as usize;
        let shape = (dim("channels"), dim("height"), dim("width"));
        let dir = if path.is_dir() {
            path.to_path_buf()
        } else {
            path.parent().map(Path::to_path_buf).unwrap_or_default()
        };
        let mut opened = ImageCheckpoint {
            mean: floats("mean"),
            std: floats("std"),
            backbone: with_method!(config.method.as_str(), M => {
                M::init(&config, shape, device).backbone().clone()
            }),
            config,
            shape,
            dir,
            tensors: ckpt.model,
        };
        opened.backbone = opened
            .backbone_on(device)
            .with_context(|| format!("{}", path.display()))?;
        Ok(opened)
    }

    /// The pretrained backbone built on `device` (an autodiff device for fine-tuning).
    pub fn backbone_on(&self, device: &Device) -> Result<Backbone> {
        let config = &self.config;
        Ok(with_method!(config.method.as_str(), M => {
            let method = load_module(M::init(config, self.shape, device), &self.tensors)?;
            method.backbone().clone()
        }))
    }

    /// The first hidden layer of the checkpoint's projection head on `device` (SimCLRv2
    /// fine-tunes through it); an error naming the method when it has none.
    pub fn projection_layer_on(&self, device: &Device) -> Result<HiddenLayer> {
        let config = &self.config;
        let layer = with_method!(config.method.as_str(), M => {
            let method = load_module(M::init(config, self.shape, device), &self.tensors)?;
            method.projection().and_then(|p| p.first_hidden())
        });
        layer.with_context(|| {
            format!(
                "eval.finetune.projection_layers = 1: a {} checkpoint has no projection head \
                 with a hidden layer to fine-tune through",
                config.method
            )
        })
    }

    /// What the checkpoint's method makes of normalised `images` (masked or corrupted with the
    /// device's random stream, seeded from `seed`); `None` when the method does not reconstruct.
    pub fn reconstruct(
        &self,
        images: Tensor<4>,
        seed: u64,
        device: &Device,
    ) -> Result<Option<Reconstruction>> {
        let config = &self.config;
        with_method!(config.method.as_str(), M => {
            let method = load_module(M::init(config, self.shape, device), &self.tensors)?.valid();
            device.seed(seed);
            method.reconstruct(images).transpose()
        })
    }

    /// The same architecture freshly initialised from `seed`.
    pub fn random_backbone(&self, seed: u64, device: &Device) -> Backbone {
        // Every method's `init` builds its backbone first, from the backbone config alone, so
        // this is the backbone any method's run with this seed starts from, and a label study's
        // supervised baseline depends on the architecture, not the method (`--baseline-from`).
        device.seed(seed);
        self.config.backbone.init(self.shape, device)
    }

    pub fn check_compatible(&self, set: &dyn ImageSource) -> Result<()> {
        if set.channels() != self.shape.0 {
            bail!(
                "the checkpoint was trained on {}-channel images, the data has {} channels",
                self.shape.0,
                set.channels()
            );
        }
        let (height, width) = set.size();
        self.backbone
            .check_input(height, width)
            .map_err(|e| anyhow::anyhow!("{}: {e}", self.dir.display()))?;
        if let Some(note) = self.size_note(set) {
            eprintln!("note: {note}");
        }
        Ok(())
    }

    /// Images of another size than pretraining's are fed as they are (the backbones pool over
    /// any size), which changes what the features see: say so, and how to match training.
    pub fn size_note(&self, set: &dyn ImageSource) -> Option<String> {
        let (_, height, width) = self.shape;
        let (set_height, set_width) = set.size();
        if (set_height, set_width) == (height, width) {
            return None;
        }
        Some(format!(
            "{} was pretrained on {width}x{height} images; these are {}x{} (width x height) \
             and are evaluated at that size (--set data.image_size=[{height},{width}], height \
             first, resizes them as in training)",
            self.dir.display(),
            set_width,
            set_height
        ))
    }
}
