//! VICReg (Bardes et al. 2022): variance-invariance-covariance regularisation. The two views'
//! embeddings must agree (invariance), every dimension must keep a standard deviation of at
//! least 1 over the batch (variance, which prevents collapse) and dimensions must be
//! decorrelated (covariance).

use anyhow::Result;
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::{ImageShape, Method, MethodStep, Step, global_halves, project_views};
use crate::core::heads::Mlp;
use crate::core::losses::vicreg;
use crate::vision::backbones::{Backbone, backbone_and_projection};
use crate::vision::config::PretrainConfig;
use crate::vision::views::ViewConfig;

/// `[vicreg]`: the paper's weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VicRegConfig {
    /// Invariance weight.
    pub lambda: f64,
    /// Variance weight.
    pub mu: f64,
    /// Covariance weight.
    pub nu: f64,
}

impl Default for VicRegConfig {
    fn default() -> Self {
        VicRegConfig {
            lambda: 25.0,
            mu: 25.0,
            nu: 1.0,
        }
    }
}

#[derive(Module, Debug)]
pub struct VicReg {
    backbone: Backbone,
    projection: Mlp,
    #[module(skip)]
    weights: (f64, f64, f64),
}

impl Method for VicReg {
    fn init(config: &PretrainConfig, image: ImageShape, device: &Device) -> Self {
        let (backbone, projection) =
            backbone_and_projection(&config.backbone, &config.projection, image, device);
        let c = &config.vicreg;
        VicReg {
            backbone,
            projection,
            weights: (c.lambda, c.mu, c.nu),
        }
    }

    fn view_presets(_config: &PretrainConfig) -> Vec<ViewConfig> {
        ViewConfig::byol().to_vec()
    }

    fn loss(&self, views: Vec<Tensor<4>>) -> Result<MethodStep> {
        let z = project_views(&self.backbone, &self.projection, views);
        let (z1, z2) = global_halves(z.clone());
        let (lambda, mu, nu) = self.weights;
        Ok(Step::from(vicreg(z1, z2, lambda, mu, nu)).watching(z))
    }

    fn backbone(&self) -> &Backbone {
        &self.backbone
    }

    fn projection(&self) -> Option<&Mlp> {
        Some(&self.projection)
    }
}
