//! The video pretraining job (`pretext video pretrain`): videos → clips on the background
//! loader → any [`VideoMethod`] → the shared training loop.

use std::sync::Arc;

use anyhow::{Result, bail};
use burn::prelude::*;

use super::backbones::check_tubelets;
use super::config::VideoConfig;
use super::data::VideoSet;
use super::data::stream::VideoStore;
use super::methods::VideoMethod;
use super::views::video_batches;
use crate::core::loader::Schedule;
use crate::core::train::{LoopSpec, TrainOptions, TrainSummary, run_loop};

/// The config fields that must match for a resume to continue the same run.
fn run_identity(config: &VideoConfig) -> toml::Table {
    let mut t = toml::Table::try_from(config).unwrap_or_default();
    for key in ["train", "eval"] {
        t.remove(key);
    }
    t
}

/// The frames a video must have for the method: its clips, and what its features read.
fn frames_needed<M: VideoMethod>(config: &VideoConfig) -> usize {
    M::clip_frames(config).max(M::feature_frames(config))
}

/// Refuse videos the method cannot take: too few frames, frames that do not split into
/// tubelets or halve twice.
pub fn check_videos<M: VideoMethod>(config: &VideoConfig, set: &VideoSet) -> Result<()> {
    let needed = frames_needed::<M>(config);
    if set.min_frames() < needed {
        bail!(
            "{}: the shortest video has {} frames; method '{}' takes clips of {needed}",
            set.source,
            set.min_frames(),
            config.method
        );
    }
    check_frame_size::<M>(config, set.height, set.width)
}

/// [`check_videos`] on videos in memory; streamed, the frame size (a streamed video's length
/// is known once decoded: a short one is met where it is read).
pub fn check_store<M: VideoMethod>(config: &VideoConfig, store: &VideoStore) -> Result<()> {
    match store {
        VideoStore::Memory(set) => check_videos::<M>(config, set),
        VideoStore::Disk(_) => {
            let (_, h, w) = store.frame();
            check_frame_size::<M>(config, h, w)
        }
    }
}

/// Refuse frames of `h x w` that do not split into the method's tubelets or halve twice.
fn check_frame_size<M: VideoMethod>(config: &VideoConfig, h: usize, w: usize) -> Result<()> {
    if config.backbone.is_vit() && config.method != "frame_order" {
        check_tubelets(
            config.tubelet,
            config.backbone.patch_size,
            M::clip_frames(config),
            h,
            w,
        )?;
    }
    if config.method == "next_frame" {
        config.next_frame.validate(h, w)?;
    }
    Ok(())
}

/// Pretrain the video method `M` on `train` (in memory or streamed) as `config` says.
pub fn pretrain<M: VideoMethod>(
    config: &VideoConfig,
    train: VideoStore,
    device: &Device,
    options: &TrainOptions,
) -> Result<(M, TrainSummary)> {
    let steps_per_epoch = train.len() / config.batch_size;
    if steps_per_epoch == 0 {
        bail!(
            "batch_size = {} is larger than the training set ({} videos)",
            config.batch_size,
            train.len()
        );
    }
    let replicas = config.train.replicas.max(1);
    if replicas > 1 {
        if let Some(why) = M::replicas_refused() {
            bail!(
                "train.replicas = {replicas}: method '{}' trains one replica: {why}; set \
                 train.replicas = 1",
                config.method
            );
        }
        if !config.batch_size.is_multiple_of(replicas) {
            bail!(
                "train.replicas = {replicas} cuts each batch into {replicas} equal shares: \
                 batch_size = {} does not split so; choose a multiple of {replicas}",
                config.batch_size
            );
        }
    }
    // With replicas the loader hands out each batch as `replicas` consecutive shares.
    let share = config.batch_size / replicas;
    let frame = train.frame();
    check_store::<M>(config, &train)?;
    let views = Arc::new(config.views_for(M::view_presets())?);
    device.seed(config.seed);
    let ad = device.clone().autodiff();
    let model = M::init(config, frame, &ad);
    let spec = LoopSpec {
        name: &config.method,
        epochs: config.epochs,
        steps_per_epoch,
        total_steps: steps_per_epoch * config.epochs,
        grad_accum: replicas,
        replicas,
        batch_size: share,
        seed: config.seed,
        optimizer: &config.optimizer,
        train: &config.train,
        identity: run_identity(config),
        meta: serde_json::json!({
            "kind": "video",
            "config": config.to_toml(),
            "frame": [frame.0, frame.1, frame.2],
            "classes": train.tasks().iter().map(|t| (t.name.clone(), t.classes.clone())).collect::<Vec<_>>(),
        }),
        data: train.fingerprint(),
    };
    let frames = M::clip_frames(config);
    let source_at = |start: usize| {
        let c = config;
        let schedule = Schedule::from_step(
            start * replicas,
            share,
            steps_per_epoch * replicas,
            c.epochs,
            c.train.prefetch,
            c.seed,
        );
        let data = train.clone();
        let on_error = c.data.on_error;
        video_batches(data, views.clone(), frames, on_error, schedule, ad.clone())
    };
    run_loop(
        model,
        source_at,
        |m: &M, clips, _progress| m.loss(clips),
        |m: M, p, _kept: Vec<()>| m.after_step(p),
        |_m: &M| Ok(Vec::new()),
        &spec,
        options,
    )
}
