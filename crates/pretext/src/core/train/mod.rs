//! The training loop every job shares (image methods, masked language models, the modalities
//! to come): batch → loss → backward → optimizer, with progress, metrics, checkpoints, resume,
//! gradient accumulation and the NaN guard. It knows nothing of images or text: a job hands it
//! a model, a [`BatchSource`] and a loss.

mod lock;
mod resume;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use burn::module::Module;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::prelude::*;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::core::checkpoint::{
    Checkpoint, load_module, module_tensors, remove_stale_temporaries, write_atomic,
};
use crate::core::config::TrainConfig;
use crate::core::distributed::{
    Replicas, average_gradients, set_sync_batchnorm, watch_collectives, world,
};
use crate::core::loader::mix_seed;
use crate::core::optim::{OptimConfig, Optimizer};
pub use lock::{LOCK_FILE, RunLock};
pub use resume::checkpoint_file;
use resume::{check_resumable, truncate_metrics};

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
    /// Examples (images, sequences) per second through the whole loop.
    pub images_per_sec: f64,
    pub time: TimeBreakdown,
    pub checkpoint: PathBuf,
    pub resumed_from_step: usize,
    /// Seconds of training in all attempts of the run (what `train.budget_minutes` counts).
    pub trained_secs: f64,
}

/// Options that are not part of the config (they do not change the result).
#[derive(Debug, Clone, Default)]
pub struct TrainOptions {
    pub resume: bool,
    /// Start afresh in a folder that already holds a checkpoint (it is replaced).
    pub overwrite: bool,
    /// Hide the progress bar.
    pub quiet: bool,
}

/// A stream of batches that starts at a given step and reports how long the consumer waited.
pub trait BatchSource {
    type Batch;
    /// The next batch and the (0-based) epoch it belongs to; `None` at the end; an error when
    /// the data cannot be read.
    fn next_batch(&mut self) -> Result<Option<(Self::Batch, usize)>>;
    fn waited(&self) -> Duration;
}

/// What one batch gives the loop: the loss to minimise, what to watch, and what the model
/// keeps for after the optimizer step.
pub struct Step<C = ()> {
    pub loss: Tensor<1>,
    /// Embeddings `[batch, dim]` watched for collapse ([`collapse_std`]), where a method has
    /// them.
    pub embeddings: Option<Tensor<2>>,
    /// Handed to `after_step` once the optimizer has stepped (MoCo's keys for its queue).
    pub carry: C,
    /// How many terms the loss is a mean of, where that differs from batch to batch (masked
    /// tokens): under MPI each rank's loss then counts in proportion (`None`: equally).
    pub weight: Option<f64>,
}

impl<C: Default> From<Tensor<1>> for Step<C> {
    fn from(loss: Tensor<1>) -> Self {
        Step {
            loss,
            embeddings: None,
            carry: C::default(),
            weight: None,
        }
    }
}

impl<C> Step<C> {
    /// The loss is a mean over `weight` terms (see [`Step::weight`]).
    pub fn weighted(self, weight: f64) -> Self {
        Step {
            weight: Some(weight),
            ..self
        }
    }

    /// Watch `embeddings` for collapse.
    pub fn watching(self, embeddings: Tensor<2>) -> Self {
        Step {
            embeddings: Some(embeddings),
            ..self
        }
    }
}

/// The next batch from `source`, its reading errors naming the step and the checkpoint kept.
fn read_batch<S: BatchSource>(
    source: &mut S,
    bar: &ProgressBar,
    step: usize,
    ckpt: &Path,
) -> Result<Option<(S::Batch, usize)>> {
    source.next_batch().map_err(|e| {
        bar.abandon();
        e.context(format!("reading data at step {step}; {}", kept(ckpt)))
    })
}

/// Stop the run at a loss that is not a number, saying what is kept and what to try.
fn check_finite(
    value: f64,
    (step, epoch): (usize, usize),
    bar: &ProgressBar,
    ckpt: &Path,
) -> Result<()> {
    if !value.is_finite() {
        bar.abandon();
        bail!(
            "loss became {value} at step {step} (epoch {}); training stopped. {} (try a lower \
             optimizer.lr or optimizer.grad_clip)",
            epoch + 1,
            kept(ckpt)
        );
    }
    Ok(())
}

/// What one replica's share of a batch gave the step.
struct ShareOut<C> {
    /// The share's loss, as a part of the step's (scaled by `1 / accum`).
    value: f64,
    grads: GradientsParams,
    carry: C,
    collapse: Option<f64>,
    forward: f64,
    backward: f64,
}

/// Forward and backward of one share on a replica's copy of the model (in the replica's
/// thread); the share's loss counts `1 / accum` of the step's, as a batch's does without
/// replicas.
fn train_share<M: Module, B, C>(
    loss_of: &(impl Fn(&M, B, f64) -> Result<Step<C>> + Sync),
    copy: &M,
    share: B,
    progress: f64,
    accum: usize,
) -> Result<ShareOut<C>> {
    let t0 = Instant::now();
    let out = loss_of(copy, share, progress)?;
    let loss = out.loss.div_scalar(accum as f64);
    let value = loss.clone().into_scalar::<f64>();
    let collapse = out.embeddings.map(collapse_std);
    let t1 = Instant::now();
    let grads = GradientsParams::from_grads(loss.backward(), copy);
    Ok(ShareOut {
        value,
        grads,
        carry: out.carry,
        collapse,
        forward: (t1 - t0).as_secs_f64(),
        backward: t1.elapsed().as_secs_f64(),
    })
}

/// The in-process replicas the run trains with (`None`: one, in the loop's thread), after
/// refusing what they cannot do.
fn check_replicas(spec: &LoopSpec, device: &Device, distributed: bool) -> Result<Option<Replicas>> {
    let asked = spec.train.replicas;
    if asked == 0 {
        bail!("train.replicas = 0: give 1 (no replicas) or more");
    }
    if asked == 1 {
        return Ok(None);
    }
    if spec.replicas != asked {
        bail!(
            "train.replicas = {asked}: '{}' trains one replica (in-process replicas train VideoMAE \
             for now: `video pretrain` with method = \"videomae\"); set train.replicas = 1",
            spec.name
        );
    }
    if distributed {
        bail!(
            "train.replicas = {asked} under mpirun: give each rank one replica (train.replicas = \
             1) and start more ranks instead"
        );
    }
    if !crate::core::device::is_flex(device) {
        bail!(
            "train.replicas = {asked} splits the CPU's threads between copies of the model; on \
             this device (--device) train one replica (train.replicas = 1)"
        );
    }
    if !spec.grad_accum.is_multiple_of(asked) {
        bail!("train.replicas = {asked}: the job cut its batches into other shares (a bug)");
    }
    Replicas::new(asked).map(Some)
}

/// Wait for the device's queued work, naming the step if it failed.
fn sync_device(device: &Device, step: usize) -> Result<()> {
    device
        .sync()
        .map_err(|e| anyhow::anyhow!("the device failed at step {step}: {e:?}"))
}

/// The collapse monitor: the standard deviation over the batch of the L2-normalised
/// embeddings, averaged over dimensions, times sqrt(dim). Embeddings spread over the sphere
/// give about 1; a collapse to one point gives 0 (lightly's `std_of_l2_normalized`, scaled so
/// that one threshold suits every width).
pub fn collapse_std(embeddings: Tensor<2>) -> f64 {
    let [rows, dim] = embeddings.dims();
    if rows < 2 {
        return f64::NAN;
    }
    let z = crate::core::losses::l2_normalize(embeddings.detach());
    let std = z.var(0).sqrt().mean().into_scalar::<f64>();
    std * (dim as f64).sqrt()
}

/// Below this [`collapse_std`] over an epoch, the run warns that its embeddings collapsed.
pub const COLLAPSED: f64 = 0.1;

/// What [`run_loop`] needs to know about a run besides the model and its data.
pub struct LoopSpec<'a> {
    /// Shown in summaries ("simclr", "mlm", ...).
    pub name: &'a str,
    pub epochs: usize,
    /// Optimizer steps per epoch.
    pub steps_per_epoch: usize,
    /// Optimizer steps the schedule spans; the run ends there (or at `train.max_steps`).
    pub total_steps: usize,
    /// Batches whose gradients are summed into one optimizer step.
    pub grad_accum: usize,
    /// Of those, how many train at once, each on an in-process replica of the model
    /// ([`Replicas`]; `train.replicas`): the job has cut each batch into this many shares.
    /// 1: one after another.
    pub replicas: usize,
    /// Examples per batch, for throughput.
    pub batch_size: usize,
    /// Seeds the device's random stream (dropout) afresh at every batch from (seed, step), so
    /// a resumed run draws what an uninterrupted one would have.
    pub seed: u64,
    pub optimizer: &'a OptimConfig,
    pub train: &'a TrainConfig,
    /// Settings that must match for `--resume` to continue the same run.
    pub identity: toml::Table,
    /// Stored in every checkpoint: what evaluation needs to rebuild and feed the model.
    pub meta: serde_json::Value,
    /// What the run trains on (sizes and a content hash): `--resume` refuses other data.
    pub data: serde_json::Value,
}

/// Train `model` on the batches `source_at(start_step)` yields, minimising `loss_of`, calling
/// `after_step` (EMA targets, queues) after each optimizer step with the fraction of training
/// done and what each batch of the step carried, and `at_epoch_end` at the end of each epoch for
/// scores to log (online kNN). With `spec.grad_accum` > 1 each step sums the gradients of that many batches, each
/// loss scaled by 1/grad_accum (as Hugging Face's Trainer does). Resumes from
/// `spec.train.out_dir` when asked.
pub fn run_loop<M, S, C>(
    mut model: M,
    source_at: impl FnOnce(usize) -> S,
    loss_of: impl Fn(&M, S::Batch, f64) -> Result<Step<C>> + Sync,
    after_step: impl Fn(M, f64, Vec<C>) -> M,
    at_epoch_end: impl Fn(&M) -> Result<Vec<(&'static str, f64)>>,
    spec: &LoopSpec,
    options: &TrainOptions,
) -> Result<(M, TrainSummary)>
where
    M: Module,
    S: BatchSource,
    S::Batch: Send,
    C: Send,
{
    let started = Instant::now();
    let device = model.devices().first().cloned().unwrap_or_default();
    let steps_per_epoch = spec.steps_per_epoch.max(1);
    let total_steps = spec.total_steps.max(1);
    let accum = spec.grad_accum.max(1);
    watch_interrupts();
    let warmup_steps = spec.optimizer.warmup_steps_for(steps_per_epoch);
    let budget_minutes = spec.train.budget_minutes;
    if !(budget_minutes >= 0.0 && budget_minutes.is_finite()) {
        bail!(
            "train.budget_minutes = {budget_minutes}: must be 0 (off) or a positive number of minutes"
        );
    }
    let budget_secs = (budget_minutes > 0.0).then_some(budget_minutes * 60.0);
    if warmup_steps > total_steps && budget_secs.is_none() && !options.quiet {
        // A warning, not a refusal: a short trial run with the default warm-up is legitimate.
        eprintln!(
            "warning: the learning-rate warm-up ({warmup_steps} steps: optimizer.warmup_epochs \
             = {}, warmup_steps = {}) is longer than the run ({total_steps} steps): the rate \
             never reaches optimizer.lr = {}",
            spec.optimizer.warmup_epochs, spec.optimizer.warmup_steps, spec.optimizer.lr
        );
    }
    let mut optimizer = Optimizer::new(spec.optimizer.clone());
    if spec.train.out_dir.trim().is_empty() {
        bail!(
            "train.out_dir is empty: name the run's folder (e.g. --set train.out_dir='\"runs/my_run\"')"
        );
    }
    let ckpt_path = checkpoint_file(&spec.train.out_dir);
    let out_dir = PathBuf::from(&spec.train.out_dir);
    // Under MPI rank 0 alone writes the run folder; the other ranks only read a checkpoint.
    let world = world();
    world.check_batch(spec.batch_size)?;
    if world.is_distributed() {
        if spec.train.collective_timeout.is_nan() || spec.train.collective_timeout < 0.0 {
            bail!("train.collective_timeout must be a number of seconds, 0 or more");
        }
        watch_collectives(Duration::from_secs_f64(spec.train.collective_timeout));
    }
    set_sync_batchnorm(spec.train.sync_batchnorm);
    let replicas = check_replicas(spec, &device, world.is_distributed())?;
    let bucket_mb = spec.train.allreduce_bucket_mb;
    if !(bucket_mb > 0.0 && bucket_mb.is_finite()) {
        bail!("train.allreduce_bucket_mb = {bucket_mb}: must be a positive number of megabytes");
    }
    let bucket_values = ((bucket_mb * 1e6 / 4.0) as usize).max(1);
    let _lock = if world.is_root() {
        let lock = RunLock::acquire(&out_dir, &format!("training {}", spec.name))?;
        for stale in remove_stale_temporaries(&out_dir) {
            eprintln!("removed {}, left by an interrupted write", stale.display());
        }
        Some(lock)
    } else {
        None
    };
    let metrics_path = out_dir.join("metrics.jsonl");
    let identity = toml::to_string(&spec.identity).unwrap_or_default();

    let end_step = match spec.train.max_steps {
        0 => total_steps,
        max => max.min(total_steps),
    };
    let mut start_step = 0usize;
    // Seconds of training in earlier attempts of this run (what a budget has already spent).
    let mut trained_before = 0.0f64;
    if options.resume {
        if !ckpt_path.is_file() {
            bail!("--resume: no checkpoint at {}", ckpt_path.display());
        }
        let ckpt = Checkpoint::load(&ckpt_path)?;
        check_resumable(
            ckpt.meta["identity"].as_str().unwrap_or_default(),
            &spec.identity,
        )?;
        check_same_data(&ckpt.meta["data"], &spec.data, &ckpt_path)?;
        let ranks = ckpt.meta["ranks"].as_u64().unwrap_or(1) as usize;
        if ranks != world.size {
            bail!(
                "--resume: {} was trained on {ranks} rank(s) and this job has {}; resume it on \
                 {ranks} (mpirun -np {ranks}), so that every step sees the same batches",
                ckpt_path.display(),
                world.size
            );
        }
        let done = ckpt.meta["step"].as_u64().unwrap_or(0) as usize;
        trained_before = ckpt.meta["trained_secs"].as_f64().unwrap_or(0.0);
        if let Some(budget) = budget_secs.filter(|&b| trained_before >= b) {
            bail!(
                "--resume: the run in {} has spent its budget ({:.1} of {:.1} minutes); nothing \
                 to continue. Raise train.budget_minutes to train it longer, or evaluate it",
                out_dir.display(),
                trained_before / 60.0,
                budget / 60.0
            );
        }
        if done >= end_step {
            bail!(
                "--resume: the run in {} is finished ({done} of {end_step} steps); nothing to \
                 continue. Evaluate it, or start another run in a new train.out_dir",
                out_dir.display()
            );
        }
        model = load_module(model, &ckpt.model)?;
        let opt_steps = ckpt.meta["optimizer_steps"].as_u64().unwrap_or(0);
        optimizer.load_state(
            opt_steps,
            ckpt.optimizer,
            &device.clone().without_autodiff(),
        )?;
        start_step = ckpt.meta["step"].as_u64().unwrap_or(0) as usize;
        // Metrics past the checkpoint belong to the interrupted attempt; drop them (rank 0
        // alone: two ranks rewriting one file would sweep each other's temporaries).
        if world.is_root() {
            truncate_metrics(&metrics_path, start_step)?;
        }
    } else if world.is_root() {
        if ckpt_path.is_file() && !options.overwrite {
            let step = Checkpoint::load(&ckpt_path)
                .ok()
                .and_then(|c| c.meta["step"].as_u64())
                .map_or("unreadable".to_string(), |s| format!("at step {s}"));
            bail!(
                "{} already holds a run (checkpoint {step}); continue it with --resume, or replace \
                 it with --overwrite",
                out_dir.display()
            );
        }
        let _ = std::fs::remove_file(&metrics_path);
    }

    let mut source = source_at(start_step);
    let mut metrics: Box<dyn Write> = if world.is_root() {
        Box::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&metrics_path)
                .with_context(|| format!("cannot open {}", metrics_path.display()))?,
        )
    } else {
        Box::new(std::io::sink())
    };
    // On a budget the bar counts seconds of it, so that its ETA is the budget's end.
    let bar = if options.quiet || !world.is_root() {
        ProgressBar::hidden()
    } else if let Some(budget) = budget_secs {
        let bar = ProgressBar::new(budget.ceil() as u64);
        bar.set_position(trained_before as u64);
        bar
    } else {
        ProgressBar::new(end_step.saturating_sub(start_step) as u64)
    };
    let template = if budget_secs.is_some() {
        "{prefix} [{bar:30}] {pos}/{len} s {msg} ETA {eta}"
    } else {
        "{prefix} [{bar:30}] {pos}/{len} {msg} ETA {eta}"
    };
    bar.set_style(
        ProgressStyle::with_template(template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );

    let save = |model: &M, optimizer: &Optimizer, step: usize, trained_secs: f64| -> Result<()> {
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
                "weights became non-finite at step {step} ('{}'); training stopped. {} (try a \
                 lower optimizer.lr or optimizer.grad_clip)",
                bad.name,
                kept(&ckpt_path)
            );
        }
        let mut meta = serde_json::json!({
            "format": "pretext-checkpoint-1",
            "identity": identity,
            "data": spec.data,
            "step": step,
            "optimizer_steps": optimizer.steps(),
            "epoch": step / steps_per_epoch,
            "step_in_epoch": step % steps_per_epoch,
            "ranks": world.size,
            "trained_secs": trained_secs,
        });
        if let (Some(m), Some(extra)) = (meta.as_object_mut(), spec.meta.as_object()) {
            m.extend(extra.clone());
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
    let mut epoch_collapse: Vec<f64> = Vec::new();
    let mut warned_collapse = false;
    let loop_started = Instant::now();
    // The share of the budget spent (rank 0's clock, agreed at the end of every step), or of
    // the steps without one: where the schedules (learning rate, EMA momentum) stand.
    let mut progress = match budget_secs {
        Some(budget) => trained_before / budget,
        None => start_step as f64 / total_steps as f64,
    };
    let mut budget_spent = false;
    'steps: while step < end_step && !budget_spent {
        let mut accumulated = GradientsAccumulator::<M>::new();
        let mut loss_value = 0.0;
        let mut epoch = 0;
        let mut carried = Vec::with_capacity(accum);
        let mut collapse = Vec::new();
        if let Some(replicas) = &replicas {
            let count = replicas.count();
            for group in 0..accum / count {
                let mut shares = Vec::with_capacity(count);
                for _ in 0..count {
                    let Some((share, share_epoch)) =
                        read_batch(&mut source, &bar, step, &ckpt_path)?
                    else {
                        break 'steps;
                    };
                    epoch = share_epoch;
                    shares.push(share);
                }
                bar.set_prefix(format!("epoch {}/{}", epoch + 1, spec.epochs));
                // The seed the device would take for this batch with one replica.
                let seed = mix_seed(&[spec.seed, step as u64, group as u64]);
                let outs = replicas.run(&model, shares, (seed, &device), |copy: &M, share| {
                    train_share(&loss_of, copy, share, progress, accum)
                });
                for out in outs {
                    let out = out.with_context(|| format!("step {step} (epoch {})", epoch + 1))?;
                    check_finite(out.value, (step, epoch), &bar, &ckpt_path)?;
                    loss_value += out.value;
                    carried.push(out.carry);
                    collapse.extend(out.collapse);
                    accumulated.accumulate(&model, out.grads);
                    // The replicas ran side by side: each adds its share of the wall time.
                    time.forward += out.forward / count as f64;
                    time.backward += out.backward / count as f64;
                }
            }
        } else {
            for micro in 0..accum {
                let Some((batch, batch_epoch)) = read_batch(&mut source, &bar, step, &ckpt_path)?
                else {
                    break 'steps;
                };
                device.seed(mix_seed(&[spec.seed, step as u64, micro as u64]));
                epoch = batch_epoch;
                bar.set_prefix(format!("epoch {}/{}", epoch + 1, spec.epochs));
                let t0 = Instant::now();
                let out = loss_of(&model, batch, progress)
                    .with_context(|| format!("step {step} (epoch {})", epoch + 1))?;
                let mut loss = out.loss;
                let weight = out.weight.unwrap_or(1.0);
                carried.push(out.carry);
                if let Some(e) = out.embeddings {
                    collapse.push(collapse_std(e));
                }
                if accum > 1 {
                    loss = loss.div_scalar(accum as f64);
                }
                // Under MPI: this rank's share of the global batch's loss (every rank sees the same
                // value, so the NaN guard below stops them all at the same step).
                let (scale, value) = world.weigh(loss.clone().into_scalar::<f64>(), weight);
                if scale != 1.0 {
                    loss = loss.mul_scalar(scale);
                }
                let t1 = Instant::now();
                check_finite(value, (step, epoch), &bar, &ckpt_path)?;
                loss_value += value;
                accumulated
                    .accumulate(&model, GradientsParams::from_grads(loss.backward(), &model));
                // On asynchronous devices (wgpu, CUDA) the backward is only queued here: wait for
                // it, so that its time is not counted as the optimizer's. (The forward's end is
                // waited for by reading the loss above.) A no-op on the CPU.
                sync_device(&device, step)?;
                time.forward += (t1 - t0).as_secs_f64();
                time.backward += t1.elapsed().as_secs_f64();
            }
        }
        let t2 = Instant::now();
        let lr = match budget_secs {
            Some(_) => spec.optimizer.lr_at_progress(step, warmup_steps, progress),
            None => spec.optimizer.lr_at(step, warmup_steps, total_steps),
        };
        let grads = average_gradients(&model, accumulated.grads(), bucket_values);
        model = optimizer.step(model, grads, lr);
        let progress_after = match budget_secs {
            Some(_) => progress,
            None => (step + 1) as f64 / total_steps as f64,
        };
        model = after_step(model, progress_after, carried);
        sync_device(&device, step)?;
        time.optimizer += t2.elapsed().as_secs_f64();

        losses.push(loss_value);
        epoch_losses.push(loss_value);
        step += 1;
        let elapsed = loop_started.elapsed().as_secs_f64();
        let rate =
            (step - start_step) as f64 * (spec.batch_size * accum) as f64 / elapsed.max(1e-9);
        let mut record = serde_json::json!({"step": step, "epoch": epoch + 1, "loss": loss_value, "lr": lr, "images_per_sec": rate});
        let mut message = format!("loss {loss_value:.4} lr {lr:.2e} {rate:.0}/s");
        if !collapse.is_empty() {
            let std = collapse.iter().sum::<f64>() / collapse.len() as f64;
            record["embedding_std"] = serde_json::json!(std);
            message.push_str(&format!(" std {std:.2}"));
            epoch_collapse.push(std);
        }
        // Rank 0's clock decides when a budget is spent, so that every rank stops at one step.
        let mut clock = [if world.is_root() {
            trained_before + loop_started.elapsed().as_secs_f64()
        } else {
            0.0
        }];
        if budget_secs.is_some() {
            world.sum(&mut clock);
        }
        let trained_secs = clock[0];
        progress = match budget_secs {
            Some(budget) => trained_secs / budget,
            None => step as f64 / total_steps as f64,
        };
        budget_spent = progress >= 1.0 && budget_secs.is_some();
        let last_step = step == end_step || budget_spent;
        let epoch_end_now = step.is_multiple_of(steps_per_epoch) || last_step;
        if epoch_end_now {
            let scores = at_epoch_end(&model).context("the end-of-epoch evaluation")?;
            for (name, value) in scores {
                record[name] = serde_json::json!(value);
                bar.suspend(|| eprintln!("epoch {}: {name} {:.2}%", epoch + 1, 100.0 * value));
            }
        }
        if budget_secs.is_some() {
            record["trained_secs"] = serde_json::json!(trained_secs);
        }
        writeln!(metrics, "{record}")?;
        bar.set_message(message);
        if budget_secs.is_some() {
            bar.set_position(trained_secs as u64);
        } else {
            bar.inc(1);
        }

        let epoch_end = step.is_multiple_of(steps_per_epoch);
        let periodic =
            spec.train.checkpoint_every > 0 && step.is_multiple_of(spec.train.checkpoint_every);
        if world.is_distributed() && (step.is_multiple_of(REPLICA_CHECK_EVERY) || last_step) {
            world.check_replicas(&model, step)?;
        }
        if (epoch_end || periodic || last_step) && world.is_root() {
            let tc = Instant::now();
            save(&model, &optimizer, step, trained_secs)?;
            time.checkpoint += tc.elapsed().as_secs_f64();
        }
        // Under MPI every rank stops at the same step, whichever got the Ctrl-C first.
        let mut interrupted = [f64::from(u8::from(INTERRUPTED.load(Ordering::SeqCst)))];
        world.sum(&mut interrupted);
        if interrupted[0] > 0.0 && !last_step {
            if !(epoch_end || periodic) && world.is_root() {
                save(&model, &optimizer, step, trained_secs)?;
            }
            bar.abandon();
            bail!(
                "interrupted at step {step} of {end_step} (epoch {}): {} holds it; the same \
                 command with --resume continues from here",
                epoch + 1,
                ckpt_path.display()
            );
        }
        if epoch_end_now && !epoch_collapse.is_empty() {
            let mean = epoch_collapse.iter().sum::<f64>() / epoch_collapse.len() as f64;
            if mean < COLLAPSED && !warned_collapse {
                bar.suspend(|| {
                    eprintln!(
                        "warning: the embeddings collapsed in epoch {}: their spread \
                         (embedding_std in metrics.jsonl) is {mean:.3}, healthy is near 1 and \
                         collapsed near 0; try a lower optimizer.lr, a larger batch or other \
                         views",
                        epoch + 1
                    )
                });
                warned_collapse = true;
            }
            epoch_collapse.clear();
        }
        if epoch_end && step < end_step {
            epoch_losses.clear();
        }
    }
    bar.finish_and_clear();
    time.data_wait = source.waited().as_secs_f64();
    time.total = started.elapsed().as_secs_f64();
    drop(source);
    if world.is_root() {
        crate::core::report::plot_loss(&metrics_path, &out_dir.join("loss.svg")).ok();
    }

    let mean_of = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let loop_secs = loop_started.elapsed().as_secs_f64().max(1e-9);
    let summary = TrainSummary {
        method: spec.name.to_string(),
        steps: step,
        epochs_done: step as f64 / steps_per_epoch as f64,
        first_loss: losses.first().copied().unwrap_or(f64::NAN),
        final_loss: losses.last().copied().unwrap_or(f64::NAN),
        last_epoch_loss: mean_of(if epoch_losses.is_empty() {
            &losses
        } else {
            &epoch_losses
        }),
        images_per_sec: (step - start_step) as f64 * (spec.batch_size * accum) as f64 / loop_secs,
        time,
        checkpoint: ckpt_path,
        resumed_from_step: start_step,
        trained_secs: trained_before + loop_secs,
    };
    // What the run's report shows as its time breakdown.
    if world.is_root() {
        let summary_json = serde_json::to_vec_pretty(&summary)?;
        write_atomic(&out_dir.join(SUMMARY_FILE), &summary_json)?;
    }
    Ok((model, summary))
}

/// Steps between checks that the replicas of a multi-rank run still agree.
const REPLICA_CHECK_EVERY: usize = 50;

/// What the NaN guard can say about the checkpoint it leaves in place.
/// Set by the first Ctrl-C: the loop finishes its step, saves it and stops with a word on how
/// to resume (a run killed without one loses everything since its last checkpoint).
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

fn watch_interrupts() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        // Another handler already installed (an embedding program's) keeps its own behaviour.
        let _ = ctrlc::set_handler(|| {
            if INTERRUPTED.swap(true, Ordering::SeqCst) {
                eprintln!("\ninterrupted again: stopping now, without saving this step");
                std::process::exit(130);
            }
            eprintln!(
                "\ninterrupted: finishing this step and saving it (Ctrl-C again to stop at once)"
            );
        });
    });
}

fn kept(ckpt: &Path) -> String {
    if ckpt.is_file() {
        format!("The last good checkpoint is kept at {}", ckpt.display())
    } else {
        "No checkpoint had been written yet".to_string()
    }
}

/// `--resume` continues on the data the run started on: compare the checkpoint's fingerprint
/// (absent in checkpoints written before fingerprints existed) with the current data's.
fn check_same_data(stored: &serde_json::Value, now: &serde_json::Value, ckpt: &Path) -> Result<()> {
    if stored.is_null() || stored == now {
        return Ok(());
    }
    bail!(
        "--resume: {} was trained on other data.\n  the run's data: {stored}\n  given now:      {now}\n\
         Resume with the run's data, or start a new train.out_dir",
        ckpt.display()
    );
}

/// The last [`TrainSummary`] of a run, in its folder.
pub const SUMMARY_FILE: &str = "summary.json";

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use burn::nn::{Linear, LinearConfig};

    /// Batches handed out in order, all in epoch 0.
    struct Fixed(std::vec::IntoIter<(Tensor<2>, Tensor<2>)>);

    impl BatchSource for Fixed {
        type Batch = (Tensor<2>, Tensor<2>);

        fn next_batch(&mut self) -> Result<Option<(Self::Batch, usize)>> {
            Ok(self.0.next().map(|b| (b, 0)))
        }

        fn waited(&self) -> Duration {
            Duration::ZERO
        }
    }

    /// Three SGD steps of least squares on 8 fixed rows, as one batch of 8 or `accum`
    /// batches of 8 / accum; returns the final weights and bias.
    fn least_squares(accum: usize, out_dir: &Path) -> Vec<f32> {
        least_squares_on(accum, 1, out_dir).0
    }

    /// [`least_squares`] with `replicas` of the batches of a step trained at once; also the
    /// names of the threads that ran the losses.
    fn least_squares_on(accum: usize, replicas: usize, out_dir: &Path) -> (Vec<f32>, Vec<String>) {
        let device = Device::flex().autodiff();
        device.seed(1);
        let model: Linear = LinearConfig::new(3, 1).init(&device);
        let x: Vec<f32> = (0..24).map(|i| ((i * 7 % 11) as f32) / 10.0).collect();
        let y: Vec<f32> = (0..8).map(|i| i as f32 / 4.0).collect();
        let rows = 8 / accum;
        let mut batches = Vec::new();
        for _ in 0..3 {
            for part in 0..accum {
                let xs = x[part * rows * 3..(part + 1) * rows * 3].to_vec();
                let ys = y[part * rows..(part + 1) * rows].to_vec();
                batches.push((
                    Tensor::from_data(TensorData::new(xs, [rows, 3]), &device),
                    Tensor::from_data(TensorData::new(ys, [rows, 1]), &device),
                ));
            }
        }
        let optimizer = OptimConfig {
            kind: "sgd".into(),
            lr: 0.1,
            momentum: 0.0,
            weight_decay: 0.0,
            warmup_epochs: 0.0,
            ..OptimConfig::default()
        };
        let train = TrainConfig {
            out_dir: out_dir.display().to_string(),
            replicas,
            ..TrainConfig::default()
        };
        let spec = LoopSpec {
            name: "least squares",
            epochs: 1,
            steps_per_epoch: 3,
            total_steps: 3,
            grad_accum: accum,
            replicas,
            batch_size: rows,
            optimizer: &optimizer,
            train: &train,
            seed: 0,
            identity: toml::Table::new(),
            meta: serde_json::json!({}),
            data: serde_json::Value::Null,
        };
        let options = TrainOptions {
            quiet: true,
            ..TrainOptions::default()
        };
        let threads = std::sync::Mutex::new(Vec::new());
        let (model, summary) = run_loop(
            model,
            |_| Fixed(batches.into_iter()),
            |m: &Linear, (x, y), _| {
                let name = std::thread::current().name().unwrap_or("").to_string();
                threads.lock().unwrap().push(name);
                Ok(Step {
                    loss: (m.forward(x) - y).powf_scalar(2.0).mean().reshape([1]),
                    embeddings: None,
                    carry: 1usize,
                    weight: None,
                })
            },
            // Every batch of a step hands its carry to the step's end.
            |m, _, carried: Vec<usize>| {
                assert_eq!(carried.iter().sum::<usize>(), accum);
                m
            },
            |_| Ok(vec![]),
            &spec,
            &options,
        )
        .unwrap();
        assert_eq!(summary.steps, 3);
        let _ = std::fs::remove_dir_all(out_dir);
        let mut values = model.weight.val().into_data().try_to_vec::<f32>().unwrap();
        let bias = model
            .bias
            .map(|b| b.val().into_data().try_to_vec::<f32>().unwrap());
        values.extend(bias.unwrap_or_default());
        (values, threads.into_inner().unwrap())
    }

    #[test]
    fn collapse_std_is_near_one_when_spread_and_zero_when_collapsed() {
        let device = Device::flex();
        device.seed(5);
        let spread = Tensor::<2>::random(
            [512, 64],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &device,
        );
        let healthy = collapse_std(spread);
        assert!((healthy - 1.0).abs() < 0.05, "{healthy}");
        // One point plus a whisper of noise: collapsed.
        let point = Tensor::<2>::ones([512, 64], &device)
            + Tensor::<2>::random(
                [512, 64],
                burn::tensor::Distribution::Normal(0.0, 1e-3),
                &device,
            );
        let collapsed = collapse_std(point);
        assert!(collapsed < 0.01, "{collapsed}");
        assert!(collapsed < COLLAPSED && healthy > COLLAPSED);
    }

    #[test]
    fn accumulated_batches_step_like_one_big_batch() {
        let tmp = std::env::temp_dir().join(format!("pretext-accum-{}", std::process::id()));
        let whole = least_squares(1, &tmp.join("whole"));
        let halves = least_squares(2, &tmp.join("halves"));
        let quarters = least_squares(4, &tmp.join("quarters"));
        for ((a, b), c) in whole.iter().zip(&halves).zip(&quarters) {
            assert!(
                (a - b).abs() < 1e-6 && (a - c).abs() < 1e-6,
                "{whole:?} {halves:?} {quarters:?}"
            );
        }
        // The steps moved the weights: the comparison is not between untouched copies.
        let device = Device::flex().autodiff();
        device.seed(1);
        let start: Linear = LinearConfig::new(3, 1).init(&device);
        let w0 = start.weight.val().into_data().try_to_vec::<f32>().unwrap();
        assert!(w0.iter().zip(&whole).any(|(a, b)| (a - b).abs() > 1e-3));
    }

    /// Two in-process replicas, each training half of every batch in its own thread, train
    /// what one process trains on the whole batches, and the same bits every time; after the
    /// first step (which initialises the parameters, one share after another, as one replica
    /// does) the halves run in the replicas' threads.
    #[test]
    fn replicas_step_like_one_big_batch() {
        let tmp = std::env::temp_dir().join(format!("pretext-replicas-{}", std::process::id()));
        let whole = least_squares(1, &tmp.join("whole"));
        let (twice, threads) = least_squares_on(2, 2, &tmp.join("replicas"));
        for (a, b) in whole.iter().zip(&twice) {
            assert!((a - b).abs() < 1e-6, "{whole:?} {twice:?}");
        }
        let (again, _) = least_squares_on(2, 2, &tmp.join("again"));
        assert_eq!(
            twice.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            again.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
        // 3 steps of 2 halves: the first step's on the loop's thread, the others' on replica
        // 0's and replica 1's pools.
        assert_eq!(threads.len(), 6, "{threads:?}");
        let on = |prefix: &str| {
            threads[2..]
                .iter()
                .filter(|t| t.starts_with(prefix))
                .count()
        };
        assert_eq!(
            (on("pretext-replica-0"), on("pretext-replica-1")),
            (2, 2),
            "{threads:?}"
        );
        assert!(!threads[0].starts_with("pretext-replica"), "{threads:?}");
    }

    /// Replicas are refused where they cannot train what one process trains.
    #[test]
    fn replicas_are_refused_by_jobs_that_do_not_cut_their_batches() {
        let device = Device::flex().autodiff();
        let optimizer = OptimConfig::default();
        let train = TrainConfig {
            replicas: 2,
            ..TrainConfig::default()
        };
        let spec = LoopSpec {
            name: "simclr",
            epochs: 1,
            steps_per_epoch: 1,
            total_steps: 1,
            grad_accum: 1,
            replicas: 1,
            batch_size: 8,
            optimizer: &optimizer,
            train: &train,
            seed: 0,
            identity: toml::Table::new(),
            meta: serde_json::json!({}),
            data: serde_json::Value::Null,
        };
        let err = check_replicas(&spec, &device, false)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("train.replicas = 2") && err.contains("simclr"),
            "{err}"
        );
        let spec = LoopSpec {
            replicas: 2,
            grad_accum: 2,
            ..spec
        };
        assert!(check_replicas(&spec, &device, false).unwrap().is_some());
        let err = check_replicas(&spec, &device, true)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("mpirun"), "{err}");
    }

    /// A run on a wall-clock budget whose every batch takes 10 ms: it stops when the budget is
    /// spent, long before its step cap, with the learning rate decayed to zero over the budget;
    /// a resume is refused until the budget is raised, and then continues the clock.
    #[test]
    fn a_budget_ends_the_run_and_carries_the_schedule() {
        let dir = std::env::temp_dir().join(format!("pretext-budget-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let device = Device::flex().autodiff();
        device.seed(1);
        let optimizer = OptimConfig {
            kind: "sgd".into(),
            lr: 0.1,
            warmup_steps: 2,
            schedule: "linear".into(),
            ..OptimConfig::default()
        };
        let mut train = TrainConfig {
            out_dir: dir.display().to_string(),
            budget_minutes: 0.01,
            ..TrainConfig::default()
        };
        let cap = 100_000;
        let run = |train: &TrainConfig, resume: bool| {
            let spec = LoopSpec {
                name: "budget",
                epochs: 1,
                steps_per_epoch: cap,
                total_steps: cap,
                grad_accum: 1,
                replicas: 1,
                batch_size: 4,
                optimizer: &optimizer,
                train,
                seed: 0,
                identity: toml::Table::new(),
                meta: serde_json::json!({}),
                data: serde_json::Value::Null,
            };
            let options = TrainOptions {
                quiet: true,
                resume,
                ..TrainOptions::default()
            };
            let d = device.clone();
            let batches = (0..cap).map(move |_| {
                (
                    Tensor::<2>::ones([4, 3], &d),
                    Tensor::<2>::zeros([4, 1], &d),
                )
            });
            let model: Linear = LinearConfig::new(3, 1).init(&device);
            run_loop(
                model,
                |_| Fixed(batches.collect::<Vec<_>>().into_iter()),
                |m: &Linear, (x, y), _| {
                    std::thread::sleep(Duration::from_millis(10));
                    Ok(Step::from(
                        (m.forward(x) - y).powf_scalar(2.0).mean().reshape([1]),
                    ))
                },
                |m, _, _: Vec<()>| m,
                |_| Ok(vec![]),
                &spec,
                &options,
            )
        };
        let (_, first) = run(&train, false).unwrap();
        assert!(first.steps > 5 && first.steps < 200, "{first:?}");
        assert!(first.trained_secs >= 0.6, "{first:?}");
        let metrics = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
        let lrs: Vec<f64> = metrics
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["lr"]
                    .as_f64()
                    .unwrap()
            })
            .collect();
        // Warm-up over two steps, then a decay that follows the clock down to (almost) zero.
        assert_eq!(lrs[0], 0.0);
        assert!(lrs[2] > 0.08, "{lrs:?}");
        assert!(lrs.windows(2).skip(2).all(|w| w[1] <= w[0]), "{lrs:?}");
        assert!(*lrs.last().unwrap() < 0.02, "{lrs:?}");

        let err = run(&train, true).unwrap_err().to_string();
        assert!(err.contains("spent its budget"), "{err}");
        train.budget_minutes = 0.02;
        let (_, second) = run(&train, true).unwrap();
        assert_eq!(second.resumed_from_step, first.steps);
        assert!(second.steps > first.steps, "{second:?}");
        assert!(second.trained_secs >= 1.2, "{second:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
