//! MoCo v2 (Chen et al. 2020, after He et al. 2019): a query encoder learns to pick its key, the
//! other view through a momentum (EMA) key encoder, out of a queue of keys from past batches.
//! The queue decouples the number of negatives from the batch size. Paper pseudocode:
//!
//! ```text
//! q = f_q(x_q); k = f_k(x_k).detach()              # normalised in the loss
//! loss = CE([q·k, q·queue] / t, positive = 0)      # InfoNCE
//! f_k = m f_k + (1 - m) f_q;  enqueue(k), dequeue the oldest
//! ```
//!
//! One device, so no shuffled batch norm (lightly's single-GPU examples leave it out too).

use anyhow::{Result, bail};
use burn::prelude::*;

use crate::core::distributed::gather_rows;
use crate::core::heads::Mlp;
use serde::{Deserialize, Serialize};

use super::{Branch, ImageShape, Method, MethodStep, Step};
use crate::core::losses::info_nce;
use crate::core::momentum::{detached_copy, ema_update};
use crate::core::queue::EmbeddingQueue;
use crate::vision::backbones::Backbone;
use crate::vision::config::PretrainConfig;
use crate::vision::views::ViewConfig;

/// `[mocov2]`: the paper's temperature, a momentum and queue sized for small data sets
/// (ImageNet: 0.999 and 65,536).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MocoV2Config {
    pub temperature: f64,
    /// EMA rate of the key encoder.
    pub momentum: f64,
    /// Keys kept as negatives.
    pub queue_size: usize,
}

impl Default for MocoV2Config {
    fn default() -> Self {
        MocoV2Config {
            temperature: 0.2,
            momentum: 0.99,
            queue_size: 4096,
        }
    }
}

impl MocoV2Config {
    pub fn validate(&self) -> Result<()> {
        if self.temperature <= 0.0 || !(0.0..=1.0).contains(&self.momentum) || self.queue_size == 0
        {
            bail!(
                "mocov2: temperature must be positive, momentum in [0, 1] and queue_size at \
                 least 1 (they are {}, {} and {})",
                self.temperature,
                self.momentum,
                self.queue_size
            );
        }
        Ok(())
    }
}

#[derive(Module, Debug)]
pub struct MocoV2 {
    pub query: Branch,
    /// Updated only by EMA; its outputs are detached (stop-gradient).
    pub key: Branch,
    pub queue: EmbeddingQueue,
    #[module(skip)]
    temperature: f64,
    #[module(skip)]
    momentum: f64,
}

impl Method for MocoV2 {
    fn init(config: &PretrainConfig, image: ImageShape, device: &Device) -> Self {
        let query = Branch::init(config, image, device);
        let key = detached_copy(&query, Branch::init(config, image, device));
        let queue = EmbeddingQueue::new(config.mocov2.queue_size, config.projection.output, device);
        MocoV2 {
            query,
            key,
            queue,
            temperature: config.mocov2.temperature,
            momentum: config.mocov2.momentum,
        }
    }

    fn view_presets(_config: &PretrainConfig) -> Vec<ViewConfig> {
        vec![ViewConfig::simclr(), ViewConfig::simclr()]
    }

    fn loss(&self, mut views: Vec<Tensor<4>>) -> Result<MethodStep> {
        let x_k = views.remove(1);
        let q = self.query.forward(views.remove(0));
        let k = self.key.forward(x_k).detach();
        let loss = info_nce(q.clone(), k.clone(), self.queue.rows(), self.temperature);
        Ok(Step {
            loss,
            embeddings: Some(q),
            // The queue takes every rank's keys.
            carry: Some(gather_rows(k)),
            weight: None,
        })
    }

    fn after_step(self, _progress: f64, keys: Vec<Tensor<2>>) -> Self {
        MocoV2 {
            key: ema_update(self.key, &self.query, self.momentum),
            queue: self.queue.push(keys),
            ..self
        }
    }

    fn backbone(&self) -> &Backbone {
        &self.query.backbone
    }

    fn projection(&self) -> Option<&Mlp> {
        Some(&self.query.projection)
    }
}
