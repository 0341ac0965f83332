//! The image pretraining job (`pretext pretrain`): images → views on the background loader →
//! any [`Method`] → the shared training loop.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Result, bail};
use burn::prelude::*;

use super::batches::{ViewBatches, view_loader};
use super::config::PretrainConfig;
use super::data::ImageSet;
use super::methods::{Method, view_configs};
use crate::core::loader::Schedule;
use crate::core::train::{LoopSpec, TrainOptions, TrainSummary, checkpoint_file, run_loop};

pub fn checkpoint_path(config: &PretrainConfig) -> PathBuf {
    checkpoint_file(&config.train.out_dir)
}

/// The config fields that must match for a resume to continue the same run.
fn run_identity(config: &PretrainConfig) -> toml::Table {
    let mut t = toml::Table::try_from(config).unwrap_or_default();
    t.remove("train");
    t.remove("eval");
    // Evaluation settings, added after the first checkpoints were written.
    t.remove("finetune_view");
    t
}

/// Pretrain the image method `M` on `train` as `config` says.
pub fn pretrain<M: Method>(
    config: &PretrainConfig,
    train: &ImageSet,
    device: &Device,
    options: &TrainOptions,
) -> Result<(M, TrainSummary)> {
    let train = train.limited(config.data.train_limit);
    let steps_per_epoch = train.len() / config.batch_size;
    if steps_per_epoch == 0 {
        bail!(
            "batch_size = {} is larger than the training set ({} images)",
            config.batch_size,
            train.len()
        );
    }
    let (mean, std) = train.channel_stats();
    let views = view_configs::<M>(config)?;
    let pipelines: Vec<_> = views
        .iter()
        .map(|v| v.build((train.height, train.width), &mean, &std))
        .collect();

    device.seed(config.seed);
    let ad = device.clone().autodiff();
    let model = M::init(config, train.channels, &ad);
    let spec = LoopSpec {
        name: &config.method,
        epochs: config.epochs,
        steps_per_epoch,
        total_steps: steps_per_epoch * config.epochs,
        grad_accum: 1,
        batch_size: config.batch_size,
        seed: config.seed,
        optimizer: &config.optimizer,
        train: &config.train,
        identity: run_identity(config),
        meta: serde_json::json!({
            "config": config.to_toml(),
            "mean": mean,
            "std": std,
            "channels": train.channels,
            "height": train.height,
            "width": train.width,
        }),
    };
    let data = Arc::new(train);
    let source_at = |start: usize| {
        let schedule = Schedule {
            batch_size: config.batch_size,
            steps_per_epoch,
            epochs: config.epochs,
            start_epoch: start / steps_per_epoch,
            start_step: start % steps_per_epoch,
            prefetch: config.train.prefetch,
            seed: config.seed,
        };
        ViewBatches {
            loader: view_loader(data.clone(), Arc::new(pipelines), schedule),
            device: ad.clone(),
        }
    };
    run_loop(
        model,
        source_at,
        |m: &M, views| Ok(m.loss(views)),
        |m: M, p| m.after_step(p),
        &spec,
        options,
    )
}
