//! A video pretraining checkpoint read back for evaluation: its config, its frame shape and
//! the whole method (features and, for next-frame prediction, forecasts) on any device.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::prelude::*;

use super::config::VideoConfig;
use super::methods::{FrameShape, VideoMethod};
use crate::core::checkpoint::{Checkpoint, load_module};

pub struct VideoCheckpoint<M> {
    pub config: VideoConfig,
    pub model: M,
    pub frame: FrameShape,
    pub dir: PathBuf,
}

/// The config and frame shape of the video checkpoint at `path`.
pub fn read_meta(path: &Path) -> Result<(Checkpoint, VideoConfig, FrameShape)> {
    let ckpt = Checkpoint::load(path)?;
    if ckpt.meta["kind"].as_str() != Some("video") {
        bail!(
            "{} was not written by `pretext video pretrain` (image runs are evaluated by \
             `pretext eval`, audio runs by `pretext audio eval`)",
            path.display()
        );
    }
    let text = ckpt.meta["config"]
        .as_str()
        .with_context(|| format!("{}: checkpoint has no config", path.display()))?;
    let config: VideoConfig = toml::from_str(text)
        .with_context(|| format!("{}: checkpoint config is unreadable", path.display()))?;
    let dims: Vec<usize> = ckpt.meta["frame"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_u64())
                .map(|v| v as usize)
                .collect()
        })
        .unwrap_or_default();
    let [c, h, w] = dims[..] else {
        bail!("{}: checkpoint has no frame shape", path.display());
    };
    Ok((ckpt, config, (c, h, w)))
}

impl<M: VideoMethod> VideoCheckpoint<M> {
    /// Open `path` (a run folder or its `checkpoint.safetensors`) on `device`; the caller picks
    /// `M` from [`read_meta`]'s config (`with_video_method!`).
    pub fn open(path: &Path, device: &Device) -> Result<VideoCheckpoint<M>> {
        let (ckpt, config, frame) = read_meta(path)?;
        let model = load_module(M::init(&config, frame, device), &ckpt.model)
            .with_context(|| format!("{}: reading the model", path.display()))?;
        let dir = if path.is_dir() {
            path.to_path_buf()
        } else {
            path.parent().map(Path::to_path_buf).unwrap_or_default()
        };
        Ok(VideoCheckpoint {
            config,
            model,
            frame,
            dir,
        })
    }
}
