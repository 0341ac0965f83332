//! DINO (Caron et al. 2021): self-distillation with no labels. A student network matches, on
//! every crop of an image, the output distribution of a momentum teacher that sees only the
//! global crops; centring and sharpening the teacher's output keep it from collapsing. Paper
//! pseudocode:
//!
//! ```text
//! x1, x2, locals = multi_crop(x)                    # 2 global views, N small local ones
//! t = teacher([x1, x2]).detach()                     # EMA of the student; no gradient
//! s = student([x1, x2] + locals)
//! loss = mean over (t_i, s_j), i != j: H(softmax((t_i - C) / tt), softmax(s_j / ts))
//! teacher = m teacher + (1 - m) student;  C = c C + (1 - c) mean(t)
//! ```
//!
//! As the authors and lightly do, the last layer of the student's head is frozen for the first
//! epoch, and the teacher's temperature can warm up linearly from a lower value.

use anyhow::{Result, bail};
use burn::module::{Module, Param};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::{ImageShape, Method, MethodStep, Step, per_view};
use crate::core::distributed::gather_rows;
use crate::core::heads::DinoHead;
use crate::core::losses::dino;
use crate::core::momentum::{cosine_tau, detached_copy, ema_update};
use crate::vision::backbones::Backbone;
use crate::vision::config::PretrainConfig;
use crate::vision::views::ViewConfig;

/// `[dino]`: lightly's DINO example for a ResNet-18 (head 512 → 512 → bottleneck 64 → 2,048
/// prototypes, teacher at 0.04, student at 0.1, EMA from 0.996), which suits small backbones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DinoConfig {
    pub hidden: usize,
    pub bottleneck: usize,
    /// The head's output size K (the paper: 65,536 on ImageNet).
    pub prototypes: usize,
    /// Linear layers of the head before the prototypes.
    pub layers: usize,
    pub student_temperature: f64,
    /// The teacher's temperature after the warm-up.
    pub teacher_temperature: f64,
    /// The teacher's temperature at the start, rising linearly to `teacher_temperature` over
    /// `warmup_teacher_epochs` (the paper: 0.04 to 0.07 over 30 epochs).
    pub warmup_teacher_temperature: f64,
    pub warmup_teacher_epochs: f64,
    /// EMA rate of the centre of the teacher's outputs.
    pub center_momentum: f64,
    /// Starting EMA rate of the teacher, raised to 1 along a cosine.
    pub momentum: f64,
    /// Epochs during which the prototypes (the head's last layer) take no gradient.
    pub freeze_last_layer_epochs: f64,
}

impl Default for DinoConfig {
    fn default() -> Self {
        DinoConfig {
            hidden: 512,
            bottleneck: 64,
            prototypes: 2048,
            layers: 3,
            student_temperature: 0.1,
            teacher_temperature: 0.04,
            warmup_teacher_temperature: 0.04,
            warmup_teacher_epochs: 0.0,
            center_momentum: 0.9,
            momentum: 0.996,
            freeze_last_layer_epochs: 1.0,
        }
    }
}

impl DinoConfig {
    pub fn validate(&self) -> Result<()> {
        if self.hidden == 0 || self.bottleneck == 0 || self.prototypes == 0 || self.layers == 0 {
            bail!("dino: hidden, bottleneck, prototypes and layers must be positive");
        }
        let temperatures = [
            self.student_temperature,
            self.teacher_temperature,
            self.warmup_teacher_temperature,
        ];
        if temperatures.iter().any(|t| t.is_nan() || *t <= 0.0) {
            bail!("dino: the temperatures must be positive");
        }
        for (name, m) in [
            ("center_momentum", self.center_momentum),
            ("momentum", self.momentum),
        ] {
            if !(0.0..=1.0).contains(&m) {
                bail!("dino.{name} = {m}: must lie in [0, 1]");
            }
        }
        if self.warmup_teacher_epochs.is_nan()
            || self.warmup_teacher_epochs < 0.0
            || self.freeze_last_layer_epochs.is_nan()
            || self.freeze_last_layer_epochs < 0.0
        {
            bail!("dino: warmup_teacher_epochs and freeze_last_layer_epochs must be 0 or more");
        }
        Ok(())
    }

    /// The teacher's temperature after `epochs` epochs of training (fractional).
    pub fn teacher_temperature_at(&self, epochs: f64) -> f64 {
        if epochs >= self.warmup_teacher_epochs {
            return self.teacher_temperature;
        }
        let t = epochs / self.warmup_teacher_epochs;
        self.warmup_teacher_temperature
            + t * (self.teacher_temperature - self.warmup_teacher_temperature)
    }
}

/// Backbone and DINO head: the student, and in shape the teacher.
#[derive(Module, Debug)]
pub struct Network {
    pub backbone: Backbone,
    pub head: DinoHead,
}

impl Network {
    fn init(config: &PretrainConfig, image: ImageShape, device: &Device) -> Self {
        let backbone = config.backbone.init(image, device);
        let c = &config.dino;
        let head = DinoHead::new(
            backbone.out_dim(),
            c.hidden,
            c.bottleneck,
            c.prototypes,
            c.layers,
            device,
        );
        Network { backbone, head }
    }

    fn forward(&self, x: Tensor<4>, freeze_last: bool) -> Tensor<2> {
        self.head.forward(self.backbone.forward(x), freeze_last)
    }
}

/// The running mean of the teacher's outputs `[1, prototypes]`: a buffer that checkpoints
/// carry and no gradient reaches.
#[derive(Module, Debug)]
pub struct Center {
    values: Param<Tensor<2>>,
}

impl Center {
    /// A centre holding `values` `[1, prototypes]` (zeros at the start of training).
    pub fn new(values: Tensor<2>) -> Self {
        Center {
            values: Param::from_tensor(values),
        }
        .no_grad()
    }

    pub fn values(&self) -> Tensor<2> {
        self.values.val().detach()
    }

    /// One moving-average step per batch mean in `batch_means`, in order.
    pub fn update(self, batch_means: Vec<Tensor<2>>, momentum: f64) -> Self {
        let values = self.values.map(|mut c| {
            for mean in batch_means {
                c = c.mul_scalar(momentum) + mean.detach().mul_scalar(1.0 - momentum);
            }
            c.set_require_grad(false)
        });
        Center { values }
    }
}

#[derive(Module, Debug)]
pub struct Dino {
    pub student: Network,
    /// Updated only by EMA; its outputs are detached (stop-gradient).
    pub teacher: Network,
    pub center: Center,
    #[module(skip)]
    config: DinoConfig,
    #[module(skip)]
    epochs: f64,
}

impl Method for Dino {
    fn init(config: &PretrainConfig, image: ImageShape, device: &Device) -> Self {
        let student = Network::init(config, image, device);
        let teacher = detached_copy(&student, Network::init(config, image, device));
        Dino {
            student,
            teacher,
            center: Center::new(Tensor::zeros([1, config.dino.prototypes], device)),
            config: config.dino.clone(),
            epochs: config.epochs as f64,
        }
    }

    /// DINO's augmentations: BYOL's two asymmetric global views at crop scale 0.4-1, and local
    /// views at 0.05-0.4 with blur half the time.
    fn view_presets(config: &PretrainConfig) -> Vec<ViewConfig> {
        let globals = ViewConfig::byol()
            .into_iter()
            .map(|v| ViewConfig {
                crop_scale: (0.4, 1.0),
                ..v
            })
            .collect();
        let local = ViewConfig {
            crop_scale: (0.05, 0.4),
            blur_p: 0.5,
            solarize_p: 0.0,
            ..ViewConfig::byol()[0].clone()
        };
        ViewConfig::multi_crop(globals, &local, &config.multi_crop)
    }

    fn loss(&self, views: Vec<Tensor<4>>) -> Result<MethodStep> {
        self.loss_at(views, 1.0)
    }

    fn loss_at(&self, views: Vec<Tensor<4>>, progress: f64) -> Result<MethodStep> {
        if views.len() < 2 {
            bail!("dino needs two global views, got {} view(s)", views.len());
        }
        let epochs_done = progress * self.epochs;
        let freeze = epochs_done < self.config.freeze_last_layer_epochs;
        let globals = views[..2].to_vec();
        let teacher: Vec<Tensor<2>> = per_view(globals, |x| self.teacher.forward(x, true))
            .into_iter()
            .map(|t| t.detach())
            .collect();
        let student = per_view(views, |x| self.student.forward(x, freeze));
        let loss = dino(
            &teacher,
            &student,
            self.center.values(),
            self.config.teacher_temperature_at(epochs_done),
            self.config.student_temperature,
        );
        // The centre follows the teacher's mean over the global batch.
        let batch_mean = gather_rows(Tensor::cat(teacher, 0)).mean_dim(0);
        Ok(Step {
            loss,
            embeddings: Some(Tensor::cat(student[..2].to_vec(), 0)),
            carry: Some(batch_mean),
            weight: None,
        })
    }

    fn after_step(self, progress: f64, batch_means: Vec<Tensor<2>>) -> Self {
        let tau = cosine_tau(self.config.momentum, progress);
        Dino {
            teacher: ema_update(self.teacher, &self.student, tau),
            center: self.center.update(batch_means, self.config.center_momentum),
            ..self
        }
    }

    /// The teacher's: the paper evaluates the teacher, which is the better of the two.
    fn backbone(&self) -> &Backbone {
        &self.teacher.backbone
    }
}
