//! The pretraining loop, shared by every method: views → method loss → backward → optimizer,
//! with progress, metrics, checkpoints, resume and the NaN guard.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use burn::optim::GradientsParams;
use burn::prelude::*;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::checkpoint::{Checkpoint, load_module, module_tensors};
use crate::config::PretrainConfig;
use crate::data::ImageSet;
use crate::data::loader::{Loader, Schedule};
use crate::methods::{Method, view_configs};
use crate::optim::{Optimizer, cosine_lr};

/// Where the time of a run went, in seconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TimeBreakdown {
    pub data_wait: f64,
    pub forward: f64,
    pub backward: f64,
    pub optimizer: f64,
    pub checkpoint: f64,
    pub total: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct TrainSummary {
    pub method: String,
    pub steps: usize,
    pub epochs_done: f64,
    pub first_loss: f64,
    pub final_loss: f64,
    /// Mean loss of the last epoch run (or of all steps when shorter).
    pub last_epoch_loss: f64,
    pub images_per_sec: f64,
    pub time: TimeBreakdown,
    pub checkpoint: PathBuf,
    pub resumed_from_step: usize,
}

/// Options that are not part of the config (they do not change the result).
#[derive(Debug, Clone, Default)]
pub struct TrainOptions {
    pub resume: bool,
    /// Hide the progress bar.
    pub quiet: bool,
}

pub fn checkpoint_path(config: &PretrainConfig) -> PathBuf {
    Path::new(&config.train.out_dir).join("checkpoint.safetensors")
}

/// The config fields that must match for a resume to continue the same run.
fn run_identity(config: &PretrainConfig) -> toml::Table {
    let mut t = toml::Table::try_from(config).unwrap_or_default();
    t.remove("train");
    t.remove("eval");
    t
}

fn check_resumable(stored: &str, config: &PretrainConfig) -> Result<()> {
    let stored: PretrainConfig =
        toml::from_str(stored).context("checkpoint holds an unreadable config")?;
    let (a, b) = (run_identity(&stored), run_identity(config));
    let differing: Vec<&String> = a
        .keys()
        .chain(b.keys())
        .filter(|k| a.get(*k) != b.get(*k))
        .collect();
    if !differing.is_empty() {
        bail!(
            "cannot resume: the config differs from the checkpoint's in {:?} (start a new out_dir or use the same config)",
            differing
        );
    }
    Ok(())
}

fn tensor4(values: Vec<f32>, shape: [usize; 4], device: &Device) -> Tensor<4> {
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// Train `M` on `train` as `config` says; returns the trained method and a summary.
pub fn pretrain<M: Method>(
    config: &PretrainConfig,
    train: &ImageSet,
    device: &Device,
    options: &TrainOptions,
) -> Result<(M, TrainSummary)> {
    let started = Instant::now();
    let train = if config.data.train_limit > 0 {
        train.take(config.data.train_limit)
    } else {
        train.clone()
    };
    let steps_per_epoch = train.len() / config.batch_size;
    if steps_per_epoch == 0 {
        bail!(
            "batch_size = {} is larger than the training set ({} images)",
            config.batch_size,
            train.len()
        );
    }
    let total_steps = steps_per_epoch * config.epochs;
    let warmup_steps = (config.optimizer.warmup_epochs * steps_per_epoch as f64).round() as usize;
    let (mean, std) = train.channel_stats();
    let views = view_configs::<M>(config)?;
    let pipelines: Vec<_> = views
        .iter()
        .map(|v| v.build((train.height, train.width), &mean, &std))
        .collect();

    device.seed(config.seed);
    let ad = device.clone().autodiff();
    let mut model = M::init(config, train.channels, &ad);
    let mut optimizer = Optimizer::new(config.optimizer.clone());
    let ckpt_path = checkpoint_path(config);
    let out_dir = PathBuf::from(&config.train.out_dir);
    std::fs::create_dir_all(&out_dir)
        .with_context(|| format!("cannot create {}", out_dir.display()))?;
    let metrics_path = out_dir.join("metrics.jsonl");

    let mut start_step = 0usize;
    if options.resume {
        if !ckpt_path.is_file() {
            bail!("--resume: no checkpoint at {}", ckpt_path.display());
        }
        let ckpt = Checkpoint::load(&ckpt_path)?;
        check_resumable(ckpt.meta["config"].as_str().unwrap_or_default(), config)?;
        model = load_module(model, &ckpt.model)?;
        let opt_steps = ckpt.meta["optimizer_steps"].as_u64().unwrap_or(0);
        optimizer.load_state(opt_steps, ckpt.optimizer, &ad)?;
        start_step = ckpt.meta["step"].as_u64().unwrap_or(0) as usize;
        // Metrics past the checkpoint belong to the interrupted attempt; drop them.
        truncate_metrics(&metrics_path, start_step)?;
    } else {
        let _ = std::fs::remove_file(&metrics_path);
    }
    let end_step = if config.train.max_steps > 0 {
        config.train.max_steps.min(total_steps)
    } else {
        total_steps
    };

    let data = Arc::new(train);
    let schedule = Schedule {
        batch_size: config.batch_size,
        epochs: config.epochs,
        start_epoch: start_step / steps_per_epoch,
        start_step: start_step % steps_per_epoch,
        prefetch: config.train.prefetch,
        seed: config.seed,
    };
    let mut loader = Loader::spawn(data.clone(), Arc::new(pipelines), schedule);
    let mut metrics = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&metrics_path)
        .with_context(|| format!("cannot open {}", metrics_path.display()))?;

    let bar = if options.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new((end_step - start_step.min(end_step)) as u64)
    };
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} ETA {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );

    let save = |model: &M, optimizer: &Optimizer, step: usize| -> Result<()> {
        let meta = serde_json::json!({
            "format": "pretext-checkpoint-1",
            "config": config.to_toml(),
            "step": step,
            "optimizer_steps": optimizer.steps(),
            "epoch": step / steps_per_epoch,
            "step_in_epoch": step % steps_per_epoch,
            "mean": mean,
            "std": std,
            "channels": data.channels,
            "height": data.height,
            "width": data.width,
        });
        // `valid()` first folds pending batch-norm running-statistic updates (burn keeps the
        // latest one per thread until the next forward) into the values a visitor reads.
        let tensors = module_tensors(&model.valid());
        // A finite loss can still be followed by an update that overflowed: never let such
        // weights replace the last good checkpoint.
        if let Some(bad) = tensors
            .iter()
            .find(|t| t.values.iter().any(|v| !v.is_finite()))
        {
            bail!(
                "weights became non-finite at step {step} ('{}'); training stopped. The last good \
                 checkpoint is kept at {} (try a lower optimizer.lr or optimizer.grad_clip)",
                bad.name,
                ckpt_path.display()
            );
        }
        Checkpoint {
            model: tensors,
            optimizer: optimizer.state_tensors(),
            meta,
        }
        .save(&ckpt_path)
    };

    let mut time = TimeBreakdown::default();
    let mut losses: Vec<f64> = Vec::new();
    let mut epoch_losses: Vec<f64> = Vec::new();
    let mut step = start_step;
    let loop_started = Instant::now();
    while step < end_step {
        let Some(batch) = loader.next_batch() else {
            break;
        };
        let epoch = batch.epoch;
        bar.set_prefix(format!("epoch {}/{}", epoch + 1, config.epochs));

        let t0 = Instant::now();
        let inputs: Vec<Tensor<4>> = batch
            .views
            .into_iter()
            .zip(&batch.shapes)
            .map(|(v, s)| tensor4(v, *s, &ad))
            .collect();
        let loss = model.loss(inputs);
        let loss_value: f64 = loss.clone().into_scalar::<f64>();
        let t1 = Instant::now();
        if !loss_value.is_finite() {
            bar.abandon();
            bail!(
                "loss became {loss_value} at step {step} (epoch {}); training stopped. The last good \
                 checkpoint is kept at {} (try a lower optimizer.lr or optimizer.grad_clip)",
                epoch + 1,
                ckpt_path.display()
            );
        }
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let t2 = Instant::now();
        let lr = cosine_lr(config.optimizer.lr, step, warmup_steps, total_steps);
        model = optimizer.step(model, grads, lr);
        model = model.after_step((step + 1) as f64 / total_steps as f64);
        let t3 = Instant::now();
        time.forward += (t1 - t0).as_secs_f64();
        time.backward += (t2 - t1).as_secs_f64();
        time.optimizer += (t3 - t2).as_secs_f64();

        losses.push(loss_value);
        epoch_losses.push(loss_value);
        step += 1;
        let elapsed = loop_started.elapsed().as_secs_f64();
        let ips = (step - start_step) as f64 * config.batch_size as f64 / elapsed.max(1e-9);
        writeln!(
            metrics,
            "{}",
            serde_json::json!({"step": step, "epoch": epoch + 1, "loss": loss_value, "lr": lr, "images_per_sec": ips})
        )?;
        bar.set_message(format!("loss {loss_value:.4} lr {lr:.2e} {ips:.0} img/s"));
        bar.inc(1);

        let epoch_end = step.is_multiple_of(steps_per_epoch);
        let periodic =
            config.train.checkpoint_every > 0 && step.is_multiple_of(config.train.checkpoint_every);
        if epoch_end || periodic || step == end_step {
            let tc = Instant::now();
            save(&model, &optimizer, step)?;
            time.checkpoint += tc.elapsed().as_secs_f64();
        }
        if epoch_end && step < end_step {
            epoch_losses.clear();
        }
    }
    bar.finish_and_clear();
    time.data_wait = loader.waited().as_secs_f64();
    time.total = started.elapsed().as_secs_f64();
    drop(loader);
    crate::report::plot_loss(&metrics_path, &out_dir.join("loss.svg")).ok();

    let mean_of = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let loop_secs = loop_started.elapsed().as_secs_f64().max(1e-9);
    let summary = TrainSummary {
        method: config.method.clone(),
        steps: step,
        epochs_done: step as f64 / steps_per_epoch as f64,
        first_loss: losses.first().copied().unwrap_or(f64::NAN),
        final_loss: losses.last().copied().unwrap_or(f64::NAN),
        last_epoch_loss: mean_of(if epoch_losses.is_empty() {
            &losses
        } else {
            &epoch_losses
        }),
        images_per_sec: (step - start_step) as f64 * config.batch_size as f64 / loop_secs,
        time,
        checkpoint: ckpt_path,
        resumed_from_step: start_step,
    };
    Ok((model, summary))
}

fn truncate_metrics(path: &Path, keep_steps: usize) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: String = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v["step"].as_u64())
                .is_some_and(|s| s as usize <= keep_steps)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    crate::checkpoint::write_atomic(path, kept.as_bytes())
}

/// Elapsed seconds as a duration, for printing.
pub fn secs(d: f64) -> Duration {
    Duration::from_secs_f64(d.max(0.0))
}
