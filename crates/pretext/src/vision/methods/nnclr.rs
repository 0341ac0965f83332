//! NNCLR (Dwibedi et al. 2021): the positive of a view is not the other view but its nearest
//! neighbour in a support set of past embeddings, so positives cover more than one image's
//! augmentations. Paper pseudocode:
//!
//! ```text
//! z1, z2 = h(f(x1)), h(f(x2)); p1, p2 = g(z1), g(z2)
//! nn1, nn2 = NN(z1, support), NN(z2, support)          # detached
//! loss = (InfoNCE(nn1, p2) + InfoNCE(nn2, p1)) / 2     # in-batch negatives
//! support.push(z1)
//! ```

use anyhow::{Result, bail};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::{ImageShape, Method, MethodStep, Step, global_halves, project_views};
use crate::core::heads::Mlp;
use crate::core::losses::cross_view_info_nce;
use crate::core::queue::EmbeddingQueue;
use crate::vision::backbones::{Backbone, backbone_and_projection};
use crate::vision::config::PretrainConfig;
use crate::vision::views::ViewConfig;

/// `[nnclr]`: the paper's temperature, a support set sized for small data sets (ImageNet:
/// 98,304).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NnclrConfig {
    pub temperature: f64,
    /// Past embeddings searched for nearest neighbours.
    pub support_size: usize,
}

impl Default for NnclrConfig {
    fn default() -> Self {
        NnclrConfig {
            temperature: 0.1,
            support_size: 4096,
        }
    }
}

impl NnclrConfig {
    pub fn validate(&self) -> Result<()> {
        if self.temperature <= 0.0 || self.support_size == 0 {
            bail!(
                "nnclr: temperature must be positive and support_size at least 1 (they are {} \
                 and {})",
                self.temperature,
                self.support_size
            );
        }
        Ok(())
    }
}

#[derive(Module, Debug)]
pub struct Nnclr {
    pub backbone: Backbone,
    pub projection: Mlp,
    pub predictor: Mlp,
    pub support: EmbeddingQueue,
    #[module(skip)]
    temperature: f64,
}

impl Method for Nnclr {
    fn init(config: &PretrainConfig, image: ImageShape, device: &Device) -> Self {
        let (backbone, projection) =
            backbone_and_projection(&config.backbone, &config.projection, image, device);
        let dim = config.projection.output;
        Nnclr {
            backbone,
            projection,
            predictor: config.prediction.init(dim, device),
            support: EmbeddingQueue::new(config.nnclr.support_size, dim, device),
            temperature: config.nnclr.temperature,
        }
    }

    fn view_presets(_config: &PretrainConfig) -> Vec<ViewConfig> {
        ViewConfig::byol().to_vec()
    }

    fn loss(&self, views: Vec<Tensor<4>>) -> Result<MethodStep> {
        let z = project_views(&self.backbone, &self.projection, views);
        let p = self.predictor.forward(z.clone());
        let ((z1, z2), (p1, p2)) = (global_halves(z.clone()), global_halves(p));
        let (nn1, nn2) = (self.support.nearest(z1.clone()), self.support.nearest(z2));
        let t = self.temperature;
        let loss =
            (cross_view_info_nce(nn1, p2, t) + cross_view_info_nce(nn2, p1, t)).div_scalar(2.0);
        Ok(Step {
            loss,
            embeddings: Some(z),
            carry: Some(z1.detach()),
            weight: None,
        })
    }

    fn after_step(self, _progress: f64, kept: Vec<Tensor<2>>) -> Self {
        Nnclr {
            support: self.support.push(kept),
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
