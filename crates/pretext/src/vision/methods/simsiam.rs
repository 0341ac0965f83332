//! SimSiam (Chen & He 2021): two views through one encoder and projection, a predictor on top,
//! and each view's prediction pulled towards the other view's projection under a stop-gradient.
//! No negatives, no momentum encoder: the stop-gradient alone prevents collapse.

use anyhow::Result;
use burn::prelude::*;

use super::{ImageShape, Method, MethodStep, Step, halves, project_views};
use crate::core::heads::Mlp;
use crate::core::losses::negative_cosine;
use crate::vision::backbones::{Backbone, backbone_and_projection};
use crate::vision::config::PretrainConfig;
use crate::vision::views::ViewConfig;

#[derive(Module, Debug)]
pub struct SimSiam {
    backbone: Backbone,
    projection: Mlp,
    predictor: Mlp,
}

impl Method for SimSiam {
    fn init(config: &PretrainConfig, image: ImageShape, device: &Device) -> Self {
        let (backbone, projection) =
            backbone_and_projection(&config.backbone, &config.projection, image, device);
        SimSiam {
            predictor: config.prediction.init(config.projection.output, device),
            backbone,
            projection,
        }
    }

    fn view_presets(_config: &PretrainConfig) -> Vec<ViewConfig> {
        vec![ViewConfig::simclr(), ViewConfig::simclr()]
    }

    fn loss(&self, views: Vec<Tensor<4>>) -> Result<MethodStep> {
        let z = project_views(&self.backbone, &self.projection, views);
        let p = self.predictor.forward(z.clone());
        // Stop-gradient: the projections are targets, not paths for the gradient.
        let z = z.detach();
        let (z1, z2) = halves(z.clone());
        let (p1, p2) = halves(p);
        let loss = (negative_cosine(p1, z2) + negative_cosine(p2, z1)).div_scalar(2.0);
        Ok(Step::from(loss).watching(z))
    }

    fn backbone(&self) -> &Backbone {
        &self.backbone
    }

    fn projection(&self) -> Option<&Mlp> {
        Some(&self.projection)
    }
}
