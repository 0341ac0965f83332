//! Barlow Twins (Zbontar et al. 2021): the cross-correlation between the two views' batch-
//! standardised embeddings is driven to the identity: equal on the diagonal (invariance),
//! decorrelated off it (redundancy reduction). No negatives, no asymmetry.

use anyhow::Result;
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::{ImageShape, Method, MethodStep, Step, global_halves, project_views};
use crate::core::heads::Mlp;
use crate::core::losses::barlow_twins;
use crate::vision::backbones::{Backbone, backbone_and_projection};
use crate::vision::config::PretrainConfig;
use crate::vision::views::ViewConfig;

/// `[barlowtwins]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BarlowTwinsConfig {
    /// Weight of the off-diagonal (redundancy) term; the paper's 5e-3.
    pub lambda: f64,
}

impl Default for BarlowTwinsConfig {
    fn default() -> Self {
        BarlowTwinsConfig { lambda: 5e-3 }
    }
}

#[derive(Module, Debug)]
pub struct BarlowTwins {
    backbone: Backbone,
    projection: Mlp,
    #[module(skip)]
    lambda: f64,
}

impl Method for BarlowTwins {
    fn init(config: &PretrainConfig, image: ImageShape, device: &Device) -> Self {
        let (backbone, projection) =
            backbone_and_projection(&config.backbone, &config.projection, image, device);
        BarlowTwins {
            backbone,
            projection,
            lambda: config.barlowtwins.lambda,
        }
    }

    /// BYOL's asymmetric views, as the paper uses.
    fn view_presets(_config: &PretrainConfig) -> Vec<ViewConfig> {
        ViewConfig::byol().to_vec()
    }

    fn loss(&self, views: Vec<Tensor<4>>) -> Result<MethodStep> {
        let z = project_views(&self.backbone, &self.projection, views);
        let (z1, z2) = global_halves(z.clone());
        Ok(Step::from(barlow_twins(z1, z2, self.lambda)).watching(z))
    }

    fn backbone(&self) -> &Backbone {
        &self.backbone
    }

    fn projection(&self) -> Option<&Mlp> {
        Some(&self.projection)
    }
}
