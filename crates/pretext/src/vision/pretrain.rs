//! The image pretraining job (`pretext pretrain`): images → views on the background loader →
//! any [`Method`] → the shared training loop.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use burn::prelude::*;

use super::batches::{ViewBatches, view_loader};
use super::config::PretrainConfig;
use super::data::{ImageSet, ImageSource};
use super::eval::evaluate;
use super::methods::{Method, view_configs};
use super::views::ViewConfig;
use crate::core::eval::Protocols;
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
    t.remove("strong_view");
    // Settings of methods and backbones this run does not use cannot change it (and checkpoints
    // written before those methods existed do not hold them).
    let tables = [
        ("mocov2", &["mocov2"][..]),
        ("mocov3", &["mocov3"]),
        ("nnclr", &["nnclr"]),
        ("barlowtwins", &["barlowtwins"]),
        ("vicreg", &["vicreg"]),
        ("dino", &["dino"]),
        ("swav", &["swav"]),
        ("multi_crop", &["dino", "swav"]),
        ("mae", &["mae"]),
        ("simmim", &["simmim"]),
        ("autoencoder", &["autoencoder", "denoising_autoencoder"]),
        ("jigsaw", &["jigsaw"]),
    ];
    for (table, users) in tables {
        if !users.contains(&config.method.as_str()) {
            t.remove(table);
        }
    }
    if let Some(toml::Value::Table(data)) = t.get_mut("data") {
        // Added later; unset, it leaves earlier runs resumable.
        if config.data.image_size.is_empty() {
            data.remove("image_size");
        }
        // How images are read, not which: the views and their order do not depend on them.
        data.remove("workers");
        data.remove("on_error");
        // Part of a shard set's fingerprint, which the resume checks; no other set reads it.
        data.remove("shuffle_buffer");
    }
    if !config.backbone.is_vit()
        && let Some(toml::Value::Table(backbone)) = t.get_mut("backbone")
    {
        for key in ["patch_size", "dim", "depth", "heads", "position", "pool"] {
            backbone.remove(key);
        }
    }
    t
}

/// Pretrain the image method `M` on the in-memory set `train` as `config` says.
pub fn pretrain<M: Method>(
    config: &PretrainConfig,
    train: &ImageSet,
    device: &Device,
    options: &TrainOptions,
) -> Result<(M, TrainSummary)> {
    pretrain_on::<M>(config, Arc::new(train.clone()), device, options)
}

/// Pretrain the image method `M` on any image source (a set in memory, a folder streamed from
/// disk) as `config` says.
pub fn pretrain_on<M: Method>(
    config: &PretrainConfig,
    train: Arc<dyn ImageSource>,
    device: &Device,
    options: &TrainOptions,
) -> Result<(M, TrainSummary)> {
    let limit = config.data.train_limit;
    let train = if limit > 0 && limit < train.len() {
        train.subset(&(0..limit).collect::<Vec<_>>())
    } else {
        train
    };
    let (train, online) = hold_out(train, config)?;
    // Every epoch visits as many images (a stream of shards split over ranks may visit fewer
    // than it holds).
    let visited = train.epoch_order(config.seed, 0, config.batch_size).len();
    let steps_per_epoch = visited / config.batch_size;
    if steps_per_epoch == 0 {
        bail!(
            "batch_size = {} is larger than the training set ({} images)",
            config.batch_size,
            train.len()
        );
    }
    let (mean, std) = train.channel_stats(config.data.on_error)?;
    let (height, width) = train.size();
    let channels = train.channels();
    let views = view_configs::<M>(config)?;
    let pipelines: Vec<_> = views
        .iter()
        .map(|v| v.build((height, width), &mean, &std))
        .collect();

    let world = crate::core::distributed::world();
    device.seed(config.seed);
    let ad = device.clone().autodiff();
    let image = (channels, height, width);
    let side = |v: &ViewConfig, s: usize| if v.crop_size == 0 { s } else { v.crop_size };
    for v in &views {
        M::check_shape(config, side(v, height), side(v, width))?;
    }
    let model = M::init(config, image, &ad);
    // A ViT with learned positions takes one size only: that of every view.
    for v in &views {
        model
            .backbone()
            .check_input(side(v, height), side(v, width))?;
    }
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
            "config": config.to_toml(),
            "mean": mean,
            "std": std,
            "channels": channels,
            "height": height,
            "width": width,
        }),
        data: train.fingerprint(),
    };
    let data = train;
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
        ViewBatches::new(
            view_loader(data.clone(), Arc::new(pipelines), schedule, &config.data),
            ad.clone(),
        )
    };
    let online_knn = |m: &M| -> Result<Vec<(&'static str, f64)>> {
        // Under MPI rank 0 alone reports the score (every replica holds the same weights).
        let Some((bank, queries)) = online.as_ref().filter(|_| world.is_root()) else {
            return Ok(Vec::new());
        };
        let knn = Protocols {
            knn: true,
            linear: false,
        };
        let scores = evaluate(
            m.backbone(),
            bank,
            queries,
            &mean,
            &std,
            &config.eval,
            knn,
            config.seed,
            &ad,
        )?;
        Ok(vec![("online_knn", scores.knn.unwrap_or(f64::NAN))])
    };
    run_loop(
        model,
        source_at,
        |m: &M, views, progress| m.loss_at(views, progress),
        |m: M, p, kept: Vec<Option<Tensor<2>>>| {
            m.after_step(p, kept.into_iter().flatten().collect())
        },
        online_knn,
        &spec,
        options,
    )
}

/// `train.online_knn = n`: `n` training images spread over the set (class-sorted folders
/// included) are held out of training as kNN queries, scored against `n` others spread over
/// what remains, which keep training. Returns the training images and (bank, queries), read
/// into memory at the set's size.
type HeldOut = (Arc<dyn ImageSource>, Option<(ImageSet, ImageSet)>);
fn hold_out(train: Arc<dyn ImageSource>, config: &PretrainConfig) -> Result<HeldOut> {
    let n = config.train.online_knn;
    if n == 0 {
        return Ok((train, None));
    }
    if train.labels().is_none() {
        bail!("train.online_knn scores labelled images; this dataset has no labels");
    }
    if 2 * n + config.batch_size > train.len() {
        bail!(
            "train.online_knn = {n}: twice that plus a batch ({}) is more than the {} training \
             images",
            config.batch_size,
            train.len()
        );
    }
    let spread = |len: usize, k: usize| -> Vec<usize> {
        (0..k).map(|i| ((2 * i + 1) * len) / (2 * k)).collect()
    };
    let held = spread(train.len(), n);
    let rest: Vec<usize> = (0..train.len())
        .filter(|i| held.binary_search(i).is_err())
        .collect();
    let bank: Vec<usize> = spread(rest.len(), n).into_iter().map(|i| rest[i]).collect();
    let read = |indices: &[usize]| {
        train
            .subset(indices)
            .to_image_set()
            .context("reading the online kNN images (train.online_knn)")
    };
    let online = (read(&bank)?, read(&held)?);
    Ok((train.subset(&rest), Some(online)))
}
