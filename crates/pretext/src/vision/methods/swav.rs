//! SwAV (Caron et al. 2020): swapped assignments between views. Each crop's embedding is scored
//! against learned prototypes; Sinkhorn-Knopp turns a global crop's scores into soft cluster
//! codes that spread the batch evenly over the prototypes, and every other crop must predict
//! those codes. Clustering replaces the pairwise comparisons of contrastive methods. Paper
//! pseudocode:
//!
//! ```text
//! x1, x2, locals = multi_crop(x)
//! z = normalize(h(f(crops)));  s = z · C                # C: unit prototypes
//! q1, q2 = sinkhorn(s1), sinkhorn(s2)                  # no gradient; with a queue when small
//! loss = mean over i, v != i: CE(q_i, softmax(s_v / t))
//! ```
//!
//! The prototypes take no gradient during the first epoch, as in the paper. An optional queue
//! of past global-view embeddings per view (`swav.queue_size`) gives Sinkhorn more rows than a
//! small batch has, once `swav.queue_start_epochs` have filled it.

use anyhow::{Result, bail};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::{ImageShape, Method, MethodStep, Step, halves, per_view};
use crate::core::distributed::gather_rows;
use crate::core::heads::{Mlp, Prototypes};
use crate::core::losses::{l2_normalize, swav};
use crate::core::queue::EmbeddingQueue;
use crate::vision::backbones::{Backbone, backbone_and_projection};
use crate::vision::config::PretrainConfig;
use crate::vision::views::ViewConfig;

/// `[swav]`: the paper's temperature and Sinkhorn settings, lightly's 512 prototypes for small
/// data sets (ImageNet: 3,000), no queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SwavConfig {
    pub prototypes: usize,
    pub temperature: f64,
    pub sinkhorn_iterations: usize,
    pub sinkhorn_epsilon: f64,
    /// Epochs during which the prototypes take no gradient.
    pub freeze_prototypes_epochs: f64,
    /// Past embeddings kept per global view (0: no queue).
    pub queue_size: usize,
    /// Epochs before the queue takes part (it fills meanwhile).
    pub queue_start_epochs: f64,
}

impl Default for SwavConfig {
    fn default() -> Self {
        SwavConfig {
            prototypes: 512,
            temperature: 0.1,
            sinkhorn_iterations: 3,
            sinkhorn_epsilon: 0.05,
            freeze_prototypes_epochs: 1.0,
            queue_size: 0,
            queue_start_epochs: 1.0,
        }
    }
}

impl SwavConfig {
    pub fn validate(&self) -> Result<()> {
        if self.prototypes == 0 || self.sinkhorn_iterations == 0 {
            bail!("swav: prototypes and sinkhorn_iterations must be at least 1");
        }
        if [self.temperature, self.sinkhorn_epsilon]
            .iter()
            .any(|v| v.is_nan() || *v <= 0.0)
        {
            bail!("swav: temperature and sinkhorn_epsilon must be positive");
        }
        if [self.freeze_prototypes_epochs, self.queue_start_epochs]
            .iter()
            .any(|v| v.is_nan() || *v < 0.0)
        {
            bail!("swav: freeze_prototypes_epochs and queue_start_epochs must be 0 or more");
        }
        Ok(())
    }
}

#[derive(Module, Debug)]
pub struct Swav {
    pub backbone: Backbone,
    pub projection: Mlp,
    pub prototypes: Prototypes,
    /// One queue per global view, empty without `swav.queue_size`.
    pub queues: Vec<EmbeddingQueue>,
    #[module(skip)]
    config: SwavConfig,
    #[module(skip)]
    epochs: f64,
}

impl Method for Swav {
    fn init(config: &PretrainConfig, image: ImageShape, device: &Device) -> Self {
        let (backbone, projection) =
            backbone_and_projection(&config.backbone, &config.projection, image, device);
        let c = &config.swav;
        let dim = config.projection.output;
        let queues = match c.queue_size {
            0 => Vec::new(),
            size => (0..2)
                .map(|_| EmbeddingQueue::new(size, dim, device))
                .collect(),
        };
        Swav {
            backbone,
            projection,
            prototypes: Prototypes::new(dim, c.prototypes, device),
            queues,
            config: c.clone(),
            epochs: config.epochs as f64,
        }
    }

    /// SwAV's augmentations (lightly's `SwaVTransform`, scaled to small images): SimCLR's
    /// views, global crops at scale 0.14-1, local ones at 0.05-0.14.
    fn view_presets(config: &PretrainConfig) -> Vec<ViewConfig> {
        let global = ViewConfig {
            crop_scale: (0.14, 1.0),
            ..ViewConfig::simclr()
        };
        let local = ViewConfig {
            crop_scale: (0.05, 0.14),
            ..ViewConfig::simclr()
        };
        ViewConfig::multi_crop(vec![global.clone(), global], &local, &config.multi_crop)
    }

    fn loss(&self, views: Vec<Tensor<4>>) -> Result<MethodStep> {
        self.loss_at(views, 1.0)
    }

    fn loss_at(&self, views: Vec<Tensor<4>>, progress: f64) -> Result<MethodStep> {
        if views.len() < 2 {
            bail!("swav needs two global views, got {} view(s)", views.len());
        }
        let epochs_done = progress * self.epochs;
        let frozen = epochs_done < self.config.freeze_prototypes_epochs;
        // Sinkhorn's codes, the queue and the loss see every rank's rows.
        let z: Vec<Tensor<2>> = per_view(views, |x| {
            l2_normalize(self.projection.forward(self.backbone.forward(x)))
        })
        .into_iter()
        .map(gather_rows)
        .collect();
        let scores: Vec<Tensor<2>> = z
            .iter()
            .map(|z| self.prototypes.scores(z.clone(), frozen))
            .collect();
        let queued: Option<Vec<Tensor<2>>> =
            (!self.queues.is_empty() && epochs_done >= self.config.queue_start_epochs).then(|| {
                self.queues
                    .iter()
                    .map(|q| self.prototypes.scores(q.rows(), true).detach())
                    .collect()
            });
        let c = &self.config;
        let loss = swav(
            &scores[..2],
            &scores[2..],
            queued.as_deref(),
            c.temperature,
            c.sinkhorn_iterations,
            c.sinkhorn_epsilon,
        );
        let globals = Tensor::cat(z[..2].to_vec(), 0);
        let carry = (!self.queues.is_empty()).then(|| globals.clone().detach());
        Ok(Step {
            loss,
            embeddings: Some(globals),
            carry,
            weight: None,
        })
    }

    /// Each global view's embeddings enter its own queue.
    fn after_step(self, _progress: f64, kept: Vec<Tensor<2>>) -> Self {
        if self.queues.is_empty() {
            return self;
        }
        let (first, second): (Vec<Tensor<2>>, Vec<Tensor<2>>) =
            kept.into_iter().map(halves).unzip();
        let mut queues = self.queues.into_iter();
        let pushed = match (queues.next(), queues.next()) {
            (Some(a), Some(b)) => vec![a.push(first), b.push(second)],
            (a, b) => a.into_iter().chain(b).collect(),
        };
        Swav {
            queues: pushed,
            ..self
        }
    }

    fn backbone(&self) -> &Backbone {
        &self.backbone
    }

    fn projection(&self) -> Option<&Mlp> {
        Some(&self.projection)
    }
}
