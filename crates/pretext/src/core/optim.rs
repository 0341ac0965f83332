//! Optimizers (SGD with momentum, AdamW, LARS) and the learning-rate schedule.
//!
//! Written here rather than taken from burn because SSL recipes need things burn's optimizers
//! lack: LARS, no weight decay or LARS adaptation for biases and norm parameters (every rank-1
//! parameter), and optimizer state keyed by parameter *path*, so a checkpoint written by one
//! process restores exactly in another. All updates work on flattened tensors.

use std::collections::BTreeMap;

use anyhow::{Result, bail};
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::core::kernels::{self, adamw::AdamwScalars};

/// `[optimizer]` table of a config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimConfig {
    /// `sgd`, `adamw` or `lars`.
    pub kind: String,
    /// Peak learning rate, reached at the end of warm-up.
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// LARS trust coefficient (eta).
    pub trust_coefficient: f64,
    pub warmup_epochs: f64,
    /// Warm-up in optimizer steps; when positive it replaces `warmup_epochs` (Hugging Face's
    /// `warmup_steps`).
    pub warmup_steps: usize,
    /// Decay after warm-up: `cosine` (SSL recipes) or `linear` to zero (BERT, `run_mlm.py`).
    pub schedule: String,
    /// Clip the global gradient norm to this value; 0 disables clipping.
    pub grad_clip: f64,
}

impl Default for OptimConfig {
    fn default() -> Self {
        OptimConfig {
            kind: "adamw".into(),
            lr: 1e-3,
            momentum: 0.9,
            weight_decay: 1e-6,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            trust_coefficient: 1e-3,
            warmup_epochs: 1.0,
            warmup_steps: 0,
            schedule: "cosine".into(),
            grad_clip: 0.0,
        }
    }
}

impl OptimConfig {
    pub fn validate(&self) -> Result<()> {
        if !matches!(self.kind.as_str(), "sgd" | "adamw" | "lars") {
            bail!(
                "optimizer.kind = \"{}\": expected \"sgd\", \"adamw\" or \"lars\"",
                self.kind
            );
        }
        if !matches!(self.schedule.as_str(), "cosine" | "linear") {
            bail!(
                "optimizer.schedule = \"{}\": expected \"cosine\" or \"linear\"",
                self.schedule
            );
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            bail!("optimizer.lr = {}: must be a positive number", self.lr);
        }
        if self.weight_decay < 0.0 || self.grad_clip < 0.0 || self.warmup_epochs < 0.0 {
            bail!("optimizer.weight_decay, grad_clip and warmup_epochs must not be negative");
        }
        Ok(())
    }
}

impl OptimConfig {
    /// Warm-up steps of a run with `steps_per_epoch`.
    pub fn warmup_steps_for(&self, steps_per_epoch: usize) -> usize {
        if self.warmup_steps > 0 {
            self.warmup_steps
        } else {
            (self.warmup_epochs * steps_per_epoch as f64).round() as usize
        }
    }

    /// Learning rate at `step` (0-based) of `total_steps`, after `warmup_steps` of linear warm-up.
    pub fn lr_at(&self, step: usize, warmup_steps: usize, total_steps: usize) -> f64 {
        match self.schedule.as_str() {
            "linear" => linear_lr(self.lr, step, warmup_steps, total_steps),
            _ => cosine_lr(self.lr, step, warmup_steps, total_steps),
        }
    }
}

impl OptimConfig {
    /// Learning rate of a run on a wall-clock budget (`train.budget_minutes`) at `step`, with
    /// `progress` (0 to 1) of the budget spent: the warm-up counts steps as usual, and the
    /// decay follows the budget, so that the rate reaches zero as the time runs out, however
    /// many steps that turns out to be.
    pub fn lr_at_progress(&self, step: usize, warmup_steps: usize, progress: f64) -> f64 {
        let p = progress.clamp(0.0, 1.0);
        match self.schedule.as_str() {
            "linear" => {
                let warm = if step < warmup_steps {
                    step as f64 / warmup_steps as f64
                } else {
                    1.0
                };
                self.lr * warm * (1.0 - p)
            }
            _ => {
                let warm = ((step + 1) as f64 / warmup_steps.max(1) as f64).min(1.0);
                self.lr * warm * 0.5 * (1.0 + (std::f64::consts::PI * p).cos())
            }
        }
    }
}

/// Linear warm-up to the peak, then linear decay to zero at `total_steps` (Hugging Face's
/// `get_linear_schedule_with_warmup`, which starts its warm-up at 0 rather than one step in).
pub fn linear_lr(peak: f64, step: usize, warmup_steps: usize, total_steps: usize) -> f64 {
    if step < warmup_steps {
        return peak * step as f64 / warmup_steps as f64;
    }
    let span = total_steps.saturating_sub(warmup_steps).max(1) as f64;
    peak * (total_steps.saturating_sub(step) as f64 / span).clamp(0.0, 1.0)
}

/// Linear warm-up to the peak, then a half cosine to zero.
pub fn cosine_lr(peak: f64, step: usize, warmup_steps: usize, total_steps: usize) -> f64 {
    if step < warmup_steps {
        return peak * (step + 1) as f64 / warmup_steps as f64;
    }
    let span = total_steps.saturating_sub(warmup_steps).max(1) as f64;
    let t = ((step - warmup_steps) as f64 / span).min(1.0);
    peak * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
}

/// Per-parameter state: momentum (all kinds) and second moment (AdamW).
#[derive(Clone, Debug)]
struct Slot {
    first: Tensor<1>,
    second: Option<Tensor<1>>,
    /// Updates this parameter has had: AdamW's bias correction counts them per parameter, as
    /// PyTorch does, so a parameter that starts learning late (DINO's and SwAV's prototypes,
    /// frozen for the first epoch) gets corrected first steps, not steps about 3x too large.
    updates: u64,
}

/// The optimizer, its per-path state, and its step count.
#[derive(Clone, Debug)]
pub struct Optimizer {
    config: OptimConfig,
    slots: BTreeMap<String, Slot>,
    steps: u64,
}

/// Collects `(id, rank)` of every float parameter.
#[derive(Default)]
struct Params {
    found: Vec<(ParamId, usize)>,
}

impl ModuleVisitor for Params {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.found.push((param.id, D));
    }
}

struct Update<'a> {
    opt: &'a mut Optimizer,
    grads: GradientsParams,
    lr: f64,
    grad_scale: f64,
    /// Multiplies `lr` per parameter path (layer-wise learning-rate decay); `None`: 1.
    lr_scale: Option<&'a dyn Fn(&str) -> f64>,
    stack: Vec<String>,
}

impl ModuleMapper for Update<'_> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.stack.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.stack.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some(grad) = self.grads.remove::<D>(param.id) else {
            return param;
        };
        let path = self.stack.join(".");
        let lr = self.lr * self.lr_scale.map_or(1.0, |f| f(&path));
        let scale = self.grad_scale;
        let opt = &mut *self.opt;
        param.map(|value| {
            let require_grad = value.is_require_grad();
            let dims = value.dims();
            let flat = value.detach().inner().reshape([-1]);
            let g = grad.detach().inner().reshape([-1]);
            // Biases and normalisation parameters are rank 1: no decay, no LARS adaptation.
            let decayed = D > 1;
            let updated = opt.update(&path, flat, g, scale, lr, decayed).reshape(dims);
            let updated = Tensor::from_inner(updated);
            if require_grad {
                updated.require_grad()
            } else {
                updated
            }
        })
    }
}

/// AdamW's update of `p` from its gradient and moments at update number `t`: the fused kernel
/// where it runs, [`adamw_tensor_ops`] elsewhere. Returns the new `(p, m, v)`.
#[allow(clippy::too_many_arguments)]
fn adamw(
    p: &Tensor<1>,
    g: &Tensor<1>,
    m: &Tensor<1>,
    v: &Tensor<1>,
    grad_scale: f64,
    c: &OptimConfig,
    t: i32,
    lr: f64,
    wd: f64,
) -> (Tensor<1>, Tensor<1>, Tensor<1>) {
    // Each scalar converted to f32 as the tensor ops convert theirs, so both agree.
    let scalars = AdamwScalars {
        grad_scale: grad_scale as f32,
        beta1: c.beta1 as f32,
        one_minus_beta1: (1.0 - c.beta1) as f32,
        beta2: c.beta2 as f32,
        one_minus_beta2: (1.0 - c.beta2) as f32,
        bias1: (1.0 - c.beta1.powi(t)) as f32,
        bias2: (1.0 - c.beta2.powi(t)) as f32,
        eps: c.eps as f32,
        lr: lr as f32,
        decay: (wd > 0.0).then_some((1.0 - lr * wd) as f32),
    };
    kernels::adamw_step(p, g, m, v, scalars)
        .unwrap_or_else(|| adamw_tensor_ops(p.clone(), g.clone(), m.clone(), v.clone(), scalars))
}

/// AdamW as tensor ops, for backends without the kernel:
/// `m ← β₁m + (1−β₁)g`, `v ← β₂v + (1−β₂)g²`, `p ← p·(1 − lr·wd) − lr·m̂ / (√v̂ + ε)`.
fn adamw_tensor_ops(
    p: Tensor<1>,
    g: Tensor<1>,
    m: Tensor<1>,
    v: Tensor<1>,
    s: AdamwScalars,
) -> (Tensor<1>, Tensor<1>, Tensor<1>) {
    let g = if s.grad_scale != 1.0 {
        g.mul_scalar(s.grad_scale)
    } else {
        g
    };
    let m = m.mul_scalar(s.beta1) + g.clone().mul_scalar(s.one_minus_beta1);
    let v = v.mul_scalar(s.beta2) + (g.clone() * g).mul_scalar(s.one_minus_beta2);
    let m_hat = m.clone().div_scalar(s.bias1);
    let v_hat = v.clone().div_scalar(s.bias2);
    let p = match s.decay {
        Some(d) => p.mul_scalar(d),
        None => p,
    };
    let p = p - m_hat.div(v_hat.sqrt().add_scalar(s.eps)).mul_scalar(s.lr);
    (p, m, v)
}

impl Optimizer {
    pub fn new(config: OptimConfig) -> Self {
        Optimizer {
            config,
            slots: BTreeMap::new(),
            steps: 0,
        }
    }

    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// One update of the flattened parameter at `path` with gradient `g` (multiplied by
    /// `grad_scale` first: gradient clipping).
    fn update(
        &mut self,
        path: &str,
        p: Tensor<1>,
        g: Tensor<1>,
        grad_scale: f64,
        lr: f64,
        decayed: bool,
    ) -> Tensor<1> {
        let c = &self.config;
        let wd = if decayed { c.weight_decay } else { 0.0 };
        let slot = self.slots.entry(path.to_string()).or_insert_with(|| Slot {
            first: g.zeros_like(),
            second: (c.kind == "adamw").then(|| g.zeros_like()),
            updates: 0,
        });
        slot.updates += 1;
        if c.kind == "adamw" {
            let t = slot.updates.min(i32::MAX as u64) as i32;
            let second = slot.second.take().unwrap_or_else(|| g.zeros_like());
            let (p, m, v) = adamw(&p, &g, &slot.first, &second, grad_scale, c, t, lr, wd);
            slot.first = m;
            slot.second = Some(v);
            return p;
        }
        let g = if grad_scale != 1.0 {
            g.mul_scalar(grad_scale)
        } else {
            g
        };
        match c.kind.as_str() {
            "lars" => {
                let g = if wd > 0.0 {
                    g + p.clone().mul_scalar(wd)
                } else {
                    g
                };
                let step = if decayed {
                    // trust = eta * |p| / |g|, falling back to 1 when either norm is zero.
                    let pn = p.clone().powi_scalar(2).sum().sqrt();
                    let gn = g.clone().powi_scalar(2).sum().sqrt();
                    let ratio =
                        pn.clone().mul_scalar(c.trust_coefficient) / gn.clone().clamp_min(1e-12);
                    let ok = pn.greater_elem(0.0).bool_and(gn.greater_elem(0.0));
                    let trust = ratio.ones_like().mask_where(ok, ratio);
                    g * trust.mul_scalar(lr)
                } else {
                    g.mul_scalar(lr)
                };
                let m = slot.first.clone().mul_scalar(c.momentum) + step;
                slot.first = m.clone();
                p - m
            }
            _ => {
                let g = if wd > 0.0 {
                    g + p.clone().mul_scalar(wd)
                } else {
                    g
                };
                let m = slot.first.clone().mul_scalar(c.momentum) + g;
                slot.first = m.clone();
                p - m.mul_scalar(lr)
            }
        }
    }

    /// Apply one update to every parameter of `model` that has a gradient in `grads`.
    pub fn step<M: Module>(&mut self, model: M, grads: GradientsParams, lr: f64) -> M {
        self.step_scaled(model, grads, lr, None)
    }

    /// [`Optimizer::step`] with each parameter's learning rate multiplied by `lr_scale` of its
    /// module path (`stage2.conv.weight`), as layer-wise decay needs.
    pub fn step_scaled<M: Module>(
        &mut self,
        model: M,
        grads: GradientsParams,
        lr: f64,
        lr_scale: Option<&dyn Fn(&str) -> f64>,
    ) -> M {
        let grad_scale = if self.config.grad_clip > 0.0 {
            let norm = global_norm(&model, &grads);
            (self.config.grad_clip / (norm + 1e-6)).min(1.0)
        } else {
            1.0
        };
        let model = model.map(&mut Update {
            opt: self,
            grads,
            lr,
            grad_scale,
            lr_scale,
            stack: Vec::new(),
        });
        self.steps += 1;
        model
    }

    /// State as named flat tensors, for checkpoints.
    pub fn state_tensors(&self) -> Vec<(String, Vec<f32>)> {
        let mut out = Vec::new();
        for (path, slot) in &self.slots {
            out.push((format!("{path}#first"), to_vec(&slot.first)));
            if let Some(s) = &slot.second {
                out.push((format!("{path}#second"), to_vec(s)));
            }
            // Exact in f32 up to 2^24 updates.
            out.push((format!("{path}#updates"), vec![slot.updates as f32]));
        }
        out
    }

    /// Restore state written by [`Self::state_tensors`].
    pub fn load_state(
        &mut self,
        steps: u64,
        tensors: Vec<(String, Vec<f32>)>,
        device: &Device,
    ) -> Result<()> {
        self.steps = steps;
        self.slots.clear();
        for (name, values) in tensors {
            let Some((path, which)) = name.rsplit_once('#') else {
                bail!("optimizer state entry '{name}' has no '#first'/'#second' suffix");
            };
            let n = values.len();
            let t = Tensor::<1>::from_data(TensorData::new(values, [n]), device);
            let slot = self.slots.entry(path.to_string()).or_insert_with(|| Slot {
                first: t.zeros_like(),
                second: None,
                // Checkpoints from before per-parameter counts: every parameter was updated at
                // every step.
                updates: steps,
            });
            match which {
                "first" => slot.first = t,
                "second" => slot.second = Some(t),
                "updates" => slot.updates = values_first(&t) as u64,
                other => bail!("optimizer state entry '{name}': unknown part '{other}'"),
            }
        }
        Ok(())
    }
}

fn values_first(t: &Tensor<1>) -> f32 {
    to_vec(t).first().copied().unwrap_or(0.0)
}

fn to_vec(t: &Tensor<1>) -> Vec<f32> {
    t.clone()
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .unwrap_or_default()
}

/// L2 norm of all gradients together.
fn global_norm<M: Module>(model: &M, grads: &GradientsParams) -> f64 {
    let mut params = Params::default();
    model.visit(&mut params);
    let mut total: Option<Tensor<1>> = None;
    for (id, rank) in params.found {
        if let Some(sq) = grad_sq_sum(grads, id, rank) {
            total = Some(match total {
                Some(t) => t + sq,
                None => sq,
            });
        }
    }
    total.map_or(0.0, |t| (t.into_scalar::<f64>()).sqrt())
}

/// Sum of squares of one gradient; the rank must be the parameter's (burn stores gradients typed).
fn grad_sq_sum(grads: &GradientsParams, id: ParamId, rank: usize) -> Option<Tensor<1>> {
    fn flat<const D: usize>(grads: &GradientsParams, id: ParamId) -> Option<Tensor<1>> {
        grads
            .get::<D>(id)
            .map(|g| g.inner().reshape([-1]).powi_scalar(2).sum())
    }
    match rank {
        1 => flat::<1>(grads, id),
        2 => flat::<2>(grads, id),
        3 => flat::<3>(grads, id),
        4 => flat::<4>(grads, id),
        5 => flat::<5>(grads, id),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::{Linear, LinearConfig};

    fn weights(m: &Linear) -> Vec<f32> {
        m.weight.val().into_data().try_to_vec::<f32>().unwrap()
    }

    fn grads_of(model: &Linear, device: &Device) -> GradientsParams {
        let x = Tensor::<2>::ones([1, 2], device);
        GradientsParams::from_grads(model.forward(x).sum().backward(), model)
    }

    #[test]
    fn linear_schedule_matches_hugging_face() {
        // get_linear_schedule_with_warmup(warmup 10, total 110) at peak 1: step / 10 during
        // warm-up, then (110 - step) / 100.
        let config = OptimConfig {
            lr: 1.0,
            schedule: "linear".into(),
            ..Default::default()
        };
        for (step, expected) in [
            (0, 0.0),
            (5, 0.5),
            (10, 1.0),
            (60, 0.5),
            (109, 0.01),
            (110, 0.0),
        ] {
            let lr = config.lr_at(step, 10, 110);
            assert!((lr - expected).abs() < 1e-12, "step {step}: {lr}");
        }
        let cosine = OptimConfig {
            lr: 1.0,
            ..Default::default()
        };
        assert!((cosine.lr_at(60, 10, 110) - 0.5).abs() < 1e-12);
        assert!(
            (cosine.lr_at(35, 10, 110) - 0.5 * (1.0 + (0.25 * std::f64::consts::PI).cos())).abs()
                < 1e-12
        );
        assert_eq!(config.warmup_steps_for(7), 7);
        assert_eq!(
            OptimConfig {
                warmup_steps: 3,
                ..config
            }
            .warmup_steps_for(7),
            3
        );
    }

    #[test]
    fn sgd_momentum_follows_its_formula() {
        let device = Device::flex().autodiff();
        let model: Linear = LinearConfig::new(2, 1).init(&device);
        let w0 = weights(&model);
        let config = OptimConfig {
            kind: "sgd".into(),
            weight_decay: 0.1,
            momentum: 0.9,
            ..Default::default()
        };
        let mut opt = Optimizer::new(config);
        // d(sum(xW + b))/dW = 1 for x = ones.
        let model = opt.step(model.clone(), grads_of(&model, &device), 0.5);
        let w1 = weights(&model);
        for (a, b) in w1.iter().zip(&w0) {
            assert!((a - (b - 0.5 * (1.0 + 0.1 * b))).abs() < 1e-6);
        }
        let model = opt.step(model.clone(), grads_of(&model, &device), 0.5);
        let w2 = weights(&model);
        for ((c, b), a) in w2.iter().zip(&w1).zip(&w0) {
            let m1 = 1.0 + 0.1 * a;
            let m2 = 0.9 * m1 + (1.0 + 0.1 * b);
            assert!((c - (b - 0.5 * m2)).abs() < 1e-5);
        }
        // The updated model still trains: its parameters require gradients.
        assert!(model.weight.val().is_require_grad());
    }

    /// The fused AdamW kernel and the tensor ops agree over several steps, with gradient
    /// scaling and weight decay.
    #[test]
    fn adamw_kernel_matches_the_tensor_ops() {
        let device = Device::flex();
        device.seed(4);
        let random = || {
            Tensor::<1>::random(
                [1000],
                burn::tensor::Distribution::Normal(0.0, 1.0),
                &device,
            )
        };
        let c = OptimConfig {
            weight_decay: 0.05,
            beta2: 0.98,
            ..Default::default()
        };
        let start = random();
        let (mut fused, mut ops) = (
            (start.clone(), start.zeros_like(), start.zeros_like()),
            (start.clone(), start.zeros_like(), start.zeros_like()),
        );
        for t in 1..=5 {
            let g = random();
            let (p, m, v) = fused;
            fused = adamw(&p, &g, &m, &v, 0.7, &c, t, 0.01, c.weight_decay);
            let (p, m, v) = ops;
            let scalars = AdamwScalars {
                grad_scale: 0.7,
                beta1: c.beta1 as f32,
                one_minus_beta1: (1.0 - c.beta1) as f32,
                beta2: c.beta2 as f32,
                one_minus_beta2: (1.0 - c.beta2) as f32,
                bias1: (1.0 - c.beta1.powi(t)) as f32,
                bias2: (1.0 - c.beta2.powi(t)) as f32,
                eps: c.eps as f32,
                lr: 0.01,
                decay: Some((1.0 - 0.01 * c.weight_decay) as f32),
            };
            ops = adamw_tensor_ops(p, g, m, v, scalars);
        }
        let moved = (fused.0.clone() - start).abs().max().into_scalar::<f32>();
        assert!(
            moved > 0.01,
            "five steps of lr 0.01 moved the parameter by {moved}"
        );
        for (a, b) in [(fused.0, ops.0), (fused.1, ops.1), (fused.2, ops.2)] {
            let diff = (a - b).abs().max().into_scalar::<f32>();
            assert!(diff < 1e-6, "kernel and tensor ops differ by {diff}");
        }
    }

    #[test]
    fn adamw_first_step_moves_by_lr() {
        let device = Device::flex().autodiff();
        let model: Linear = LinearConfig::new(2, 1).init(&device);
        let w0 = weights(&model);
        let mut opt = Optimizer::new(OptimConfig {
            weight_decay: 0.0,
            ..Default::default()
        });
        let model = opt.step(model.clone(), grads_of(&model, &device), 0.01);
        for (a, b) in weights(&model).iter().zip(&w0) {
            assert!(
                (a - (b - 0.01)).abs() < 1e-5,
                "Adam's first step is lr * sign(g)"
            );
        }
    }

    #[test]
    fn adamw_corrects_a_late_starting_parameters_first_steps_and_checkpoints_the_count() {
        let device = Device::flex().autodiff();
        let model: Linear = LinearConfig::new(2, 1).init(&device);
        let mut opt = Optimizer::new(OptimConfig {
            weight_decay: 0.0,
            ..Default::default()
        });
        // Three steps in which only the bias learns (the weight frozen, as DINO's prototypes).
        let mut model = model;
        for _ in 0..3 {
            let mut grads = grads_of(&model, &device);
            grads.remove::<2>(model.weight.id);
            model = opt.step(model.clone(), grads, 0.01);
        }
        let w0 = weights(&model);
        let model = opt.step(model.clone(), grads_of(&model, &device), 0.01);
        for (a, b) in weights(&model).iter().zip(&w0) {
            assert!(
                (a - (b - 0.01)).abs() < 1e-5,
                "its first update is lr * sign(g), not ~3.2x (global step count): {b} -> {a}"
            );
        }
        // The per-parameter counts survive a checkpoint: a restored optimizer takes the same step.
        let mut restored = Optimizer::new(opt.config.clone());
        restored
            .load_state(
                opt.steps(),
                opt.state_tensors(),
                &device.clone().without_autodiff(),
            )
            .unwrap();
        let a = opt.step(model.clone(), grads_of(&model, &device), 0.01);
        let b = restored.step(model.clone(), grads_of(&model, &device), 0.01);
        assert_eq!(weights(&a), weights(&b));
        assert_eq!(
            a.bias.as_ref().map(|p| p.val().into_data()),
            b.bias.as_ref().map(|p| p.val().into_data())
        );
    }

    #[test]
    fn clipping_bounds_the_update() {
        let device = Device::flex().autodiff();
        let model: Linear = LinearConfig::new(2, 1).init(&device);
        let w0 = weights(&model);
        let config = OptimConfig {
            kind: "sgd".into(),
            momentum: 0.0,
            weight_decay: 0.0,
            grad_clip: 0.1,
            ..Default::default()
        };
        let mut opt = Optimizer::new(config);
        let model = opt.step(model.clone(), grads_of(&model, &device), 1.0);
        // Gradient (1, 1, bias 1) has norm sqrt(3); clipped to 0.1.
        for (a, b) in weights(&model).iter().zip(&w0) {
            assert!(((b - a) - 0.1 / 3f32.sqrt()).abs() < 1e-4);
        }
    }

    #[test]
    fn schedule_warms_up_then_decays() {
        assert!((cosine_lr(1.0, 0, 10, 100) - 0.1).abs() < 1e-12);
        assert!((cosine_lr(1.0, 9, 10, 100) - 1.0).abs() < 1e-12);
        assert!((cosine_lr(1.0, 55, 10, 100) - 0.5).abs() < 1e-12);
        assert!(cosine_lr(1.0, 100, 10, 100).abs() < 1e-12);
    }
}
