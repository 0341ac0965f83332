//! SimCLR (Chen et al. 2020): two views, a shared encoder and projection, NT-Xent.

use burn::prelude::*;

use anyhow::Result;

use super::{ImageShape, Method, MethodStep, Step, global_halves, project_views};
use crate::core::heads::Mlp;
use crate::core::losses::nt_xent;
use crate::vision::backbones::{Backbone, backbone_and_projection};
use crate::vision::config::PretrainConfig;
use crate::vision::views::ViewConfig;

#[derive(Module, Debug)]
pub struct SimClr {
    backbone: Backbone,
    projection: Mlp,
    #[module(skip)]
    temperature: f64,
}

impl Method for SimClr {
    fn init(config: &PretrainConfig, image: ImageShape, device: &Device) -> Self {
        let (backbone, projection) =
            backbone_and_projection(&config.backbone, &config.projection, image, device);
        SimClr {
            backbone,
            projection,
            temperature: config.simclr.temperature,
        }
    }

    fn view_presets(_config: &PretrainConfig) -> Vec<ViewConfig> {
        vec![ViewConfig::simclr(), ViewConfig::simclr()]
    }

    fn loss(&self, views: Vec<Tensor<4>>) -> Result<MethodStep> {
        let z = project_views(&self.backbone, &self.projection, views);
        let (z1, z2) = global_halves(z.clone());
        Ok(Step::from(nt_xent(z1, z2, self.temperature)).watching(z))
    }

    fn backbone(&self) -> &Backbone {
        &self.backbone
    }

    fn projection(&self) -> Option<&Mlp> {
        Some(&self.projection)
    }
}
