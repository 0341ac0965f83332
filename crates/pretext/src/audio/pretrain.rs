//! The audio pretraining job (`pretext audio pretrain`): log-mel clips → views on the
//! background loader → any [`AudioMethod`] → the shared training loop.

use std::sync::Arc;

use anyhow::{Result, bail};
use burn::prelude::*;

use super::config::AudioConfig;
use super::data::stream::ClipStore;
use super::methods::AudioMethod;
use super::views::{ViewSource, audio_batches};
use crate::core::loader::Schedule;
use crate::core::train::{LoopSpec, TrainOptions, TrainSummary, run_loop};

/// The config fields that must match for a resume to continue the same run.
fn run_identity(config: &AudioConfig) -> toml::Table {
    let mut t = toml::Table::try_from(config).unwrap_or_default();
    for key in ["train", "eval"] {
        t.remove(key);
    }
    t
}

/// Pretrain the audio method `M` on `train` (in memory or streamed) as `config` says.
pub fn pretrain<M: AudioMethod>(
    config: &AudioConfig,
    train: ClipStore,
    device: &Device,
    options: &TrainOptions,
) -> Result<(M, TrainSummary)> {
    let steps_per_epoch = train.len() / config.batch_size;
    if steps_per_epoch == 0 {
        bail!(
            "batch_size = {} is larger than the training set ({} clips)",
            config.batch_size,
            train.len()
        );
    }
    let ((mean, std), passed_over) = train.band_stats(config.data.on_error)?;
    if !passed_over.is_empty() && crate::core::distributed::world().is_root() {
        eprintln!(
            "band statistics: left out {} unusable clip(s), e.g. {}",
            passed_over.len(),
            passed_over[0]
        );
    }
    let views = Arc::new(config.views_for(M::view_presets())?);
    device.seed(config.seed);
    let ad = device.clone().autodiff();
    let (bands, crop) = (train.n_mels(), config.data.crop_frames);
    let model = M::init(config, bands, crop, &ad);
    let spec = LoopSpec {
        name: &config.method,
        epochs: config.epochs,
        steps_per_epoch,
        total_steps: steps_per_epoch * config.epochs,
        grad_accum: 1,
        replicas: 1,
        batch_size: config.batch_size,
        seed: config.seed,
        optimizer: &config.optimizer,
        train: &config.train,
        identity: run_identity(config),
        meta: serde_json::json!({
            "kind": "audio",
            "config": config.to_toml(),
            "mean": mean,
            "std": std,
            "bands": bands,
            "frames": train.frames(),
            "classes": train.tasks().iter().map(|t| (t.name.clone(), t.classes.clone())).collect::<Vec<_>>(),
        }),
        data: train.fingerprint(),
    };
    let source = Arc::new(ViewSource {
        data: train,
        mean,
        std,
        crop_frames: crop,
        on_error: config.data.on_error,
    });
    let source_at = |start: usize| {
        let c = config;
        let schedule = Schedule::from_step(
            start,
            c.batch_size,
            steps_per_epoch,
            c.epochs,
            c.train.prefetch,
            c.seed,
        );
        audio_batches(source.clone(), views.clone(), schedule, ad.clone())
    };
    run_loop(
        model,
        source_at,
        |m: &M, views, _progress| m.loss(views),
        |m: M, p, _kept: Vec<()>| m.after_step(p),
        |_m: &M| Ok(Vec::new()),
        &spec,
        options,
    )
}
