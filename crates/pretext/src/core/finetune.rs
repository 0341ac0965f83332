//! Training an encoder with a linear head on labelled rows, for any modality: fine-tuning a
//! pretrained encoder, training the same architecture from scratch, and the two semi-supervised
//! ways of also using the unlabelled pool: FixMatch (Sohn et al. 2020) and distillation into a
//! student (SimCLRv2's third stage, Chen et al. 2020).
//!
//! The encoder and the head are separate modules with their own AdamW optimizers, so the
//! encoder can learn at a fraction of the head's rate, and its layers at a decaying fraction of
//! that. Fine-tuning may start with a linear probe on the frozen encoder (LP-FT, Kumar et al.
//! 2022): a random head's first gradients are what distorts pretrained features. The caller
//! turns row indices into encoder features (augmenting when training); after every epoch the
//! validation rows choose the epoch whose weights score the test rows.

use crate::core::losses::{cross_entropy, soft_cross_entropy};
use anyhow::{Result, bail};
use burn::module::{Flag, Module, ModuleMapper, Param};
use burn::nn::{Linear, LinearConfig};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::activation::softmax;
use serde::{Deserialize, Serialize};

use crate::core::loader::{epoch_order, mix_seed};
use crate::core::optim::{OptimConfig, Optimizer, cosine_lr};

/// How an encoder is trained on labels (`[eval.finetune]` in a config). Fine-tuning and training
/// from scratch get the same budget; the settings that exist to keep pretrained features
/// (`encoder_lr_ratio`, `layer_decay`, `probe_steps`, `batch_norm`) apply to pretrained
/// encoders only, since a fresh one has nothing to keep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FineTuneConfig {
    /// Passes over the labelled rows.
    pub epochs: usize,
    /// Optimizer steps at the least, so a 1% subset still gets a real number of updates
    /// (the epochs are raised to reach it).
    pub min_steps: usize,
    pub batch_size: usize,
    /// Peak learning rate of the head (AdamW, linear warm-up over the first 5% of steps, then
    /// cosine decay).
    pub lr: f64,
    /// A pretrained encoder's learning rate as a fraction of the head's.
    pub encoder_lr_ratio: f64,
    /// Layer-wise learning-rate decay: the encoder's layer l of L learns at
    /// `layer_decay^(L - l)` of the encoder's rate, so the layers nearest the input (the most
    /// general features) move least. 1 turns it off.
    pub layer_decay: f64,
    /// LP-FT: optimizer steps of a linear probe on the frozen pretrained encoder before
    /// fine-tuning starts from that head. 0 turns it off. 300 by default (docs/labels.md: on
    /// the digit sheet it gained a point with 1% of the labels; a lower encoder rate lost 3-10).
    pub probe_steps: usize,
    /// A pretrained encoder's batch norm while fine-tuning: `batch` (batch statistics, the
    /// running statistics re-estimated on the labelled data) or `frozen` (the pretraining
    /// statistics kept throughout; scale and shift still learn).
    pub batch_norm: String,
    /// Image checkpoints: fine-tune through this many layers of the pretrained projection head
    /// on top of the backbone (SimCLRv2 found its first layer helps with few labels); 0 or 1.
    pub projection_layers: usize,
    /// Which epoch's weights are scored: `last` (the end of the cosine schedule), `accuracy`
    /// (the best validation accuracy, ties to the later epoch) or `loss` (the lowest validation
    /// cross-entropy). Without validation rows, the last. `last` by default: choosing among
    /// 100 epochs by 40 validation images picked early epochs now and then (the digit sheet at
    /// 10%: 90.3 ± 5.4% by accuracy, 93.4 ± 0.6% at the last epoch).
    pub choose_epoch: String,
    pub weight_decay: f64,
}

impl Default for FineTuneConfig {
    fn default() -> Self {
        FineTuneConfig {
            epochs: 10,
            min_steps: 300,
            batch_size: 128,
            lr: 1e-3,
            encoder_lr_ratio: 1.0,
            layer_decay: 1.0,
            probe_steps: 300,
            batch_norm: "batch".into(),
            projection_layers: 0,
            choose_epoch: "last".into(),
            weight_decay: 1e-4,
        }
    }
}

impl FineTuneConfig {
    pub fn validate(&self, name: &str) -> Result<()> {
        if self.epochs == 0 || self.batch_size == 0 {
            bail!("{name}.epochs and {name}.batch_size must be at least 1");
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            bail!("{name}.lr = {}: must be positive", self.lr);
        }
        if !(0.0..=1.0).contains(&self.encoder_lr_ratio) {
            bail!(
                "{name}.encoder_lr_ratio = {}: must lie in [0, 1]",
                self.encoder_lr_ratio
            );
        }
        if !(self.layer_decay > 0.0 && self.layer_decay <= 1.0) {
            bail!(
                "{name}.layer_decay = {}: must lie in (0, 1]",
                self.layer_decay
            );
        }
        if self.projection_layers > 1 {
            bail!(
                "{name}.projection_layers = {}: 0 (the backbone) or 1 (through the projection \
                 head's first layer)",
                self.projection_layers
            );
        }
        if !matches!(self.choose_epoch.as_str(), "last" | "accuracy" | "loss") {
            bail!(
                "{name}.choose_epoch = \"{}\": expected \"last\", \"accuracy\" or \"loss\"",
                self.choose_epoch
            );
        }
        if !matches!(self.batch_norm.as_str(), "batch" | "frozen") {
            bail!(
                "{name}.batch_norm = \"{}\": expected \"batch\" or \"frozen\"",
                self.batch_norm
            );
        }
        Ok(())
    }

    /// The settings for an encoder that starts from fresh weights: it learns at the head's
    /// rate, every layer alike, without a probe stage, with batch statistics, and is the plain
    /// backbone (the supervised network a user would otherwise train).
    pub fn from_scratch(&self) -> FineTuneConfig {
        FineTuneConfig {
            encoder_lr_ratio: 1.0,
            layer_decay: 1.0,
            probe_steps: 0,
            batch_norm: "batch".into(),
            projection_layers: 0,
            ..self.clone()
        }
    }
}

/// Which rows the feature function is asked for, and how to present them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// Training rows of the training pool: the (weak) training augmentation of this epoch.
    Train { epoch: usize },
    /// Unlabelled rows of the training pool under FixMatch's strong augmentation.
    Strong { epoch: usize },
    /// Rows of the training pool without augmentation (validation, the teacher's labels, the
    /// probe stage).
    Plain,
    /// Test rows: no augmentation.
    Test,
}

/// Labelled rows of one run: indices into the training pool (`train`, `validation`) and into
/// the test set (`test`), with the labels of each pool.
#[derive(Debug, Clone, Copy)]
pub struct Rows<'a> {
    pub train: &'a [usize],
    pub validation: &'a [usize],
    pub pool_labels: &'a [u32],
    pub test: &'a [usize],
    pub test_labels: &'a [u32],
    pub classes: usize,
}

/// `[eval.fixmatch]`: the FixMatch arm of a label study (Sohn et al. 2020).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FixMatchConfig {
    /// Unlabelled images per labelled one in a step (µ; the paper's 7).
    pub unlabelled_ratio: usize,
    /// A weak view's top class probability must reach this for its pseudo-label to count (τ).
    pub threshold: f64,
    /// Weight of the unlabelled loss (λ_u).
    pub unlabelled_weight: f64,
}

impl Default for FixMatchConfig {
    fn default() -> Self {
        FixMatchConfig {
            unlabelled_ratio: 7,
            threshold: 0.95,
            unlabelled_weight: 1.0,
        }
    }
}

impl FixMatchConfig {
    pub fn validate(&self, name: &str) -> Result<()> {
        if self.unlabelled_ratio == 0 {
            bail!("{name}.unlabelled_ratio must be at least 1");
        }
        if !(0.0..=1.0).contains(&self.threshold) {
            bail!("{name}.threshold = {}: must lie in [0, 1]", self.threshold);
        }
        if !(self.unlabelled_weight >= 0.0 && self.unlabelled_weight.is_finite()) {
            bail!(
                "{name}.unlabelled_weight = {}: must be 0 or more",
                self.unlabelled_weight
            );
        }
        Ok(())
    }
}

/// What a run learns from besides the labelled rows.
#[derive(Debug, Clone, Copy)]
pub enum Unlabelled<'a> {
    /// Labels only: fine-tuning, training from scratch, the teacher.
    None,
    /// FixMatch: every step also takes `unlabelled_ratio` times the labelled batch from
    /// `rows`, and a weak view's confident prediction teaches the strong view of that image.
    FixMatch {
        rows: &'a [usize],
        config: &'a FixMatchConfig,
    },
    /// Distillation: the student learns the teacher's class probabilities (`teacher`,
    /// `[rows.len(), classes]` row-major, in the order of `rows`) on augmented views of every
    /// row; an epoch is a pass over `rows`.
    Distill {
        rows: &'a [usize],
        teacher: &'a [f32],
    },
}

/// What a run reached.
#[derive(Debug, Clone, Serialize)]
pub struct Trained {
    pub test_accuracy: f64,
    /// Accuracy on the validation rows at the chosen epoch (none without validation rows).
    pub validation_accuracy: Option<f64>,
    /// The epoch (from 1) whose weights were scored; the last one without validation rows.
    pub chosen_epoch: usize,
    pub epochs: usize,
    pub steps: usize,
    /// Steps of the linear probe before fine-tuning (LP-FT).
    #[serde(skip_serializing_if = "is_zero")]
    pub probe_steps: usize,
    /// FixMatch: the share of unlabelled views whose pseudo-label passed the threshold, and
    /// how many of those were right (the pool's labels, never used for training).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pseudo_label_rate: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pseudo_label_accuracy: Option<f64>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// A trained encoder and its head.
#[derive(Debug, Clone)]
pub struct Classifier<E> {
    pub encoder: E,
    pub head: Linear,
}

/// How one run trains: `features(encoder, rows, pass, device)` gives `[rows, feature_dim]`;
/// `lr_scale` multiplies the encoder's learning rate per parameter path (layer-wise decay).
pub struct Plan<'a, F> {
    pub feature_dim: usize,
    pub rows: Rows<'a>,
    pub features: F,
    pub config: &'a FineTuneConfig,
    pub unlabelled: Unlabelled<'a>,
    pub lr_scale: Option<&'a dyn Fn(&str) -> f64>,
    pub seed: u64,
}

/// FixMatch's targets from the weak views' class probabilities (`[n, classes]` row-major): a
/// one-hot row at the most probable class where that probability reaches `threshold`, a row of
/// zeros elsewhere; and each row's pseudo-label (`None` below the threshold).
pub fn pseudo_label_targets(
    probs: &[f32],
    classes: usize,
    threshold: f64,
) -> (Vec<f32>, Vec<Option<u32>>) {
    let mut targets = vec![0f32; probs.len()];
    let labels = probs
        .chunks_exact(classes)
        .enumerate()
        .map(|(i, row)| {
            let (best, p) =
                row.iter()
                    .enumerate()
                    .fold((0, f32::NEG_INFINITY), |(bi, bp), (c, &p)| {
                        if p > bp { (c, p) } else { (bi, bp) }
                    });
            (f64::from(p) >= threshold).then(|| {
                targets[i * classes + best] = 1.0;
                best as u32
            })
        })
        .collect();
    (targets, labels)
}

/// Batch norms in inference mode (their running statistics used and kept) while everything
/// else trains as before: `batch_norm = "frozen"`.
struct FreezeNormStatistics {
    types: Vec<String>,
}

impl ModuleMapper for FreezeNormStatistics {
    fn enter_module(&mut self, _: &str, container_type: &str) {
        self.types.push(container_type.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.types.pop();
    }
    fn map_flag(&mut self, flag: Param<Flag>) -> Param<Flag> {
        if self.types.last().is_some_and(|t| t.contains("BatchNorm")) {
            flag.with_value(false)
        } else {
            flag
        }
    }
}

/// The encoder with its batch norms' statistics frozen.
pub fn freeze_norm_statistics<E: Module>(encoder: E) -> E {
    encoder.map(&mut FreezeNormStatistics { types: Vec::new() })
}

/// A linear head fitted on the frozen `encoder`'s features of `rows.train` (in inference mode,
/// so nothing of the encoder changes, its batch-norm statistics included): LP-FT's first stage.
pub fn fit_head<E, F>(
    encoder: &E,
    head: Linear,
    plan: &Plan<F>,
    steps: usize,
    device: &Device,
) -> Result<Linear>
where
    E: Module + Clone,
    F: Fn(&E, &[usize], Pass, &Device) -> Result<Tensor<2>>,
{
    let rows = plan.rows;
    let plain = device.clone().without_autodiff();
    let frozen = encoder.valid();
    let mut cached = Vec::with_capacity(rows.train.len() * plan.feature_dim);
    for chunk in rows.train.chunks(256) {
        let f = (plan.features)(&frozen, chunk, Pass::Plain, &plain)?;
        cached.extend(
            f.into_data()
                .convert::<f32>()
                .try_to_vec::<f32>()
                .unwrap_or_default(),
        );
    }
    let mut head = head;
    let mut opt = Optimizer::new(adamw(plan.config.weight_decay));
    let batch = plan.config.batch_size.min(rows.train.len());
    let dim = plan.feature_dim;
    let mut step = 0;
    'outer: for epoch in 0.. {
        let order = epoch_order(rows.train.len(), mix_seed(&[plan.seed, 0x19FE]), epoch);
        for chunk in order.chunks(batch) {
            if step == steps {
                break 'outer;
            }
            let mut x = Vec::with_capacity(chunk.len() * dim);
            for &k in chunk {
                x.extend_from_slice(&cached[k * dim..(k + 1) * dim]);
            }
            let y: Vec<i64> = chunk
                .iter()
                .map(|&k| rows.pool_labels[rows.train[k]] as i64)
                .collect();
            let x = Tensor::<2>::from_data(TensorData::new(x, [chunk.len(), dim]), device);
            let y = Tensor::<1, Int>::from_data(TensorData::new(y, [chunk.len()]), device);
            let loss = cross_entropy(head.forward(x), y);
            let grads = GradientsParams::from_grads(loss.backward(), &head);
            head = opt.step(head, grads, cosine_lr(plan.config.lr, step, 0, steps));
            step += 1;
        }
    }
    Ok(head)
}

fn adamw(weight_decay: f64) -> OptimConfig {
    OptimConfig {
        kind: "adamw".into(),
        weight_decay,
        warmup_epochs: 0.0,
        ..OptimConfig::default()
    }
}

/// Train `encoder` with a fresh linear head as `plan` says (labels, plus FixMatch or
/// distillation on unlabelled rows). Evaluation passes get the encoder in inference mode
/// (`valid()`, batch norm on running statistics) and a device without autodiff. Returns the
/// model at the chosen epoch and what it scored.
pub fn train_classifier<E, F>(encoder: E, plan: Plan<F>) -> Result<(Classifier<E>, Trained)>
where
    E: Module + Clone,
    F: Fn(&E, &[usize], Pass, &Device) -> Result<Tensor<2>>,
{
    let (rows, config, seed) = (plan.rows, plan.config, plan.seed);
    let driving: &[usize] = match plan.unlabelled {
        Unlabelled::Distill { rows, teacher } => {
            if teacher.len() != rows.len() * plan.rows.classes {
                bail!(
                    "the teacher's probabilities cover {} values, not {} rows x {} classes",
                    teacher.len(),
                    rows.len(),
                    plan.rows.classes
                );
            }
            rows
        }
        _ => rows.train,
    };
    if driving.is_empty() || rows.test.is_empty() {
        bail!("training a classifier needs training rows and test rows");
    }
    let device = encoder.devices().first().cloned().unwrap_or_default();
    let plain = device.clone().without_autodiff();
    device.seed(mix_seed(&[seed, 0x4EAD]));
    let mut head: Linear = LinearConfig::new(plan.feature_dim, rows.classes).init(&device);
    let mut encoder = if config.batch_norm == "frozen" {
        freeze_norm_statistics(encoder)
    } else {
        encoder
    };
    // A distilled student learns no labels, so it has no probe to start from.
    let probe_steps = match plan.unlabelled {
        Unlabelled::Distill { .. } => 0,
        _ => config.probe_steps,
    };
    if probe_steps > 0 {
        head = fit_head(&encoder, head, &plan, probe_steps, &device)?;
    }
    let mut encoder_opt = Optimizer::new(adamw(config.weight_decay));
    let mut head_opt = Optimizer::new(adamw(config.weight_decay));

    let batch = config.batch_size.min(driving.len());
    let steps_per_epoch = driving.len().div_ceil(batch);
    let epochs = config
        .epochs
        .max(config.min_steps.div_ceil(steps_per_epoch));
    let total = epochs * steps_per_epoch;
    let warmup = total / 20;
    let features = &plan.features;

    // Accuracy and mean cross-entropy of `idx` under `pass`.
    let score = |encoder: &E, head: &Linear, idx: &[usize], pass: Pass| -> Result<(f64, f64)> {
        let (encoder, head) = (encoder.valid(), head.valid());
        let labels = if pass == Pass::Test {
            rows.test_labels
        } else {
            rows.pool_labels
        };
        let (mut correct, mut loss) = (0usize, 0f64);
        for chunk in idx.chunks(256) {
            let logits = head.forward(features(&encoder, chunk, pass, &plain)?);
            let y: Vec<i64> = chunk.iter().map(|&i| labels[i] as i64).collect();
            let y = Tensor::<1, Int>::from_data(TensorData::new(y, [chunk.len()]), &plain);
            loss += cross_entropy(logits.clone(), y).into_scalar::<f64>() * chunk.len() as f64;
            let pred = logits.argmax(1).into_data().convert::<i64>();
            let pred = pred.try_to_vec::<i64>().unwrap_or_default();
            correct += pred
                .iter()
                .zip(chunk)
                .filter(|(p, i)| **p == labels[**i] as i64)
                .count();
        }
        let n = idx.len().max(1) as f64;
        Ok((correct as f64 / n, loss / n))
    };
    let to_tensor = |values: Vec<f32>, n: usize| {
        Tensor::<2>::from_data(TensorData::new(values, [n, rows.classes]), &device)
    };

    // FixMatch cycles through the unlabelled rows at its own pace.
    let mut unlabelled_batches = Cycle::new(mix_seed(&[seed, 0x0C7C1E]));
    let (mut masked, mut confident, mut right) = (0usize, 0usize, 0usize);
    let mut best: Option<(f64, f64, usize, E, Linear)> = None;
    let mut step = 0;
    for epoch in 0..epochs {
        let order = epoch_order(driving.len(), mix_seed(&[seed, 0xF1E7]), epoch);
        for chunk in order.chunks(batch) {
            let idx: Vec<usize> = chunk.iter().map(|&k| driving[k]).collect();
            let logits = head.forward(features(&encoder, &idx, Pass::Train { epoch }, &device)?);
            let loss = match plan.unlabelled {
                Unlabelled::Distill { teacher, .. } => {
                    let soft: Vec<f32> = chunk
                        .iter()
                        .flat_map(|&k| &teacher[k * rows.classes..(k + 1) * rows.classes])
                        .copied()
                        .collect();
                    soft_cross_entropy(logits, to_tensor(soft, idx.len()))
                }
                Unlabelled::None => cross_entropy(logits, labels_of(&idx, rows, &device)),
                Unlabelled::FixMatch {
                    rows: pool,
                    config: fm,
                } => {
                    let supervised = cross_entropy(logits, labels_of(&idx, rows, &device));
                    let (u, view_epoch) =
                        unlabelled_batches.take(pool, fm.unlabelled_ratio * idx.len());
                    // Pseudo-labels come from the weak view alone, as a fixed target.
                    let weak = head
                        .forward(features(
                            &encoder,
                            &u,
                            Pass::Train { epoch: view_epoch },
                            &device,
                        )?)
                        .detach();
                    let probs = softmax(weak, 1).into_data().convert::<f32>();
                    let probs = probs.try_to_vec::<f32>().unwrap_or_default();
                    let (targets, labels) =
                        pseudo_label_targets(&probs, rows.classes, fm.threshold);
                    masked += u.len();
                    for (label, &i) in labels.iter().zip(&u) {
                        if let Some(l) = label {
                            confident += 1;
                            right += usize::from(*l == rows.pool_labels[i]);
                        }
                    }
                    let strong = head.forward(features(
                        &encoder,
                        &u,
                        Pass::Strong { epoch: view_epoch },
                        &device,
                    )?);
                    let unsupervised = soft_cross_entropy(strong, to_tensor(targets, u.len()));
                    supervised + unsupervised.mul_scalar(fm.unlabelled_weight)
                }
            };
            let value: f64 = loss.clone().into_scalar::<f64>();
            if !value.is_finite() {
                bail!(
                    "the classifier's loss became {value} at step {step}; try a lower eval.finetune.lr"
                );
            }
            let mut grads = loss.backward();
            let encoder_grads = GradientsParams::from_module(&mut grads, &encoder);
            let head_grads = GradientsParams::from_module(&mut grads, &head);
            let lr = cosine_lr(1.0, step, warmup, total);
            if config.encoder_lr_ratio > 0.0 {
                let encoder_lr = lr * config.lr * config.encoder_lr_ratio;
                encoder =
                    encoder_opt.step_scaled(encoder, encoder_grads, encoder_lr, plan.lr_scale);
            }
            head = head_opt.step(head, head_grads, lr * config.lr);
            step += 1;
        }
        if !rows.validation.is_empty() {
            let (accuracy, loss) = score(&encoder, &head, rows.validation, Pass::Plain)?;
            // Ties keep the later epoch: more training at the same validation score.
            let better = match best.as_ref() {
                None => true,
                Some(b) => match config.choose_epoch.as_str() {
                    "accuracy" => accuracy >= b.0,
                    "loss" => loss <= b.1,
                    _ => true,
                },
            };
            if better {
                best = Some((accuracy, loss, epoch, encoder.clone(), head.clone()));
            }
        }
    }
    let (validation_accuracy, chosen, encoder, head) = match best {
        Some((accuracy, _, epoch, e, h)) => (Some(accuracy), epoch, e, h),
        None => (None, epochs - 1, encoder, head),
    };
    let test_accuracy = score(&encoder, &head, rows.test, Pass::Test)?.0;
    let fixmatch = matches!(plan.unlabelled, Unlabelled::FixMatch { .. });
    Ok((
        Classifier { encoder, head },
        Trained {
            test_accuracy,
            validation_accuracy,
            chosen_epoch: chosen + 1,
            epochs,
            steps: step,
            probe_steps,
            pseudo_label_rate: fixmatch.then(|| confident as f64 / masked.max(1) as f64),
            pseudo_label_accuracy: (fixmatch && confident > 0)
                .then(|| right as f64 / confident as f64),
        },
    ))
}

/// Batches drawn in turn from a seeded shuffle of some rows, reshuffled on each pass.
struct Cycle {
    seed: u64,
    pass: usize,
    order: Vec<usize>,
    at: usize,
}

impl Cycle {
    fn new(seed: u64) -> Cycle {
        Cycle {
            seed,
            pass: 0,
            order: Vec::new(),
            at: 0,
        }
    }

    /// The next `n` rows (at most `rows.len()`), and the pass the batch started in (which
    /// seeds its augmentations).
    fn take(&mut self, rows: &[usize], n: usize) -> (Vec<usize>, usize) {
        let n = n.clamp(1, rows.len());
        if self.order.len() != rows.len() {
            self.order = epoch_order(rows.len(), self.seed, self.pass);
        }
        let pass = self.pass;
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            if self.at == self.order.len() {
                self.pass += 1;
                self.at = 0;
                self.order = epoch_order(rows.len(), self.seed, self.pass);
            }
            out.push(rows[self.order[self.at]]);
            self.at += 1;
        }
        (out, pass)
    }
}

fn labels_of(idx: &[usize], rows: Rows, device: &Device) -> Tensor<1, Int> {
    let y: Vec<i64> = idx.iter().map(|&i| rows.pool_labels[i] as i64).collect();
    Tensor::<1, Int>::from_data(TensorData::new(y, [idx.len()]), device)
}

/// The class probabilities of `classifier` on the `rows` of the pool (no augmentation, inference
/// mode), `[rows, classes]` row-major, at `temperature`: a distillation teacher's soft labels.
pub fn soft_labels<E, F>(
    classifier: &Classifier<E>,
    rows: &[usize],
    features: F,
    temperature: f64,
    device: &Device,
) -> Result<Vec<f32>>
where
    E: Module + Clone,
    F: Fn(&E, &[usize], Pass, &Device) -> Result<Tensor<2>>,
{
    let plain = device.clone().without_autodiff();
    let (encoder, head) = (classifier.encoder.valid(), classifier.head.valid());
    let mut out = Vec::new();
    for chunk in rows.chunks(256) {
        let logits = head.forward(features(&encoder, chunk, Pass::Plain, &plain)?);
        let probs = softmax(logits.div_scalar(temperature), 1)
            .into_data()
            .convert::<f32>();
        out.extend(probs.try_to_vec::<f32>().unwrap_or_default());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;
    use burn::nn::{BatchNorm, BatchNormConfig};

    /// Three classes of points on a circle; the "encoder" is a linear map to 4 features.
    fn circle(n: usize) -> (Vec<f32>, Vec<u32>) {
        let mut x = Vec::new();
        let mut y = Vec::new();
        for i in 0..n {
            let class = i % 3;
            let angle = class as f32 * 2.1 + (i as f32 * 0.013).sin() * 0.3;
            x.extend([angle.cos(), angle.sin()]);
            y.push(class as u32);
        }
        (x, y)
    }

    /// The rows of a study on the circle: the pool and the test set are the same points.
    fn circle_rows<'a>(
        y: &'a [u32],
        train: &'a [usize],
        validation: &'a [usize],
        test: &'a [usize],
    ) -> Rows<'a> {
        Rows {
            train,
            validation,
            pool_labels: y,
            test,
            test_labels: y,
            classes: 3,
        }
    }

    fn points(x: &[f32], idx: &[usize], device: &Device) -> Tensor<2> {
        let v: Vec<f32> = idx.iter().flat_map(|&i| [x[2 * i], x[2 * i + 1]]).collect();
        Tensor::from_data(TensorData::new(v, [idx.len(), 2]), device)
    }

    fn weights(e: &Linear) -> Vec<f32> {
        e.weight.val().into_data().try_to_vec::<f32>().unwrap()
    }

    fn small_config() -> FineTuneConfig {
        FineTuneConfig {
            epochs: 5,
            min_steps: 60,
            batch_size: 16,
            lr: 0.05,
            encoder_lr_ratio: 0.5,
            ..FineTuneConfig::default()
        }
    }

    #[test]
    fn trains_encoder_and_head_and_frozen_encoder_stays() {
        let (x, y) = circle(90);
        let train: Vec<usize> = (0..60).collect();
        let validation: Vec<usize> = (60..75).collect();
        let test: Vec<usize> = (75..90).collect();
        let rows = circle_rows(&y, &train, &validation, &test);
        let features = |e: &Linear, idx: &[usize], _: Pass, device: &Device| {
            Ok(e.forward(points(&x, idx, device)))
        };
        let device = Device::flex().autodiff();
        device.seed(5);
        let encoder: Linear = LinearConfig::new(2, 4).init(&device);
        let before = weights(&encoder);
        let config = small_config();
        let plan = |config| Plan {
            feature_dim: 4,
            rows,
            features,
            config,
            unlabelled: Unlabelled::None,
            lr_scale: None,
            seed: 1,
        };
        let (tuned, trained) = train_classifier(encoder.clone(), plan(&config)).unwrap();
        assert!(trained.test_accuracy > 0.9, "{trained:?}");
        assert_eq!(trained.steps, trained.epochs * 4);
        assert!(
            trained.epochs >= 15,
            "min_steps raises the epochs: {trained:?}"
        );
        assert!(trained.validation_accuracy.is_some());
        assert!(
            weights(&tuned.encoder)
                .iter()
                .zip(&before)
                .any(|(a, b)| (a - b).abs() > 1e-4),
            "fine-tuning moves the encoder"
        );
        let frozen = FineTuneConfig {
            encoder_lr_ratio: 0.0,
            ..config.clone()
        };
        let (kept, _) = train_classifier(encoder.clone(), plan(&frozen)).unwrap();
        assert_eq!(
            weights(&kept.encoder),
            before,
            "a zero ratio leaves the encoder alone"
        );
        // Layer-wise decay scales the encoder's steps by path: a zero scale freezes it too.
        let zero = |_: &str| 0.0;
        let (scaled, _) = train_classifier(
            encoder,
            Plan {
                lr_scale: Some(&zero),
                ..plan(&config)
            },
        )
        .unwrap();
        assert_eq!(
            weights(&scaled.encoder),
            before,
            "lr_scale reaches the encoder"
        );
    }

    /// An encoder with a batch norm, to see its statistics.
    #[derive(Module, Debug)]
    struct Normed {
        linear: Linear,
        norm: BatchNorm,
    }

    impl Normed {
        fn forward(&self, x: Tensor<2>) -> Tensor<2> {
            self.norm.forward(self.linear.forward(x))
        }
        fn state(&self) -> Vec<f32> {
            let mut v = weights(&self.linear);
            v.extend(
                self.norm
                    .running_mean
                    .value()
                    .into_data()
                    .try_to_vec::<f32>()
                    .unwrap(),
            );
            v.extend(
                self.norm
                    .running_var
                    .value()
                    .into_data()
                    .try_to_vec::<f32>()
                    .unwrap(),
            );
            v.extend(
                self.norm
                    .gamma
                    .val()
                    .into_data()
                    .try_to_vec::<f32>()
                    .unwrap(),
            );
            v
        }
    }

    #[test]
    fn the_probe_stage_leaves_the_encoder_and_its_statistics_unchanged() {
        let (x, y) = circle(90);
        let train: Vec<usize> = (0..60).collect();
        let test: Vec<usize> = (60..90).collect();
        let rows = circle_rows(&y, &train, &[], &test);
        let device = Device::flex().autodiff();
        device.seed(3);
        let encoder = Normed {
            linear: LinearConfig::new(2, 4).init(&device),
            norm: BatchNormConfig::new(4).init(&device),
        };
        let before = encoder.state();
        let features = |e: &Normed, idx: &[usize], _: Pass, device: &Device| {
            Ok(e.forward(points(&x, idx, device)))
        };
        let config = FineTuneConfig {
            probe_steps: 200,
            ..small_config()
        };
        let plan = Plan {
            feature_dim: 4,
            rows,
            features,
            config: &config,
            unlabelled: Unlabelled::None,
            lr_scale: None,
            seed: 1,
        };
        let head: Linear = LinearConfig::new(4, 3).init(&device);
        let head_before = weights(&head);
        let head = fit_head(&encoder, head, &plan, 200, &device).unwrap();
        assert_eq!(
            encoder.state(),
            before,
            "weights and running statistics kept"
        );
        assert_ne!(weights(&head), head_before, "the head learned");
        // The whole LP-FT run then moves the encoder, and reports its probe stage.
        let (tuned, trained) = train_classifier(encoder.clone(), plan).unwrap();
        assert_eq!(trained.probe_steps, 200);
        assert!(trained.test_accuracy > 0.9, "{trained:?}");
        assert_ne!(tuned.encoder.state(), before);

        // Frozen batch-norm statistics: scale and shift learn, the running statistics stay.
        let frozen = FineTuneConfig {
            batch_norm: "frozen".into(),
            probe_steps: 0,
            ..small_config()
        };
        let stats = |e: &Normed| {
            let mut v = e
                .norm
                .running_mean
                .value()
                .into_data()
                .try_to_vec::<f32>()
                .unwrap();
            v.extend(
                e.norm
                    .running_var
                    .value()
                    .into_data()
                    .try_to_vec::<f32>()
                    .unwrap(),
            );
            v
        };
        let (tuned, _) = train_classifier(
            encoder.clone(),
            Plan {
                feature_dim: 4,
                rows,
                features,
                config: &frozen,
                unlabelled: Unlabelled::None,
                lr_scale: None,
                seed: 1,
            },
        )
        .unwrap();
        assert_eq!(stats(&tuned.encoder), stats(&encoder));
        assert_ne!(
            tuned
                .encoder
                .norm
                .gamma
                .val()
                .into_data()
                .try_to_vec::<f32>()
                .unwrap(),
            encoder
                .norm
                .gamma
                .val()
                .into_data()
                .try_to_vec::<f32>()
                .unwrap()
        );
    }

    #[test]
    fn pseudo_labels_only_above_the_threshold() {
        let probs = [0.96, 0.02, 0.02, 0.5, 0.4, 0.1, 0.01, 0.01, 0.98];
        let (targets, labels) = pseudo_label_targets(&probs, 3, 0.95);
        assert_eq!(labels, vec![Some(0), None, Some(2)]);
        assert_eq!(targets, vec![1., 0., 0., 0., 0., 0., 0., 0., 1.]);
        let (_, all) = pseudo_label_targets(&probs, 3, 0.0);
        assert_eq!(all, vec![Some(0), Some(0), Some(2)]);
    }

    #[test]
    fn fixmatch_labels_weak_views_and_teaches_strong_ones() {
        let (x, y) = circle(300);
        let train: Vec<usize> = (0..9).collect();
        let pool: Vec<usize> = (0..240).collect();
        let test: Vec<usize> = (240..300).collect();
        let rows = circle_rows(&y, &train, &[], &test);
        let seen = RefCell::new(Vec::<(Pass, Vec<usize>)>::new());
        // A strong view shows nothing (the origin): pseudo-labels read off it would be one
        // class for every image, right a third of the time; off the weak views nearly always.
        let features = |e: &Linear, idx: &[usize], pass: Pass, device: &Device| {
            seen.borrow_mut().push((pass, idx.to_vec()));
            let x = points(&x, idx, device);
            let x = match pass {
                Pass::Strong { .. } => x.zeros_like(),
                _ => x,
            };
            Ok(e.forward(x))
        };
        let device = Device::flex().autodiff();
        device.seed(7);
        let encoder: Linear = LinearConfig::new(2, 4).init(&device);
        let fixmatch = FixMatchConfig {
            threshold: 0.0,
            ..FixMatchConfig::default()
        };
        let config = small_config();
        let (_, trained) = train_classifier(
            encoder,
            Plan {
                feature_dim: 4,
                rows,
                features,
                config: &config,
                unlabelled: Unlabelled::FixMatch {
                    rows: &pool,
                    config: &fixmatch,
                },
                lr_scale: None,
                seed: 2,
            },
        )
        .unwrap();
        assert_eq!(
            trained.pseudo_label_rate,
            Some(1.0),
            "threshold 0 takes all"
        );
        let right = trained.pseudo_label_accuracy.unwrap();
        assert!(right > 0.8, "pseudo-labels come from weak views: {right}");
        let seen = seen.into_inner();
        let strong: Vec<&Vec<usize>> = seen
            .iter()
            .filter(|(p, _)| matches!(p, Pass::Strong { .. }))
            .map(|(_, i)| i)
            .collect();
        assert_eq!(strong.len(), trained.steps, "one strong batch a step");
        assert!(
            strong.iter().all(|b| b.len() == 7 * 9),
            "µ x the labelled batch"
        );
        assert!(
            strong
                .iter()
                .flat_map(|b| b.iter())
                .all(|i| pool.contains(i))
        );
    }

    #[test]
    fn a_student_learns_from_soft_labels_on_every_unlabelled_row_and_no_test_row() {
        let (x, y) = circle(300);
        let train: Vec<usize> = (0..9).collect();
        let validation: Vec<usize> = (9..15).collect();
        let pool: Vec<usize> = (15..240).collect();
        let test: Vec<usize> = (240..300).collect();
        let rows = circle_rows(&y, &train, &validation, &test);
        let seen = RefCell::new(Vec::<(Pass, Vec<usize>)>::new());
        let features = |e: &Linear, idx: &[usize], pass: Pass, device: &Device| {
            seen.borrow_mut().push((pass, idx.to_vec()));
            Ok(e.forward(points(&x, idx, device)))
        };
        // A teacher that knows the classes (the true labels, softened).
        let teacher: Vec<f32> = pool
            .iter()
            .flat_map(|&i| {
                let label = y[i];
                (0..3).map(move |c| if label == c { 0.8 } else { 0.1 })
            })
            .collect();
        let device = Device::flex().autodiff();
        device.seed(9);
        let encoder: Linear = LinearConfig::new(2, 4).init(&device);
        let config = FineTuneConfig {
            min_steps: 40,
            ..small_config()
        };
        let (_, trained) = train_classifier(
            encoder,
            Plan {
                feature_dim: 4,
                rows,
                features,
                config: &config,
                unlabelled: Unlabelled::Distill {
                    rows: &pool,
                    teacher: &teacher,
                },
                lr_scale: None,
                seed: 4,
            },
        )
        .unwrap();
        assert!(trained.test_accuracy > 0.9, "{trained:?}");
        let seen = seen.into_inner();
        let mut taught: Vec<usize> = seen
            .iter()
            .filter(|(p, _)| matches!(p, Pass::Train { epoch: 0 }))
            .flat_map(|(_, i)| i.clone())
            .collect();
        taught.sort_unstable();
        assert_eq!(taught, pool, "each epoch covers every unlabelled row once");
        let first_test = seen.iter().position(|(p, _)| *p == Pass::Test).unwrap();
        assert!(
            seen[first_test..].iter().all(|(p, _)| *p == Pass::Test),
            "test rows are only scored, after all training"
        );
        assert!(
            seen.iter()
                .filter(|(p, _)| *p == Pass::Plain)
                .all(|(_, i)| i.iter().all(|r| validation.contains(r))),
            "plain pool rows seen are validation rows only"
        );
    }
}
