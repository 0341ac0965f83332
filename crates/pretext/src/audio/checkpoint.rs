//! An audio pretraining checkpoint read back for evaluation: its config, the band statistics
//! it normalised with, and its encoder on any device.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::prelude::*;

use super::backbones::AudioEncoder;
use super::config::AudioConfig;
use super::methods::AudioMethod;
use crate::core::checkpoint::{Checkpoint, load_module};
use crate::with_audio_method;

pub struct AudioCheckpoint {
    pub config: AudioConfig,
    pub encoder: AudioEncoder,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    pub dir: PathBuf,
}

impl AudioCheckpoint {
    /// The per-band normalisation the run trained with: (mean, std).
    pub fn norm(&self) -> (&[f32], &[f32]) {
        (&self.mean, &self.std)
    }

    /// Open `path` (a run folder or its `checkpoint.safetensors`) on `device`.
    pub fn open(path: &Path, device: &Device) -> Result<AudioCheckpoint> {
        let ckpt = Checkpoint::load(path)?;
        if ckpt.meta["kind"].as_str() != Some("audio") {
            bail!(
                "{} was not written by `pretext audio pretrain` (image runs are evaluated by \
                 `pretext eval`, text runs by `pretext eval text-probe`)",
                path.display()
            );
        }
        let text = ckpt.meta["config"]
            .as_str()
            .with_context(|| format!("{}: checkpoint has no config", path.display()))?;
        let config: AudioConfig = toml::from_str(text)
            .with_context(|| format!("{}: checkpoint config is unreadable", path.display()))?;
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
        let (mean, std) = (floats("mean"), floats("std"));
        let bands = config.data.mel.n_mels;
        if mean.len() != bands || std.len() != bands {
            bail!(
                "{}: checkpoint's band statistics do not match its config",
                path.display()
            );
        }
        let encoder = with_audio_method!(config.method.as_str(), M => {
            let model = M::init(&config, bands, config.data.crop_frames, device);
            load_module(model, &ckpt.model)
                .with_context(|| format!("{}: reading the model", path.display()))?
                .encoder()
        });
        let dir = if path.is_dir() {
            path.to_path_buf()
        } else {
            path.parent().map(Path::to_path_buf).unwrap_or_default()
        };
        Ok(AudioCheckpoint {
            config,
            encoder,
            mean,
            std,
            dir,
        })
    }
}
